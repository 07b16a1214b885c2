"""T02 · FashionMNIST with an MLP, a deeper MLP and a CNN.

The second group of posts takes the model from PyTorch's official "Build the Neural
Network" tutorial (flatten, then 784-512-512-10 with ReLU), trains it on MNIST digits,
then, unchanged, on FashionMNIST clothes, where it does clearly worse. A deeper MLP does
not close the gap; a small CNN with batch norm and dropout does. Then the posts look at
the predictions, the confusion matrix, checkpoints and hyper-parameters.

    python T02_fashion_mnist/fashion_mnist.py                        # the MLP on FashionMNIST, 5 epochs
    python T02_fashion_mnist/fashion_mnist.py --dataset mnist        # the same MLP on MNIST digits
    python T02_fashion_mnist/fashion_mnist.py --model mlp-deep       # a deeper MLP
    python T02_fashion_mnist/fashion_mnist.py --model cnn            # the CNN
    python T02_fashion_mnist/fashion_mnist.py --model cnn --resume runs/<folder>/checkpoint.pt --epochs 8
    python T02_fashion_mnist/fashion_mnist.py --val-size 5000 --patience 3 --epochs 30   # early stopping
    python T02_fashion_mnist/fashion_mnist.py --help                 # every flag

Each run writes train.log, checkpoint.pt (after every epoch), metrics.json/.csv, curves.png,
predictions.png and confusion_matrix.png to its run folder, and best_model.pt with --val-size.
compare_hyperparameters.py reuses this file's models, train(), evaluate() and test() for the
posts' hyper-parameter study.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn, optim
from torch.optim.lr_scheduler import StepLR
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset
from torchvision import transforms

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so `common/` imports from any folder
try:
    from common import cli, data, plots
    from common.checkpoint import load_weights
    from common.device import add_device_arguments, device_from_args
    from common.lifecycle import TrainingRun
    from common.seed import seed_everything
except ModuleNotFoundError as err:
    if not (err.name or "").startswith("common"):
        raise
    sys.exit("error: this script needs the repository's common/ folder (clone the whole repository). "
             "The models, train() and test() alone copy out without it.")

# The posts normalise with mean 0.5 and std 0.5: pixels 0..1 become -1..1. Close enough to
# work, though not the data's real statistics (--measured-stats measures those instead).
POSTS_MEAN, POSTS_STD = 0.5, 0.5


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


class NeuralNetworkDeep(nn.Module):
    """A wider, deeper MLP: 784 -> 1024 -> 1024 -> 512 -> 512 -> 10 with ReLU; outputs logits."""

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


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 convolution, batch norm, ReLU, then a 2x2 max-pool that halves the height and width."""
    return nn.Sequential(
        # padding=1 keeps the size (28 -> 28). bias=False because the batch norm right after
        # subtracts the mean anyway, which would cancel any bias. (The posts keep the bias: their
        # CNN has 32 + 64 + 128 = 224 more weights, 953,290 instead of 953,066, that learn nothing.)
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )


