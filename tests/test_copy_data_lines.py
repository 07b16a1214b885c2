"""A reader can copy main()'s data and loader lines into their own file and run them with torch alone.

For each training script: the lines of main() from "# 1. Data" up to "# 2." run in a namespace
that holds the lesson file's own definitions but nothing of common/ (the one line that calls
data.download() is replaced by the reader's own folder), and the loaders they make give batches.
"""

from __future__ import annotations

import inspect
import re
import textwrap

import pytest
import stand_in_data
import torch

from T01_mnist_nn import mnist_nn
from T02_fashion_mnist import fashion_mnist, quickstart
from T03_cifar10_lenet import cifar10_lenet

COMMON_NAMES = {"cli", "data", "select_device", "seed_everything", "TrainingRun"}


def data_lines(module) -> str:
    """main()'s data and loader lines, as a reader copies them, without the data.download() call."""
    source = inspect.getsource(module.main)
    start, end = source.rindex("\n", 0, source.index("# 1. Data")) + 1, source.index("# 2.")
    lines = [line for line in source[start:end].splitlines() if "data.download(" not in line]
    uses_common = [line for line in lines for name in COMMON_NAMES if re.search(rf"(?<![\w.]){name}[.(]", line)]
    assert uses_common == []
    return textwrap.dedent("\n".join(lines))


@pytest.mark.parametrize(("module", "folder", "argv"), [
    (mnist_nn, "MNIST", []),
    (quickstart, "FashionMNIST", []),
    (fashion_mnist, "FashionMNIST", ["--val-size", "100", "--measured-stats"]),
    (cifar10_lenet, "cifar", []),
], ids=["T01", "T02-quickstart", "T02", "T03"])
def test_main_data_and_loader_lines_run_with_torch_alone(tmp_path, monkeypatch, module, folder, argv):
    if folder == "cifar":
        from torchvision import datasets

        stand_in_data.write_cifar10(tmp_path, train_size=200, test_size=50)
        monkeypatch.setattr(datasets.cifar, "check_integrity", lambda *a, **k: True)  # stand-in files: their MD5s
        monkeypatch.setattr(datasets.CIFAR10, "_check_integrity", lambda self: True)  # are not CIFAR-10's
    else:
        stand_in_data.write_mnist(tmp_path, folder, train_size=300, test_size=50)
    namespace = {name: value for name, value in vars(module).items() if name not in COMMON_NAMES}
    namespace |= {"root": tmp_path, "device": torch.device("cpu"), "generator": torch.Generator().manual_seed(0),
                  "args": module.parse_args(["--no-accel", *argv])}
    exec(data_lines(module), namespace)  # noqa: S102 (the lesson's own lines)
    images, labels = next(iter(namespace.get("train_loader") or namespace["train_dataloader"]))
    assert images.dtype == torch.float32 and labels.dtype == torch.long and len(images) == len(labels) > 1
