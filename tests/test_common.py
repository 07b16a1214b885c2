"""Tests for the shared helpers in common/: flags, device choice, seeding, datasets, packaging."""

from __future__ import annotations

import argparse
import gzip
import random
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import stand_in_data
import torch
from torchvision import datasets

from common import cli, data, device, run

REPO = Path(__file__).resolve().parents[1]


def flags(*words: str) -> argparse.Namespace:
    parser = cli.ArgumentParser(prog="demo")
    parser.add_common_flags()
    return parser.parse_args(list(words))


# --- device ----------------------------------------------------------------------------------

@pytest.fixture
def fake_accelerators(monkeypatch):
    """Pretend CUDA (2 GPUs) and MPS are available; return a setter to switch them off."""
    state = {"cuda": True, "mps": True}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: state["cuda"])
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2 if state["cuda"] else 0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: state["mps"])
    return state


def test_device_prefers_cuda_then_mps_then_cpu(fake_accelerators):
    assert device.select_device(flags()) == torch.device("cuda")
    assert device.select_device(flags("--no-cuda")) == torch.device("mps")
    assert device.select_device(flags("--no-cuda", "--no-mps")) == torch.device("cpu")
    assert device.select_device(flags("--no-accel")) == torch.device("cpu")
    fake_accelerators["cuda"] = False
    assert device.select_device(flags()) == torch.device("mps")
    assert device.select_device(flags("--no-mps")) == torch.device("cpu")


def test_device_explicit_choice(fake_accelerators):
    assert device.select_device(flags("--device", "cuda:1")) == torch.device("cuda:1")
    assert device.select_device(flags("--device", "CPU")) == torch.device("cpu")
    assert device.select_device(flags("--device", "mps")) == torch.device("mps")
    with pytest.raises(cli.UserError, match="2 CUDA device"):
        device.select_device(flags("--device", "cuda:2"))
    with pytest.raises(cli.UserError, match="unknown device 'tpu'"):
        device.select_device(flags("--device", "tpu"))
    fake_accelerators.update(cuda=False, mps=False)
    with pytest.raises(cli.UserError, match="CUDA is not available"):
        device.select_device(flags("--device", "cuda"))
    with pytest.raises(cli.UserError, match="no MPS support"):
        device.select_device(flags("--device", "mps"))


def test_device_on_old_torch_without_mps_backend(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delattr(torch.backends, "mps")  # torch < 1.12 had no torch.backends.mps
    assert not device.mps_is_available()
    assert device.select_device(flags()) == torch.device("cpu")
    assert "torch " + torch.__version__ in device.describe(torch.device("cpu"))


# --- seeding ---------------------------------------------------------------------------------

def draw(generator: torch.Generator) -> tuple:
    return (random.random(), float(np.random.rand()), torch.rand(3).tolist(),
            torch.randperm(10, generator=generator).tolist())


def test_same_seed_same_numbers_other_seed_other_numbers():
    first = draw(device.seed_everything(7))
    assert draw(device.seed_everything(7)) == first
    assert draw(device.seed_everything(8)) != first


def test_deterministic_mode_switches_torch_to_deterministic_algorithms():
    try:
        device.seed_everything(0, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)


# --- cli -------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["0", "-3", "abc", "1.5", str(2**31)])
def test_positive_int_rejects(text):
    with pytest.raises(argparse.ArgumentTypeError):
        cli.positive_int(text)
    assert cli.positive_int(str(2**31 - 1)) == 2**31 - 1


@pytest.mark.parametrize("text", ["0", "-0.1", "nan", "inf", "x", "3.5e38"])
def test_positive_float_rejects(text):
    with pytest.raises(argparse.ArgumentTypeError):
        cli.positive_float(text)
    assert cli.positive_float("3.4e38") == 3.4e38


@pytest.mark.parametrize("words, message", [
    (["--epochs", "0"], "--epochs: must be from 1"),
    (["--seed", str(2**64)], "--seed: must be from 0 to 18446744073709551615"),
    (["--out-dir", ""], "--out-dir: must name a folder"),
    (["--resume", "no/such/checkpoint.pt"], "--resume: checkpoint no/such/checkpoint.pt does not exist"),
])
def test_bad_flag_is_one_line_and_exit_2(capsys, words, message):
    parser = cli.ArgumentParser(prog="demo")
    parser.add_argument("--epochs", type=cli.positive_int, default=1)
    parser.add_common_flags()
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(words)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert parser.parse_args(["--seed", str(2**64 - 1)]).seed == 2**64 - 1


def test_run_main_turns_user_errors_into_one_line_and_only_rank_0_speaks(capsys, monkeypatch):
    def failing():
        raise cli.UserError("the thing is missing")

    with pytest.raises(SystemExit) as exit_info:
        cli.run_main(failing)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: the thing is missing\n"
    monkeypatch.setenv("RANK", "1")  # another process of a torchrun: the same exit code, no words
    with pytest.raises(SystemExit) as exit_info:
        cli.run_main(failing)
    assert exit_info.value.code == 2 and capsys.readouterr().err == ""


def test_new_folder_gives_each_run_its_own(tmp_path, monkeypatch):
    monkeypatch.setattr(run, "REPO_ROOT", tmp_path)
    (first, made), (second, _) = run.new_folder(None, "demo"), run.new_folder(None, "demo")
    assert made and first != second and first.is_dir() and second.is_dir()
    assert first.parent == tmp_path / "runs"
    assert run.new_folder(tmp_path / "mine", "demo") == (tmp_path / "mine", True)
    assert run.new_folder(tmp_path / "mine", "demo") == (tmp_path / "mine", False)


# --- data folder and loading -----------------------------------------------------------------

def test_data_dir_comes_from_flag_then_env_then_repo_never_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    assert data.resolve_data_dir() == (REPO / "data").resolve()
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "env"))
    assert data.resolve_data_dir() == tmp_path / "env"
    assert data.resolve_data_dir(tmp_path / "flag") == tmp_path / "flag"


