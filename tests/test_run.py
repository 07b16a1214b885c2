"""The run bookkeeping (common/run.py) on a tiny model: folders, resume, Ctrl-C, divergence, outputs."""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from common import cli, run
from common.run import TrainingRun

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
    values = {"out_dir": out_dir, "epochs": epochs, "resume": resume, "lr": lr, "dry_run": False, "show": False,
              "batch_size": 8, "seed": 1, **more}
    return argparse.Namespace(**values)


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


def train_run(args, stop_in_epoch: int | None = None, poison_in_epoch: int | None = None, name: str = "tiny"):
    model, optimizer, scheduler, generator = build(args)
    with TrainingRun(name, args, model, optimizer, scheduler, generator, must_match=["lr", "batch_size"]) as r:
        for epoch in r.epochs():
            train_metrics, test_metrics = one_epoch(model, optimizer, generator, poison=epoch == poison_in_epoch)
            if epoch == stop_in_epoch:
                raise KeyboardInterrupt  # Ctrl-C in the middle of an epoch
            scheduler.step()
            r.end_epoch(train_metrics, test_metrics)
    return r, model


def strict_json(path: Path):
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(path.read_text(), parse_constant=refuse)


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def without_seconds(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def test_a_run_writes_checkpoint_metrics_log_and_records_the_lr(tmp_path, capsys):
    r, _ = train_run(make_args(tmp_path / "run"))
    out = capsys.readouterr().out
    assert {p.name for p in (tmp_path / "run").iterdir()} == {"checkpoint.pt", "metrics.json", "metrics.csv",
                                                               "train.log"}
    assert [row["lr"] for row in r.history] == [0.1, 0.05, 0.025]  # the rate each epoch trained with
    assert strict_json(tmp_path / "run" / "metrics.json") == r.history
    saved = load(tmp_path / "run" / "checkpoint.pt")
    assert saved["epoch"] == 3 and saved["script"] == "tiny" and saved["loss"] == r.history[-1]["train_loss"]
    log = (tmp_path / "run" / "train.log").read_text()
    assert "Epoch 3 took" in log and "Using device: cpu" in log and "Epoch 3 took" in out
    assert log.splitlines()[0][:4].isdigit()  # each line time-stamped in the file


def test_files_follow_the_umask_and_a_users_own_tmp_files_are_left_alone(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.tmp").write_text("mine")
    old = os.umask(0o022)
    try:
        train_run(make_args(tmp_path / "run", epochs=1))
    finally:
        os.umask(old)
    assert (tmp_path / "run" / "notes.tmp").read_text() == "mine"
    for name in ("checkpoint.pt", "metrics.json", "train.log"):
        assert (tmp_path / "run" / name).stat().st_mode & 0o777 == 0o644, name


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


def test_two_runs_in_one_folder_at_once_the_second_is_refused(tmp_path):
    args = make_args(tmp_path / "run", epochs=1)
    model, optimizer, scheduler, generator = build(args)
    with TrainingRun("tiny", args, model, optimizer, scheduler, generator):  # still running, no epoch done yet
        with pytest.raises(cli.UserError, match="already holds another run"):
            train_run(make_args(tmp_path / "run", epochs=1))
        assert (tmp_path / "run" / "train.log").exists()  # the refused run removed nothing of the first one's


def test_a_run_that_fails_before_its_first_epoch_leaves_nothing(tmp_path):
    args = make_args(tmp_path / "new" / "run")
    model, optimizer, scheduler, generator = build(args)
    with pytest.raises(cli.UserError, match="out of memory"):
        with TrainingRun("tiny", args, model, optimizer, scheduler, generator) as r:
            for _ in r.epochs():
                raise cli.UserError("out of memory")
    assert not (tmp_path / "new" / "run").exists()
    with pytest.raises(KeyboardInterrupt):
        train_run(make_args(tmp_path / "run2"), stop_in_epoch=1)
    assert not (tmp_path / "run2").exists()  # so the same --out-dir works next time
    (tmp_path / "run3").mkdir()
    (tmp_path / "run3" / "mine.txt").write_text("keep")
    with pytest.raises(KeyboardInterrupt):
        train_run(make_args(tmp_path / "run3"), stop_in_epoch=1)
    assert [p.name for p in (tmp_path / "run3").iterdir()] == ["mine.txt"]  # a folder it did not make stays


def test_resume_after_ctrl_c_mid_epoch_equals_an_uninterrupted_run(tmp_path, capsys):
    straight, straight_model = train_run(make_args(tmp_path / "straight", epochs=4))
    with pytest.raises(KeyboardInterrupt):
        train_run(make_args(tmp_path / "split", epochs=4), stop_in_epoch=3)
    out = capsys.readouterr().out
    checkpoint = tmp_path / "split" / "checkpoint.pt"
    assert f"Interrupted in epoch 3. {checkpoint} holds epoch 2, the last finished one" in out
    assert f"run the same command again with --resume {checkpoint}" in out
    assert load(checkpoint)["epoch"] == 2
    resumed, resumed_model = train_run(make_args(None, epochs=4, resume=checkpoint))
    assert without_seconds(resumed.history) == without_seconds(straight.history)
    assert torch.equal(resumed_model.fc.weight, straight_model.fc.weight)  # bit for bit
    assert resumed.folder == tmp_path / "split"  # a resumed run continues in its own folder


def test_resume_names_every_flag_that_differs_and_lets_epochs_grow(tmp_path):
    train_run(make_args(tmp_path / "run", epochs=1))
    path = tmp_path / "run" / "checkpoint.pt"
    log_before = (path.parent / "train.log").read_bytes()
    args = make_args(None, epochs=2, resume=path, lr=0.5, seed=7)
    args.batch_size = 16
    with pytest.raises(cli.UserError) as error:
        train_run(args)
    for words in ("--lr 0.1 (this run: 0.5)", "--batch-size 8 (this run: 16)", "--seed 1 (this run: 7)"):
        assert words in str(error.value)
    with pytest.raises(cli.UserError, match="leave out --out-dir"):
        train_run(make_args(tmp_path / "elsewhere", epochs=2, resume=path))
    with pytest.raises(cli.UserError, match="was written by tiny, not by other"):
        train_run(make_args(None, epochs=2, resume=path), name="other")
    assert (path.parent / "train.log").read_bytes() == log_before  # refusals write nothing
    r, _ = train_run(make_args(None, epochs=2, resume=path))
    assert [row["epoch"] for row in r.history] == [1, 2]


def test_a_flag_the_checkpoint_lacks_counts_as_a_difference(tmp_path):
    train_run(make_args(tmp_path / "run", epochs=1))
    state = load(tmp_path / "run" / "checkpoint.pt")
    del state["args"]["lr"]
    torch.save(state, tmp_path / "run" / "checkpoint.pt")
    with pytest.raises(cli.UserError, match=r"--lr None \(this run: 0.1\)"):
        train_run(make_args(None, epochs=2, resume=tmp_path / "run" / "checkpoint.pt"))


@pytest.mark.filterwarnings("ignore:.*meta parameter")  # copying into meta tensors does nothing: expected here
def test_resume_loads_on_the_cpu_then_moves_state_to_the_models_device(tmp_path):
    """Stands in for resuming on a GPU, which this machine does not have.

    The model and optimizer live on the `meta` device here, as they would live on `cuda`: any non-CPU
    device. Loading the file with map_location=<that device> would put the saved random-number state
    there too, and torch.set_rng_state only takes a CPU tensor.
    """
    train_run(make_args(tmp_path / "run", epochs=1))
    saved = load(tmp_path / "run" / "checkpoint.pt")
    model = Tiny().to("meta")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    generator = torch.Generator()
    torch.manual_seed(123)
    args = make_args(None, epochs=2, resume=tmp_path / "run" / "checkpoint.pt")
    with TrainingRun("tiny", args, model, optimizer, None, generator, must_match=["lr", "batch_size"]) as r:
        assert r.done == 1
        assert torch.equal(torch.get_rng_state(), saved["rng"][0]["torch"])  # restored on the CPU
        assert torch.equal(generator.get_state(), saved["rng"][0]["generator"])
        assert optimizer.state[model.fc.weight]["momentum_buffer"].device.type == "meta"  # moved beside its weight


def test_a_cpu_run_never_touches_cuda_and_a_gpu_run_saves_its_own_devices_state(tmp_path, monkeypatch):
    """What the checkpoint holds for an accelerator, checked without one: a CPU run must not initialise CUDA
    (get_rng_state_all did), and a run on cuda:1 saves and restores that device's generator."""
    def no_cuda(*args, **kwargs):
        raise AssertionError("a CPU run asked CUDA for its random state")

    monkeypatch.setattr(torch.cuda, "get_rng_state", no_cuda)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", no_cuda)
    train_run(make_args(tmp_path / "cpu", epochs=1))
    monkeypatch.undo()

    states, restored = {}, {}
    monkeypatch.setattr(run, "_device_of", lambda model: torch.device("cuda", 1))
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: states.setdefault(str(device), torch.arange(4)))
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: restored.update({str(device): state}))
    monkeypatch.setattr(run, "describe", lambda device: f"Using device: {device}")
    train_run(make_args(tmp_path / "gpu", epochs=1))
    assert torch.equal(load(tmp_path / "gpu" / "checkpoint.pt")["rng"][0]["cuda"], torch.arange(4))
    train_run(make_args(None, epochs=2, resume=tmp_path / "gpu" / "checkpoint.pt"))
    assert list(restored) == ["cuda:1"] and torch.equal(restored["cuda:1"], torch.arange(4))

    mps_restored = []  # Apple's GPU: its own generator (dropout on MPS) is saved and restored too
    monkeypatch.setattr(run, "_device_of", lambda model: torch.device("mps"))
    monkeypatch.setattr(torch.mps, "get_rng_state", lambda: torch.arange(3), raising=False)
    monkeypatch.setattr(torch.mps, "set_rng_state", mps_restored.append, raising=False)
    train_run(make_args(tmp_path / "mps", epochs=1))
    train_run(make_args(None, epochs=2, resume=tmp_path / "mps" / "checkpoint.pt"))
    assert len(mps_restored) == 1 and torch.equal(mps_restored[0], torch.arange(3))


