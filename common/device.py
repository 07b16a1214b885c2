"""Where to compute, and how to make it repeatable: the device from the flags, and seeding (T01-T05)."""

from __future__ import annotations

import argparse
import os
import random
import re

import numpy as np
import torch

from common.cli import UserError


def mps_is_available() -> bool:
    """True on Apple silicon with an MPS-enabled torch (torch < 1.12 has no torch.backends.mps at all)."""
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def select_device(args: argparse.Namespace) -> torch.device:
    """The device the flags ask for: --device if given, else CUDA, then Apple's MPS, then the CPU."""
    if args.device is not None:
        return _explicit_device(args.device)
    if not (args.no_accel or args.no_cuda) and torch.cuda.is_available():
        return torch.device("cuda")
    if not (args.no_accel or args.no_mps) and mps_is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _explicit_device(name: str) -> torch.device:
    name = name.strip().lower()
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not mps_is_available():
            raise UserError("--device mps was asked for, but this torch/machine has no MPS support")
        return torch.device("mps")
    match = re.fullmatch(r"cuda(?::(\d+))?", name)
    if not match:
        raise UserError(f"unknown device {name!r}: choose cpu, cuda, cuda:N or mps")
    if not torch.cuda.is_available():
        raise UserError(f"--device {name} was asked for, but CUDA is not available "
                        "(no NVIDIA GPU, or a CPU-only torch build)")
    if int(match.group(1) or 0) >= torch.cuda.device_count():
        raise UserError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                        "numbered from 0")
    return torch.device(name)


def seed_everything(seed: int, deterministic: bool = False) -> torch.Generator:
    """Seed Python, NumPy and torch (every device); return a generator seeded alike, for the DataLoader's shuffle.
    With `deterministic`, torch also uses only deterministic algorithms (it warns where there is none), which
    matters on GPUs: the same seed then gives the same numbers, run after run."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds CUDA and MPS
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it for determinism
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    return torch.Generator().manual_seed(seed)


def describe(device: torch.device) -> str:
    """One line naming the device and the torch/torchvision versions, for the top of a run's log."""
    import torchvision

    name = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    return f"Using device: {device}{name} | torch {torch.__version__}, torchvision {torchvision.__version__}"
