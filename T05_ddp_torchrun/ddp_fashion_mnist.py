"""T05 · From one process to many: T02's CNN with DistributedDataParallel (DDP) under torchrun.

The same model, loss, optimizer and train() as T02, now trained by several processes at once.
Each process holds a full copy of the model and trains on its own share of every batch; in
backward() DDP averages the gradients of all processes, so every copy takes the same step.
One file, three ways to start it:

    python T05_ddp_torchrun/ddp_fashion_mnist.py                                       # one process
    torchrun --standalone --nproc-per-node 2 T05_ddp_torchrun/ddp_fashion_mnist.py     # 2 processes here
    torchrun --nnodes 2 --node-rank 0 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
             --nproc-per-node 1 T05_ddp_torchrun/ddp_fashion_mnist.py                 # node 0 of 2 (and 1 on the other)
    python T05_ddp_torchrun/ddp_fashion_mnist.py --help                                # every flag

--batch-size is the global batch: with W processes each takes batch/W images per step, so
W processes train the same model one process would, with the same --lr. Only rank 0 prints
and writes the run folder (train.log, checkpoint.pt, metrics, curves.png), through the same
TrainingRun as T01-T03; its checkpoint.pt holds the plain model's weights, which T02 loads.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, Dataset, Subset
from torch.utils.data.distributed import DistributedSampler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so `common/` and T02 import from any folder
try:
    from common import cli, data
    from common.device import add_device_arguments, device_from_args
    from common.lifecycle import TrainingRun
    from common.seed import seed_everything

    # The point of this lesson: the same model, data and train() as T02, now distributed.
    from T02_fashion_mnist.fashion_mnist import (
        MODELS,
        LoadedData,
        build_model,
        build_optimizer,
        count_parameters,
        evaluate,
        load_data,
        train,
    )
except ModuleNotFoundError as err:
    if not (err.name or "").startswith(("common", "T02_fashion_mnist")):
        raise
    sys.exit("error: this script needs the repository's common/ and T02_fashion_mnist/ folders "
             "(clone the whole repository)")


# --- Who am I? The process group --------------------------------------------------------------

@dataclass
class Processes:
    """This process's place among all of them: what torchrun told it, and the device it trains on."""

    rank: int  # 0 .. world_size-1, unique over every machine; rank 0 does the printing and saving
    local_rank: int  # 0 .. processes on this machine - 1: which GPU of this machine is ours
    world_size: int  # how many processes train together, on all machines
    device: torch.device
    backend: str = ""  # "gloo" or "nccl"; "" for a single process without torchrun

    @property
    def distributed(self) -> bool:
        return dist.is_available() and dist.is_initialized()

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """torchrun (and torch.distributed.run) tells each process its place in environment variables."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def torchrun_world_size() -> int:
    """How many processes torchrun started in all (1 without torchrun); readable before the group exists."""
    return int(os.environ["WORLD_SIZE"]) if launched_by_torchrun() else 1


def is_rank_zero() -> bool:
    """True for rank 0 and for a plain `python` run; readable before the process group exists."""
    return os.environ.get("RANK", "0") == "0"


def start_processes(args: argparse.Namespace) -> Processes:
    """Read torchrun's RANK/LOCAL_RANK/WORLD_SIZE, check the set-up and join the process group.

    Every check here uses only the flags and the environment, which are the same on every
    process, so every process reaches the same verdict at once: no process waits for another
    that has already given up. (rank 0 prints the one error line: see run_on_every_process.)
    """
    device = device_from_args(args)
    if not launched_by_torchrun():  # `python ddp_fashion_mnist.py`: one process, no group needed
        return Processes(rank=0, local_rank=0, world_size=1, device=device)
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    backend = args.backend or ("nccl" if device.type == "cuda" else "gloo")
    if device.type == "mps":
        raise cli.UserError("torch.distributed has no backend for Apple's MPS: add --no-accel to train "
                            "several processes on the CPU")
    if backend == "nccl" and device.type != "cuda":
        raise cli.UserError("--backend nccl needs CUDA GPUs (one per process), and this run trains on the "
                            f"{device.type}: use --backend gloo (the default on a CPU)")
    if backend == "nccl" and not dist.is_nccl_available():
        raise cli.UserError("--backend nccl: this torch build has no NCCL; use --backend gloo")
    if device.type == "cuda":
        gpus = torch.cuda.device_count()
        if local_world_size > gpus:  # NCCL cannot share one GPU between two processes of a group
            raise cli.UserError(f"{local_world_size} processes on this machine but only {gpus} GPU(s): "
                                f"start torchrun with --nproc-per-node {gpus} (or fewer)")
        device = torch.device("cuda", local_rank)  # process k of this machine uses GPU k
        torch.cuda.set_device(device)
    if args.sync_bn and device.type != "cuda":
        raise cli.UserError("--sync-bn: PyTorch's SyncBatchNorm runs on GPUs only; on the CPU each process "
                            "normalises its own share of the batch (leave out --sync-bn)")
    # The process group: every process connects to the rendezvous torchrun set up (MASTER_ADDR and
    # MASTER_PORT) and learns of the others. The timeout bounds how long any collective operation
    # (all_reduce, broadcast, ...) waits for a process that never comes, instead of hanging for good.
    dist.init_process_group(backend, rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=args.timeout))
    return Processes(rank, local_rank, world_size, device, backend)


def stop_if_any_failed(processes: Processes, error: str | None) -> None:
    """Every process calls this at the same point; if any of them has an error, all stop together.

    A process that simply gave up would leave the others waiting for it in the next collective;
    here they exchange their errors (None for none) and all raise, rank 0 with the message.
    """
    errors = [error]
    if processes.distributed:
        errors = [None] * processes.world_size
        dist.all_gather_object(errors, error)  # also a barrier: nobody passes until everyone arrives
    failed = [(rank, message) for rank, message in enumerate(errors) if message]
    if failed:
        rank, message = failed[0]
        raise cli.UserError(message if rank == processes.rank or rank == 0 else f"(rank {rank}) {message}")


def launcher_words(processes: Processes) -> list[str]:
    """How this run was started, for the resume command rank 0 prints after Ctrl-C."""
    if not processes.distributed:
        return ["python"]
    if int(os.environ.get("LOCAL_WORLD_SIZE", processes.world_size)) == processes.world_size:  # one machine
        return ["torchrun", "--standalone", "--nproc-per-node", str(processes.world_size)]
    return ["torchrun", "<this node's torchrun flags>"]


def end_processes(processes: Processes) -> None:
    """Leave the process group (after the last collective operation)."""
    if processes.distributed:
        # All leave together: a process that tears its connections down while another is still
        # using them can make that one abort (gloo: "terminate called without an active exception").
        dist.barrier()
        dist.destroy_process_group()


# --- Data: one share of every batch per process -----------------------------------------------

def split_batch(global_batch: int, world_size: int, model_name: str) -> int:
    """Each process's share of the global batch; an error when it does not divide evenly."""
    if global_batch % world_size:
        raise cli.UserError(f"--batch-size {global_batch} is the global batch, split evenly over {world_size} "
                            f"processes; it does not divide by {world_size}: use a multiple of {world_size}, "
                            f"e.g. {max(world_size, global_batch - global_batch % world_size)}")
    per_process = global_batch // world_size
    if model_name == "cnn" and per_process < 2:
        raise cli.UserError(f"--batch-size {global_batch} over {world_size} processes leaves {per_process} image "
                            "per process, and batch norm cannot train on one image: use at least "
                            f"--batch-size {2 * world_size}")
    return per_process


