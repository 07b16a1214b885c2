"""T02 · The posts' hyper-parameter study: learning rate, batch size, optimizer, scheduler.

Every configuration is one run of fashion_mnist.py, in a folder of its own inside the study's
folder, from the same seed (the same first weights and the same shuffling), changing one thing
at a time from a shared set-up (lr 0.01, batch 64, SGD, no scheduler):

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

Choosing a configuration by its test accuracy would leak the test set into the choice. So every
run holds out the same validation images (--val-size), the study compares the runs on them, and
reports the test accuracy of the one configuration it chooses.

    python T02_fashion_mnist/compare_hyperparameters.py                # 7 runs of the MLP, 5 epochs each
    python T02_fashion_mnist/compare_hyperparameters.py --preset post  # the tuning post's settings
    python T02_fashion_mnist/compare_hyperparameters.py --epochs 3     # quicker
    python T02_fashion_mnist/compare_hyperparameters.py --lrs 0.5 0.05 --batch-sizes 64 --optimizers sgd
    python T02_fashion_mnist/compare_hyperparameters.py --full-grid    # every combination: 36 runs

It prints one line per run and epoch, then a summary, and writes study.log, summary.csv (one row
per run) and comparison.png (validation accuracy per epoch) to its folder; each run's own folder
holds what fashion_mnist.py writes (train.log, checkpoint.pt, metrics.csv, the figures). A run
that diverges is recorded as such and the study goes on; if no run finishes, it exits with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import itertools
import json
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

if __name__ == "__main__":  # run as a script, Ctrl-C while torch loads (a second or two) stops it, no traceback
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # (imported, e.g. in a notebook, nothing changes)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so `common/` and `T02_fashion_mnist` import

from torchvision import datasets

from common import cli, data
from common.run import Diverged, atomic_write, new_folder
from T02_fashion_mnist import fashion_mnist

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
    if args.full_grid:
        grid = itertools.product(args.lrs, args.batch_sizes, args.optimizers, args.schedulers)
        return {RunConfig(*values): ["grid"] for values in grid}
    baseline = RunConfig(args.lr, args.batch_size, "sgd", "none")
    studies = {
        "learning rate": [RunConfig(lr, args.batch_size, "sgd", "none") for lr in args.lrs],
        "batch size": [RunConfig(args.lr, size, "sgd", "none") for size in args.batch_sizes],
        # Adam at its own learning rate (--adam-lr, from the preset): see PRESETS.
        "optimizer": [RunConfig(args.lr if name == "sgd" else args.adam_lr, args.batch_size, name, "none")
                      for name in args.optimizers],
        "scheduler": [RunConfig(args.lr, args.batch_size, "sgd", name) for name in args.schedulers],
    }
    plan: dict[RunConfig, list[str]] = {}
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


def run_one(config: RunConfig, args: argparse.Namespace, folder: Path) -> tuple[list[dict], str]:
    """One fashion_mnist.py run of `config` in `folder`; its history (one row per epoch) and how it ended."""
    flags = ["--model", args.model, "--dataset", args.dataset, "--epochs", str(args.epochs),
             "--lr", str(config.lr), "--batch-size", str(config.batch_size), "--optimizer", config.optimizer,
             "--momentum", str(args.momentum), "--scheduler", config.scheduler, "--step-size", str(args.step_size),
             "--gamma", str(args.gamma), "--val-size", str(args.val_size), "--seed", str(args.seed),
             "--test-batch-size", str(args.test_batch_size), "--log-interval", str(cli.INT32_MAX),  # no step lines
             "--out-dir", str(folder)]
    flags += [f"--{name.replace('_', '-')}" for name in ("deterministic", "no_cuda", "no_mps", "no_accel")
              if getattr(args, name)]
    flags += (["--device", args.device] if args.device else []) + (["--data-dir", str(args.data_dir)]
                                                                   if args.data_dir else [])
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the run's own lines: its train.log keeps the epochs
            return fashion_mnist.main(flags), "ok"
    except Diverged:  # the epochs it finished are in its metrics.json (none: no folder is left)
        path = folder / "metrics.json"
        history = json.loads(path.read_text()) if path.is_file() else []
        return history, f"diverged in epoch {len(history) + 1}"
    except cli.UserError as err:  # a problem the run names (a full disk, say): recorded, and the study goes on
        return [], f"failed: {err}"


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


def plot_comparison(summary: list[dict], histories: dict[int, list[dict]], path: Path, show: bool = False) -> None:
    """Save one panel per study: validation accuracy against epoch, one line per run."""
    import matplotlib.pyplot as plt

    present = {study for row in summary for study in row["studies"].split("; ")}
    studies = [study for study in (*STUDIES, "grid") if study in present]  # always in the same order
    fig, axes = plt.subplots(1, len(studies), figsize=(4.5 * len(studies), 4), squeeze=False)
    for ax, study in zip(axes[0], studies):
        runs = [row for row in summary if study in row["studies"].split("; ")]
        for row in sorted(runs, key=lambda row: legend_order(row, study)):
            epochs = histories.get(row["run"], [])
            label = legend_label(row, study) + ("" if row["status"] == "ok" else f" ({row['status']})")
            ax.plot([r["epoch"] for r in epochs], [100 * r["val_accuracy"] for r in epochs], "o-", label=label)
        ax.set(title=study, xlabel="epoch", ylabel="validation accuracy (%)")
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(lambda f: fig.savefig(f, format="png", dpi=100), path)
    if show:
        plt.show()
    plt.close(fig)


def write_csv(rows: list[dict], path: Path) -> None:
    """Write a list of dicts as CSV, one column per key, all at once (never half a file)."""
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=list(dict.fromkeys(k for row in rows for k in row)), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(lambda f: f.write(table.getvalue().encode("utf-8")), path)


def claim_folder(out_dir: Path | None) -> Path:
    """A folder for the study, as TrainingRun claims one: study.log created there exclusively, or a UserError."""
    folder, _ = new_folder(out_dir, "compare_hyperparameters")
    try:
        open(folder / "study.log", "x").close()  # exclusive: of two studies started at once, one wins
    except FileExistsError:
        raise cli.UserError(f"{folder} already holds a study (study.log): choose a new --out-dir") from None
    return folder


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command-line flags; the lists default to the posts' study, the rest to --preset's values."""
    parser = cli.ArgumentParser(description="T02: compare learning rates, batch sizes, optimizers and schedulers.")
    parser.add_argument("--preset", choices=list(PRESETS), default="project",
                        help="the values of the flags marked 'preset' below: project (SGD momentum 0.9, Adam lr "
                             "0.001, StepLR every 2 epochs x 0.5) or post (the tuning post's: plain SGD, momentum 0; "
                             "Adam lr 0.01; StepLR every 10 epochs x 0.1). A flag given on the command line "
                             "overrides its preset value, e.g. --preset post --momentum 0.9 (default: project)")
    parser.add_argument("--model", choices=list(fashion_mnist.MODELS), default="mlp",
                        help="which model to train (default: mlp)")
    parser.add_argument("--dataset", choices=["fashion-mnist", "mnist"], default="fashion-mnist",
                        help="which dataset (default: fashion-mnist)")
    parser.add_argument("--epochs", type=cli.positive_int, default=5, metavar="N", help="epochs per run (default: 5)")
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
    parser.add_argument("--momentum", type=float, default=None, metavar="M",
                        help="preset: SGD momentum, 0 <= M < 1 (project 0.9, post 0)")
    parser.add_argument("--step-size", type=cli.positive_int, default=None, metavar="N",
                        help="preset: StepLR's epochs between learning-rate drops (project 2, post 10)")
    parser.add_argument("--gamma", type=cli.positive_float, default=None, metavar="G",
                        help="preset: StepLR's factor at each drop (project 0.5, post 0.1)")
    parser.add_argument("--val-size", type=cli.positive_int, default=None, metavar="N",
                        help="training images held out (chosen by --seed) to compare the runs on; the test accuracy "
                             "is reported for the chosen run only (default: 5000, or 10%% of a smaller training set)")
    parser.add_argument("--test-batch-size", type=cli.positive_int, default=1000, metavar="N",
                        help="input batch size for validation and testing (default: 1000)")
    parser.add_common_flags()
    args = parser.parse_args(argv)
    if args.resume is not None:
        parser.error("--resume: a study does not resume; resume one of its runs with fashion_mnist.py --resume")
    if args.momentum is not None and not 0 <= args.momentum < 1:
        parser.error(f"--momentum: must be at least 0 and less than 1, got {args.momentum}")
    if args.model == "cnn" and 1 in [args.batch_size, *args.batch_sizes]:
        parser.error("--model cnn needs batch sizes of 2 or more: batch norm normalises each training batch by "
                     "its own mean and variance, which a batch of one image does not have")
    args.from_command_line = {name for name in PRESETS[args.preset] if getattr(args, name) is not None}
    for name, value in PRESETS[args.preset].items():
        if getattr(args, name) is None:  # not given: the preset's value
            setattr(args, name, value)
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the study; print a table as it goes; write study.log, summary.csv and comparison.png."""
    args = parse_args(argv)
    plan = plan_runs(args)
    # The training set's size, for the default --val-size and to check it; a missing dataset stops here.
    dataset_class = datasets.FashionMNIST if args.dataset == "fashion-mnist" else datasets.MNIST
    train_size = len(dataset_class(data.download(args.dataset, args.data_dir), train=True))
    args.val_size = args.val_size or max(1, min(5000, train_size // 10))  # 5,000, or 10% of a smaller set
    if args.val_size >= train_size:
        raise cli.UserError(f"--val-size {args.val_size}: the training set has only {train_size:,} images, and "
                            "some must be left to train on; hold out fewer")
    folder = claim_folder(args.out_dir)

    def say(text: str = "") -> None:  # print, and keep in study.log
        print(text)
        with open(folder / "study.log", "a", encoding="utf-8") as f:
            f.write(text + "\n")

    say(describe_preset(args))
    say(f"{len(plan)} runs of {args.model} on {args.dataset}, {args.epochs} epoch(s) each, seed {args.seed}; "
        f"{train_size - args.val_size:,} training images, {args.val_size:,} held out to compare the runs on")
    if note := scheduler_note(args, plan):
        say(note)
    say(f"{'run':>6}  {'configuration':<32} {'epoch':>5} {'lr':>8}  {'train loss':>10} {'val loss':>10} "
        f"{'val acc':>9} {'time':>8}")
    summary, histories = [], {}
    try:
        for number, (config, studies) in enumerate(plan.items(), start=1):
            name = f"{number:02d}-lr{config.lr:g}-batch{config.batch_size}-{config.optimizer}-{config.scheduler}"
            history, status = run_one(config, args, folder / name)
            tag = f"{number}/{len(plan)}"
            for row in history:
                say(f"{tag:>6}  {config.label:<32} {row['epoch']:>5} {row['lr']:>8g}  {row['train_loss']:>10.4f} "
                    f"{row['val_loss']:>10.4f} {100 * row['val_accuracy']:>8.2f}% {row['seconds']:>6.1f} s")
            if status != "ok":
                say(f"{tag:>6}  {config.label:<32} {status}")
            histories[number] = history
            accuracies = [row["val_accuracy"] for row in history]
            summary.append({"run": number, "folder": name, "label": config.label, "studies": "; ".join(studies),
                            "lr": config.lr, "batch_size": config.batch_size, "optimizer": config.optimizer,
                            "scheduler": config.scheduler, "status": status, "epochs": len(history),
                            "final_val_accuracy": accuracies[-1] if accuracies else None,
                            "best_val_accuracy": max(accuracies) if accuracies else None,
                            "test_accuracy": None,  # reported for the chosen run only, below
                            "seconds": round(sum(row["seconds"] for row in history), 1)})
        # The run kept is the model at its last epoch, so it is judged by its final validation accuracy
        # (the first of equals). Its test accuracy is the honest estimate: nothing was chosen by it.
        finished = [(row, histories[row["run"]]) for row in summary if row["status"] == "ok"]
        if finished:
            chosen, history = max(finished, key=lambda pair: pair[0]["final_val_accuracy"])
            chosen["test_accuracy"] = history[-1]["test_accuracy"]
    finally:  # also after Ctrl-C: keep what the finished runs measured
        if summary:
            write_csv(summary, folder / "summary.csv")
            plot_comparison(summary, histories, folder / "comparison.png", show=args.show)

    say("\nSummary (final validation accuracy):")
    for row in summary:
        accuracy = f"{100 * row['final_val_accuracy']:.2f}%" if row["final_val_accuracy"] is not None else "-"
        say(f"  {row['label']:<32} {accuracy:>8}  {row['status']}")
    if not finished:  # a study with no result is no success
        raise cli.UserError(f"every run diverged or failed ({len(summary)} of {len(summary)}), so the study "
                            f"compares nothing; {folder / 'summary.csv'} says why for each")
    say(f"Best on validation: {chosen['label']} (validation {100 * chosen['final_val_accuracy']:.2f}%); "
        f"its test accuracy: {100 * chosen['test_accuracy']:.2f}%")
    say(f"Study folder: {folder} (study.log, summary.csv, comparison.png, one folder per run)")
    return summary


if __name__ == "__main__":
    cli.run_main(main)
