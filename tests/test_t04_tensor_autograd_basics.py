"""T04: the six basics scripts run end to end on the CPU, and the facts they print are true."""

from __future__ import annotations

import _socket
import csv
import importlib.machinery
import os
import re
import socket
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from common import cli
from common.checkpoint import safe_load
from T04_tensor_autograd_basics import (
    activations,
    autograd_basics,
    dataset_dataloader,
    lesson,
    nn_building_blocks,
    save_load,
    tensor_basics,
)

REPO = Path(__file__).resolve().parents[1]
FOLDER = REPO / "T04_tensor_autograd_basics"


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def headings(out: str) -> list[int]:
    """The numbers of the section headings printed, in order."""
    lines = out.splitlines()
    return [int(line.split(".")[0]) for line, under in zip(lines, lines[1:])
            if under and set(under) == {"-"} and line.split(".")[0].isdigit()]


def exit_with_error(main, argv: list[str], capsys) -> str:
    """Run main(argv) as the command line does; return the one-line error it printed (exit code 2)."""
    with pytest.raises(SystemExit) as exit_info:
        cli.run_main(lambda: main(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    return err


# --- the shared helper -------------------------------------------------------------------------

def test_check_prints_a_true_claim_and_stops_on_a_false_one(capsys):
    lesson.start("title")
    lesson.check(torch.tensor(True), "a tensor condition works")
    assert "  [ok] a tensor condition works" in capsys.readouterr().out
    with pytest.raises(cli.UserError, match="^claim failed: two is three$"):
        lesson.check(2 == 3, "two is three")
    assert lesson.done() == 1  # the failed claim was not counted


def test_raises_fails_when_nothing_is_raised_and_picks_the_useful_line():
    with pytest.raises(lesson.ClaimFailed, match="int\\(\\) of text is an error"):
        lesson.raises(ValueError, lambda: int("12"), "int() of text is an error")

    def fail():
        raise RuntimeError("Error(s) in loading:\n\tsize mismatch for w\n\x1b[1mUnsupported global: X\x1b[0m")

    assert lesson.raises(RuntimeError, fail, "it fails") == "Error(s) in loading: size mismatch for w"
    assert lesson.raises(RuntimeError, fail, "it fails", pick="Unsupported") == "Unsupported global: X"


# --- tensor_basics.py --------------------------------------------------------------------------

def test_tensor_basics_runs_and_shows_shared_memory(capsys):
    facts = tensor_basics.main(["--no-accel"])
    out = capsys.readouterr().out
    assert headings(out) == list(range(1, 10))
    assert "torch.tensor -> [1.0, 2.0, 3.0], torch.as_tensor -> [100.0, 2.0, 3.0], " \
           "torch.from_numpy -> [100.0, 2.0, 3.0]" in out
    assert "t = torch.from_numpy(a); np.add(a, 1, out=a) -> t = [2.0, 2.0, 2.0, 2.0, 2.0]" in out
    assert "grid.t().view(12) -> RuntimeError: view size is not compatible" in out
    assert "x.long() = [-1, 0, 1]" in out and "uint8 250 + 10 = 4" in out
    assert facts["device"] == "cpu" and facts["accelerator"] is False
    assert "moves above ran on the CPU" in out
    assert facts["claims"] == out.count("  [ok] ") >= 30


def test_a_broken_claim_stops_the_script_with_its_message(monkeypatch, capsys):
    # Make torch.from_numpy copy instead of sharing: the script must notice and stop.
    monkeypatch.setattr(torch, "from_numpy", lambda array: torch.tensor(array))
    err = exit_with_error(tensor_basics.main, ["--no-accel"], capsys)
    assert err == ("error: claim failed: torch.as_tensor(array) and torch.from_numpy(array) share the array's "
                   "memory\n")


def test_tensor_basics_unknown_device_is_one_line(capsys):
    assert "unknown device 'tpu'" in exit_with_error(tensor_basics.main, ["--device", "tpu"], capsys)


# --- autograd_basics.py ------------------------------------------------------------------------

@pytest.mark.parametrize("seed", ["1", "7"])
def test_autograd_gradients_match_the_hand_derived_answers(seed, capsys):
    facts = autograd_basics.main(["--seed", seed])
    out = capsys.readouterr().out
    assert torch.allclose(facts["example1_grad"], 2 * facts["example1_x"])
    assert torch.equal(facts["example2_grad"], torch.full((2, 3), 5.0))
    assert facts["accumulated"] == [[2.0, 4.0], [4.0, 8.0], [6.0, 12.0]]  # x = [1, 2]: 2x, then 4x, then 6x
    assert facts["graph"][0] == "MeanBackward0" and facts["graph"][-1] == "AccumulateGrad"
    assert "out = 45.0" in out and "tensor([[5., 5., 5.],\n        [5., 5., 5.]])" in out
    assert "Trying to backward through the graph a second time" in out
    assert headings(out) == list(range(1, 10)) and facts["claims"] == out.count("  [ok] ")


# --- dataset_dataloader.py ---------------------------------------------------------------------

def test_dataset_dataloader_in_one_process(tmp_path, capsys):
    facts = dataset_dataloader.main(["--num-workers", "0", "--no-accel", "--out-dir", str(tmp_path)])
    out = capsys.readouterr().out
    with open(tmp_path / "points.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 200 and set(rows[0]) == {"x", "y", "label"}
    original = dataset_dataloader.PointsDataset(size=200, seed=1)
    assert float(rows[5]["x"]) == original.points[5, 0].item() and int(rows[5]["label"]) == original.labels[5]
    assert facts["batch_shapes"] == ((8, 2), (8, 2))  # a batch of 8 points, one-hot targets
    assert facts["keep_last"] == [4, 4, 2] and facts["drop_last"] == [4, 4]
    assert sorted(facts["shuffled"]) == list(range(10)) and facts["shuffled"] != list(range(10))
    assert 0.45 < facts["weighted_share"] < 0.55
    assert facts["padded_shape"] == (4, 7)
    assert facts["workers"] == [[-1]] * 4 and "0: main process" in out
    assert facts["pinned"] is False and "pin_memory skipped" in out
    assert headings(out) == list(range(1, 11)) and facts["claims"] == out.count("  [ok] ")


def test_dataset_dataloader_with_two_spawned_workers(tmp_path, monkeypatch, capsys):
    # Windows and macOS start workers with "spawn" (a fresh interpreter that re-imports the module);
    # forcing it here shows the dataset, transforms and collate function survive that.
    real_loader = dataset_dataloader.DataLoader

    def spawning_loader(*args, **kwargs):
        if kwargs.get("num_workers", 0) > 0:
            kwargs["multiprocessing_context"] = "spawn"
        return real_loader(*args, **kwargs)

    monkeypatch.setattr(dataset_dataloader, "DataLoader", spawning_loader)
    # Spawned workers hand tensors back over local (AF_UNIX) sockets, which the no-network fixture
    # also blocks: let those through, keep refusing everything else.
    def connect_locally_only(sock, address):
        if sock.family != getattr(socket, "AF_UNIX", None):
            raise OSError("network disabled in tests")
        return _socket.socket.connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect_locally_only)
    facts = dataset_dataloader.main(["--num-workers", "2", "--no-accel", "--out-dir", str(tmp_path)])
    assert facts["workers"] == [[0], [1], [0], [1]]
    assert "2: worker 0, 3: worker 1" in capsys.readouterr().out


def test_dataset_dataloader_rejects_negative_workers(capsys):
    assert "--num-workers: must be 0 or more" in exit_with_error(dataset_dataloader.main,
                                                                 ["--num-workers", "-1"], capsys)


def test_empty_csv_is_a_user_error(tmp_path):
    (tmp_path / "empty.csv").write_text("x,y,label\n", encoding="utf-8")
    with pytest.raises(cli.UserError, match="has no data rows"):
        dataset_dataloader.CsvPointsDataset(tmp_path / "empty.csv")


# --- nn_building_blocks.py ---------------------------------------------------------------------

def test_nn_building_blocks_shapes_losses_and_step(capsys):
    facts = nn_building_blocks.main([])
    out = capsys.readouterr().out
    assert facts["shapes"] == [(3, 28, 28), (3, 784), (3, 512), (3, 512), (3, 512), (3, 512), (3, 10)]
    assert facts["parameters"] == sum(p.numel() for p in nn_building_blocks.NeuralNetwork().parameters()) == 669_706
    assert facts["conv"] == (3, 6, 24, 24) and facts["pooled"] == (3, 6, 12, 12)
    assert facts["batch_norm_shape"] == (3, 6, 24, 24)
    assert 0.45 < facts["dropped_fraction"] < 0.55
    assert facts["cross_entropy"] == pytest.approx(facts["nll"], abs=1e-6)
    assert facts["loss_after"] < facts["loss_before"]
    assert headings(out) == list(range(1, 8)) and "graph" not in facts  # no --graph: no section 8


def test_graph_flag_without_graphviz_prints_a_hint(monkeypatch, capsys):
    monkeypatch.setattr(nn_building_blocks.shutil, "which", lambda name: None)  # as if `dot` were missing
    facts = nn_building_blocks.main(["--graph"])
    out = capsys.readouterr().out
    assert facts["graph"] is None
    hint = [line for line in out.splitlines() if line.startswith("--graph needs")]
    assert len(hint) == 1 and "pip install torchviz" in hint[0] and "graphviz.org" in hint[0]


def test_graph_flag_renders_with_torchviz(tmp_path, monkeypatch):
    calls = {}

    class FakeDot:
        def render(self, filename, format, cleanup):
            path = Path(f"{filename}.{format}")
            path.write_bytes(b"\x89PNG\r\n\x1a\n")
            return str(path)

    def make_dot(output, params):
        calls["output"], calls["params"] = output, params
        return FakeDot()

    fake = types.ModuleType("torchviz")
    fake.__spec__ = importlib.machinery.ModuleSpec("torchviz", None)
    fake.make_dot = make_dot
    monkeypatch.setitem(sys.modules, "torchviz", fake)
    monkeypatch.setattr(nn_building_blocks.shutil, "which", lambda name: "/usr/bin/dot")
    facts = nn_building_blocks.main(["--graph", "--out-dir", str(tmp_path)])
    assert facts["graph"] == tmp_path / "graph.png" and facts["graph"].is_file()
    assert calls["output"].grad_fn is not None and calls["output"].dim() == 0  # the loss, with its graph
    assert sorted(calls["params"]) == sorted(n for n, _ in nn_building_blocks.NeuralNetwork().named_parameters())


# --- activations.py ----------------------------------------------------------------------------

def test_activations_writes_real_pngs(tmp_path, capsys):
    facts = activations.main(["--out-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert [path.name for path in facts["figures"]] == ["activations.png", "softmax.png"]
    for path in facts["figures"]:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width > 500 and image.height > 300
            pixels = np.asarray(image.convert("L"), dtype=float)
        assert pixels.std() > 10  # something was drawn, not a blank canvas
    assert facts["dead_relu_gradient"] == 0.0 and facts["leaky_relu_gradient"] > 0.0
    assert "exp(s) / sum(exp(s)) = [nan, nan]" in out
    assert headings(out) == list(range(1, 5)) and facts["claims"] == out.count("  [ok] ")


def test_numpy_formulas_match_torch_away_from_the_script():
    x = np.linspace(-3, 3, 13)
    for name, formula in activations.NUMPY_FUNCTIONS.items():
        assert np.allclose(formula(x), activations.TORCH_FUNCTIONS[name](torch.tensor(x)).numpy()), name
    scores = np.array([0.5, -2.0, 4.0])
    assert np.allclose(activations.softmax_numpy(scores), torch.softmax(torch.tensor(scores), 0).numpy())


# --- save_load.py ------------------------------------------------------------------------------

def test_save_load_resumes_identically_and_writes_only_to_its_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    facts = save_load.main(["--no-accel", "--out-dir", "run"])
    out = capsys.readouterr().out
    assert sorted(os.listdir(tmp_path)) == ["run"]  # nothing in the current directory itself
    run = tmp_path / "run"
    assert sorted(os.listdir(run)) == ["checkpoint.pt", "tiny_net_weights.pt", "tiny_net_whole_model.pt"]
    assert facts["resumed"] == facts["straight"]  # bit for bit on the CPU
    assert facts["without_optimizer"] != facts["straight"]
    assert facts["weights_only_default"] is (torch.__version__ >= "2.6")
    weights = safe_load(run / "tiny_net_weights.pt")
    save_load.TinyNet().load_state_dict(weights)  # a plain state dict that loads with weights_only=True
    assert safe_load(run / "checkpoint.pt")["epoch"] == save_load.EPOCHS_BEFORE_SAVE
    with pytest.raises(cli.UserError, match="not a readable PyTorch checkpoint"):
        safe_load(run / "tiny_net_whole_model.pt")  # the pickled model is refused by a weights_only load
    # torch names the class it refused ("Unsupported global: GLOBAL ..." today, "Unsupported class ..." before 2.4)
    assert re.search(r"Unsupported (global: GLOBAL|class) T04_tensor_autograd_basics\.save_load\.TinyNet", out)
    assert headings(out) == list(range(1, 6)) and facts["claims"] == out.count("  [ok] ")


def test_save_load_explains_the_old_default_on_torch_before_2_6(tmp_path, monkeypatch, capsys):
    real_load = torch.load

    def load_as_before_2_6(*args, weights_only=False, **kwargs):  # the default used to be False
        return real_load(*args, weights_only=weights_only, **kwargs)

    monkeypatch.setattr(torch, "load", load_as_before_2_6)
    monkeypatch.setattr(save_load, "WEIGHTS_ONLY_IS_DEFAULT", False)
    facts = save_load.main(["--no-accel", "--out-dir", str(tmp_path)])
    assert facts["weights_only_default"] is False
    assert "is older than 2.6: a plain torch.load(path) still unpickles anything" in capsys.readouterr().out


# --- as a reader runs them: a real process, from inside the lesson folder ---------------------

def test_scripts_run_as_programs_from_their_folder(tmp_path):
    env = {**os.environ, "PYTHONPATH": "", "MPLBACKEND": "Agg"}
    result = subprocess.run([sys.executable, "dataset_dataloader.py", "--no-accel", "--num-workers", "2",
                             "--out-dir", str(tmp_path)], cwd=FOLDER, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "1: worker 1" in result.stdout and re.search(r"All \d+ claims above were checked and held.", result.stdout)
