"""T02 · Your own clothes: classify a photo of a garment with the model you trained on FashionMNIST.

    python T02_fashion_mnist/fashion_mnist.py --model cnn --save-model   # train first: writes
                                                   # runs/fashion_mnist-.../fashion_mnist_cnn.pt
    python T02_fashion_mnist/predict.py my_shoe.jpg      # one line per image, and runs/predict-.../predictions.png
    python T02_fashion_mnist/predict.py photos/*.jpg --model runs/fashion_mnist-20250101-120000/checkpoint.pt
    python T02_fashion_mnist/predict.py my_shoe.jpg --no-preprocess   # the naive 28x28 resize, to compare

FashionMNIST's pictures are Zalando's product photos, converted like this (Xiao et al. 2017,
"Fashion-MNIST", section 2): the edges trimmed to the product, the longest side resized to 28,
the shorter side padded to 28 with the product in the middle, the colours inverted, grayscale.
So each garment is light on black and fills its 28x28 frame. A photo of a shoe on a white
table, merely shrunk to 28x28, is a dark shoe in a light frame: the network never saw that.
preprocess() below repeats the conversion, and predictions.png shows what the network saw.
The file says which model it holds (the MLP, the deep MLP or the CNN), what it was trained on
and with which mean and std (checkpoint.pt; a weights file asks the checkpoint.pt beside it).
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
from pathlib import Path

if __name__ == "__main__":  # run as a script, Ctrl-C while torch loads (a second or two) stops it, no traceback
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # (imported, e.g. in a notebook, nothing changes)
import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision import datasets

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so `common/` and the lessons import from any folder
try:
    from common import cli, images
    from common.device import select_device
    from T02_fashion_mnist.fashion_mnist import MODELS, POSTS_MEAN, POSTS_STD
except ModuleNotFoundError as err:
    if not (err.name or "").startswith(("common", "T02_fashion_mnist")):
        raise
    sys.exit("error: this script needs the repository's common/ folder and T02_fashion_mnist/fashion_mnist.py "
             "(clone the whole repository)")

CLASSES = list(datasets.FashionMNIST.classes)  # "T-shirt/top", "Trouser", ... the names training printed
DIGITS = [str(digit) for digit in range(10)]  # for a model trained with --dataset mnist
MODEL_CLASSES = [model_class.__name__ for model_class in MODELS.values()]  # the classes fashion_mnist.py defines
# What `fashion_mnist.py --save-model` writes (<dataset>_<model>.pt), and the checkpoint of every run.
WEIGHTS_PATTERNS = [f"*/{dataset}_{model.replace('-', '_')}.pt" for dataset in ("fashion_mnist", "mnist")
                    for model in MODELS] + ["fashion_mnist-*/checkpoint.pt"]


# --- Preprocessing: make a photo look like a FashionMNIST picture ------------------------------
# The first steps (grayscale, light on black, background removed, cropped) are those of T01's digits,
# in common/images.py. Only the last two are FashionMNIST's own.

def pad_to_square(garment: np.ndarray) -> np.ndarray:
    """Extend the shorter side with black so the picture is square, the garment in the middle.

    This, and not MNIST's 20x20 box, is how FashionMNIST was made: the longest side of each
    product fills the whole 28 pixels, with no margin (check any FashionMNIST image: trousers
    touch the top and bottom rows, bags and shoes the left and right columns), and it is
    centred by its box, not by its centre of mass. Padding, not stretching: a trouser stays
    long and thin, which is half of what tells it from a dress.
    """
    height, width = garment.shape
    side = max(height, width)
    square = np.zeros((side, side), dtype=np.float32)
    top, left = (side - height) // 2, (side - width) // 2
    square[top:top + height, left:left + width] = garment
    return square


def preprocess(image: Image.Image) -> np.ndarray:
    """A photo of one garment -> a 28x28 array, 0..1, made the way FashionMNIST's pictures were made."""
    gray = images.to_grayscale(image)  # one channel, 0 = black, 1 = white
    garment = images.ink_on_black(gray)  # a light background is inverted: light garment on black
    try:
        garment = images.remove_background(garment)  # background exactly 0, its noise and grain gone
        garment = images.crop_to_ink(garment)  # trimmed to the garment, as Zalando trimmed its photos
    except cli.UserError:  # the shared steps speak of ink; here it is a garment that is missing
        raise cli.UserError("nothing found on the background: the picture is (nearly) one flat colour. "
                            "Is the garment in it?") from None
    square = pad_to_square(garment)  # longest side kept, shorter side padded: the shape is kept
    return np.clip(images.resize_array(square, 28, 28), 0.0, 1.0)  # the garment fills the 28x28 frame


def to_model_input(pixels: np.ndarray, mean: float = POSTS_MEAN, std: float = POSTS_STD) -> torch.Tensor:
    """28x28 pixels 0..1 -> a 1x1x28x28 tensor, normalised as fashion_mnist.py normalised its training data."""
    return ((torch.from_numpy(pixels) - mean) / std).reshape(1, 1, 28, 28)


# --- The model --------------------------------------------------------------------------------

def find_weights(runs_dir: Path) -> Path:
    """The newest weights file or checkpoint that fashion_mnist.py wrote under `runs_dir`."""
    found = [path for pattern in WEIGHTS_PATTERNS if (path := images.newest_file(runs_dir, pattern))]
    if not found:
        raise cli.UserError(f"no trained FashionMNIST model found under {runs_dir}: train one with "
                            "`python T02_fashion_mnist/fashion_mnist.py --save-model`, or pass --model PATH")
    return max(found, key=lambda path: path.stat().st_mtime)


