"""Few-shot transfer to a new device: the evaluate-transfer contract, plan-shots, adapt and its
registration, and bad input, on a latency store the test writes (synthetic devices with known latencies)."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from leti.cli import main
from leti.metrics import regression_metrics
from leti.predictors import transfer
from leti.spaces import nb101, nb201
from leti.store import parts

CELLS = nb201.sample_valid(400, seed=1)
COST = {"none": 0.0, "skip_connect": 0.05, "nor_conv_1x1": 0.3, "nor_conv_3x3": 0.8, "avg_pool_3x3": 0.4}
SMALL = ["--set", "hidden=32", "--set", "layers=2", "--set", "epochs=25", "--set", "batch_size=32", "--set", "lr=0.003"]


def pruned_ms(arch: str, scale: float, pool: float) -> float:
    """A device that runs the cell's live ops (BRP-NAS's graph), pools ``pool`` times the table's cost."""
    ops = Counter(op for op in nb201.graph(arch).nodes[1:-1] if op)
    return scale * (1.0 + sum(COST[op] * n * (pool if op == "avg_pool_3x3" else 1.0) for op, n in ops.items()))


def eager_ms(arch: str, scale: float) -> float:
    """A device that runs every op, dead ones included (an eager runtime)."""
    return scale * (1.5 + sum(COST[op] for op in nb201.parse(arch)))


DEVICES = {"gpu-a": lambda a: pruned_ms(a, 1.0, 1.0), "gpu-b": lambda a: pruned_ms(a, 2.0, 0.5),
           "cpu-a": lambda a: eager_ms(a, 3.0), "cpu-b": lambda a: eager_ms(a, 1.2) + pruned_ms(a, 0.3, 2.0),
           "target": lambda a: 0.6 * pruned_ms(a, 1.5, 0.8) + 0.4 * eager_ms(a, 2.0)}


def write_store(store: Path) -> Path:
    for device, latency in DEVICES.items():
        rows = [{"space": "nb201", "arch": arch, "device": device, "backend": "published", "source": "test", "config_id": "published",
                 "runs": 1, "samples_ms": [], "median_ms": latency(arch), "iqm_ms": None, "mean_ms": latency(arch),
                 "min_ms": latency(arch), "error": None, "measured_at": datetime(2026, 1, 1, tzinfo=timezone.utc)} for arch in CELLS]
        parts.write_part(rows, store, device)
    return store


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_store(tmp_path_factory.mktemp("transfer") / "store")


def evaluate(store: Path, out: Path, *extra: str, sources: str = "gpu-a,gpu-b,cpu-a,cpu-b", target: str = "target",
             shots: int = 10) -> int:
    return main(["evaluate-transfer", "--latency", str(store), "--source-devices", sources, "--target-device", target,
                 "--shots", str(shots), "--seed", "0", "--output", str(out), "--cache", str(out.parent / "cache"), *SMALL, *extra])


def test_the_contract_scores_every_cell_outside_the_shots_and_pretrains_once(store: Path, tmp_path: Path, capsys) -> None:
    assert evaluate(store, tmp_path / "m.json") == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert {"acc_1pct", "acc_5pct", "acc_10pct", "rmse_ms", "mape", "spearman", "kendall", "n_train", "n_val", "n_test",
            "fit_seconds", "predict_seconds", "predictor", "shots"} <= set(metrics)
    assert (metrics["shots"], metrics["n_train"], metrics["n_val"], metrics["n_test"]) == (10, 10, 0, 390)
    assert metrics["predictor"] == "transfer" and metrics["space"] == "nb201" and not metrics["pretrain_cached"]
    assert metrics["spearman"] > 0.95 and metrics["acc_10pct"] > 80  # the target is a mix of the sources' kinds
    assert metrics["ridge_spearman"] > 0.9  # the baseline, on the same shots and cells
    assert evaluate(store, tmp_path / "again.json", target="cpu-b", sources="gpu-a,gpu-b,cpu-a,target") == 0
    assert json.loads((tmp_path / "again.json").read_text())["pretrain_cached"] is False  # other sources: pretrained anew
    assert evaluate(store, tmp_path / "k20.json", shots=20) == 0
    again = json.loads((tmp_path / "k20.json").read_text())
    assert again["pretrain_cached"] is True and again["pretrained"] == metrics["pretrained"]  # same sources: from the cache
    assert again["n_test"] == 380
    capsys.readouterr()


