"""T03 · Your own photo: classify it with the LeNet you trained on CIFAR-10.

    python T03_cifar10_lenet/cifar10_lenet.py --save-model   # first: writes runs/cifar10_lenet-.../cifar10_lenet.pt
    python T03_cifar10_lenet/predict.py my_cat.jpg           # one line per image, and runs/predict-.../predictions.png
    python T03_cifar10_lenet/predict.py photos/*.jpg --model runs/cifar10_lenet-20250101-120000/checkpoint.pt

CIFAR-10's pictures are 32x32 colour photos with the object filling most of the square. So a
photo is centre-cropped to a square (no squashing: a cat stays cat-shaped) and shrunk to 32x32.
predictions.png shows what 32x32 leaves of your photo: a few blotches of colour, which is why
LeNet gets about 61% of CIFAR-10's own test images right, and why it often guesses on yours.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

if __name__ == "__main__":  # run as a script, Ctrl-C while torch loads (a second or two) stops it, no traceback
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # (imported, e.g. in a notebook, nothing changes)
import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so `common/` and the lessons import from any folder
try:
    from common import cli, images
    from common.device import select_device
    from T03_cifar10_lenet.cifar10_lenet import CLASSES, MEAN, STD, LeNet
except ModuleNotFoundError as err:
    if not (err.name or "").startswith(("common", "T03_cifar10_lenet")):
        raise
    sys.exit("error: this script needs the repository's common/ folder and T03_cifar10_lenet/cifar10_lenet.py "
             "(clone the whole repository)")

WEIGHTS_FILE = "cifar10_lenet.pt"  # what cifar10_lenet.py saves in its run folder
SIZE = 32  # CIFAR-10's images are 32x32


def centre_crop_square(image: Image.Image) -> Image.Image:
    """The largest centred square of the photo.

    CIFAR-10's images are square with the object in the middle. Squashing a wide photo into a
    square would make every animal thin; cropping keeps shapes as the network learnt them.
    """
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return image.crop((left, top, left + side, top + side))


def preprocess(image: Image.Image) -> np.ndarray:
    """A photo -> a 32x32x3 array, 0..1: centre square, shrunk (with averaging, so no jagged pixels)."""
    square = centre_crop_square(image)
    small = square.resize((SIZE, SIZE), Image.BICUBIC, reducing_gap=2.0)  # averages the pixels each one covers
    return np.asarray(small, dtype=np.float32) / 255.0


def to_model_input(pixels: np.ndarray) -> torch.Tensor:
    """32x32x3 pixels 0..1 -> a 1x3x32x32 tensor, normalised as cifar10_lenet.py normalised its training data."""
    tensor = torch.from_numpy(pixels.copy()).permute(2, 0, 1)  # height x width x colour -> colour x height x width
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    return ((tensor - mean) / std).unsqueeze(0)


def find_weights(runs_dir: Path) -> Path:
    """The newest saved LeNet under `runs_dir` (weights first, else a training checkpoint of cifar10_lenet.py)."""
    path = (images.newest_file(runs_dir, f"*/{WEIGHTS_FILE}")
            or images.newest_file(runs_dir, "cifar10_lenet-*/checkpoint.pt"))
    if path is None:
        raise cli.UserError(f"no trained LeNet found under {runs_dir}: train one with "
                            "`python T03_cifar10_lenet/cifar10_lenet.py`, or pass --model PATH")
    return path


def load_model(path: Path, device: torch.device) -> LeNet:
    """LeNet with the weights in `path` (cifar10_lenet.pt or a checkpoint.pt), in evaluation mode."""
    state_dict, _ = images.read_weights(path, [LeNet.__name__])
    model = LeNet()
    try:
        model.load_state_dict(state_dict)  # the layers' names and shapes must be LeNet's
    except RuntimeError as err:
        raise cli.UserError(f"{path} holds the weights of another model, not LeNet's "
                            f"({str(err).strip().splitlines()[-1].strip()[:120]})") from None
    return model.to(device).eval()


def predict(model: LeNet, device: torch.device, pixels: np.ndarray) -> list[float]:
    """The ten class probabilities for one 32x32 image."""
    with torch.no_grad():
        logits = model(to_model_input(pixels).to(device))
    return torch.softmax(logits, dim=1)[0].tolist()  # LeNet returns raw scores; softmax turns them into 0..1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = cli.ArgumentParser(description="T03: classify your own photos with the CIFAR-10 LeNet.")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, ...)")
    parser.add_argument("--model", type=Path, default=None, metavar="PATH",
                        help=f"{WEIGHTS_FILE} or a checkpoint.pt from cifar10_lenet.py "
                             "(default: the newest one under runs/)")
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="folder for predictions.png (default: a new folder runs/predict-<date>-<time>)")
    parser.add_argument("--show", action="store_true", help="also open the picture in a window")
    parser.add_device_flags()  # --device, --no-cuda, --no-mps, --no-accel
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[images.Prediction]:
    args = parse_args(argv)
    device = select_device(args)
    model_path = args.model if args.model is not None else find_weights(cli.REPO_ROOT / "runs")
    model = load_model(model_path, device)
    print(f"Model: {model_path}", file=sys.stderr)

    predictions, failed = [], 0
    for path in args.images:
        try:
            image = images.open_image(path)
        except cli.UserError as err:  # one bad image: say which and why, then go on with the others
            print(f"error: {path}: {err}", file=sys.stderr)
            failed += 1
            continue
        pixels = preprocess(image)
        probabilities = predict(model, device, pixels)
        predictions.append(images.Prediction(path, image, pixels, probabilities))
        print(images.describe_prediction(path, probabilities, CLASSES))

    if predictions:
        picture = images.plot_predictions(predictions, CLASSES, args.out_dir, "what LeNet saw", args.show)
        print(f"Picture: {picture}", file=sys.stderr)
    if failed:
        sys.exit(2)
    return predictions


if __name__ == "__main__":
    cli.run_main(main)
