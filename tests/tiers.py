"""How hard the property tests try: every example in a full run (the README's test command,
CI), a fifth of them in the quick loop (`pytest -m "not slow"`). `conftest.py` sets `quick`
before the test modules are imported."""

from __future__ import annotations

quick = False


def examples(full: int) -> int:
    """The examples a property test tries in this run, of `full` in a full run."""
    return max(25, full // 5) if quick else full