def training_flags(path: Path, saved_args: dict) -> dict:
    """The flags the model in `path` was trained with: its own (a checkpoint), else its run's checkpoint.pt's.

    A plain state dict holds weights only; the checkpoint.pt in the same run folder knows the
    dataset. Failing that, the file's name does (`mnist_cnn.pt`); else FashionMNIST is assumed.
    """
    if saved_args:
        return saved_args
    beside = path.parent / "checkpoint.pt"
    if beside.is_file() and beside.resolve() != path.resolve():
        try:
            return images.read_weights(beside, MODEL_CLASSES)[1]
        except cli.UserError:
            pass  # an unreadable neighbour, or another lesson's, tells us nothing
    return {"dataset": "mnist" if path.name.startswith("mnist_") else "fashion-mnist"}


def load_model(path: Path, device: torch.device) -> tuple[nn.Module, dict]:
    """The T02 model whose weights are in `path`, in evaluation mode, and the flags it was trained with."""
    state_dict, saved_args = images.read_weights(path, MODEL_CLASSES)  # refuses T01's and T03's checkpoints
    flags = training_flags(Path(path), saved_args)
    # A checkpoint names its model; a state dict does not, so try each of the three in turn:
    # the layer names and shapes fit exactly one of them.
    names = [flags["model"]] if flags.get("model") in MODELS else list(MODELS)
    for name in names:
        model = MODELS[name]()
        try:
            model.load_state_dict(state_dict)
        except RuntimeError:  # another model's layer names or shapes
            continue
        # eval(): the CNN's batch norm must use the statistics it learnt (a batch of one image has
        # none of its own) and dropout must stop dropping. The MLPs have neither, but it costs nothing.
        return model.to(device).eval(), {**flags, "model": name}
    raise cli.UserError(f"{path} holds none of T02's models ({', '.join(MODELS)}): weights of another lesson? "
                        "T01 and T03 have their own predict.py")


def predict(model: nn.Module, device: torch.device, model_input: torch.Tensor) -> list[float]:
    """The ten class probabilities for one normalised 1x1x28x28 image."""
    with torch.no_grad():  # predicting needs no gradients
        logits = model(model_input.to(device))
    return torch.softmax(logits, dim=1)[0].tolist()  # the models return raw scores; softmax turns them into 0..1


def finite_float(text: str) -> float:
    """argparse type: a number that is not NaN or infinite (either would make every input NaN)."""
    value = float(text)  # not a number: argparse says "invalid finite_float value"
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = cli.ArgumentParser(description="T02: classify your own photos of clothes with a FashionMNIST model.")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...), one garment each")
    parser.add_argument("--model", type=Path, default=None, metavar="PATH",
                        help="<dataset>_<model>.pt from `fashion_mnist.py --save-model`, or a checkpoint.pt "
                             "(default: the newest one under runs/)")
    parser.add_argument("--no-preprocess", action="store_true",
                        help="only grayscale and resize to 28x28, to see how much the preprocessing matters")
    parser.add_argument("--mean", type=finite_float, default=None, metavar="M",
                        help="the Normalize mean the model was trained with (default: the one its run's "
                             f"checkpoint.pt holds, else the posts' {POSTS_MEAN})")
    parser.add_argument("--std", type=cli.positive_float, default=None, metavar="S",
                        help=f"the Normalize std the model was trained with (default: as --mean, else {POSTS_STD})")
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="folder for predictions.png (default: a new folder runs/predict-<date>-<time>)")
    parser.add_argument("--show", action="store_true", help="also open the picture in a window")
    parser.add_device_flags()  # --device, --no-cuda, --no-mps, --no-accel
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[images.Prediction]:
    args = parse_args(argv)
    device = select_device(args)
    model_path = args.model if args.model is not None else find_weights(cli.REPO_ROOT / "runs")
    model, flags = load_model(model_path, device)
    dataset = flags.get("dataset", "fashion-mnist")
    print(f"Model: {model_path} ({flags['model']}, trained on {dataset})", file=sys.stderr)

    class_names, prepare = CLASSES, preprocess
    if dataset == "mnist":  # `fashion_mnist.py --dataset mnist`: digits, so prepare them as T01 does
        class_names, prepare = DIGITS, images.preprocess_digit
        print("note: this model was trained on MNIST digits (--dataset mnist): each image is prepared "
              "as T01_mnist_nn/predict.py prepares digits (20x20 box, centred by mass)", file=sys.stderr)
    # The Normalize mean and std of training: the posts' 0.5/0.5, or with --measured-stats the training
    # images' own, which fashion_mnist.py keeps in checkpoint.pt's args. --mean/--std override them.
    mean = args.mean if args.mean is not None else flags.get("mean", POSTS_MEAN)
    std = args.std if args.std is not None else flags.get("std", POSTS_STD)

    predictions, failed = [], 0
    for path in args.images:
        try:
            image = images.open_image(path)
            pixels = images.naive_resize(image) if args.no_preprocess else prepare(image)
        except cli.UserError as err:  # one bad image: say which and why, then go on with the others
            print(f"error: {path}: {err}", file=sys.stderr)
            failed += 1
            continue
        probabilities = predict(model, device, to_model_input(pixels, mean, std))
        predictions.append(images.Prediction(path, image, pixels, probabilities))
        print(images.describe_prediction(path, probabilities, class_names))

    if predictions:
        title = "naive resize (--no-preprocess)" if args.no_preprocess else "what the network saw"
        picture = images.plot_predictions(predictions, class_names, args.out_dir, title, args.show)
        print(f"Picture: {picture}", file=sys.stderr)
    if failed:
        sys.exit(2)
    return predictions


if __name__ == "__main__":
    cli.run_main(main)