def load_data_once_per_machine(processes: Processes, args: argparse.Namespace) -> LoadedData:
    """Process 0 of each machine loads (downloads, if needed) the data first; the others read it after.

    Were all to start at once, several would download into the same folder together. A failure
    anywhere (data missing on one machine, say) stops every process, with one line from rank 0.
    """
    loaded, error = None, None
    for turn in ("first", "then"):
        if (turn == "first") == (processes.local_rank == 0):
            try:
                loaded = load_data(args.dataset, args.data_dir, classic_pipeline=args.classic_pipeline)
            except cli.UserError as err:
                error = str(err)
        stop_if_any_failed(processes, error)
    return loaded


def shard(dataset: Dataset, processes: Processes) -> Subset:
    """Images rank, rank + W, rank + 2W, ... of `dataset`: each image in exactly one process's shard.

    DistributedSampler would instead repeat a few images so every shard has the same length
    (the "padding"). Training needs equal lengths (every step is a collective step), so it keeps
    the sampler; evaluation does not, and a repeated image would be counted twice.
    """
    return Subset(dataset, range(processes.rank, len(dataset), processes.world_size))


# --- The model, distributed -------------------------------------------------------------------

def wrap_model(model: nn.Module, processes: Processes) -> nn.Module:
    """DistributedDataParallel around `model`: backward() then averages gradients over all processes."""
    if not processes.distributed:
        return model  # one process: nothing to average with
    # DDP copies rank 0's weights to every process here, so all start from the same model; then,
    # during backward(), it all-reduces each gradient (sum, divided by world_size) as soon as it
    # is ready, overlapping the communication with the rest of the backward pass.
    return DDP(model, device_ids=[processes.device.index] if processes.device.type == "cuda" else None)


