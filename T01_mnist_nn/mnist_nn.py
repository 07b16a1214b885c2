"""T01 · MNIST with a simple two-layer network (SimpleNN).

The blog post's first model: flatten a 28x28 digit into 784 numbers, one hidden layer
of 128 units with ReLU, 10 outputs. Trained with Adadelta, it reaches about 98% test
accuracy in 14 epochs.

    python T01_mnist_nn/mnist_nn.py                   # the post's run: 14 epochs, best device
    python T01_mnist_nn/mnist_nn.py --epochs 1 --no-cuda
    python T01_mnist_nn/mnist_nn.py --dry-run         # one batch of training and of testing
    python T01_mnist_nn/mnist_nn.py --help            # every flag

The shape follows pytorch/examples' mnist/main.py: model, train(), test(), main().
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

if __name__ == "__main__":  # run as a script, Ctrl-C while torch loads (a second or two) stops it, no traceback
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # (imported, e.g. in a notebook, nothing changes)
import torch
import torch.nn.functional as F
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
             "SimpleNN, train() and test() alone copy out without it.")

# Mean and standard deviation of the MNIST training pixels (get_mnist_statistics.py prints them).
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


class SimpleNN(nn.Module):
    """784 -> 128 -> 10 with a ReLU in between; outputs log-probabilities."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(28 * 28, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)  # (N, 1, 28, 28) -> (N, 784): a fully connected layer wants flat vectors
        x = F.relu(self.fc1(x))
        x = self.fc2(x)
        # log_softmax here + nll_loss in train() = cross-entropy. A model that returns raw
        # scores (logits) uses F.cross_entropy instead. Never feed softmax *probabilities*
        # to cross_entropy: it takes a log-softmax of its own, and the loss comes out wrong.
        return F.log_softmax(x, dim=1)


def train(model: nn.Module, device: torch.device, train_loader: DataLoader, optimizer: optim.Optimizer, *,
          epoch: int = 1, log_interval: int = 10, dry_run: bool = False) -> dict:
    """Train for one epoch; return the average training loss, the number of images seen and the time taken."""
    started = time.perf_counter()
    model.train()  # training mode (matters for dropout and batch norm; a good habit everywhere)
    total = len(train_loader.dataset)
    loss_sum = torch.zeros((), device=device)  # a tensor, so the GPU never waits for .item() each batch
    seen = 0
    for batch_idx, (images, targets) in enumerate(train_loader):
        images, targets = images.to(device), targets.to(device)
        optimizer.zero_grad()  # gradients add up across backward() calls: clear the last batch's
        output = model(images)
        loss = F.nll_loss(output, targets)  # the batch's average loss
        loss.backward()  # compute d(loss)/d(weight) for every weight
        optimizer.step()  # move each weight a little against its gradient
        loss_sum += loss.detach() * len(images)  # detach: keep the number, not the graph behind it
        seen += len(images)
        if (batch_idx + 1) % log_interval == 0 or seen == total or dry_run:
            print(f"Train Epoch: {epoch} [{seen}/{total} ({100.0 * seen / total:.0f}%)]\tLoss: {loss.item():.6f}")
        if dry_run:
            print("Dry run: stopping after one batch of training.")
            break
    return {"train_loss": loss_sum.item() / seen, "train_images": seen,
            "train_seconds": time.perf_counter() - started}


