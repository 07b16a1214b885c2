"""T02 · The posts' hyper-parameter study: learning rate, batch size, optimizer, scheduler.

Every run trains the same model from the same seed and changes one thing at a time from a
shared set-up (lr 0.01, batch 64, SGD, no scheduler):

    learning rate   0.1, 0.01, 0.001 (SGD)
    batch size      32, 64, 128
    optimizer       SGD against Adam
    scheduler       none against StepLR

Two presets fill in the rest (a flag given on the command line overrides its preset value):

    --preset project   the default: SGD with momentum 0.9, Adam at lr 0.001 (its usual starting
                       point), StepLR halving the learning rate every 2 epochs
    --preset post      the tuning post's settings: plain SGD (momentum 0), Adam at lr 0.01,
                       StepLR(step_size=10, gamma=0.1), which a 5-epoch run never reaches

The set-up the studies share is trained once, so the default study is 7 runs.

Choosing a configuration by its test accuracy would leak the test set into the choice. So the
study holds out validation images from the training set (--val-size), compares the runs on
them, and measures the test accuracy once, for the configuration it chooses.

    python T02_fashion_mnist/compare_hyperparameters.py                # 7 runs of the MLP, 5 epochs each
    python T02_fashion_mnist/compare_hyperparameters.py --preset post  # the tuning post's settings
    python T02_fashion_mnist/compare_hyperparameters.py --epochs 2     # quicker
    python T02_fashion_mnist/compare_hyperparameters.py --lrs 0.5 0.05 --batch-sizes 64 --optimizers sgd
    python T02_fashion_mnist/compare_hyperparameters.py --full-grid    # every combination: 36 runs

It prints a table as it goes and writes results.csv (one row per run and epoch),
summary.csv (one row per run) and comparison.png (validation accuracy per epoch) to its run
folder. A run that diverges (the loss becomes NaN) or fails is recorded and the study
goes on; if every run diverges or fails, the script says so and exits with status 2.
The model, train(), evaluate() and test() are fashion_mnist.py's, imported, not copied.
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
    evaluate,
    hold_out_validation,
    load_data,
    make_eval_loader,
    make_loaders,
    test,
    train,
)

STUDIES = ("learning rate", "batch size", "optimizer", "scheduler")

# The settings each preset gives the flags that depend on it; a flag given on the command line wins.
PRESETS = {
    # This project's set-up: the momentum the other posts train with, Adam at its usual starting
    # point (at SGD's 0.01 it starts at a disadvantage), and a StepLR that acts within 5 epochs.
    "project": {"momentum": 0.9, "adam_lr": 0.001, "step_size": 2, "gamma": 0.5},
    # The tuning post's code: optim.SGD(model.parameters(), lr=lr) (no momentum),
    # optim.Adam(model.parameters(), lr=0.01) and StepLR(optimizer, step_size=10, gamma=0.1).
    "post": {"momentum": 0.0, "adam_lr": 0.01, "step_size": 10, "gamma": 0.1},
}
PRESET_NAMES = {"project": "this project's set-up", "post": "the tuning post's settings"}

# Validation images held out of the training set when --val-size is not given: 5,000, as many
# tutorials hold out of MNIST's 60,000 (enough to tell apart runs 1% apart: at 90% accuracy the
# standard error is 0.4%), but never more than a tenth of a smaller training set.
DEFAULT_VAL_SIZE, DEFAULT_VAL_FRACTION = 5000, 0.1


def default_val_size(train_size: int) -> int:
    """The validation images to hold out of `train_size`: 5,000, or 10% of a training set under 50,000."""
    return max(1, min(DEFAULT_VAL_SIZE, int(train_size * DEFAULT_VAL_FRACTION)))


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
        # Adam at its own learning rate (--adam-lr, from the preset): see PRESETS.
        "optimizer": [RunConfig(args.lr if name == "sgd" else args.adam_lr, args.batch_size, name, "none")
                      for name in args.optimizers],
        "scheduler": [RunConfig(args.lr, args.batch_size, "sgd", name) for name in args.schedulers],
    }
    for study, configs in studies.items():
        for config in configs:
            plan.setdefault(config, []).append(study)  # a config in several studies is trained once
    # Train the baseline first: every other run is read against it.
    return dict(sorted(plan.items(), key=lambda item: item[0] != baseline))


def describe_preset(args: argparse.Namespace) -> str:
    """One line: the preset, the values it gave, and which flags the command line overrode."""
    given = [name for name in PRESETS[args.preset] if name in args.from_command_line]
    overrides = (", with " + " ".join(f"--{name.replace('_', '-')} {getattr(args, name):g}" for name in given)
                 + " from the command line") if given else ""
    return (f"Preset: {args.preset} ({PRESET_NAMES[args.preset]}{overrides}): SGD momentum {args.momentum:g}, "
            f"Adam lr {args.adam_lr:g}, StepLR(step_size={args.step_size}, gamma={args.gamma:g})")


def scheduler_note(args: argparse.Namespace, plan: dict[RunConfig, list[str]]) -> str | None:
    """A warning line when StepLR would first lower the learning rate only after the last epoch."""
    if args.step_size < args.epochs or not any(config.scheduler == "step" for config in plan):
        return None
    return (f"Note: StepLR(step_size={args.step_size}, gamma={args.gamma:g}) lowers the learning rate only after "
            f"epoch {args.step_size}, and each run trains {args.epochs} epoch(s): it never acts here, so the StepLR "
            f"runs' lr column stays constant (train more than {args.step_size} epochs, or lower --step-size)")


def run_one(config: RunConfig, args: argparse.Namespace, loaded: LoadedData, device: torch.device,
            number: str) -> tuple[list[dict], str, nn.Module]:
    """Train one configuration for args.epochs epochs, validating after each; return its rows, status and model."""
    generator = seed_everything(args.seed, args.deterministic)  # every run starts from the same weights
    train_loader, _ = make_loaders(loaded, config.batch_size, args.test_batch_size, device, generator,
                                   args.num_workers)
    val_loader = make_eval_loader(loaded.val_set, args.test_batch_size, device, args.num_workers)
    model = build_model(args.model, device)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = build_optimizer(config.optimizer, model.parameters(), config.lr, args.momentum)
    scheduler = build_scheduler(config.scheduler, optimizer, args.step_size, args.gamma)
    rows: list[dict] = []
    for epoch in range(1, args.epochs + 1):
        started = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]  # the rate this epoch trains with (StepLR changes it)
        # train() prints its progress lines; the study prints one table row per epoch instead.
        with contextlib.redirect_stdout(io.StringIO()):
            train_metrics = train(model, device, train_loader, loss_fn, optimizer, epoch, args.epochs)
        if not math.isfinite(train_metrics["train_loss"]):
            # The weights are now NaN or infinite: more epochs cannot bring them back.
            print(f"{number:>6}  {config.label:<32} {epoch:>5}  diverged (loss {train_metrics['train_loss']})")
            return rows, f"diverged in epoch {epoch}", model
        val = evaluate(model, device, val_loader, loss_fn)  # validation, never the test set: see main()
        if scheduler is not None:
            scheduler.step()
        seconds = time.perf_counter() - started
        rows.append({"epoch": epoch, "epoch_lr": lr, "train_loss": train_metrics["train_loss"],
                     "val_loss": val["loss"], "val_accuracy": val["accuracy"], "seconds": round(seconds, 2)})
        print(f"{number:>6}  {config.label:<32} {epoch:>5} {lr:>8g}  {train_metrics['train_loss']:>10.4f} "
              f"{val['loss']:>10.4f} {100 * val['accuracy']:>8.2f}% {seconds:>6.1f} s")
    return rows, "ok", model


RESULT_COLUMNS = ["run", "label", "studies", "lr", "batch_size", "optimizer", "scheduler", "epoch", "epoch_lr",
                  "train_loss", "val_loss", "val_accuracy", "seconds", "status"]


def write_csv(rows: list[dict], path: Path, columns: list[str] | None = None) -> Path:
    """Write a list of dicts as CSV, one column per key (in first-seen order unless `columns` is given)."""
    columns = columns or list(dict.fromkeys(key for row in rows for key in row))
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


# The setting each study varies: its legend lists the runs in the order of that value.
STUDY_SETTING = {"learning rate": "lr", "batch size": "batch_size", "optimizer": "optimizer",
                 "scheduler": "scheduler"}


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


def legend_order(row: dict, study: str) -> tuple:
    """Sort key: the value the study varies first (lr 0.001 < 0.01 < 0.1, batch 32 < 64 < 128), not run order."""
    first = STUDY_SETTING.get(study)
    rest = tuple(row[key] for key in ("lr", "batch_size", "optimizer", "scheduler") if key != first)
    return ((row[first],) if first else ()) + rest


def plot_comparison(summary: list[dict], results: list[dict], path: Path, show: bool = False) -> Path:
    """Save one panel per study: validation accuracy against epoch, one line per run."""
    import matplotlib.pyplot as plt

    present = {study for row in summary for study in row["studies"].split("; ")}
    studies = [study for study in (*STUDIES, "grid") if study in present]  # always in the same order
    fig, axes = plt.subplots(1, len(studies), figsize=(4.5 * len(studies), 4), squeeze=False)
    for ax, study in zip(axes[0], studies):
        runs = [row for row in summary if study in row["studies"].split("; ")]
        for row in sorted(runs, key=lambda row: legend_order(row, study)):
            epochs = [r for r in results if r["run"] == row["run"]]
            label = legend_label(row, study) + ("" if row["status"] == "ok" else f" ({row['status']})")
            ax.plot([r["epoch"] for r in epochs], [100 * r["val_accuracy"] for r in epochs], "o-", label=label)
        ax.set(title=study, xlabel="epoch", ylabel="validation accuracy (%)")
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return plots.save_figure(fig, path, show)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command-line flags; the lists default to the posts' study, the rest to --preset's values."""
    parser = cli.ArgumentParser(description="T02: compare learning rates, batch sizes, optimizers and schedulers.")
    parser.add_argument("--preset", choices=list(PRESETS), default="project",
                        help="the values of the flags marked 'preset' below: project (SGD momentum 0.9, Adam lr "
                             "0.001, StepLR every 2 epochs x 0.5) or post (the tuning post's: plain SGD, momentum 0; "
                             "Adam lr 0.01; StepLR every 10 epochs x 0.1). A flag given on the command line "
                             "overrides its preset value, e.g. --preset post --momentum 0.9 (default: project)")
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
    parser.add_argument("--adam-lr", type=cli.positive_float, default=None, metavar="LR",
                        help="preset: Adam's learning rate in the optimizer study (project 0.001, post 0.01)")
    parser.add_argument("--momentum", type=cli.momentum, default=None, metavar="M",
                        help="preset: SGD momentum, 0 <= M < 1 (project 0.9, post 0)")
    parser.add_argument("--step-size", type=cli.positive_int, default=None, metavar="N",
                        help="preset: StepLR's epochs between learning-rate drops (project 2, post 10)")
    parser.add_argument("--gamma", type=cli.positive_float, default=None, metavar="G",
                        help="preset: StepLR's factor at each drop (project 0.5, post 0.1)")
    parser.add_argument("--val-size", type=cli.positive_int, default=None, metavar="N",
                        help="training images held out (chosen by --seed) to compare the runs on; the test set is "
                             "used once, for the chosen run (default: 5000, or 10%% of a training set under 50,000)")
    parser.add_argument("--test-batch-size", type=cli.positive_int, default=1000, metavar="N",
                        help="input batch size for validation and testing (default: 1000)")
    add_device_arguments(parser)
    cli.add_run_arguments(parser)
    args = parser.parse_args(argv)
    args.from_command_line = {name for name in PRESETS[args.preset] if getattr(args, name) is not None}
    for name, value in PRESETS[args.preset].items():
        if getattr(args, name) is None:  # not given: the preset's value
            setattr(args, name, value)
    return args


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
    val_size = args.val_size or default_val_size(len(loaded.train_set))
    loaded = hold_out_validation(loaded, val_size, args.seed)  # the same split for every run
    out_dir = cli.make_run_dir(args.out_dir, "compare_hyperparameters")  # only once the data is there
    with tee_output(out_dir / "study.log"):  # everything printed also goes to study.log
        return run_study(args, plan, device, loaded, out_dir)


