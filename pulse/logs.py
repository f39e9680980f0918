"""One log format for every Pulse process: time, level, logger, message."""

from __future__ import annotations

import logging

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str) -> None:
    """Log to stderr in `LOG_FORMAT` at `level` (a name such as INFO, case-insensitive)."""
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT)