def test_divergence_stops_with_one_line_and_keeps_the_last_good_checkpoint(tmp_path):
    with pytest.raises(run.Diverged) as error:
        train_run(make_args(tmp_path / "run"), poison_in_epoch=2)
    message = str(error.value)
    assert "diverged in epoch 2" in message and "learning rate 0.05" in message and "smaller --lr" in message
    assert "\n" not in message
    assert load(tmp_path / "run" / "checkpoint.pt")["epoch"] == 1  # NaN weights never saved
    assert [row["epoch"] for row in strict_json(tmp_path / "run" / "metrics.json")] == [1]
    assert "error: training diverged in epoch 2" in (tmp_path / "run" / "train.log").read_text()


def test_divergence_in_a_metric_in_the_first_epoch_leaves_nothing(tmp_path):
    args = make_args(tmp_path / "run")
    model, optimizer, scheduler, generator = build(args)
    with pytest.raises(run.Diverged, match="train_loss = nan"):
        with TrainingRun("tiny", args, model, optimizer, scheduler, generator) as r:
            for _ in r.epochs():
                r.end_epoch({"train_loss": float("nan")}, {"test_loss": 1.0})
    assert not (tmp_path / "run").exists()


def test_weights_with_nan_are_never_saved(tmp_path):
    args = make_args(tmp_path / "run", epochs=1)
    model, optimizer, scheduler, generator = build(args)
    with TrainingRun("tiny", args, model, optimizer, scheduler, generator) as r:
        for _ in r.epochs():
            r.end_epoch(*one_epoch(model, optimizer, generator))
        with torch.no_grad():
            model.fc.bias[0] = float("inf")
        with pytest.raises(run.Diverged):
            r.save_weights("weights.pt")
    assert not (tmp_path / "run" / "weights.pt").exists()


