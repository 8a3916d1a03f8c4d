"""The linters are part of the test command, so a clean tree stays clean."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_ruff_is_clean() -> None:
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=ROOT,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean() -> None:
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


FUNCTION_LINES = 60
CLASS_LINES = 250


def _sizes() -> list[tuple[str, str, int, int]]:
    """(file, name, lines, limit) of every function and class in connector/ over its limit."""
    import ast

    over = []
    for path in sorted((ROOT / "connector").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                assert node.end_lineno is not None
                lines = node.end_lineno - node.lineno + 1
                limit = CLASS_LINES if isinstance(node, ast.ClassDef) else FUNCTION_LINES
                if lines > limit:
                    over.append((str(path.relative_to(ROOT)), node.name, lines, limit))
    return over


def test_functions_and_classes_stay_small() -> None:
    """Small pieces with one job each: a function over 60 lines or a class over 250 is split."""
    assert _sizes() == []


def test_the_page_loop_stays_a_page_loop() -> None:
    lines = (ROOT / "connector" / "sync.py").read_text(encoding="utf-8").count("\n")
    assert lines < 250
