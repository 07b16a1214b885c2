"""T01 · Your own handwriting: classify a photo or drawing of a digit with the SimpleNN you trained.

    python T01_mnist_nn/mnist_nn.py --save-model          # train first: writes runs/mnist_nn-.../mnist_simple_nn.pt
    python T01_mnist_nn/predict.py my_seven.png           # one line per image, and runs/predict-.../predictions.png
    python T01_mnist_nn/predict.py photos/*.jpg --model runs/mnist_nn-20250101-120000/mnist_simple_nn.pt
    python T01_mnist_nn/predict.py my_seven.png --no-preprocess   # the naive 28x28 resize, to compare

A network answers well only on inputs made the way its training data was made. MNIST digits
are white on black, cropped to the ink, fitted into a 20x20 box and centred by their centre of
mass in a 28x28 image. A photo of a dark digit on white paper, merely shrunk to 28x28, looks
nothing like that (a dark frame around a faint grey digit), and the answer is mostly a guess.
preprocess() below repeats MNIST's own steps, and predictions.png shows what the network saw.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so `common/` and the lessons import from any folder
try:
    from common import cli, images, plots
    from common.checkpoint import load_weights, newest_file, read_weights
    from common.device import add_device_arguments, device_from_args
    from T01_mnist_nn.mnist_nn import MNIST_MEAN, MNIST_STD, SimpleNN
except ModuleNotFoundError as err:
    if not (err.name or "").startswith(("common", "T01_mnist_nn")):
        raise
    sys.exit("error: this script needs the repository's common/ folder and T01_mnist_nn/mnist_nn.py "
             "(clone the whole repository)")

WEIGHTS_FILE = "mnist_simple_nn.pt"  # what `mnist_nn.py --save-model` writes in its run folder
DIGITS = [str(digit) for digit in range(10)]


# --- Preprocessing: make a photo look like an MNIST digit -------------------------------------
# The first steps (images.to_grayscale, .ink_on_black, .remove_background, .crop_to_ink) are in
# common/images.py, because T02's clothes need them too. The last three are MNIST's own.

def fit_into_box(ink: np.ndarray, box: int = 20) -> np.ndarray:
    """Scale the cropped digit so its longer side is `box` pixels, keeping its shape.

    MNIST did exactly this (20x20, aspect ratio kept): a "1" stays tall and thin instead of
    being stretched into a block. Scaling averages pixels, which gives the soft grey edges
    MNIST's strokes have.
    """
    height, width = ink.shape
    scale = box / max(height, width)
    new_width, new_height = max(1, round(width * scale)), max(1, round(height * scale))
    return np.clip(images.resize_array(ink, new_width, new_height), 0.0, 1.0)


def centre_by_mass(digit: np.ndarray, size: int = 28) -> np.ndarray:
    """Place the digit in a size x size black square so that its centre of mass is at the centre.

    MNIST centred by the centre of mass, not by the box: a "7" sits a little left of the middle
    of its box, and the network learnt digits placed that way.
    """
    height, width = digit.shape
    canvas = np.zeros((size, size), dtype=np.float32)
    top, left = (size - height) // 2, (size - width) // 2
    canvas[top:top + height, left:left + width] = digit
    rows, cols = np.indices(canvas.shape)
    mass = canvas.sum()
    # Shift by whole pixels so the weighted mean position of the ink lands at (size / 2, size / 2),
    # but never so far that ink falls off the edge.
    shift_y = int(np.clip(round(size / 2 - 0.5 - (rows * canvas).sum() / mass), -top, size - top - height))
    shift_x = int(np.clip(round(size / 2 - 0.5 - (cols * canvas).sum() / mass), -left, size - left - width))
    return np.roll(canvas, (shift_y, shift_x), axis=(0, 1))


def preprocess(image: Image.Image) -> np.ndarray:
    """A photo or drawing of one digit -> a 28x28 array, 0..1, made the way MNIST's digits were made."""
    gray = images.to_grayscale(images.shrink_for_work(image))  # one channel, 0 = black, 1 = white
    ink = images.ink_on_black(gray)  # white digit on black, as in MNIST
    ink = images.remove_background(ink)  # paper exactly 0, noise gone; "no ink found" on a blank page
    ink = images.crop_to_ink(ink)  # where the digit was in the photo no longer matters
    digit = fit_into_box(ink, 20)  # longer side 20 pixels, shape kept
    return centre_by_mass(digit, 28)  # 28x28, centred as MNIST's digits are


