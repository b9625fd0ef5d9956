"""The leave-family-out evaluation of ``benchmarks/kernel_models.py evaluate`` (see its docstring).

Per device, from the benchmark's stores:

- kernel predictors of every regressor family are fitted on the device's kernel table only (no
  network, so every family of the model set is held out of their fitting by construction);
- each network of the model set is predicted by the kernels with the device's fusion rules, by the
  same regressors with every op a kernel of its own (layer-wise), and by the FLOPs line fitted on the
  networks of the *other* families (leave one family out);
- the second measurement pass is scored as a predictor of the first: the noise floor (how often two
  single measurements of a network agree within ±10 %);
- NAS-Bench-201 and NAS-Bench-101 cells (when the benchmark measured them: ``cells``) go through the
  kernel path too, beside a cell predictor trained on other cells of the same device.

Measured latency is a network's fastest ``min_ms`` over the passes. On this shared VM a
neighbour's load slows every run of a network for a minute at a time (memory-bound networks by up to
1.9x, compute-bound ones hardly), so a pass that ran in such a minute is slow all through, while
nothing makes a pass faster than the network is: the fastest pass is the estimate of the device's
own speed. The noise floor still compares two single passes, as a user who measures once would.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

REFERENCE = {"second_ms": "first_ms"}
"""What a method is scored against when not the fastest pass: the noise floor is one pass against another."""
DEV_NOTE = "development families (looked at while choosing the campaign's settings)"


def acc(measured: np.ndarray, predicted: np.ndarray, within: float = 0.10) -> float:
    ok = np.isfinite(predicted)
    if not ok.any():
        return float("nan")
    return float(np.mean(np.abs(predicted[ok] - measured[ok]) <= within * measured[ok]) * 100)


def mape(measured: np.ndarray, predicted: np.ndarray) -> float:
    ok = np.isfinite(predicted)
    return float(np.mean(np.abs(predicted[ok] - measured[ok]) / measured[ok]) * 100) if ok.any() else float("nan")


def measured_networks(store: Path, device: str) -> pl.DataFrame:
    """network, family, flops, first and second pass (``min_ms``) of a device's model-set rows, and
    ``measured_ms``, the fastest over every pass (see the module docstring)."""
    from leti import model_set
    from leti.store import tables

    rows = tables.read(store / "model_latency" / device, tables.LATENCY).filter(pl.col("error").is_null())
    rows = rows.sort("measured_at").with_columns(pl.col("measured_at").rank("ordinal").over("arch").alias("pass"))
    wide = (rows.group_by("arch").agg(pl.col("flops").first(), pl.col("min_ms").filter(pl.col("pass") == 1).first().alias("first_ms"),
                                      pl.col("min_ms").filter(pl.col("pass") == 2).first().alias("second_ms"),
                                      pl.col("min_ms").min().alias("measured_ms"), pl.len().alias("passes"))
            .with_columns(pl.col("arch").map_elements(model_set.family_of, return_dtype=pl.String).alias("family"))
            .rename({"arch": "network"}).filter(pl.col("family").is_not_null()).sort("family", "network"))
    return wide


def kernel_predictors(store: Path, device: str, families: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    from leti.features import kernels as K
    from leti.measure import kernels as M
    from leti.predictors.kernels import KernelPredictor
    from leti.store.reader import NEWEST, read_kernels

    data = read_kernels(store / "kernel_latency" / device, configuration=NEWEST)
    rules = M.rules_from_rows(M.read_rule_rows(store / "fusion_rules" / device, data.config_id))
    table = data.table.filter(pl.col("kernel_type").is_in(M.campaign_types(rules)))
    kernels = [K.kernel_from_json(t, s) for t, s in zip(table["kernel_type"], table["shape"])]
    fitted = {}
    for family in families:
        started = time.monotonic()
        fitted[family] = KernelPredictor(family).fit(kernels, table["own_ms"].to_numpy(), rules, data.overhead_ms)
        print(f"{device}: {family} fitted on {len(kernels)} kernels in {time.monotonic() - started:.0f} s", flush=True)
    info = {"config_id": data.config_id, "kernels": len(kernels), "types": len({k.type for k in kernels}), "rules": rules,
            "overhead_ms": data.overhead_ms, "fused": sorted(f"{a}+{b}" for (a, b), f in rules.items() if f)}
    return fitted, info


def onnx_runtime_rules() -> dict[tuple[str, str], bool]:
    """Which fusion-test pairs ONNX Runtime fuses by its own account: its optimised graph of the
    chained test model has fewer compute nodes than those of the two parts (layout reorders aside).
    A check of the measured rules, for this runtime only (a phone's runtime says nothing of the kind)."""
    import tempfile

    import onnx
    import onnxruntime as ort

    from leti.devices.onnxruntime_cpu import LAYOUT_NODES, export_onnx
    from leti.measure import kernels as M

    def nodes(kernel: Any, folder: Path) -> int:
        module, example = M.build(kernel)
        export_onnx(module.eval(), example, folder / "model.onnx", 17, "fx")
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(folder / "optimized.onnx")
        options.log_severity_level = 3
        ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
        return sum(node.op_type not in LAYOUT_NODES for node in onnx.load(str(folder / "optimized.onnx")).graph.node)

    rules = {}
    with tempfile.TemporaryDirectory() as folder:
        for first, second in M.fusion_pairs():
            alone_first, alone_second, pair = M.pair_cases(first, second, 0)
            rules[(first, second)] = nodes(pair, Path(folder)) < nodes(alone_first, Path(folder)) + nodes(alone_second, Path(folder))
    return rules


def rules_check(measured: dict[tuple[str, str], bool], runtime: dict[tuple[str, str], bool]) -> str:
    agree = [pair for pair in runtime if measured.get(pair, False) == runtime[pair]]
    missed = sorted("+".join(pair) for pair in runtime if runtime[pair] and not measured.get(pair, False))
    extra = sorted("+".join(pair) for pair in runtime if not runtime[pair] and measured.get(pair, False))
    return (f"The measured rules against ONNX Runtime's own optimised graphs of the same test models: {len(agree)} of "
            f"{len(runtime)} pairs agree; fused by the runtime but not found: {', '.join(missed) or 'none'}; found but not "
            f"fused by the runtime: {', '.join(extra) or 'none'}.")


def predict_networks(networks: pl.DataFrame, fitted: dict[str, Any]) -> pl.DataFrame:
    """Each network's predictions: kernels and layer-wise per family, the leave-family-out FLOPs line
    and the second pass; NaN where a kernel type has no predictor. Also records prediction time."""
    from leti.features import kernels as K

    out = []
    flops = networks["flops"].to_numpy().astype(float)
    measured = networks["measured_ms"].to_numpy()
    families = networks["family"].to_numpy()
    line = np.full(len(networks), np.nan)
    for family in np.unique(families):
        others = families != family
        design = np.stack([np.ones(others.sum()), flops[others]], axis=1)
        coefficients = np.linalg.lstsq(design, measured[others], rcond=None)[0]
        line[~others] = coefficients[0] + coefficients[1] * flops[~others]
    for index, row in enumerate(networks.iter_rows(named=True)):
        result = {**row, "flops_line_ms": line[index]}
        started, cpu = time.perf_counter(), time.process_time()
        graph = K.model_graph(row["network"])  # what `leti predict-model` does for one network, startup excluded
        for number, (family, predictor) in enumerate(fitted.items()):
            for name, rules in (("kernels", None), ("layerwise", {})):
                try:
                    result[f"{name}_{family}_ms"] = predictor.predict_graph(graph, rules).predicted_ms
                except KeyError:
                    result[f"{name}_{family}_ms"] = float("nan")
                if number == 0 and name == "kernels":
                    result["predict_seconds"] = time.perf_counter() - started
                    result["predict_cpu_seconds"] = time.process_time() - cpu
        result["kernel_count"] = len(K.split_kernels(graph, next(iter(fitted.values())).rules))
        out.append(result)
    return pl.DataFrame(out)


def cell_rows(store: Path, device: str, params: str, fitted: dict[str, Any], spaces_counts: dict[str, int]) -> list[dict[str, Any]]:
    """NAS-Bench-201/101 cells measured on the device: a cell predictor trained on half of them (the way
    leti's cell predictors learn), the FLOPs line fitted on the same half, and the kernel path, all
    scored on the other half."""
    from leti import spaces
    from leti.devices.config import device_from_params
    from leti.features import kernels as K
    from leti.predictors import make_predictor
    from leti.store import reader

    rows = []
    for space_name in spaces_counts:
        try:
            cells = reader.read_cells(store / "cell_latency", device, space_name, reader.ReadPolicy("min_ms", reader.NEWEST))
        except (KeyError, ValueError, FileNotFoundError):
            continue
        space = spaces.get(space_name)
        network = device_from_params(device, params, space_name).network
        order = np.random.default_rng(0).permutation(len(cells.archs))
        train, test = order[: len(order) // 2], order[len(order) // 2:]
        archs = np.asarray(cells.archs, dtype=object)
        measured = cells.latency_ms
        row: dict[str, Any] = {"family": f"{space_name} cells", "networks": len(test)}
        feature_set = "onehot" if space_name == "nb201" else "flat"
        for family in ("linear", "xgboost"):
            predictor = make_predictor(family, space=space_name, feature_set=feature_set).fit(list(archs[train]), measured[train])
            row[f"cell predictor ({family})"] = acc(measured[test], predictor.predict(list(archs[test])))
        flops = np.array([space.flops_params(arch, network)[0] for arch in archs], dtype=float)
        design = np.stack([np.ones(len(train)), flops[train]], axis=1)
        coefficients = np.linalg.lstsq(design, measured[train], rcond=None)[0]
        row["FLOPs line"] = acc(measured[test], coefficients[0] + coefficients[1] * flops[test])
        graphs = [K.torch_graph(space.build_network(arch, network), space.example_input(network), arch) for arch in archs[test]]
        for family, predictor in fitted.items():
            for name, rules in (("kernels", None), ("layer-wise", {})):
                predicted = []
                for graph in graphs:
                    try:
                        predicted.append(predictor.predict_graph(graph, rules).predicted_ms)
                    except KeyError:
                        predicted.append(float("nan"))
                row[f"{name} ({family})"] = acc(measured[test], np.asarray(predicted))
        rows.append(row)
    return rows


def family_table(predictions: pl.DataFrame, methods: dict[str, str]) -> list[dict[str, Any]]:
    """acc@10 per held-out family and method; then every family and the held-out ones together."""
    from leti import model_set

    rows = []
    groups = [(family, predictions.filter(pl.col("family") == family)) for family in predictions["family"].unique(maintain_order=True)]
    held_out = predictions.filter(~pl.col("family").is_in(list(model_set.DEVELOPMENT_FAMILIES)))
    groups += [("all families", predictions), ("held-out families only", held_out)]
    for name, group in groups:
        row = {"family": name, "networks": group.height}
        for label, column in methods.items():
            reference = group[REFERENCE.get(column, "measured_ms")].to_numpy()
            values = group[column].to_numpy().astype(float)
            row[label] = acc(reference, values)
            row[f"{label} MAPE"] = mape(reference, values)
        rows.append(row)
    return rows


def markdown_table(rows: list[dict[str, Any]], methods: list[str]) -> str:
    head = "| family | networks | " + " | ".join(methods) + " |\n|---|---|" + "---|" * len(methods) + "\n"
    body = ""
    for row in rows:
        name = f"**{row['family']}**" if row["family"] in ("all families", "held-out families only") else row["family"]
        cells = [("–" if not np.isfinite(row[m]) else f"{row[m]:.1f}") for m in methods]
        body += f"| {name} | {row['networks']} | " + " | ".join(cells) + " |\n"
    return head + body


def cells_table(rows: list[dict[str, Any]]) -> str:
    columns = [key for key in rows[0] if key not in ("family", "networks")]
    head = "| cells | tested | " + " | ".join(columns) + " |\n|---|---|" + "---|" * len(columns) + "\n"
    return head + "".join(f"| {r['family']} | {r['networks']} | " + " | ".join(f"{r[c]:.1f}" for c in columns) + " |\n" for r in rows)


def run(devices: list[str], params: str, store: Path, results: Path, families: tuple[str, ...] = ("xgboost", "linear", "mlp")) -> None:
    from leti import model_set

    results.mkdir(parents=True, exist_ok=True)
    report = ["# Any network on a device: kernel-level prediction, leaving whole families out", "",
              f"Generated by `python benchmarks/kernel_models.py evaluate` ({time.strftime('%Y-%m-%d %H:%M')}).",
              f"acc@10 = share of networks predicted within ±10 % of their fastest `min_ms` over the passes (the noise floor: "
              f"the second pass within ±10 % of the first; see the evaluation's docstring). "
              f"{', '.join(model_set.DEVELOPMENT_FAMILIES)} are the {DEV_NOTE}.", ""]
    summary: dict[str, Any] = {}
    for device in devices:
        networks = measured_networks(store, device)
        fitted, info = kernel_predictors(store, device, list(families))
        predictions = predict_networks(networks, fitted)
        predictions.write_csv(results / f"predictions_{device}.csv")
        methods = {"noise floor (2nd pass)": "second_ms", "FLOPs line (leave family out)": "flops_line_ms"}
        methods |= {f"layer-wise ({f})": f"layerwise_{f}_ms" for f in families}
        methods |= {f"kernels ({f})": f"kernels_{f}_ms" for f in families}
        rows = family_table(predictions, methods)
        from kernel_models import CELLS  # noqa: PLC0415 - the benchmark's own settings

        cells = cell_rows(store, device, params, fitted, CELLS)
        campaign = results / f"campaign_{device}.json"
        cost = json.loads(campaign.read_text()) if campaign.exists() else {}
        report += [f"## {device}", "",
                   f"Kernel table: {info['kernels']} kernels of {info['types']} types (config {info['config_id']}), per-call overhead "
                   f"{info['overhead_ms'] * 1000:.1f} µs; fused pairs: {', '.join(info['fused']) or 'none'}."
                   + (f" Campaign cost: {cost.get('seconds', 0) / 60:.1f} min wall, {cost.get('device_seconds', 0) / 60:.1f} min in timed "
                      f"runs, {cost.get('measured', 0)} kernels." if cost else ""), "",
                   *([rules_check(info["rules"], onnx_runtime_rules()), ""] if device.startswith("onnxruntime") else []),
                   "acc@10 % per held-out family:", "", markdown_table(rows, list(methods)), "",
                   *(["Search-space cells through the kernel path (acc@10 % on half the cells; the cell predictors and the "
                      "FLOPs line trained on the other half, the kernel views on no cell):", "",
                      cells_table(cells), ""] if cells else []),
                   "MAPE % on all families: " + "; ".join(f"{m} {rows[-2][m + ' MAPE']:.1f}" for m in methods), "",
                   f"Prediction time per network (build its graph, split it, predict with {families[0]}; startup excluded): median "
                   f"{predictions['predict_seconds'].median():.2f} s, max {predictions['predict_seconds'].max():.2f} s of wall time "
                   f"(CPU time median {predictions['predict_cpu_seconds'].median():.2f} s, max {predictions['predict_cpu_seconds'].max():.2f} s; "
                   f"the host's other work inflates the wall time).", ""]
        summary[device] = {"kernels": {key: value for key, value in info.items() if key != "rules"}, "campaign": cost, "acc_10pct": {r["family"]: {m: r[m] for m in methods} for r in rows},
                           "cells_acc_10pct": cells,
                           "predict_seconds_median": predictions["predict_seconds"].median(),
                           "predict_cpu_seconds_median": predictions["predict_cpu_seconds"].median()}
        print(markdown_table(rows, list(methods)), flush=True)
    (results / "report.md").write_text("\n".join(report) + "\n")
    (results / "summary.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
