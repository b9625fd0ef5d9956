"""Adaptation variants compared on validation devices only (never on a reported target).

    python benchmarks/transfer_validation.py [--shots 5 10 20] [--seeds 0 1 2 3 4] [--design auto] [--variants NAME ...]

Two validation groups, each adapted from the pretrained model of a split whose sources exclude it and
whose targets it is not (``transfer_report.py``'s splits; the pretrained models come from its cache):
- HELP's meta-validation devices (titanx_1/32/256, gold_6240), from HELP's nine meta-training devices
  (split ``help``);
- HELP's three Xeons, from the desktop GPUs (split ``cross-kind``).
Each variant adapts from the same designed shots and is scored by Spearman over every other valid cell.
The default in ``leti/predictors/transfer.py`` (``adapt``) was chosen from this table.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from collections.abc import Callable

import numpy as np
from scipy.stats import spearmanr
from transfer_report import splits

from leti import features
from leti.predictors import transfer
from leti.store import reader

VALIDATION = {"help": ["titanx_1", "titanx_32", "titanx_256", "gold_6240"], "cross-kind": ["gold_6240", "silver_4114", "silver_4210r"]}


def ridge_fits(P_all: np.ndarray, chosen: np.ndarray, y: np.ndarray, free: np.ndarray,
               extra: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Every penalty's fit of free columns ``free`` plus a ridge combination of ``P_all``'s columns (and
    of ``extra``'s, whose kernel is added): the leave-one-out errors and the log latency of every cell."""
    P = P_all[chosen]
    K = P @ P.T / P.shape[1] + (0 if extra is None else extra[chosen] @ extra[chosen].T)
    K_all = P_all @ P.T / P.shape[1] + (0 if extra is None else extra @ extra[chosen].T)
    errors, predictions = [], []
    for penalty in transfer.PENALTIES:
        coef, alpha, loo = transfer._kernel_ridge(np.linalg.inv(K + penalty * np.eye(len(y))), penalty, free[chosen], y)
        errors.append(max(float(np.mean(loo**2)), 1e-12))
        predictions.append(free @ coef + K_all @ alpha)
    return np.asarray(errors), np.asarray(predictions)


def averaged(errors: np.ndarray, predictions: np.ndarray, shots: float, prior: np.ndarray | None = None) -> np.ndarray:
    """The fits weighted by their leave-one-out likelihood (Gaussian: ``(least error / error)^(k/2)``),
    times ``prior`` (each fit's prior weight; default equal)."""
    share = np.exp(-shots / 2 * np.log(errors / errors.min())) * (1.0 if prior is None else prior)
    return np.tensordot(share / share.sum(), predictions, 1)


def kernel_ridge(P_all: np.ndarray, chosen: np.ndarray, y: np.ndarray, free: np.ndarray, extra: np.ndarray | None = None,
                 average: bool = False) -> np.ndarray:
    """Log latency of every cell (:func:`ridge_fits`), the penalty the least leave-one-out error, or every
    penalty weighted by its leave-one-out likelihood (``average``)."""
    errors, predictions = ridge_fits(P_all, chosen, y, free, extra)
    return averaged(errors, predictions, len(y)) if average else predictions[int(np.argmin(errors))]


def prior_columns(P: np.ndarray, with_mean: bool = False) -> list[np.ndarray]:
    """The free columns of each prior: the intercept and the sources' mean, or the intercept and one
    source (and the mean beside it, ``with_mean``)."""
    one, mean = np.ones(len(P)), P.mean(1)
    return [np.c_[one, mean]] + [np.c_[one, mean, column] if with_mean else np.c_[one, column] for column in P.T]


def priors_averaged(P: np.ndarray, chosen: np.ndarray, y: np.ndarray, with_mean: bool = False, temper: float = 1.0,
                    mean_mass: float | None = None) -> np.ndarray:
    """As the default, but the free prior column is the sources' mean or any one source, and every
    (prior, penalty) fit is weighted by its leave-one-out likelihood: a target like one source leans on it.
    ``with_mean``: the mean stays a free column beside each source."""
    fits = [ridge_fits(P, chosen, y, free) for free in prior_columns(P, with_mean)]
    prior = None
    if mean_mass is not None:  # the mean prior gets this share of the prior mass, the sources the rest
        each = np.r_[mean_mass, np.full(P.shape[1], (1 - mean_mass) / P.shape[1])]
        prior = np.repeat(each, len(fits[0][0]))
    return averaged(np.concatenate([e for e, _ in fits]), np.concatenate([p for _, p in fits]), len(y) * temper, prior)


