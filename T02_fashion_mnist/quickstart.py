"""T02 · The official PyTorch quickstart on FashionMNIST, as the Dataset/DataLoader post walks through it.

PyTorch's "Learn the Basics" Quickstart, start to end: FashionMNIST with ToTensor() only
(no Normalize), DataLoaders of 64 images, the 784-512-512-10 NeuralNetwork, CrossEntropyLoss,
plain SGD at lr 1e-3 (no momentum), 5 epochs of training and testing, then the Quickstart's
ending: save the weights, load them into a new NeuralNetwork and predict the first test image.
It prints what the Quickstart prints, in its formats (the numbers are this run's):

    Shape of X [N, C, H, W]: torch.Size([64, 1, 28, 28])
    Shape of y: torch.Size([64]) torch.int64
    Using cpu device
    NeuralNetwork(...)
    Epoch 1
    -------------------------------
    loss: ...  [   64/60000]
    ...
    Test Error:
     Accuracy: ...%, Avg loss: ...

    Done!
    Saved PyTorch Model State to runs/quickstart-.../model.pth
    Predicted: "...", Actual: "..."

The training and test functions are the "Optimizing Model Parameters" page's train_loop() and
test_loop() (the Quickstart page calls its own train() and test()), as the Dataset/DataLoader
post walks through them. Each difference from the two pages is named in T02's README.

    python T02_fashion_mnist/quickstart.py                    # the tutorial's run: 5 epochs, best device
    python T02_fashion_mnist/quickstart.py --epochs 1 --no-cuda
    python T02_fashion_mnist/quickstart.py --dry-run          # one batch of training and of testing
    python T02_fashion_mnist/quickstart.py --help             # every flag

With lr 1e-3 and no momentum the model learns slowly and is still improving after 5 epochs;
fashion_mnist.py trains the same model with the posts' settings.
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
from torch import nn
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
             "NeuralNetwork, train_loop() and test_loop() alone copy out without it.")

# The Quickstart's list of FashionMNIST's class names, label 0 to 9 (torchvision's .classes is the same list).
classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


class NeuralNetwork(nn.Module):
    """The tutorial's MLP: flatten, then 784 -> 512 -> 512 -> 10 with ReLU; outputs logits.

    fashion_mnist.py defines the same class: each lesson file holds the model it teaches.
    """

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


# train_loop() and test_loop() keep the tutorial's names and argument order (dataloader, model,
# loss_fn, optimizer) on purpose, so they read line for line beside it. The other lessons follow
# this project's convention instead: train(model, device, loader, optimizer, *, ...).

def train_loop(dataloader: DataLoader, model: nn.Module, loss_fn: nn.Module, optimizer: torch.optim.Optimizer,
               *, log_interval: int = 100, dry_run: bool = False) -> dict:
    """Train for one epoch, printing the tutorial's loss line; return the average loss, images seen and time."""
    started = time.perf_counter()
    device = next(model.parameters()).device  # the tutorial's signature has no device: use the model's
    size = len(dataloader.dataset)
    model.train()  # training mode (matters for dropout and batch norm; the tutorial sets it too)
    loss_sum = torch.zeros((), device=device)  # a tensor, so the GPU never waits for .item() each batch
    seen = 0
    for batch, (X, y) in enumerate(dataloader):
        X, y = X.to(device), y.to(device)
        pred = model(X)
        loss = loss_fn(pred, y)  # the batch's average loss

        # The pages' order today: backward, step, then zero_grad. (The post clears first: zero_grad,
        # backward, step. Either way each step uses this batch's gradients alone.)
        loss.backward()  # compute d(loss)/d(weight) for every weight
        optimizer.step()  # move each weight a little against its gradient
        optimizer.zero_grad()  # gradients add up across backward() calls: clear them for the next batch

        loss_sum += loss.detach() * len(X)  # detach: keep the number, not the graph behind it
        seen += len(X)
        if batch % log_interval == 0 or dry_run:
            current = seen  # the tutorial's batch * batch_size + len(X): images so far
            print(f"loss: {loss.item():>7f}  [{current:>5d}/{size:>5d}]")
        if dry_run:
            print("Dry run: stopping after one batch of training.")
            break
    return {"train_loss": loss_sum.item() / seen, "train_images": seen,
            "train_seconds": time.perf_counter() - started}


def test_loop(dataloader: DataLoader, model: nn.Module, loss_fn: nn.Module, *, dry_run: bool = False) -> dict:
    """Evaluate on the test set, printing the tutorial's two lines; return loss, accuracy and counts."""
    device = next(model.parameters()).device
    model.eval()  # evaluation mode: dropout off, batch norm uses its running statistics
    batch_loss_sum, image_loss_sum, correct, batches, seen = 0.0, 0.0, 0, 0, 0
    with torch.no_grad():  # no gradients needed to evaluate: faster and uses less memory
        for X, y in dataloader:
            X, y = X.to(device), y.to(device)
            pred = model(X)
            loss = loss_fn(pred, y).item()  # this batch's average loss
            batch_loss_sum += loss
            image_loss_sum += loss * len(X)
            # The class with the highest score. The pages write (...).type(torch.float).sum(); summing the
            # booleans counts them already, as a whole number.
            correct += (pred.argmax(1) == y).sum().item()
            batches += 1
            seen += len(X)
            if dry_run:
                print("Dry run: testing on one batch only.")
                break
    # The tutorial's "Avg loss" is the mean of the batch losses: exact only when every batch has the
    # same size (10,000 test images make 156 batches of 64 and one of 16). We print its figure, since
    # this is its recipe, but record the exact per-image mean as test_loss, as every other lesson does.
    tutorial_loss = batch_loss_sum / batches
    accuracy = correct / seen
    print(f"Test Error: \n Accuracy: {(100 * accuracy):>0.1f}%, Avg loss: {tutorial_loss:>8f} \n")
    return {"test_loss": image_loss_sum / seen, "test_accuracy": accuracy, "test_correct": correct,
            "test_images": seen}