@pytest.mark.parametrize(("change", "message"), [
    ({"sources": "gpu-a,target"}, "target device 'target' is also a source"),
    ({"sources": "gpu-a,tpu-z"}, "source device 'tpu-z' is not in"),
    ({"shots": 399}, "--shots 399: target 'target' has 400 valid nb201 cells, too few to leave 2 to score"),
    ({"target": "nowhere"}, "unknown device 'nowhere'"),
])
def test_bad_input_is_one_line_naming_it_and_nothing_is_written(store: Path, tmp_path: Path, capsys, change, message) -> None:
    assert evaluate(store, tmp_path / "m.json", **change) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("leti evaluate-transfer: error:") and message in error[0], error
    assert not (tmp_path / "m.json").exists()


def test_sources_that_do_not_cover_the_targets_space_are_one_line(tmp_path: Path, capsys) -> None:
    store = write_store(tmp_path / "store")
    archs = nb101.sample_valid(5, seed=2)
    rows = [{"space": "nb101", "arch": arch, "device": "nb101-board", "backend": "published", "source": "test", "config_id": "p",
             "runs": 1, "samples_ms": [], "median_ms": 1.0 + i, "iqm_ms": None, "mean_ms": 1.0, "min_ms": 1.0, "error": None,
             "measured_at": datetime(2026, 1, 1, tzinfo=timezone.utc)} for i, arch in enumerate(archs)]
    parts.write_part(rows, store, "nb101-board")
    assert evaluate(store, tmp_path / "m.json", sources="gpu-a,nb101-board") == 2
    error = capsys.readouterr().err.strip()
    assert "source device 'nb101-board' has no nb201 cells" in error and "the sources must cover the target's space" in error


