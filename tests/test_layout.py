"""The package's imports run one way: data -> trainers -> eval (with rewards beside data) -> onpolicy and dial, and
the toy world plugs in from the side. A module that imports upward would make the lower layer unusable
without the upper one (a trainer that needs the eval loop, an eval loop that needs the toy world)."""

import ast
from pathlib import Path

import pluralign

PKG = Path(pluralign.__file__).parent

# package -> the pluralign packages it may import (besides itself and the top-level helper modules)
ALLOWED = {
    "data": set(),
    "rewards": {"data"},
    "trainers": {"data"},
    "eval": {"data", "rewards", "trainers"},
    "onpolicy": {"data", "rewards", "trainers", "eval"},
    "dial": {"data", "rewards", "trainers", "eval"},
    "toy": {"data", "rewards", "trainers", "eval", "onpolicy", "dial"},
}
HELPERS = {"config", "tokenizers", "tiny", "env", "hub", "locks", "__init__"}


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported pluralign module path, line, at top level) for every import of a pluralign module."""
    tree = ast.parse(path.read_text())
    pkg_parts = path.relative_to(PKG.parent).with_suffix("").parts[:-1]
    top = {id(n) for n in tree.body}
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg_parts[:len(pkg_parts) - node.level + 1]
                names = [".".join(base + ((node.module,) if node.module else ()))]
            elif node.module:
                names = [node.module]
        for name in names:
            if name == "pluralign" or name.startswith("pluralign."):
                found.append((name, node.lineno, id(node) in top))
    return found


def test_imports_run_one_way():
    bad = []
    for package, allowed in ALLOWED.items():
        for path in sorted((PKG / package).glob("*.py")):
            for name, line, _ in _imports(path):
                parts = name.split(".")
                target = parts[1] if len(parts) > 1 else ""
                if target in (package, *allowed) or target in HELPERS or target == "":
                    continue
                bad.append(f"{path.relative_to(PKG.parent)}:{line} imports {name}")
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_own_modules_are_imported_at_the_top():
    """Lazy imports are for heavy third-party packages; pluralign's own modules are imported at the
    top, where a reader sees what a module depends on (and an import cycle shows at once)."""
    lazy = [f"{p.relative_to(PKG.parent)}:{line} imports {name}"
            for p in sorted(PKG.rglob("*.py")) if p.name != "cli.py"
            for name, line, at_top in _imports(p) if not at_top]
    assert not lazy, "pluralign modules imported inside functions:\n" + "\n".join(lazy)