def naive_resize(image: Image.Image) -> np.ndarray:
    """Grayscale and squash to 28x28, nothing else: what most tutorials do, for comparison (--no-preprocess)."""
    return images.resize_array(images.to_grayscale(image), 28, 28)


def to_model_input(pixels: np.ndarray) -> torch.Tensor:
    """28x28 pixels 0..1 -> a 1x1x28x28 tensor normalised exactly as mnist_nn.py normalised its training data."""
    return ((torch.from_numpy(pixels) - MNIST_MEAN) / MNIST_STD).reshape(1, 1, 28, 28)


# --- The model --------------------------------------------------------------------------------

def find_weights(runs_dir: Path) -> Path:
    """The newest saved SimpleNN under `runs_dir` (weights first, else a training checkpoint of mnist_nn.py)."""
    path = newest_file(runs_dir, f"*/{WEIGHTS_FILE}") or newest_file(runs_dir, "mnist_nn-*/checkpoint.pt")
    if path is None:
        raise cli.UserError(f"no trained SimpleNN found under {runs_dir}: train one with "
                            "`python T01_mnist_nn/mnist_nn.py --save-model`, or pass --model PATH")
    return path


def load_model(path: Path, device: torch.device) -> SimpleNN:
    """SimpleNN with the weights in `path` (mnist_simple_nn.pt or a checkpoint.pt), in evaluation mode."""
    state_dict, _ = read_weights(path, ["SimpleNN"])
    model = SimpleNN()
    load_weights(model, state_dict, path)  # a clear error if these are another model's weights
    return model.to(device).eval()  # eval(): no training-only behaviour while predicting


def predict(model: SimpleNN, device: torch.device, pixels: np.ndarray) -> list[float]:
    """The ten digit probabilities for one 28x28 image."""
    with torch.no_grad():  # predicting needs no gradients
        log_probabilities = model(to_model_input(pixels).to(device))
    return log_probabilities.exp()[0].tolist()  # SimpleNN returns log-probabilities; exp() gives 0..1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = cli.ArgumentParser(description="T01: classify your own images of handwritten digits with SimpleNN.")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...), one digit each")
    parser.add_argument("--model", type=Path, default=None, metavar="PATH",
                        help=f"{WEIGHTS_FILE} from `mnist_nn.py --save-model`, or a checkpoint.pt "
                             "(default: the newest one under runs/)")
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="folder for predictions.png (default: a new folder runs/predict-<date>-<time>)")
    parser.add_argument("--no-preprocess", action="store_true",
                        help="only grayscale and resize to 28x28, to see how much the preprocessing matters")
    parser.add_argument("--show", action="store_true", help="also open the picture in a window, if there is a display")
    add_device_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[images.Prediction]:
    args = parse_args(argv)
    show = plots.use_backend(args.show)
    device = device_from_args(args)
    model_path = args.model if args.model is not None else find_weights(cli.REPO_ROOT / "runs")
    model = load_model(model_path, device)
    print(f"Model: {model_path}", file=sys.stderr)

    predictions, failed = [], 0
    for path in args.images:
        try:
            image = images.open_image(path)
            pixels = naive_resize(image) if args.no_preprocess else preprocess(image)
        except cli.UserError as err:  # one bad image: say which and why, then go on with the others
            print(f"error: {path}: {err}", file=sys.stderr)
            failed += 1
            continue
        probabilities = predict(model, device, pixels)
        predictions.append(images.Prediction(path, image, pixels, probabilities))
        print(images.describe_prediction(path, probabilities, DIGITS))

    if predictions:
        out_dir = cli.make_run_dir(args.out_dir, "predict")
        title = "naive resize (--no-preprocess)" if args.no_preprocess else "what the network saw"
        picture = images.plot_predictions(predictions, DIGITS, images.figure_path(out_dir), title, show)
        print(f"Picture: {picture}", file=sys.stderr)
    if failed:
        sys.exit(2)
    return predictions


if __name__ == "__main__":
    cli.run_main(main)
