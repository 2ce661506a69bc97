"""The package's layers import one way only (docs/DESIGN.md, "Layers"): a module may import its
own layer and the ones below, never one above, at module level or inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "flexrl"
# top-level module or package -> layer, from the bottom up (as docs/DESIGN.md draws them)
LAYERS = {
    "config": 0, "errors": 0, "fileio": 0, "seeding": 0, "__init__": 0,
    "envs": 1, "store": 1, "workspace": 1, "language": 1,
    "rl": 2, "offline": 2, "zoo": 2,
    "rollout": 3,
    "orchestrate": 4, "analysis": 4,
    "evaluation": 5, "collection": 5,
    "cli": 6, "__main__": 7,
}  # fmt: skip


def imported_tops(path: Path) -> set[str]:
    tops = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            parts = node.module.split(".")
            if parts[0] == "flexrl":
                # `from flexrl import evaluation` names the module in the imported names
                tops |= {parts[1]} if len(parts) > 1 else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            tops |= {a.name.split(".")[1] for a in node.names if a.name.startswith("flexrl.")}
    return tops


def test_every_top_level_module_has_a_layer():
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    missing = (modules | packages) - set(LAYERS)
    assert not missing, f"give these a layer in LAYERS and in docs/DESIGN.md: {missing}"


def test_no_module_imports_a_layer_above_its_own():
    upward = []
    for path in PACKAGE.rglob("*.py"):
        top = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        for target in imported_tops(path):
            if target in LAYERS and LAYERS[target] > LAYERS[top]:
                upward.append(f"{path.relative_to(PACKAGE)} -> {target}")
    assert not upward, upward
