"""Logging: human lines or JSON lines, and a filter that masks every known secret.

Secrets are kept out of messages by construction; the filter is the second lock on the door:
any registered secret (the API key, the database password, the current token) that reaches
a log record anyway is replaced by `***` before the record is written.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from datetime import UTC, datetime
from typing import Any

_secrets: set[str] = set()
_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Mask this text in every log line from now on (values under 4 characters are ignored)."""
    if value and len(value) >= 4:
        with _lock:
            _secrets.add(value)


def mask(text: str) -> str:
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, "***")
    return text


def mask_all(node: Any) -> Any:
    """A copy of a JSON-like value (dicts, lists, strings, numbers) with every string masked,
    dict keys included."""
    if isinstance(node, str):
        return mask(node)
    if isinstance(node, dict):
        return {mask(str(key)): mask_all(value) for key, value in node.items()}
    if isinstance(node, list | tuple):
        return [mask_all(value) for value in node]
    return node


class MaskSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask(message)
        if record.exc_info:
            masked_exc = mask(logging.Formatter().formatException(record.exc_info))
            masked = f"{masked}\n{masked_exc}"
            record.exc_info = None
            record.exc_text = None
        record.msg, record.args = masked, None
        return True


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        stream = getattr(record, "stream", None)
        if stream:
            entry["stream"] = stream
        return json.dumps(entry, ensure_ascii=False)


class Human(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created).strftime("%Y-%m-%d %H:%M:%S")
        stream = getattr(record, "stream", None)
        where = f" [{stream}]" if stream else ""
        return f"{stamp} {record.levelname.lower():7}{where} {record.getMessage()}"


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is at the time, so a progress bar that redirects it
    can show log lines above itself instead of under it."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def setup(fmt: str = "text", level: str = "info") -> None:
    """Log to stderr in the chosen format; safe to call more than once."""
    root = logging.getLogger("connector")
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = _Stderr(sys.stderr)
    handler.setFormatter(JsonLines() if fmt == "json" else Human())
    handler.addFilter(MaskSecrets())
    root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False
    # httpx logs each request with its URL at INFO; contact ids are fine, but keep it quiet.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def for_stream(name: str) -> logging.LoggerAdapter[logging.Logger]:
    """A logger whose every line names the stream it is about."""
    return logging.LoggerAdapter(logging.getLogger("connector.sync"), {"stream": name})
