"""T02 · FashionMNIST with an MLP, a deeper MLP and a CNN.

The second group of posts takes the model from PyTorch's official "Build the Neural
Network" tutorial (flatten, then 784-512-512-10 with ReLU), trains it on MNIST digits,
then, unchanged, on FashionMNIST clothes, where it does clearly worse. A deeper MLP does
not close the gap; a small CNN with batch norm and dropout does. Then the posts look at
the predictions, the confusion matrix, checkpoints, early stopping and hyper-parameters.

    python T02_fashion_mnist/fashion_mnist.py                        # the MLP on FashionMNIST, 5 epochs
    python T02_fashion_mnist/fashion_mnist.py --dataset mnist        # the same MLP on MNIST digits
    python T02_fashion_mnist/fashion_mnist.py --model mlp-deep       # the post's deeper MLP, NeuralNetwork_v1
    python T02_fashion_mnist/fashion_mnist.py --model cnn            # the post's CNN, ConvNeuralNetwork
    python T02_fashion_mnist/fashion_mnist.py --model cnn --epochs 8 --resume runs/<folder>/checkpoint.pt
    python T02_fashion_mnist/fashion_mnist.py --val-size 5000 --patience 3 --epochs 30   # early stopping
    python T02_fashion_mnist/fashion_mnist.py --help                 # every flag

Each run writes train.log, checkpoint.pt (after every epoch), metrics.json/.csv, curves.png,
predictions.png and confusion_matrix.png to its run folder, and best_model.pt with --val-size.
The Normalize mean and std the run used are saved with its flags (checkpoint.pt's "args":
"mean", "std"), so predict.py can prepare a photo the same way.
compare_hyperparameters.py runs this script once per configuration of the posts' study.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

if __name__ == "__main__":  # run as a script, Ctrl-C while torch loads (a second or two) stops it, no traceback
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # (imported, e.g. in a notebook, nothing changes)
import matplotlib.pyplot as plt
import torch
from torch import nn, optim
from torch.optim.lr_scheduler import StepLR
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset
from torchvision import datasets

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so `common/` imports from any folder
try:
    from common import cli, data
    from common.device import seed_everything, select_device
    from common.run import TrainingRun
except ModuleNotFoundError as err:
    if not (err.name or "").startswith("common"):
        raise
    sys.exit("error: this script needs the repository's common/ folder (clone the whole repository). "
             "The models, train() and test() alone copy out without it.")

# The posts normalise with mean 0.5 and std 0.5: pixels 0..1 become -1..1. Close enough to
# work, though not the data's real statistics (--measured-stats measures those instead).
POSTS_MEAN, POSTS_STD = 0.5, 0.5
TRAINING_IMAGES = 60_000  # MNIST and FashionMNIST alike


# --- The three models -------------------------------------------------------------------------

class NeuralNetwork(nn.Module):
    """The official tutorial's MLP: flatten, then 784 -> 512 -> 512 -> 10 with ReLU; outputs logits."""

    def __init__(self) -> None:
        super().__init__()
        self.flatten = nn.Flatten()  # (N, 1, 28, 28) -> (N, 784): linear layers want flat vectors
        self.linear_relu_stack = nn.Sequential(
            nn.Linear(28 * 28, 512), nn.ReLU(),
            nn.Linear(512, 512), nn.ReLU(),
            # No ReLU or softmax after the last layer: CrossEntropyLoss wants the raw scores
            # (logits) and applies log-softmax itself.
            nn.Linear(512, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_relu_stack(self.flatten(x))


class NeuralNetwork_v1(nn.Module):  # noqa: N801 (the post's name, underscore and all)
    """The post's deeper MLP: flatten, then 784 -> 1024 -> 1024 -> 512 -> 512 -> 10 with ReLU; outputs logits."""

    def __init__(self) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.linear_relu_stack = nn.Sequential(
            nn.Linear(28 * 28, 1024), nn.ReLU(),
            nn.Linear(1024, 1024), nn.ReLU(),
            nn.Linear(1024, 512), nn.ReLU(),
            nn.Linear(512, 512), nn.ReLU(),
            nn.Linear(512, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_relu_stack(self.flatten(x))


class ConvNeuralNetwork(nn.Module):
    """The post's CNN: three conv blocks (32, 64, 128 channels), then 1152 -> 512 -> 512 -> 10.

    Each conv block is 3x3 convolution, batch norm, ReLU and a 2x2 max-pool; each hidden linear
    layer is followed by batch norm, ReLU and dropout. The layers carry the post's names, so a
    state_dict saved from the post's class loads here as it is.
    """

    def __init__(self) -> None:
        super().__init__()
        # padding=1 keeps the size (28 -> 28); each pool halves it: 28 -> 14 -> 7 -> 3 (rounding down).
        # The convolutions keep their bias, as in the post, though the batch norm right after
        # subtracts the mean and so cancels it: 32 + 64 + 128 = 224 weights that learn nothing.
        self.conv1 = nn.Conv2d(1, 32, kernel_size=3, padding=1)
        self.batch_norm1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3, padding=1)
        self.batch_norm2 = nn.BatchNorm2d(64)
        self.conv3 = nn.Conv2d(64, 128, kernel_size=3, padding=1)
        self.batch_norm3 = nn.BatchNorm2d(128)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(128 * 3 * 3, 512)  # 128 channels x 3 x 3 = 1152 numbers per image
        self.batch_norm4 = nn.BatchNorm1d(512)
        self.fc2 = nn.Linear(512, 512)
        self.batch_norm5 = nn.BatchNorm1d(512)
        self.fc3 = nn.Linear(512, 10)
        self.dropout = nn.Dropout(0.4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.batch_norm1(self.conv1(x))))
        x = self.pool(torch.relu(self.batch_norm2(self.conv2(x))))
        x = self.pool(torch.relu(self.batch_norm3(self.conv3(x))))
        x = torch.flatten(x, 1)  # (N, 128, 3, 3) -> (N, 1152)
        x = self.dropout(torch.relu(self.batch_norm4(self.fc1(x))))
        x = self.dropout(torch.relu(self.batch_norm5(self.fc2(x))))
        return self.fc3(x)  # logits: CrossEntropyLoss applies log-softmax itself


MODELS = {"mlp": NeuralNetwork, "mlp-deep": NeuralNetwork_v1, "cnn": ConvNeuralNetwork}


def build_model(name: str, device: torch.device) -> nn.Module:
    """The model called `name` ("mlp", "mlp-deep" or "cnn"), on `device`."""
    model = MODELS[name]().to(device)
    if device.type == "cpu":
        # PyTorch's CPU convolutions (oneDNN) are fastest with the "channels last" memory layout
        # (N, H, W, C): the CNN trains about 1.5x faster. Only the order of the numbers in memory
        # changes, not the results. (It affects 4-D weights only: the MLPs are unchanged.)
        model = model.to(memory_format=torch.channels_last)
    return model


# --- Training and testing ---------------------------------------------------------------------

def train(model: nn.Module, device: torch.device, loader: DataLoader, optimizer: optim.Optimizer, *,
          loss_fn: nn.Module, epoch: int = 1, epochs: int = 1, log_interval: int = 100,
          dry_run: bool = False) -> dict:
    """Train for one epoch; return the average training loss and accuracy, the images seen and the time taken."""
    started = time.perf_counter()
    model.train()  # training mode: dropout drops, batch norm uses and updates batch statistics
    steps = len(loader)
    loss_sum = torch.zeros((), device=device)  # tensors, so the GPU never waits for .item() each step
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    # The post's running_loss: the batch losses since the last printed line, printed as their average.
    # The post adds loss.item() to a float every step; .item() makes the CPU wait for the GPU, so we
    # add up a tensor instead and call .item() only when we print.
    running_loss, running_steps = torch.zeros((), device=device), 0
    for step, (images, targets) in enumerate(loader, start=1):
        images, targets = images.to(device), targets.to(device)
        outputs = model(images)  # logits, one row of 10 scores per image
        loss = loss_fn(outputs, targets)  # the batch's average loss
        optimizer.zero_grad()  # gradients add up across backward() calls: clear the last step's
        loss.backward()  # d(loss)/d(weight) for every weight
        optimizer.step()  # move each weight a little against its gradient
        loss_sum += loss.detach() * len(images)  # detach: keep the number, not the graph behind it
        correct += (outputs.argmax(dim=1) == targets).sum()
        seen += len(images)
        running_loss += loss.detach()
        running_steps += 1
        if step % log_interval == 0 or dry_run:
            # The average over the last log_interval steps, as the post's running_loss / 100: one
            # batch's loss alone jumps up and down too much to show the trend.
            print(f"Epoch [{epoch}/{epochs}], Step [{step}/{steps}], Loss: {running_loss.item() / running_steps:.4f}")
            running_loss, running_steps = torch.zeros((), device=device), 0
        if dry_run:
            break
    return {"train_loss": loss_sum.item() / seen, "train_accuracy": correct.item() / seen, "train_images": seen,
            "train_seconds": time.perf_counter() - started}


def evaluate(model: nn.Module, device: torch.device, loader: DataLoader, *, loss_fn: nn.Module,
             dry_run: bool = False) -> dict:
    """Average loss, accuracy and counts of `model` on `loader`'s images (test or validation)."""
    model.eval()  # evaluation mode: dropout off, batch norm uses the statistics it learned
    loss_sum, correct, seen = 0.0, 0, 0
    with torch.no_grad():  # no gradients needed to evaluate: faster, less memory
        for images, targets in loader:
            images, targets = images.to(device), targets.to(device)
            outputs = model(images)
            # The loss is the batch's mean: times the batch's size it is the batch's sum, and the
            # sums divided once by the number of images give the right average even when the last
            # batch is smaller than the others.
            loss_sum += loss_fn(outputs, targets).item() * len(targets)
            correct += (outputs.argmax(dim=1) == targets).sum().item()  # the class with the highest score
            seen += len(targets)
            if dry_run:
                break
    return {"loss": loss_sum / seen, "accuracy": correct / seen, "correct": correct, "images": seen}


def test(model: nn.Module, device: torch.device, loader: DataLoader, *, loss_fn: nn.Module,
         dry_run: bool = False) -> dict:
    """Evaluate on the test set and print the post's line; return loss, accuracy and counts."""
    metrics = evaluate(model, device, loader, loss_fn=loss_fn, dry_run=dry_run)
    print(f"Test Accuracy: {100 * metrics['accuracy']:.2f}%")  # as the post prints it
    print(f"Test set: {metrics['correct']}/{metrics['images']} correct, average loss {metrics['loss']:.4f}")
    return {"test_loss": metrics["loss"], "test_accuracy": metrics["accuracy"], "test_correct": metrics["correct"],
            "test_images": metrics["images"]}


# --- Data -------------------------------------------------------------------------------------

def split_validation(images: torch.Tensor, labels: torch.Tensor, val_size: int, seed: int) -> tuple[tuple, tuple]:
    """(training images, labels), (validation images, labels): `val_size` rows drawn at random, fixed by `seed`."""
    # Choosing anything (an epoch, a learning rate) by test accuracy leaks the test set into the
    # choice. Validation images are never trained on, so they can do the choosing.
    # A generator of its own: the same split for a given seed, and torch's global random numbers
    # untouched, so the weights and the shuffling stay those of a run without validation.
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    train_rows, val_rows = order[val_size:], order[:val_size]
    return (images[train_rows], labels[train_rows]), (images[val_rows], labels[val_rows])


def measured_statistics(images: torch.Tensor) -> tuple[float, float]:
    """The mean and standard deviation of every pixel of `images` (uint8), on the 0..1 scale, to 4 decimals."""
    pixels = images.double() / 255
    return round(pixels.mean().item(), 4), round(pixels.std().item(), 4)


def normalised(images: torch.Tensor, labels: torch.Tensor, mean: float, std: float,
               device: torch.device) -> TensorDataset:
    """What ToTensor() + Normalize((mean,), (std,)) does to each image, done once for all of them."""
    # Pixels 0..255 -> 0..1 -> (x - mean) / std, kept as tensors (on the GPU if we train on one):
    # no image is decoded again in any epoch. N x 28 x 28 gains its channel: N x 1 x 28 x 28.
    return TensorDataset(((images.unsqueeze(1).float() / 255 - mean) / std).to(device), labels.to(device))


# --- Validation and early stopping, TensorBoard, figures ---------------------------------------

class EarlyStopping:
    """Validation after each epoch, best_model.pt, and early stopping after `patience` epochs without progress.

    Everything it decides is read from run.history, so a resumed run decides as the uninterrupted one.
    """

    def __init__(self, run: TrainingRun, val_loader: DataLoader | None, loss_fn: nn.Module,
                 patience: int | None) -> None:
        self.run, self.val_loader, self.loss_fn, self.patience = run, val_loader, loss_fn, patience
        self.stopped = False

    def best(self) -> dict | None:
        """The row of the epoch with the best validation accuracy (the earliest of equals), or None."""
        rows = [row for row in self.run.history if "val_accuracy" in row]
        return max(rows, key=lambda row: row["val_accuracy"]) if rows else None

    def should_stop(self) -> bool:
        """True once `patience` epochs in a row brought no better validation accuracy."""
        best = self.best()
        self.stopped = bool(self.patience and best and self.run.history[-1]["epoch"] - best["epoch"] >= self.patience)
        return self.stopped

    def validate(self, model: nn.Module, device: torch.device, dry_run: bool = False) -> dict:
        """Evaluate on the validation images and save best_model.pt if they are the best so far ({} without)."""
        if self.val_loader is None:
            return {}
        metrics = evaluate(model, device, self.val_loader, loss_fn=self.loss_fn, dry_run=dry_run)
        print(f"Validation accuracy: {100 * metrics['accuracy']:.2f}%")
        best = self.best()
        if best is None or metrics["accuracy"] > best["val_accuracy"]:
            # Saved before this epoch's checkpoint: if the run stops in between, resuming trains this
            # epoch again, to the same weights, and saves them again.
            self.run.save_weights("best_model.pt")
        return {"val_loss": metrics["loss"], "val_accuracy": metrics["accuracy"]}

    def restore_best(self, model: nn.Module) -> bool:
        """With --patience: load the best epoch's weights into `model`; True if they are not the last epoch's."""
        best = self.best()
        if not self.patience or best is None:
            return False
        kept = f"epoch {best['epoch']} (validation accuracy {100 * best['val_accuracy']:.2f}%)"
        self.run.log(f"Early stopping: no better validation accuracy for {self.patience} epochs; keeping {kept}"
                     if self.stopped else f"Keeping {kept}, the best on validation")
        if best["epoch"] == self.run.history[-1]["epoch"]:
            return False
        device = next(model.parameters()).device
        model.load_state_dict(torch.load(self.run.folder / "best_model.pt", map_location=device, weights_only=True))
        print("The kept weights on the test set:")
        return True


class TensorBoardLog:
    """With --tensorboard, each epoch's losses and accuracies for TensorBoard in <run folder>/tensorboard."""

    def __init__(self, folder: Path, enabled: bool) -> None:
        self.folder, self.writer, self.enabled = folder / "tensorboard", None, enabled
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter  # noqa: F401 (is it installed?)
                print(f"TensorBoard: view the curves with  tensorboard --logdir {self.folder}")
            except ImportError:
                print("--tensorboard: the tensorboard package is not installed (pip install tensorboard); "
                      "carrying on without it.")
                self.enabled = False

    def add(self, row: dict) -> None:
        """Write one epoch's row; the folder is made at the first finished epoch, so a failed run leaves none."""
        if not self.enabled:
            return
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(self.folder))
        for key, value in row.items():
            if key.endswith(("_loss", "_accuracy")):  # train_loss -> Loss/train, val_accuracy -> Accuracy/val
                part, kind = key.split("_")
                self.writer.add_scalar(f"{kind.capitalize()}/{part}", value, row["epoch"])
        self.writer.flush()  # a run stopped later (Ctrl-C, divergence) keeps the epochs it finished

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def predicted_classes(model: nn.Module, device: torch.device, loader: DataLoader) -> torch.Tensor:
    """The model's predicted class for every image of `loader`, in the loader's order, on the CPU."""
    model.eval()  # dropout off, batch norm uses the statistics it learned
    with torch.no_grad():
        return torch.cat([model(images.to(device)).argmax(dim=1).cpu() for images, _ in loader])


def predictions_figure(test_set: TensorDataset, predicted: torch.Tensor, classes: list[str], mean: float,
                       std: float) -> plt.Figure:
    """The first 16 test images, each titled with the predicted and the true class; a wrong guess red, with (x)."""
    images, targets = test_set.tensors[0][:16].cpu(), test_set.tensors[1][:16].cpu()
    fig, axes = plt.subplots(4, 4, figsize=(8, 9))
    for ax, image, p, t in zip(axes.flat, images, predicted[:16].tolist(), targets.tolist()):
        ax.imshow((image[0] * std + mean).numpy(), cmap="gray", vmin=0, vmax=1)  # undo Normalize: 0..1 pixels
        ax.set_title(f"pred: {classes[p]}" + ("" if p == t else " (x)") + f"\ntrue: {classes[t]}", fontsize=8,
                     color="black" if p == t else "red")
        ax.axis("off")
    for ax in axes.flat[len(images):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def confusion_matrix_figure(targets: torch.Tensor, predicted: torch.Tensor, classes: list[str],
                            title: str) -> plt.Figure:
    """Row = true class, column = predicted class, each row divided by its sum (the diagonal: each class's accuracy)."""
    # counts[t, p]: how many images of true class t were predicted as p; each row divided by its sum.
    n = len(classes)
    counts = torch.bincount(targets * n + predicted, minlength=n * n).reshape(n, n).double()
    rates = counts / counts.sum(dim=1, keepdim=True).clamp_min(1)  # a class with no images: 0s, not NaN
    fig, ax = plt.subplots(figsize=(9, 7.5))
    fig.colorbar(ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1), ax=ax, label="fraction of the true class")
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted class", ylabel="true class",
           title=f"{title}: {100 * counts.diag().sum().item() / len(targets):.2f}% test accuracy")
    ax.set_xticklabels(classes, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticklabels(classes)
    for row in range(n):
        for column in range(n):
            value = rates[row, column].item()
            ax.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=8,
                    color="white" if value > 0.5 else "black")  # readable on dark and light cells
    fig.tight_layout()
    return fig


