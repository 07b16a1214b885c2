"""Datasets: where they live, how they are fetched, and how to keep them in memory as tensors.

One data folder serves every lesson. It is torchvision's `root`, laid out the way
torchvision lays it out, so files a reader already downloaded are found:

    <data-dir>/MNIST/raw/train-images-idx3-ubyte ...
    <data-dir>/FashionMNIST/raw/train-images-idx3-ubyte ...
    <data-dir>/cifar-10-batches-py/data_batch_1 ...
"""

from __future__ import annotations

import errno
import gzip
import math
import os
import pickle
import shutil
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset, default_collate
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

    try:
        _check_folder_readable(folder)
        if name == "cifar10":
            present = all((folder / f).is_file() for f, _ in info.cls.train_list + info.cls.test_list)
        else:
            _gunzip_idx_files(folder)  # a reader may have dropped the .gz files in by hand
            present = all((folder / f).is_file() for f in MNIST_FILES)
    except PermissionError as err:
        raise UserError(_cannot_read(err, folder)) from None

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
        if name != "cifar10":
            _check_mnist_files(folder)  # bad labels would otherwise crash training, not loading
        dataset = info.cls(str(root), train=train, transform=transform, download=False)
    except UserError:
        raise
    except PermissionError as err:
        raise UserError(_cannot_read(err, folder)) from None
    except ValueError as err:
        # For CIFAR-10, numpy's reshape fails after torchvision has read every batch; find the bad one.
        problem = _cifar_batch_problem(folder, train) if name == "cifar10" else None
        raise UserError(problem or _damaged_message(name, root, err)) from None
    except Exception as err:
        raise UserError(_damaged_message(name, root, err)) from None
    if name == "cifar10":
        _check_cifar_labels(dataset, folder, train)
    return dataset


def _check_folder_readable(folder: Path) -> None:
    """List `folder` (if it exists) so an unreadable one fails here, not as "dataset missing" later."""
    if folder.is_dir():
        os.listdir(folder)  # raises PermissionError when we may not read it


def _cannot_read(err: PermissionError, folder: Path) -> str:
    return f"cannot read {err.filename or folder}: permission denied"


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


# A killed process can leave its half-written `<name>.<pid>.partial` behind. We remove such files once
# they are an hour old rather than checking whether their pid is still alive: a pid says nothing about a
# process on another machine sharing the folder, and a live unpack (a second at most) never gets that old.
STALE_PARTIAL_SECONDS = 3600


def _gunzip_idx_files(folder: Path) -> None:
    """Unpack train-images-idx3-ubyte.gz and friends next to themselves, once, if only the .gz is there.

    Several processes may unpack the same folder at once (two lessons started together): each writes
    its own temporary file and renames it into place, so none ever sees or clobbers a half-written file.
    """
    if not folder.is_dir():
        return
    _remove_stale_partials(folder)
    for name in MNIST_FILES:
        plain, packed = folder / name, folder / (name + ".gz")
        if plain.exists() or not packed.exists():
            continue
        partial = folder / f"{name}.{os.getpid()}.partial"  # one name per process: no two share it
        with gzip.open(packed, "rb") as src:  # a PermissionError here is reported by load_dataset
            try:
                with open(partial, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                os.replace(partial, plain)  # atomic: only a complete file ever gets the real name
            except (OSError, EOFError, zlib.error) as err:
                partial.unlink(missing_ok=True)  # never leave a half-written file behind
                if plain.exists():
                    continue  # another process finished the same file first: use theirs
                raise UserError(_unpack_error(err, packed, plain)) from None


def _unpack_error(err: Exception, packed: Path, plain: Path) -> str:
    """One line that says why unpacking `packed` into `plain` failed."""
    code = getattr(err, "errno", None)
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):  # EDQUOT: over the disk quota
        return f"no space left on the device while writing {plain}: free some space and run again"
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        reason = (err.strerror or os.strerror(code)).lower()
        return (f"cannot write {plain}: {reason}. Make {plain.parent} writable, "
                f"or unpack {packed.name} there yourself")
    if code is not None:  # some other error of the disk or file system
        return f"cannot unpack {packed} into {plain}: {err.strerror or err}"
    # gzip.BadGzipFile (no errno), EOFError or zlib.error: the .gz itself is damaged
    return f"{packed} is not a valid gzip file ({_last_line(err)}). Delete it and run again to download it afresh."