def test_ctrl_c_between_checkpoint_and_metrics_the_checkpoint_decides(tmp_path, monkeypatch, capsys):
    """Ctrl-C is not held back: wherever it lands, the metrics files are rewritten from the checkpoint."""
    real_write, calls = run.write_metrics, {"n": 0}

    def ctrl_c_on_the_second(history, folder):
        calls["n"] += 1
        if calls["n"] == 2:  # epoch 2: its checkpoint is on disk, its metrics are not
            raise KeyboardInterrupt
        return real_write(history, folder)

    monkeypatch.setattr(run, "write_metrics", ctrl_c_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        train_run(make_args(tmp_path / "run", epochs=5))
    saved = load(tmp_path / "run" / "checkpoint.pt")
    rows = strict_json(tmp_path / "run" / "metrics.json")
    assert saved["epoch"] == 2 and [row["epoch"] for row in rows] == [1, 2] == [r["epoch"] for r in saved["metrics"]]
    assert (tmp_path / "run" / "metrics.csv").read_text().count("\n") == 3  # header + 2 epochs
    assert "holds epoch 2, the last finished one" in capsys.readouterr().out  # what the file holds


def test_ctrl_c_during_torch_save_keeps_the_previous_checkpoint_whole(tmp_path, monkeypatch, capsys):
    real_save, calls = torch.save, {"n": 0}

    def save_half_then_ctrl_c(obj, f):
        calls["n"] += 1
        if calls["n"] == 2:
            f.write(b"half a checkpoint")
            raise KeyboardInterrupt
        return real_save(obj, f)

    monkeypatch.setattr(torch, "save", save_half_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        train_run(make_args(tmp_path / "run", epochs=5))
    monkeypatch.undo()
    assert load(tmp_path / "run" / "checkpoint.pt")["epoch"] == 1
    assert [row["epoch"] for row in strict_json(tmp_path / "run" / "metrics.json")] == [1]
    assert not list((tmp_path / "run").glob("*.tmp"))
    assert "holds epoch 1, the last finished one" in capsys.readouterr().out


def test_dry_run_writes_no_checkpoint(tmp_path):
    args = make_args(tmp_path / "run")
    args.dry_run = True
    r, _ = train_run(args)
    assert len(r.history) == 1 and not (tmp_path / "run" / "checkpoint.pt").exists()


def test_metrics_json_is_strict_and_csv_matches(tmp_path):
    run.write_metrics([{"epoch": 1, "loss": float("nan"), "acc": 0.5}], tmp_path)
    assert strict_json(tmp_path / "metrics.json") == [{"epoch": 1, "loss": None, "acc": 0.5}]
    assert (tmp_path / "metrics.csv").read_text().splitlines() == ["epoch,loss,acc", "1,,0.5"]


@pytest.mark.parametrize("failure, words", [
    (OSError(errno.ENOSPC, "No space left on device"), "No space left on device"),
    (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0"), "no space left"),
    (PermissionError(errno.EACCES, "Permission denied"), "Permission denied"),
])
def test_a_failed_save_is_one_line_and_keeps_the_old_file(tmp_path, failure, words):
    path = tmp_path / "checkpoint.pt"
    run.atomic_write(lambda f: torch.save({"version": 1}, f), path)

    def failing_save(f):
        f.write(b"part")
        raise failure

    with pytest.raises(cli.UserError, match=f"could not write .*checkpoint.pt: {words}.*intact"):
        run.atomic_write(failing_save, path)
    assert load(path) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_a_figure_that_cannot_be_written_is_one_line(tmp_path):
    import matplotlib.pyplot as plt

    r, _ = train_run(make_args(tmp_path / "run", epochs=1))
    (tmp_path / "run" / "curves.png.tmp").mkdir()  # a directory in the way of the temporary file
    with pytest.raises(cli.UserError, match="could not write .*curves.png"):
        r.save_curves("title")
    assert not (tmp_path / "run" / "curves.png").exists() and not plt.get_fignums()  # closed, nothing half-written


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


@pytest.mark.parametrize("epochs", [1, 3, 14])
def test_curves_have_whole_epoch_ticks_only(tmp_path, monkeypatch, epochs):
    r, _ = train_run(make_args(tmp_path / "run", epochs=1))
    r.history = [{"epoch": e, "train_loss": 1 / e, "test_loss": 1.1 / e, "test_accuracy": 0.5 + e / 100}
                 for e in range(1, epochs + 1)]
    captured = []
    monkeypatch.setattr(TrainingRun, "save_figure", lambda self, fig, name: captured.append(fig))
    r.save_curves("title")
    (fig,) = captured
    fig.canvas.draw()  # fills in the tick labels
    for ax in fig.axes:
        low, high = sorted(ax.get_xlim())
        shown = [tick for tick in ax.get_xticks() if low - 1e-9 <= tick <= high + 1e-9]
        labels = [label.get_text() for label in ax.get_xticklabels() if label.get_text()]
        assert shown and labels
        assert all(float(tick).is_integer() for tick in shown), shown
        assert all(re.fullmatch(r"\d+", label) for label in labels), labels


def test_resuming_with_a_read_only_train_log_is_one_line_and_changes_nothing(tmp_path, monkeypatch):
    """Issue 18 #14. Stands in for `chmod 444 train.log` (tests run as root): appending to it fails."""
    import builtins

    train_run(make_args(tmp_path / "run", epochs=1))
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    real_open = builtins.open

    def read_only_log(file, mode="r", *args, **kwargs):
        if Path(file).name == "train.log" and "a" in mode:
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", read_only_log)
    with pytest.raises(cli.UserError, match=r"could not write .*train.log: Permission denied") as error:
        train_run(make_args(None, epochs=2, resume=tmp_path / "run" / "checkpoint.pt"))
    assert "\n" not in str(error.value)
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == before


def test_an_out_dir_name_too_long_for_the_file_system_is_one_line(tmp_path):
    """Issue 18 #14: a 300-character folder name."""
    with pytest.raises(cli.UserError, match="cannot create the run folder .*: File name too long"):
        train_run(make_args(tmp_path / ("a" * 300)))


def test_a_divergence_the_schedule_caused_names_gamma_not_lr(tmp_path):
    """Issue 18: a learning rate that --gamma grew, not --lr, made the run diverge."""
    args = make_args(tmp_path / "run", epochs=6)
    model, optimizer, _, generator = build(args)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=1e12)
    with pytest.raises(run.Diverged) as error:
        with TrainingRun("tiny", args, model, optimizer, scheduler, generator) as r:
            for _ in r.epochs():
                metrics = one_epoch(model, optimizer, generator)
                scheduler.step()
                r.end_epoch(*metrics)
    assert "raised the learning rate from 0.1" in str(error.value) and "--gamma" in str(error.value)
    assert "smaller --lr" not in str(error.value)


def test_a_checkpoint_with_weights_that_are_not_finite_is_refused_as_such(tmp_path):
    """Issue 18: resuming it diverged at once, advising a smaller --lr."""
    train_run(make_args(tmp_path / "run", epochs=1))
    state = load(tmp_path / "run" / "checkpoint.pt")
    state["model_state_dict"]["fc.weight"][0, 0] = float("nan")
    torch.save(state, tmp_path / "run" / "checkpoint.pt")
    with pytest.raises(cli.UserError, match="holds weights that are not finite numbers") as error:
        train_run(make_args(None, epochs=2, resume=tmp_path / "run" / "checkpoint.pt"))
    assert not isinstance(error.value, run.Diverged) and "--lr" not in str(error.value)