def run_study(args: argparse.Namespace, plan: dict[RunConfig, list[str]], device: torch.device,
              loaded: LoadedData, out_dir: Path) -> list[dict]:
    """The body of main(): train every planned run, choose one on validation, test it once, write the results."""
    print(describe(device))
    print(describe_preset(args))
    parameters = count_parameters(MODELS[args.model]())
    print(f"{len(plan)} runs of {args.model} ({parameters:,} parameters) on {args.dataset}, "
          f"{args.epochs} epoch(s) each, seed {args.seed}; {len(loaded.train_set):,} training images, "
          f"{len(loaded.val_set):,} held out to compare the runs on (validation)")
    note = scheduler_note(args, plan)
    if note:
        print(note)
    print(f"{'run':>6}  {'configuration':<32} {'epoch':>5} {'lr':>8}  {'train loss':>10} {'val loss':>10} "
          f"{'val acc':>9} {'time':>8}")
    results: list[dict] = []  # one row per run and epoch
    summary: list[dict] = []  # one row per run
    best: tuple[dict, nn.Module] | None = None  # the summary row and the model of the best run on validation
    try:
        for number, (config, studies) in enumerate(plan.items(), start=1):
            tag = f"{number}/{len(plan)}"
            try:
                rows, status, model = run_one(config, args, loaded, device, tag)
            except Exception as err:  # e.g. out of memory with a big batch: note it and carry on
                rows, model = [], None
                status = f"failed: {type(err).__name__}: {str(err).strip().splitlines()[0][:120]}"
                print(f"{tag:>6}  {config.label:<32} {status}")
            settings = {"run": number, "label": config.label, "studies": "; ".join(studies), "lr": config.lr,
                        "batch_size": config.batch_size, "optimizer": config.optimizer,
                        "scheduler": config.scheduler}
            results += [{**settings, **row, "status": status} for row in rows]
            accuracies = [row["val_accuracy"] for row in rows]
            summary.append({**settings, "status": status, "epochs": len(rows),
                            "final_val_accuracy": accuracies[-1] if accuracies else None,
                            "best_val_accuracy": max(accuracies) if accuracies else None,
                            "test_accuracy": None,  # measured for the chosen run only, below
                            "seconds": round(sum(row["seconds"] for row in rows), 1)})
            # The trained model at its last epoch is what we would keep, so it is judged by its final
            # validation accuracy. Only the best run's model is kept in memory (the first of equals).
            if status == "ok" and (best is None or summary[-1]["final_val_accuracy"] > best[0]["final_val_accuracy"]):
                best = (summary[-1], model)
        if best is not None:
            # The test set, once, for the one configuration chosen on validation: an honest estimate.
            chosen, model = best
            with contextlib.redirect_stdout(io.StringIO()):
                tested = test(model, device, make_eval_loader(loaded.test_set, args.test_batch_size, device,
                                                              args.num_workers), nn.CrossEntropyLoss())
            chosen["test_accuracy"] = tested["test_accuracy"]
    finally:  # also after Ctrl-C: keep what the finished runs measured
        if summary:
            write_csv(results, out_dir / "results.csv", RESULT_COLUMNS)  # header only if nothing finished
            write_csv(summary, out_dir / "summary.csv")
            plot_comparison(summary, results, out_dir / "comparison.png", show=args.show)

    print("\nSummary (final validation accuracy):")
    for row in summary:
        accuracy = f"{100 * row['final_val_accuracy']:.2f}%" if row["final_val_accuracy"] is not None else "-"
        print(f"  {row['label']:<32} {accuracy:>8}  {row['status']}")
    if best is not None:
        chosen = best[0]
        print(f"Best on validation: {chosen['label']} (validation {100 * chosen['final_val_accuracy']:.2f}%); "
              f"its test accuracy: {100 * chosen['test_accuracy']:.2f}%")
    print(f"Run folder: {out_dir} (study.log, results.csv, summary.csv, comparison.png)")
    if not any(row["status"] == "ok" for row in summary):  # a study with no result is no success
        raise cli.UserError(f"every run diverged or failed ({len(summary)} of {len(summary)}), so the study "
                            f"compares nothing; {out_dir / 'summary.csv'} says why for each")
    return summary


if __name__ == "__main__":
    cli.run_main(main)
