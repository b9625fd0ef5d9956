"""Few-shot transfer to new devices on the shared NAS-Bench-201 data: leti's tables over k, splits and seeds.

    python benchmarks/transfer_report.py run --stores data/help data/latbench --output benchmarks/results/transfer
    python benchmarks/transfer_report.py single --stores data/help data/latbench --output benchmarks/results/transfer
    python benchmarks/transfer_report.py report --output benchmarks/results/transfer

`run`: for each split (below), pretrain once on its sources (cached by data digest), then for every
target, k in --shots and seed in --seeds: adapt from k designed shots and score every other valid
cell (Spearman, acc@10; also NASFLAT's Spearman over every cell), and the ridge baseline on the same
shots. Rows are appended to ``transfer.jsonl`` as they finish, so a stopped run resumes. `single`: the
900-cell single-device GCN (leti's defaults; 900 train / 100 validation / rest test) per target of
the splits named by --split (default same-kind: pretrained on every other fold), and transfer from the same 900 cells and validation cells (the trunk fine-tuned when the validation cells
say it beats the closed-form head). `report`: ``report.md`` with mean ± std tables.

Splits of the 28 shared devices (21 HELP, 7 LatBench):
- ``same-kind``: four folds of mixed devices; pretrain on three, adapt to each device of the fourth;
- ``cross-kind``: sources the desktop GPUs (HELP's five GPUs at every batch size and LatBench's GTX
  1080 Ti); targets every LatBench mobile or edge device and HELP's phones;
- ``mobile``: sources every HELP device; targets every LatBench device;
- ``help``: HELP's own meta-training devices as sources; every device that is neither HELP's
  meta-training nor meta-validation device as a target (HELP's meta-test devices are not in the
  shared data, so this is not HELP's test set).
Nothing here was tuned on these targets: the method's choices were made on validation devices of
the study behind leti/predictors/transfer.py.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from leti.metrics import regression_metrics
from leti.predictors import evaluation, transfer
from leti.store import reader

HELP_GPUS = [f"{gpu}_{batch}" for gpu in ("1080ti", "2080ti", "titan_rtx", "titanx", "titanxp") for batch in (1, 32, 256)]
HELP_PHONES = ["pixel3", "samsung_a50", "samsung_s7", "essential_ph_1"]
HELP_TRAIN = ["1080ti_1", "1080ti_32", "1080ti_256", "silver_4114", "silver_4210r", "samsung_a50", "pixel3", "essential_ph_1", "samsung_s7"]
HELP_VALIDATION = ["titanx_1", "titanx_32", "titanx_256", "gold_6240"]
LATBENCH_GPU = "desktop-gpu-gtx-1080ti-fp32"


def kind(device: str) -> str:
    """gpu (desktop), cpu (server), phone, or edge (LatBench's mobile and embedded devices)."""
    if device == LATBENCH_GPU or device.startswith(("1080ti", "2080ti", "titan")):
        return "gpu"
    if device.startswith(("gold", "silver")):
        return "cpu"
    return "phone" if device in HELP_PHONES else "edge"


def short(device: str) -> str:
    """The study's short names, whose order dealt the folds (LatBench's long names sort otherwise)."""
    parts = device.split("-")
    return f"lb_{parts[1]}_{parts[-2]}" if device.count("-") >= 3 else device


def splits(devices: list[str]) -> dict[str, list[tuple[list[str], list[str]]]]:
    """Split name -> [(sources, targets), ...] over the devices present."""
    latbench = sorted((d for d in devices if d.count("-") >= 3), key=short)
    help_devices = sorted(d for d in devices if d not in latbench)
    order = sorted(devices, key=lambda d: (["gpu", "cpu", "phone", "edge"].index(kind(d)), short(d)))
    folds = [order[i::4] for i in range(4)]  # kinds dealt round-robin: every fold mixes them
    gpus = [d for d in order if kind(d) == "gpu"]
    return {
        "same-kind": [([d for d in devices if d not in fold], fold) for fold in folds],
        "cross-kind": [(gpus, [d for d in latbench if d != LATBENCH_GPU] + [d for d in HELP_PHONES if d in devices])],
        "mobile": [(help_devices, latbench)],
        "help": [([d for d in HELP_TRAIN if d in devices], [d for d in devices if d not in HELP_TRAIN + HELP_VALIDATION])],
    }


def done_keys(path: Path) -> set[tuple]:
    if not path.exists():
        return set()
    return {tuple(json.loads(line)["key"]) for line in path.read_text().splitlines() if line.strip()}


def append(path: Path, row: dict) -> None:
    with open(path, "a") as handle:
        handle.write(json.dumps(row) + "\n")


def run(args: argparse.Namespace) -> None:
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    rows_path = out / "transfer.jsonl"
    done = done_keys(rows_path)
    matrix = reader.read_devices(args.stores, "nb201", reader.ReadPolicy(configuration=reader.NEWEST))
    config = transfer.PretrainConfig()
    timings = json.loads((out / "timings.json").read_text()) if (out / "timings.json").exists() else {}
    for name, folds in splits(matrix.devices).items():
        if args.split and name not in args.split:
            continue
        for fold, (sources, targets) in enumerate(folds):
            rows = [matrix.devices.index(d) for d in sources]
            pretrained, hit = transfer.cached(transfer.default_cache(), "nb201", matrix.archs, matrix.latency_ms[rows], sources, config)
            if not hit:
                timings[f"pretrain {name} fold {fold} ({len(sources)} devices)"] = pretrained.train_seconds
                (out / "timings.json").write_text(json.dumps(timings, indent=2))
            source_matrix = reader.DeviceMatrix("nb201", sources, matrix.archs, matrix.latency_ms[rows], {}, {})
            print(f"{name} fold {fold}: {len(sources)} sources, {'cached' if hit else f'{pretrained.train_seconds:.0f} s'}", flush=True)
            for target in targets:
                y = matrix.row(target)
                keep = np.isfinite(y)
                archs, latency = [a for a, k in zip(matrix.archs, keep) if k], y[keep]
                keys = [(name, fold, target, k, seed, args.design) for k in args.shots for seed in args.seeds]
                if all(tuple(key) in done for key in keys):
                    continue
                embedding = pretrained.embed(archs)  # once per target: the sweep over k and seeds reuses it
                for key in keys:
                    k, seed = key[3], key[4]
                    if key in done:
                        continue
                    metrics = transfer.evaluate(pretrained, archs, latency, k, seed, args.design, embedding=embedding)
                    ridge = transfer.ridge_scores(pretrained, source_matrix, archs, latency, metrics["shot_archs"], embedding)
                    append(rows_path, {"key": list(key), "split": name, "fold": fold, "target": target, "k": k, "seed": seed,
                                       "design": args.design, "sources": len(sources),
                                       **{m: metrics[m] for m in ("spearman", "spearman_all", "acc_10pct", "acc_5pct", "fit_seconds")},
                                       "ridge_spearman": ridge["ridge_spearman"], "ridge_acc_10pct": ridge["ridge_acc_10pct"]})
    timings.update(prediction_timings(next(transfer.default_cache().glob("*/"))))
    (out / "timings.json").write_text(json.dumps(timings, indent=2))


def prediction_timings(folder: Path) -> dict[str, float]:
    """Seconds to predict all 15625 NB201 cells with an adapted model, through the trunk (a model
    without its remembered cells) and as saved by pretraining (the cells looked up), load excluded."""
    from leti.spaces import nb201

    everything = nb201.all_arch_strings()
    pretrained = transfer.Pretrained.load(folder)
    pretrained.known, pretrained.known_rows = {}, None
    model = transfer.TransferPredictor(space="nb201")
    model.pretrained = pretrained
    model.fit(everything[:20], np.linspace(1.0, 2.0, 20))
    start = time.perf_counter()
    model.predict(everything)
    through_trunk = time.perf_counter() - start
    pretrained.remember(everything)
    start = time.perf_counter()
    model.predict(everything)
    return {"predict all 15625 cells through the trunk (s)": through_trunk,
            "predict all 15625 cells, remembered (s)": time.perf_counter() - start}


def single(args: argparse.Namespace) -> None:
    """The 900-cell single-device GCN per target, and transfer from the same 900 cells (random shots)."""
    from leti import predictors

    out = Path(args.output)
    rows_path = out / "single.jsonl"
    done = done_keys(rows_path)
    earlier = {}
    if args.gcn_from:
        rows_before = [json.loads(line) for line in Path(args.gcn_from).read_text().splitlines() if line.strip()]
        earlier = {tuple(row["key"]): row for row in rows_before}
    matrix = reader.read_devices(args.stores, "nb201", reader.ReadPolicy(configuration=reader.NEWEST))
    config = transfer.PretrainConfig()
    split_folds = splits(matrix.devices)
    targets = {t: (name, s) for name in args.split or ["same-kind"] for s, ts in split_folds[name] for t in ts}
    for target, (name, sources) in sorted(targets.items()):
        if args.target and target not in args.target:
            continue
        y = matrix.row(target)
        keep = np.isfinite(y)
        archs, latency = [a for a, k in zip(matrix.archs, keep) if k], y[keep]
        for seed in args.seeds:
            key = (target, seed, name)
            if key in done:
                continue
            parts = evaluation.split(len(archs), 900, 100, seed)
            if tuple(key) in earlier:  # an earlier run's GCN figures, same target, seed and split (the caller vouches for its code)
                gcn_metrics = {"acc_10pct": earlier[tuple(key)]["gcn_acc_10pct"], "spearman": earlier[tuple(key)]["gcn_spearman"]}
            else:
                gcn = predictors.make_predictor("gcn", **predictors.with_defaults("gcn", {}, {"seed": seed, "space": "nb201"}))
                gcn_metrics = evaluation.evaluate(gcn, archs, latency, parts).metrics
            rows = [matrix.devices.index(d) for d in sources]
            pretrained, _ = transfer.cached(transfer.default_cache(), "nb201", matrix.archs, matrix.latency_ms[rows], sources, config)
            model = transfer.TransferPredictor(space="nb201")
            model.pretrained = pretrained
            train, val = [archs[i] for i in parts.train], [archs[i] for i in parts.val]
            started = time.perf_counter()
            model.fit(train, latency[parts.train], val, latency[parts.val])
            fit_seconds = time.perf_counter() - started
            test = [archs[i] for i in parts.test]
            transfer_metrics = regression_metrics(latency[parts.test], model.predict(test))
            append(rows_path, {"key": list(key), "target": target, "seed": seed, "split": name,
                               "gcn_acc_10pct": gcn_metrics["acc_10pct"], "gcn_spearman": gcn_metrics["spearman"],
                               "transfer900_acc_10pct": transfer_metrics["acc_10pct"], "transfer900_spearman": transfer_metrics["spearman"],
                               "transfer900_finetuned": bool(model.head.info.get("finetuned")), "transfer900_fit_seconds": fit_seconds,
                               "transfer900_val_mse": {key: model.head.info.get(key) for key in ("finetune_val_mse", "closed_form_val_mse")}})
            print(f"{target} seed {seed}: gcn {gcn_metrics['acc_10pct']:.1f}, transfer-900 {transfer_metrics['acc_10pct']:.1f}", flush=True)


def mean_std(values: list[float], digits: int = 3) -> str:
    return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}" if values else "—"