def save_figures(run: TrainingRun, model: nn.Module, device: torch.device, test_loader: DataLoader,
                 classes: list[str], mean: float, std: float, dataset: str) -> None:
    """curves.png, predictions.png (the first 16 test images) and confusion_matrix.png, from `model` as it is."""
    title = f"{type(model).__name__} on {dataset}"
    run.save_curves(title)
    predicted = predicted_classes(model, device, test_loader)  # the loader keeps the test set's order
    targets = test_loader.dataset.tensors[1].cpu()
    run.save_figure(predictions_figure(test_loader.dataset, predicted, classes, mean, std), "predictions.png")
    run.save_figure(confusion_matrix_figure(targets, predicted, classes, title), "confusion_matrix.png")
    n = len(classes)  # each class's accuracy: its right answers over its images (none: 0)
    right, images = torch.bincount(targets[predicted == targets], minlength=n), torch.bincount(targets, minlength=n)
    per_class = right / images.clamp_min(1)
    run.log("Hardest classes: " + ", ".join(f"{classes[i]} {100 * per_class[i]:.1f}%"
                                            for i in per_class.argsort()[:3].tolist()))


# --- Command line -----------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command-line flags; defaults are the posts' set-up."""
    parser = cli.ArgumentParser(description="T02: FashionMNIST (or MNIST) with an MLP, a deeper MLP or a CNN.")
    parser.add_argument("--model", choices=list(MODELS), default="mlp",
                        help="mlp: 784-512-512-10 (the official tutorial's); mlp-deep: the post's NeuralNetwork_v1, "
                             "784-1024-1024-512-512-10; cnn: the post's ConvNeuralNetwork, three conv blocks with "
                             "batch norm and dropout (default: mlp)")
    parser.add_argument("--dataset", choices=["fashion-mnist", "mnist"], default="fashion-mnist",
                        help="which dataset (default: fashion-mnist)")
    parser.add_argument("--measured-stats", action="store_true",
                        help="normalise with the training images' measured mean and std instead of the posts' "
                             "0.5/0.5 (measured after --val-size takes the validation images out)")
    parser.add_argument("--batch-size", type=cli.positive_int, default=64, metavar="N",
                        help="input batch size for training (default: 64; at least 2 for the CNN)")
    parser.add_argument("--test-batch-size", type=cli.positive_int, default=1000, metavar="N",
                        help="input batch size for testing and validation (default: 1000)")
    parser.add_argument("--epochs", type=cli.positive_int, default=5, metavar="N",
                        help="number of epochs to train (default: 5)")
    parser.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd",
                        help="sgd (with --momentum) or adam (default: sgd)")
    parser.add_argument("--lr", type=cli.positive_float, default=0.01, metavar="LR",
                        help="learning rate (default: 0.01; for adam try 0.001)")
    parser.add_argument("--momentum", type=float, default=0.9, metavar="M",
                        help="SGD momentum, 0 <= M < 1 (default: 0.9; ignored by adam)")
    parser.add_argument("--scheduler", choices=["none", "step"], default="none",
                        help="step: multiply the learning rate by --gamma every --step-size epochs (default: none)")
    parser.add_argument("--step-size", type=cli.positive_int, default=2, metavar="N",
                        help="epochs between learning-rate drops with --scheduler step (default: 2)")
    parser.add_argument("--gamma", type=cli.positive_float, default=0.5, metavar="G",
                        help="learning-rate factor at each drop with --scheduler step (default: 0.5)")
    parser.add_argument("--log-interval", type=cli.positive_int, default=100, metavar="N",
                        help="print the average training loss of the last N steps, every N steps (default: 100)")
    parser.add_argument("--val-size", type=cli.positive_int, default=None, metavar="N",
                        help="hold out N training images (chosen by --seed) as a validation set, report its accuracy "
                             "every epoch and save the best epoch's weights as best_model.pt (default: none)")
    parser.add_argument("--patience", type=cli.positive_int, default=None, metavar="K",
                        help="early stopping: stop after K epochs without a better validation accuracy and keep "
                             "the best epoch's weights; needs --val-size (default: off)")
    parser.add_argument("--dry-run", action="store_true",
                        help="train on one batch and test on one batch, to check that everything runs")
    parser.add_argument("--save-model", action="store_true",
                        help="save the trained weights alone (a state dict) as <dataset>_<model>.pt in the run folder")
    parser.add_argument("--tensorboard", action="store_true",
                        help="also write loss and accuracy for TensorBoard (needs: pip install tensorboard)")
    parser.add_common_flags()  # --seed, --device/--no-cuda/--no-mps, --data-dir, --out-dir, --resume, --show
    args = parser.parse_args(argv)
    if not 0 <= args.momentum < 1:  # also false for nan
        parser.error(f"--momentum: must be at least 0 and less than 1, got {args.momentum}")
    if args.patience and not args.val_size:
        parser.error("--patience needs --val-size: early stopping watches the accuracy on validation images, "
                     "never on the test set")
    if args.val_size and args.val_size > TRAINING_IMAGES - 2:  # batch norm needs a batch of two
        parser.error(f"--val-size {args.val_size}: the training set has {TRAINING_IMAGES:,} images, and at "
                     "least 2 must be left to train on; hold out fewer")
    if args.model == "cnn" and args.batch_size == 1:
        parser.error("--model cnn needs --batch-size 2 or more: batch norm normalises each training batch by its "
                     "own mean and variance, which a batch of one image does not have")
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    device = select_device(args)  # CUDA, then Apple's MPS, then the CPU (or what --device says)
    generator = seed_everything(args.seed, args.deterministic)  # and a generator for the shuffling

    # 1. Data. torchvision reads the files (data.download() fetches them first if need be).
    root = data.download(args.dataset, args.data_dir)
    dataset_class = datasets.FashionMNIST if args.dataset == "fashion-mnist" else datasets.MNIST
    train_set, test_set = dataset_class(root, train=True), dataset_class(root, train=False)
    classes, train_part, val_part = train_set.classes, (train_set.data, train_set.targets), None
    if args.val_size:  # validation images, held out of the training images: see split_validation()
        train_part, val_part = split_validation(*train_part, args.val_size, args.seed)
    # The posts' 0.5/0.5, or the training images' own (measured after the split). Saved in checkpoint.pt's args.
    args.mean, args.std = measured_statistics(train_part[0]) if args.measured_stats else (POSTS_MEAN, POSTS_STD)
    train_set = normalised(*train_part, args.mean, args.std, device)
    test_set = normalised(test_set.data, test_set.targets, args.mean, args.std, device)
    # Always shuffle the training set, never the test set. The sampler hands the loader a batch of shuffled
    # indices, and batch_size=None passes the dataset's answer (one indexing operation) straight through: the
    # batches of DataLoader(train_set, batch_size, shuffle=True) without a call per image and a stack per step.
    sampler = BatchSampler(RandomSampler(train_set, generator=generator), args.batch_size,  # batch norm can't
                           drop_last=len(train_set) % args.batch_size == 1 < len(train_set))  # use a lone last image
    train_loader = DataLoader(train_set, sampler=sampler, batch_size=None)
    test_loader = DataLoader(test_set, batch_size=args.test_batch_size, shuffle=False)
    val_loader = DataLoader(normalised(*val_part, args.mean, args.std, device), batch_size=args.test_batch_size,
                            shuffle=False) if val_part is not None else None

    # 2. Model, loss, optimizer and learning-rate schedule.
    model = build_model(args.model, device)
    loss_fn = nn.CrossEntropyLoss()  # softmax + negative log-likelihood, on the model's raw logits
    optimizer = (optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum) if args.optimizer == "sgd"
                 else optim.Adam(model.parameters(), lr=args.lr))  # Adam has momentum-like terms of its own
    scheduler = StepLR(optimizer, args.step_size, args.gamma if args.scheduler == "step" else 1)  # 1: constant

    # 3. The epoch loop. TrainingRun (common/run.py) is the bookkeeping around it: the run folder,
    # a checkpoint after every epoch, --resume (with the flags that define the run), Ctrl-C, divergence.
    must_match = ["model", "dataset", "optimizer", "scheduler", "step_size", "gamma", "batch_size", "lr",
                  "momentum", "measured_stats", "val_size", "patience"]
    with TrainingRun("fashion_mnist", args, model, optimizer, scheduler, generator, must_match=must_match) as run:
        run.log(f"{args.dataset}: {len(train_set):,} training, {args.val_size or 0:,} validation and "
                f"{len(test_set):,} test images, normalised with mean {args.mean} and std {args.std}")
        run.log(f"{model}\nParameters: {sum(p.numel() for p in model.parameters()):,}")
        stopper = EarlyStopping(run, val_loader, loss_fn, args.patience)  # validation, best_model.pt, patience
        board = TensorBoardLog(run.folder, args.tensorboard)  # with --tensorboard
        for epoch in run.epochs():
            if stopper.should_stop():  # read from the history: a resumed run that had stopped stays stopped
                break
            train_metrics = train(model, device, train_loader, optimizer, loss_fn=loss_fn, epoch=epoch,
                                  epochs=args.epochs, log_interval=args.log_interval, dry_run=args.dry_run)
            val_metrics = stopper.validate(model, device, args.dry_run)  # {} without --val-size
            test_metrics = test(model, device, test_loader, loss_fn=loss_fn, dry_run=args.dry_run)
            scheduler.step()  # once per epoch, after that epoch's optimizer steps
            board.add(run.end_epoch(train_metrics, test_metrics, **val_metrics))
        board.close()
        if stopper.restore_best(model):  # with --patience: the best epoch's weights, not the last one's
            test(model, device, test_loader, loss_fn=loss_fn, dry_run=args.dry_run)
        save_figures(run, model, device, test_loader, classes, args.mean, args.std, args.dataset)
        if args.save_model:
            run.save_weights(f"{args.dataset.replace('-', '_')}_{args.model.replace('-', '_')}.pt")
    return run.history


if __name__ == "__main__":
    cli.run_main(main)
