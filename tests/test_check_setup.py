"""T01 check_setup.py: what it reports here (no GPU), and the GPU cases with faked torch and nvidia-smi."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import matplotlib
import numpy
import pytest
import torch
import torchvision

from common import cli
from T01_mnist_nn import check_setup

SCRIPT = Path(check_setup.__file__)

# The header and first GPU row of `nvidia-smi` (driver 550, Linux), and a Windows one (WDDM column).
NVIDIA_SMI_LINUX = """\
Tue Nov 25 13:15:00 2025
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 550.54.15              Driver Version: 550.54.15      CUDA Version: 12.4     |
|-----------------------------------------+------------------------+----------------------+
| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |
| Fan  Temp   Perf          Pwr:Usage/Cap |           Memory-Usage | GPU-Util  Compute M. |
|=========================================+========================+======================|
|   0  NVIDIA GeForce RTX 4060 Ti     Off |   00000000:01:00.0  On |                  N/A |
|  0%   38C    P8              5W /  165W |     500MiB /  16380MiB |      1%      Default |
+-----------------------------------------+------------------------+----------------------+
| Processes:                                                                              |
|    0   N/A  N/A      1234      G   /usr/lib/xorg/Xorg                             4MiB |
+-----------------------------------------------------------------------------------------+
"""
NVIDIA_SMI_WINDOWS = """\
| NVIDIA-SMI 581.29                 Driver Version: 581.29         CUDA Version: 13.0     |
| GPU  Name                  Driver-Model | Bus-Id          Disp.A | Volatile Uncorr. ECC |
|   0  NVIDIA GeForce RTX 3060      WDDM  |   00000000:01:00.0  On |                  N/A |
|   1  NVIDIA RTX A4000             TCC   |   00000000:02:00.0 Off |                  Off |
"""
INDEX = "https://download.pytorch.org/whl/"


def fix(tag: str) -> str:
    return f"python -m pip install --force-reinstall torch torchvision --index-url {INDEX}{tag}"


def fake_nvidia_smi(monkeypatch, stdout: str = NVIDIA_SMI_LINUX) -> list[dict]:
    """nvidia-smi 'on PATH', printing `stdout`; returns the keyword arguments of each call."""
    calls: list[dict] = []

    def run(command, **kwargs):
        calls.append(kwargs)
        return subprocess.CompletedProcess(command, 0, stdout=stdout, stderr="")

    monkeypatch.setattr(check_setup.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(check_setup.subprocess, "run", run)
    return calls


def no_nvidia_smi(monkeypatch) -> None:
    monkeypatch.setattr(check_setup.shutil, "which", lambda name: None)


@pytest.fixture
def two_fake_gpus(monkeypatch):
    """torch that 'sees' two CUDA GPUs, without touching a real one."""
    memory = {0: 16 * 2**30, 1: 80 * 10**9}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: f"Fake GPU {i}")
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda i: SimpleNamespace(total_memory=memory[i], major=8, minor=9 - i))


def test_runs_here_and_reports_the_imported_versions(capsys):
    facts = check_setup.main([])
    lines = capsys.readouterr().out.splitlines()
    assert facts["python"] == platform.python_version()
    assert lines[0].startswith(f"Python       {platform.python_version()} ({sys.executable})")
    for module in (torch, torchvision, numpy, matplotlib):
        assert facts[module.__name__] == module.__version__
        assert f"{module.__name__:<12} {module.__version__}" in lines
    assert facts["torch_cuda"] == torch.version.cuda
    assert facts["cuda_available"] == torch.cuda.is_available()
    assert (facts["torch_threads"], facts["cpu_count"]) == (torch.get_num_threads(), os.cpu_count())
    assert f"CPU threads  torch uses {torch.get_num_threads()}, os.cpu_count() = {os.cpu_count()}" in lines
    if not torch.cuda.is_available() and not check_setup.mps_is_available():  # this project's CI machine
        assert facts["device"] == "cpu" and lines[-1] == "Lessons will use: cpu"
        assert facts["gpus"] == []


def test_cpu_threads_line(monkeypatch, capsys):
    no_nvidia_smi(monkeypatch)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    monkeypatch.setattr(check_setup.os, "cpu_count", lambda: 8)
    facts = check_setup.main([])
    assert (facts["torch_threads"], facts["cpu_count"]) == (3, 8)
    assert "CPU threads  torch uses 3, os.cpu_count() = 8" in capsys.readouterr().out.splitlines()


def test_build_line_names_torchs_cuda_or_says_cpu_only(monkeypatch, capsys):
    no_nvidia_smi(monkeypatch)
    monkeypatch.setattr(torch.version, "cuda", "12.6")
    monkeypatch.setattr(check_setup, "cudnn_version", lambda: "9.5.1")
    check_setup.main([])
    assert "torch build  CUDA 12.6, cuDNN 9.5.1" in capsys.readouterr().out.splitlines()
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch.version, "hip", None, raising=False)
    check_setup.main([])
    assert "torch build  CPU-only build" in capsys.readouterr().out.splitlines()


@pytest.mark.processes  # starts Python processes: `make test-processes` (CI runs it)
def test_runs_as_a_script_from_another_folder(tmp_path):
    # -S and site-packages on PYTHONPATH: torch and friends import, but the project's editable install
    # (a .pth file) does not, as for a reader who cloned the repository and installed only torch.
    site_packages = [p for p in sys.path if Path(p).name == "site-packages"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(site_packages), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-S", str(SCRIPT)], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert f"torch        {torch.__version__}" in result.stdout.splitlines()
    assert "Lessons will use: " in result.stdout


def test_without_torch_it_says_so_and_exits_0(tmp_path):
    code = ("import runpy, sys; sys.modules['torch'] = None; sys.argv = ['check_setup.py']; "
            f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "torch        not installed" in result.stdout.splitlines()
    assert "pytorch.org/get-started/locally" in result.stdout


def test_a_missing_optional_package_prints_not_installed(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails as if not installed
    facts = check_setup.main([])
    assert facts["matplotlib"] == "not installed"
    assert "matplotlib   not installed" in capsys.readouterr().out.splitlines()


def test_a_package_that_fails_to_import_says_why(monkeypatch):
    real_import = check_setup.importlib.import_module

    def broken(name):
        if name == "torchvision":
            raise RuntimeError("operator torchvision::nms does not exist")
        return real_import(name)

    monkeypatch.setattr(check_setup.importlib, "import_module", broken)
    assert check_setup.package_version("torchvision") == (
        "installed, but fails to import: operator torchvision::nms does not exist")
    assert check_setup.package_version("numpy") == numpy.__version__


@pytest.mark.parametrize("torch_cuda, driver_cuda, expected", [
    (None, "12.4", fix("cu124")),  # CPU-only torch, GPU visible: the highest wheel the driver runs
    (None, "13.0", fix("cu130")),
    (None, "13.2", fix("cu130")),
    (None, "12.9", fix("cu129")),
    (None, "12.2", fix("cu121")),  # between tags: the one below
    ("13.0", "12.4", fix("cu124")),  # wheel newer than the driver
    ("12.6", "12.4", fix("cu124")),
    ("12.4", "12.8", None),  # older wheel than the driver: fine
    ("12.8", "12.8", None),
    ("13.0", "13.0", None),
    ("13.0", None, None),  # no NVIDIA driver: nothing to fix
    (None, None, None),
    (None, "11.4", "no PyTorch wheel fits: update the NVIDIA driver (it supports CUDA 11.4, wheels need 11.8+)"),
])
def test_cuda_fix_command(torch_cuda, driver_cuda, expected):
    assert check_setup.cuda_fix_command(torch_cuda, driver_cuda) == expected


def test_parse_nvidia_smi():
    assert check_setup.parse_nvidia_smi(NVIDIA_SMI_LINUX) == {
        "driver_version": "550.54.15", "driver_cuda": "12.4", "driver_gpus": ["NVIDIA GeForce RTX 4060 Ti"]}
    assert check_setup.parse_nvidia_smi(NVIDIA_SMI_WINDOWS) == {
        "driver_version": "581.29", "driver_cuda": "13.0",
        "driver_gpus": ["NVIDIA GeForce RTX 3060", "NVIDIA RTX A4000"]}
    assert check_setup.parse_nvidia_smi("") == {"driver_version": None, "driver_cuda": None, "driver_gpus": []}


def test_cpu_only_torch_with_a_visible_gpu_prints_the_fix(monkeypatch, capsys):
    calls = fake_nvidia_smi(monkeypatch)
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    facts = check_setup.main([])
    out = capsys.readouterr().out.splitlines()
    assert calls and calls[0]["timeout"] == 10
    assert (facts["driver_version"], facts["driver_cuda"]) == ("550.54.15", "12.4")
    assert "nvidia-smi   driver 550.54.15, CUDA up to 12.4: NVIDIA GeForce RTX 4060 Ti" in out
    assert facts["fix_command"] == fix("cu124")
    assert out[-2:] == ["torch cannot use the NVIDIA GPU: torch is a CPU-only build, and the driver runs CUDA "
                        "up to 12.4. The fix:", f"  {fix('cu124')}"]


def test_a_wheel_newer_than_the_driver_prints_the_fix(monkeypatch, capsys):
    fake_nvidia_smi(monkeypatch)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    facts = check_setup.main([])
    out = capsys.readouterr().out
    assert facts["fix_command"] == fix("cu124")
    assert "torch is built for CUDA 13.0, and the driver runs CUDA up to 12.4" in out


def test_a_wheel_the_driver_runs_prints_no_fix(monkeypatch, capsys):
    fake_nvidia_smi(monkeypatch, NVIDIA_SMI_LINUX.replace("CUDA Version: 12.4", "CUDA Version: 12.8"))
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    facts = check_setup.main([])
    assert facts["fix_command"] is None
    assert "pip install" not in capsys.readouterr().out


def test_without_nvidia_smi_no_fix_and_it_says_no_driver(monkeypatch, capsys):
    no_nvidia_smi(monkeypatch)
    monkeypatch.setattr(torch.version, "cuda", None)  # even a CPU-only torch: there is no GPU to fix it for
    facts = check_setup.main([])
    out = capsys.readouterr().out
    assert facts["fix_command"] is None and facts["driver_cuda"] is None
    assert "nvidia-smi   not found on PATH: no NVIDIA driver found" in out
    assert "pip install" not in out


def timeout(command, **kwargs):
    raise subprocess.TimeoutExpired(command, kwargs["timeout"])


def driver_gone(command, **kwargs):
    return subprocess.CompletedProcess(command, 9, stdout="NVIDIA-SMI has failed because it couldn't communicate "
                                       "with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed "
                                       "and running.\n\n", stderr="")


def not_allowed(command, **kwargs):
    raise PermissionError(13, "Permission denied")


@pytest.mark.parametrize("run, said", [
    (timeout, "/usr/bin/nvidia-smi did not answer within 10 s"),
    (driver_gone, "/usr/bin/nvidia-smi failed (exit code 9): NVIDIA-SMI has failed because it couldn't communicate"),
    (not_allowed, "/usr/bin/nvidia-smi could not be run: [Errno 13] Permission denied"),
])
def test_nvidia_smi_that_fails_or_hangs_still_exits_0(monkeypatch, capsys, run, said):
    monkeypatch.setattr(check_setup.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(check_setup.subprocess, "run", run)
    monkeypatch.setattr(torch.version, "cuda", None)
    results = []
    cli.run_main(lambda: results.append(check_setup.main([])))  # exits (SystemExit) on any error it knows of
    facts = results[0]
    assert facts["nvidia_smi"].startswith(said)
    assert f"nvidia-smi   {said}" in capsys.readouterr().out
    assert facts["fix_command"] is None and facts["driver_cuda"] is None


def test_lists_each_gpu_with_its_memory(two_fake_gpus, monkeypatch, capsys):
    no_nvidia_smi(monkeypatch)
    facts = check_setup.main([])
    lines = capsys.readouterr().out.splitlines()
    assert facts["gpus"] == [{"name": "Fake GPU 0", "memory_gib": 16.0, "capability": "8.9"},
                             {"name": "Fake GPU 1", "memory_gib": 74.5, "capability": "8.8"}]
    assert "  cuda:0     Fake GPU 0, 16.0 GiB, compute capability 8.9" in lines
    assert "  cuda:1     Fake GPU 1, 74.5 GiB, compute capability 8.8" in lines
    assert "CUDA         built: " + str(torch.backends.cuda.is_built()) + ", available: True" in lines
    assert facts["device"] == "cuda"


@pytest.mark.parametrize("flags, device", [([], "cuda"), (["--no-cuda"], "cpu"), (["--no-accel"], "cpu"),
                                           (["--device", "cuda:1"], "cuda:1"), (["--device", "cpu"], "cpu")])
def test_reports_the_device_the_lessons_pick_with_the_same_flags(two_fake_gpus, monkeypatch, capsys, flags, device):
    no_nvidia_smi(monkeypatch)
    assert check_setup.main(flags)["device"] == device
    assert capsys.readouterr().out.splitlines()[-1] == f"Lessons will use: {device}"


def test_a_device_the_lessons_would_refuse_is_reported_not_raised(monkeypatch, capsys):
    no_nvidia_smi(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    facts = check_setup.main(["--device", "cuda"])
    assert facts["device"] is None
    assert capsys.readouterr().out.splitlines()[-1].startswith(
        "Lessons will stop with: error: --device cuda was asked for, but CUDA is not available")


def test_cuda_working_despite_a_newer_minor_version_is_a_note(two_fake_gpus, monkeypatch, capsys):
    fake_nvidia_smi(monkeypatch)
    monkeypatch.setattr(torch.version, "cuda", "12.6")
    check_setup.main([])
    out = capsys.readouterr().out.splitlines()
    assert out[-2].startswith("Note: torch is built for CUDA 12.6, and the driver runs CUDA up to 12.4. CUDA works")
    assert out[-1] == f"  {fix('cu124')}"


def test_cudnn_version_text(monkeypatch):
    for number, text in [(90100, "9.1.0"), (92400, "9.24.0"), (8907, "8.9.7"), (None, None)]:
        monkeypatch.setattr(torch.backends.cudnn, "version", lambda number=number: number)
        assert check_setup.cudnn_version() == text
