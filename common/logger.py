"""The console lines a lesson prints, copied into `train.log` in the run folder."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator
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


class _Tee:
    """A stand-in for sys.stdout or sys.stderr that also copies every line, time-stamped, to a log file."""

    def __init__(self, console, log_file) -> None:
        self.console, self.log_file = console, log_file
        self.at_line_start = True

    def write(self, text: str) -> int:
        self.console.write(text)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S ")
        for piece in text.splitlines(keepends=True):
            if self.at_line_start and piece.strip():
                self.log_file.write(stamp)
            self.log_file.write(piece)
            self.at_line_start = piece.endswith("\n")
        self.log_file.flush()  # a run killed at any moment keeps its log up to that line
        return len(text)

    def flush(self) -> None:
        self.console.flush()

    def __getattr__(self, name: str):  # encoding, isatty(), fileno() ...: those of the console
        return getattr(self.console, name)


@contextlib.contextmanager
def tee_output(log_file: Path) -> Iterator[None]:
    """Inside the `with` block, everything printed (stdout and stderr) also goes to `log_file`.

    So a lesson's train() and test() can simply print(), and still fill the run's train.log.
    The file is appended to, so a resumed run continues its log.
    """
    with open(log_file, "a", encoding="utf-8") as f:
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(sys.stdout, f), _Tee(sys.stderr, f)
        try:
            yield
        finally:
            sys.stdout, sys.stderr = saved
