"""Choosing a model in MLflow: the best run of a (space, device) becomes ``leti-<space>-<device>@champion``.

The rule (``train.select`` in params.yaml) names a validation metric and its direction. Among the
child runs of one ``train`` invocation the best one is the candidate. It is registered as a new
version and takes the ``champion`` alias (an MLflow alias; stages are deprecated) when:

- there is no champion yet;
- the champion predicts something else: another measurement configuration or statistic of the
  device (after a protocol change, the old champion predicts latencies nobody measures any more);
- or it scores strictly better than the champion did on its own validation cells.

Otherwise nothing is registered and the champion stays, so re-running an unchanged pipeline adds no
version. The reason is kept as tags on the version (``selection.*``) and on the parent run. A
person can move the alias by hand in the UI; the next run compares against whatever it points to.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

ALIAS = "champion"
TARGET_KEYS = ("space", "device", "config_id", "statistic")
"""Run tags that define what a model predicts; models that differ in one predict different things."""


@dataclass(frozen=True)
class Rule:
    metric: str = "val_acc_10pct"
    greater_is_better: bool = True

    @classmethod
    def from_params(cls, section: dict[str, Any] | None) -> Rule:
        section = dict(section or {})
        unknown = set(section) - {"metric", "greater_is_better"}
        if unknown:
            raise ValueError(f"train.select: unknown keys {sorted(unknown)} (known: metric, greater_is_better)")
        return cls(**section)

    def better(self, score: float, other: float) -> bool:
        """Whether ``score`` strictly beats ``other`` (a NaN never beats anything; anything beats NaN)."""
        if math.isnan(score):
            return False
        if math.isnan(other):
            return True
        return score > other if self.greater_is_better else score < other

    def describe(self) -> str:
        return f"{'highest' if self.greater_is_better else 'lowest'} {self.metric}"


@dataclass(frozen=True)
class Candidate:
    """A child run with a logged model, scored by the rule's metric."""

    run_id: str
    model_uri: str
    name: str  # family-seed, for messages
    score: float
    target: dict[str, str]


@dataclass(frozen=True)
class Champion:
    version: str
    run_id: str
    score: float
    target: dict[str, str]


@dataclass(frozen=True)
class Decision:
    register: bool
    reason: str
    candidate: Candidate
    previous: Champion | None
    version: str | None = None  # the champion's version after the decision


def best(candidates: list[Candidate], rule: Rule) -> Candidate:
    """The candidate the rule prefers; the first one wins a tie."""
    if not candidates:
        raise ValueError("no candidate runs to choose from")
    winner = candidates[0]
    for candidate in candidates[1:]:
        if rule.better(candidate.score, winner.score):
            winner = candidate
    return winner


def decide(candidate: Candidate, champion: Champion | None, rule: Rule) -> tuple[bool, str]:
    """Whether ``candidate`` should replace ``champion``, and why, in one sentence."""
    if champion is None:
        return True, f"first model: {candidate.name} has the {rule.describe()} ({candidate.score:.4g}) of its run"
    changed = [key for key in TARGET_KEYS if champion.target.get(key) != candidate.target.get(key)]
    if changed:
        what = ", ".join(f"{key} {champion.target.get(key)} -> {candidate.target.get(key)}" for key in changed)
        return True, f"champion v{champion.version} predicts another target ({what})"
    if rule.better(candidate.score, champion.score):
        return True, f"{candidate.name} {rule.metric} {candidate.score:.4g} beats champion v{champion.version}'s {champion.score:.4g}"
    return False, f"{candidate.name} {rule.metric} {candidate.score:.4g} does not beat champion v{champion.version}'s {champion.score:.4g}"


def current_champion(client: Any, name: str, rule: Rule) -> Champion | None:
    """The version ``@champion`` points to, with its run's score and target; ``None`` if there is none."""
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(name, ALIAS)
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST" or "not found" in str(error).lower():
            return None
        raise
    run = client.get_run(version.run_id) if version.run_id else None
    metrics = run.data.metrics if run else {}
    tags = run.data.tags if run else {}
    return Champion(
        version=str(version.version),
        run_id=version.run_id or "",
        score=float(metrics.get(rule.metric, math.nan)),
        target={key: tags.get(key, "") for key in TARGET_KEYS},
    )


def select(client: Any, name: str, candidates: list[Candidate], rule: Rule, version_tags: dict[str, str]) -> Decision:
    """Register the best candidate as ``name`` and point ``@champion`` at it if it should replace the champion."""
    import mlflow

    candidate = best(candidates, rule)
    champion = current_champion(client, name, rule)
    register, reason = decide(candidate, champion, rule)
    if not register:
        return Decision(False, reason, candidate, champion, champion.version if champion else None)
    try:
        client.get_registered_model(name)
    except Exception:  # noqa: BLE001 - missing: create it with what it is for
        client.create_registered_model(
            name,
            tags={key: candidate.target[key] for key in ("space", "device")},
            description=f"Latency predictor for {candidate.target['space']} cells on {candidate.target['device']}; "
            f"`{ALIAS}` is the model `leti predict` uses.",
        )
    tags = {
        **version_tags,
        "selection.rule": rule.describe(),
        "selection.metric": rule.metric,
        "selection.score": f"{candidate.score:.6g}",
        "selection.reason": reason,
        "selection.replaced": f"v{champion.version}" if champion else "none",
    }
    version = mlflow.register_model(candidate.model_uri, name, tags=tags)
    client.update_model_version(name, version.version, description=reason)
    client.set_registered_model_alias(name, ALIAS, version.version)
    return Decision(True, reason, candidate, champion, str(version.version))
