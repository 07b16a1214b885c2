"""T04 · Dataset and DataLoader: your own Dataset class, and what each DataLoader option changes.

The posts' MyDataset template is filled in twice: with points made in the script, and with
the same points read back from a CSV file the script writes into its run folder. Then each
DataLoader option is switched on by itself, and the batches show what it changed.

    python T04_tensor_autograd_basics/dataset_dataloader.py                   # 2 worker processes
    python T04_tensor_autograd_basics/dataset_dataloader.py --num-workers 0   # load in this process

Worker processes on Windows and macOS start by re-importing this file, so everything they
need (the Dataset classes, transforms, collate function) lives at the top level of the
module, and the script itself only runs under `if __name__ == "__main__":`.
"""

from __future__ import annotations

import argparse
import csv
import math
import random
import re
import signal
import sys
import warnings
from pathlib import Path

if __name__ == "__main__":  # run as a script, Ctrl-C while torch loads (a second or two) stops it, no traceback
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # (imported, e.g. in a notebook, nothing changes)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so `common/` imports from any folder

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    Sampler,
    SequentialSampler,
    WeightedRandomSampler,
    get_worker_info,
)

from common import cli
from common.device import seed_everything, select_device
from common.run import new_folder
from T04_tensor_autograd_basics.lesson import check, done, raises, section, start


class PointsDataset(Dataset):
    """The posts' MyDataset template, filled in: points in a square, label 1 inside the unit circle."""

    def __init__(self, size: int = 200, seed: int = 0, transform=None, target_transform=None) -> None:
        # __init__: load or make the data once (here: random points; usually: file names and labels).
        generator = torch.Generator().manual_seed(seed)
        self.points = torch.rand(size, 2, generator=generator) * 4 - 2  # uniform in [-2, 2] x [-2, 2]
        self.labels = (self.points.norm(dim=1) < 1).long()  # about pi/16 = 20% of them are inside
        self.transform, self.target_transform = transform, target_transform

    def __len__(self) -> int:
        # __len__: how many samples; the DataLoader uses it to plan the batches.
        return len(self.labels)

    def __getitem__(self, index: int):
        # __getitem__: one sample, as (input, target); transforms are applied here, one sample at a time.
        point, label = self.points[index], self.labels[index].item()
        if self.transform is not None:
            point = self.transform(point)
        if self.target_transform is not None:
            label = self.target_transform(label)
        return point, label


class CsvPointsDataset(Dataset):
    """The same template reading a CSV file with columns x, y, label."""

    def __init__(self, path: Path, transform=None, target_transform=None) -> None:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        if not rows:
            raise cli.UserError(f"{path} has no data rows")
        self.points = torch.tensor([[float(row["x"]), float(row["y"])] for row in rows])
        self.labels = [int(row["label"]) for row in rows]
        self.transform, self.target_transform = transform, target_transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        point, label = self.points[index], self.labels[index]
        if self.transform is not None:
            point = self.transform(point)
        if self.target_transform is not None:
            label = self.target_transform(label)
        return point, label


def write_points_csv(dataset: PointsDataset, path: Path) -> Path:
    """Write the dataset's points and labels as a CSV file (x, y, label)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["x", "y", "label"])
        for (x, y), label in zip(dataset.points.tolist(), dataset.labels.tolist()):
            writer.writerow([repr(x), repr(y), label])  # repr(): every digit, so reading back is exact
    return path


class Standardize:
    """transform: (x - mean) / std, with the mean and std of the training set."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.mean, self.std = mean, std

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class OneHot:
    """target_transform: class number -> one-hot vector (e.g. 1 -> [0., 1.])."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes

    def __call__(self, label: int) -> torch.Tensor:
        return F.one_hot(torch.tensor(label), self.num_classes).float()


class IndexDataset(Dataset):
    """Sample i is (i, id of the worker process that loaded it; -1 for the main process)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int):
        info = get_worker_info()  # None in the main process
        return index, -1 if info is None else info.id


