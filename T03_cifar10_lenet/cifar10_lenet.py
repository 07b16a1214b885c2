"""T03 · CIFAR-10 in colour with LeNet-5: overall and per-class accuracy, and a picture of predictions.

The post's set-up: two convolutions and three fully connected layers (LeNet-5), colour
images normalised to -1..1, batches of 4, SGD with lr 0.001 and momentum 0.9, 5 epochs.
It reports about 61% on the 10,000 test images, with cats and birds the hardest classes.

    python T03_cifar10_lenet/cifar10_lenet.py                   # the post's run: 5 epochs, batch 4
    python T03_cifar10_lenet/cifar10_lenet.py --epochs 1 --no-cuda
    python T03_cifar10_lenet/cifar10_lenet.py --dry-run          # one batch of training and of testing
    python T03_cifar10_lenet/cifar10_lenet.py --help             # every flag

The post's code was written before PyTorch 0.4 (`Variable`, `loss.data[0]`, `dataiter.next()`);
this is the same lesson in today's PyTorch. The README has a table of what changed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn, optim
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so `common/` imports from any folder
try:
    from common import cli, data, plots
    from common.device import add_device_arguments, device_from_args
    from common.lifecycle import TrainingRun
    from common.seed import seed_everything
except ModuleNotFoundError as err:
    if not (err.name or "").startswith("common"):
        raise
    sys.exit("error: this script needs the repository's common/ folder (clone the whole repository). "
             "LeNet, train() and test() alone copy out without it.")

# The post's short class names, in CIFAR-10's label order. torchvision's `dataset.classes`
# says 'airplane' and 'automobile'; the post shortens them so each fits in 5 characters.
CLASSES = ("plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# Normalize with mean 0.5 and std 0.5 per channel maps pixels from 0..1 to -1..1, as in the post.
# (The real per-channel statistics are a little different: T01_mnist_nn/get_mnist_statistics.py
# --dataset cifar10 measures them.)
MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


class LeNet(nn.Module):
    """LeNet-5 for 32x32 colour images: two conv + max-pool stages, then 400 -> 120 -> 84 -> 10; outputs logits."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, kernel_size=5)  # 3 colour channels in, 6 feature maps out
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5)
        self.pool = nn.MaxPool2d(2, 2)  # halves height and width; it has no weights, so one serves both stages
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.conv1(x)))  # (N, 3, 32, 32) -> conv (N, 6, 28, 28) -> pool (N, 6, 14, 14)
        x = self.pool(F.relu(self.conv2(x)))  # -> conv (N, 16, 10, 10) -> pool (N, 16, 5, 5)
        x = torch.flatten(x, 1)  # -> (N, 400); the post writes x.view(-1, 16 * 5 * 5)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        # No ReLU and no softmax on the last layer: CrossEntropyLoss wants raw scores (logits)
        # and applies log_softmax itself.
        return self.fc3(x)


Net = LeNet  # the name the post (and PyTorch's CIFAR-10 tutorial) gives this class


def count_parameters(model: nn.Module) -> int:
    """Number of trainable numbers (weights and biases) in `model`."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def train(model: nn.Module, device: torch.device, train_loader: DataLoader, optimizer: optim.Optimizer,
          criterion: nn.Module, epoch: int, log_interval: int = 2000, dry_run: bool = False) -> dict:
    """Train for one epoch, printing the post's `[epoch, batch] loss:` line; return the average loss and counts."""
    started = time.perf_counter()
    model.train()  # training mode (matters for dropout and batch norm; a good habit everywhere)
    # The post adds loss.data[0] (today: loss.item()) to a Python float every batch. .item() makes
    # the CPU wait for the GPU, 12,500 times an epoch at batch 4, so we add up a tensor instead and
    # read it only when we print.
    loss_sum = torch.zeros((), device=device)
    seen = 0
    printed_sum, printed_seen = 0.0, 0  # the totals at the last printed line
    for batch_idx, (images, targets) in enumerate(train_loader):
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        optimizer.zero_grad()  # gradients add up across backward() calls: clear the last batch's
        loss = criterion(model(images), targets)  # the batch's average loss
        loss.backward()  # compute d(loss)/d(weight) for every weight
        optimizer.step()  # move each weight a little against its gradient
        loss_sum += loss.detach() * len(images)  # detach: keep the number, not the graph behind it
        seen += len(images)
        if (batch_idx + 1) % log_interval == 0:
            total = loss_sum.item()
            # The average loss over the batches since the last line, as the post's running_loss / 2000.
            print(f"[{epoch}, {batch_idx + 1:5d}] loss: {(total - printed_sum) / (seen - printed_seen):.3f}")
            printed_sum, printed_seen = total, seen
        if dry_run:
            print("Dry run: stopping after one batch of training.")
            break
    return {"train_loss": loss_sum.item() / seen, "train_images": seen,
            "train_seconds": time.perf_counter() - started}