def _remove_stale_partials(folder: Path) -> None:
    """Delete temporary `*.partial` files that a killed unpack left behind (see STALE_PARTIAL_SECONDS)."""
    now = time.time()
    for name in MNIST_FILES:
        for partial in folder.glob(name + ".*partial"):
            try:
                if now - partial.stat().st_mtime > STALE_PARTIAL_SECONDS:
                    partial.unlink()
            except OSError:
                pass  # gone already, or a read-only folder: leftovers there do no harm


def _idx_shape(path: Path) -> tuple[int, ...]:
    """The shape an IDX file's header promises; a UserError naming `path` if its size does not match."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        header = f.read(4)
        ndim = header[3] if len(header) == 4 else 0
        dims = f.read(4 * ndim)
    if len(header) < 4 or header[:2] != b"\x00\x00" or header[2] != 0x08 or not 1 <= ndim <= 3 \
            or len(dims) < 4 * ndim:
        raise UserError(f"{path} is not an MNIST IDX file of bytes. Delete it and run again to download it afresh.")
    shape = tuple(int.from_bytes(dims[4 * i:4 * i + 4], "big") for i in range(ndim))
    expected = 4 + 4 * ndim + math.prod(shape)  # Python ints: a garbage header can't overflow
    if size != expected:
        raise UserError(f"{path} is truncated or corrupt ({size} bytes, its header promises {expected}). "
                        "Delete it and run again to download it afresh.")
    return shape


def _check_mnist_files(folder: Path) -> None:
    """Check what torchvision does not: N x 28 x 28 images, N labels, every label 0 to 9.

    Without this, a bad file gets through loading and crashes training later with an error
    that names neither the file nor the problem ("Target 200 is out of bounds").
    """
    again = "Delete it and run again to download it afresh."
    for prefix in ("train", "t10k"):
        images_path, labels_path = folder / f"{prefix}-images-idx3-ubyte", folder / f"{prefix}-labels-idx1-ubyte"
        images_shape, labels_shape = _idx_shape(images_path), _idx_shape(labels_path)
        if len(images_shape) != 3 or images_shape[1:] != (28, 28):
            shape = " x ".join(map(str, images_shape))
            raise UserError(f"{images_path} holds images of shape {shape}, not N x 28 x 28. {again}")
        if len(labels_shape) != 1:
            raise UserError(f"{labels_path} has {len(labels_shape)} dimensions; a labels file has 1. {again}")
        if labels_shape[0] != images_shape[0]:
            raise UserError(f"{labels_path} has {labels_shape[0]} labels but {images_path.name} has "
                            f"{images_shape[0]} images: they must match. {again}")
        with open(labels_path, "rb") as f:  # one byte per label after the 8-byte header: 60 KB at most
            labels = np.frombuffer(f.read()[8:], dtype=np.uint8)
        wrong = np.flatnonzero(labels > 9)
        if len(wrong):
            raise UserError(f"{labels_path} has label {labels[wrong[0]]} at position {wrong[0]}; "
                            f"labels must be 0 to 9. {again}")


def _cifar_files(train: bool) -> list[str]:
    cls = datasets.CIFAR10
    return [f for f, _ in (cls.train_list if train else cls.test_list)]


def _check_cifar_labels(dataset: Dataset, folder: Path, train: bool) -> None:
    """After torchvision has loaded CIFAR-10: one label per image, each 0 to 9, or a UserError naming the batch."""
    labels = np.asarray(dataset.targets)
    if len(labels) == len(dataset.data) and (len(labels) == 0 or 0 <= labels.min() <= labels.max() <= 9):
        return
    problem = _cifar_batch_problem(folder, train)
    raise UserError(problem or f"the CIFAR-10 batches in {folder} do not have one label 0 to 9 per image. "
                    f"Delete {folder} and run again to download it afresh.")


def _cifar_batch_problem(folder: Path, train: bool) -> str | None:
    """Read each CIFAR-10 batch again and say what is wrong with the first bad one, or None.

    Only called after torchvision has read these same files, and only when something is wrong,
    so the happy path pays nothing for it.
    """
    for name in _cifar_files(train):
        path = folder / name
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="latin1")
        images = np.asarray(batch.get("data"))
        labels = np.asarray(batch.get("labels", batch.get("fine_labels", [])))
        if images.ndim != 2 or images.shape[1] != 3072:
            size = images.shape[1] if images.ndim == 2 else "?"
            problem = f"its images are {size} bytes each, not 3072 (32 x 32 x 3)"
        elif len(labels) != len(images):
            problem = f"it has {len(labels)} labels for {len(images)} images"
        elif len(labels) and not 0 <= labels.min() <= labels.max() <= 9:
            problem = f"it has label {labels[(labels < 0) | (labels > 9)][0]}; labels must be 0 to 9"
        else:
            continue
        return f"CIFAR-10 batch {path} is damaged: {problem}. Delete {folder} and run again to download it afresh."
    return None


# --- Keeping a whole dataset in memory -------------------------------------------------------

_RANDOM_TRANSFORMS = ("Random", "AutoAugment", "RandAugment", "TrivialAugment", "AugMix", "ColorJitter",
                      "GaussianBlur", "ElasticTransform")

class InMemoryDataset(TensorDataset):
    """A TensorDataset that hands the DataLoader a whole batch with one indexing operation.

    A DataLoader normally asks for one image at a time (`dataset[i]`, 64 Python calls for a batch
    of 64) and then stacks them (its `collate_fn`). If the dataset has `__getitems__(indices)`,
    the DataLoader calls that once per batch instead: here `images[indices], labels[indices]`,
    one operation per tensor. The same images in the same order, so the same numbers; for T01's
    small network the 64 calls cost more than a tenth of each training step. `collate()`, which
    `loader_options()` gives every lesson's DataLoader, lets such a ready batch through as it is.
    Used by T01, T02, T03 and T05 (through `to_tensor_dataset()`).
    """

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        rows = torch.as_tensor(indices, device=self.tensors[0].device)
        return Batch(tensor[rows] for tensor in self.tensors)

    def to(self, device: torch.device | str) -> InMemoryDataset:
        """The same dataset with its tensors on `device`."""
        return InMemoryDataset(*(tensor.to(device) for tensor in self.tensors))

    def nbytes(self) -> int:
        """Memory taken by the tensors, in bytes."""
        return sum(tensor.element_size() * tensor.nelement() for tensor in self.tensors)


class Batch(Sequence):
    """Samples fetched together (from InMemoryDataset.__getitems__), already stacked into tensors.

    `collate()` takes the stacked tensors as they are. Any other collate_fn (DataLoader's default,
    if you leave out loader_options) sees an ordinary sequence of (image, label) samples and
    stacks them again: slower, the same result.
    """

    def __init__(self, tensors: Iterable[torch.Tensor]) -> None:
        self.tensors = tuple(tensors)

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        return tuple(tensor[i] for tensor in self.tensors)


def collate(samples: Batch | list) -> list:
    """DataLoader's collate_fn: a Batch's tensors pass straight through; other samples are stacked as usual."""
    if isinstance(samples, Batch):
        return list(samples.tensors)  # a list, as default_collate gives for (image, label) samples
    return default_collate(samples)


def to_tensor_dataset(dataset: Dataset, chunk_size: int = 10_000) -> InMemoryDataset:
    """Apply `dataset`'s transform to every image once and keep the results as tensors.

    torchvision's MNIST/CIFAR classes turn each image into a PIL image and back into a
    tensor every time it is read, i.e. every epoch. For small datasets that per-image work
    costs far more than the model itself on a CPU. Doing it once up front and training on
    the tensors gives the same numbers, much faster; a normal DataLoader still batches and
    shuffles them (a whole batch at a time: see InMemoryDataset).
    """
    steps = getattr(dataset, "transform", None)
    steps = steps.transforms if isinstance(steps, transforms.Compose) else [steps]
    random_steps = [type(s).__name__ for s in steps if type(s).__name__.startswith(_RANDOM_TRANSFORMS)]
    if random_steps:  # done once, a random flip or crop would be frozen: the same "random" image every epoch
        raise UserError(f"the transform has random augmentation ({', '.join(random_steps)}), which must run "
                        "afresh every epoch: use --classic-pipeline with it")
    images = _vectorised_images(dataset, chunk_size)
    if images is not None:
        return InMemoryDataset(images, torch.as_tensor(dataset.targets, dtype=torch.long))
    # Any other transform: run it image by image, once.
    xs, ys = [], []
    for x, y in DataLoader(dataset, batch_size=500, shuffle=False):
        xs.append(x)
        ys.append(torch.as_tensor(y))
    return InMemoryDataset(torch.cat(xs), torch.cat(ys).long())


def keep_on_gpu_if_it_fits(datasets: Sequence[Dataset], device: torch.device | str,
                           num_workers: int = 0) -> list[Dataset]:
    """On CUDA, move in-memory datasets into GPU memory when they fit with room to spare.

    Then every batch is cut out of GPU memory and nothing is copied from the host per batch.
    "Room to spare": together under a quarter of the free GPU memory, leaving the rest for the
    model, its gradients and the activations. Otherwise (or on the CPU or MPS, or with worker
    processes, which can't share GPU tensors) the datasets stay where they are; on CUDA the
    batches then come through pinned host memory (see loader_options). Used by T01, T02, T03.
    """
    device = torch.device(device)
    if device.type != "cuda" or num_workers > 0 or not all(isinstance(d, InMemoryDataset) for d in datasets):
        return list(datasets)
    needed = sum(d.nbytes() for d in datasets)
    free, _ = torch.cuda.mem_get_info(device)
    if not fits_on_gpu(needed, free):
        print(f"The data ({needed / 2**20:,.0f} MB) stays in host memory: more than a quarter of the "
              f"{free / 2**20:,.0f} MB free on the GPU")
        return list(datasets)
    print(f"The data ({needed / 2**20:,.0f} MB) is kept on the GPU ({free / 2**20:,.0f} MB free): "
          "no batch is copied from the host")
    return [d.to(device) for d in datasets]


def fits_on_gpu(needed_bytes: int, free_bytes: int) -> bool:
    """Whether `needed_bytes` of data leave the GPU room to train: under a quarter of what is free."""
    return needed_bytes < free_bytes / 4


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


def loader_options(num_workers: int, device: torch.device | str, dataset: Dataset | None = None) -> dict:
    """Keyword arguments for DataLoader that every lesson uses the same way.

    - collate_fn=collate: whole batches from InMemoryDataset pass straight through;
    - pin_memory on CUDA when the data is in host memory: page-locked memory makes the copies
      to the GPU faster (data already on the GPU, see keep_on_gpu_if_it_fits, needs no copy);
    - with worker processes, seed each one (common.seed.seed_worker) and keep them alive
      between epochs instead of starting new ones every epoch.
    """
    from common.seed import seed_worker

    on_gpu = isinstance(dataset, InMemoryDataset) and dataset.tensors[0].device.type != "cpu"
    options = {"num_workers": num_workers, "collate_fn": collate,
               "pin_memory": torch.device(device).type == "cuda" and not on_gpu}
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
