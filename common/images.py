"""Your own image in, a prediction out: the steps the predict.py scripts share (used by T01, T02, T03).

- reading a photo or drawing safely (`open_image`): one-line errors for a missing file, a file that
  is not an image, one too small or too large; phone photos turned upright; transparency on white;
- the first steps that turn a photo of dark ink on light paper into what MNIST and FashionMNIST
  look like, light ink on black (`to_grayscale`, `ink_on_black`, `remove_background`, `crop_to_ink`);
- the printed line (`describe_prediction`) and the picture (`plot_predictions`).

Finding and reading the saved weights is in common/checkpoint.py (`newest_file`, `read_weights`).

Each lesson's predict.py then does what only its own dataset needs (MNIST's 20x20 box and centre
of mass, FashionMNIST's square padding, CIFAR-10's centre crop).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from common.cli import UserError

MAX_PIXELS = 50_000_000  # 50 megapixels: more than any phone photo; decoding more could exhaust memory
MIN_SIDE = 8  # pixels: below this there is nothing to recognise
WORKING_SIDE = 1024  # pixels: the longest side a photo is shrunk to before the steps below
BORDER = 0.05  # the outer 5% of each side: where the paper (or the background) shows


def open_image(path: Path | str) -> Image.Image:
    """Read an image file as an upright RGB picture, or raise a one-line UserError saying what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise UserError("no such file" if not path.exists() else "not a file")
    try:
        image = Image.open(path)
    except UnidentifiedImageError:
        raise UserError("not an image (PNG, JPEG, BMP, GIF, WebP ... that Pillow can read)") from None
    except OSError as err:
        raise UserError(f"cannot read it ({err.strerror or err})") from None
    with image:  # closes the file, whatever happens below
        width, height = image.size  # read from the header: nothing decoded yet
        if width * height > MAX_PIXELS:
            raise UserError(f"image too large ({width}x{height}, {width * height / 1e6:.0f} megapixels; "
                            f"at most {MAX_PIXELS // 1_000_000}): shrink it first")
        if min(width, height) < MIN_SIDE:
            raise UserError(f"image too small ({width}x{height}): it needs at least {MIN_SIDE}x{MIN_SIDE} pixels")
        try:
            image.load()  # decode now, so a truncated file fails here with a clear message
        except (OSError, SyntaxError, ValueError) as err:
            raise UserError(f"cannot decode it (damaged or truncated file? {str(err)[:100]})") from None
        # Phones save a photo sideways and record "rotate me" in its EXIF data; honour it, or the
        # network sees a digit lying on its side.
        upright = ImageOps.exif_transpose(image)
        if upright.mode in ("RGBA", "LA", "PA") or (upright.mode == "P" and "transparency" in upright.info):
            # Paint programs save drawings with a transparent background whose hidden colour is often
            # black: put the drawing on white paper, as it looks on screen.
            upright = upright.convert("RGBA")
            paper = Image.new("RGBA", upright.size, (255, 255, 255, 255))
            upright = Image.alpha_composite(paper, upright)
        return upright.convert("RGB")


def shrink_for_work(image: Image.Image, longest: int = WORKING_SIDE) -> Image.Image:
    """A copy no longer than `longest` pixels on its longest side (a 28x28 result needs no 12-megapixel input)."""
    image = image.copy()
    image.thumbnail((longest, longest), Image.BILINEAR)  # keeps the aspect ratio; never enlarges
    return image


def to_grayscale(image: Image.Image) -> np.ndarray:
    """Brightness alone, 0 (black) to 1 (white): MNIST and FashionMNIST have one channel, not three."""
    # PIL's "L" mode weighs red, green and blue as the eye does (0.299 R + 0.587 G + 0.114 B).
    return np.asarray(image.convert("L"), dtype=np.float32) / 255.0


def border_pixels(gray: np.ndarray, fraction: float = BORDER) -> np.ndarray:
    """The pixels of the outer `fraction` of each side, flattened: in a photo of a drawing, the paper."""
    height, width = gray.shape
    dy, dx = max(1, round(height * fraction)), max(1, round(width * fraction))
    return np.concatenate([gray[:dy].ravel(), gray[-dy:].ravel(), gray[:, :dx].ravel(), gray[:, -dx:].ravel()])


def ink_on_black(gray: np.ndarray) -> np.ndarray:
    """Light ink on a dark background, whichever way round the picture came.

    MNIST digits (and FashionMNIST clothes) are white on black: the network learnt that bright
    pixels are the digit. A pen on paper is the opposite, so a light border means "invert".
    """
    if np.median(border_pixels(gray)) > 0.5:
        return 1.0 - gray
    return gray