def test(model: nn.Module, device: torch.device, test_loader: DataLoader, dry_run: bool = False,
         num_classes: int = 10) -> dict:
    """Evaluate on the test set; return loss, accuracy, counts and the confusion matrix (true x predicted)."""
    model.eval()  # evaluation mode: dropout off, batch norm uses its running statistics
    loss_sum, all_targets, all_predictions = 0.0, [], []
    with torch.no_grad():  # the post's Variable(..., volatile=True) became this
        for images, targets in test_loader:
            images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
            outputs = model(images)
            # Sum the losses (not the batch mean), then divide once by the number of images: the
            # average is then right even when the last batch is smaller than the others.
            loss_sum += F.cross_entropy(outputs, targets, reduction="sum").item()
            all_predictions.append(outputs.argmax(dim=1).cpu())  # the class with the highest score
            all_targets.append(targets.cpu())
            if dry_run:
                print("Dry run: testing on one batch only.")
                break
    targets, predictions = torch.cat(all_targets), torch.cat(all_predictions)
    # The confusion matrix counts every image tested, whatever the batch size: row = true class,
    # column = predicted class. Each (true, predicted) pair gets one bin, number true * 10 + predicted.
    # (The post's loop did `for i in range(4)` inside each batch, which breaks when the last batch is smaller.)
    pairs = targets * num_classes + predictions
    confusion = torch.bincount(pairs, minlength=num_classes * num_classes).reshape(num_classes, num_classes)
    correct, seen = int(confusion.trace()), len(targets)
    test_loss = loss_sum / seen
    print(f"\nTest set: Average loss: {test_loss:.4f}, Accuracy: {correct}/{seen} ({100.0 * correct / seen:.0f}%)\n")
    return {"test_loss": test_loss, "test_accuracy": correct / seen, "test_correct": correct,
            "test_images": seen, "confusion": confusion}


def per_class_accuracy(confusion: torch.Tensor) -> list[float | None]:
    """Fraction of each true class predicted correctly (diagonal / row sum); None for a class with no images."""
    totals = confusion.sum(dim=1)
    return [None if int(total) == 0 else int(confusion[i, i]) / int(total) for i, total in enumerate(totals)]


def post_style_lines(confusion: torch.Tensor, class_names: tuple[str, ...] = CLASSES) -> list[str]:
    """The post's closing lines: overall accuracy, then one `Accuracy of plane : 70 %` line per class."""
    correct, seen = int(confusion.trace()), int(confusion.sum())
    # The post prints with '%d %%', which cuts off the decimals (61.9 -> 61): so does `//`.
    lines = [f"Accuracy of the network on the {seen} test images: {100 * correct // seen} %"]
    for i, name in enumerate(class_names):
        right, total = int(confusion[i, i]), int(confusion[i].sum())  # row i: every image whose true class is i
        percent = f"{100 * right // total:2d} %" if total else "n/a (no test images of this class)"
        lines.append(f"Accuracy of {name:>5s} : {percent}")
    return lines