def test(model: nn.Module, device: torch.device, test_loader: DataLoader, *, dry_run: bool = False) -> dict:
    """Evaluate on the test set; return average loss, accuracy and counts."""
    model.eval()  # evaluation mode: dropout off, batch norm uses its running statistics
    test_loss, correct, seen = 0.0, 0, 0
    with torch.no_grad():  # no gradients needed to evaluate: faster and uses less memory
        for images, targets in test_loader:
            images, targets = images.to(device), targets.to(device)
            output = model(images)
            # Sum the losses (not the batch mean), then divide once by the number of images: the
            # average is then right even when the last batch is smaller than the others.
            test_loss += F.nll_loss(output, targets, reduction="sum").item()
            predicted = output.argmax(dim=1)  # the class with the highest log-probability
            correct += (predicted == targets).sum().item()
            seen += len(targets)
            if dry_run:
                print("Dry run: testing on one batch only.")
                break
    test_loss /= seen
    print(f"\nTest set: Average loss: {test_loss:.4f}, Accuracy: {correct}/{seen} ({100.0 * correct / seen:.0f}%)\n")
    return {"test_loss": test_loss, "test_accuracy": correct / seen, "test_correct": correct, "test_images": seen}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = cli.ArgumentParser(description="T01: MNIST with a simple two-layer network (SimpleNN).")
    parser.add_argument("--batch-size", type=cli.positive_int, default=64, metavar="N",
                        help="input batch size for training (default: 64)")
    parser.add_argument("--test-batch-size", type=cli.positive_int, default=1000, metavar="N",
                        help="input batch size for testing (default: 1000)")
    parser.add_argument("--epochs", type=cli.positive_int, default=14, metavar="N",
                        help="number of epochs to train (default: 14)")
    parser.add_argument("--lr", type=cli.positive_float, default=1.0, metavar="LR",
                        help="learning rate (default: 1.0)")
    parser.add_argument("--gamma", type=cli.positive_float, default=0.7, metavar="M",
                        help="learning-rate step gamma: lr is multiplied by it after each epoch "
                             "(default: 0.7, from pytorch/examples, not the post; --gamma 1 keeps the lr "
                             "constant, as the MNIST post does)")
    parser.add_argument("--dry-run", action="store_true",
                        help="train on one batch and test on one batch, to check that everything runs")
    parser.add_argument("--log-interval", type=cli.positive_int, default=10, metavar="N",
                        help="how many batches to wait before logging training status (default: 10)")
    parser.add_argument("--save-model", action="store_true",
                        help="save the trained weights (state dict) as mnist_simple_nn.pt in the run folder")
    parser.add_common_flags()  # --seed, --device/--no-cuda/--no-mps, --data-dir, --out-dir, --resume, --show
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    device = select_device(args)  # CUDA, then Apple's MPS, then the CPU (or what --device says)
    generator = seed_everything(args.seed, args.deterministic)  # and a generator for the shuffling

    # 1. Data. torchvision reads the MNIST files; data.download() fetches them first if need be.
    root = data.download("mnist", args.data_dir)
    train_set, test_set = datasets.MNIST(root, train=True), datasets.MNIST(root, train=False)
    # What transforms.Compose([ToTensor(), Normalize((0.1307,), (0.3081,))]) does to each image, done
    # once for all 60,000 (the same numbers, bit for bit): pixels 0..255 -> 0..1 -> mean 0, std 1.
    # Kept as tensors (on the GPU, if we train on one), no image is decoded again in any epoch.
    train_images = ((train_set.data.unsqueeze(1).float() / 255 - MNIST_MEAN) / MNIST_STD).to(device)
    test_images = ((test_set.data.unsqueeze(1).float() / 255 - MNIST_MEAN) / MNIST_STD).to(device)
    train_set = TensorDataset(train_images, train_set.targets.to(device))
    test_set = TensorDataset(test_images, test_set.targets.to(device))
    # Always shuffle the training set (a fixed order teaches the model the order), never the test set.
    # The sampler hands the loader a whole batch of shuffled indices and batch_size=None passes the
    # dataset's answer (64 images, one indexing operation) straight through: batches as random as
    # DataLoader(train_set, batch_size=64, shuffle=True) makes, without 64 calls and a stack per step.
    train_sampler = BatchSampler(RandomSampler(train_set, generator=generator), args.batch_size, drop_last=False)
    train_loader = DataLoader(train_set, sampler=train_sampler, batch_size=None)
    test_loader = DataLoader(test_set, batch_size=args.test_batch_size, shuffle=False)

    # 2. Model, optimizer and learning-rate schedule. (The loss, nll_loss, is in train() and test().)
    model = SimpleNN().to(device)
    optimizer = optim.Adadelta(model.parameters(), lr=args.lr)
    # lr *= gamma after every epoch. This schedule comes from pytorch/examples' mnist/main.py; the
    # MNIST post keeps the learning rate constant, which is --gamma 1.
    scheduler = StepLR(optimizer, step_size=1, gamma=args.gamma)

    # 3. The epoch loop. TrainingRun (common/run.py) is the bookkeeping around it: the run folder,
    # a checkpoint after every epoch, --resume, Ctrl-C, divergence, metrics.json and curves.png.
    with TrainingRun("mnist_nn", args, model, optimizer, scheduler, generator,
                     must_match=["batch_size", "lr", "gamma"]) as run:
        for epoch in run.epochs():
            train_metrics = train(model, device, train_loader, optimizer, epoch=epoch,
                                  log_interval=args.log_interval, dry_run=args.dry_run)
            test_metrics = test(model, device, test_loader, dry_run=args.dry_run)
            scheduler.step()  # once per epoch, after that epoch's optimizer steps
            run.end_epoch(train_metrics, test_metrics)
        run.save_curves("SimpleNN on MNIST")
        if args.save_model:
            run.save_weights("mnist_simple_nn.pt")
    return run.history


if __name__ == "__main__":
    cli.run_main(main)
