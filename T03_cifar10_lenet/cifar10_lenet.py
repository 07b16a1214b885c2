"""T03 · CIFAR-10 in colour with LeNet-5: overall and per-class accuracy, and a picture of predictions.

The post's set-up: two convolutions and three fully connected layers (LeNet-5), colour
images normalised to -1..1, batches of 4, SGD with lr 0.001 and momentum 0.9, 5 epochs.
It reports about 61% on the 10,000 test images, with cats and birds the hardest classes.

    python T03_cifar10_lenet/cifar10_lenet.py                   # the post's run: 5 epochs, batch 4
    python T03_cifar10_lenet/cifar10_lenet.py --epochs 1 --no-cuda
    python T03_cifar10_lenet/cifar10_lenet.py --dry-run          # one batch of training and of testing
    python T03_cifar10_lenet/cifar10_lenet.py --help             # every flag

The post's code was written before PyTorch 0.4 (`Variable`, `loss.data[0]`, `dataiter.next()`);
this is the same lesson in today's PyTorch, in the shape of pytorch/examples' mnist/main.py:
model, train(), test(), main(). The README has a table of what changed.
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
from torch.nn import functional as F
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


def train(model: nn.Module, device: torch.device, train_loader: DataLoader, optimizer: optim.Optimizer, *,
          loss_fn: nn.Module, epoch: int = 1, log_interval: int = 2000, dry_run: bool = False) -> dict:
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
        images, targets = images.to(device), targets.to(device)
        optimizer.zero_grad()  # gradients add up across backward() calls: clear the last batch's
        loss = loss_fn(model(images), targets)  # the batch's average loss
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


def test(model: nn.Module, device: torch.device, test_loader: DataLoader, *, loss_fn: nn.Module,
         dry_run: bool = False, num_classes: int = 10) -> dict:
    """Evaluate on the test set; return loss, accuracy, counts and the confusion matrix (true x predicted)."""
    model.eval()  # evaluation mode: dropout off, batch norm uses its running statistics
    loss_sum = torch.zeros((), device=device)
    all_targets, all_predictions = [], []
    # The post tests without no_grad(): the results are the same, but PyTorch then records every
    # test batch's graph for a backward() that never comes, which costs memory and time.
    with torch.no_grad():
        for images, targets in test_loader:
            images, targets = images.to(device), targets.to(device)
            outputs = model(images)
            # loss_fn gives the batch's mean; times the batch size, its sum. Dividing the total by the
            # number of images once at the end keeps the average right when the last batch is smaller.
            loss_sum += loss_fn(outputs, targets) * len(targets)
            # The class with the highest score. The post's `_, predicted = torch.max(outputs.data, 1)`
            # takes it from a (values, indices) pair; argmax gives the indices alone.
            all_predictions.append(outputs.argmax(dim=1))
            all_targets.append(targets)
            if dry_run:
                print("Dry run: testing on one batch only.")
                break
    targets, predictions = torch.cat(all_targets), torch.cat(all_predictions)
    # The confusion matrix counts every image tested, whatever the batch size: row = true class,
    # column = predicted class. Each (true, predicted) pair gets one bin, number true * 10 + predicted.
    # (The post's loop did `for i in range(4)` inside each batch, which breaks when the last batch is smaller.)
    pairs = targets * num_classes + predictions
    confusion = torch.bincount(pairs, minlength=num_classes * num_classes).reshape(num_classes, num_classes).cpu()
    correct, seen = int(confusion.trace()), len(targets)
    test_loss = loss_sum.item() / seen
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


def per_class_figure(confusion: torch.Tensor, class_names: tuple[str, ...] = CLASSES) -> plt.Figure:
    """A bar chart of each class's test accuracy, with the overall accuracy and chance as lines."""
    accuracies = per_class_accuracy(confusion)
    overall = int(confusion.trace()) / int(confusion.sum())
    fig, ax = plt.subplots(figsize=(8, 4))
    bars = ax.bar(class_names, [0.0 if a is None else 100 * a for a in accuracies], color="tab:blue", zorder=1)
    # The two lines go over the bars (zorder 2), the value labels over the lines (zorder 3) on an
    # opaque box, so a line that meets a label stops at its edge instead of striking through it.
    ax.axhline(100 * overall, color="tab:green", linestyle="--", zorder=2, label=f"all classes ({100 * overall:.1f}%)")
    ax.axhline(100 / len(class_names), color="tab:gray", linestyle=":", zorder=2, label="chance")
    for bar, accuracy in zip(bars, accuracies):
        label = "n/a" if accuracy is None else f"{100 * accuracy:.1f}%"
        inside = bar.get_height() >= 15  # tall enough: white, inside the bar, just under its top
        ax.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", fontsize=8,
                    va="top" if inside else "bottom", xytext=(0, -3 if inside else 3), textcoords="offset points",
                    color="white" if inside else "black", zorder=3,
                    bbox={"boxstyle": "square,pad=0.2", "edgecolor": "none",
                          "facecolor": bar.get_facecolor() if inside else "white"})
    ax.set(ylim=(0, 118), ylabel="test accuracy (%)", title="LeNet on CIFAR-10: accuracy per class")
    ax.legend(loc="upper center", ncol=2, fontsize=8)  # above the tallest possible bar (100%)
    fig.tight_layout()
    return fig