class SentencesDataset(Dataset):
    """Sentences as word numbers: samples of different lengths, which the default batching cannot stack."""

    SENTENCES = ["the cat sat", "a dog ran home", "birds fly", "the dog and the cat sat down"]

    def __init__(self) -> None:
        words = sorted({word for sentence in self.SENTENCES for word in sentence.split()})
        self.vocabulary = {word: number for number, word in enumerate(words, start=1)}  # 0 is kept for padding

    def __len__(self) -> int:
        return len(self.SENTENCES)

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.tensor([self.vocabulary[word] for word in self.SENTENCES[index].split()])


class TinyImages(Dataset):
    """MNIST-style images as torchvision's ToTensor() hands them over: (1, 28, 28) floats in [0, 1], and a label."""

    def __init__(self, size: int = 10, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        # uint8 grey levels 0..255, as MNIST stores them
        self.pixels = torch.randint(0, 256, (size, 28, 28), dtype=torch.uint8, generator=generator)
        self.labels = torch.randint(0, 10, (size,), generator=generator)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        # ToTensor(): (H, W) uint8 -> (C, H, W) float in [0, 1]; a grey image has C = 1 channel
        return self.pixels[index].unsqueeze(0).float() / 255, self.labels[index].item()


class ShortestFirstBatchSampler(Sampler[list[int]]):
    """A batch sampler of our own: batches of samples of similar length (less padding), shortest first."""

    def __init__(self, lengths: list[int], batch_size: int) -> None:
        self.lengths, self.batch_size = lengths, batch_size

    def __iter__(self):
        order = sorted(range(len(self.lengths)), key=self.lengths.__getitem__)
        for first in range(0, len(order), self.batch_size):
            yield order[first:first + self.batch_size]  # one list of indices = one batch

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)


