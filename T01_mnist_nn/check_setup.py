"""Check your setup: the versions, devices and CUDA pieces the lessons will run with.

The network-building post checks its CUDA setup with `torch.version.cuda` and `nvidia-smi`.
This script does those checks and the ones around them, prints what it finds, and, when an
NVIDIA GPU is there but torch cannot use it, prints the command that fixes it.

    python T01_mnist_nn/check_setup.py
    python T01_mnist_nn/check_setup.py --no-cuda     # the same device flags as the lessons

It changes nothing, needs no network, and exits 0 whatever it finds.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

if __name__ == "__main__":  # run as a script, Ctrl-C while torch loads (a second or two) stops it, no traceback
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # (imported, e.g. in a notebook, nothing changes)
try:
    import torch
except (ImportError, OSError) as err:  # nothing else can be checked without torch: say so and stop
    problem = "not installed" if getattr(err, "name", None) == "torch" else f"installed, but fails to import: {err}"
    print(f"Python       {platform.python_version()} ({sys.executable})\ntorch        {problem}\n"
          "Install it with `pip install -e .` in the repository, or with the command for your system "
          "from https://pytorch.org/get-started/locally/")
    sys.exit(0)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so `common/` imports from any folder
try:
    from common import cli
    from common.device import mps_is_available, select_device
except ModuleNotFoundError as err:
    if not (err.name or "").startswith("common"):
        raise
    sys.exit("error: this script needs the repository's common/ folder (clone the whole repository).")

# The CUDA versions PyTorch publishes wheels for, each at https://download.pytorch.org/whl/<tag>.
# Assumed from pytorch.org's install pages; update it when a new tag appears. The old tags hold only
# old releases (cu121 stops at torch 2.5, cu124 at 2.6, cu118 at 2.7): pip takes the newest one there.
CUDA_WHEEL_TAGS = {"cu118": (11, 8), "cu121": (12, 1), "cu124": (12, 4), "cu126": (12, 6),
                   "cu128": (12, 8), "cu129": (12, 9), "cu130": (13, 0)}
NVIDIA_SMI_TIMEOUT = 10  # seconds; a hung driver can make nvidia-smi wait for ever


def package_version(name: str) -> str:
    """The package's __version__, "not installed", or why it fails to import."""
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name != name:  # the package is there, but something it needs is not
            return f"installed, but fails to import: {err}"
        return "not installed"
    except Exception as err:  # e.g. a torchvision built for another torch
        return f"installed, but fails to import: {err}"
    return getattr(module, "__version__", "unknown version")


def cudnn_version() -> str | None:
    """torch's cuDNN version as "9.1.0", or None when this torch has no cuDNN."""
    try:
        number = torch.backends.cudnn.version()  # 90100 for 9.1.0; cuDNN 8 counted 8907 for 8.9.7
    except RuntimeError as err:  # a cuDNN library other than the one torch was built with
        return f"unusable ({err})"
    if number is None:
        return None
    major, rest = divmod(number, 10000 if number >= 10000 else 1000)
    return f"{major}.{rest // 100}.{rest % 100}"


