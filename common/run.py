"""The bookkeeping around a lesson's epoch loop, one `with` block (T01, T02, T03, T05):

    with TrainingRun("mnist_nn", args, model, optimizer, scheduler, generator, must_match=["lr"]) as run:
        for epoch in run.epochs():
            train_metrics = train(model, device, train_loader, optimizer, epoch=epoch)
            test_metrics = test(model, device, test_loader)
            scheduler.step()
            run.end_epoch(train_metrics, test_metrics)
        run.save_curves("SimpleNN on MNIST")

- A new run folder, runs/<name>-<date>-<time>/ or --out-dir; one that holds a run is never reused.
- After every epoch, checkpoint.pt (weights, optimizer, scheduler, epoch, metrics, flags, every random
  state), written whole to checkpoint.pt.tmp and renamed; then metrics.json/.csv and a train.log line.
  The checkpoint is the one source of truth: whatever stops the run, the metrics are rewritten from it.
- --resume PATH: the same script, number of processes, --seed and `must_match` flags, or one line naming
  each difference; --epochs may grow. The resumed run equals an uninterrupted one, bit for bit.
- Ctrl-C keeps the last finished epoch and says which; a NaN or infinite loss or weight stops the run, unsaved.
- Several processes (T05): process 0 (`is_main`) alone prints and writes; each one's random states are kept.
Reads args.epochs, .resume, .out_dir, .seed, .dry_run and .show (cli's add_common_flags adds all but --epochs).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import math
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from common.cli import REPO_ROOT, UserError
from common.device import describe

RUN_FILES = ("checkpoint.pt", "metrics.json", "metrics.csv", "train.log")


class Diverged(UserError):
    """The loss or the weights stopped being finite numbers (NaN or infinity)."""


class TrainingRun:
    """Run folder, checkpoints, resume, Ctrl-C, divergence, metrics and figures for one training run."""

    def __init__(self, name: str, args: argparse.Namespace, model: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: Any = None, generator: torch.Generator | None = None, *,
                 must_match: Sequence[str] = (), is_main: bool = True) -> None:
        self.name, self.args, self.model, self.optimizer = name, args, model, optimizer
        self.scheduler, self.generator, self.is_main = scheduler, generator, is_main
        self.must_match = [*must_match, "seed"]  # the seed decides the data split and every shuffle
        self.history: list[dict] = []
        self.done, self.epoch = 0, 0  # epochs finished before this process started (a resumed run's); the one now
        self.resumed = args.resume is not None
        self.folder = Path(args.resume).parent if self.resumed else Path()
        self.checkpoint = self.folder / "checkpoint.pt"
        self._made_folder = False
        self._owned = False  # is the folder this run's to write (claimed, or a checkpoint that continues)?
        self._saved = False  # has this run written a checkpoint?
        self._started = self._lr = 0.0

    # --- start: a new folder, or the checkpoint's --------------------------------------------------

    def __enter__(self) -> TrainingRun:
        error = None
        try:
            state = self._check_resume() if self.resumed else None
            if self.is_main and not self.resumed:
                self._claim_new_folder()
            if state is not None:
                self._restore(state)
            self._owned = self.is_main
        except UserError as err:
            error = err
        try:
            _all_agree(error)  # with several processes, all stop if any one cannot start
            if self.is_main:
                self.log(describe(_device_of(self.model)))
                self.log(f"Flags: {_plain(vars(self.args))}", echo=False)
                if self.resumed:
                    write_metrics(self.history, self.folder)  # in step with the checkpoint again
                    self.log(f"Resuming from {self.checkpoint} after epoch {self.done}")
        except BaseException as exc:
            self.__exit__(type(exc), exc, None)  # a new folder that holds no run is removed again
            raise
        return self

    def _claim_new_folder(self) -> None:
        self.folder, self._made_folder = new_folder(self.args.out_dir, self.name)
        self.checkpoint = self.folder / "checkpoint.pt"
        found = [f for f in RUN_FILES if (self.folder / f).exists()]
        try:
            if not found:
                open(self.folder / "train.log", "x").close()  # exclusive: of two runs started at once, one wins
                self._owned = True
        except FileExistsError:
            found = ["train.log"]
        except OSError as err:
            raise UserError(f"cannot write in the run folder {self.folder}: {err.strerror or err}") from None
        if found:
            hint = (f"continue that run with --resume {self.checkpoint}" if "checkpoint.pt" in found
                    else "delete the folder if you no longer need it (it has no checkpoint.pt to resume)")
            raise UserError(f"{self.folder} already holds another run ({', '.join(found)}): choose a new "
                            f"--out-dir, or {hint}")

    def _check_resume(self) -> dict:
        """The checkpoint, if this run continues it exactly; otherwise a UserError naming why not."""
        path = Path(self.args.resume)
        if self.args.out_dir is not None and Path(self.args.out_dir).resolve() != self.folder.resolve():
            raise UserError(f"--resume continues in the checkpoint's own folder {self.folder}; "
                            f"leave out --out-dir {self.args.out_dir}")
        state = read_checkpoint(path)
        if state.get("script") != self.name:
            raise UserError(f"{path} was written by {state.get('script') or 'another program'}, not by "
                            f"{self.name}: resume it with the script that wrote it")
        if state.get("world_size", 1) != _rank_and_size()[1]:
            raise UserError(f"{path} was trained by {state.get('world_size')} process(es), and this run has "
                            f"{_rank_and_size()[1]}: resume it with as many")
        now = _plain(vars(self.args))
        differences = [f"--{key.replace('_', '-')} {state['args'].get(key)} (this run: {now.get(key)})"
                       for key in self.must_match if state["args"].get(key) != now.get(key)]
        if differences:
            raise UserError(f"{path} was trained with other settings: {', '.join(differences)}. Pass the "
                            "checkpoint's values to resume it, or start a new run without --resume")
        if state["epoch"] > self.args.epochs:
            raise UserError(f"{path} has already trained {state['epoch']} epochs; pass --epochs "
                            f"{state['epoch']} or more to resume it")
        return state

    def _restore(self, state: dict) -> None:
        """Weights, optimizer, scheduler, history and this process's random states, from the checkpoint."""
        try:
            self.model.load_state_dict(state["model_state_dict"])
            self.optimizer.load_state_dict(state["optimizer_state_dict"])
            if self.scheduler is not None:
                self.scheduler.load_state_dict(state["scheduler_state_dict"])
        except (RuntimeError, KeyError, ValueError, TypeError) as err:
            raise UserError(f"{self.checkpoint} does not fit this model or optimizer "
                            f"({str(err).strip().splitlines()[0][:160]})") from None
        if not all(torch.isfinite(t).all() for t in state["model_state_dict"].values() if t.is_floating_point()):
            raise UserError(f"{self.checkpoint} holds weights that are not finite numbers (NaN or infinity): "
                            "a diverged model cannot train on")
        rng = state["rng"][_rank_and_size()[0]]
        torch.set_rng_state(rng["torch"])  # the checkpoint was read onto the CPU: set_rng_state needs that
        device = _device_of(self.model)
        if device.type == "cuda" and rng.get("cuda") is not None:
            torch.cuda.set_rng_state(rng["cuda"], device)
        if device.type == "mps" and rng.get("mps") is not None:
            torch.mps.set_rng_state(rng["mps"])
        if self.generator is not None and rng.get("generator") is not None:
            self.generator.set_state(rng["generator"])
        self.history, self.done = list(state["metrics"]), state["epoch"]

    # --- the epochs ---------------------------------------------------------------------------------

    def epochs(self) -> Iterator[int]:
        """The epoch numbers still to train: 1 to --epochs, or on from the checkpoint's; one with --dry-run."""
        last = 1 if self.args.dry_run else self.args.epochs
        for epoch in range(self.done + 1, last + 1):
            self.epoch = epoch
            self._lr = self.optimizer.param_groups[0]["lr"]  # the rate this epoch trains with
            self._check_finite({"lr": torch.tensor(self._lr, dtype=torch.float32).item()})  # --gamma can grow it
            self._started = time.perf_counter()
            yield epoch

    def end_epoch(self, train_metrics: dict, test_metrics: dict, **more: Any) -> dict:
        """Record the epoch: stop if it diverged, else save the checkpoint and metrics; return its row."""
        seconds = time.perf_counter() - self._started
        row = _plain({"epoch": self.epoch, "lr": self._lr, **train_metrics, **test_metrics, **more,
                      "seconds": round(seconds, 3)})
        if row.get("train_seconds") and "train_images" in row:
            row["train_images_per_second"] = round(row["train_images"] / row.pop("train_seconds"), 1)
        self._check_finite(row)  # every process has the same weights and totals: all stop together
        self.history.append(row)
        rng = _gather(self._rng_state())  # every process's random states, for process 0 to save
        error = None
        if self.is_main:
            try:
                if not self.args.dry_run:  # one batch is no epoch: nothing to resume from
                    atomic_write(lambda f: torch.save(self._checkpoint_state(rng), f), self.checkpoint)
                    self._saved = True
                write_metrics(self.history, self.folder)
                speed = f" (training: {row['train_images_per_second']:,.0f} images/s)" \
                    if "train_images_per_second" in row else ""
                self.log(f"Epoch {self.epoch} took {seconds:.1f} s{speed}; " + ", ".join(
                    f"{key} {value:.4g}" for key, value in row.items() if key.endswith(("_loss", "_accuracy"))))
            except UserError as err:  # a full disk, say
                error = err
        _all_agree(error)
        return row

    def _check_finite(self, row: dict) -> None:
        bad = [key for key, value in row.items() if isinstance(value, float) and not math.isfinite(value)]
        bad += [name for name, tensor in [*self.model.named_parameters(), *self.model.named_buffers()]
                if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
        if bad:
            where = f"{bad[0]} = {row[bad[0]]}" if bad[0] in row else f"the weights ({bad[0]}, ...)"
            kept = f"; {self.checkpoint} still holds epoch {len(self.history)}" if self.history else ""
            first = self.optimizer.param_groups[0].get("initial_lr", self._lr)  # the schedule's starting rate
            advice = f"The schedule raised the learning rate from {first:g}: start again with --gamma 1 or less" \
                if self._lr > first else "Start again with a smaller --lr (try 10 times smaller)"
            raise Diverged(f"training diverged in epoch {self.epoch}: {where} is no longer a finite number at "
                           f"learning rate {self._lr:g}. Nothing of this epoch was saved{kept}. {advice}")

    def _rng_state(self) -> dict:
        device = _device_of(self.model)
        return {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                "mps": torch.mps.get_rng_state() if device.type == "mps" else None,
                "generator": self.generator.get_state() if self.generator is not None else None}

    def _checkpoint_state(self, rng: list[dict]) -> dict:
        return {"script": self.name, "model_class": type(self.model).__name__,
                "model_state_dict": self.model.state_dict(), "optimizer_state_dict": self.optimizer.state_dict(),
                "scheduler_state_dict": self.scheduler.state_dict() if self.scheduler is not None else None,
                "epoch": self.epoch, "loss": self.history[-1].get("train_loss"), "metrics": self.history,
                "args": _plain(vars(self.args)), "world_size": len(rng), "rng": rng}

    # --- outputs -------------------------------------------------------------------------------------

    def log(self, text: str, echo: bool = True) -> None:
        """Print `text` (if `echo`) and append it, time-stamped, to the run's train.log (process 0 only)."""
        if not self.is_main:
            return
        if echo:
            print(text)
        try:
            with open(self.folder / "train.log", "a", encoding="utf-8") as f:
                f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")
        except OSError as err:
            raise UserError(f"could not write {self.folder / 'train.log'}: {err.strerror or err}") from None

    def save_weights(self, filename: str) -> Path:
        """Save the model's weights alone (its state dict) in the run folder: what you load to use the model."""
        self._check_finite({})
        path = self.folder / filename
        if self.is_main:
            atomic_write(lambda f: torch.save(self.model.state_dict(), f), path)
        return path

    def save_figure(self, fig: Any, filename: str) -> Path:
        """Save a matplotlib figure as a PNG in the run folder; show it too with --show; then close it."""
        import matplotlib.pyplot as plt

        path = self.folder / filename
        try:
            if self.is_main:
                atomic_write(lambda f: fig.savefig(f, format="png", dpi=100), path)
                if self.args.show:
                    plt.show()
        finally:
            plt.close(fig)
        return path

    def save_curves(self, title: str) -> Path:
        """Save curves.png: the losses, and the test (and validation) accuracy, against the epoch."""
        import matplotlib.pyplot as plt

        epochs = [row["epoch"] for row in self.history]
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for ax, keys, scale, name in ((axes[0], ("train_loss", "val_loss", "test_loss"), 1, "loss"),
                                      (axes[1], ("val_accuracy", "test_accuracy"), 100, "accuracy (%)")):
            for key in [key for key in keys if all(key in row for row in self.history)]:
                ax.plot(epochs, [scale * row[key] for row in self.history], "o-", label=key.split("_")[0])
            ax.set(xlabel="epoch", ylabel=name, title=name.split()[0].capitalize())
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend()
            # Whole epochs only: one tick each up to 10 (one epoch alone would get 0.96 ... 1.04).
            ax.set_xticks(epochs) if len(epochs) <= 10 else ax.xaxis.get_major_locator().set_params(integer=True)
        fig.suptitle(title)
        fig.tight_layout()
        return self.save_figure(fig, "curves.png")

    # --- the end ---------------------------------------------------------------------------------

    def __exit__(self, kind, error, trace) -> bool:
        if not self._owned:  # another process's, or a folder this run was refused: touch nothing
            return False
        (self.folder / "checkpoint.pt.tmp").unlink(missing_ok=True)  # a save cut short
        state = None
        if self.checkpoint.is_file() and kind is not None:
            with contextlib.suppress(UserError):  # the checkpoint decides which epoch was kept: the metrics follow it
                state = read_checkpoint(self.checkpoint)
                write_metrics(state["metrics"], self.folder)
        if kind is None:
            self.log(f"Run folder: {self.folder} ({', '.join(sorted(p.name for p in self.folder.iterdir()))})")
        elif issubclass(kind, KeyboardInterrupt):
            kept = (f"{self.checkpoint} holds epoch {state['epoch']}, the last finished one: run the same command "
                    f"again with --resume {self.checkpoint} to continue." if state else "No epoch finished: nothing "
                    "to keep.")
            self.log(f"\nInterrupted in epoch {self.epoch}. {kept}")
        elif issubclass(kind, UserError):
            with contextlib.suppress(UserError):  # a log we cannot write must not hide the error itself
                self.log(f"error: {error}", echo=False)  # cli.run_main prints it on the console
        if kind is not None and not self.resumed and not self._saved and not self.args.dry_run:
            for name in RUN_FILES:  # a new run that finished no epoch leaves nothing behind
                (self.folder / name).unlink(missing_ok=True)
            if self._made_folder and not any(self.folder.iterdir()):
                self.folder.rmdir()
        return False  # the exception goes on to cli.run_main: one line, exit 2 (130 for Ctrl-C)


# --- files -------------------------------------------------------------------------------------------

def new_folder(out_dir: Path | None, name: str) -> tuple[Path, bool]:
    """`out_dir` (made if missing), or a new runs/<name>-<date>-<time>; and whether this call made it."""
    try:
        if out_dir is not None:
            made = not Path(out_dir).exists()
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            return Path(out_dir), made
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for number in range(1, 1000):  # two runs started in the same second get a folder each
            folder = REPO_ROOT / "runs" / (f"{name}-{stamp}" + (f"-{number}" if number > 1 else ""))
            with contextlib.suppress(FileExistsError):
                folder.mkdir(parents=True)
                return folder, True
        raise UserError(f"no free run folder name for {name}-{stamp}")
    except OSError as err:
        raise UserError(f"cannot create the run folder {out_dir or REPO_ROOT / 'runs'}: {err.strerror or err}") \
            from None


def atomic_write(write: Callable[[Any], object], path: Path) -> None:
    """`write(file)` into `<path>.tmp`, then rename it over `path`: the old file or the new one, never half.
    A full disk or a folder you may not write to becomes a one-line UserError; the old file stays."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
        tmp.replace(path)
    except (OSError, RuntimeError) as err:  # torch.save says "unexpected pos" for a full disk
        if tmp.is_file():
            tmp.unlink()
        if isinstance(err, RuntimeError) and "unexpected pos" not in str(err):
            raise
        reason = getattr(err, "strerror", None) or "no space left on the device"
        kept = " (the previous version is intact)" if path.exists() else ""
        raise UserError(f"could not write {path}: {reason}{kept}") from None


def load(path: Path) -> Any:
    """torch.load onto the CPU with weights_only=True (a file cannot run code); one line if it can't be read."""
    if not Path(path).is_file():
        raise UserError(f"{path} is a folder, not a file" if Path(path).is_dir() else f"{path} does not exist")
    try:
        with warnings.catch_warnings():  # torch warns of files other programs pickled: the error line says it
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a torn, foreign or non-PyTorch file: pickle, zip and torch all have their errors
        raise UserError(f"{path} is not a readable PyTorch checkpoint ({str(err).strip()[:120]})") from None


def read_checkpoint(path: Path) -> dict:
    """A training checkpoint of these lessons (see load()), or one line saying why it is not one."""
    state = load(path)
    fields = {"model_state_dict": dict, "optimizer_state_dict": dict, "epoch": int, "metrics": list, "args": dict,
              "rng": list}
    wrong = [key for key, kind in fields.items() if not isinstance(state, dict) or not isinstance(state.get(key), kind)]
    if wrong:
        raise UserError(f"{path} is not a training checkpoint of these lessons ({', '.join(wrong)} missing or "
                        "of the wrong type); a file of weights alone cannot resume training")
    return state


def write_metrics(history: list[dict], folder: Path) -> None:
    """metrics.json (strict JSON: NaN and infinity become null) and metrics.csv, one row per epoch."""
    rows = [{k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}
            for row in history]
    text = json.dumps(rows, indent=2, allow_nan=False) + "\n"
    atomic_write(lambda f: f.write(text.encode("utf-8")), folder / "metrics.json")
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=list(dict.fromkeys(k for row in rows for k in row)), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(lambda f: f.write(table.getvalue().encode("utf-8")), folder / "metrics.csv")


def _plain(value: Any) -> Any:
    """Flags and metrics as what JSON and weights_only=True take (a Path as text, a 0-d tensor as a number)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)


def _device_of(model: nn.Module) -> torch.device:
    return next(iter(model.parameters()), torch.empty(0)).device


def _rank_and_size() -> tuple[int, int]:
    """This process's rank and the number of processes (0 and 1 without torch.distributed)."""
    return (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)


def _gather(obj: Any) -> list:
    """Every process's `obj`, in rank order (a list of one without torch.distributed)."""
    objects = [obj] * _rank_and_size()[1]
    if len(objects) > 1:
        dist.all_gather_object(objects, obj)
    return objects


def _all_agree(error: UserError | None) -> None:
    """Raise on every process if any process has an error, so none waits for one that has given up."""
    first = next((e for e in _gather(str(error) if error else None) if e), None)
    if first is not None:
        raise error if error is not None else UserError(first)