def extra_kernel_averaged(P: np.ndarray, features: np.ndarray, chosen: np.ndarray, y: np.ndarray, scales: tuple[float, ...]) -> np.ndarray:
    """The prior as the default (the sources' mean or any one source), plus a kernel on ``features``
    (centred, sized as the heads' kernel, times each scale) so a target can move outside the heads'
    span; every (scale, prior, penalty) fit weighted by its leave-one-out likelihood. On the trunk's
    embedding this is leti's ``adapt`` (its ``scales``); here it serves features ``adapt`` cannot use."""
    errors, predictions = [], []
    for scale in scales:
        for free in prior_columns(P):
            e, p = ridge_fits(P, chosen, y, free, features * np.sqrt(scale) if scale else None)
            errors.append(e)
            predictions.append(p)
    return averaged(np.concatenate(errors), np.concatenate(predictions), len(y))


def whitened(P: np.ndarray, power: float) -> np.ndarray:
    """The heads' predictions rotated to their principal components, each scaled by its singular value to
    ``1 - power`` (1: fully whitened, every direction the sources vary in gets the same prior variance),
    rescaled to the heads' mean square."""
    u, s, _ = np.linalg.svd(P - P.mean(0), full_matrices=False)
    keep = s > s[0] * 1e-6
    W = u[:, keep] * s[keep] ** (1 - power)
    return W * np.sqrt(float((P**2).sum(1).mean() / P.shape[1]) / float((W**2).sum(1).mean() / W.shape[1]))


