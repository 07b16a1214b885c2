"""The run lifecycle (common/lifecycle.py) on a tiny model: folders, resume, Ctrl-C, divergence, outputs."""

from __future__ import annotations

import argparse
import errno
import json
import os
import signal
from pathlib import Path

import pytest
import torch
from torch import nn

from common import checkpoint, cli, lifecycle, plots
from common.lifecycle import TrainingRun

pytestmark = pytest.mark.usefixtures("one_thread")

X = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
Y = (X.sum(1) > 0).long()


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)
        self.drop = nn.Dropout(0.5)  # uses torch's RNG: exact resume needs its state restored

    def forward(self, x):
        return self.fc(self.drop(x))


def make_args(out_dir: Path | None, epochs: int = 3, resume: Path | None = None, lr: float = 0.1,
              **more) -> argparse.Namespace:
    return argparse.Namespace(out_dir=out_dir, epochs=epochs, resume=resume, lr=lr, dry_run=False, show=False,
                              batch_size=8, command_line=["--epochs", str(epochs)], **more)


def build(args):
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = Tiny()
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    return model, optimizer, scheduler, generator


def one_epoch(model, optimizer, generator, poison: bool = False) -> tuple[dict, dict]:
    model.train()
    total = 0.0
    for index in torch.randperm(len(X), generator=generator).split(8):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(X[index]), Y[index])
        loss.backward()
        optimizer.step()
        total += loss.item() * len(index)
    if poison:
        with torch.no_grad():
            model.fc.weight[0, 0] = float("nan")
    return {"train_loss": total / len(X), "train_images": len(X)}, {"test_loss": total / len(X)}


def train_run(args, stop_in_epoch: int | None = None, poison_in_epoch: int | None = None, script: str = "tiny.py"):
    model, optimizer, scheduler, generator = build(args)
    with TrainingRun(script, args, model, optimizer, scheduler, generator, must_match=("lr", "batch_size")) as run:
        for epoch in run.epochs():
            train_metrics, test_metrics = one_epoch(model, optimizer, generator, poison=epoch == poison_in_epoch)
            if epoch == stop_in_epoch:
                raise KeyboardInterrupt  # Ctrl-C in the middle of an epoch
            scheduler.step()
            run.end_epoch(train_metrics, test_metrics)
    return run, model


def strict_json(path: Path):
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_a_run_writes_checkpoint_metrics_log_and_records_the_lr(tmp_path, capsys):
    run, _ = train_run(make_args(tmp_path / "run"))
    out = capsys.readouterr().out
    assert {p.name for p in (tmp_path / "run").iterdir()} == {"checkpoint.pt", "metrics.json", "metrics.csv",
                                                               "train.log"}
    assert [row["lr"] for row in run.history] == [0.1, 0.05, 0.025]  # the rate each epoch trained with
    assert strict_json(tmp_path / "run" / "metrics.json") == run.history
    assert checkpoint.safe_load(tmp_path / "run" / "checkpoint.pt")["epoch"] == 3
    log = (tmp_path / "run" / "train.log").read_text()
    assert "Epoch 3 took" in log and "Using device: cpu" in log and "Epoch 3 took" in out
    assert log.splitlines()[0][:4].isdigit()  # each line time-stamped in the file


def test_a_folder_that_holds_a_run_is_never_reused(tmp_path):
    train_run(make_args(tmp_path / "run", epochs=1))
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    with pytest.raises(cli.UserError, match=r"run already holds another run \(checkpoint.pt.*--resume .*checkpoint.pt"):
        train_run(make_args(tmp_path / "run", epochs=1))
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == before  # not even the log grew


def test_a_folder_left_by_a_killed_run_is_refused_without_a_resume_hint(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "train.log").write_text("a run killed (SIGKILL) during its first epoch\n")
    with pytest.raises(cli.UserError, match="delete the folder if you no longer need it") as error:
        train_run(make_args(tmp_path / "run", epochs=1))
    assert "--resume" not in str(error.value)  # there is no checkpoint.pt to resume from


def test_an_empty_existing_folder_is_fine(tmp_path):
    (tmp_path / "run").mkdir()
    run, _ = train_run(make_args(tmp_path / "run", epochs=1))
    assert (tmp_path / "run" / "checkpoint.pt").is_file() and len(run.history) == 1


def test_a_run_that_fails_before_its_first_epoch_leaves_nothing(tmp_path):
    args = make_args(tmp_path / "new" / "run")
    model, optimizer, scheduler, generator = build(args)
    with pytest.raises(cli.UserError, match="out of memory"):
        with TrainingRun("tiny.py", args, model, optimizer, scheduler, generator) as run:
            for _ in run.epochs():
                raise cli.UserError("out of memory")
    assert not (tmp_path / "new" / "run").exists()
    with pytest.raises(KeyboardInterrupt):
        train_run(make_args(tmp_path / "run2"), stop_in_epoch=1)
    assert not (tmp_path / "run2").exists()  # so the same --out-dir works next time