@pytest.fixture(scope="module")
def pretrained(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from leti.store import reader

    matrix = reader.read_devices([store], "nb201", devices=["gpu-a", "gpu-b", "cpu-a", "cpu-b"])
    config = transfer.PretrainConfig(hidden=32, layers=2, epochs=25, batch_size=32, lr=0.003)
    return transfer.pretrain("nb201", matrix.archs, matrix.latency_ms, matrix.devices, config).save(
        tmp_path_factory.mktemp("pretrained"))


def test_plan_shots_then_adapt_registers_the_device_and_predict_answers(store: Path, pretrained: Path, tmp_path: Path,
                                                                        monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert main(["plan-shots", "--space", "nb201", "--shots", "12", "--output", "cells.txt", "--pretrained", str(pretrained)]) == 0
    planned = Path("cells.txt").read_text().split()
    assert len(set(planned)) == 12 and all(nb201.is_valid(arch) for arch in planned)
    # The device measured its planned cells (here: its cells of the store that were planned, plus three of its own).
    shots = [arch for arch in planned if arch in set(CELLS)][:9] + CELLS[:3]
    Path("shots.txt").write_text("\n".join(shots) + "\n")
    capsys.readouterr()
    assert main(["adapt", "--device", "target", "--latency", str(store), "--shots-file", "shots.txt", "--pretrained", str(pretrained)]) == 0
    outcome = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert outcome["registered"] and outcome["shots"] == len(shots) and outcome["model"] == "models:/leti-nb201-target@champion"
    assert main(["predict", "--device", "target", *CELLS[200:210]]) == 0
    answers = [json.loads(line)["predicted_ms"] for line in capsys.readouterr().out.strip().splitlines()]
    measured = np.array([DEVICES["target"](arch) for arch in CELLS[200:210]])
    assert regression_metrics(measured, np.array(answers))["acc_10pct"] >= 70


def test_a_bad_shots_file_is_one_line_naming_the_line(store: Path, pretrained: Path, tmp_path: Path, capsys) -> None:
    unmeasured = next(arch for arch in nb201.sample_valid(600, seed=9) if arch not in set(CELLS))
    for text, message in ((f"{CELLS[0]}\n|nor_conv_9x9~0|+\n", "shots.txt:2: malformed nb201 cell '|nor_conv_9x9~0|+'"),
                          (f"{CELLS[0]}\n{unmeasured}\n", f"shots.txt:2: cell {unmeasured} has no measurement of 'target'")):
        (tmp_path / "shots.txt").write_text(text)
        code = main(["adapt", "--device", "target", "--latency", str(store), "--shots-file", str(tmp_path / "shots.txt"),
                     "--pretrained", str(pretrained)])
        error = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(error) == 1 and message in error[0], error


def test_adapting_to_a_source_is_refused(store: Path, pretrained: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert main(["adapt", "--device", "gpu-a", "--latency", str(store), "--pretrained", str(pretrained)]) == 2
    assert "device 'gpu-a' is one of the pretrained model's sources" in capsys.readouterr().err


def test_adapt_and_design_on_known_values(pretrained: Path) -> None:
    model = transfer.Pretrained.load(pretrained)
    weight, bias = model.heads()
    embedding = model.embed(CELLS)
    # A target that is exactly a source's head (in ms) is recovered from 6 shots.
    log_target = (embedding @ weight[1] + bias[1]) * model.scale[1] + model.shift[1]
    head = transfer.adapt(embedding[:6], np.exp(log_target[:6]), weight, bias)
    np.testing.assert_allclose(embedding[6:] @ np.asarray(head.weight) + head.bias, log_target[6:], atol=0.05)
    for design in ("kmeans", "fps", "random"):
        chosen = transfer.design_shots(embedding, 8, seed=0, method=design)
        assert len(set(chosen)) == 8 and chosen.max() < len(CELLS)
    assert list(transfer.design_shots(embedding, 8, seed=0, method="fps")) == list(transfer.design_shots(embedding, 8, seed=0, method="fps"))
    with pytest.raises(ValueError, match="unknown shot design 'best'"):
        transfer.design_shots(embedding, 8, method="best")
    with pytest.raises(ValueError, match="at least 3 measured cells"):
        transfer.adapt(embedding[:2], np.ones(2), weight, bias)


def test_the_head_averages_every_penalty_by_its_leave_one_out_likelihood(pretrained: Path) -> None:
    model = transfer.Pretrained.load(pretrained)
    weight, bias = model.heads()
    embedding = model.embed(CELLS[:8])
    noise = np.random.default_rng(0).normal(0.0, 0.05, 8)
    latency = np.exp((embedding @ weight[1] + bias[1]) * model.scale[1] + model.shift[1] + noise)
    singles = [transfer.adapt(embedding, latency, weight, bias, penalties=[penalty]) for penalty in transfer.PENALTIES]
    averaged = transfer.adapt(embedding, latency, weight, bias)
    evidence = np.array([single.info["log_evidence"][0] for single in singles])
    shares = np.exp(evidence - evidence.max())
    shares /= shares.sum()
    np.testing.assert_allclose(averaged.info["penalty_shares"], shares, atol=1e-6)
    np.testing.assert_allclose(averaged.weight, sum(s * np.asarray(single.weight) for s, single in zip(shares, singles)), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(averaged.bias, sum(s * single.bias for s, single in zip(shares, singles)), rtol=1e-6)
    assert averaged.info["loo_mse"] == pytest.approx(min(single.info["loo_mse"] for single in singles))


def test_a_target_like_one_source_leans_on_it_as_its_prior(pretrained: Path) -> None:
    model = transfer.Pretrained.load(pretrained)
    weight, bias = model.heads()
    embedding = model.embed(CELLS[:12])
    noise = np.random.default_rng(1).normal(0.0, 0.02, 12)
    for source in range(len(model.devices)):
        latency = np.exp(0.7 * (embedding @ weight[source] + bias[source]) + 1.5 + noise)
        shares = transfer.adapt(embedding, latency, weight, bias).info["prior_shares"]  # the mean first, then each source
        assert len(shares) == len(model.devices) + 1 and int(np.argmax(shares)) == 1 + source, (source, shares)


def test_a_target_outside_the_heads_span_is_followed_through_the_embedding(pretrained: Path) -> None:
    model = transfer.Pretrained.load(pretrained)
    weight, bias = model.heads()
    embedding = model.embed(CELLS)
    centred = embedding - embedding.mean(0)
    basis, _ = np.linalg.qr(weight.T)  # the heads' span in the embedding
    outside = centred @ (np.eye(len(basis)) - basis @ basis.T)
    direction = np.linalg.svd(outside, full_matrices=False)[2][0]  # the embedding's widest direction off that span
    log_target = embedding @ weight.mean(0) + 0.5 * (centred @ direction) / np.std(centred @ direction) + 1.0
    shots, rest = np.arange(60), np.arange(60, len(CELLS))
    errors = {}
    for scales in ((0.0,), transfer.EMBEDDING_SCALES):
        head = transfer.adapt(embedding[shots], np.exp(log_target[shots]), weight, bias, scales=scales)
        errors[scales] = float(np.sqrt(np.mean((embedding[rest] @ np.asarray(head.weight) + head.bias - log_target[rest]) ** 2)))
    assert errors[transfer.EMBEDDING_SCALES] < 0.5 * errors[(0.0,)], errors
    assert sum(head.info["scale_shares"][1:]) > 0.9


def test_leave_one_out_residuals_match_refitting_without_each_shot(pretrained: Path) -> None:
    model = transfer.Pretrained.load(pretrained)
    weight, bias = model.heads()
    P = model.embed(CELLS[:9]) @ weight.T + bias
    K, Z = P @ P.T / P.shape[1], np.c_[np.ones(9), P.mean(1)]
    y = np.random.default_rng(2).normal(0.0, 1.0, 9)
    penalty = 0.3
    _, _, loo = transfer._kernel_ridge(np.linalg.inv(K + penalty * np.eye(9)), penalty, Z, y)
    for i in range(9):
        keep = np.arange(9) != i
        coef, alpha, _ = transfer._kernel_ridge(np.linalg.inv(K[np.ix_(keep, keep)] + penalty * np.eye(8)), penalty, Z[keep], y[keep])
        assert y[i] - (Z[i] @ coef + K[i, keep] @ alpha) == pytest.approx(loo[i], rel=1e-6, abs=1e-9)


def test_remembered_cells_are_looked_up_as_the_trunk_computes_them(pretrained: Path) -> None:
    model = transfer.Pretrained.load(pretrained)
    assert (pretrained / transfer.EMBEDDINGS).is_file() and len(model.known) == len(CELLS)
    others = [arch for arch in nb201.sample_valid(40, seed=99) if arch not in model.known][:5]
    mixed = [CELLS[3], *others, CELLS[0]]
    np.testing.assert_allclose(model.embed(mixed), model._trunk(mixed, chunk=4), rtol=1e-5, atol=1e-6)


def test_fit_fine_tunes_the_trunk_from_enough_cells_and_keeps_the_better_on_held_out_cells(pretrained: Path, tmp_path: Path,
                                                                                            monkeypatch) -> None:
    latency = np.array([DEVICES["target"](arch) for arch in CELLS])
    few = transfer.TransferPredictor(str(pretrained)).fit(CELLS[:transfer.FINETUNE_SHOTS - 1], latency[:transfer.FINETUNE_SHOTS - 1])
    assert "finetune_val_mse" not in few.head.info and few.pretrained.finetuned_on == 0
    fit, val = slice(0, transfer.FINETUNE_SHOTS), slice(transfer.FINETUNE_SHOTS, transfer.FINETUNE_SHOTS + 50)
    model = transfer.TransferPredictor(str(pretrained)).fit(CELLS[fit], latency[fit], CELLS[val], latency[val])
    tuned, closed = model.head.info["finetune_val_mse"], model.head.info["closed_form_val_mse"]
    assert bool(model.head.info.get("finetuned")) == (tuned < closed)
    assert (model.pretrained.finetuned_on == transfer.FINETUNE_SHOTS) == (tuned < closed)
    # Where the held-out cells favour the fine-tuned trunk, it is what predicts, saves and loads.
    monkeypatch.setattr(transfer, "log_error", lambda *args: float("inf"))
    model = transfer.TransferPredictor(str(pretrained)).fit(CELLS[fit], latency[fit], CELLS[val], latency[val])
    assert model.head.info["finetuned"] and model.pretrained.finetuned_on == transfer.FINETUNE_SHOTS
    closed_form = transfer.TransferPredictor(str(pretrained)).fit(CELLS[:99], latency[:99])
    rest = CELLS[transfer.FINETUNE_SHOTS + 50:]
    assert not np.allclose(model.predict(rest), closed_form.predict(rest))
    model.save_state(tmp_path)
    loaded = transfer.TransferPredictor(str(pretrained))
    loaded.load_state(tmp_path)
    np.testing.assert_allclose(loaded.predict(rest), model.predict(rest), rtol=1e-5)
    assert loaded.pretrained.finetuned_on == transfer.FINETUNE_SHOTS


def test_the_protocol_fine_tunes_as_adapt_would_from_as_many_shots(pretrained: Path) -> None:
    latency = np.array([DEVICES["target"](arch) for arch in CELLS])
    result = transfer.evaluate(transfer.Pretrained.load(pretrained), CELLS, latency, transfer.FINETUNE_SHOTS, seed=0, design="random")
    assert result["n_test"] == len(CELLS) - transfer.FINETUNE_SHOTS and result["spearman"] > 0.5


def test_adapt_from_many_cells_scores_the_cells_it_held_out(store: Path, pretrained: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """Every one of the device's 400 cells: the fit may fine-tune the trunk, so its validation score is
    on a tenth of them held out of the fit, not leave-one-out."""
    import mlflow

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setattr(transfer, "leave_one_out", lambda *args: pytest.fail("leave-one-out on 400 shots"))
    assert main(["adapt", "--device", "target", "--latency", str(store), "--pretrained", str(pretrained)]) == 0
    outcome = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert outcome["shots"] == len(CELLS) and len(transfer.held_out(len(CELLS))) == 40
    metrics = mlflow.get_run(outcome["run"]).data.metrics
    assert metrics["n_train"] == len(CELLS) and metrics["val_acc_10pct"] >= 70


def test_live_counts_count_the_ops_a_cell_runs_on_and_off_its_paths() -> None:
    from leti import features

    # conv3x3 0->1, skip 1->3 and pool 0->3 are on paths; node 2 has only `none` inputs, so its conv1x1 is dead.
    arch = "|nor_conv_3x3~0|+|none~0|none~1|+|avg_pool_3x3~0|skip_connect~1|nor_conv_1x1~2|"
    counts = dict(zip(features.names("live_counts", "nb201"), features.vector(arch, "live_counts", "nb201")))
    assert {name: value for name, value in counts.items() if value} == {
        "live_skip_connect": 1, "live_nor_conv_3x3": 1, "live_avg_pool_3x3": 1, "dead_none": 2, "dead_nor_conv_1x1": 1}


def test_the_cost_model_recovers_an_additive_device_from_its_shots(pretrained: Path) -> None:
    model = transfer.Pretrained.load(pretrained)
    counts = transfer.cost_features(CELLS, "nb201")
    latency = np.array([DEVICES["target"](arch) for arch in CELLS])  # a sum over live and dead ops: additive in the counts
    costs, loo = transfer.cost_model(counts[:30], latency[:30], model.cost_models())
    error = np.abs(np.c_[np.ones(len(CELLS)), counts] @ costs / latency - 1)
    assert np.median(error[30:]) < 0.005 and np.max(error[30:]) < 0.1 and np.median(np.abs(loo)) < 0.005, (np.median(error), np.max(error))
    assert model.cost_models().shape == (len(model.devices), 1 + counts.shape[1])


def test_the_blend_follows_the_cost_model_or_the_trunk_whichever_the_shots_favour(pretrained: Path) -> None:
    model = transfer.Pretrained.load(pretrained)
    weight, bias = model.heads()
    embedding, counts, sources = model.embed(CELLS), transfer.cost_features(CELLS, "nb201"), model.cost_models()
    shots, rest = np.arange(20), np.arange(20, len(CELLS))

    def errors(latency: np.ndarray) -> tuple[float, float, float]:
        alone = transfer.adapt(embedding[shots], latency[shots], weight, bias)
        blended = transfer.adapt(embedding[shots], latency[shots], weight, bias, counts=counts[shots], sources=sources)
        error = [float(np.median(np.abs(head.predict_ms(embedding[rest], counts[rest]) / latency[rest] - 1))) for head in (alone, blended)]
        return error[0], error[1], blended.mix

    additive = np.array([DEVICES["target"](arch) for arch in CELLS])
    alone, blended, mix = errors(additive)
    assert mix < 0.5 and blended < 0.5 * alone, (alone, blended, mix)
    # A device that is one source's head (multiplicative in the ops, as the log-scale head is) keeps the trunk.
    headlike = np.exp((embedding @ weight[2] + bias[2]) * model.scale[2] + model.shift[2])
    alone, blended, mix = errors(headlike)
    assert mix > 0.7 and blended < 0.02, (alone, blended, mix)


def test_a_blended_head_saves_and_loads_and_an_older_head_still_loads(pretrained: Path, tmp_path: Path) -> None:
    latency = np.array([DEVICES["target"](arch) for arch in CELLS])
    model = transfer.TransferPredictor(str(pretrained)).fit(CELLS[:20], latency[:20])
    assert model.head.costs and model.head.mix < 1.0
    model.save_state(tmp_path)
    loaded = transfer.TransferPredictor(str(pretrained))
    loaded.load_state(tmp_path)
    np.testing.assert_allclose(loaded.predict(CELLS[20:]), model.predict(CELLS[20:]), rtol=1e-6)
    record = json.loads((tmp_path / transfer.HEAD).read_text())
    (tmp_path / transfer.HEAD).write_text(json.dumps({key: record[key] for key in ("weight", "bias", "penalty", "shots", "info")}))
    loaded.load_state(tmp_path)  # a head saved before the cost model: the trunk's head alone
    embedding = loaded.model().embed(CELLS[20:])
    np.testing.assert_allclose(loaded.predict(CELLS[20:]), np.exp(embedding @ np.asarray(record["weight"]) + record["bias"]), rtol=1e-6)