def combine_train_metrics(metrics: dict, processes: Processes) -> dict:
    """T02's train() returns this process's numbers: add the losses, hits and images of all processes."""
    images = metrics["train_images"]
    totals = torch.tensor([metrics["train_loss"] * images, metrics["train_accuracy"] * images, images],
                          dtype=torch.float64, device=processes.device)
    seconds = torch.tensor([metrics["train_seconds"]], dtype=torch.float64, device=processes.device)
    if processes.distributed:
        dist.all_reduce(totals)  # SUM over processes, and every process receives the result
        dist.all_reduce(seconds, op=dist.ReduceOp.MAX)  # the epoch takes as long as the slowest process
    loss_sum, correct, images = totals.tolist()
    return {"train_loss": loss_sum / images, "train_accuracy": round(correct) / images, "train_images": int(images),
            "train_seconds": seconds.item()}


def test(model: nn.Module, device: torch.device, test_loader: DataLoader, loss_fn: nn.Module,
         processes: Processes, dry_run: bool = False) -> dict:
    """Each process evaluates its shard of the test set; the sums over all processes give the totals."""
    if processes.distributed:
        # Batch norm's running mean and variance are buffers, not weights: DDP copies rank 0's to the
        # others at the start of each training step, but the last step updated each process's own
        # with its own images. Take rank 0's, so every shard is judged by the model rank 0 saves.
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)
    part = evaluate(model, device, test_loader, loss_fn, dry_run)  # T02's evaluate(), on our shard only
    totals = torch.tensor([part["loss"] * part["images"], part["correct"], part["images"]],
                          dtype=torch.float64, device=processes.device)
    if processes.distributed:
        dist.all_reduce(totals)
    loss_sum, correct, images = totals.tolist()
    correct, images = round(correct), round(images)
    print(f"Test Accuracy: {100 * correct / images:.2f}%")  # printed by rank 0 only (the others are quiet)
    print(f"Test set: {correct}/{images} correct, average loss {loss_sum / images:.4f}")
    return {"test_loss": loss_sum / images, "test_accuracy": correct / images, "test_correct": correct,
            "test_images": images}


# --- Command line -----------------------------------------------------------------------------

