"""The run lifecycle every training script shares (T01, T02, T03): one `with TrainingRun(...)` block.

A lesson's main() builds the data, the loaders, the model, the loss, the optimizer and the
scheduler itself, in that order, so the reader sees every PyTorch step. Then:

    with TrainingRun(__file__, args, model, optimizer, scheduler, loader_generator,
                     must_match=("batch_size", "lr")) as run:
        for epoch in run.epochs():
            train_metrics = train(...)
            test_metrics = test(...)
            scheduler.step()
            run.end_epoch(train_metrics, test_metrics)
        run.save_curves("SimpleNN on MNIST")

What the block does for the reader, the same way in every lesson:

- **Run folder.** A new `runs/<script>-<date>-<time>/` (or `--out-dir`). A folder that already
  holds a run's results is never reused: the run stops with one line naming it. `--resume`
  continues in the checkpoint's own folder. A lock file stops two runs writing one folder.
- **Everything printed also goes to `train.log`** in the run folder, time-stamped.
- **A checkpoint after every finished epoch** (`checkpoint.pt`: weights, optimizer, scheduler,
  epoch, metrics and random-number states), written atomically, with `metrics.json` and
  `metrics.csv` beside it. Ctrl-C during that save waits until both are written, so the
  checkpoint and the metrics always describe the same epoch.
- **Resume** (`--resume PATH`): the flags that define the run (`must_match`) must equal the
  checkpoint's, or the run stops with one line naming each difference; `--epochs` may grow.
  The random-number states are restored too, so a resumed run gives the same numbers, bit for
  bit, as one that was never stopped.
- **Ctrl-C** keeps the last finished epoch's checkpoint as it is (the interrupted epoch is
  simply trained again on resume) and prints the command that continues the run.
- **Divergence**: a loss or a weight that is NaN or infinite stops the run with one line naming
  the epoch and the learning rate. Such weights are never saved.
- **Several processes** (T05, `torchrun`): pass `is_main_process=(rank == 0)`. Rank 0 does all
  of the above; every other process prints nothing and writes nothing, but still resumes from
  the checkpoint (weights, optimizer, scheduler, random numbers), counts the epochs and stops on
  divergence exactly as rank 0 does, so all processes run the same loop.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from common import plots
from common.checkpoint import atomic_save, load_checkpoint, read_checkpoint, save_checkpoint
from common.cli import REPO_ROOT, UserError
from common.device import describe
from common.logger import tee_output

# Files that mark a folder as holding a run's results: such a folder is never reused by a new run.
RUN_FILES = ("checkpoint.pt", "metrics.json", "metrics.csv", "train.log")
LOCK_FILE = "run.lock"


class Diverged(UserError):
    """The loss or the weights stopped being finite numbers (NaN or infinity)."""


class TrainingRun:
    """Run folder, train.log, resume, per-epoch checkpoints, Ctrl-C and divergence for one training run.

    `args` is the script's parsed flags; the run reads `epochs`, `resume`, `out_dir`, `dry_run` and
    the names in `must_match` from it. `name` prefixes the run folder (default: the script's name).
    `is_main_process=False` (ranks other than 0 of a distributed run): quiet, writes nothing.
    `launcher` starts the printed resume command instead of `python` (e.g. torchrun and its flags).
    Used by T01, T02, T03 and T05.
    """

    def __init__(self, script: str, args: argparse.Namespace, model: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: Any = None, generator: torch.Generator | None = None, *,
                 must_match: Sequence[str] = (), name: str | None = None, is_main_process: bool = True,
                 launcher: Sequence[str] = ("python",)) -> None:
        self.script = Path(script)
        self.args = args
        self.model, self.optimizer, self.scheduler, self.generator = model, optimizer, scheduler, generator
        self.must_match = tuple(must_match)
        self.name = name or self.script.stem
        self.history: list[dict] = []
        self.start_epoch = 1
        self.epoch = 0  # the epoch in progress
        self.out_dir: Path = Path()
        self.checkpoint_path: Path = Path()
        self._created_folder = False
        self._lock = None
        self._log: contextlib.ExitStack | None = None
        self._epoch_started = 0.0
        self._epoch_lr = 0.0
        self._epoch_ended = True
        self.is_main_process = is_main_process
        self.launcher = list(launcher)
        self._quiet: contextlib.ExitStack | None = None

    # --- start ------------------------------------------------------------------------------------

    def __enter__(self) -> TrainingRun:
        if not self.is_main_process:
            return self._enter_quietly()
        plots.use_backend(getattr(self.args, "show", False))  # figures to files; a window only with --show
        resume = getattr(self.args, "resume", None)
        state = self._check_resume(Path(resume)) if resume is not None else None  # before writing anything
        self._open_folder(Path(resume).parent if resume is not None else getattr(self.args, "out_dir", None))
        try:
            self._log = contextlib.ExitStack()
            self._log.enter_context(tee_output(self.out_dir / "train.log"))
            print(describe(_device_of(self.model)))
            self._remove_leftover_temporary_files()
            if state is not None:
                load_checkpoint(resume, self.model, self.optimizer, self.scheduler, self.generator)
                self.history = list(state["metrics"])
                self.start_epoch = state["epoch"] + 1
                plots.write_metrics(self.history, self.out_dir)  # in step with the checkpoint again
                print(f"Resuming from {resume} after epoch {state['epoch']}")
        except BaseException:
            self._close(keep=state is not None)
            raise
        return self

    def _enter_quietly(self) -> TrainingRun:
        """Another process of a distributed run: no folder, no log, no output; resume as rank 0 does."""
        self._quiet = contextlib.ExitStack()
        try:
            # Every print of this process (the lesson's too) goes nowhere: rank 0 speaks for all.
            self._quiet.enter_context(contextlib.redirect_stdout(self._quiet.enter_context(open(os.devnull, "w"))))
            resume = getattr(self.args, "resume", None)
            out_dir = Path(resume).parent if resume is not None else getattr(self.args, "out_dir", None)
            self.out_dir = Path(out_dir) if out_dir is not None else Path()
            self.checkpoint_path = self.out_dir / "checkpoint.pt"
            if resume is not None:  # every process reads the checkpoint: its optimizer state is needed everywhere
                state = self._check_resume(Path(resume))
                load_checkpoint(resume, self.model, self.optimizer, self.scheduler, self.generator)
                self.history = list(state["metrics"])
                self.start_epoch = state["epoch"] + 1
        except BaseException:
            self._quiet.close()
            self._quiet = None
            raise
        return self

    def _check_resume(self, path: Path) -> dict:
        """Read the checkpoint and refuse it unless this run's flags continue it exactly."""
        if not path.is_file():
            raise UserError(f"--resume: checkpoint {path} does not exist")
        state = read_checkpoint(path, type(self.model).__name__)
        out_dir = getattr(self.args, "out_dir", None)
        if out_dir is not None and Path(out_dir).resolve() != path.parent.resolve():
            raise UserError(f"--resume continues in the checkpoint's own folder {path.parent}; "
                            f"leave out --out-dir {out_dir}")
        saved = state.get("args") if isinstance(state.get("args"), dict) else {}
        differences = [f"--{name.replace('_', '-')} {saved[name]} (this run: {plain(getattr(self.args, name))})"
                       for name in self.must_match
                       if name in saved and saved[name] != plain(getattr(self.args, name))]
        if differences:
            raise UserError(f"{path} was trained with other settings: {', '.join(differences)}. "
                            "Pass the checkpoint's values to resume it, or start a new run without --resume")
        done = int(state.get("epoch", 0))
        if done >= self.args.epochs:
            raise UserError(f"{path} has already trained {done} epoch(s); "
                            f"pass --epochs larger than {done} to train further")
        return state

    def _open_folder(self, out_dir: Path | str | None) -> None:
        """Create (or, for --resume, reopen) the run folder and take its lock."""
        if out_dir is None:  # a new folder named after the script and the time
            stamp = time.strftime("%Y%m%d-%H%M%S")
            for suffix in range(1, 1000):
                candidate = REPO_ROOT / "runs" / (f"{self.name}-{stamp}" + (f"-{suffix}" if suffix > 1 else ""))
                try:
                    candidate.mkdir(parents=True)  # fails if it exists: two runs never share one
                    break
                except FileExistsError:
                    continue
                except OSError as err:
                    raise UserError(f"cannot create the run folder {candidate}: {err.strerror or err}") from None
            self.out_dir, self._created_folder = candidate, True
        else:
            self.out_dir = Path(out_dir)
            self._created_folder = not self.out_dir.exists()
            try:
                self.out_dir.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise UserError(f"cannot create the run folder {self.out_dir}: {err.strerror or err}") from None
        self.checkpoint_path = self.out_dir / "checkpoint.pt"
        self._lock = _lock_folder(self.out_dir)
        resume = getattr(self.args, "resume", None)
        if resume is None:  # checked while holding the lock, so two runs cannot both pass
            found = [f for f in RUN_FILES if (self.out_dir / f).exists()]
            if found:
                _unlock_folder(self._lock, self.out_dir)
                self._lock = None
                if "checkpoint.pt" in found:
                    hint = f"continue that run with --resume {self.out_dir / 'checkpoint.pt'}"
                else:  # e.g. a run killed before its first epoch ended: nothing to resume
                    hint = "delete the folder if you no longer need it (it has no checkpoint.pt to resume)"
                raise UserError(f"{self.out_dir} already holds another run ({', '.join(found)}): choose a new "
                                f"--out-dir, or {hint}")

    def _remove_leftover_temporary_files(self) -> None:
        """A process killed while saving leaves `<file>.<random>.tmp` behind; nobody else writes here now."""
        leftovers = [p for p in self.out_dir.glob("*.*.tmp") if p.is_file()]
        for path in leftovers:
            path.unlink(missing_ok=True)
        if leftovers:
            print(f"Removed {len(leftovers)} temporary file(s) left by an interrupted save")

    # --- the epochs -------------------------------------------------------------------------------

    def epochs(self) -> Iterator[int]:
        """The epoch numbers still to train: 1..--epochs, or after the checkpoint's epoch when resuming."""
        for epoch in range(self.start_epoch, self.args.epochs + 1):
            self.epoch, self._epoch_ended = epoch, False
            self._epoch_lr = self.optimizer.param_groups[0]["lr"]  # the rate this epoch trains with
            self._epoch_started = time.perf_counter()
            yield epoch
            if not self._epoch_ended:
                raise RuntimeError("call run.end_epoch(train_metrics, test_metrics) once in every epoch")
            if getattr(self.args, "dry_run", False):
                break

    def end_epoch(self, train_metrics: dict, test_metrics: dict, **more: Any) -> dict:
        """Record the epoch: check for divergence, print its time, save checkpoint and metrics; return its row."""
        seconds = time.perf_counter() - self._epoch_started
        row = {"epoch": self.epoch, "lr": self._epoch_lr, **train_metrics, **test_metrics, **more,
               "seconds": round(seconds, 3)}
        train_seconds = row.pop("train_seconds", None)
        if train_seconds and "train_images" in row:
            row["train_images_per_second"] = round(row["train_images"] / train_seconds, 1)
        row = {key: plain(value) for key, value in row.items()}
        self._check_finite(row)
        self._epoch_ended = True
        self.history.append(row)
        if not self.is_main_process:  # rank 0 prints and saves; this process only keeps count
            return row
        speed = f" (training: {row['train_images_per_second']:,.0f} images/s)" if "train_images_per_second" in row \
            else ""
        print(f"Epoch {self.epoch} took {seconds:.1f} s{speed}")
        if getattr(self.args, "dry_run", False):
            plots.write_metrics(self.history, self.out_dir)  # one batch is no epoch: no checkpoint
            return row
        with _ctrl_c_waits():  # the checkpoint and the metrics files are one unit
            save_checkpoint(self.checkpoint_path, self.model, self.optimizer, self.scheduler, self.epoch,
                            self.history, vars(self.args), self.generator, extra={"loss": row.get("train_loss")})
            plots.write_metrics(self.history, self.out_dir)
        return row

    def _check_finite(self, row: dict) -> None:
        """Stop with one line if a metric or a weight has become NaN or infinite."""
        bad = [key for key, value in row.items() if isinstance(value, float) and not math.isfinite(value)]
        bad += [name for name, tensor in [*self.model.named_parameters(), *self.model.named_buffers()]
                if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
        if not bad:
            return
        where = f"{bad[0]} = {row[bad[0]]}" if bad[0] in row else f"the weights ({bad[0]}, ...)"
        kept = (f"; {self.checkpoint_path} still holds epoch {self.history[-1]['epoch']}" if self.history
                else "")
        raise Diverged(f"training diverged in epoch {self.epoch}: {where} is no longer a finite number at "
                       f"learning rate {self._epoch_lr:g}. Nothing of this epoch was saved{kept}. "
                       "Start again with a smaller --lr (try 10 times smaller)")

    # --- outputs ------------------------------------------------------------------------------------

    def save_curves(self, title: str) -> Path:
        """Save curves.png: training and test loss, and test accuracy, against the epoch."""
        if not self.is_main_process:
            return self.out_dir / "curves.png"
        return plots.plot_curves(self.history, self.out_dir / "curves.png", title=title,
                                 show=getattr(self.args, "show", False))

    def save_weights(self, filename: str) -> Path:
        """Save the model's weights alone (its state dict) in the run folder: what you load to use the model."""
        self._check_finite({})
        if not self.is_main_process:
            return self.out_dir / filename
        return atomic_save(self.model.state_dict(), self.out_dir / filename)

    def resume_command(self) -> str:
        """The command line that continues this run from its checkpoint, ready to paste."""
        given = list(getattr(self.args, "command_line", None) or [])
        kept, skip = [], False
        for word in given:  # this run's own flags, without --out-dir and --resume (and their values)
            if skip:
                skip = False
                continue
            if word in ("--out-dir", "--resume"):
                skip = True
                continue
            if word.startswith(("--out-dir=", "--resume=")):
                continue
            kept.append(word)
        try:
            script = os.path.relpath(self.script)
        except ValueError:  # Windows: another drive
            script = str(self.script)
        words = [*self.launcher, script, *kept, "--resume", str(self.checkpoint_path)]
        return subprocess.list2cmdline(words) if os.name == "nt" else shlex.join(words)

    # --- the end ------------------------------------------------------------------------------------

    def __exit__(self, kind, error, trace) -> bool:
        if not self.is_main_process:
            if self._quiet is not None:
                self._quiet.close()
                self._quiet = None
            return False
        saved = self.checkpoint_path.is_file()
        if kind is None:
            files = sorted(p.name + ("/" if p.is_dir() else "") for p in self.out_dir.iterdir()
                           if p.name != LOCK_FILE)
            print(f"Run folder: {self.out_dir} ({', '.join(files)})")
        elif issubclass(kind, KeyboardInterrupt):
            if saved:
                print(f"\nInterrupted during epoch {self.epoch}. {self.checkpoint_path} holds epoch "
                      f"{self.history[-1]['epoch']}, the last finished one; continue with:\n  "
                      f"{self.resume_command()}")
            else:
                print(f"\nInterrupted during epoch {self.epoch}, before any epoch finished: nothing to keep.")
        # A new run that never finished an epoch leaves nothing behind: no log, no folder it made.
        keep = kind is None or saved or self.start_epoch > 1
        self._close(keep, error if kind is not None and issubclass(kind, UserError) else None)
        return False  # the exception, if any, goes on to cli.run_main: one line, exit 2 (130 for Ctrl-C)

    def _close(self, keep: bool, error: BaseException | None = None) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
        if keep and error is not None:  # cli.run_main prints it on the console; the log keeps it too
            with contextlib.suppress(OSError), open(self.out_dir / "train.log", "a", encoding="utf-8") as f:
                f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} error: {error}\n")
        if self._lock is not None:
            _unlock_folder(self._lock, self.out_dir)
            self._lock = None
        if not keep:  # the folder held no run when we started, so these files are this run's own
            for path in self.out_dir.iterdir():
                if path.name in RUN_FILES or path.suffix == ".tmp":
                    path.unlink(missing_ok=True)
            if self._created_folder:
                with contextlib.suppress(OSError):
                    self.out_dir.rmdir()  # only if nothing else is in it


# --- small helpers ---------------------------------------------------------------------------------

def plain(value: Any) -> Any:
    """A metric or flag as a plain Python value: a 0-d tensor as a number, a Path as a string."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def _device_of(model: nn.Module) -> torch.device:
    return next(iter(model.parameters()), torch.empty(0)).device


@contextlib.contextmanager
def _ctrl_c_waits() -> Iterator[None]:
    """Inside the block Ctrl-C is held back and raised right after it, so the block is never cut in half."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    pressed = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pressed.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pressed:
        raise KeyboardInterrupt


def _lock_folder(folder: Path):
    """Take an exclusive lock on <folder>/run.lock; the OS frees it even if the process is killed."""
    path = folder / LOCK_FILE
    try:
        handle = open(path, "a+")
    except OSError as err:
        raise UserError(f"cannot write in the run folder {folder}: {err.strerror or err}") from None
    try:
        if os.name == "nt":
            import msvcrt

            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise UserError(f"another run is writing to {folder} right now; wait for it, "
                        "or give this run its own --out-dir") from None
    return handle


def _unlock_folder(handle, folder: Path) -> None:
    handle.close()  # closing the file releases the lock
    with contextlib.suppress(OSError):
        (folder / LOCK_FILE).unlink()
