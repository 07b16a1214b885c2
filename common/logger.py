"""The console lines a lesson prints, copied into `train.log` in the run folder."""

from __future__ import annotations

import logging
import sys
from pathlib import Path


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever sys.stdout is at the time (so pytest's capture and redirection both work)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    def emit(self, record: logging.LogRecord) -> None:
        self.setStream(sys.stdout)
        super().emit(record)


def get_logger(name: str, log_file: Path | None = None) -> logging.Logger:
    """Return a logger that prints plain lines to stdout and, if `log_file` is given, appends them there."""
    logger = logging.getLogger(name)
    for handler in list(logger.handlers):  # calling main() twice must not print every line twice
        logger.removeHandler(handler)
        handler.close()
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.addHandler(_StdoutHandler())
    if log_file is not None:
        file_handler = logging.FileHandler(log_file, encoding="utf-8")
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        logger.addHandler(file_handler)
    return logger


def close_logger(logger: logging.Logger) -> None:
    """Close the logger's files (Windows will not delete an open log file)."""
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
