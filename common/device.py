"""Pick the device to train on: CUDA, then Apple MPS, then CPU."""

from __future__ import annotations

import argparse
import re

import torch

from common.cli import UserError


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --device, --no-cuda, --no-mps and --no-accel to a parser."""
    group = parser.add_argument_group("device")
    group.add_argument("--device", default=None,
                       help="cpu, cuda, cuda:N or mps (default: the best one available)")
    group.add_argument("--no-cuda", action="store_true", help="do not use CUDA even if it is available")
    group.add_argument("--no-mps", action="store_true", help="do not use Apple's MPS even if it is available")
    group.add_argument("--no-accel", action="store_true", help="use the CPU only (same as --no-cuda --no-mps)")


def mps_is_available() -> bool:
    """True on Apple silicon with an MPS-enabled torch; False on torch builds that predate MPS."""
    mps = getattr(torch.backends, "mps", None)  # torch < 1.12 has no torch.backends.mps
    return bool(mps is not None and mps.is_available())


def select_device(device: str | None = None, no_cuda: bool = False, no_mps: bool = False,
                  no_accel: bool = False) -> torch.device:
    """Return the device to use: an explicit `device` string wins, else CUDA, then MPS, then CPU."""
    if device is not None:
        return _check_explicit_device(device)
    if not (no_accel or no_cuda) and torch.cuda.is_available():
        return torch.device("cuda")
    if not (no_accel or no_mps) and mps_is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _check_explicit_device(name: str) -> torch.device:
    name = name.strip().lower()
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not mps_is_available():
            raise UserError("--device mps was asked for, but this torch/machine has no MPS support")
        return torch.device("mps")
    match = re.fullmatch(r"cuda(?::(\d+))?", name)
    if match:
        if not torch.cuda.is_available():
            raise UserError(f"--device {name} was asked for, but CUDA is not available "
                            "(no NVIDIA GPU, or a CPU-only torch build)")
        index = int(match.group(1) or 0)
        count = torch.cuda.device_count()
        if index >= count:
            raise UserError(f"--device {name}: this machine has {count} CUDA device(s), numbered from 0")
        return torch.device(name)
    raise UserError(f"unknown device {name!r}: choose cpu, cuda, cuda:N or mps")


def device_from_args(args: argparse.Namespace) -> torch.device:
    """select_device() driven by the flags from add_device_arguments()."""
    return select_device(args.device, no_cuda=args.no_cuda, no_mps=args.no_mps, no_accel=args.no_accel)


def describe(device: torch.device) -> str:
    """One line naming the device and the torch/torchvision versions, for the top of a run's log."""
    import torchvision  # imported here so common/ stays usable without torchvision installed

    detail = ""
    if device.type == "cuda":
        detail = f" ({torch.cuda.get_device_name(device)})"
    return (f"Using device: {device}{detail} | torch {torch.__version__}, "
            f"torchvision {torchvision.__version__}")
