"""What a stage's code really is: the script and every leti module it can import, found from the source.

A DVC stage is re-run when one of its deps changes, so its code deps must cover every module its
script can reach; otherwise a change to, say, NAS-Bench-201's encoding in ``leti/spaces`` leaves
``featurize@nb201`` looking up to date. This walks the imports statically: every ``import`` and
``from ... import`` anywhere in a module (inside functions too: a late import still runs), the
packages above each module (importing ``leti.a.b`` runs ``leti/__init__.py`` and
``leti/a/__init__.py``), module names written as strings (``"leti.predictors.gcn:GCNPredictor"``
in a registry of lazily imported classes), and the package's lazy attributes (``leti.LAZY``:
``leti.load_predictor`` imports ``leti.api`` in whatever module asks for it).
"""

from __future__ import annotations

import ast
import re
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULE_STRING = re.compile(r"^(leti(?:\.\w+)+)(?::\w+)?$")


def lazy_attributes() -> dict[str, str]:
    """``leti.LAZY`` read from the source: package attribute -> the module it is loaded from."""
    tree = ast.parse((ROOT / "leti" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(target, "id", None) == "LAZY" for target in node.targets):
            return {name: f"leti.{module}" for name, module in ast.literal_eval(node.value).items()}
    return {}


LAZY = lazy_attributes()


def module_file(name: str) -> Path | None:
    """The file of a ``leti`` module or package, if it exists."""
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@lru_cache(maxsize=None)
def direct_imports(path: Path) -> frozenset[str]:
    """The leti modules ``path`` names: imports anywhere in it and module names in string constants."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)  # a submodule, when it is one
            if node.module == "leti":
                found.update(LAZY[alias.name] for alias in node.names if alias.name in LAZY)
        elif isinstance(node, ast.Attribute) and getattr(node.value, "id", None) == "leti" and node.attr in LAZY:
            found.add(LAZY[node.attr])
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            match = MODULE_STRING.match(node.value)
            if match:
                found.add(match.group(1))
    leti = set()
    for name in found:
        if name == "leti" or name.startswith("leti."):
            parts = name.split(".")
            leti.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))  # the packages above run first
    return frozenset(name for name in leti if module_file(name) is not None)


def reached(script: Path) -> set[Path]:
    """The script and every leti source file it can import, transitively."""
    seen: set[Path] = set()
    todo = [script.resolve()]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo.extend(module_file(name) for name in direct_imports(path))
    return seen


def covered(path: Path, deps: list[str]) -> bool:
    relative = path.relative_to(ROOT)
    return any(relative == Path(dep) or Path(dep) in relative.parents for dep in deps)


def missing(script: Path, deps: list[str]) -> list[str]:
    """Files the script reaches that no dep covers (paths relative to the repository)."""
    return sorted(str(path.relative_to(ROOT)) for path in reached(script) if not covered(path, deps))


def minimal_deps(script: Path) -> list[str]:
    """The fewest paths that cover what the script reaches: a package folder when every file in it is
    reached, the files themselves otherwise (what dvc.yaml should list)."""
    files = {path.relative_to(ROOT) for path in reached(script)}
    chosen: set[Path] = set()
    for path in sorted(files):
        folder = path.parent
        best = path
        while folder != Path(".") and all(f.relative_to(ROOT) in files for f in (ROOT / folder).rglob("*.py")):
            best, folder = folder, folder.parent
        chosen.add(best)
    return sorted(str(p) for p in chosen if not any(parent in chosen for parent in p.parents))


def stage_scripts(dvc_yaml: dict) -> dict[str, tuple[Path, list[str]]]:
    """Stage name -> (the script its command runs, its deps), for every stage of dvc.yaml."""
    found = {}
    for name, stage in dvc_yaml["stages"].items():
        body = stage.get("do", stage)
        match = re.search(r"python (\S+\.py)", body["cmd"])
        if match is None:
            raise ValueError(f"stage {name!r} does not run a script of stages/ or flows/: {body['cmd']}")
        found[name] = (ROOT / match.group(1), [str(dep) for dep in body.get("deps", [])])
    return found
