"""T05 · From one process to many: T02's CNN with DistributedDataParallel (DDP) under torchrun.

The same CNN, loss and optimizer as T02, now trained by several processes at once. Each
process holds a full copy of the model and trains on its own share of every batch; in
backward() DDP averages the gradients of all processes, so every copy takes the same step.
One file, three ways to start it:

    python T05_ddp_torchrun/ddp_fashion_mnist.py                                       # one process
    torchrun --standalone --nproc-per-node 2 T05_ddp_torchrun/ddp_fashion_mnist.py     # 2 processes here
    torchrun --nnodes 2 --node-rank 0 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
             --nproc-per-node 1 T05_ddp_torchrun/ddp_fashion_mnist.py                 # node 0 of 2 (and 1 on the other)
    python T05_ddp_torchrun/ddp_fashion_mnist.py --help                                # every flag

--batch-size is the global batch: with W processes each takes batch/W images per step, so
W processes train the model one process would, with the same --lr. The DDP steps, in order:
init_process_group (join_process_group), DistributedSampler and set_epoch (main), DDP(model)
(main), all_reduce of the metrics (train, test), destroy_process_group (main, on every way out).
Only rank 0 prints and writes the run folder; its checkpoint.pt holds the plain model's weights,
which T02's ConvNeuralNetwork loads.
"""

from __future__ import annotations

import argparse
import datetime
import os
import signal
import sys
import time
from pathlib import Path

if __name__ == "__main__":  # run as a script, Ctrl-C while torch loads (a second or two) stops it, no traceback
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # (imported, e.g. in a notebook, nothing changes)
import torch
import torch.distributed as dist
from torch import nn, optim
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import BatchSampler, DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler
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
             "ConvNeuralNetwork, train() and test() alone copy out without it.")

# The posts normalise with mean 0.5 and std 0.5, as T02 does: pixels 0..1 become -1..1.
POSTS_MEAN, POSTS_STD = 0.5, 0.5


# --- The model: T02's CNN, unchanged ----------------------------------------------------------

class ConvNeuralNetwork(nn.Module):
    """T02's CNN, the post's ConvNeuralNetwork: three conv blocks (32, 64, 128 channels), then 1152 -> 512 -> 512 -> 10.

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



# --- Training and testing: each process on its share, then the sums over all -------------------

def train(model: nn.Module, device: torch.device, loader: DataLoader, optimizer: optim.Optimizer, *,
          loss_fn: nn.Module, epoch: int = 1, epochs: int = 1, log_interval: int = 100,
          dry_run: bool = False) -> dict:
    """Train one epoch on this process's share; return the loss, accuracy and images of all processes together."""
    started = time.perf_counter()
    model.train()  # training mode: dropout drops, batch norm uses and updates batch statistics
    steps = len(loader)
    loss_sum = torch.zeros((), device=device)  # tensors, so the GPU never waits for .item() each step
    correct = torch.zeros((), device=device)
    seen = 0
    running_loss, running_steps = torch.zeros((), device=device), 0  # the post's running_loss
    for step, (images, targets) in enumerate(loader, start=1):
        images, targets = images.to(device), targets.to(device)
        outputs = model(images)  # logits, one row of 10 scores per image
        loss = loss_fn(outputs, targets)  # the mean loss of this process's share of the batch
        optimizer.zero_grad()  # gradients add up across backward() calls: clear the last step's
        loss.backward()  # with DDP, also averages every gradient over all processes
        optimizer.step()  # the same averaged gradient everywhere: every copy takes the same step
        loss_sum += loss.detach() * len(images)  # detach: keep the number, not the graph behind it
        correct += (outputs.argmax(dim=1) == targets).sum()
        seen += len(images)
        running_loss += loss.detach()
        running_steps += 1
        if step % log_interval == 0 or dry_run:  # this process's loss (only rank 0's is shown)
            print(f"Epoch [{epoch}/{epochs}], Step [{step}/{steps}], Loss: {running_loss.item() / running_steps:.4f}")
            running_loss, running_steps = torch.zeros((), device=device), 0
        if dry_run:
            break
    # Each process saw only its share: all_reduce adds up the sums of all of them (and every process
    # gets the result); the epoch took as long as the slowest process.
    totals = torch.tensor([loss_sum.item(), correct.item(), seen], dtype=torch.float64, device=device)
    seconds = torch.tensor(time.perf_counter() - started, dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(totals, op=dist.ReduceOp.SUM)
        dist.all_reduce(seconds, op=dist.ReduceOp.MAX)
    loss_sum, correct, seen = totals.tolist()
    return {"train_loss": loss_sum / seen, "train_accuracy": correct / seen, "train_images": round(seen),
            "train_seconds": seconds.item()}


def test(model: nn.Module, device: torch.device, loader: DataLoader, *, loss_fn: nn.Module,
         dry_run: bool = False) -> dict:
    """Evaluate this process's shard of the test set; return the loss, accuracy and counts of all shards together."""
    distributed = dist.is_available() and dist.is_initialized()
    if distributed:
        # Batch norm's running mean and variance are buffers, not weights: each process's last
        # training step updated its own. Take rank 0's, the model rank 0 saves, for every shard.
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)
    model.eval()  # evaluation mode: dropout off, batch norm uses the statistics it learned
    loss_sum, correct = torch.zeros((), device=device), torch.zeros((), device=device)
    seen = 0
    with torch.no_grad():  # no gradients needed to evaluate: faster, less memory
        for images, targets in loader:
            images, targets = images.to(device), targets.to(device)
            outputs = model(images)
            # The batch's mean loss times its size is its sum; the sums divided once by the number
            # of images give the right average even when the last batch is smaller.
            loss_sum += loss_fn(outputs, targets) * len(targets)
            correct += (outputs.argmax(dim=1) == targets).sum()
            seen += len(targets)
            if dry_run:
                break
    totals = torch.tensor([loss_sum.item(), correct.item(), seen], dtype=torch.float64, device=device)
    if distributed:
        dist.all_reduce(totals, op=dist.ReduceOp.SUM)  # every shard's sums added up, on every process
    loss_sum, correct, seen = totals.tolist()
    correct, seen = round(correct), round(seen)
    print(f"Test Accuracy: {100 * correct / seen:.2f}%")  # as the post prints it
    print(f"Test set: {correct}/{seen} correct, average loss {loss_sum / seen:.4f}")
    return {"test_loss": loss_sum / seen, "test_accuracy": correct / seen, "test_correct": correct,
            "test_images": seen}


