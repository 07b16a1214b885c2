"""Datasets: where they live, how they are fetched, and how to keep them in memory as tensors.

One data folder serves every lesson. It is torchvision's `root`, laid out the way
torchvision lays it out, so files a reader already downloaded are found:

    <data-dir>/MNIST/raw/train-images-idx3-ubyte ...
    <data-dir>/FashionMNIST/raw/train-images-idx3-ubyte ...
    <data-dir>/cifar-10-batches-py/data_batch_1 ...
"""

from __future__ import annotations

import gzip
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torchvision import datasets, transforms
from torchvision.datasets.utils import check_integrity

from common.cli import REPO_ROOT, UserError

DATA_DIR_ENV = "PYTORCH_TUTORIAL_DATA_DIR"

MNIST_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


@dataclass(frozen=True)
class DatasetInfo:
    """What the helpers need to know about one torchvision dataset."""

    cls: type
    folder: str  # where torchvision keeps it under the data folder
    source: str  # where a reader can fetch the files by hand



def _preferred_mirror(mirrors: list[str]) -> str:
    """torchvision's first https mirror (older releases list yann.lecun.com's http one first)."""
    return next((m for m in mirrors if m.startswith("https://")), mirrors[0])


DATASETS = {
    "mnist": DatasetInfo(datasets.MNIST, "MNIST/raw", _preferred_mirror(datasets.MNIST.mirrors)),
    "fashion-mnist": DatasetInfo(datasets.FashionMNIST, "FashionMNIST/raw",
                                 _preferred_mirror(datasets.FashionMNIST.mirrors)),
    "cifar10": DatasetInfo(datasets.CIFAR10, datasets.CIFAR10.base_folder, datasets.CIFAR10.url),
}


def resolve_data_dir(data_dir: Path | str | None = None) -> Path:
    """The data folder: `data_dir` if given, else $PYTORCH_TUTORIAL_DATA_DIR, else <repo>/data.

    It never depends on the current directory, so running a script from another
    folder does not scatter datasets around the disk.
    """
    if data_dir is None:
        data_dir = os.environ.get(DATA_DIR_ENV) or REPO_ROOT / "data"
    return Path(data_dir).expanduser().resolve()


def load_dataset(name: str, data_dir: Path | str | None, train: bool,
                 transform: Callable | None = None, download: bool = True) -> Dataset:
    """Load MNIST, FashionMNIST or CIFAR-10 through torchvision, downloading it if it is missing.

    A failed download or a damaged file becomes a UserError that says what to do.
    """
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
    info = DATASETS[name]
    root = resolve_data_dir(data_dir)
    folder = root / info.folder

    if name == "cifar10":
        present = all((folder / f).is_file() for f, _ in info.cls.train_list + info.cls.test_list)
    else:
        _gunzip_idx_files(folder)  # a reader may have dropped the .gz files in by hand
        present = all((folder / f).is_file() for f in MNIST_FILES)
        if present:
            for f in MNIST_FILES:
                _check_idx_file(folder / f)

    if not present:
        if not download:
            raise UserError(f"{info.cls.__name__} is not in {folder}. {_how_to_get(name, root)}")
        try:
            info.cls(str(root), train=train, download=True)
        except Exception as err:  # no network, a blocked mirror, a truncated download...
            reason = _last_line(err)
            raise UserError(f"{info.cls.__name__} is not in {folder} and the download failed ({reason}). "
                            f"{_how_to_get(name, root)}") from None

    try:
        return info.cls(str(root), train=train, transform=transform, download=False)
    except Exception as err:
        raise UserError(_damaged_message(name, root, err)) from None


def _how_to_get(name: str, root: Path) -> str:
    info = DATASETS[name]
    if name == "cifar10":
        return (f"Download {info.source} and unpack it in {root} (it makes {info.folder}/), "
                f"or put the .tar.gz itself in {root}; or use --data-dir / ${DATA_DIR_ENV}.")
    files = ", ".join(f + ".gz" for f in MNIST_FILES)
    return (f"Download {files} from {info.source} into {root / info.folder}, "
            f"or point --data-dir / ${DATA_DIR_ENV} at a folder that has them.")


def _damaged_message(name: str, root: Path, err: Exception) -> str:
    info = DATASETS[name]
    folder = root / info.folder
    if name == "cifar10":
        bad = [f for f, md5 in info.cls.train_list + info.cls.test_list + [(info.cls.meta["filename"],
               info.cls.meta["md5"])] if not check_integrity(str(folder / f), md5)]
        if bad:
            return (f"CIFAR-10 file(s) {', '.join(bad)} in {folder} failed torchvision's MD5 check "
                    f"(corrupt or incomplete). Delete {folder} and run again to download it afresh.")
    return (f"could not read {info.cls.__name__} from {folder} ({_last_line(err)}); a file there is "
            f"corrupt or truncated. Delete it and run again to download it afresh.")


def _last_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = lines[-1] if lines else type(err).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _gunzip_idx_files(folder: Path) -> None:
    """Unpack train-images-idx3-ubyte.gz and friends next to themselves, once, if only the .gz is there."""
    for name in MNIST_FILES:
        plain, packed = folder / name, folder / (name + ".gz")
        if plain.exists() or not packed.exists():
            continue
        partial = plain.with_name(plain.name + ".partial")
        try:
            with gzip.open(packed, "rb") as src, open(partial, "wb") as dst:
                shutil.copyfileobj(src, dst)
        except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError
            partial.unlink(missing_ok=True)
            raise UserError(f"{packed} is not a valid gzip file ({_last_line(err)}). "
                            "Delete it and run again to download it afresh.") from None
        os.replace(partial, plain)  # only a complete file ever gets the real name


