"""T02 · The posts' hyper-parameter study: learning rate, batch size, optimizer, scheduler.

Every run trains the same model from the same seed and changes one thing at a time from
the posts' set-up (SGD with momentum 0.9, learning rate 0.01, batch 64, no scheduler):

    learning rate   0.1, 0.01, 0.001
    batch size      32, 64, 128
    optimizer       SGD (lr 0.01) against Adam (lr 0.001, its usual starting point)
    scheduler       none against StepLR (halve the learning rate every 2 epochs)

The set-up the studies share is trained once, so the default study is 7 runs.

    python T02_fashion_mnist/compare_hyperparameters.py                # 7 runs of the MLP, 5 epochs each
    python T02_fashion_mnist/compare_hyperparameters.py --epochs 2     # quicker
    python T02_fashion_mnist/compare_hyperparameters.py --lrs 0.5 0.05 --batch-sizes 64 --optimizers sgd
    python T02_fashion_mnist/compare_hyperparameters.py --full-grid    # every combination: 36 runs

It prints a table as it goes and writes results.csv (one row per run and epoch),
summary.csv (one row per run) and comparison.png (test accuracy per epoch) to its run
folder. A run that diverges (the loss becomes NaN) or fails is recorded and the study
goes on; if every run diverges or fails, the script says so and exits with status 2.
The model, train() and test() are fashion_mnist.py's, imported, not copied.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import itertools
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so `common/` and `T02_fashion_mnist` import

import torch
from torch import nn

from common import cli, plots
from common.device import add_device_arguments, describe, device_from_args
from common.logger import tee_output
from common.seed import seed_everything
from T02_fashion_mnist.fashion_mnist import (
    MODELS,
    LoadedData,
    build_model,
    build_optimizer,
    build_scheduler,
    count_parameters,
    load_data,
    make_loaders,
    test,
    train,
)

STUDIES = ("learning rate", "batch size", "optimizer", "scheduler")


@dataclass(frozen=True)
class RunConfig:
    """One training run's hyper-parameters."""

    lr: float
    batch_size: int
    optimizer: str
    scheduler: str

    @property
    def label(self) -> str:
        """A short name for tables and legends, e.g. 'lr=0.01 batch=64 sgd step'."""
        return f"lr={self.lr:g} batch={self.batch_size} {self.optimizer} {self.scheduler}"


def plan_runs(args: argparse.Namespace) -> dict[RunConfig, list[str]]:
    """The runs to make, each with the studies it belongs to (the shared baseline belongs to all)."""
    plan: dict[RunConfig, list[str]] = {}
    if args.full_grid:
        for lr, batch_size, optimizer, scheduler in itertools.product(args.lrs, args.batch_sizes, args.optimizers,
                                                                      args.schedulers):
            plan[RunConfig(lr, batch_size, optimizer, scheduler)] = ["grid"]
        return plan
    baseline = RunConfig(args.lr, args.batch_size, "sgd", "none")
    studies = {
        "learning rate": [RunConfig(lr, args.batch_size, "sgd", "none") for lr in args.lrs],
        "batch size": [RunConfig(args.lr, size, "sgd", "none") for size in args.batch_sizes],
        # Each optimizer at its usual learning rate: Adam at SGD's 0.01 would be an unfair start.
        "optimizer": [RunConfig(args.lr if name == "sgd" else args.adam_lr, args.batch_size, name, "none")
                      for name in args.optimizers],
        "scheduler": [RunConfig(args.lr, args.batch_size, "sgd", name) for name in args.schedulers],
    }
    for study, configs in studies.items():
        for config in configs:
            plan.setdefault(config, []).append(study)  # a config in several studies is trained once
    # Train the baseline first: every other run is read against it.
    return dict(sorted(plan.items(), key=lambda item: item[0] != baseline))