def remove_background(ink: np.ndarray, noise_floor: float = 0.15, min_contrast: float = 0.2) -> np.ndarray:
    """Paper at exactly 0 and the strongest ink at 1; faint specks (noise, shadows, paper grain) set to 0.

    A photographed page is never pure white: after inverting it is a dark grey with noise, while
    MNIST's background is exactly 0. Raises UserError when nothing stands out from the paper.
    """
    paper = float(np.median(border_pixels(ink)))
    strong = float(np.percentile(ink, 99.9))  # the ink's level, ignoring a few hot pixels
    if strong - paper < min_contrast:
        raise UserError("no ink found: the image is (nearly) one flat colour. Is it a blank page?")
    ink = np.clip((ink - paper) / (strong - paper), 0.0, 1.0)
    ink[ink < noise_floor] = 0.0
    return ink


def crop_to_ink(ink: np.ndarray, threshold: float = 0.3) -> np.ndarray:
    """The smallest rectangle holding every clearly inked pixel: where the digit is in the photo does not matter."""
    rows = np.flatnonzero((ink > threshold).any(axis=1))
    cols = np.flatnonzero((ink > threshold).any(axis=0))
    if len(rows) == 0:
        raise UserError("no ink found: nothing stands out from the background. Is it a blank page?")
    return ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def resize_array(values: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize a 2-D float array with Pillow, averaging over the pixels each new pixel covers (anti-aliased)."""
    image = Image.fromarray(np.ascontiguousarray(values, dtype=np.float32), mode="F")
    return np.array(image.resize((width, height), Image.BILINEAR), dtype=np.float32)  # a writable copy


@dataclass
class Prediction:
    """One image's result: its path as given, the picture, what the model saw (0..1) and the probabilities."""

    path: str
    original: Image.Image
    model_input: np.ndarray  # H x W (grey) or H x W x 3 (colour), 0..1, as the network saw it before Normalize
    probabilities: Sequence[float]


def describe_prediction(path: str, probabilities: Sequence[float], class_names: Sequence[str]) -> str:
    """`path: best (p%; second p%, third p%)`: the line a predict script prints for one image."""
    order = sorted(range(len(probabilities)), key=lambda i: -probabilities[i])
    best, *others = order[:3]
    runners_up = ", ".join(f"{class_names[i]} {100 * probabilities[i]:.1f}%" for i in others)
    return f"{path}: {class_names[best]} ({100 * probabilities[best]:.1f}%; {runners_up})"


def plot_predictions(predictions: Sequence[Prediction], class_names: Sequence[str], path: Path,
                     input_title: str = "what the network saw", show: bool = False) -> Path:
    """Save a figure with one row per image: the original, what the network saw, and the 10 probabilities."""
    import matplotlib.pyplot as plt

    from common.plots import save_figure

    fig, axes = plt.subplots(len(predictions), 3, figsize=(10, 2.6 * len(predictions)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1, 2]})
    for (ax_photo, ax_input, ax_bars), prediction in zip(axes, predictions):
        ax_photo.imshow(prediction.original)
        ax_photo.set_title(Path(prediction.path).name[:40], fontsize=9)
        seen = np.asarray(prediction.model_input)
        height, width = seen.shape[:2]
        # "nearest": show the network's pixels as the squares they are, not smoothed.
        ax_input.imshow(seen, cmap="gray" if seen.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
        ax_input.set_title(f"{input_title} ({width}x{height})", fontsize=9)
        for ax in (ax_photo, ax_input):
            ax.set_xticks([])
            ax.set_yticks([])
        probabilities = [100 * float(p) for p in prediction.probabilities]
        best = max(range(len(probabilities)), key=probabilities.__getitem__)
        colours = ["tab:blue" if i == best else "tab:gray" for i in range(len(probabilities))]
        ax_bars.barh(range(len(probabilities)), probabilities, color=colours)
        ax_bars.set_yticks(range(len(probabilities)), [str(name) for name in class_names], fontsize=8)
        ax_bars.invert_yaxis()  # first class at the top
        ax_bars.set_xlim(0, 100)
        ax_bars.set_xlabel("probability (%)", fontsize=8)
        ax_bars.set_title(f"{class_names[best]} ({probabilities[best]:.1f}%)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, show)


def figure_path(out_dir: Path) -> Path:
    """`out_dir/predictions.png`, or predictions-2.png, -3 ... if it exists: never overwrite an earlier picture."""
    path, number = Path(out_dir) / "predictions.png", 1
    while path.exists():
        number += 1
        path = Path(out_dir) / f"predictions-{number}.png"
    return path
