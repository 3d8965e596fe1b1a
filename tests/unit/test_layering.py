"""The packages' import direction, checked on the source: a cycle between two of them
comes back the moment one module imports the wrong way, long before anyone notices.

``forge`` is the library everything shares (config, stores, protocol types, routing);
``gateway`` is the HTTP front; ``actors`` and ``serve`` host them on Ray. ``serve``'s
deployments are the composition root, so they may import everything; nothing imports
them but the CLI that starts them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# package -> the first-party packages it must never import
FORBIDDEN = {
    "forge": {"gateway", "serve", "actors", "train"},
    "gateway": {"serve", "actors", "train"},
    "actors": {"gateway", "serve", "train"},
}
# The CLI starts the platform: it reaches into `serve` (lazily) to launch it.
EXEMPT = {"forge/cli.py", "forge/cli_up.py"}


def _imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def _violations(package: str) -> list[str]:
    out: list[str] = []
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel in EXEMPT:
            continue
        wrong = _imported_packages(path) & FORBIDDEN[package]
        out.extend(f"{rel} imports {name}" for name in sorted(wrong))
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_point_one_way(package: str) -> None:
    assert _violations(package) == []


def test_the_check_sees_a_wrong_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from serve.router import Router\n")
    assert "serve" in _imported_packages(module)