class ConvNet(nn.Module):
    """Three conv blocks (32, 64, 128 channels), then 1152 -> 512 -> 512 -> 10 with batch norm and dropout."""

    def __init__(self, dropout: float = 0.4) -> None:
        super().__init__()
        # Each block halves the image: 28x28 -> 14x14 -> 7x7 -> 3x3 (pooling rounds down).
        self.features = nn.Sequential(conv_block(1, 32), conv_block(32, 64), conv_block(64, 128))
        self.classifier = nn.Sequential(
            nn.Flatten(),  # 128 channels x 3 x 3 = 1152 numbers per image
            nn.Linear(128 * 3 * 3, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(512, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


# The names the posts give the two models: the same classes under the posts' names.
NeuralNetwork_v1 = NeuralNetwork  # the posts' name for the tutorial's MLP
ConvNeuralNetwork = ConvNet  # the posts' name for the CNN (953,066 weights here, 953,290 there: see conv_block)

MODELS = {"mlp": NeuralNetwork, "mlp-deep": NeuralNetworkDeep, "cnn": ConvNet}


def build_model(name: str, device: torch.device) -> nn.Module:
    """Create the model called `name` ("mlp", "mlp-deep" or "cnn") on `device`."""
    model = MODELS[name]().to(device)
    if device.type == "cpu":
        # PyTorch's CPU convolutions (oneDNN) are fastest with the "channels last" memory layout
        # (N, H, W, C): the CNN trains about 1.5x faster here. Only the order of the numbers in
        # memory changes, not the results. (It affects 4-D weights only: the MLPs are unchanged.)
        model = model.to(memory_format=torch.channels_last)
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of trainable numbers (weights and biases) in `model`."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --- Data -------------------------------------------------------------------------------------

@dataclass
class LoadedData:
    """The training and test sets, their class names and the Normalize values they were built with.

    `val_set` holds the validation images once hold_out_validation() has taken them out of `train_set`.
    """

    train_set: Dataset
    test_set: Dataset
    classes: list[str]
    mean: float
    std: float
    val_set: Dataset | None = None


def load_data(name: str, data_dir: Path | None, measured_stats: bool = False,
              classic_pipeline: bool = False) -> LoadedData:
    """Load FashionMNIST or MNIST, normalised with the posts' 0.5/0.5 or the measured statistics."""
    mean, std = POSTS_MEAN, POSTS_STD
    if measured_stats:
        # The mean and std of every training pixel, as T01_mnist_nn/get_mnist_statistics.py prints them.
        plain = data.load_dataset(name, data_dir, train=True, transform=transforms.ToTensor())
        measured_mean, measured_std = data.channel_statistics(data.to_tensor_dataset(plain))
        mean, std = round(measured_mean.item(), 4), round(measured_std.item(), 4)
    # ToTensor turns pixels 0..255 into 0..1; Normalize then computes (x - mean) / std.
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((mean,), (std,))])
    train_set = data.load_dataset(name, data_dir, train=True, transform=transform)
    test_set = data.load_dataset(name, data_dir, train=False, transform=transform)
    classes = list(train_set.classes)  # e.g. "T-shirt/top", "Trouser", ...; read before converting
    if not classic_pipeline:
        # Apply the transform once and keep the tensors in memory: the same numbers, without
        # decoding 60,000 PIL images every epoch (which costs more than the MLP itself on a CPU).
        train_set, test_set = data.to_tensor_dataset(train_set), data.to_tensor_dataset(test_set)
    return LoadedData(train_set, test_set, classes, mean, std)


def split_validation(dataset: Dataset, val_size: int, seed: int) -> tuple[Dataset, Dataset]:
    """Split `dataset` into (training, validation) parts, `val_size` images in the second, fixed by `seed`."""
    # A generator of its own: the split is the same for a given seed, and it draws nothing from
    # torch's global random numbers, so the weights and the shuffling stay those of a run without it.
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    train_rows, val_rows = order[val_size:], order[:val_size]
    if isinstance(dataset, TensorDataset):  # in memory: copy the rows out, as quick to read as before
        return (type(dataset)(*(t[train_rows] for t in dataset.tensors)),
                type(dataset)(*(t[val_rows] for t in dataset.tensors)))
    return Subset(dataset, train_rows.tolist()), Subset(dataset, val_rows.tolist())


def hold_out_validation(loaded: LoadedData, val_size: int, seed: int) -> LoadedData:
    """Take `val_size` images, chosen by `seed`, out of the training set as a validation set."""
    # Choosing anything (an epoch, a learning rate) by test accuracy leaks the test set into the
    # choice, and the test accuracy stops being an honest estimate. The validation images are
    # never trained on, so they can do the choosing; the test set is kept for the final figure.
    if val_size >= len(loaded.train_set):
        raise cli.UserError(f"--val-size {val_size}: the training set has only {len(loaded.train_set):,} images, "
                            "and some must be left to train on; hold out fewer")
    train_set, val_set = split_validation(loaded.train_set, val_size, seed)
    return LoadedData(train_set, loaded.test_set, loaded.classes, loaded.mean, loaded.std, val_set)


def keep_on_gpu_if_it_fits(loaded: LoadedData, device: torch.device, num_workers: int = 0) -> LoadedData:
    """On a GPU with memory to spare, the in-memory images move there: then no batch is copied from the host."""
    parts = [part for part in (loaded.train_set, loaded.test_set, loaded.val_set) if part is not None]
    moved = data.keep_on_gpu_if_it_fits(parts, device, num_workers)
    val_set = moved[2] if loaded.val_set is not None else None
    return LoadedData(moved[0], moved[1], loaded.classes, loaded.mean, loaded.std, val_set)


def make_loaders(loaded: LoadedData, batch_size: int, test_batch_size: int, device: torch.device,
                 generator: torch.Generator, num_workers: int = 0) -> tuple[DataLoader, DataLoader]:
    """DataLoaders for training (shuffled by `generator`) and testing (never shuffled)."""
    kwargs = data.loader_options(num_workers, device, loaded.train_set)  # batching, workers, pinned memory
    # Shuffle the training set every epoch (a fixed order lets the model learn the order);
    # the test set keeps its order, so predictions line up with the images.
    # Batch norm (the CNN) cannot normalise a batch of one image: drop a last batch of exactly 1.
    drop_last = len(loaded.train_set) % batch_size == 1
    train_loader = DataLoader(loaded.train_set, batch_size=batch_size, shuffle=True, generator=generator,
                              drop_last=drop_last, **kwargs)
    test_loader = make_eval_loader(loaded.test_set, test_batch_size, device, num_workers)
    return train_loader, test_loader


def make_eval_loader(dataset: Dataset, batch_size: int, device: torch.device, num_workers: int = 0) -> DataLoader:
    """A DataLoader to evaluate on (test or validation images): never shuffled."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=False,
                      **data.loader_options(num_workers, device, dataset))


# --- Optimizer and learning-rate schedule -----------------------------------------------------

def build_optimizer(name: str, parameters, lr: float, momentum: float = 0.9) -> optim.Optimizer:
    """SGD with momentum (the posts' default) or Adam (which has its own momentum-like terms)."""
    if name == "sgd":
        return optim.SGD(parameters, lr=lr, momentum=momentum)
    if name == "adam":
        return optim.Adam(parameters, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}")


def build_scheduler(name: str, optimizer: optim.Optimizer, step_size: int = 2, gamma: float = 0.5):
    """StepLR (multiply the learning rate by `gamma` every `step_size` epochs) or None."""
    if name == "step":
        return StepLR(optimizer, step_size=step_size, gamma=gamma)
    if name == "none":
        return None
    raise ValueError(f"unknown scheduler {name!r}")


# --- Training and testing ---------------------------------------------------------------------

def train(model: nn.Module, device: torch.device, train_loader: DataLoader, loss_fn: nn.Module,
          optimizer: optim.Optimizer, epoch: int, epochs: int, log_interval: int = 100,
          dry_run: bool = False) -> dict:
    """Train for one epoch; return the average training loss and accuracy, the images seen and the time taken."""
    started = time.perf_counter()
    model.train()  # training mode: dropout drops, batch norm uses and updates batch statistics
    steps = len(train_loader)
    loss_sum = torch.zeros((), device=device)  # tensors, so the GPU never waits for .item() each step
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    # The post's running_loss: the batch losses since the last printed line, printed as their average.
    # The post adds loss.item() to a float every step; .item() makes the CPU wait for the GPU, so we
    # add up a tensor instead and call .item() only when we print.
    running_loss, running_steps = torch.zeros((), device=device), 0
    for step, (images, targets) in enumerate(train_loader, start=1):
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
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


def evaluate(model: nn.Module, device: torch.device, loader: DataLoader, loss_fn: nn.Module,
             dry_run: bool = False, return_predictions: bool = False) -> dict:
    """Average loss, accuracy and counts of `model` on `loader`'s images (and, if asked, every prediction)."""
    model.eval()  # evaluation mode: dropout off, batch norm uses the statistics it learned
    loss_sum, correct, seen = 0.0, 0, 0
    predictions, targets_seen = [], []
    with torch.no_grad():  # no gradients needed to evaluate: faster, less memory
        for images, targets in loader:
            images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
            outputs = model(images)
            # The loss is the batch's mean: times the batch's size it is the batch's sum, and the
            # sums divided once by the number of images give the right average even when the last
            # batch is smaller than the others.
            loss_sum += loss_fn(outputs, targets).item() * len(targets)
            predicted = outputs.argmax(dim=1)  # the class with the highest score
            correct += (predicted == targets).sum().item()
            seen += len(targets)
            if return_predictions:
                predictions.append(predicted.cpu())
                targets_seen.append(targets.cpu())
            if dry_run:
                break
    metrics = {"loss": loss_sum / seen, "accuracy": correct / seen, "correct": correct, "images": seen}
    if return_predictions:
        metrics |= {"predictions": torch.cat(predictions), "targets": torch.cat(targets_seen)}
    return metrics


def test(model: nn.Module, device: torch.device, test_loader: DataLoader, loss_fn: nn.Module,
         dry_run: bool = False, return_predictions: bool = False) -> dict:
    """Evaluate on the test set and print the post's line; return loss, accuracy and counts (and predictions)."""
    metrics = evaluate(model, device, test_loader, loss_fn, dry_run, return_predictions)
    print(f"Test Accuracy: {100 * metrics['accuracy']:.2f}%")  # as the post prints it
    print(f"Test set: {metrics['correct']}/{metrics['images']} correct, average loss {metrics['loss']:.4f}")
    return {"test_loss": metrics.pop("loss"), "test_accuracy": metrics.pop("accuracy"),
            "test_correct": metrics.pop("correct"), "test_images": metrics.pop("images"),
            **metrics}  # and the predictions, if asked for


def validate(model: nn.Module, device: torch.device, val_loader: DataLoader, loss_fn: nn.Module,
             dry_run: bool = False) -> dict:
    """Evaluate on the validation images, print their accuracy; return val_loss and val_accuracy."""
    metrics = evaluate(model, device, val_loader, loss_fn, dry_run)
    print(f"Validation accuracy: {100 * metrics['accuracy']:.2f}%")
    return {"val_loss": metrics["loss"], "val_accuracy": metrics["accuracy"]}


# --- Early stopping ---------------------------------------------------------------------------

def best_epoch(history: list[dict]) -> dict | None:
    """The row of the epoch with the highest validation accuracy (the earliest on a tie), or None."""
    rows = [row for row in history if row.get("val_accuracy") is not None]
    return max(rows, key=lambda row: row["val_accuracy"]) if rows else None  # max keeps the first of equals


def epochs_without_improvement(history: list[dict]) -> int:
    """How many epochs have passed since the best validation accuracy (0: the last epoch was the best)."""
    best = best_epoch(history)
    return history[-1]["epoch"] - best["epoch"] if best is not None else 0


# --- Figures ----------------------------------------------------------------------------------

def plot_confusion_matrix(counts: torch.Tensor, class_names: list[str], path: Path, title: str = "",
                          show: bool = False) -> Path:
    """Save a heatmap of the confusion matrix normalised per true class (each row sums to 1)."""
    import matplotlib.pyplot as plt

    counts = torch.as_tensor(counts, dtype=torch.float64)
    rates = counts / counts.sum(dim=1, keepdim=True).clamp_min(1)  # a class with no images: a row of 0s, not NaN
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(9, 7.5))
    image = ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted class", ylabel="true class")
    ax.set_xticklabels(class_names, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticklabels(class_names)
    for row in range(n):
        for column in range(n):
            value = rates[row, column].item()
            ax.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=8,
                    color="white" if value > 0.5 else "black")  # readable on dark and light cells
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return plots.save_figure(fig, path, show)


def prediction_titles(predictions: torch.Tensor, targets: torch.Tensor, class_names: list[str]) -> list[str]:
    """One title per image, the predicted class above the true one; a wrong guess is marked ' (x)', as in T03."""
    return [f"pred: {class_names[p]}" + ("" if p == t else " (x)") + f"\ntrue: {class_names[t]}"
            for p, t in zip(predictions.tolist(), targets.tolist())]


def hardest_classes(counts: torch.Tensor, class_names: list[str], how_many: int = 3) -> str:
    """The classes with the lowest test accuracy, e.g. 'Shirt 61.2%, Pullover 79.0%, Coat 80.3%'."""
    per_class = counts.diag().double() / counts.sum(dim=1).clamp_min(1)
    order = per_class.argsort()[:how_many].tolist()
    return ", ".join(f"{class_names[i]} {100 * per_class[i].item():.1f}%" for i in order)


def open_tensorboard(out_dir: Path):
    """A SummaryWriter writing to <run folder>/tensorboard, or None (with a hint) if tensorboard is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        print("--tensorboard: the tensorboard package is not installed (pip install tensorboard); "
              "carrying on without it.")
        return None
    print(f"TensorBoard: view the curves with  tensorboard --logdir {out_dir / 'tensorboard'}")
    return SummaryWriter(log_dir=str(out_dir / "tensorboard"))


def add_scalars(writer, row: dict) -> None:
    """Write one epoch's losses and accuracies to TensorBoard, and flush them to disk at once."""
    epoch = row["epoch"]
    writer.add_scalar("Loss/train", row["train_loss"], epoch)
    writer.add_scalar("Loss/test", row["test_loss"], epoch)
    writer.add_scalar("Accuracy/train", row["train_accuracy"], epoch)
    writer.add_scalar("Accuracy/test", row["test_accuracy"], epoch)
    if "val_accuracy" in row:
        writer.add_scalar("Loss/validation", row["val_loss"], epoch)
        writer.add_scalar("Accuracy/validation", row["val_accuracy"], epoch)
    writer.flush()  # a run stopped later (Ctrl-C, divergence) keeps the epochs it finished


# --- Command line -----------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command-line flags; defaults are the posts' set-up."""
    parser = cli.ArgumentParser(description="T02: FashionMNIST (or MNIST) with an MLP, a deeper MLP or a CNN.")
    parser.add_argument("--model", choices=list(MODELS), default="mlp",
                        help="mlp: 784-512-512-10 (the official tutorial's); mlp-deep: 784-1024-1024-512-512-10; "
                             "cnn: three conv blocks with batch norm and dropout (default: mlp)")
    parser.add_argument("--dataset", choices=["fashion-mnist", "mnist"], default="fashion-mnist",
                        help="which dataset (default: fashion-mnist)")
    parser.add_argument("--measured-stats", action="store_true",
                        help="normalise with the training set's measured mean and std instead of the posts' 0.5/0.5")
    parser.add_argument("--batch-size", type=cli.positive_int, default=64, metavar="N",
                        help="input batch size for training (default: 64; at least 2 for the CNN)")
    parser.add_argument("--test-batch-size", type=cli.positive_int, default=1000, metavar="N",
                        help="input batch size for testing (default: 1000)")
    parser.add_argument("--epochs", type=cli.positive_int, default=5, metavar="N",
                        help="number of epochs to train (default: 5)")
    parser.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd",
                        help="sgd (with --momentum) or adam (default: sgd)")
    parser.add_argument("--lr", type=cli.positive_float, default=0.01, metavar="LR",
                        help="learning rate (default: 0.01; for adam try 0.001)")
    parser.add_argument("--momentum", type=cli.momentum, default=0.9, metavar="M",
                        help="SGD momentum, 0 <= M < 1 (default: 0.9; ignored by adam)")
    parser.add_argument("--scheduler", choices=["none", "step"], default="none",
                        help="step: multiply the learning rate by --gamma every --step-size epochs (default: none)")
    parser.add_argument("--step-size", type=cli.positive_int, default=2, metavar="N",
                        help="epochs between learning-rate drops with --scheduler step (default: 2)")
    parser.add_argument("--gamma", type=cli.positive_float, default=0.5, metavar="G",
                        help="learning-rate factor at each drop with --scheduler step (default: 0.5)")
    parser.add_argument("--log-interval", type=cli.positive_int, default=100, metavar="N",
                        help="print the average training loss of the last N steps, every N steps (default: 100)")
    parser.add_argument("--val-size", type=cli.non_negative_int, default=0, metavar="N",
                        help="hold out N training images (chosen by --seed) as a validation set, report its accuracy "
                             "every epoch and save the best epoch's weights as best_model.pt (default: 0, none)")
    parser.add_argument("--patience", type=cli.non_negative_int, default=0, metavar="K",
                        help="early stopping: stop after K epochs without a better validation accuracy and keep "
                             "the best epoch's weights; needs --val-size (default: 0, off)")
    parser.add_argument("--dry-run", action="store_true",
                        help="train on one batch and test on one batch, to check that everything runs")
    # Every run now writes checkpoint.pt after each epoch; older commands that ask for it still work.
    parser.add_argument("--save-checkpoint", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--resume", type=cli.existing_file, default=None, metavar="PATH",
                        help="continue training from the checkpoint.pt of an earlier run, in that run's folder "
                             "(the flags that define the run must be the same; --epochs may grow)")
    parser.add_argument("--save-model", action="store_true",
                        help="save the trained weights alone (a state dict) as <dataset>_<model>.pt in the run folder")
    parser.add_argument("--tensorboard", action="store_true",
                        help="also write loss and accuracy for TensorBoard (needs: pip install tensorboard)")
    add_device_arguments(parser)
    cli.add_run_arguments(parser)
    args = parser.parse_args(argv)
    if args.patience and not args.val_size:
        parser.error("--patience needs --val-size: early stopping watches the accuracy on validation images, "
                     "never on the test set")
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    """Train and test one model; write checkpoints, metrics and figures to the run folder; return the history."""
    args = parse_args(argv)
    if args.model == "cnn" and args.batch_size == 1:
        raise cli.UserError("--model cnn needs --batch-size 2 or more: batch norm normalises each training batch "
                            "by its own mean and variance, which a batch of one image does not have")
    device = device_from_args(args)
    loader_generator = seed_everything(args.seed, args.deterministic)

    # 1. Data: the dataset, normalised, and its two loaders (training shuffled, test never).
    loaded = load_data(args.dataset, args.data_dir, args.measured_stats, args.classic_pipeline)
    if args.val_size:  # a validation set, held out of the training images: see hold_out_validation()
        loaded = hold_out_validation(loaded, args.val_size, args.seed)
    loaded = keep_on_gpu_if_it_fits(loaded, device, args.num_workers)  # no copy per batch, where it fits
    train_loader, test_loader = make_loaders(loaded, args.batch_size, args.test_batch_size, device,
                                             loader_generator, args.num_workers)
    val_loader = (make_eval_loader(loaded.val_set, args.test_batch_size, device, args.num_workers)
                  if loaded.val_set is not None else None)

    # 2. Model, loss, optimizer and learning-rate schedule.
    model = build_model(args.model, device)
    loss_fn = nn.CrossEntropyLoss()  # softmax + negative log-likelihood, on the model's raw logits
    optimizer = build_optimizer(args.optimizer, model.parameters(), args.lr, args.momentum)
    scheduler = build_scheduler(args.scheduler, optimizer, args.step_size, args.gamma)  # None: constant lr

    # 3. The epoch loop. TrainingRun (common/lifecycle.py) is the bookkeeping around it: the run
    # folder and train.log, --resume, a checkpoint after every epoch, Ctrl-C, divergence, metrics.
    # A checkpoint resumes only with the flags that define the run: others would train a different one.
    must_match = ("model", "dataset", "optimizer", "scheduler", "step_size", "gamma", "batch_size", "lr",
                  "momentum", "measured_stats", "val_size", "patience")
    with TrainingRun(__file__, args, model, optimizer, scheduler, loader_generator, must_match=must_match,
                     name=f"{args.dataset}_{args.model}") as run:
        held_out = f", {len(loaded.val_set):,} validation" if loaded.val_set is not None else ""
        print(f"{args.dataset}: {len(loaded.train_set):,} training{held_out} and {len(loaded.test_set):,} test "
              f"images, normalised with mean {loaded.mean} and std {loaded.std}")
        print(f"{model}\nParameters: {count_parameters(model):,}")
        writer = open_tensorboard(run.out_dir) if args.tensorboard else None
        stopped_early = False
        for epoch in run.epochs():
            # Early stopping, read from the history before each epoch (so a resumed run that had
            # already stopped stays stopped): K epochs in a row without a better validation accuracy.
            if args.patience and epochs_without_improvement(run.history) >= args.patience:
                stopped_early = True
                break
            train_metrics = train(model, device, train_loader, loss_fn, optimizer, epoch, args.epochs,
                                  args.log_interval, args.dry_run)
            val_metrics = validate(model, device, val_loader, loss_fn, args.dry_run) if val_loader else {}
            best = best_epoch(run.history)
            if val_metrics and (best is None or val_metrics["val_accuracy"] > best["val_accuracy"]):
                # The best weights so far. Saved before this epoch's checkpoint: if the run stops in
                # between, resuming trains this epoch again, to the same weights, and saves them again.
                run.save_weights("best_model.pt")
            test_metrics = test(model, device, test_loader, loss_fn, args.dry_run, return_predictions=True)
            predictions, targets = test_metrics.pop("predictions"), test_metrics.pop("targets")
            if scheduler is not None:
                scheduler.step()  # once per epoch, after that epoch's optimizer steps
            row = run.end_epoch(train_metrics, test_metrics, **val_metrics)
            if writer is not None:
                add_scalars(writer, row)
        if writer is not None:
            writer.close()

        if args.patience:  # keep the best epoch's weights, not the last one's
            best = best_epoch(run.history)
            kept = f"epoch {best['epoch']} (validation accuracy {100 * best['val_accuracy']:.2f}%)"
            if stopped_early:
                print(f"Early stopping: no better validation accuracy for {args.patience} epochs; keeping {kept}")
            else:
                print(f"Keeping {kept}, the best on validation")
            if best["epoch"] != run.history[-1]["epoch"]:  # always so after early stopping
                load_weights(model, run.out_dir / "best_model.pt")
                print("The kept weights on the test set:")
                test_metrics = test(model, device, test_loader, loss_fn, args.dry_run, return_predictions=True)
                predictions, targets = test_metrics.pop("predictions"), test_metrics.pop("targets")

        # The figures, from the final model's predictions.
        name = f"{type(model).__name__} on {args.dataset}"
        run.save_curves(name)
        # The test loader keeps the test set's order, so predictions[i] belongs to test_set[i].
        shown = min(16, len(predictions))
        images = torch.stack([loaded.test_set[i][0] for i in range(shown)])
        titles = prediction_titles(predictions[:shown], targets[:shown], loaded.classes)
        # mean and std undo Normalize, so the pictures show the real 0..1 pixels.
        plots.plot_image_grid(images, titles, run.out_dir / "predictions.png", loaded.mean, loaded.std,
                              show=args.show)
        counts = plots.confusion_matrix(targets, predictions, len(loaded.classes))
        plot_confusion_matrix(counts, loaded.classes, run.out_dir / "confusion_matrix.png",
                              title=f"{name}: {100 * test_metrics['test_accuracy']:.2f}% test accuracy",
                              show=args.show)
        print(f"Hardest classes: {hardest_classes(counts, loaded.classes)}")
        if args.save_model:
            run.save_weights(f"{args.dataset.replace('-', '_')}_{args.model.replace('-', '_')}.pt")
    return run.history


if __name__ == "__main__":
    cli.run_main(main)