PUBLISHED = {"HELP (10 reference + 10 random)": (20, 0.932), "MultiPredict": (20, 0.930), "NASFLAT, 10 shots": (10, 0.947),
             "NASFLAT, 20 shots": (20, 0.959)}
"""Published mean Spearman on HELP's NAS-Bench-201 test devices (k measurements of the new device)."""


def plot(rows: list[dict], path: Path) -> None:
    """Spearman and acc@10 against k, one column per split: leti's transfer and the ridge baseline
    (mean and the band of one std over targets x seeds), the published figures as markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits_here = [s for s in ("same-kind", "cross-kind", "mobile", "help") if any(r["split"] == s for r in rows)]
    figure, axes = plt.subplots(2, len(splits_here), figsize=(4.2 * len(splits_here), 7), squeeze=False, sharex=True)
    for column, split in enumerate(splits_here):
        mine = [r for r in rows if r["split"] == split]
        ks = sorted({r["k"] for r in mine})
        for row, (metric, label) in enumerate((("spearman", "Spearman"), ("acc_10pct", "acc@10 %"))):
            axis = axes[row][column]
            for key, name, colour in ((metric, "leti transfer", "tab:blue"), (f"ridge_{metric}", "ridge on sources", "tab:orange")):
                mean = np.array([np.mean([r[key] for r in mine if r["k"] == k]) for k in ks])
                std = np.array([np.std([r[key] for r in mine if r["k"] == k]) for k in ks])
                axis.plot(ks, mean, "o-", color=colour, label=name)
                axis.fill_between(ks, mean - std, mean + std, color=colour, alpha=0.15)
            if metric == "spearman":
                for marker, (name, (k, value)) in zip("sD^v", PUBLISHED.items()):
                    axis.plot([k], [value], marker, color="black", markerfacecolor="none", label=f"{name} (published, HELP's split)")
            axis.set_xscale("log")
            axis.set_xticks(ks, [str(k) for k in ks])
            axis.grid(alpha=0.3)
            axis.set_ylabel(label)
            if row == 0:
                axis.set_title(f"{split} ({len({r['target'] for r in mine})} targets)")
            else:
                axis.set_xlabel("k: measured cells of the new device")
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=3, fontsize=8)
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)


def report(args: argparse.Namespace) -> None:
    out = Path(args.output)
    rows = [json.loads(line) for line in (out / "transfer.jsonl").read_text().splitlines() if line.strip()]
    designs = {r["design"] for r in rows}
    single_rows = [json.loads(line) for line in (out / "single.jsonl").read_text().splitlines()] if (out / "single.jsonl").exists() else []
    lines = ["# Few-shot transfer on the shared NAS-Bench-201 devices", "", f"Shots: {args.design} (designs run: {', '.join(sorted(designs))}).", "",
             "Spearman over every target cell outside the k shots (mean ± std over targets × seeds); NASFLAT's rule "
             "(every cell) in brackets; acc@10 %; the ridge baseline on the same shots. Produced by `benchmarks/transfer_report.py`.", ""]
    random_rows = [r for r in rows if r["design"] == "random"]
    rows = [r for r in rows if r["design"] == args.design]
    for split in ("same-kind", "cross-kind", "mobile", "help"):
        mine = [r for r in rows if r["split"] == split]
        if not mine:
            continue
        targets = sorted({r["target"] for r in mine})
        lines += [f"## {split} ({len(targets)} targets: {', '.join(targets)})", "",
                  "| k | transfer Spearman | (all cells) | transfer acc@10 % | ridge Spearman | ridge acc@10 % |", "|---|---|---|---|---|---|"]
        for k in sorted({r["k"] for r in mine}):
            at = [r for r in mine if r["k"] == k]
            lines.append(f"| {k} | {mean_std([r['spearman'] for r in at])} | ({mean_std([r['spearman_all'] for r in at])}) | "
                         f"{mean_std([r['acc_10pct'] for r in at], 1)} | {mean_std([r['ridge_spearman'] for r in at])} | "
                         f"{mean_std([r['ridge_acc_10pct'] for r in at], 1)} |")
        chance = [r for r in random_rows if r["split"] == split]
        if chance and args.design != "random":
            lines += ["", f"Designed ({args.design}) against random shots, same targets and seeds:", "",
                      "| k | designed Spearman | random Spearman | designed acc@10 % | random acc@10 % |", "|---|---|---|---|---|"]
            for k in sorted({r["k"] for r in chance}):  # the runs both designs made: same targets and seeds
                random_at = {(r["target"], r["seed"]): r for r in chance if r["k"] == k}
                designed_at = [r for r in mine if r["k"] == k and (r["target"], r["seed"]) in random_at]
                random_at = [random_at[(r["target"], r["seed"])] for r in designed_at]
                lines.append(f"| {k} | {mean_std([r['spearman'] for r in designed_at])} | {mean_std([r['spearman'] for r in random_at])} | "
                             f"{mean_std([r['acc_10pct'] for r in designed_at], 1)} | {mean_std([r['acc_10pct'] for r in random_at], 1)} |")
        lines += ["", "| target | k=10 Spearman | k=50 acc@10 % | 900-cell GCN acc@10 % | transfer, 900 shots, acc@10 % |", "|---|---|---|---|---|"]
        for target in targets:
            k10 = [r["spearman"] for r in mine if r["target"] == target and r["k"] == 10]
            k50 = [r["acc_10pct"] for r in mine if r["target"] == target and r["k"] == 50]
            gcn = [r["gcn_acc_10pct"] for r in single_rows if r["target"] == target]  # the same split whichever the sources
            t900 = [r["transfer900_acc_10pct"] for r in single_rows if r["target"] == target and r["split"] == split]
            lines.append(f"| {target} | {mean_std(k10)} | {mean_std(k50, 1)} | {mean_std(gcn, 1)} | {mean_std(t900, 1)} |")
        lines.append("")
    lines += ["![Spearman and acc@10 against k, per split](transfer_k.png)", ""]
    plot(rows, out / "transfer_k.png")
    if (out / "timings.json").exists():
        lines += ["## Timings (this 2-core VM, one thread)", ""]
        lines += [f"- {name}: {value:.2f} s" for name, value in json.loads((out / "timings.json").read_text()).items()]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["run", "single", "report"])
    parser.add_argument("--stores", nargs="+", default=["data/help", "data/latbench"])
    parser.add_argument("--output", default="benchmarks/results/transfer")
    parser.add_argument("--shots", type=int, nargs="+", default=[5, 10, 20, 50, 100])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--design", default="auto")
    parser.add_argument("--split", action="append", help="only these splits (repeatable)")
    parser.add_argument("--target", action="append", help="single: only these targets (repeatable)")
    parser.add_argument("--gcn-from", help="single: take the single-device GCN's figures from this earlier single.jsonl "
                                           "(rerun only transfer after a change to adaptation)")
    args = parser.parse_args()
    {"run": run, "single": single, "report": report}[args.what](args)


if __name__ == "__main__":
    main()
