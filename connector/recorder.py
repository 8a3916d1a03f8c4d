"""Whether this process records metrics: only one that serves them (the daemon, `start()`).

A one-shot command has nobody to scrape its metrics, and loading prometheus-client costs
tens of milliseconds at every start; so the passes and the client record through `live()`,
which is None until the daemon starts recording.
"""

from __future__ import annotations

from types import ModuleType

_metrics: ModuleType | None = None


def start() -> None:
    """Record from now on (the daemon calls this before its first pass)."""
    global _metrics
    from connector import metrics

    _metrics = metrics


def live() -> ModuleType | None:
    """`connector.metrics` once recording started, else None."""
    return _metrics


__all__ = ["live", "start"]
