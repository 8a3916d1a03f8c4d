"""What every command that reads the config does first: load it and set up logging."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from connector import logs
from connector.errors import ConfigError

if TYPE_CHECKING:
    from connector.config import Settings


def settings(args: argparse.Namespace, quiet: bool = False) -> Settings:
    """Load the config and set up logging; one-shot commands log warnings and errors only,
    since their own output already tells what each pass did."""
    from connector import config

    loaded = config.load(args.config)
    level = "debug" if args.verbose else loaded.logging.level
    if quiet and level in {"debug", "info"} and not args.verbose:
        level = "warning"
    logs.setup(args.log_format or loaded.logging.format, level)
    return loaded


def known_stream(loaded: Settings, name: str | None) -> None:
    """A usage error, exit 2, when `name` is given and is not a configured stream."""
    if name is not None and name not in loaded.streams:
        raise ConfigError([(name, f"no such stream (known: {', '.join(loaded.streams)})")],
                          "streams")