def test_two_runs_cannot_write_one_folder_at_once(tmp_path):
    (tmp_path / "run").mkdir()
    held = lifecycle._lock_folder(tmp_path / "run")  # as another process running there would
    try:
        with pytest.raises(cli.UserError, match="another run is writing to .*run right now"):
            train_run(make_args(tmp_path / "run"))
    finally:
        lifecycle._unlock_folder(held, tmp_path / "run")
    assert not (tmp_path / "run" / "train.log").exists()


def test_resume_after_ctrl_c_mid_epoch_equals_an_uninterrupted_run(tmp_path, capsys):
    straight, straight_model = train_run(make_args(tmp_path / "straight", epochs=4))
    with pytest.raises(KeyboardInterrupt):
        train_run(make_args(tmp_path / "split", epochs=4), stop_in_epoch=3)
    out = capsys.readouterr().out
    assert "Interrupted during epoch 3." in out and "holds epoch 2, the last finished one" in out
    assert "python tiny.py --epochs 4 --resume " in out
    assert checkpoint.safe_load(tmp_path / "split" / "checkpoint.pt")["epoch"] == 2
    resumed, resumed_model = train_run(make_args(None, epochs=4, resume=tmp_path / "split" / "checkpoint.pt"))
    timing = {"seconds"}
    assert [{k: v for k, v in r.items() if k not in timing} for r in resumed.history] == \
        [{k: v for k, v in r.items() if k not in timing} for r in straight.history]
    assert torch.equal(resumed_model.fc.weight, straight_model.fc.weight)  # bit for bit
    assert resumed.out_dir == tmp_path / "split"  # a resumed run continues in its own folder


def test_resume_names_every_flag_that_differs_and_lets_epochs_grow(tmp_path):
    train_run(make_args(tmp_path / "run", epochs=1))
    path = tmp_path / "run" / "checkpoint.pt"
    log_before = (path.parent / "train.log").read_bytes()
    args = make_args(None, epochs=2, resume=path, lr=0.5)
    args.batch_size = 16
    with pytest.raises(cli.UserError) as error:
        train_run(args)
    assert "--lr 0.1 (this run: 0.5)" in str(error.value) and "--batch-size 8 (this run: 16)" in str(error.value)
    with pytest.raises(cli.UserError, match="already trained 1 epoch"):
        train_run(make_args(None, epochs=1, resume=path))
    with pytest.raises(cli.UserError, match="leave out --out-dir"):
        train_run(make_args(tmp_path / "elsewhere", epochs=2, resume=path))
    assert (path.parent / "train.log").read_bytes() == log_before  # refusals write nothing
    run, _ = train_run(make_args(None, epochs=2, resume=path))
    assert [row["epoch"] for row in run.history] == [1, 2]


def test_resume_refuses_another_models_checkpoint_without_touching_its_folder(tmp_path):
    other = nn.Linear(3, 3)
    checkpoint.save_checkpoint(tmp_path / "checkpoint.pt", other, epoch=1)
    (tmp_path / "train.log").write_text("the other run's log\n")
    with pytest.raises(cli.UserError, match="holds a Linear model, not a Tiny"):
        train_run(make_args(None, resume=tmp_path / "checkpoint.pt"))
    assert (tmp_path / "train.log").read_text() == "the other run's log\n"


@pytest.mark.filterwarnings("ignore:.*meta parameter")  # copying into meta tensors does nothing: expected here
def test_resume_loads_on_the_cpu_then_moves_state_to_the_models_device(tmp_path):
    """Stands in for resuming on a GPU, which this machine does not have.

    The model and optimizer live on the `meta` device here, as they would live on `cuda`: any
    non-CPU device. Loading the file with map_location=<that device> (the old code) would put the
    saved random-number state there too, and torch.set_rng_state only takes a CPU tensor.
    """
    train_run(make_args(tmp_path / "run", epochs=1))
    saved = checkpoint.safe_load(tmp_path / "run" / "checkpoint.pt")
    model = Tiny().to("meta")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    generator = torch.Generator()
    torch.manual_seed(123)
    state = checkpoint.load_checkpoint(tmp_path / "run" / "checkpoint.pt", model, optimizer, generator=generator)
    assert state["epoch"] == 1
    assert torch.equal(torch.get_rng_state(), saved["rng"]["torch"])  # restored on the CPU
    assert torch.equal(generator.get_state(), saved["rng"]["loader"])
    assert model.fc.weight.device.type == "meta"
    assert optimizer.state[model.fc.weight]["momentum_buffer"].device.type == "meta"  # moved beside its weight


def test_divergence_stops_with_one_line_and_keeps_the_last_good_checkpoint(tmp_path):
    with pytest.raises(lifecycle.Diverged) as error:
        train_run(make_args(tmp_path / "run"), poison_in_epoch=2)
    message = str(error.value)
    assert "diverged in epoch 2" in message and "learning rate 0.05" in message and "smaller --lr" in message
    assert "\n" not in message
    assert checkpoint.safe_load(tmp_path / "run" / "checkpoint.pt")["epoch"] == 1  # NaN weights never saved
    assert [row["epoch"] for row in strict_json(tmp_path / "run" / "metrics.json")] == [1]
    assert "error: training diverged in epoch 2" in (tmp_path / "run" / "train.log").read_text()