def run_one(config: RunConfig, args: argparse.Namespace, loaded: LoadedData, device: torch.device,
            number: str) -> tuple[list[dict], str]:
    """Train one configuration for args.epochs epochs; return its per-epoch rows and its status."""
    generator = seed_everything(args.seed, args.deterministic)  # every run starts from the same weights
    train_loader, test_loader = make_loaders(loaded, config.batch_size, args.test_batch_size, device, generator,
                                             args.num_workers)
    model = build_model(args.model, device)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = build_optimizer(config.optimizer, model.parameters(), config.lr, args.momentum)
    scheduler = build_scheduler(config.scheduler, optimizer, args.step_size, args.gamma)
    rows: list[dict] = []
    for epoch in range(1, args.epochs + 1):
        started = time.perf_counter()
        # train() and test() print their progress lines; the study prints one table row per epoch instead.
        with contextlib.redirect_stdout(io.StringIO()):
            train_metrics = train(model, device, train_loader, loss_fn, optimizer, epoch, args.epochs)
        if not math.isfinite(train_metrics["train_loss"]):
            # The weights are now NaN or infinite: more epochs cannot bring them back.
            print(f"{number:>6}  {config.label:<32} {epoch:>5}  diverged (loss {train_metrics['train_loss']})")
            return rows, f"diverged in epoch {epoch}"
        with contextlib.redirect_stdout(io.StringIO()):
            test_metrics = test(model, device, test_loader, loss_fn)
        if scheduler is not None:
            scheduler.step()
        seconds = time.perf_counter() - started
        rows.append({"epoch": epoch, "train_loss": train_metrics["train_loss"],
                     "test_loss": test_metrics["test_loss"], "test_accuracy": test_metrics["test_accuracy"],
                     "seconds": round(seconds, 2)})
        print(f"{number:>6}  {config.label:<32} {epoch:>5}  {train_metrics['train_loss']:>10.4f} "
              f"{test_metrics['test_loss']:>10.4f} {100 * test_metrics['test_accuracy']:>8.2f}% {seconds:>6.1f} s")
    return rows, "ok"


RESULT_COLUMNS = ["run", "label", "studies", "lr", "batch_size", "optimizer", "scheduler", "epoch", "train_loss",
                  "test_loss", "test_accuracy", "seconds", "status"]


def write_csv(rows: list[dict], path: Path, columns: list[str] | None = None) -> Path:
    """Write a list of dicts as CSV, one column per key (in first-seen order unless `columns` is given)."""
    columns = columns or list(dict.fromkeys(key for row in rows for key in row))
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def legend_label(row: dict, study: str) -> str:
    """What tells the runs of one study apart: the value that study varies."""
    if study == "learning rate":
        return f"lr={row['lr']:g}"
    if study == "batch size":
        return f"batch={row['batch_size']}"
    if study == "optimizer":
        return f"{row['optimizer']} (lr={row['lr']:g})"
    if study == "scheduler":
        return "StepLR" if row["scheduler"] == "step" else "constant lr"
    return row["label"]


