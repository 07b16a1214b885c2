"""Saving and loading: atomic writes, `weights_only=True` loads, and clear errors for the wrong file.

Two kinds of file:
- a state dict (`model.state_dict()`): the weights alone, what you ship or evaluate;
- a full checkpoint: weights plus optimizer, scheduler, epoch, metrics, arguments and
  random-number state, everything needed to resume training where it stopped.
"""

from __future__ import annotations

import errno
import os
import pickle
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from common.cli import UserError


def atomic_save(obj: Any, path: Path | str) -> Path:
    """torch.save to a temporary file in the same folder, then rename it over `path`.

    A crash or Ctrl-C halfway through leaves the previous file intact, never a torn one.
    A full disk or a folder you may not write to becomes a one-line UserError.
    """
    return _atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(path: Path | str, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically, like atomic_save: the old file or the new one, never half."""
    return _atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def _atomic_write(path: Path | str, write: Any) -> Path:
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # The temporary name ends in .tmp; a run that finds one left by a killed process removes it.
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename, so a power cut cannot leave an empty file
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) or _is_disk_full(err):
            raise UserError(_write_failure(path, err)) from None
        raise
    return path


def _is_disk_full(err: BaseException) -> bool:
    """torch.save reports a full disk as a RuntimeError ("unexpected pos ...") rather than an OSError."""
    return isinstance(err, RuntimeError) and "unexpected pos" in str(err)


def _write_failure(path: Path, err: BaseException) -> str:
    """One line saying why `path` could not be written, and that the previous file is untouched."""
    code = getattr(err, "errno", None)
    if code == errno.ENOSPC or _is_disk_full(err):
        reason = "no space left on the device"
    elif code in (errno.EACCES, errno.EPERM, errno.EROFS):
        reason = "permission denied (or a read-only folder)"
    else:
        reason = getattr(err, "strerror", None) or str(err).strip().splitlines()[0][:160]
    kept = " (the previous version of it is intact)" if path.exists() else ""
    return f"could not write {path}: {reason}{kept}"


def safe_load(path: Path | str, map_location: Any = "cpu") -> Any:
    """torch.load with weights_only=True (no arbitrary code from the file) and friendly errors."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{path} is not a readable PyTorch checkpoint ({first[:160]})") from None


def save_checkpoint(path: Path | str, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    scheduler: Any = None, epoch: int = 0, metrics: list[dict] | None = None,
                    args: dict | None = None, generator: torch.Generator | None = None,
                    extra: dict | None = None) -> Path:
    """Write a full training checkpoint atomically; `epoch` is the number of epochs completed.

    `extra` adds lesson-specific entries (plain values only), e.g. the posts' top-level "loss".
    """
    state = {
        "model_class": type(model).__name__,
        "model_state_dict": model.state_dict(),
        "optimizer_state_dict": optimizer.state_dict() if optimizer is not None else None,
        "scheduler_state_dict": scheduler.state_dict() if scheduler is not None else None,
        "epoch": epoch,
        "metrics": metrics or [],
        "args": _plain(args or {}),
        "rng": {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "loader": generator.get_state() if generator is not None else None},
    }
    state.update(_plain(extra or {}))
    return atomic_save(state, path)


def load_checkpoint(path: Path | str, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    scheduler: Any = None, generator: torch.Generator | None = None) -> dict:
    """Restore a full checkpoint into `model` (and optimizer, scheduler, RNG state); return its dict.

    The file is always read onto the CPU first: the random-number states must stay CPU tensors
    (`torch.set_rng_state` rejects a CUDA one). `load_state_dict` then copies the weights to
    wherever `model` lives, and the optimizer moves its state next to its parameters.
    """
    state = read_checkpoint(path, type(model).__name__)
    load_weights(model, state["model_state_dict"], path)
    if optimizer is not None and state.get("optimizer_state_dict"):
        optimizer.load_state_dict(state["optimizer_state_dict"])
    if scheduler is not None and state.get("scheduler_state_dict"):
        scheduler.load_state_dict(state["scheduler_state_dict"])
    rng = state.get("rng") or {}
    if rng.get("torch") is not None:
        torch.set_rng_state(rng["torch"])
    if rng.get("cuda") and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(rng["cuda"])
    if generator is not None and rng.get("loader") is not None:
        generator.set_state(rng["loader"])
    return state


def read_checkpoint(path: Path | str, model_class: str | None = None) -> dict:
    """Read a full training checkpoint onto the CPU, checking it is one (and of `model_class`, if given)."""
    state = safe_load(path, map_location="cpu")
    if not isinstance(state, dict) or "model_state_dict" not in state:
        raise UserError(f"{path} is not a full training checkpoint (it may be a plain state dict; "
                        "those hold weights only and cannot resume training)")
    saved = state.get("model_class")
    if model_class and saved and saved != model_class:
        raise UserError(f"{path} holds a {saved} model, not a {model_class}")
    return state


def load_weights(model: nn.Module, state_dict_or_path: dict | Path | str, source: Path | str = "") -> None:
    """Load a state dict (or a file holding one) into `model`, saying clearly when it doesn't fit."""
    if isinstance(state_dict_or_path, (str, Path)):
        source = state_dict_or_path
        state_dict = safe_load(state_dict_or_path)
        if isinstance(state_dict, dict) and "model_state_dict" in state_dict:
            state_dict = state_dict["model_state_dict"]  # a full checkpoint works here too
    else:
        state_dict = state_dict_or_path
    if not isinstance(state_dict, dict):
        raise UserError(f"{source} does not hold a state dict")
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as err:
        detail = str(err).strip().splitlines()
        hint = detail[1].strip() if len(detail) > 1 else detail[0]
        raise UserError(f"{source} was saved from a different model than {type(model).__name__} "
                        f"({hint[:160]})") from None


def _plain(value: Any) -> Any:
    """Arguments as plain Python values (Paths as strings), so weights_only=True can load them."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


# --- For the predict.py scripts (T01, T02, T03): finding and reading saved weights ----------------

def newest_file(runs_dir: Path, pattern: str) -> Path | None:
    """The most recently written file under `runs_dir` matching `pattern` (e.g. "*/mnist_simple_nn.pt"), or None."""
    found = [path for path in Path(runs_dir).glob(pattern) if path.is_file()]
    return max(found, key=lambda path: path.stat().st_mtime) if found else None


# Which lesson trains which model class, for the error that says "wrong lesson, use its predict.py".
MODEL_LESSONS = {"SimpleNN": "T01_mnist_nn", "NeuralNetwork": "T02_fashion_mnist",
                 "NeuralNetworkDeep": "T02_fashion_mnist", "ConvNet": "T02_fashion_mnist",
                 "LeNet": "T03_cifar10_lenet"}


def read_weights(path: Path | str, expected: Sequence[str]) -> tuple[dict, dict]:
    """The state dict saved in `path` (weights alone, or a full checkpoint) and the checkpoint's flags ({} if none).

    A checkpoint of a model class not in `expected` is refused with a line naming the lesson it belongs to.
    """
    saved = safe_load(path)
    if not isinstance(saved, dict):
        raise UserError(f"{path} does not hold a model's weights (a state dict or a training checkpoint)")
    if "model_state_dict" not in saved:
        return saved, {}
    model_class = saved.get("model_class")
    if model_class and model_class not in expected:
        lesson = MODEL_LESSONS.get(model_class)
        hint = f": use {lesson}/predict.py for it" if lesson else ""
        raise UserError(f"{path} is a checkpoint of a {model_class} model, not of {' or '.join(expected)}{hint}")
    return saved["model_state_dict"], dict(saved.get("args") or {})
