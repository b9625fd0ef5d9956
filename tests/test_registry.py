"""Choosing the champion: the rule, and when a candidate replaces the registered model."""

import math

import pytest

from leti.tracking.registry import Candidate, Champion, Rule, best, decide

TARGET = {"space": "nb201", "device": "torch-cpu", "config_id": "abc", "statistic": "min_ms"}


def candidate(name: str, score: float, **target: str) -> Candidate:
    return Candidate(run_id=name, model_uri=f"models:/m-{name}", name=name, score=score, target=TARGET | target)


def champion(score: float, **target: str) -> Champion:
    return Champion(version="3", run_id="old", score=score, target=TARGET | target)


def test_best_follows_the_rule_and_keeps_the_first_on_a_tie() -> None:
    runs = [candidate("linear", 90.0), candidate("xgboost", 95.0), candidate("gcn", 95.0), candidate("flops", math.nan)]
    assert best(runs, Rule()).name == "xgboost"
    assert best(runs, Rule(metric="val_mape", greater_is_better=False)).name == "linear"
    with pytest.raises(ValueError):
        best([], Rule())


def test_first_model_is_registered() -> None:
    register, reason = decide(candidate("xgboost", 95.0), None, Rule())
    assert register and reason.startswith("first model")


def test_a_run_that_is_not_better_keeps_the_champion() -> None:
    register, reason = decide(candidate("xgboost", 95.0), champion(95.0), Rule())
    assert not register and "does not beat champion v3" in reason
    assert not decide(candidate("xgboost", 94.0), champion(95.0), Rule())[0]
    assert decide(candidate("xgboost", 96.0), champion(95.0), Rule())[0]


def test_lower_is_better_rules() -> None:
    rule = Rule(metric="val_mape", greater_is_better=False)
    assert decide(candidate("linear", 2.0), champion(3.0), rule)[0]
    assert not decide(candidate("linear", 3.0), champion(2.0), rule)[0]


def test_a_champion_of_another_protocol_or_statistic_is_replaced() -> None:
    register, reason = decide(candidate("linear", 50.0, config_id="new"), champion(99.0), Rule())
    assert register and "config_id abc -> new" in reason
    assert decide(candidate("linear", 50.0, statistic="median_ms"), champion(99.0), Rule())[0]


def test_a_champion_without_the_metric_is_replaced() -> None:
    assert decide(candidate("linear", 50.0), champion(math.nan), Rule())[0]


def test_rule_from_params_rejects_unknown_keys() -> None:
    assert Rule.from_params(None) == Rule("val_acc_10pct", True)
    assert Rule.from_params({"metric": "val_mape", "greater_is_better": False}).describe() == "lowest val_mape"
    with pytest.raises(ValueError, match="unknown keys"):
        Rule.from_params({"metrc": "val_mape"})


def test_the_kernel_metrics_name_the_standing_champion_when_a_run_does_not_replace_it() -> None:
    from types import SimpleNamespace

    from leti.tracking.kernels import champion_family
    from leti.tracking.registry import Decision

    class Client:
        def get_run(self, run_id: str) -> SimpleNamespace:
            return SimpleNamespace(data=SimpleNamespace(params={"family": {"old": "xgboost"}.get(run_id, "?")}))

    candidate = Candidate("new", "runs:/new/model", "linear", 9.0, {})
    assert champion_family(Client(), Decision(False, "does not beat", candidate, Champion("2", "old", 8.0, {}), "2")) == "xgboost"
    assert champion_family(Client(), Decision(True, "beats", candidate, Champion("2", "old", 10.0, {}), "3")) == "linear"
    assert champion_family(Client(), Decision(False, "no candidate scored", candidate, None, None)) is None
