"""The import rule, read from the source (AST): each layer imports only from itself and the layers below.

    core  <-  models  <-  workers  <-  tasks  <-  api  <-  entry points (pigreward, ops, bench)

and besides: `api/` never imports `tasks.runtime` (the API builds its own engine and image loader);
`workers/` and `models/` never import Celery or read settings (they are handed plain values); no
product code imports `tests`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RANK = {"core": 0, "models": 1, "workers": 2, "tasks": 3, "api": 4, "pigreward": 5, "ops": 5, "bench": 5}
FORBIDDEN = {
    "api": ("tasks.runtime",),
    "workers": ("celery", "kombu", "core.settings"),
    "models": ("celery", "kombu", "core.settings"),
}


def imported_modules(source: str) -> Iterator[tuple[int, str]]:
    """(line, dotted module name) of every absolute import, at any depth (lazy imports too)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
            for alias in node.names:  # `from tasks import runtime` names the module tasks.runtime
                yield node.lineno, f"{node.module}.{alias.name}"


def violations(package: str, source: str) -> list[str]:
    """What in `source` (a module of `package`) breaks the rule, one line each."""
    found = []
    for line, module in imported_modules(source):
        top = module.split(".")[0]
        if top == "tests":
            found.append(f"line {line}: product code imports {module}")
        elif top in RANK and RANK[top] > RANK[package]:
            found.append(
                f"line {line}: {package} (layer {RANK[package]}) imports {module} (layer {RANK[top]})"
            )
        for banned in FORBIDDEN.get(package, ()):
            if module == banned or module.startswith(banned + "."):
                found.append(f"line {line}: {package} must not import {module}")
    return found


def product_files() -> list[Path]:
    return sorted(p for package in RANK for p in (REPO / package).rglob("*.py"))


def test_every_product_module_follows_the_import_rule() -> None:
    files = product_files()
    assert len(files) > 80  # the whole tree was read, not an empty glob
    broken = [
        f"{path.relative_to(REPO)} {problem}"
        for path in files
        for problem in violations(path.relative_to(REPO).parts[0], path.read_text(encoding="utf-8"))
    ]
    assert broken == [], "\n".join(broken)


@pytest.mark.parametrize(
    ("package", "source", "expected"),
    [
        (
            "models",
            "from workers.store import ImageStore",
            "models (layer 1) imports workers.store (layer 2)",
        ),
        ("workers", "def f():\n    import tasks\n", "workers (layer 2) imports tasks (layer 3)"),
        ("tasks", "from api.main import app", "tasks (layer 3) imports api.main (layer 4)"),
        ("core", "import models.db", "core (layer 0) imports models.db (layer 1)"),
        ("api", "from tasks.runtime import get_db", "api must not import tasks.runtime"),
        ("api", "from tasks import runtime", "api must not import tasks.runtime"),
        ("workers", "from core.settings import get_settings", "workers must not import core.settings"),
        ("models", "from celery import Celery", "models must not import celery"),
        ("bench", "from tests.support.tiny_vlm import build_tiny_vlm", "product code imports tests.support"),
    ],
)
def test_the_rule_catches_each_kind_of_violation(package: str, source: str, expected: str) -> None:
    assert any(expected in problem for problem in violations(package, source)), violations(package, source)


def test_imports_allowed_by_the_rule_pass() -> None:
    source = "from core.enums import Winner\nfrom models.db import session_scope\nimport numpy\n"
    assert violations("workers", source) == []
    assert (
        violations("api", "from tasks.submit import submit_judgments\nfrom workers.imaging import normalize")
        == []
    )