def test_download_finds_the_files_and_torchvision_reads_them(mnist_root):
    root = data.download("mnist", mnist_root)
    train, test = datasets.MNIST(root, train=True), datasets.MNIST(root, train=False)
    assert (len(train), len(test)) == (2000, 500)
    assert train.data.shape == (2000, 28, 28) and train.targets.max() <= 9


def test_gzipped_files_dropped_in_by_hand_are_unpacked(tmp_path, mnist_root):
    stand_in_data.write_mnist(tmp_path, "MNIST", train_size=2000, test_size=500, gzipped=True)
    raw = tmp_path / "MNIST" / "raw"
    assert not (raw / "train-images-idx3-ubyte").exists()
    from_gz = datasets.MNIST(data.download("mnist", tmp_path), train=True)
    plain = datasets.MNIST(mnist_root, train=True)
    assert torch.equal(from_gz.data, plain.data) and torch.equal(from_gz.targets, plain.targets)
    assert (raw / "train-images-idx3-ubyte").exists() and (raw / "train-images-idx3-ubyte.gz").exists()


def test_missing_data_and_no_network_gives_instructions(tmp_path):
    with pytest.raises(cli.UserError) as err:
        data.download("mnist", tmp_path)
    message = str(err.value)
    assert "download failed" in message
    assert str(tmp_path / "MNIST" / "raw") in message
    assert "train-images-idx3-ubyte.gz" in message and "https://" in message
    assert "\n" not in message


def test_missing_cifar_names_the_archive(tmp_path):
    with pytest.raises(cli.UserError, match="cifar-10-python.tar.gz"):
        data.download("cifar10", tmp_path)


def test_truncated_file_is_named(tmp_path, mnist_root):
    shutil.copytree(mnist_root / "MNIST", tmp_path / "MNIST")
    images = tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:5000])
    with pytest.raises(cli.UserError, match="t10k-images-idx3-ubyte is truncated"):
        data.download("mnist", tmp_path)
    assert images.exists()  # never deletes the user's file


def test_garbage_file_and_bad_gzip_are_reported(tmp_path, mnist_root):
    shutil.copytree(mnist_root / "MNIST", tmp_path / "MNIST")
    raw = tmp_path / "MNIST" / "raw"
    (raw / "train-labels-idx1-ubyte").write_bytes(b"<html>not found</html>")
    with pytest.raises(cli.UserError, match="not an MNIST IDX file"):
        data.download("mnist", tmp_path)
    (raw / "train-labels-idx1-ubyte").unlink()
    (raw / "train-labels-idx1-ubyte.gz").write_bytes(b"this is not gzip")
    with pytest.raises(cli.UserError, match="not a valid gzip file"):
        data.download("mnist", tmp_path)
    assert not (raw / "train-labels-idx1-ubyte").exists()  # no half-written file left behind


def test_cifar_that_fails_md5_is_reported_not_deleted(tmp_path):
    folder = stand_in_data.write_cifar10(tmp_path, train_size=50, test_size=10)
    with pytest.raises(cli.UserError, match="data_batch_1.*failed torchvision's MD5 check"):
        data.download("cifar10", tmp_path)
    assert (folder / "data_batch_1").exists()


# --- the stand-in data the tests write -----------------------------------------------------------------------

def test_idx_writer_matches_torchvision_reader(tmp_path):
    from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor

    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = stand_in_data.write_idx(tmp_path / "x-idx3-ubyte", array, gzipped=True)
    with gzip.open(path) as f:
        (tmp_path / "plain").write_bytes(f.read())
    assert torch.equal(read_sn3_pascalvincent_tensor(str(tmp_path / "plain")), torch.from_numpy(array))


# --- packaging -------------------------------------------------------------------------------

def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~ \[]", req.strip(), maxsplit=1)[0].lower() for req in requirements}