def variants(P: np.ndarray, M: np.ndarray, H: np.ndarray, O: np.ndarray) -> dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]]:
    """Each variant: (shots, their log latency) -> log latency of every cell. ``P``: the source heads'
    standardised predictions, ``M``: the sources' measured standardised latencies, ``H``: the trunk's
    embedding, ``O``: the cells' one-hot op encoding (cells x ...)."""
    def free(A: np.ndarray) -> np.ndarray:
        return np.c_[np.ones(len(A)), A.mean(1)]

    centred = P - P.mean(1, keepdims=True)
    _, _, vt = np.linalg.svd(P - P.mean(0), full_matrices=False)
    component = (P - P.mean(0)) @ vt[:1].T
    both = np.c_[P, M]
    h = H - H.mean(0)
    h *= np.sqrt(0.1 * float((P**2).sum(1).mean() / P.shape[1]) / float((h**2).sum(1).mean()))  # a tenth of the heads' kernel
    ops = O - O.mean(0)
    ops *= np.sqrt(0.03 * float((P**2).sum(1).mean() / P.shape[1]) / float((ops**2).sum(1).mean()))  # 3 % of it (0.1, 0.3: worse)
    o1 = ops * np.sqrt(1 / 0.03)  # the heads' kernel's size
    half, white = whitened(P, 0.5), whitened(P, 1.0)
    return {
        "one penalty (first default)": lambda c, y: kernel_ridge(P, c, y, free(P)),
        "penalties averaged (before)": lambda c, y: kernel_ridge(P, c, y, free(P), average=True),
        "centred": lambda c, y: kernel_ridge(centred, c, y, free(P)),
        "+ first principal component free": lambda c, y: kernel_ridge(P, c, y, np.c_[free(P), component]),
        "measured instead of heads": lambda c, y: kernel_ridge(M, c, y, free(M)),
        "measured and heads": lambda c, y: kernel_ridge(both, c, y, free(both)),
        "+ kernel on the embedding": lambda c, y: kernel_ridge(P, c, y, free(P), h),
        "+ kernel on the op encoding, averaged": lambda c, y: kernel_ridge(P, c, y, free(P), ops, average=True),
        "prior: mean or one source, averaged (heads only)": lambda c, y: priors_averaged(P, c, y),
        "prior: mean, or mean and one source, averaged": lambda c, y: priors_averaged(P, c, y, with_mean=True),
        "prior: as now, likelihood tempered x0.5": lambda c, y: priors_averaged(P, c, y, temper=0.5),
        "prior: as now, likelihood tempered x2": lambda c, y: priors_averaged(P, c, y, temper=2.0),
        "prior: as now, the mean half the prior mass": lambda c, y: priors_averaged(P, c, y, mean_mass=0.5),
        "prior: mean or one source + op-encoding kernel 0/3/10/30/100 %, averaged": lambda c, y: extra_kernel_averaged(P, o1, c, y, (0, 0.03, 0.1, 0.3, 1.0)),
        "prior: mean or one source + op-encoding kernel 0/1/3/10 %, averaged": lambda c, y: extra_kernel_averaged(P, o1, c, y, (0, 0.01, 0.03, 0.1)),
        "half-whitened kernel, averaged": lambda c, y: kernel_ridge(half, c, y, free(P), average=True),
        "whitened kernel, averaged": lambda c, y: kernel_ridge(white, c, y, free(P), average=True),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", nargs="+", default=["data/help", "data/latbench"])
    parser.add_argument("--shots", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--design", default="auto", choices=transfer.SHOT_DESIGNS, help="how the shots are chosen")
    parser.add_argument("--variants", nargs="+", help="run only the variants whose names contain one of these")
    args = parser.parse_args()
    matrix = reader.read_devices(args.stores, "nb201", reader.ReadPolicy(configuration=reader.NEWEST))
    scores: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    within: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    for split, targets in VALIDATION.items():
        sources, split_targets = splits(matrix.devices)[split][0]
        assert not set(targets) & (set(sources) | set(split_targets)), "validation devices must be outside the split"
        rows = [matrix.devices.index(d) for d in sources]
        pretrained, _ = transfer.cached(transfer.default_cache(), "nb201", matrix.archs, matrix.latency_ms[rows], sources)
        weight, bias = pretrained.heads()
        measured, _, _ = transfer.standardise(matrix.latency_ms[rows])
        for target in targets:
            y = matrix.row(target)
            keep = np.isfinite(y)
            H = pretrained.embed([a for a, k in zip(matrix.archs, keep) if k])
            P = H @ weight.T + bias
            M = np.where(np.isfinite(measured[:, keep].T), measured[:, keep].T, P)
            O = features.matrix([a for a, k in zip(matrix.archs, keep) if k], "onehot", "nb201").astype(float)
            candidates = {name: f for name, f in variants(P, M, H, O).items()
                          if not args.variants or any(part in name for part in args.variants)}
            C = transfer.cost_features([a for a, k in zip(matrix.archs, keep) if k], "nb201")
            costs = pretrained.cost_models()
            candidates["leti's adapt (the default: the trunk's head blended with the cost model)"] = (
                lambda c, y, H=H, C=C: np.log(transfer.adapt(H[c], np.exp(y), weight, bias, counts=C[c], sources=costs).predict_ms(H, C)))
            candidates["leti's adapt, the trunk's head alone (before the cost model)"] = (
                lambda c, y, H=H: H @ np.asarray((head := transfer.adapt(H[c], np.exp(y), weight, bias)).weight) + head.bias)
            for scales in ((0.0,), (0.0, 0.01, 0.03, 0.1, 0.3, 1.0), (0.0, 0.1, 0.3, 1.0, 3.0)):  # (0.0,): equals "heads only"
                name = f"leti's adapt, embedding scales {'/'.join(map(str, scales))}"
                if not args.variants or any(part in name for part in args.variants):
                    candidates[name] = (lambda c, y, H=H, scales=scales:
                                        H @ np.asarray((head := transfer.adapt(H[c], np.exp(y), weight, bias, scales=scales)).weight) + head.bias)
            for k in args.shots:
                for seed in args.seeds:
                    chosen = transfer.design_shots(H, k, seed, args.design)
                    rest = np.setdiff1d(np.arange(len(H)), chosen)
                    for name, predict in candidates.items():
                        estimate = predict(chosen, np.log(y[keep][chosen]))
                        scores[(name, split, k)].append(spearmanr(estimate[rest], y[keep][rest]).statistic)
                        within[(name, split, k)].append(100 * np.mean(np.abs(np.exp(estimate[rest]) / y[keep][rest] - 1) <= 0.1))
            print(f"{split}: {target} done", flush=True)
    names = list(dict.fromkeys(name for name, _, _ in scores))
    for title, values, digits in (("Spearman", scores, 4), ("acc@10 %", within, 1)):
        print(f"\n{title}:\n")
        print("| adaptation | " + " | ".join(f"{split} k={'/'.join(map(str, args.shots))}" for split in VALIDATION) + " |")
        print("|---|" + "---|" * len(VALIDATION))
        for name in names:
            cells = [" / ".join(f"{np.mean(values[(name, split, k)]):.{digits}f}" for k in args.shots) for split in VALIDATION]
            print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
