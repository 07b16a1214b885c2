"""Your own image in, a prediction out, for the predict.py scripts of T01, T02 and T03: saved weights and photos
read safely; dark ink on paper made to look like MNIST (`preprocess_digit`, step by step; T02's clothes reuse the
first steps); the printed line and the picture."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from common.cli import UserError
from common.run import atomic_write, load, new_folder

MAX_PIXELS, MIN_SIDE = 50_000_000, 8  # more than any phone photo (decoding more could exhaust memory); too few


def newest_file(runs_dir: Path, pattern: str) -> Path | None:
    """The newest file under `runs_dir` matching `pattern` ("*/mnist_simple_nn.pt"), or None (T01, T02, T03)."""
    found = [path for path in Path(runs_dir).glob(pattern) if path.is_file()]
    return max(found, key=lambda path: path.stat().st_mtime) if found else None


def read_weights(path: Path, model_classes: Sequence[str]) -> tuple[dict, dict]:
    """The weights in `path` (a state dict, or a training checkpoint's) and its training flags ({} if none),
    read onto the CPU with weights_only=True (the file cannot run code); else one line why not (T01-T03)."""
    saved = load(path)
    args = {}
    if isinstance(saved, dict) and "model_state_dict" in saved:  # a training checkpoint (common/run.py)
        model_class, script = saved.get("model_class"), saved.get("script")
        if model_class and model_class not in model_classes:  # TrainingRun's checkpoints name both
            by = f"{script}.py" if script else "another script"
            raise UserError(f"{path} holds a {model_class} written by {by}, not {' or '.join(model_classes)}: "
                            f"use the predict.py beside {by}")
        saved, args = saved["model_state_dict"], saved.get("args") or {}
    if not isinstance(saved, dict) or not all(isinstance(value, torch.Tensor) for value in saved.values()):
        raise UserError(f"{path} does not hold a model's weights (a state dict or a training checkpoint)")
    bad = [name for name, value in saved.items() if value.is_floating_point() and not torch.isfinite(value).all()]
    if bad:
        raise UserError(f"{path} holds weights that are not finite numbers ({bad[0]}): that model diverged")
    return saved, dict(args)


def open_image(path: Path | str) -> Image.Image:
    """An image file as an upright RGB picture, or a one-line UserError saying what is wrong (T01, T02, T03)."""
    path = Path(path)
    if not path.is_file():
        raise UserError("no such file" if not path.exists() else "not a file")
    too_large = f"image too large (at most {MAX_PIXELS // 1_000_000} megapixels): shrink it first"
    try:
        with warnings.catch_warnings():  # Pillow's decompression-bomb warning becomes our one line
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)  # reads the header only
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):  # not OSErrors: named here
        raise UserError(too_large) from None
    except UnidentifiedImageError:
        raise UserError("not an image (PNG, JPEG, BMP, GIF, WebP ... that Pillow can read)") from None
    except OSError as err:
        raise UserError(f"cannot read it ({err.strerror or err})") from None
    with image:  # closes the file, whatever happens below
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise UserError(f"{too_large} ({width}x{height})")
        if min(width, height) < MIN_SIDE:
            raise UserError(f"image too small ({width}x{height}): it needs at least {MIN_SIDE}x{MIN_SIDE} pixels")
        try:
            image.load()  # decode now, so a truncated file fails here with a clear message
        except (OSError, SyntaxError, ValueError) as err:
            raise UserError(f"cannot decode it (damaged or truncated file? {str(err)[:100]})") from None
        upright = ImageOps.exif_transpose(image)  # phones save photos sideways, with "rotate me" in the EXIF data
        if upright.mode == "F" or upright.mode.startswith("I"):  # float (0..1) or 16/32-bit pixels: "RGB" would
            values = np.nan_to_num(np.asarray(upright, dtype=np.float64))  # clip them at 255 (one flat colour),
            upright = Image.fromarray(np.uint8(255 * (values - values.min()) / max(np.ptp(values), 1e-12)))  # so 0..255
        if upright.mode in ("RGBA", "LA", "PA") or (upright.mode == "P" and "transparency" in upright.info):
            # A drawing's transparent background often hides black: put it on white paper, as on screen.
            upright = Image.alpha_composite(Image.new("RGBA", upright.size, "white"), upright.convert("RGBA"))
        return upright.convert("RGB")


def to_grayscale(image: Image.Image, longest: int = 1024) -> np.ndarray:
    """Brightness alone, 0 (black) to 1 (white), shrunk to at most `longest` pixels a side (T01, T02)."""
    image = image.copy()
    image.thumbnail((longest, longest), Image.BILINEAR)  # 28x28 needs no 12 megapixels; never enlarges
    return np.asarray(image.convert("L"), dtype=np.float32) / 255.0  # "L" weighs R, G, B as the eye does


def border_pixels(gray: np.ndarray, fraction: float = 0.05) -> np.ndarray:
    """The outer 5% of each side, flattened: in a photo of a drawing, the paper (T01, T02)."""
    dy, dx = max(1, round(gray.shape[0] * fraction)), max(1, round(gray.shape[1] * fraction))
    return np.concatenate([gray[:dy].ravel(), gray[-dy:].ravel(), gray[:, :dx].ravel(), gray[:, -dx:].ravel()])


def ink_on_black(gray: np.ndarray) -> np.ndarray:
    """Light ink on black, whichever way round it came: MNIST's digits are white on black (T01, T02)."""
    return 1.0 - gray if np.median(border_pixels(gray)) > 0.5 else gray


def remove_background(ink: np.ndarray, noise_floor: float = 0.15, min_contrast: float = 0.2) -> np.ndarray:
    """Paper at exactly 0 (as in MNIST), the strongest ink at 1, faint specks and grain at 0 (T01, T02)."""
    paper = float(np.median(border_pixels(ink)))
    strong = float(np.percentile(ink, 99.9))  # the ink's level, ignoring a few hot pixels
    if strong - paper < min_contrast:
        raise UserError("no ink found: the image is (nearly) one flat colour. Is it a blank page?")
    ink = np.clip((ink - paper) / (strong - paper), 0.0, 1.0)
    ink[ink < noise_floor] = 0.0
    return ink


def crop_to_ink(ink: np.ndarray, threshold: float = 0.3) -> np.ndarray:
    """The smallest rectangle holding all clearly inked pixels: where it was stops mattering (T01, T02)."""
    rows, cols = np.flatnonzero((ink > threshold).any(axis=1)), np.flatnonzero((ink > threshold).any(axis=0))
    if len(rows) == 0:
        raise UserError("no ink found: nothing stands out from the background. Is it a blank page?")
    return ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def resize_array(values: np.ndarray, width: int, height: int) -> np.ndarray:
    """A 2-D float array resized by Pillow, each new pixel the average of those it covers (T01, T02)."""
    image = Image.fromarray(np.ascontiguousarray(values, dtype=np.float32), mode="F")
    return np.array(image.resize((width, height), Image.BILINEAR), dtype=np.float32)  # a writable copy


def fit_into_box(ink: np.ndarray, box: int = 20) -> np.ndarray:
    """Scaled so the longer side is `box` pixels, shape kept: MNIST's 20x20 box, a "1" stays thin (T01, T02)."""
    scale = box / max(ink.shape)
    width, height = max(1, round(ink.shape[1] * scale)), max(1, round(ink.shape[0] * scale))
    return np.clip(resize_array(ink, width, height), 0.0, 1.0)  # averaging gives MNIST's soft grey edges


def centre_by_mass(digit: np.ndarray, size: int = 28) -> np.ndarray:
    """The digit in a black size x size square, its centre of mass in the middle, as MNIST's (T01, T02)."""
    height, width = digit.shape
    canvas = np.zeros((size, size), dtype=np.float32)
    top, left = (size - height) // 2, (size - width) // 2
    canvas[top:top + height, left:left + width] = digit
    rows, cols = np.indices(canvas.shape)
    # Whole-pixel shifts that bring the ink's mean position to the centre, never pushing ink off the edge.
    shift_y = int(np.clip(round(size / 2 - 0.5 - (rows * canvas).sum() / canvas.sum()), -top, size - top - height))
    shift_x = int(np.clip(round(size / 2 - 0.5 - (cols * canvas).sum() / canvas.sum()), -left, size - left - width))
    return np.roll(canvas, (shift_y, shift_x), axis=(0, 1))


def preprocess_digit(image: Image.Image) -> np.ndarray:
    """A photo or drawing of one digit -> 28x28 pixels, 0..1, made the way MNIST's digits were (T01, T02)."""
    ink = ink_on_black(to_grayscale(image))  # one channel, a white digit on black
    ink = crop_to_ink(remove_background(ink))  # paper exactly 0, the digit cut out; "no ink found" on a blank page
    return centre_by_mass(fit_into_box(ink, 20), 28)  # longer side 20 pixels, centred by mass in 28x28


def naive_resize(image: Image.Image, size: int = 28) -> np.ndarray:
    """Grayscale and squash to size x size, nothing else: what most tutorials do (T01, T02 --no-preprocess)."""
    return resize_array(to_grayscale(image), size, size)


@dataclass
class Prediction:
    """One image's result: its path as given, the picture, what the model saw and the probabilities (T01-T03)."""

    path: str
    original: Image.Image
    model_input: np.ndarray  # H x W (grey) or H x W x 3 (colour), 0..1, before Normalize
    probabilities: Sequence[float]


def describe_prediction(path: str, probabilities: Sequence[float], class_names: Sequence[str]) -> str:
    """`path: best (p%; second p%, third p%)`: the line printed for one image (T01, T02, T03)."""
    best, *others = sorted(range(len(probabilities)), key=lambda i: -probabilities[i])[:3]
    runners_up = ", ".join(f"{class_names[i]} {100 * probabilities[i]:.1f}%" for i in others)
    return f"{path}: {class_names[best]} ({100 * probabilities[best]:.1f}%; {runners_up})"


def plot_predictions(predictions: Sequence[Prediction], class_names: Sequence[str], out_dir: Path | None,
                     input_title: str, show: bool = False) -> Path:
    """Save predictions.png (-2, -3 ...: never over an earlier one) in `out_dir`, or a new runs/predict-...:
    a row per image with the original, what the network saw and the probabilities (T01, T02, T03)."""
    import matplotlib.pyplot as plt  # matplotlib picks its backend: a window's if there is a display, else Agg

    fig, axes = plt.subplots(len(predictions), 3, figsize=(10, 2.6 * len(predictions)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1, 2]})
    for (ax_photo, ax_input, ax_bars), prediction in zip(axes, predictions):
        seen = np.asarray(prediction.model_input)
        ax_photo.imshow(prediction.original)
        ax_photo.set_title(Path(prediction.path).name[:40], fontsize=9)
        # "nearest": the network's pixels as the squares they are, not smoothed.
        ax_input.imshow(seen, cmap="gray" if seen.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
        ax_input.set_title(f"{input_title} ({seen.shape[1]}x{seen.shape[0]})", fontsize=9)
        for ax in (ax_photo, ax_input):
            ax.set(xticks=[], yticks=[])
        percent = [100 * float(p) for p in prediction.probabilities]
        best = int(np.argmax(percent))
        ax_bars.barh(range(len(percent)), percent, color=["tab:blue" if i == best else "tab:gray"
                                                          for i in range(len(percent))])
        ax_bars.set_yticks(range(len(percent)), [str(name) for name in class_names], fontsize=8)
        ax_bars.invert_yaxis()  # first class at the top
        ax_bars.set(xlim=(0, 100), xlabel="probability (%)")
        ax_bars.set_title(f"{class_names[best]} ({percent[best]:.1f}%)", fontsize=9)
    fig.tight_layout()
    folder, _ = new_folder(out_dir, "predict")
    path, number = folder / "predictions.png", 1
    while path.exists():
        number += 1
        path = folder / f"predictions-{number}.png"
    atomic_write(lambda f: fig.savefig(f, format="png", dpi=100), path)  # whole or not at all; one-line errors
    if show:
        plt.show()
    plt.close(fig)
    return path
