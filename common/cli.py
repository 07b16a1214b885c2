"""Command-line plumbing: argument checks, one-line errors, run folders."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

REPO_ROOT = Path(__file__).resolve().parents[1]


class UserError(Exception):
    """A problem the user can fix (bad flag, missing file); printed as one line, no traceback."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad flag prints a single error line instead of usage plus error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")

    def parse_args(self, args=None, namespace=None):  # noqa: ANN001 (argparse's own signature)
        """Parse as argparse does, and keep the words given as `command_line` (for the resume hint)."""
        parsed = super().parse_args(args, namespace)
        parsed.command_line = list(sys.argv[1:] if args is None else args)
        return parsed


# Limits past which PyTorch itself fails with a confusing error far from the flag that caused it.
INT32_MAX = 2**31 - 1  # DataLoader and friends keep sizes and counts in C ints
SEED_MAX = 2**64 - 1  # torch.manual_seed takes an unsigned 64-bit number
FLOAT32_MAX = 3.4028234663852886e38  # the largest float32: a bigger learning rate becomes inf in the model


def _whole_number(text: str) -> int:
    """`text` as an int, or the argparse error every integer flag gives."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def positive_int(text: str) -> int:
    """argparse type: an integer greater than zero (and small enough for a C int)."""
    value = _whole_number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {value}")
    if value > INT32_MAX:
        raise argparse.ArgumentTypeError(f"must be at most {INT32_MAX}, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer that is zero or more (and small enough for a C int)."""
    value = _whole_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    if value > INT32_MAX:
        raise argparse.ArgumentTypeError(f"must be at most {INT32_MAX}, got {value}")
    return value


def seed(text: str) -> int:
    """argparse type: a random seed, a whole number from 0 to 2**64 - 1 (what torch.manual_seed takes)."""
    value = _whole_number(text)
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"must be from 0 to {SEED_MAX} (2**64 - 1), got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a number greater than zero that a float32 can hold (so not inf, nor above 3.4e38)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value > FLOAT32_MAX:  # `not value > 0` also catches nan
        raise argparse.ArgumentTypeError(
            f"must be a finite number greater than 0 and at most about 3.4e38 (the largest float32), got {text}")
    return value


def momentum(text: str) -> float:
    """argparse type: an SGD momentum, from 0 (none) up to but not including 1 (which never forgets)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value < 1:  # momentum 1 or more makes SGD's steps grow without bound
        raise argparse.ArgumentTypeError(f"must be at least 0 and less than 1, got {text}")
    return value


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags every training script shares: seed, data and output folders, plots, data pipeline."""
    group = parser.add_argument_group("run")
    group.add_argument("--seed", type=seed, default=1, help="random seed (default: 1)")
    group.add_argument("--deterministic", action="store_true",
                       help="use deterministic algorithms only (slower on GPU, same numbers every run)")
    group.add_argument("--data-dir", type=Path, default=None,
                       help="dataset folder (default: $PYTORCH_TUTORIAL_DATA_DIR or <repo>/data)")
    group.add_argument("--out-dir", type=Path, default=None,
                       help="folder for logs, metrics, plots and checkpoints (default: a new folder under <repo>/runs)")
    group.add_argument("--classic-pipeline", action="store_true",
                       help="decode every image with PIL each epoch, as torchvision does by default "
                            "(slower; the default converts the dataset to tensors once and keeps it in memory)")
    group.add_argument("--num-workers", type=non_negative_int, default=0,
                       help="DataLoader worker processes (default: 0, load in the main process)")
    group.add_argument("--show", action="store_true", help="also open the figures in a window, if there is a display")


def make_run_dir(out_dir: Path | None, name: str) -> Path:
    """Create and return the run folder: `out_dir` if given, else a new `runs/<name>-<time>` folder."""
    if out_dir is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out_dir = REPO_ROOT / "runs" / f"{name}-{stamp}"
        suffix = 1
        while out_dir.exists():  # two runs started in the same second get separate folders
            suffix += 1
            out_dir = REPO_ROOT / "runs" / f"{name}-{stamp}-{suffix}"
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create output folder {out_dir}: {err.strerror or err}") from None
    return out_dir


def run_main(main: Callable[[], object]) -> None:
    """Run a script's `main()`: user errors become one line on stderr and exit code 2, Ctrl-C exits 130."""
    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("\nInterrupted.", file=sys.stderr)
        sys.exit(130)


def existing_file(text: str) -> Path:
    """argparse type: the path of a file that exists (checked before any data is loaded)."""
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"checkpoint {text} does not exist")
    return path