def version_tuple(text: str | None) -> tuple[int, int] | None:
    """Parse "12.4" (or "12.4.1") as (12, 4); None when there is no version."""
    match = re.match(r"(\d+)\.(\d+)", text or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def run_nvidia_smi() -> tuple[str | None, str]:
    """Plain `nvidia-smi` output (None when it is missing or fails) and a line saying what happened."""
    path = shutil.which("nvidia-smi")
    if path is None:
        return None, "not found on PATH: no NVIDIA driver found (so there is no NVIDIA GPU torch could use)"
    try:
        result = subprocess.run([path], capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT)
    except subprocess.TimeoutExpired:
        return None, f"{path} did not answer within {NVIDIA_SMI_TIMEOUT} s (a stuck driver? a reboot often helps)"
    except OSError as err:
        return None, f"{path} could not be run: {err}"
    if result.returncode != 0:
        said = (result.stdout + result.stderr).strip().splitlines()
        return None, f"{path} failed (exit code {result.returncode}): {said[0] if said else 'no message'}"
    return result.stdout, path


def parse_nvidia_smi(text: str) -> dict:
    """The driver version, the newest CUDA it supports and the GPU names, from plain `nvidia-smi` output."""
    driver = re.search(r"Driver Version:\s*([\d.]+)", text)
    cuda = re.search(r"CUDA Version:\s*([\d.]+)", text)
    # A GPU's first table row: "|   0  NVIDIA GeForce RTX 4060 Ti     Off |" (On/Off on Linux, WDDM/TCC on Windows)
    names = re.findall(r"^\|\s+\d+\s+(.+?)\s+(?:On|Off|WDDM|TCC)\s+\|", text, flags=re.MULTILINE)
    return {"driver_version": driver.group(1) if driver else None,
            "driver_cuda": cuda.group(1) if cuda else None, "driver_gpus": names}


def cuda_fix_command(torch_cuda: str | None, driver_cuda: str | None) -> str | None:
    """The pip command that gives torch a CUDA the driver can run; None when there is nothing to fix.

    Run it with the Python that runs the lessons (`python -m pip` installs into that one).

    `torch_cuda` is torch.version.cuda (None: a CPU-only build); `driver_cuda` is the "CUDA Version"
    nvidia-smi reports (None: no NVIDIA driver, so no GPU to fix anything for).
    """
    driver = version_tuple(driver_cuda)
    if driver is None:
        return None
    wheel = version_tuple(torch_cuda)
    if wheel is not None and wheel <= driver:  # a driver runs its own CUDA version and every older one
        return None
    fitting = [tag for tag, version in CUDA_WHEEL_TAGS.items() if version <= driver]
    if not fitting:
        return f"no PyTorch wheel fits: update the NVIDIA driver (it supports CUDA {driver_cuda}, wheels need 11.8+)"
    tag = max(fitting, key=CUDA_WHEEL_TAGS.get)
    return f"python -m pip install --force-reinstall torch torchvision --index-url https://download.pytorch.org/whl/{tag}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = cli.ArgumentParser(description="Print the versions, devices and CUDA setup the lessons will use.")
    parser.add_device_flags()  # the lessons' device flags, so it reports the device they pick with the same ones
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    facts: dict = {}

    # Python and its path: `pip install` into another Python than the one that runs the lessons
    # is the most common reason for "I installed it, but it says not installed".
    facts["python"] = platform.python_version()
    print(f"Python       {facts['python']} ({sys.executable}) on {platform.system()} {platform.machine()}")
    # Versions: the first thing to compare when a lesson behaves differently from the post.
    for name in ("torch", "torchvision", "numpy", "matplotlib"):
        facts[name] = package_version(name)
        print(f"{name:<12} {facts[name]}")

    # torch's build: a CUDA wheel carries its own CUDA and cuDNN (no CUDA toolkit needed); a
    # CPU-only build (torch.version.cuda is None) never uses a GPU, whatever the machine has.
    facts["torch_cuda"], facts["cudnn"] = torch.version.cuda, cudnn_version()
    if facts["torch_cuda"]:
        print(f"torch build  CUDA {facts['torch_cuda']}, cuDNN {facts['cudnn'] or 'none'}")
    elif getattr(torch.version, "hip", None):
        print(f"torch build  ROCm (HIP {torch.version.hip}), for AMD GPUs")
    else:
        print("torch build  CPU-only build")

    # Built means torch has the code; available means it also found a GPU and a driver it can use.
    mps = getattr(torch.backends, "mps", None)  # absent before torch 1.12
    facts["cuda_built"], facts["cuda_available"] = torch.backends.cuda.is_built(), torch.cuda.is_available()
    facts["mps_built"], facts["mps_available"] = bool(mps and mps.is_built()), mps_is_available()
    print(f"CUDA         built: {facts['cuda_built']}, available: {facts['cuda_available']}")
    print(f"MPS          built: {facts['mps_built']}, available: {facts['mps_available']}")

    # Each GPU torch can use, with its memory: what limits the batch size and the model's size.
    facts["gpus"] = []
    for i in range(torch.cuda.device_count() if facts["cuda_available"] else 0):
        props = torch.cuda.get_device_properties(i)
        gpu = {"name": torch.cuda.get_device_name(i), "memory_gib": round(props.total_memory / 2**30, 1),
               "capability": f"{props.major}.{props.minor}"}
        facts["gpus"].append(gpu)
        print(f"  cuda:{i}     {gpu['name']}, {gpu['memory_gib']} GiB, compute capability {gpu['capability']}")

    # CPU threads: torch does CPU math on this many; in a container it can be fewer than the machine has.
    facts["torch_threads"], facts["cpu_count"] = torch.get_num_threads(), os.cpu_count()
    print(f"CPU threads  torch uses {facts['torch_threads']}, os.cpu_count() = {facts['cpu_count']}")

    # nvidia-smi comes with the NVIDIA driver: it sees the GPU even when torch cannot, and its
    # "CUDA Version" is the newest CUDA the driver runs, which torch's CUDA must not be above.
    output, facts["nvidia_smi"] = run_nvidia_smi()
    facts.update(parse_nvidia_smi(output or ""))
    if output:
        gpus = "; ".join(facts["driver_gpus"]) or "no GPU listed"
        print(f"nvidia-smi   driver {facts['driver_version']}, CUDA up to {facts['driver_cuda']}: {gpus}")
    else:
        print(f"nvidia-smi   {facts['nvidia_smi']}")

    # The device every lesson picks with these flags (common.device.select_device: CUDA, then MPS, then CPU).
    try:
        facts["device"] = str(select_device(args))
        print(f"Lessons will use: {facts['device']}")
    except cli.UserError as err:  # e.g. --device cuda without CUDA: the lessons would stop with this line
        facts["device"] = None
        print(f"Lessons will stop with: error: {err}")

    # An NVIDIA GPU that torch cannot use: a CPU-only build (PyPI's default wheel on Windows), or a
    # build for a newer CUDA than the driver runs. Reinstalling torch with a CUDA the driver runs fixes both.
    facts["fix_command"] = cuda_fix_command(facts["torch_cuda"], facts["driver_cuda"])
    if facts["fix_command"]:
        why = (f"torch is built for CUDA {facts['torch_cuda']}" if facts["torch_cuda"] else "torch is a CPU-only build")
        why += f", and the driver runs CUDA up to {facts['driver_cuda']}"
        if facts["cuda_available"]:  # a newer minor version often still runs (CUDA minor-version compatibility)
            print(f"Note: {why}. CUDA works; if GPU errors mention the driver, the fix is:")
        else:
            print(f"torch cannot use the NVIDIA GPU: {why}. The fix:")
        print(f"  {facts['fix_command']}")
    return facts


if __name__ == "__main__":
    cli.run_main(main)
