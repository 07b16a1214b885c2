"""Compute the mean and standard deviation used to normalise a dataset.

mnist_nn.py normalises with `transforms.Normalize((0.1307,), (0.3081,))`. Those two numbers
are simply the mean and the standard deviation of every pixel of the 60,000 MNIST training
images, after ToTensor has scaled them to 0..1. This script measures them with torch alone.

    python T01_mnist_nn/get_mnist_statistics.py                      # MNIST: about 0.1307 and 0.3081
    python T01_mnist_nn/get_mnist_statistics.py --dataset fashion-mnist
    python T01_mnist_nn/get_mnist_statistics.py --dataset cifar10    # one mean and std per colour channel
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

if __name__ == "__main__":  # run as a script, Ctrl-C while torch loads (a second or two) stops it, no traceback
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # (imported, e.g. in a notebook, nothing changes)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so `common/` imports from any folder

import torch
from torchvision import datasets

from common import cli, data


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = cli.ArgumentParser(description="Per-channel mean and std of a dataset's images (for Normalize).")
    parser.add_argument("--dataset", choices=sorted(data.DATASETS), default="mnist",
                        help="which dataset (default: mnist)")
    parser.add_argument("--split", choices=["train", "test"], default="train",
                        help="which part to measure (default: train, as Normalize should use)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help=f"dataset folder (default: ${data.DATA_DIR_ENV} or <repo>/data)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    args = parse_args(argv)
    root = data.download(args.dataset, args.data_dir)
    kind = {"mnist": datasets.MNIST, "fashion-mnist": datasets.FashionMNIST, "cifar10": datasets.CIFAR10}
    dataset = kind[args.dataset](root, train=args.split == "train")
    pixels = torch.as_tensor(dataset.data)  # uint8: N x 28 x 28 (MNIST), or N x 32 x 32 x 3 (CIFAR-10)
    pixels = pixels.unsqueeze(-1) if pixels.dim() == 3 else pixels  # one channel axis last, for both
    # ToTensor divides each pixel by 255. Whole-number sums of the uint8 pixels (and of their squares)
    # are exact, so the mean and std below are as exact as a float can hold them.
    count = pixels[..., 0].numel()
    sums = torch.stack([pixels[..., c].sum(dtype=torch.int64) for c in range(pixels.shape[-1])]).double()
    squares = torch.stack([(pixels[..., c].int() ** 2).sum(dtype=torch.int64) for c in range(pixels.shape[-1])])
    mean = sums / count / 255
    std = (squares.double() / count / 255**2 - mean**2).sqrt()
    mean, std = mean.float(), std.float()
    means = ", ".join(f"{m:.4f}" for m in mean.tolist())
    stds = ", ".join(f"{s:.4f}" for s in std.tolist())
    print(f"{args.dataset} ({args.split}, {len(dataset)} images, {len(mean)} channel(s))")
    print(f"mean: {means}")
    print(f"std:  {stds}")
    print(f"transforms.Normalize(({means},), ({stds},))")
    return mean, std


if __name__ == "__main__":
    cli.run_main(main)