def test_divergence_in_a_metric(tmp_path):
    args = make_args(tmp_path / "run")
    model, optimizer, scheduler, generator = build(args)
    with pytest.raises(lifecycle.Diverged, match="train_loss = nan"):
        with TrainingRun("tiny.py", args, model, optimizer, scheduler, generator) as run:
            for _ in run.epochs():
                run.end_epoch({"train_loss": float("nan")}, {"test_loss": 1.0})
    assert not (tmp_path / "run").exists()


def test_weights_with_nan_are_never_saved(tmp_path):
    args = make_args(tmp_path / "run", epochs=1)
    model, optimizer, scheduler, generator = build(args)
    with TrainingRun("tiny.py", args, model, optimizer, scheduler, generator) as run:
        for _ in run.epochs():
            run.end_epoch(*one_epoch(model, optimizer, generator))
        with torch.no_grad():
            model.fc.bias[0] = float("inf")
        with pytest.raises(lifecycle.Diverged):
            run.save_weights("weights.pt")
    assert not (tmp_path / "run" / "weights.pt").exists()


def test_ctrl_c_while_saving_waits_until_checkpoint_and_metrics_agree(tmp_path, monkeypatch):
    real_write = checkpoint.atomic_write_text
    calls = {"n": 0}

    def write_then_ctrl_c(path, text):
        calls["n"] += 1
        if calls["n"] == 3:  # epoch 2: the checkpoint is written, the metrics files are next
            os.kill(os.getpid(), signal.SIGINT)
        return real_write(path, text)

    monkeypatch.setattr(checkpoint, "atomic_write_text", write_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        train_run(make_args(tmp_path / "run", epochs=5))
    saved = checkpoint.safe_load(tmp_path / "run" / "checkpoint.pt")
    rows = strict_json(tmp_path / "run" / "metrics.json")
    assert saved["epoch"] == 2 and [row["epoch"] for row in rows] == [1, 2] == [r["epoch"] for r in saved["metrics"]]
    assert (tmp_path / "run" / "metrics.csv").read_text().count("\n") == 3  # header + 2 epochs


def test_leftover_temporary_files_are_removed_on_resume(tmp_path, capsys):
    train_run(make_args(tmp_path / "run", epochs=1))
    (tmp_path / "run" / "checkpoint.pt.abc123.tmp").write_bytes(b"x" * 1000)  # a save killed by SIGKILL
    train_run(make_args(None, epochs=2, resume=tmp_path / "run" / "checkpoint.pt"))
    assert not list((tmp_path / "run").glob("*.tmp"))
    assert "Removed 1 temporary file(s)" in capsys.readouterr().out


def test_dry_run_writes_no_checkpoint(tmp_path):
    args = make_args(tmp_path / "run")
    args.dry_run = True
    run, _ = train_run(args)
    assert len(run.history) == 1 and not (tmp_path / "run" / "checkpoint.pt").exists()


def test_metrics_json_is_strict_and_csv_matches(tmp_path):
    plots.write_metrics([{"epoch": 1, "loss": float("nan"), "acc": 0.5}], tmp_path)
    assert strict_json(tmp_path / "metrics.json") == [{"epoch": 1, "loss": None, "acc": 0.5}]
    assert (tmp_path / "metrics.csv").read_text().splitlines()[0] == "epoch,loss,acc"


@pytest.mark.parametrize("failure, words", [
    (OSError(errno.ENOSPC, "No space left on device"), "no space left on the device"),
    (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0"), "no space left"),
    (PermissionError(errno.EACCES, "Permission denied"), "permission denied"),
])
def test_a_failed_save_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch, failure, words):
    path = checkpoint.atomic_save({"version": 1}, tmp_path / "checkpoint.pt")

    def failing_save(obj, f):
        f.write(b"part")
        raise failure

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(cli.UserError, match=f"could not write .*checkpoint.pt: {words}.*intact"):
        checkpoint.atomic_save({"version": 2}, path)
    monkeypatch.undo()
    assert checkpoint.safe_load(path) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_a_run_folder_that_cannot_be_written_is_one_line(tmp_path, monkeypatch):
    """Stands in for a read-only --out-dir: tests run as root, which chmod cannot stop, so open() is made to fail."""
    import builtins

    (tmp_path / "run").mkdir()
    real_open = builtins.open

    def read_only_folder(file, *args, **kwargs):
        if str(file).startswith(str(tmp_path / "run")):
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", read_only_folder)
    with pytest.raises(cli.UserError, match=r"cannot write in the run folder .*run: Permission denied"):
        train_run(make_args(tmp_path / "run"))