def plot_per_class(accuracies: list[float | None], overall: float, path: Path, class_names: tuple[str, ...] = CLASSES,
                   show: bool = False) -> Path:
    """Save a bar chart of each class's test accuracy, with the overall accuracy and chance as lines."""
    import matplotlib.pyplot as plt

    heights = [0.0 if a is None else 100 * a for a in accuracies]
    fig, ax = plt.subplots(figsize=(8, 4))
    bars = ax.bar(class_names, heights, color="tab:blue", zorder=1)
    # The two lines go over the bars (zorder 2), the value labels over the lines (zorder 3) on an
    # opaque box, so a line that meets a label stops at its edge instead of striking through it.
    ax.axhline(100 * overall, color="tab:green", linestyle="--", zorder=2,
               label=f"all classes ({100 * overall:.1f}%)")
    ax.axhline(100 / len(class_names), color="tab:gray", linestyle=":", zorder=2, label="chance")
    for bar, accuracy in zip(bars, accuracies):
        label = "n/a" if accuracy is None else f"{100 * accuracy:.1f}%"
        top = (bar.get_x() + bar.get_width() / 2, bar.get_height())
        if bar.get_height() >= 15:  # tall enough: white, inside the bar, just under its top
            ax.annotate(label, top, ha="center", va="top", fontsize=8, color="white", xytext=(0, -3),
                        textcoords="offset points", zorder=3,
                        bbox={"boxstyle": "square,pad=0.2", "facecolor": bar.get_facecolor(), "edgecolor": "none"})
        else:  # a short bar: the label sits above it on white
            ax.annotate(label, top, ha="center", va="bottom", fontsize=8, xytext=(0, 3),
                        textcoords="offset points", zorder=3,
                        bbox={"boxstyle": "square,pad=0.2", "facecolor": "white", "edgecolor": "none"})
    ax.set(ylim=(0, 118), ylabel="test accuracy (%)", title="LeNet on CIFAR-10: accuracy per class")
    ax.legend(loc="upper center", ncol=2, fontsize=8)  # above the tallest possible bar (100%)
    fig.tight_layout()
    return plots.save_figure(fig, path, show)


