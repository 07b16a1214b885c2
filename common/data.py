"""Datasets: where they live, fetching them, and one clear line when they are missing or damaged (T01, T02, T03, T05).

`download(name, data_dir)` returns torchvision's `root` folder once the files are there and sound; the lesson
reads them with torchvision itself: `datasets.MNIST(root, train=True)`. One data folder serves every lesson, laid
out as torchvision lays it out (<data-dir>/MNIST/raw/..., cifar-10-batches-py/...): files already there are found.
"""

from __future__ import annotations

import contextlib
import gzip
import math
import os
import shutil
import time
import zlib
from pathlib import Path

import numpy as np
from torchvision import datasets

from common.cli import REPO_ROOT, UserError

DATA_DIR_ENV = "PYTORCH_TUTORIAL_DATA_DIR"
MNIST_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte"]
# name: (torchvision class, its folder under the data folder)
DATASETS = {"mnist": (datasets.MNIST, "MNIST/raw"), "fashion-mnist": (datasets.FashionMNIST, "FashionMNIST/raw"),
            "cifar10": (datasets.CIFAR10, datasets.CIFAR10.base_folder)}
AGAIN = "Delete it and run again to download it afresh."


def resolve_data_dir(data_dir: Path | str | None = None) -> Path:
    """`data_dir` if given, else $PYTORCH_TUTORIAL_DATA_DIR, else <repo>/data: never the current folder."""
    if data_dir is None:
        data_dir = os.environ.get(DATA_DIR_ENV) or REPO_ROOT / "data"
    return Path(data_dir).expanduser().resolve()


def download(name: str, data_dir: Path | str | None = None) -> Path:
    """torchvision's root folder for dataset `name`, with its files present (downloaded if need be) and checked:
    a missing dataset without network, a damaged file or an unreadable folder is a one-line UserError that says
    what to do, not a traceback from inside torchvision or a crash mid-training (a label of 200 loads, then fails)."""
    cls, folder_name = DATASETS[name]
    root = resolve_data_dir(data_dir)
    folder = root / folder_name
    try:
        if folder.is_dir():
            os.listdir(folder)  # an unreadable folder fails here, not as "dataset missing" below
        if name != "cifar10":
            _gunzip(folder)  # a reader may have dropped the .gz files in by hand
        cifar = datasets.CIFAR10.train_list + datasets.CIFAR10.test_list + [(datasets.CIFAR10.meta["filename"], "")]
        if not all((folder / f).is_file() for f in ([f for f, _ in cifar] if name == "cifar10" else MNIST_FILES)):
            try:
                cls(str(root), train=True, download=True)  # torchvision downloads (and checks) both halves
            except Exception as err:  # no network, a blocked mirror, a truncated download...
                raise UserError(f"{cls.__name__} is not in {folder} and the download failed ({_last_line(err)}). "
                                f"{_how_to_get(name, root)}") from None
        if name == "cifar10":
            _check_cifar(folder)
        else:
            _check_mnist(folder)
    except PermissionError as err:
        raise UserError(f"cannot read {err.filename or folder}: permission denied") from None
    return root


def _how_to_get(name: str, root: Path) -> str:
    cls, folder = DATASETS[name]
    if name == "cifar10":
        return (f"Download {cls.url} and unpack it in {root} (it makes {folder}/); "
                f"or use --data-dir / ${DATA_DIR_ENV}.")
    mirror = next((m for m in cls.mirrors if m.startswith("https://")), cls.mirrors[0])
    return (f"Download {', '.join(f + '.gz' for f in MNIST_FILES)} from {mirror} into {root / folder}, "
            f"or point --data-dir / ${DATA_DIR_ENV} at a folder that has them.")


def _last_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return (lines[-1] if lines else type(err).__name__)[:160]


