"""The `leti` command: readable help for every subcommand, one clear line for bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from leti.cli import COMMANDS, build_parser, main

ROOT = Path(__file__).resolve().parent.parent
GOOD = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|none~0|none~1|avg_pool_3x3~2|"


def leti(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "leti", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_top_level_help_lists_every_command() -> None:
    text = build_parser().format_help()
    names = [action for action in build_parser()._subparsers._group_actions[0].choices]
    assert len(names) == len(COMMANDS)
    for name in names:
        assert name in text


@pytest.mark.parametrize("command", list(build_parser()._subparsers._group_actions[0].choices))
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as raised:
        main([command, "--help"])
    assert raised.value.code == 0
    assert "usage: leti " + command in capsys.readouterr().out


def test_arch_prints_facts(capsys: pytest.CaptureFixture) -> None:
    assert main(["arch", GOOD]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["has_path"] is True
    assert info["params"] > 0 and info["flops"] > 0


def test_malformed_arch_fails_with_one_line_naming_it() -> None:
    bad = GOOD.replace("skip_connect", "skip_conect")
    result = leti("arch", bad)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert bad in lines[0] and "unknown op 'skip_conect'" in lines[0]


def test_unknown_device_fails_with_one_line_naming_it(tmp_path: Path) -> None:
    result = leti("measure", "--device", "pixel9", "--arch", GOOD, "--store", str(tmp_path), "--params", str(ROOT / "params.yaml"))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "unknown device 'pixel9'" in result.stderr
    assert not any(tmp_path.iterdir())


def test_missing_architectures_file_is_named(tmp_path: Path) -> None:
    result = leti("measure", "--device", "torch-cpu", "--architectures", str(tmp_path / "none.parquet"),
                  "--store", str(tmp_path), "--params", str(ROOT / "params.yaml"))
    assert result.returncode == 2
    assert "none.parquet: no such file" in result.stderr