def load_and_predict(path: Path, test_data: TensorDataset, device: torch.device) -> tuple[str, str]:
    """The Quickstart's last step: a new NeuralNetwork, loaded from `path`, predicts the first test image."""
    model = NeuralNetwork().to(device)
    model.load_state_dict(torch.load(path, map_location=device, weights_only=True))
    model.eval()
    x, y = test_data[0][0], test_data[0][1]
    with torch.no_grad():
        x = x.to(device)
        pred = model(x)
        predicted, actual = classes[pred[0].argmax(0)], classes[y]
    return predicted, actual


def save_load_and_predict(run: TrainingRun, test_data: TensorDataset, device: torch.device) -> str:
    """The Quickstart's ending: save the weights, load them into a new model, predict the first test image."""
    # The Quickstart saves model.pth in the current folder; we save it in the run's folder, with the rest.
    path = run.save_weights("model.pth")
    run.log(f"Saved PyTorch Model State to {path}")
    predicted, actual = load_and_predict(path, test_data, device)
    run.log(f'Predicted: "{predicted}", Actual: "{actual}"')
    return predicted


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = cli.ArgumentParser(description="T02: the official PyTorch quickstart on FashionMNIST.")
    parser.add_argument("--batch-size", type=cli.positive_int, default=64, metavar="N",
                        help="batch size for training and testing (default: 64)")
    parser.add_argument("--epochs", type=cli.positive_int, default=5, metavar="N",
                        help="number of epochs to train (default: 5)")
    parser.add_argument("--lr", type=cli.positive_float, default=1e-3, metavar="LR",
                        help="learning rate of plain SGD (default: 1e-3)")
    parser.add_argument("--log-interval", type=cli.positive_int, default=100, metavar="N",
                        help="print the training loss every N batches (default: 100)")
    parser.add_argument("--dry-run", action="store_true",
                        help="train on one batch and test on one batch, to check that everything runs")
    parser.add_common_flags()  # --seed, --device/--no-cuda/--no-mps, --data-dir, --out-dir, --resume, --show
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    device = select_device(args)  # CUDA, then Apple's MPS, then the CPU (or what --device says)
    generator = seed_everything(args.seed, args.deterministic)  # and a generator for the shuffling

    # 1. Data. torchvision reads the FashionMNIST files; data.download() fetches them first if need be.
    root = data.download("fashion-mnist", args.data_dir)
    training_data = datasets.FashionMNIST(root, train=True)
    test_data = datasets.FashionMNIST(root, train=False)
    # What the tutorial's transform=ToTensor() does to each image, done once for all of them (the
    # same numbers, bit for bit): pixels 0..255 -> 0..1, shape (N, 1, 28, 28). The tutorial
    # normalises nothing further. Kept as tensors (on the GPU, if we train on one).
    training_data = TensorDataset((training_data.data.unsqueeze(1).float() / 255).to(device),
                                  training_data.targets.to(device))
    test_data = TensorDataset((test_data.data.unsqueeze(1).float() / 255).to(device), test_data.targets.to(device))
    # The tutorial does not shuffle its training loader; we do, as every lesson here does (a fixed
    # order lets the model learn the order). The test set is never shuffled. The sampler hands the
    # loader a whole batch of shuffled indices and batch_size=None passes the dataset's answer (64
    # images, one indexing operation) straight through: batches as random as
    # DataLoader(training_data, batch_size=64, shuffle=True) makes, without 64 calls and a stack per step.
    train_sampler = BatchSampler(RandomSampler(training_data, generator=generator), args.batch_size, drop_last=False)
    train_dataloader = DataLoader(training_data, sampler=train_sampler, batch_size=None)
    test_dataloader = DataLoader(test_data, batch_size=args.batch_size, shuffle=False)
    for X, y in test_dataloader:  # the Quickstart's look at one batch
        print(f"Shape of X [N, C, H, W]: {X.shape}")
        print(f"Shape of y: {y.shape} {y.dtype}")
        break
    print(f"Using {device.type} device")

    # 2. Model, loss and optimizer: raw scores (logits) into CrossEntropyLoss, plain SGD without momentum.
    model = NeuralNetwork().to(device)
    print(model)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)

    # 3. The epoch loop. TrainingRun (common/run.py) is the bookkeeping around it: the run folder,
    # a checkpoint after every epoch, --resume, Ctrl-C, divergence, metrics.json and curves.png.
    with TrainingRun("quickstart", args, model, optimizer, None, generator, must_match=["batch_size", "lr"]) as run:
        for epoch in run.epochs():
            print(f"Epoch {epoch}\n-------------------------------")
            train_metrics = train_loop(train_dataloader, model, loss_fn, optimizer,
                                       log_interval=args.log_interval, dry_run=args.dry_run)
            test_metrics = test_loop(test_dataloader, model, loss_fn, dry_run=args.dry_run)
            run.end_epoch(train_metrics, test_metrics)
        run.log("Done!")
        run.save_curves("The quickstart's NeuralNetwork on FashionMNIST")
        save_load_and_predict(run, test_data, device)  # model.pth, then one prediction from a new model
    return run.history


if __name__ == "__main__":
    cli.run_main(main)