class RankZeroParser(cli.ArgumentParser):
    """The lessons' argument parser, printing (--help, errors) from rank 0 only."""

    def _print_message(self, message, file=None) -> None:  # noqa: ANN001 (argparse's own signature)
        if is_rank_zero():
            super()._print_message(message, file)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command-line flags: T02's for the CNN, plus the distributed ones."""
    parser = RankZeroParser(description="T05: T02's CNN on FashionMNIST with DistributedDataParallel; "
                                        "run it with python (one process) or torchrun (several).")
    parser.add_argument("--model", choices=list(MODELS), default="cnn",
                        help="a model of T02: cnn (default), mlp or mlp-deep")
    parser.add_argument("--dataset", choices=["fashion-mnist", "mnist"], default="fashion-mnist",
                        help="which dataset (default: fashion-mnist)")
    parser.add_argument("--batch-size", type=cli.positive_int, default=64, metavar="N",
                        help="GLOBAL batch size: each of the W processes trains on N/W images per step "
                             "(N must divide by W; default: 64)")
    parser.add_argument("--test-batch-size", type=cli.positive_int, default=1000, metavar="N",
                        help="batch size for testing, per process (default: 1000)")
    parser.add_argument("--epochs", type=cli.positive_int, default=5, metavar="N",
                        help="number of epochs to train (default: 5)")
    parser.add_argument("--lr", type=cli.positive_float, default=0.01, metavar="LR",
                        help="learning rate, the same for any number of processes (default: 0.01)")
    parser.add_argument("--momentum", type=cli.momentum, default=0.9, metavar="M",
                        help="SGD momentum, 0 <= M < 1 (default: 0.9)")
    parser.add_argument("--log-interval", type=cli.positive_int, default=100, metavar="N",
                        help="print rank 0's average training loss every N steps (default: 100)")
    parser.add_argument("--dry-run", action="store_true",
                        help="train on one batch and test on one batch per process, to check that everything runs")
    parser.add_argument("--resume", type=Path, default=None, metavar="PATH",
                        help="continue from an earlier run's checkpoint.pt (every process reads it: on several "
                             "machines it must be at this path on each)")
    parser.add_argument("--save-model", action="store_true",
                        help="save the trained weights alone as <dataset>_<model>_ddp.pt in the run folder")
    group = parser.add_argument_group("distributed")
    group.add_argument("--backend", choices=["gloo", "nccl"], default=None,
                       help="how the processes talk: nccl between GPUs, gloo on CPUs "
                            "(default: nccl on CUDA, else gloo)")
    group.add_argument("--sync-bn", action="store_true",
                       help="batch norm over the whole global batch (SyncBatchNorm, GPUs only) instead of each "
                            "process's share")
    group.add_argument("--timeout", type=cli.positive_int, default=300, metavar="S",
                       help="seconds a process waits for the others in a collective operation before giving up "
                            "(default: 300)")
    add_device_arguments(parser)
    cli.add_run_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict]:
    """Train and test T02's model on one or several processes; rank 0 writes the run folder; return the history."""
    args = parse_args(argv)
    per_process_batch = split_batch(args.batch_size, torchrun_world_size(), args.model)  # before joining
    processes = start_processes(args)  # torchrun's RANK, LOCAL_RANK, WORLD_SIZE; the process group
    device = processes.device
    # Every process uses the same seed: the same first weights (DDP would copy rank 0's anyway) and
    # the same random numbers (dropout), so rank 0's checkpoint restores all of them exactly on
    # --resume. Each process's dropout masks are then alike, on different images; seed with
    # args.seed + rank to make them differ, at the cost of that exact resume.
    seed_everything(args.seed, args.deterministic)

    # 1. Data: every process keeps the whole dataset, but reads only its share of it.
    loaded = load_data_once_per_machine(processes, args)
    missing = args.resume is not None and not args.resume.is_file()  # e.g. not copied to this machine
    stop_if_any_failed(processes, f"--resume: checkpoint {args.resume} does not exist" if missing else None)
    if len(loaded.test_set) < processes.world_size:
        raise cli.UserError(f"{len(loaded.test_set)} test images cannot be shared by {processes.world_size} processes")
    # DistributedSampler: every epoch, one shuffle of all the training images (the same on every
    # process, from the seed and the epoch number), dealt out like cards: process r gets the images
    # at positions r, r + W, r + 2W, ... So together the W processes see each image once per epoch.
    train_sampler = DistributedSampler(loaded.train_set, num_replicas=processes.world_size, rank=processes.rank,
                                       shuffle=True, seed=args.seed)
    # Batch norm cannot train on a last batch of one image: drop it (the same on every process).
    drop_last = len(train_sampler) % per_process_batch == 1
    options = data.loader_options(args.num_workers, device, loaded.train_set)  # batching, workers, pinned memory
    train_loader = DataLoader(loaded.train_set, batch_size=per_process_batch, sampler=train_sampler,
                              drop_last=drop_last, **options)
    test_loader = DataLoader(shard(loaded.test_set, processes), batch_size=args.test_batch_size, shuffle=False,
                             **options)

    # 2. Model, loss, optimizer: exactly T02's. The optimizer holds the plain model's weights, which
    # DDP shares: DDP only adds the gradient averaging to backward().
    model = build_model(args.model, device)
    if args.sync_bn:  # batch norm over the global batch: its statistics are all-reduced every step
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = build_optimizer("sgd", model.parameters(), args.lr, args.momentum)

    # 3. The epoch loop, as in T02. TrainingRun (common/lifecycle.py) does the bookkeeping on rank 0
    # (run folder, train.log, checkpoints, Ctrl-C, divergence); the other processes stay quiet but
    # resume and count epochs alike. It gets the plain model, so the checkpoint is the plain model's
    # state dict (no "module." prefixes) that T02 loads.
    must_match = ("model", "dataset", "batch_size", "lr", "momentum", "sync_bn")
    with TrainingRun(__file__, args, model, optimizer, None, None, must_match=must_match,
                     name=f"{args.dataset}_{args.model}_ddp", is_main_process=processes.is_main,
                     launcher=launcher_words(processes)) as run:
        ddp_model = wrap_model(model, processes)  # after a resume has loaded the weights
        print(f"{processes.world_size} process(es), backend {processes.backend or 'none'}; global batch "
              f"{args.batch_size} = {processes.world_size} x {per_process_batch} images per process")
        print(f"{args.dataset}: {len(loaded.train_set):,} training and {len(loaded.test_set):,} test images")
        print(f"{model}\nParameters: {count_parameters(model):,}")
        for epoch in run.epochs():
            # A new shuffle each epoch. Forget this and every epoch deals the same images in the same
            # order to the same process: as if the training set were never shuffled again.
            train_sampler.set_epoch(epoch)
            train_metrics = train(ddp_model, device, train_loader, loss_fn, optimizer, epoch, args.epochs,
                                  args.log_interval, args.dry_run)
            train_metrics = combine_train_metrics(train_metrics, processes)
            test_metrics = test(model, device, test_loader, loss_fn, processes, args.dry_run)
            run.end_epoch(train_metrics, test_metrics, processes=processes.world_size)
        run.save_curves(f"{type(model).__name__} on {args.dataset}, {processes.world_size} process(es)")
        if args.save_model:
            run.save_weights(f"{args.dataset.replace('-', '_')}_{args.model.replace('-', '_')}_ddp.pt")
    end_processes(processes)
    return run.history


def run_on_every_process(main_function) -> None:  # noqa: ANN001
    """cli.run_main for several processes: each exits with the same code, only rank 0 says why."""
    try:
        main_function()
    except cli.UserError as err:
        if is_rank_zero():
            print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)
    except KeyboardInterrupt:
        if is_rank_zero():
            print("\nInterrupted.", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    run_on_every_process(main)