def _check_idx_file(path: Path) -> None:
    """Raise a UserError naming `path` if its size does not match what its IDX header promises."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        header = f.read(4)
        ndim = header[3] if len(header) == 4 else 0
        dims = f.read(4 * ndim)
    if len(header) < 4 or header[:2] != b"\x00\x00" or header[2] != 0x08 or not 1 <= ndim <= 3 \
            or len(dims) < 4 * ndim:
        raise UserError(f"{path} is not an MNIST IDX file of bytes. Delete it and run again to download it afresh.")
    count = 1
    for i in range(ndim):
        count *= int.from_bytes(dims[4 * i:4 * i + 4], "big")
    expected = 4 + 4 * ndim + count
    if size != expected:
        raise UserError(f"{path} is truncated or corrupt ({size} bytes, its header promises {expected}). "
                        "Delete it and run again to download it afresh.")


# --- Keeping a whole dataset in memory -------------------------------------------------------

_RANDOM_TRANSFORMS = ("Random", "AutoAugment", "RandAugment", "TrivialAugment", "AugMix", "ColorJitter",
                      "GaussianBlur", "ElasticTransform")

def to_tensor_dataset(dataset: Dataset, chunk_size: int = 10_000) -> TensorDataset:
    """Apply `dataset`'s transform to every image once and keep the results as tensors.

    torchvision's MNIST/CIFAR classes turn each image into a PIL image and back into a
    tensor every time it is read, i.e. every epoch. For small datasets that per-image work
    costs far more than the model itself on a CPU. Doing it once up front and training on
    a TensorDataset gives the same numbers, much faster; a normal DataLoader still batches
    and shuffles it.
    """
    steps = getattr(dataset, "transform", None)
    steps = steps.transforms if isinstance(steps, transforms.Compose) else [steps]
    random_steps = [type(s).__name__ for s in steps if type(s).__name__.startswith(_RANDOM_TRANSFORMS)]
    if random_steps:  # done once, a random flip or crop would be frozen: the same "random" image every epoch
        raise UserError(f"the transform has random augmentation ({', '.join(random_steps)}), which must run "
                        "afresh every epoch: use --classic-pipeline with it")
    images = _vectorised_images(dataset, chunk_size)
    if images is not None:
        return TensorDataset(images, torch.as_tensor(dataset.targets, dtype=torch.long))
    # Any other transform: run it image by image, once.
    xs, ys = [], []
    for x, y in DataLoader(dataset, batch_size=500, shuffle=False):
        xs.append(x)
        ys.append(torch.as_tensor(y))
    return TensorDataset(torch.cat(xs), torch.cat(ys).long())


def _vectorised_images(dataset: Dataset, chunk_size: int) -> torch.Tensor | None:
    """The ToTensor (+ Normalize) transform done on the whole uint8 array at once, or None if it can't be."""
    steps = getattr(dataset, "transform", None)
    steps = steps.transforms if isinstance(steps, transforms.Compose) else [steps]
    if not isinstance(steps[0], transforms.ToTensor) or len(steps) > 2 \
            or (len(steps) == 2 and not isinstance(steps[1], transforms.Normalize)) \
            or getattr(dataset, "target_transform", None) is not None or not hasattr(dataset, "data"):
        return None
    data = torch.as_tensor(dataset.data)
    if data.dtype != torch.uint8 or data.dim() not in (3, 4):
        return None
    data = data.unsqueeze(1) if data.dim() == 3 else data.permute(0, 3, 1, 2)  # to N x C x H x W
    out = torch.empty(data.shape, dtype=torch.float32)
    normalize = steps[1] if len(steps) == 2 else None
    if normalize is not None:
        channels = data.shape[1]
        mean = torch.as_tensor(normalize.mean, dtype=torch.float32).expand(channels).view(-1, 1, 1)
        std = torch.as_tensor(normalize.std, dtype=torch.float32).expand(channels).view(-1, 1, 1)
    for start in range(0, len(data), chunk_size):  # in chunks, so memory peaks at the result's size
        chunk = out[start:start + chunk_size]
        chunk.copy_(data[start:start + chunk_size]).div_(255)  # exactly what ToTensor computes
        if normalize is not None:
            chunk.sub_(mean).div_(std)  # exactly what Normalize computes
    return out


def loader_options(num_workers: int, device: torch.device | str) -> dict:
    """Keyword arguments for DataLoader that every lesson uses the same way.

    - pin_memory on CUDA: page-locked host memory makes copies to the GPU faster;
    - with worker processes, seed each one (common.seed.seed_worker) and keep them alive
      between epochs instead of starting new ones every epoch.
    """
    from common.seed import seed_worker

    options = {"num_workers": num_workers, "pin_memory": torch.device(device).type == "cuda"}
    if num_workers > 0:
        options |= {"worker_init_fn": seed_worker, "persistent_workers": True}
    return options


# --- Dataset statistics ----------------------------------------------------------------------

def channel_statistics(dataset: Dataset, batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of each channel over every pixel of `dataset`, streamed in batches.

    The dataset should yield images in [0, 1] (ToTensor, no Normalize). Sums are kept in
    float64 so 60,000 x 784 pixels add up without rounding drift.
    """
    total = total_sq = None
    count = 0
    for images, _ in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        pixels = images.double().transpose(0, 1).reshape(images.shape[1], -1)  # channels x pixels
        total = pixels.sum(1) if total is None else total + pixels.sum(1)
        total_sq = (pixels ** 2).sum(1) if total_sq is None else total_sq + (pixels ** 2).sum(1)
        count += pixels.shape[1]
    if count == 0:
        raise UserError("the dataset is empty: no statistics to compute")
    mean = total / count
    std = (total_sq / count - mean ** 2).clamp_min(0).sqrt()
    return mean.float(), std.float()