def test_environment_yml_and_pyproject_name_the_same_runtime_dependencies():
    block = re.search(r"^dependencies = \[(.*?)\]", (REPO / "pyproject.toml").read_text(), re.S | re.M)
    runtime = _names(re.findall(r'"([^"]+)"', block.group(1)))
    assert runtime == {"torch", "torchvision", "numpy", "matplotlib"}
    conda = set()
    for line in (REPO / "environment.yml").read_text().splitlines():
        match = re.match(r"\s*-\s*([A-Za-z][\w.-]*)\s*([<>=!]=?[\w.*]+)?\s*(#.*)?$", line)
        if match and match.group(1) not in ("python", "pip", "conda-forge"):
            conda.add({"pytorch": "torch"}.get(match.group(1), match.group(1)).lower())
    assert conda == runtime
    assert "-e .[test]" in (REPO / "environment.yml").read_text()  # installs the project itself


def _release(version: str) -> tuple[int, ...]:
    """A version's release numbers, to compare as numbers: "2.0.1+cu117" -> (2, 0, 1). As text, "2.14" < "2.7"."""
    return tuple(int(part) for part in re.match(r"\d+(?:\.\d+)*", version).group(0).split("."))


def _floors() -> dict[str, tuple[int, ...]]:
    """pyproject.toml's runtime floors: {"torch": (2, 0), ...}."""
    block = re.search(r"^dependencies = \[(.*?)\]", (REPO / "pyproject.toml").read_text(), re.S | re.M)
    return {name.lower(): _release(version) for name, version in re.findall(r'"([\w.-]+)>=([\d.]+)"', block.group(1))}


def _floor_pins() -> dict[str, str]:
    """constraints-floors.txt: {"torch": "2.0.1", ...}."""
    pins = {}
    for line in (REPO / "constraints-floors.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = re.fullmatch(r"([A-Za-z][\w.-]*)==([\w.]+)", line).groups()
            pins[name.lower()] = version
    return pins


def test_the_promised_floors_are_pinned_in_one_place_that_everything_agrees_with():
    """pyproject.toml's floors, environment.yml's, constraints-floors.txt's exact pins and pyproject's comment name
    the same versions, and the floors job (run by CI after `make test`) installs under those pins."""
    floors, pins = _floors(), _floor_pins()
    assert set(floors) == {"torch", "torchvision", "numpy", "matplotlib"}
    assert set(pins) == set(floors)  # a pin with no floor would need saying why, here and in the file
    for name, floor in floors.items():
        assert _release(pins[name])[:len(floor)] == floor, f"{name}: pinned {pins[name]}, floor {floor}"
    conda = {}
    for line in (REPO / "environment.yml").read_text().splitlines():
        match = re.match(r"\s*-\s*([A-Za-z][\w.-]*)>=([\d.]+)", line)
        if match and match.group(1) != "python":
            conda[{"pytorch": "torch"}.get(match.group(1), match.group(1)).lower()] = _release(match.group(2))
    assert conda == floors
    comment = " ".join(line.lstrip("# ") for line in (REPO / "pyproject.toml").read_text().splitlines()
                       if line.startswith("#"))
    assert "constraints-floors.txt" in comment and "make test-floors" in comment
    assert re.findall(r"([a-z]+)==([\d.]+)", comment) == list(pins.items())
    makefile = (REPO / "Makefile").read_text()
    assert "FLOORS_CONSTRAINTS := constraints-floors.txt" in makefile
    assert '$(FLOORS_BIN)/python -m pip install -c $(FLOORS_CONSTRAINTS) -e ".[test]"' in makefile
    assert "$(FLOORS_STAMP): pyproject.toml $(FLOORS_CONSTRAINTS)" in makefile
    assert "test-floors: $(FLOORS_STAMP)\n\t$(FLOORS_BIN)/python -m pytest -n auto --dist loadgroup\n" in makefile
    ci = [line.split("#")[0].strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert [line for line in ci if line.startswith("make")] == [
        "make test", "make test-processes", "make test-notebooks", "make test-floors"]


def test_installed_versions_keep_the_promise():
    """In the floors job (.venv-floors) every pinned package is exactly at its pin; anywhere else at its floor or
    newer. Guards against a floors job that quietly installs today's releases instead."""
    from importlib.metadata import version

    in_floors_job = Path(sys.prefix).name == ".venv-floors"
    for name, pin in _floor_pins().items():
        installed = version(name)
        if in_floors_job:
            assert _release(installed) == _release(pin), f"{name} {installed} in the floors job, pinned {pin}"
        else:
            assert _release(installed) >= _floors()[name], f"{name} {installed} is older than the floor"


def test_versions_are_compared_as_numbers():
    assert "2.14.1" < "2.7" and _release("2.14.1") > _release("2.7")
    assert _release("2.0.1+cu117") == (2, 0, 1) and _release("1.26.4") >= (1, 26)