# --- The process group ------------------------------------------------------------------------

def check_set_up(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Stop at once, with one line, when the flags and torchrun's set-up cannot work together.

    Only the flags and torchrun's variables are read, the same on every process, so every process
    stops alike before joining the group: none waits for another that has given up.
    """
    if not 0 <= args.momentum < 1:
        parser.error(f"argument --momentum: must be from 0 to just under 1, got {args.momentum}")
    under_torchrun = "WORLD_SIZE" in os.environ
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if args.batch_size % world_size:
        parser.error(f"--batch-size {args.batch_size} is the global batch, split evenly over {world_size} "
                     f"processes: use a multiple of {world_size}, e.g. "
                     f"{max(world_size, args.batch_size - args.batch_size % world_size)}")
    if args.batch_size // world_size < 2:
        parser.error(f"--batch-size {args.batch_size} over {world_size} processes leaves 1 image per process, and "
                     f"batch norm cannot train on one image: use at least --batch-size {2 * world_size}")
    device = select_device(args)
    if under_torchrun and device.type == "mps":
        parser.error("torch.distributed has no backend for Apple's MPS: add --no-accel to train several "
                     "processes on the CPU")
    if args.backend == "nccl" and device.type != "cuda":
        parser.error(f"--backend nccl needs CUDA GPUs (one per process), and this run trains on the {device.type}: "
                     "use --backend gloo (the default on a CPU)")
    if args.backend == "nccl" and not dist.is_nccl_available():
        parser.error("--backend nccl: this torch build has no NCCL; use --backend gloo")
    processes_here = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if under_torchrun and device.type == "cuda" and processes_here > torch.cuda.device_count():
        parser.error(f"{processes_here} processes on this machine but only {torch.cuda.device_count()} GPU(s): "
                     f"start torchrun with --nproc-per-node {torch.cuda.device_count()} (or fewer)")
    if args.sync_bn and device.type != "cuda":
        parser.error("--sync-bn: PyTorch's SyncBatchNorm runs on GPUs only; on the CPU each process normalises "
                     "its own share of the batch (leave out --sync-bn)")


def join_process_group(args: argparse.Namespace) -> tuple[int, int, torch.device]:
    """This process's rank, the number of processes W, and its device; under torchrun, join the process group.

    torchrun starts the processes and tells each its place in environment variables: RANK (0 to
    W-1 over all machines), LOCAL_RANK (which one on this machine) and WORLD_SIZE (W). A plain
    `python` run has none of them: it is one process, rank 0 of 1, with no group at all.
    """
    device = select_device(args)
    if "WORLD_SIZE" not in os.environ:
        return 0, 1, device
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))  # process k of a machine uses its GPU k
        torch.cuda.set_device(device)
    # Every process connects to the rendezvous torchrun set up (MASTER_ADDR:MASTER_PORT) and learns
    # of the others. nccl talks between NVIDIA GPUs, gloo between CPUs. The timeout bounds how long
    # a collective operation (all_reduce, broadcast, ...) waits for a process that never comes.
    try:
        dist.init_process_group(args.backend or ("nccl" if device.type == "cuda" else "gloo"), rank=rank,
                                world_size=world_size, timeout=datetime.timedelta(seconds=args.timeout))
    except (RuntimeError, ValueError) as err:  # started by hand: no MASTER_ADDR, a busy MASTER_PORT, ...
        print(f"error: cannot join the process group ({str(err).strip().splitlines()[-1][:160]}). Started by "
              "hand? Start the processes with torchrun: it sets RANK, WORLD_SIZE, MASTER_ADDR and a free MASTER_PORT",
              file=sys.stderr)
        sys.exit(2)
    return rank, world_size, device


def download_once_per_machine(data_dir: Path | None) -> Path:
    """data.download(): process 0 of each machine first (it downloads if need be), then the others.

    Were all to start at once, several would download into the same folder together. If any
    process fails (the data missing on one machine, say), every process stops with its error.
    """
    first = int(os.environ.get("LOCAL_RANK", "0")) == 0
    root, error = None, None
    for turn_of_the_first in (True, False):
        if first == turn_of_the_first:
            try:
                root = data.download("fashion-mnist", data_dir)
            except Exception as err:  # a one-line error from data.download, usually: shared below
                error = err
        if dist.is_initialized():  # every process learns of every error; the others wait here for the first
            errors = [None] * dist.get_world_size()
            dist.all_gather_object(errors, error)
            failed = [(rank, e) for rank, e in enumerate(errors) if e is not None]
            if failed:
                rank, error = failed[0]
                if rank != dist.get_rank():
                    error.args = (f"(rank {rank}) {error}",)  # rank 0 says it: name the process that met it
        if error is not None:
            raise error
    return root


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command-line flags: T02's for the CNN, plus the distributed ones; then check the set-up."""
    parser = cli.ArgumentParser(description="T05: T02's CNN on FashionMNIST with DistributedDataParallel; "
                                            "run it with python (one process) or torchrun (several).")
    parser.add_argument("--batch-size", type=cli.positive_int, default=64, metavar="N",
                        help="GLOBAL batch size: each of the W processes trains on N/W images per step "
                             "(N must divide by W; default: 64)")
    parser.add_argument("--test-batch-size", type=cli.positive_int, default=1000, metavar="N",
                        help="batch size for testing, per process (default: 1000)")
    parser.add_argument("--epochs", type=cli.positive_int, default=5, metavar="N",
                        help="number of epochs to train (default: 5)")
    parser.add_argument("--lr", type=cli.positive_float, default=0.01, metavar="LR",
                        help="learning rate, the same for any number of processes (default: 0.01)")
    parser.add_argument("--momentum", type=float, default=0.9, metavar="M", help="SGD momentum, 0 <= M < 1 "
                        "(default: 0.9)")
    parser.add_argument("--log-interval", type=cli.positive_int, default=100, metavar="N",
                        help="print rank 0's average training loss every N steps (default: 100)")
    parser.add_argument("--dry-run", action="store_true",
                        help="train on one batch and test on one batch per process, to check that everything runs")
    parser.add_argument("--save-model", action="store_true",
                        help="save the trained weights alone as fashion_mnist_cnn_ddp.pt in the run folder")
    group = parser.add_argument_group("distributed")
    group.add_argument("--backend", choices=["gloo", "nccl"], default=None,
                       help="how the processes talk: nccl between GPUs, gloo on CPUs (default: nccl on CUDA, "
                            "else gloo)")
    group.add_argument("--sync-bn", action="store_true",
                       help="batch norm over the whole global batch (SyncBatchNorm, GPUs only) instead of each "
                            "process's share")
    group.add_argument("--timeout", type=cli.positive_int, default=300, metavar="S",
                       help="seconds a process waits for the others in a collective operation before giving up "
                            "(default: 300)")
    parser.add_common_flags()  # --seed, --device/--no-cuda/--no-mps, --data-dir, --out-dir, --resume, --show
    args = parser.parse_args(argv)
    check_set_up(parser, args)
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    """Train and test the CNN on one or several processes; rank 0 writes the run folder; return the history."""
    args = parse_args(argv)  # also stops at once, with one line, on a set-up that cannot work
    rank, world_size, device = join_process_group(args)  # dist.init_process_group, under torchrun
    if rank != 0:  # Only rank 0 prints: W copies of every line help nobody. (Errors still go to stderr.)
        sys.stdout = open(os.devnull, "w")  # for the rest of this process
    try:
        # A seed per process: each draws its own dropout masks. (The weights start alike: DDP copies rank 0's.)
        seed_everything((args.seed + rank) % 2**64, args.deterministic)  # % 2**64: within torch's seed range

        # 1. Data: every process holds the whole dataset, and reads only its share of it.
        root = download_once_per_machine(args.data_dir)
        train_set, test_set = datasets.FashionMNIST(root, train=True), datasets.FashionMNIST(root, train=False)
        # What ToTensor() + Normalize((0.5,), (0.5,)) do to each image, done once for all of them.
        train_images = ((train_set.data.unsqueeze(1).float() / 255 - POSTS_MEAN) / POSTS_STD).to(device)
        train_set = TensorDataset(train_images, train_set.targets.to(device))
        # Test images rank, rank + W, rank + 2W, ...: each in one shard only. (DistributedSampler would
        # repeat a few to even the shards out, and those would be counted twice.)
        test_images = ((test_set.data.unsqueeze(1).float() / 255 - POSTS_MEAN) / POSTS_STD)[rank::world_size]
        test_set = TensorDataset(test_images.to(device), test_set.targets[rank::world_size].to(device))
        # DistributedSampler: each epoch one shuffle of all training images, the same on every process (from
        # the seed and the epoch), dealt out like cards: process r gets positions r, r + W, ... drop_last: the
        # last few (< W) of the shuffle wait for the next epoch, rather than a few images being dealt twice.
        # BatchSampler hands over a whole batch share at once (one indexing op); batch_size=None passes it on.
        train_sampler = DistributedSampler(train_set, num_replicas=world_size, rank=rank, shuffle=True, seed=args.seed,
                                           drop_last=True)
        per_process_batch = args.batch_size // world_size  # --batch-size is the global batch
        drop_last = len(train_sampler) % per_process_batch == 1  # batch norm cannot train on a batch of 1
        train_loader = DataLoader(train_set, sampler=BatchSampler(train_sampler, per_process_batch, drop_last),
                                  batch_size=None)
        test_loader = DataLoader(test_set, batch_size=args.test_batch_size, shuffle=False)

        # 2. Model, loss, optimizer: T02's. The optimizer holds the plain model's weights, which DDP shares.
        model = ConvNeuralNetwork().to(device)
        if args.sync_bn:  # batch norm over the global batch: its statistics are all-reduced every step
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        loss_fn = nn.CrossEntropyLoss()
        optimizer = optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
        print(f"{world_size} process(es); global batch {args.batch_size} = {world_size} x {per_process_batch}")

        # 3. The epoch loop. TrainingRun (common/run.py): the run folder (rank 0), resume (each process its own
        # random states), Ctrl-C, divergence. The plain model's state dict goes in the checkpoint, not DDP's.
        with TrainingRun("ddp_fashion_mnist", args, model, optimizer, is_main=(rank == 0),
                         must_match=["batch_size", "lr", "momentum", "sync_bn"]) as run:
            ddp_model = DDP(model) if dist.is_initialized() else model  # after a resume: copies rank 0's weights to all
            for epoch in run.epochs():
                train_sampler.set_epoch(epoch)  # a new shuffle each epoch (without it: the same order every time)
                train_metrics = train(ddp_model, device, train_loader, optimizer, loss_fn=loss_fn, epoch=epoch,
                                      epochs=args.epochs, log_interval=args.log_interval, dry_run=args.dry_run)
                test_metrics = test(model, device, test_loader, loss_fn=loss_fn, dry_run=args.dry_run)
                run.end_epoch(train_metrics, test_metrics, processes=world_size)
            run.save_curves(f"ConvNeuralNetwork on FashionMNIST, {world_size} process(es)")
            if args.save_model:
                run.save_weights("fashion_mnist_cnn_ddp.pt")
        if dist.is_initialized():
            dist.barrier()  # all done: leave together (gloo can abort a process whose peer left mid-talk)
        return run.history
    finally:  # on every way out (done, an error, divergence, Ctrl-C): leave the group, close its connections
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    cli.run_main(main)