def plot_comparison(summary: list[dict], results: list[dict], path: Path, show: bool = False) -> Path:
    """Save one panel per study: test accuracy against epoch, one line per run."""
    import matplotlib.pyplot as plt

    present = {study for row in summary for study in row["studies"].split("; ")}
    studies = [study for study in (*STUDIES, "grid") if study in present]  # always in the same order
    fig, axes = plt.subplots(1, len(studies), figsize=(4.5 * len(studies), 4), squeeze=False)
    for ax, study in zip(axes[0], studies):
        for row in summary:
            if study not in row["studies"].split("; "):
                continue
            epochs = [r for r in results if r["run"] == row["run"]]
            label = legend_label(row, study) + ("" if row["status"] == "ok" else f" ({row['status']})")
            ax.plot([r["epoch"] for r in epochs], [100 * r["test_accuracy"] for r in epochs], "o-", label=label)
        ax.set(title=study, xlabel="epoch", ylabel="test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return plots.save_figure(fig, path, show)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command-line flags; the lists default to the posts' study."""
    parser = cli.ArgumentParser(description="T02: compare learning rates, batch sizes, optimizers and schedulers.")
    parser.add_argument("--model", choices=list(MODELS), default="mlp", help="which model to train (default: mlp)")
    parser.add_argument("--dataset", choices=["fashion-mnist", "mnist"], default="fashion-mnist",
                        help="which dataset (default: fashion-mnist)")
    parser.add_argument("--epochs", type=cli.positive_int, default=5, metavar="N",
                        help="epochs per run (default: 5)")
    parser.add_argument("--lrs", type=cli.positive_float, nargs="+", default=[0.1, 0.01, 0.001], metavar="LR",
                        help="learning rates to compare, with SGD (default: 0.1 0.01 0.001)")
    parser.add_argument("--batch-sizes", type=cli.positive_int, nargs="+", default=[32, 64, 128], metavar="N",
                        help="batch sizes to compare (default: 32 64 128)")
    parser.add_argument("--optimizers", choices=["sgd", "adam"], nargs="+", default=["sgd", "adam"],
                        help="optimizers to compare (default: sgd adam)")
    parser.add_argument("--schedulers", choices=["none", "step"], nargs="+", default=["none", "step"],
                        help="learning-rate schedules to compare (default: none step)")
    parser.add_argument("--full-grid", action="store_true",
                        help="train every combination of the lists above instead of one change at a time")
    parser.add_argument("--lr", type=cli.positive_float, default=0.01, metavar="LR",
                        help="the baseline's learning rate, used while another setting varies (default: 0.01)")
    parser.add_argument("--batch-size", type=cli.positive_int, default=64, metavar="N",
                        help="the baseline's batch size (default: 64)")
    parser.add_argument("--adam-lr", type=cli.positive_float, default=0.001, metavar="LR",
                        help="Adam's learning rate in the optimizer study (default: 0.001)")
    parser.add_argument("--momentum", type=cli.momentum, default=0.9, metavar="M",
                        help="SGD momentum, 0 <= M < 1 (default: 0.9)")
    parser.add_argument("--step-size", type=cli.positive_int, default=2, metavar="N",
                        help="StepLR: epochs between learning-rate drops (default: 2)")
    parser.add_argument("--gamma", type=cli.positive_float, default=0.5, metavar="G",
                        help="StepLR: factor at each drop (default: 0.5)")
    parser.add_argument("--test-batch-size", type=cli.positive_int, default=1000, metavar="N",
                        help="input batch size for testing (default: 1000)")
    add_device_arguments(parser)
    cli.add_run_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the study; print a table as it goes; write results.csv, summary.csv and comparison.png."""
    args = parse_args(argv)
    plan = plan_runs(args)
    if args.model == "cnn" and any(config.batch_size == 1 for config in plan):
        raise cli.UserError("--model cnn needs batch sizes of 2 or more: batch norm normalises each training "
                            "batch by its own mean and variance, which a batch of one image does not have")
    plots.use_backend(args.show)
    device = device_from_args(args)
    loaded = load_data(args.dataset, args.data_dir, classic_pipeline=args.classic_pipeline)  # once, for every run
    out_dir = cli.make_run_dir(args.out_dir, "compare_hyperparameters")  # only once the data is there
    with tee_output(out_dir / "study.log"):  # everything printed also goes to study.log
        return run_study(args, plan, device, loaded, out_dir)


def run_study(args: argparse.Namespace, plan: dict[RunConfig, list[str]], device: torch.device,
              loaded: LoadedData, out_dir: Path) -> list[dict]:
    """The body of main(): train every planned run on the loaded data, write the results."""
    print(describe(device))
    parameters = count_parameters(MODELS[args.model]())
    print(f"{len(plan)} runs of {args.model} ({parameters:,} parameters) on {args.dataset}, "
          f"{args.epochs} epoch(s) each, seed {args.seed}")
    print(f"{'run':>6}  {'configuration':<32} {'epoch':>5}  {'train loss':>10} {'test loss':>10} "
          f"{'test acc':>9} {'time':>8}")
    results: list[dict] = []  # one row per run and epoch
    summary: list[dict] = []  # one row per run
    try:
        for number, (config, studies) in enumerate(plan.items(), start=1):
            tag = f"{number}/{len(plan)}"
            try:
                rows, status = run_one(config, args, loaded, device, tag)
            except Exception as err:  # e.g. out of memory with a big batch: note it and carry on
                rows, status = [], f"failed: {type(err).__name__}: {str(err).strip().splitlines()[0][:120]}"
                print(f"{tag:>6}  {config.label:<32} {status}")
            settings = {"run": number, "label": config.label, "studies": "; ".join(studies), "lr": config.lr,
                        "batch_size": config.batch_size, "optimizer": config.optimizer,
                        "scheduler": config.scheduler}
            results += [{**settings, **row, "status": status} for row in rows]
            accuracies = [row["test_accuracy"] for row in rows]
            summary.append({**settings, "status": status, "epochs": len(rows),
                            "final_test_accuracy": accuracies[-1] if accuracies else None,
                            "best_test_accuracy": max(accuracies) if accuracies else None,
                            "seconds": round(sum(row["seconds"] for row in rows), 1)})
    finally:  # also after Ctrl-C: keep what the finished runs measured
        if summary:
            write_csv(results, out_dir / "results.csv", RESULT_COLUMNS)  # header only if nothing finished
            write_csv(summary, out_dir / "summary.csv")
            plot_comparison(summary, results, out_dir / "comparison.png", show=args.show)

    print("\nSummary (final test accuracy):")
    for row in summary:
        accuracy = f"{100 * row['final_test_accuracy']:.2f}%" if row["final_test_accuracy"] is not None else "-"
        print(f"  {row['label']:<32} {accuracy:>8}  {row['status']}")
    print(f"Run folder: {out_dir} (study.log, results.csv, summary.csv, comparison.png)")
    if not any(row["status"] == "ok" for row in summary):  # a study with no result is no success
        raise cli.UserError(f"every run diverged or failed ({len(summary)} of {len(summary)}), so the study "
                            f"compares nothing; {out_dir / 'summary.csv'} says why for each")
    return summary


if __name__ == "__main__":
    cli.run_main(main)
