"""Command lines: the flags every training script shares, checked values, one-line errors (T01-T05)."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

REPO_ROOT = Path(__file__).resolve().parents[1]
# Limits past which PyTorch itself fails with a confusing error far from the flag that caused it.
INT32_MAX = 2**31 - 1  # DataLoader and friends keep sizes and counts in C ints
SEED_MAX = 2**64 - 1  # torch.manual_seed takes an unsigned 64-bit number
FLOAT32_MAX = 3.4028234663852886e38  # the largest float32: a bigger learning rate becomes inf in the model


class UserError(Exception):  # a problem the user can fix (a bad flag, a missing file): one line, no traceback
    pass


def is_rank_zero() -> bool:
    """True in a plain `python` run, and in process 0 of a `torchrun` (which sets RANK): the one that speaks."""
    return os.environ.get("RANK", "0") == "0"


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad flag prints one error line (not usage + error), and only process 0 prints."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")

    def _print_message(self, message, file=None) -> None:  # noqa: ANN001 (argparse's own signature)
        if is_rank_zero():  # under torchrun every process parses the same flags: one --help is enough
            super()._print_message(message, file)

    def add_device_flags(self) -> None:
        """Add --device, --no-cuda, --no-mps and --no-accel (read by common.device.select_device)."""
        group = self.add_argument_group("device (common/cli.py)")
        group.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: the best one there is)")
        group.add_argument("--no-cuda", action="store_true", help="do not use CUDA even if it is available")
        group.add_argument("--no-mps", action="store_true", help="do not use Apple's MPS even if it is available")
        group.add_argument("--no-accel", action="store_true", help="use the CPU only (same as --no-cuda --no-mps)")

    def add_common_flags(self) -> None:
        """Add the flags every training script shares: the device's, seed, data and run folders, resume, figures."""
        self.add_device_flags()
        group = self.add_argument_group("common flags (common/cli.py)")
        group.add_argument("--seed", type=_seed, default=1, help="random seed (default: 1)")
        group.add_argument("--deterministic", action="store_true",
                           help="use deterministic algorithms only (slower on a GPU, the same numbers every run)")
        group.add_argument("--data-dir", type=Path, default=None,
                           help="dataset folder (default: $PYTORCH_TUTORIAL_DATA_DIR or <repo>/data)")
        group.add_argument("--out-dir", type=_folder, default=None,
                           help="a new folder for this run's files (default: a new folder under <repo>/runs)")
        group.add_argument("--resume", type=_existing_file, default=None, metavar="PATH",
                           help="continue the run whose checkpoint.pt this is, in its own folder; the flags "
                                "that define the run must be the same (--epochs may grow)")
        group.add_argument("--show", action="store_true", help="also open the figures in a window")


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def positive_int(text: str) -> int:
    """argparse type: a whole number from 1 to 2**31 - 1 (what PyTorch's C ints hold)."""
    value = _whole_number(text)
    if not 0 < value <= INT32_MAX:
        raise argparse.ArgumentTypeError(f"must be from 1 to {INT32_MAX}, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a number greater than 0 that a float32 holds (so not inf or nan, nor above 3.4e38)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value <= FLOAT32_MAX:  # also false for nan
        raise argparse.ArgumentTypeError(f"must be a number greater than 0 and at most about 3.4e38, got {text}")
    return value


def _folder(text: str) -> Path:  # Path("") is the current folder: the run's files would land wherever you are
    if not text.strip():
        raise argparse.ArgumentTypeError("must name a folder, got an empty string")
    return Path(text)


def _existing_file(text: str) -> Path:  # said at once, before any data is loaded
    if not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"checkpoint {text} does not exist")
    return Path(text)


def _seed(text: str) -> int:
    value = _whole_number(text)
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"must be from 0 to {SEED_MAX} (2**64 - 1), got {value}")
    return value


def run_main(main: Callable[[], object]) -> None:
    """Run main(): a UserError becomes one line on stderr and exit code 2, Ctrl-C or SIGTERM exit code 130, a
    closed stdout (`| head`) a quiet 141. Under torchrun every process exits alike; only process 0 says why."""
    def interrupt(signum: int, frame: object) -> None:
        for number in (signal.SIGINT, signal.SIGTERM):  # once: a second must not cut the tidying-up short
            signal.signal(number, signal.SIG_IGN)
        raise KeyboardInterrupt
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, interrupt)
    try:
        main()
    except UserError as err:
        if is_rank_zero():
            print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)
    except KeyboardInterrupt:
        if is_rank_zero():
            print("Interrupted.", file=sys.stderr, flush=True)
        sys.exit(130)
    except OSError as err:  # the console itself: `| head` closed it (BrokenPipeError), `> /dev/full` filled it
        with contextlib.suppress(OSError, ValueError):  # (a stdout with no file behind it: nothing to fail at exit)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # leaves nothing to fail at exit
        if not isinstance(err, BrokenPipeError):  # a reader who has seen enough needs no message
            print(f"error: {err.filename or 'the output'}: {err.strerror or err}", file=sys.stderr, flush=True)
        sys.exit(141 if isinstance(err, BrokenPipeError) else 2)  # 141: as a Unix tool that SIGPIPE stopped
