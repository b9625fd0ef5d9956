"""Every DVC stage depends on the code it runs: its script and every leti module the script can import."""

from __future__ import annotations

import pytest
import yaml
from stage_deps import ROOT, covered, missing, reached, stage_scripts

STAGES = stage_scripts(yaml.safe_load((ROOT / "dvc.yaml").read_text()))


def code_deps(deps: list[str]) -> list[str]:
    return [dep for dep in deps if dep.startswith(("leti/", "leti", "stages/", "flows/"))]


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_deps_cover_every_module_its_script_imports(name: str) -> None:
    script, deps = STAGES[name]
    assert script.parent.name in ("stages", "flows"), f"stage {name} runs {script}, not a script of stages/ or flows/"
    assert missing(script, deps) == [], f"dvc.yaml stage {name!r} misses these code deps"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_removing_any_code_dep_of_a_stage_is_caught(name: str) -> None:
    """Each code dep is needed: drop it and some module the script reaches is uncovered (so the check
    above fails). A dep that covers nothing the script imports is dead weight that reruns the stage."""
    script, deps = STAGES[name]
    for dep in code_deps(deps):
        rest = [other for other in deps if other != dep]
        assert missing(script, rest), f"stage {name!r}: removing {dep!r} from its deps goes unnoticed"


def test_the_walk_follows_late_imports_string_registries_and_parent_packages(tmp_path) -> None:
    """Known cases on the real tree: `train` reaches the GCN (a lazily imported family, named in a
    string registry), the package __init__ above every module, and NB201's operator decomposition
    (named in `leti.spaces.OPERATOR_DECOMPOSITIONS`)."""
    files = {str(path.relative_to(ROOT)) for path in reached(ROOT / "stages" / "train.py")}
    assert {"leti/predictors/gcn.py", "leti/store/__init__.py", "leti/spaces/nb201_ops.py", "leti/tracking/training.py"} <= files
    assert "leti/measure/campaign.py" not in files  # training does not measure
    assert covered(ROOT / "leti" / "spaces" / "nb201.py", ["leti/spaces"])
    assert not covered(ROOT / "leti" / "spaces" / "nb201.py", ["leti/spaces/nb101.py"])


def test_a_lazy_package_attribute_counts_where_it_is_used(tmp_path) -> None:
    """`leti.load_predictor` loads `leti.api` (MLflow) on first use: a module that uses it reaches
    `leti.api`; one that does not, such as every stage script, does not pay for it."""
    user = tmp_path / "nas_search.py"
    user.write_text("import leti\n\npredictor = leti.load_predictor('torch-cpu')\n")
    assert ROOT / "leti" / "api.py" in reached(user)
    assert ROOT / "leti" / "api.py" not in reached(ROOT / "stages" / "sample.py")