def show_predictions(model: nn.Module, device: torch.device, test_set: Dataset, count: int, path: Path,
                     show: bool = False) -> None:
    """Predict the first `count` test images; print the post's GroundTruth/Predicted lines and save a picture."""
    count = min(count, len(test_set))
    images = torch.stack([test_set[i][0] for i in range(count)])
    labels = [int(test_set[i][1]) for i in range(count)]
    model.eval()
    with torch.no_grad():
        predicted = model(images.to(device)).argmax(dim=1).tolist()
    # Spaced exactly as the post's print('GroundTruth: ', ...) and print('Predicted: ', ...).
    print("GroundTruth:  " + " ".join(f"{CLASSES[i]:>5s}" for i in labels))
    print("Predicted:  " + " ".join(f"{CLASSES[i]:>5s}" for i in predicted))
    titles = [f"true: {CLASSES[t]}\npredicted: {CLASSES[p]}" + ("" if t == p else " (x)")
              for t, p in zip(labels, predicted)]
    # plot_image_grid undoes Normalize (x * std + mean), so the picture shows the real colours.
    plots.plot_image_grid(images, titles, path, mean=MEAN, std=STD, columns=8, show=show)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = cli.ArgumentParser(description="T03: CIFAR-10 with LeNet-5, per-class accuracy and a picture.")
    parser.add_argument("--batch-size", type=cli.positive_int, default=4, metavar="N",
                        help="input batch size for training (default: 4, as in the post)")
    parser.add_argument("--test-batch-size", type=cli.positive_int, default=1000, metavar="N",
                        help="input batch size for testing (default: 1000; it does not change the results)")
    parser.add_argument("--epochs", type=cli.positive_int, default=5, metavar="N",
                        help="number of epochs to train (default: 5)")
    parser.add_argument("--lr", type=cli.positive_float, default=0.001, metavar="LR",
                        help="learning rate (default: 0.001)")
    parser.add_argument("--momentum", type=cli.momentum, default=0.9, metavar="M",
                        help="SGD momentum (default: 0.9; 0 turns it off)")
    parser.add_argument("--dry-run", action="store_true",
                        help="train on one batch and test on one batch, to check that everything runs")
    parser.add_argument("--log-interval", type=cli.positive_int, default=2000, metavar="N",
                        help="print the average loss every N mini-batches (default: 2000)")
    parser.add_argument("--num-images", type=cli.positive_int, default=4, metavar="N",
                        help="how many test images to show with their predictions (default: 4, as in the post)")
    parser.add_argument("--save-model", action="store_true",
                        help="save the trained weights (state dict) as cifar10_lenet.pt in the run folder")
    parser.add_argument("--resume", type=cli.existing_file, default=None, metavar="PATH",
                        help="continue training from the checkpoint.pt of an earlier run, in that run's folder "
                             "(--batch-size, --lr and --momentum must be the same; --epochs may grow)")
    add_device_arguments(parser)
    cli.add_run_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    device = device_from_args(args)
    loader_generator = seed_everything(args.seed, args.deterministic)

    # 1. Data. ToTensor turns each 32x32 colour image into a 3x32x32 tensor of 0..1; Normalize maps it to -1..1.
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    train_set = data.load_dataset("cifar10", args.data_dir, train=True, transform=transform)
    test_set = data.load_dataset("cifar10", args.data_dir, train=False, transform=transform)
    if not args.classic_pipeline:
        # Transform every image once and keep the tensors in memory. With 4 images a batch the
        # per-image PIL work would otherwise be a large part of every step. (Random augmentation
        # such as RandomHorizontalFlip must run afresh every epoch, so to_tensor_dataset refuses it:
        # use --classic-pipeline with it.)
        train_set, test_set = data.to_tensor_dataset(train_set), data.to_tensor_dataset(test_set)
        # On a GPU with memory to spare, keep them there: then no batch is copied from the host.
        train_set, test_set = data.keep_on_gpu_if_it_fits([train_set, test_set], device, args.num_workers)
    loader_kwargs = data.loader_options(args.num_workers, device, train_set)  # batching, workers, pinned memory
    # Always shuffle the training set, never the test set (so the pictures show the same images every run).
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True,
                              generator=loader_generator, **loader_kwargs)
    test_loader = DataLoader(test_set, batch_size=args.test_batch_size, shuffle=False, **loader_kwargs)

    # 2. Model, loss and optimizer. (The post keeps the learning rate constant: no scheduler.)
    model = LeNet(len(CLASSES)).to(device)
    criterion = nn.CrossEntropyLoss()  # log_softmax + negative log-likelihood, on the raw logits
    optimizer = optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)

    # 3. The epoch loop. TrainingRun (common/lifecycle.py) is the bookkeeping around it: the run
    # folder and train.log, --resume, a checkpoint after every epoch, Ctrl-C, divergence, metrics.
    with TrainingRun(__file__, args, model, optimizer, None, loader_generator,
                     must_match=("batch_size", "lr", "momentum")) as run:
        print(f"{model}\nParameters: {count_parameters(model):,}")
        for epoch in run.epochs():
            train_metrics = train(model, device, train_loader, optimizer, criterion, epoch, args.log_interval,
                                  args.dry_run)
            test_metrics = test(model, device, test_loader, args.dry_run, len(CLASSES))
            confusion = test_metrics.pop("confusion")  # a 10 x 10 table: kept for the ending, not a metric
            per_class = {f"test_accuracy_{name}": accuracy
                         for name, accuracy in zip(CLASSES, per_class_accuracy(confusion))}
            run.end_epoch(train_metrics, test_metrics, **per_class)

        print("Finished Training")  # the post's words at this point

        # The post's ending: the first test images with their true and predicted classes, then the accuracies.
        show_predictions(model, device, test_set, args.num_images, run.out_dir / "predictions.png", args.show)
        for line in post_style_lines(confusion):
            print(line)
        plot_per_class(per_class_accuracy(confusion), run.history[-1]["test_accuracy"],
                       run.out_dir / "per_class.png", show=args.show)
        run.save_curves("LeNet on CIFAR-10")
        if args.save_model:
            run.save_weights("cifar10_lenet.pt")
    return run.history


if __name__ == "__main__":
    cli.run_main(main)
