"""Write small, learnable stand-in datasets in the real on-disk formats.

The tests and benchmarks can't download MNIST or CIFAR-10 (no network), so they write
files that torchvision reads exactly as it reads the real ones: IDX files for
MNIST/FashionMNIST and pickled batches for CIFAR-10. Each class is a fixed random
pattern, shifted and blurred by noise per image, so a model can learn it but not
trivially. These are not MNIST: accuracy on them says nothing about the real datasets.
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_idx(path: Path, array: np.ndarray, gzipped: bool = False) -> Path:
    """Write a uint8 array as an IDX file (the MNIST format), optionally gzipped; return its path."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path = Path(str(path) + ".gz") if gzipped else Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if gzipped else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())
    return path


def learnable_images(count: int, height: int, width: int, channels: int = 1, num_classes: int = 10,
                     seed: int = 0, noise: float = 60.0) -> tuple[np.ndarray, np.ndarray]:
    """`count` uint8 images (N x H x W x C) whose class is a shifted, noisy copy of a class pattern."""
    rng = np.random.default_rng(seed)
    # One pattern per class, from a fixed seed, so train and test sets share them.
    patterns = np.random.default_rng(12345).random((num_classes, height + 4, width + 4, channels)) > 0.6
    labels = rng.integers(0, num_classes, size=count)
    dy, dx = rng.integers(0, 5, size=count), rng.integers(0, 5, size=count)
    images = np.empty((count, height, width, channels), dtype=np.float32)
    for shift_y in range(5):  # crop each image's pattern at a random offset (a small translation)
        for shift_x in range(5):
            rows = np.flatnonzero((dy == shift_y) & (dx == shift_x))
            images[rows] = patterns[labels[rows], shift_y:shift_y + height, shift_x:shift_x + width] * 200.0
    images += rng.normal(0.0, noise, size=images.shape).astype(np.float32)
    return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.uint8)


def write_mnist(root: Path, folder: str = "MNIST", train_size: int = 2000, test_size: int = 500,
                gzipped: bool = False, seed: int = 0) -> Path:
    """Write MNIST-format IDX files to `<root>/<folder>/raw/`; `folder` "FashionMNIST" for that one."""
    raw = Path(root) / folder / "raw"
    for prefix, size, part_seed in (("train", train_size, seed), ("t10k", test_size, seed + 1)):
        images, labels = learnable_images(size, 28, 28, seed=part_seed)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images[..., 0], gzipped)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels, gzipped)
    return raw


def write_cifar10(root: Path, train_size: int = 1000, test_size: int = 200, seed: int = 0) -> Path:
    """Write CIFAR-10-format pickled batches to `<root>/cifar-10-batches-py/` (their MD5s won't match)."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)

    def dump(name: str, images: np.ndarray, labels: np.ndarray) -> None:
        # CIFAR-10 stores each image as 1024 red, then 1024 green, then 1024 blue bytes.
        rows = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
        batch = {"batch_label": name, "labels": [int(v) for v in labels], "data": rows,
                 "filenames": [f"{name}_{i}.png" for i in range(len(images))]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)

    images, labels = learnable_images(train_size, 32, 32, channels=3, seed=seed)
    for i, part in enumerate(np.array_split(np.arange(train_size), 5), start=1):
        dump(f"data_batch_{i}", images[part], labels[part])
    images, labels = learnable_images(test_size, 32, 32, channels=3, seed=seed + 1)
    dump("test_batch", images, labels)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CIFAR10_CLASSES, "num_cases_per_batch": train_size // 5,
                     "num_vis": 3072}, f, protocol=2)
    return folder