def show_predictions(model: nn.Module, test_set: TensorDataset, count: int) -> tuple[list[str], plt.Figure]:
    """Predict the first `count` test images: the post's GroundTruth/Predicted lines, and a picture of them."""
    images, labels = test_set[:count]  # the post takes the first batch: images, labels = dataiter.next()
    model.eval()
    with torch.no_grad():
        predicted = model(images).argmax(dim=1)
    # Spaced exactly as the post's print('GroundTruth: ', ...) and print('Predicted: ', ...).
    lines = ["GroundTruth:  " + " ".join(f"{CLASSES[i]:>5s}" for i in labels.tolist()),
             "Predicted:  " + " ".join(f"{CLASSES[i]:>5s}" for i in predicted.tolist())]
    columns = min(len(images), 8)
    rows = -(-len(images) // columns)  # rounded up
    fig, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, truth, guess in zip(axes.flat, images.cpu(), labels.tolist(), predicted.tolist()):
        # Undo Normalize (x * std + mean) so the picture shows the real colours; matplotlib wants
        # height x width x colour, the model channel x height x width.
        ax.imshow((image.permute(1, 2, 0) * torch.tensor(STD) + torch.tensor(MEAN)).clamp(0, 1).numpy())
        ax.set_title(f"true: {CLASSES[truth]}\npredicted: {CLASSES[guess]}" + ("" if truth == guess else " (x)"),
                     fontsize=9)
    fig.tight_layout()
    return lines, fig


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
    parser.add_argument("--momentum", type=float, default=0.9, metavar="M",
                        help="SGD momentum, at least 0 and less than 1 (default: 0.9; 0 turns it off)")
    parser.add_argument("--dry-run", action="store_true",
                        help="train on one batch and test on one batch, to check that everything runs")
    parser.add_argument("--log-interval", type=cli.positive_int, default=2000, metavar="N",
                        help="print the average loss every N mini-batches (default: 2000)")
    parser.add_argument("--num-images", type=cli.positive_int, default=4, metavar="N",
                        help="how many test images to show with their predictions (default: 4, as in the post)")
    parser.add_argument("--save-model", action="store_true",
                        help="save the trained weights (state dict) as cifar10_lenet.pt in the run folder")
    parser.add_common_flags()  # --seed, --device/--no-cuda/--no-mps, --data-dir, --out-dir, --resume, --show
    args = parser.parse_args(argv)
    if not 0 <= args.momentum < 1:  # also false for nan
        parser.error(f"argument --momentum: must be at least 0 and less than 1, got {args.momentum}")
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    device = select_device(args)  # CUDA, then Apple's MPS, then the CPU (or what --device says)
    generator = seed_everything(args.seed, args.deterministic)  # and a generator for the shuffling

    # 1. Data. torchvision reads the CIFAR-10 files; data.download() fetches them first if need be.
    root = data.download("cifar10", args.data_dir)
    train_set, test_set = datasets.CIFAR10(root, train=True), datasets.CIFAR10(root, train=False)
    # What transforms.Compose([ToTensor(), Normalize(MEAN, STD)]) does to each image, done once for all
    # 50,000 (the same numbers, bit for bit): pixels 0..255 -> 0..1 -> -1..1, and CIFAR's N x 32 x 32 x 3
    # bytes (colour last) permuted to N x 3 x 32 x 32 (colour first, as the model wants). Kept as tensors
    # (on the GPU, if we train on one), no image is decoded again in any epoch.
    mean, std = torch.tensor(MEAN), torch.tensor(STD)  # one value per colour channel
    train_images = ((torch.from_numpy(train_set.data).float() / 255 - mean) / std).permute(0, 3, 1, 2).to(device)
    test_images = ((torch.from_numpy(test_set.data).float() / 255 - mean) / std).permute(0, 3, 1, 2).to(device)
    train_set = TensorDataset(train_images, torch.tensor(train_set.targets).to(device))
    test_set = TensorDataset(test_images, torch.tensor(test_set.targets).to(device))
    # Always shuffle the training set (a fixed order teaches the model the order), never the test set.
    # The sampler hands the loader a whole batch of shuffled indices and batch_size=None passes the
    # dataset's answer (4 images, one indexing operation) straight through: batches as random as
    # DataLoader(train_set, batch_size=4, shuffle=True) makes, without a call per image and a stack per step.
    train_sampler = BatchSampler(RandomSampler(train_set, generator=generator), args.batch_size, drop_last=False)
    train_loader = DataLoader(train_set, sampler=train_sampler, batch_size=None)
    test_loader = DataLoader(test_set, batch_size=args.test_batch_size, shuffle=False)

    # 2. Model, loss and optimizer. (The post keeps the learning rate constant: no scheduler.)
    model = LeNet(len(CLASSES)).to(device)
    criterion = nn.CrossEntropyLoss()  # log_softmax + negative log-likelihood, on the raw logits
    optimizer = optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)

    # 3. The epoch loop. TrainingRun (common/run.py) is the bookkeeping around it: the run folder,
    # a checkpoint after every epoch, --resume, Ctrl-C, divergence, metrics.json and curves.png.
    with TrainingRun("cifar10_lenet", args, model, optimizer, None, generator,
                     must_match=["batch_size", "lr", "momentum"]) as run:
        run.log(f"{model}\nParameters: {sum(p.numel() for p in model.parameters()):,}")
        for epoch in run.epochs():
            train_metrics = train(model, device, train_loader, optimizer, loss_fn=criterion, epoch=epoch,
                                  log_interval=args.log_interval, dry_run=args.dry_run)
            test_metrics = test(model, device, test_loader, loss_fn=criterion, dry_run=args.dry_run)
            confusion = test_metrics.pop("confusion")  # a 10 x 10 table: kept for the ending, not a metric
            per_class = {f"test_accuracy_{name}": a for name, a in zip(CLASSES, per_class_accuracy(confusion))}
            run.end_epoch(train_metrics, test_metrics, **per_class)
        if run.epoch == 0:  # a finished run resumed with the same --epochs: nothing to train, so test it once
            confusion = test(model, device, test_loader, loss_fn=criterion)["confusion"]
        run.log("Finished Training")  # the post's words at this point

        # The post's ending: the first test images with their true and predicted classes, then the accuracies.
        lines, picture = show_predictions(model, test_set, args.num_images)
        run.save_figure(picture, "predictions.png")
        for line in lines + post_style_lines(confusion):
            run.log(line)
        run.save_figure(per_class_figure(confusion), "per_class.png")
        run.save_curves("LeNet on CIFAR-10")
        if args.save_model:
            run.save_weights("cifar10_lenet.pt")
    return run.history


if __name__ == "__main__":
    cli.run_main(main)
