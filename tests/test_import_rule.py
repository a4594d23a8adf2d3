"""The import rule of docs/ARCHITECTURE.md, checked on the source: schemas <- transforms,
reports <- flows; only flows/ touches Prefect, databases, files and the environment."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = {"flows", "transforms", "schemas", "reports", "synthetic"}
IO_MODULES = {"prefect", "sqlalchemy", "psycopg", "psycopg2", "adbc_driver_postgresql", "os"}

# What each package may import of ours, and which outside modules it must not import.
ALLOWED: dict[str, set[str]] = {
    "schemas": set(),
    "transforms": {"schemas"},
    "reports": {"schemas"},
    "synthetic": {"schemas", "transforms"},
}
# schemas/ holds the SQLAlchemy tables, so it may import sqlalchemy (but never connect).
BANNED: dict[str, set[str]] = {
    "schemas": IO_MODULES - {"sqlalchemy"},
    "transforms": IO_MODULES,
    "reports": IO_MODULES,
    "synthetic": IO_MODULES,
}


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_follow_the_rule(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package}/ has no modules"
    for path in files:
        roots = imported_roots(path)
        ours = (roots & OURS) - {package}
        assert ours <= ALLOWED[package], f"{path.relative_to(ROOT)} imports {ours}"
        banned = roots & BANNED[package]
        assert not banned, f"{path.relative_to(ROOT)} imports {banned}"
        if package != "schemas":
            assert "open(" not in path.read_text(), f"{path.relative_to(ROOT)} opens a file"


def test_rule_checker_sees_violations(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import prefect.flows\nfrom flows.db import connect\nfrom schemas import x\n")
    assert imported_roots(bad) == {"prefect", "flows", "schemas"}


def _our_imports(path: Path) -> set[str]:
    """Modules of ours ``path`` imports (dotted names)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.split(".")[0] in OURS}
        elif (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.level == 0
            and node.module.split(".")[0] in OURS
        ):
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def test_verify_reaches_no_transform_code() -> None:
    """verify is the independent home of the rules: nothing it imports, directly or through
    other modules of ours, is transform code."""
    seen: set[Path] = set()
    todo = sorted((ROOT / "flows" / "verify").rglob("*.py"))
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _our_imports(path):
            assert not name.startswith("transforms"), f"{path.relative_to(ROOT)} reaches {name}"
            parts = name.split(".")
            for candidate in (
                ROOT.joinpath(*parts).with_suffix(".py"),
                ROOT.joinpath(*parts) / "__init__.py",
            ):
                if candidate.is_file():
                    todo.append(candidate)
    assert len(seen) > 5
