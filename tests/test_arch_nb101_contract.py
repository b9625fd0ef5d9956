"""The `leti arch --space nb101` contract, end to end through the real command."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from leti.cli import main

ROOT = Path(__file__).resolve().parent.parent
NB201_ARCH = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|none~0|none~1|avg_pool_3x3~2|"

# (spec, what the published NAS-Bench-101 data says): the nasbench README's Inception-like cell
# (2,694,282 parameters in its Colab), NNI's query example (hash and 8.55553 M parameters in
# BenchmarksExample.ipynb), and NASLib's stored spec for its test hash.
INCEPTION = {"matrix": [[0, 1, 1, 1, 0, 1, 0], [0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 1, 0, 0],
                        [0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 0]],
             "ops": ["input", "conv1x1-bn-relu", "conv3x3-bn-relu", "conv3x3-bn-relu", "conv3x3-bn-relu", "maxpool3x3", "output"]}
NNI = {"matrix": [[0, 1, 0, 0, 1, 1, 0], [0, 0, 1, 0, 0, 0, 0], [0, 0, 0, 1, 0, 0, 1], [0, 0, 0, 0, 0, 1, 0],
                  [0, 0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 0]],
       "ops": ["input", "conv3x3-bn-relu", "maxpool3x3", "conv3x3-bn-relu", "conv3x3-bn-relu", "conv1x1-bn-relu", "output"]}
NASLIB = {"matrix": [[0, 1, 1, 0, 1, 1, 0], [0, 0, 0, 0, 1, 0, 0], [0, 0, 0, 1, 0, 0, 0], [0, 0, 0, 0, 1, 0, 0],
                     [0, 0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 0]],
          "ops": ["input", "maxpool3x3", "conv3x3-bn-relu", "conv1x1-bn-relu", "conv1x1-bn-relu", "conv3x3-bn-relu", "output"]}
NO_PATH = {"matrix": [[0, 1, 0], [0, 0, 0], [0, 0, 0]], "ops": ["input", "conv3x3-bn-relu", "output"]}


def leti(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "leti", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_specs_file_prints_one_line_per_cell_in_order(tmp_path: Path) -> None:
    specs = tmp_path / "specs.jsonl"
    lines = [json.dumps(INCEPTION), json.dumps(NO_PATH), json.dumps(NNI), "{not json", json.dumps(NASLIB)]
    specs.write_text("\n".join(lines) + "\n")
    result = leti("arch", "--space", "nb101", "--specs", str(specs))
    assert result.returncode == 1
    assert result.stderr == ""
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(out) == 5
    for row in (out[0], out[2], out[4]):
        assert list(row) == ["arch", "hash", "valid", "flops", "params"] and row["valid"] is True
    assert out[0]["arch"] == "1333m|111010.00001.0001.100.01.1" and out[0]["params"] == 2_694_282
    assert out[2]["hash"] == "00005c142e6f48ac74fdcf73e3439874" and out[2]["params"] == 8_555_530
    assert out[4]["hash"] == "ff940d27cbe9ed0a639a68a9c3f87283"
    for row, complaint in ((out[1], ":2: "), (out[3], ":4: not JSON")):
        assert list(row) == ["valid", "error"] and row["valid"] is False
        assert complaint in row["error"]
    assert "no path from input to output" in out[1]["error"]


def test_one_cell_from_matrix_and_ops() -> None:
    result = leti("arch", "--space", "nb101", "--matrix", json.dumps(NNI["matrix"]), "--ops", ",".join(NNI["ops"]), "--no-network")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"arch": "3m331|100110.10000.1001.010.10.1", "hash": "00005c142e6f48ac74fdcf73e3439874", "valid": True}


def test_one_invalid_cell_exits_1_with_its_reason(capsys: pytest.CaptureFixture) -> None:
    assert main(["arch", "--space", "nb101", "--matrix", json.dumps(NO_PATH["matrix"]), "--ops", ",".join(NO_PATH["ops"])]) == 1
    row = json.loads(capsys.readouterr().out)
    assert row["valid"] is False and "no path from input to output" in row["error"]


def test_arch_strings_work_for_nb101_too(capsys: pytest.CaptureFixture) -> None:
    assert main(["arch", "--space", "nb101", "--no-network", "1333m|111010.00001.0001.100.01.1", "3m|110.01.0"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["arch"] for row in rows] == ["1333m|111010.00001.0001.100.01.1", "3|10.1"]  # the second pruned


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--space", "nb102", NB201_ARCH], "unknown search space 'nb102' (known: nb101, nb201)"),
        (["--space", "nb101", "--matrix", "[[0,1],[0,0]]"], "--matrix and --ops go together: give both"),
        (["--space", "nb101", "--specs", "missing.jsonl"], "specs file missing.jsonl does not exist"),
        (["--space", "nb101", "--specs", "x.jsonl", "1333m|111010.00001.0001.100.01.1"], "give NB101 cells one way"),
        (["--specs", "x.jsonl"], "add --space nb101"),
    ],
)
def test_usage_errors_are_one_line(args: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["arch", *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith("leti arch: error: ") and message in captured.err


def test_nb201_is_the_default_space(capsys: pytest.CaptureFixture) -> None:
    assert main(["arch", "--no-network", NB201_ARCH]) == 0
    default = capsys.readouterr().out
    assert main(["arch", "--space", "nb201", "--no-network", NB201_ARCH]) == 0
    assert capsys.readouterr().out == default
    assert list(json.loads(default)) == ["arch", "has_path", "canonical_id", "canonical_form"]