def pad_batch(batch: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """collate_fn: pad the sequences of a batch with 0 to the longest one; also return their lengths."""
    lengths = torch.tensor([len(sequence) for sequence in batch])
    return pad_sequence(batch, batch_first=True, padding_value=0), lengths


def batch_indices(loader: DataLoader) -> list[list[int]]:
    """The sample indices in each batch of one pass over an IndexDataset loader."""
    return [indices.tolist() for indices, _ in loader]


def my_dataset(seed: int) -> PointsDataset:
    section(1, "A Dataset class: __init__, __len__, __getitem__")
    points = PointsDataset(size=200, seed=seed)
    point, label = points[0]
    print(f"len(points) = {len(points)}; points[0] = {points[0]}")
    check(len(points) == 200 and point.shape == (2,) and label in (0, 1),
          "len() and [i] work: each sample is (a point of shape (2,), a label 0 or 1)")
    share = points.labels.float().mean().item()
    print(f"{100 * share:.0f}% of the points are inside the circle (label 1)")
    return points


def csv_dataset(points: PointsDataset, out_dir: Path) -> CsvPointsDataset:
    section(2, "The same template, reading a CSV file")
    path = write_points_csv(points, out_dir / "points.csv")
    print(f"wrote {path}: " + " | ".join(path.read_text(encoding="utf-8").splitlines()[:3]) + " | ...")
    from_csv = CsvPointsDataset(path)
    same = all(torch.equal(from_csv[i][0], points[i][0]) and from_csv[i][1] == points[i][1]
               for i in range(len(points)))
    check(len(from_csv) == len(points) and same, "every sample read back from the CSV equals the original")
    return from_csv


def transforms_demo(out_dir: Path, points: PointsDataset) -> CsvPointsDataset:
    section(3, "transform and target_transform (one-hot)")
    mean, std = points.points.mean(dim=0), points.points.std(dim=0)
    dataset = CsvPointsDataset(out_dir / "points.csv", transform=Standardize(mean, std), target_transform=OneHot(2))
    point, target = dataset[0]
    print(f"transform=Standardize(mean={mean}, std={std}), target_transform=OneHot(2):\n"
          f"dataset[0] = {dataset[0]}\nthe raw sample: {points[0]}")
    check(target.shape == (2,) and target.sum() == 1 and target.argmax().item() == points[0][1],
          "target_transform turned the label into a one-hot vector with its 1 at the label")
    standardized = torch.stack([dataset[i][0] for i in range(len(dataset))])
    check(standardized.mean(dim=0).abs().max() < 1e-5 and (standardized.std(dim=0) - 1).abs().max() < 1e-5,
          "after the transform each feature has mean 0 and standard deviation 1")
    return dataset


def first_batch(dataset: CsvPointsDataset, generator: torch.Generator) -> dict:
    section(4, "A DataLoader and next(iter(loader)): what a batch looks like")
    loader = DataLoader(dataset, batch_size=8, shuffle=True, generator=generator)
    features, targets = next(iter(loader))  # old posts: dataiter.next(), gone since PyTorch 1.13
    print(f"len(loader) = {len(loader)} batches; one batch: features {tuple(features.shape)} {features.dtype}, "
          f"targets {tuple(targets.shape)} {targets.dtype}")
    check(features.shape == (8, 2) and targets.shape == (8, 2),
          "the default collate_fn stacked 8 samples into one tensor per field (batch dimension first)")
    check(len(loader) == math.ceil(len(dataset) / 8), "len(loader) is the number of batches, ceil(200 / 8) = 25")
    check(not hasattr(iter(loader), "next"), "iterators have no .next() method today: use next(iterator)")
    return {"batch_shapes": (tuple(features.shape), tuple(targets.shape))}


def image_batches() -> dict:
    section(5, "A batch of images is (N, C, H, W): the post's [batch_size, input_size] only after flattening")
    images = TinyImages(size=10)
    image, _ = images[0]
    batch, labels = next(iter(DataLoader(images, batch_size=4)))  # in order: samples 0, 1, 2, 3
    flat = batch.view(batch.size(0), -1)  # what a Linear(784, ...) needs: one row of 784 numbers per image
    print(f"one image {tuple(image.shape)}; a batch of 4 from the DataLoader: images {tuple(batch.shape)}, "
          f"labels {tuple(labels.shape)}; batch.view(batch.size(0), -1) -> {tuple(flat.shape)}")
    check(image.shape == (1, 28, 28) and batch.shape == (4, 1, 28, 28),
          "the post says a batch has shape [batch_size, input_size]; in fact a batch of MNIST-style images is "
          "[batch_size, 1, 28, 28] = (N, C, H, W)")
    by_hand = [images.pixels[3, row, col].item() / 255 for row in range(28) for col in range(28)]  # row by row
    check(flat.shape == (4, 784) and torch.allclose(flat[3], torch.tensor(by_hand)),
          "only flattening makes it [batch_size, 784]: row after row of each image's 28 x 28 pixels")
    linear = nn.Linear(28 * 28, 10)
    message = raises(RuntimeError, lambda: linear(batch),
                     "a Linear(784, 10) refuses the unflattened batch (it multiplies the last dimension, 28)")
    print(f"  nn.Linear(784, 10)(batch) -> RuntimeError: {message}")
    check(linear(flat).shape == (4, 10), "and takes the flattened one: (4, 784) -> (4, 10)")
    return {"image_batch_shape": tuple(batch.shape), "flat_shape": tuple(flat.shape)}


def batch_size_and_drop_last() -> dict:
    section(6, "batch_size and drop_last")
    ten = IndexDataset(10)
    kept = batch_indices(DataLoader(ten, batch_size=4))
    dropped = batch_indices(DataLoader(ten, batch_size=4, drop_last=True))
    print(f"10 samples, batch_size=4:                 {kept}\n"
          f"10 samples, batch_size=4, drop_last=True: {dropped}")
    check([len(b) for b in kept] == [4, 4, 2] and [len(b) for b in dropped] == [4, 4],
          "the last, smaller batch is kept unless drop_last=True")
    return {"drop_last": [len(b) for b in dropped], "keep_last": [len(b) for b in kept]}


def shuffling(seed: int) -> dict:
    section(7, "shuffle (and a generator, for the same order every run)")
    ten = IndexDataset(10)
    in_order = sum(batch_indices(DataLoader(ten, batch_size=5)), [])
    loader = DataLoader(ten, batch_size=5, shuffle=True, generator=torch.Generator().manual_seed(seed))
    epoch1, epoch2 = sum(batch_indices(loader), []), sum(batch_indices(loader), [])
    again = sum(batch_indices(DataLoader(ten, batch_size=5, shuffle=True,
                                         generator=torch.Generator().manual_seed(seed))), [])
    print(f"shuffle=False: {in_order}\nshuffle=True, epoch 1: {epoch1}\nshuffle=True, epoch 2: {epoch2}")
    check(in_order == list(range(10)), "without shuffle the samples come in order")
    check(sorted(epoch1) == sorted(epoch2) == list(range(10)) and epoch1 != epoch2,
          "with shuffle every sample comes once per epoch, in a new order each epoch")
    check(again == epoch1, "a generator with the same seed gives the same order again")
    return {"shuffled": epoch1}


def sampler_demo(points: PointsDataset, generator: torch.Generator) -> dict:
    section(8, "A sampler: WeightedRandomSampler for an unbalanced dataset")
    counts = torch.bincount(points.labels, minlength=2)
    weights = 1.0 / counts[points.labels].double()  # rare class -> large weight
    sampler = WeightedRandomSampler(weights, num_samples=4000, replacement=True, generator=generator)
    loader = DataLoader(points, batch_size=100, sampler=sampler)
    labels = torch.cat([targets for _, targets in loader])
    share_before, share_after = points.labels.float().mean().item(), labels.float().mean().item()
    print(f"class counts {counts.tolist()}: label 1 is {100 * share_before:.0f}% of the dataset and "
          f"{100 * share_after:.0f}% of the 4000 samples the weighted sampler drew")
    check(share_before < 0.3 and 0.45 < share_after < 0.55,
          "weights of 1 / (count of the class) make the sampler draw both classes about equally")
    message = raises(ValueError, lambda: DataLoader(points, sampler=sampler, shuffle=True),
                     "sampler= and shuffle=True cannot be used together (the sampler decides the order)")
    print(f"  DataLoader(..., sampler=sampler, shuffle=True) -> ValueError: {message}")
    return {"weighted_share": share_after}


def batch_sampler_demo() -> dict:
    section(9, "batch_sampler: you decide which samples form each batch")
    ten = IndexDataset(10)
    batch_sampler = BatchSampler(SequentialSampler(ten), batch_size=3, drop_last=False)
    print(f"list(BatchSampler(SequentialSampler(ten), batch_size=3, drop_last=False)) = {list(batch_sampler)}")
    batches = batch_indices(DataLoader(ten, batch_sampler=batch_sampler))
    print(f"DataLoader(ten, batch_sampler=...) gives the batches {batches}")
    check(batches == [list(range(start, min(start + 3, 10))) for start in range(0, 10, 3)]
          and batches == batch_indices(DataLoader(ten, batch_size=3)),
          "the loader takes each list of indices the batch sampler yields as one batch: here what batch_size=3 does")
    refused, message = [], ""
    for option in ({"batch_size": 3}, {"shuffle": True}, {"sampler": SequentialSampler(ten)}, {"drop_last": True}):
        try:
            DataLoader(ten, batch_sampler=batch_sampler, **option)
        except ValueError as err:
            refused.append(next(iter(option)))
            message = str(err)
    print(f"  DataLoader(ten, batch_sampler=..., drop_last=True) -> ValueError: {message}")
    check(refused == ["batch_size", "shuffle", "sampler", "drop_last"],
          "so batch_sampler= must come without batch_size=, shuffle=, sampler= and drop_last=: each is a ValueError")
    sentences = SentencesDataset()
    lengths = [len(sentences[i]) for i in range(len(sentences))]
    in_order = [tuple(padded.shape) for padded, _ in DataLoader(sentences, batch_size=2, collate_fn=pad_batch)]
    grouped_loader = DataLoader(sentences, batch_sampler=ShortestFirstBatchSampler(lengths, batch_size=2),
                                collate_fn=pad_batch)
    grouped = [tuple(padded.shape) for padded, _ in grouped_loader]
    print(f"sentences of lengths {lengths}, 2 per batch: padded batches {in_order} in order, {grouped} with "
          f"ShortestFirstBatchSampler (its batches: {list(grouped_loader.batch_sampler)})")
    padding = {name: sum(rows * columns for rows, columns in shapes) - sum(lengths)
               for name, shapes in (("in order", in_order), ("grouped", grouped))}
    check(list(grouped_loader.batch_sampler) == [[2, 0], [1, 3]] and padding == {"in order": 6, "grouped": 4},
          "a custom batch sampler that groups similar lengths (here [2, 0] and [1, 3]) needs less padding: "
          "4 padding zeros instead of 6")
    return {"batch_sampler_batches": batches, "padding": padding}


def collate_demo() -> dict:
    section(10, "collate_fn: batching samples of different lengths")
    sentences = SentencesDataset()
    print("sample lengths: " + ", ".join(str(len(sentences[i])) for i in range(len(sentences))))
    message = raises(RuntimeError, lambda: next(iter(DataLoader(sentences, batch_size=4))),
                     "the default collate_fn cannot stack samples of different lengths")
    print(f"  default collate_fn -> RuntimeError: {message}")
    padded, lengths = next(iter(DataLoader(sentences, batch_size=4, collate_fn=pad_batch)))
    print(f"collate_fn=pad_batch -> padded {tuple(padded.shape)}, lengths {lengths.tolist()}:\n{padded}")
    check(padded.shape == (4, 7) and lengths.tolist() == [3, 4, 2, 7] and (padded[2, 2:] == 0).all(),
          "pad_batch padded every sentence with 0 to the longest (7) and kept the real lengths")
    return {"padded_shape": tuple(padded.shape)}


def seed_worker(worker_id: int) -> None:
    """worker_init_fn from PyTorch's reproducibility notes: seed NumPy and `random` in each worker process.

    torch gives each worker its own torch seed (the loader's base seed + worker_id; torch.initial_seed()
    reads it). Seeding NumPy and Python's `random` from it means augmentations drawn with those libraries
    differ between workers and repeat from run to run. (torch 1.9 and newer seed both in workers too;
    this makes it explicit, and works with older torch.) It must live at the top level of a module, so
    that workers started with "spawn" (Windows, macOS) can import it.
    """
    worker_seed = torch.initial_seed() % 2**32  # NumPy takes seeds below 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def workers_demo(num_workers: int, generator: torch.Generator) -> dict:
    section(11, f"num_workers={num_workers}: who loads each batch")
    loader = DataLoader(IndexDataset(16), batch_size=4, num_workers=num_workers, worker_init_fn=seed_worker,
                        generator=generator)
    batches = list(loader)
    workers = [ids.unique().tolist() for _, ids in batches]
    indices = sum((b.tolist() for b, _ in batches), [])
    print("batch -> loaded by: " + ", ".join(f"{i}: {'main process' if w == [-1] else f'worker {w[0]}'}"
                                             for i, w in enumerate(workers)))
    if num_workers == 0:
        check(all(w == [-1] for w in workers), "with num_workers=0 the main process loads every batch itself")
    else:
        check(workers == [[i % num_workers] for i in range(len(batches))],
              f"the {num_workers} worker processes take turns, one whole batch each")
        print("  (On Windows and macOS each worker re-imports this file: that is why the script runs only under\n"
              "  `if __name__ == '__main__':` and why Dataset classes must live at the top level of a module.)")
    check(indices == list(range(16)), "batches still arrive in order, whoever loaded them")
    return {"workers": workers}


# Without CUDA, pin_memory=True pins nothing on every torch, but what torch says about it changed: torch 2.0 to 2.6
# ignore it silently, and torch 2.7 added a warning. (On a Mac, torch 2.7 and newer warn that MPS cannot pin.)
PIN_MEMORY_WARNS_FROM = (2, 7)


def torch_release(version: str | None = None) -> tuple[int, int]:
    """torch's (major, minor) as numbers, to compare: "2.0.1+cu117" -> (2, 0), "2.14.1" -> (2, 14).

    Never compare the version strings themselves: as text, "2.14.1" < "2.7.0".
    """
    match = re.match(r"(\d+)\.(\d+)", version if version is not None else torch.__version__)
    if match is None:
        raise ValueError(f"not a torch version: {version!r}")
    return int(match.group(1)), int(match.group(2))


def pin_memory_demo(device: torch.device, dataset: Dataset) -> dict:
    section(12, "pin_memory: page-locked memory on the HOST, not GPU memory")
    # The same code on every machine: ask for pinned memory and look at what arrives.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        features, _ = next(iter(DataLoader(dataset, batch_size=8, pin_memory=True)))
    pinned = features.is_pinned()
    cuda = torch.cuda.is_available()
    print(f"torch.cuda.is_available() = {cuda}; DataLoader(..., pin_memory=True) -> batch.device = {features.device}, "
          f"batch.is_pinned() = {pinned}")
    check(features.device.type == "cpu",
          "the post says pin_memory loads the data into GPU memory; in fact the batch is still in CPU (host) memory")
    if cuda:
        check(pinned, "with CUDA, pin_memory=True gives pinned (page-locked) host memory: is_pinned() is True and "
                      "the device is still cpu")
    else:
        note = next((str(w.message) for w in caught if "pin_memory" in str(w.message)), "")
        print(f"  torch warned: {note}" if note else "  torch said nothing")
        print("  Without CUDA nothing is pinned on any torch; torch 2.0 to 2.6 ignore pin_memory=True silently, "
              "torch 2.7 and\n  newer ignore it with a warning. This is torch "
              f"{torch.__version__}, so the script checks the claim for it:")
        if torch_release() >= PIN_MEMORY_WARNS_FROM:
            check(not pinned and note, "without CUDA torch 2.7 and newer ignore pin_memory=True with a warning: "
                                       "nothing is pinned")
        else:
            check(not pinned and not note, "without CUDA torch 2.0 to 2.6 ignore pin_memory=True silently: "
                                           "nothing is pinned, and no warning")
        print("  Pinning is done through the GPU's driver, so this machine can show only the device. On a CUDA "
              "machine\n  the same lines check is_pinned() = True, with the batch still on the cpu.")
    print("  Pinned memory lets the GPU copy it directly, so the copy is faster and .to(device, non_blocking=True)\n"
          "  can overlap it with other work. The batch reaches the GPU only when you call .to(device).")
    moved = features.to(device, non_blocking=pinned)  # the copy to the device: only here does the batch move
    print(f"batch.to({str(device)!r}, non_blocking={pinned}) -> device {moved.device}")
    check(moved.device.type == device.type, f"only batch.to(device) puts the batch on {device.type}")
    return {"pinned": pinned}

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = cli.ArgumentParser(description="T04: Dataset and DataLoader, option by option, every claim checked.")
    parser.add_argument("--num-workers", type=int, default=2,
                        help="worker processes for the num_workers section (default: 2; 0 loads in this process)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default: 1)")
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="folder for points.csv (default: a new folder under <repo>/runs)")
    parser.add_device_flags()  # --device, --no-cuda, --no-mps, --no-accel (common/cli.py)
    args = parser.parse_args(argv)
    if args.num_workers < 0:
        parser.error(f"argument --num-workers: must be 0 or more, got {args.num_workers}")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = select_device(args)  # reads --device, --no-cuda, --no-mps, --no-accel
    generator = seed_everything(args.seed)
    out_dir, _ = new_folder(args.out_dir, "dataset_dataloader")  # --out-dir, or a new folder under runs/
    start("T04 - Dataset and DataLoader")
    points = my_dataset(args.seed)
    csv_dataset(points, out_dir)
    transformed = transforms_demo(out_dir, points)
    facts = first_batch(transformed, generator)
    facts |= image_batches()
    facts |= batch_size_and_drop_last()
    facts |= shuffling(args.seed)
    facts |= sampler_demo(points, generator)
    facts |= batch_sampler_demo()
    facts |= collate_demo()
    facts |= workers_demo(args.num_workers, generator)
    facts |= pin_memory_demo(device, transformed)
    print(f"\nRun folder: {out_dir} (points.csv)")
    return {**facts, "out_dir": out_dir, "claims": done()}


if __name__ == "__main__":
    cli.run_main(main)