def _gunzip(folder: Path) -> None:
    """Unpack train-images-idx3-ubyte.gz and friends next to themselves, if only the .gz is there. Each process
    writes its own `<name>.<pid>.partial` and renames it into place: two lessons started together never see or
    clobber a half-written file."""
    for name in MNIST_FILES if folder.is_dir() else []:
        for stale in folder.glob(name + ".*partial"):  # left by a process killed mid-unpack an hour ago or more
            with contextlib.suppress(OSError):  # (a live unpack takes a second; a pid says nothing across machines)
                if time.time() - stale.stat().st_mtime > 3600:
                    stale.unlink()
        plain, packed = folder / name, folder / (name + ".gz")
        if plain.exists() or not packed.exists():
            continue
        partial = folder / f"{name}.{os.getpid()}.partial"
        try:
            with gzip.open(packed, "rb") as src, open(partial, "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.replace(partial, plain)  # atomic: only a complete file ever gets the real name
        except (OSError, EOFError, zlib.error) as err:
            partial.unlink(missing_ok=True)
            if plain.exists():
                continue  # another process finished the same file first: use theirs
            if isinstance(err, PermissionError) and err.filename == str(packed):
                raise
            if getattr(err, "errno", None) is not None:  # the disk, not the file: full, read-only, ...
                raise UserError(f"cannot unpack {packed.name} into {plain}: {err.strerror or err}") from None
            raise UserError(f"{packed} is not a valid gzip file ({_last_line(err)}). {AGAIN}") from None


def _idx_shape(path: Path) -> tuple[int, ...]:
    """The shape an IDX file's header promises, or a UserError naming `path` if the file does not keep it."""
    with open(path, "rb") as f:
        header = f.read(4)
        ndim = header[3] if len(header) == 4 else 0
        dims = f.read(4 * ndim)
    if header[:3] != b"\x00\x00\x08" or not 1 <= ndim <= 3 or len(dims) < 4 * ndim:
        raise UserError(f"{path} is not an MNIST IDX file of bytes. {AGAIN}")
    shape = tuple(int.from_bytes(dims[4 * i:4 * i + 4], "big") for i in range(ndim))
    expected = 4 + 4 * ndim + math.prod(shape)  # Python ints: a garbage header cannot overflow
    size = path.stat().st_size
    if size != expected:
        raise UserError(f"{path} is truncated or corrupt ({size} bytes, its header promises {expected}). {AGAIN}")
    return shape


def _check_mnist(folder: Path) -> None:
    """What torchvision does not check: N x 28 x 28 images, N labels, every label 0 to 9."""
    for part in ("train", "t10k"):
        images, labels = folder / f"{part}-images-idx3-ubyte", folder / f"{part}-labels-idx1-ubyte"
        image_shape, label_shape = _idx_shape(images), _idx_shape(labels)
        if len(image_shape) != 3 or image_shape[1:] != (28, 28):
            raise UserError(f"{images} holds images of shape {' x '.join(map(str, image_shape))}, "
                            f"not N x 28 x 28. {AGAIN}")
        if len(label_shape) != 1:
            raise UserError(f"{labels} has {len(label_shape)} dimensions; a labels file has 1. {AGAIN}")
        if label_shape[0] != image_shape[0]:
            raise UserError(f"{labels} has {label_shape[0]} labels but {images.name} has {image_shape[0]} "
                            f"images: they must match. {AGAIN}")
        values = np.frombuffer(labels.read_bytes()[8:], dtype=np.uint8)  # one byte per label after the header
        wrong = np.flatnonzero(values > 9)
        if len(wrong):
            raise UserError(f"{labels} has label {values[wrong[0]]} at position {wrong[0]}; labels must be "
                            f"0 to 9. {AGAIN}")


def _check_cifar(folder: Path) -> None:
    """torchvision's own MD5 check of every CIFAR-10 file, failing with one line that names the bad ones."""
    cls = datasets.CIFAR10
    files = cls.train_list + cls.test_list + [(cls.meta["filename"], cls.meta["md5"])]
    bad = [f for f, md5 in files if not datasets.cifar.check_integrity(str(folder / f), md5)]
    if bad:
        raise UserError(f"CIFAR-10 file(s) {', '.join(bad)} in {folder} failed torchvision's MD5 check "
                        f"(corrupt or incomplete). Delete {folder} and run again to download it afresh.")
