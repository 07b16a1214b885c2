"""Compute the mean and standard deviation used to normalise a dataset.

mnist_nn.py normalises with `transforms.Normalize((0.1307,), (0.3081,))`. Those two numbers
are simply the mean and the standard deviation of every pixel of the 60,000 MNIST training
images, after ToTensor has scaled them to 0..1. This script measures them, in batches of
1,000 images so the whole dataset never has to sit in memory at once.

    python T01_mnist_nn/get_mnist_statistics.py                      # MNIST: about 0.1307 and 0.3081
    python T01_mnist_nn/get_mnist_statistics.py --dataset fashion-mnist
    python T01_mnist_nn/get_mnist_statistics.py --dataset cifar10    # one mean and std per colour channel
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so `common/` imports from any folder

import torch
from torchvision import transforms

from common import cli, data


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = cli.ArgumentParser(description="Per-channel mean and std of a dataset's images (for Normalize).")
    parser.add_argument("--dataset", choices=sorted(data.DATASETS), default="mnist",
                        help="which dataset (default: mnist)")
    parser.add_argument("--split", choices=["train", "test"], default="train",
                        help="which part to measure (default: train, as Normalize should use)")
    parser.add_argument("--batch-size", type=cli.positive_int, default=1000, metavar="N",
                        help="images per batch while streaming (default: 1000)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help=f"dataset folder (default: ${data.DATA_DIR_ENV} or <repo>/data)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    args = parse_args(argv)
    # ToTensor only: we want the statistics of the 0..1 pixels, before any normalisation.
    dataset = data.load_dataset(args.dataset, args.data_dir, train=args.split == "train",
                                transform=transforms.ToTensor())
    mean, std = data.channel_statistics(dataset, batch_size=args.batch_size)
    means = ", ".join(f"{m:.4f}" for m in mean.tolist())
    stds = ", ".join(f"{s:.4f}" for s in std.tolist())
    print(f"{args.dataset} ({args.split}, {len(dataset)} images, {len(mean)} channel(s))")
    print(f"mean: {means}")
    print(f"std:  {stds}")
    print(f"transforms.Normalize(({means},), ({stds},))")
    return mean, std


if __name__ == "__main__":
    cli.run_main(main)
