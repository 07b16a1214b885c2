"""T01 · Your own handwriting: classify a photo or drawing of a digit with the SimpleNN you trained.

    python T01_mnist_nn/mnist_nn.py --save-model          # train first: writes runs/mnist_nn-.../mnist_simple_nn.pt
    python T01_mnist_nn/predict.py my_seven.png           # one line per image, and runs/predict-.../predictions.png
    python T01_mnist_nn/predict.py photos/*.jpg --model runs/mnist_nn-20250101-120000/mnist_simple_nn.pt
    python T01_mnist_nn/predict.py my_seven.png --no-preprocess   # the naive 28x28 resize, to compare

A network answers well only on inputs made the way its training data was made. MNIST digits
are white on black, cropped to the ink, fitted into a 20x20 box and centred by their centre of
mass in a 28x28 image. A photo of a dark digit on white paper, merely shrunk to 28x28, looks
nothing like that (a dark frame around a faint grey digit), and the answer is mostly a guess.
preprocess_digit() in common/images.py repeats MNIST's own steps; predictions.png shows what the
network saw.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so `common/` and the lessons import from any folder
try:
    from common import cli, images
    from common.device import select_device
    from T01_mnist_nn.mnist_nn import MNIST_MEAN, MNIST_STD, SimpleNN
except ModuleNotFoundError as err:
    if not (err.name or "").startswith(("common", "T01_mnist_nn")):
        raise
    sys.exit("error: this script needs the repository's common/ folder and T01_mnist_nn/mnist_nn.py "
             "(clone the whole repository)")

WEIGHTS_FILE = "mnist_simple_nn.pt"  # what `mnist_nn.py --save-model` writes in its run folder
DIGITS = [str(digit) for digit in range(10)]


def to_model_input(pixels: np.ndarray) -> torch.Tensor:
    """28x28 pixels 0..1 -> a 1x1x28x28 tensor normalised exactly as mnist_nn.py normalised its training data."""
    return ((torch.from_numpy(pixels) - MNIST_MEAN) / MNIST_STD).reshape(1, 1, 28, 28)


def find_weights(runs_dir: Path) -> Path:
    """The newest saved SimpleNN under `runs_dir` (weights first, else a training checkpoint of mnist_nn.py)."""
    path = images.newest_file(runs_dir, f"*/{WEIGHTS_FILE}") or images.newest_file(runs_dir, "mnist_nn-*/checkpoint.pt")
    if path is None:
        raise cli.UserError(f"no trained SimpleNN found under {runs_dir}: train one with "
                            "`python T01_mnist_nn/mnist_nn.py --save-model`, or pass --model PATH")
    return path


def load_model(path: Path, device: torch.device) -> SimpleNN:
    """SimpleNN with the weights in `path` (mnist_simple_nn.pt or a checkpoint.pt), in evaluation mode."""
    state_dict, _ = images.read_weights(path, [SimpleNN.__name__])
    model = SimpleNN()
    try:
        model.load_state_dict(state_dict)  # the layers' names and shapes must be SimpleNN's
    except RuntimeError as err:
        raise cli.UserError(f"{path} holds the weights of another model, not SimpleNN's "
                            f"({str(err).strip().splitlines()[-1].strip()[:120]})") from None
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
    parser.add_argument("--no-preprocess", action="store_true",
                        help="only grayscale and resize to 28x28, to see how much the preprocessing matters")
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
            pixels = images.naive_resize(image) if args.no_preprocess else images.preprocess_digit(image)
        except cli.UserError as err:  # one bad image: say which and why, then go on with the others
            print(f"error: {path}: {err}", file=sys.stderr)
            failed += 1
            continue
        probabilities = predict(model, device, pixels)
        predictions.append(images.Prediction(path, image, pixels, probabilities))
        print(images.describe_prediction(path, probabilities, DIGITS))

    if predictions:
        title = "naive resize (--no-preprocess)" if args.no_preprocess else "what the network saw"
        picture = images.plot_predictions(predictions, DIGITS, args.out_dir, title, args.show)
        print(f"Picture: {picture}", file=sys.stderr)
    if failed:
        sys.exit(2)
    return predictions


if __name__ == "__main__":
    cli.run_main(main)
