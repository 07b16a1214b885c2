"""T04: the six basics scripts run end to end on the CPU, and the facts they print are true."""

from __future__ import annotations

import _socket
import copy
import csv
import importlib.machinery
import math
import os
import pickle
import random
import re
import socket
import subprocess
import sys
import types
import warnings
from pathlib import Path

import matplotlib.figure
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from common import cli
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


def load(path: Path):
    """What a careful reader writes: onto the CPU, tensors and plain values only."""
    return torch.load(path, map_location="cpu", weights_only=True)


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
    assert headings(out) == list(range(1, 12))
    assert "torch.tensor -> [1.0, 2.0, 3.0], torch.as_tensor -> [100.0, 2.0, 3.0], " \
           "torch.from_numpy -> [100.0, 2.0, 3.0]" in out
    assert "t = torch.from_numpy(a); np.add(a, 1, out=a) -> t = [2.0, 2.0, 2.0, 2.0, 2.0]" in out
    assert "grid.t().view(12) -> RuntimeError: view size is not compatible" in out
    assert "x.long() = [-1, 0, 1]" in out and "uint8 250 + 10 = 4" in out
    assert facts["device"] == "cpu" and facts["accelerator"] is False
    assert "moves above ran on the CPU" in out
    assert facts["claims"] == out.count("  [ok] ") >= 30


def test_tensor_basics_zero_d_bool_int8_and_complex(capsys):
    """Sections 4 and 5 against NumPy and Python: a 0-D shape is (), int8 wraps like NumPy's int8, the mask
    counts what Python counts, and |3+4j| = 5, |1-1j| = sqrt(2)."""
    facts = tensor_basics.main(["--no-accel"])
    out = capsys.readouterr().out
    assert facts["scalar"] == (np.array(3.5).shape, np.array(3.5).ndim, 3.5) == ((), 0, 3.5)
    assert "s.item() = 3.5 (float)" in out and "total[0] -> IndexError: invalid index of a 0-dim tensor" in out
    values = [3, 8, 1, 9, 5]
    assert facts["mask"] == [v > 4 for v in values] and facts["mask_sum"] == sum(v > 4 for v in values) == 3
    assert f"mask.sum() = 3; x[mask] = {[v for v in values if v > 4]}; mask.float().mean() = 0.60" in out
    wrapped = (np.array([127], dtype=np.int8) + np.array([1], dtype=np.int8))[0]
    assert facts["int8_wrap"] == wrapped == -128 and "int8 127 + 1 = -128 (torch.int8); as int32: 128" in out
    assert facts["int_ranges"] == {"torch.int8": (np.iinfo(np.int8).min, np.iinfo(np.int8).max),
                                   "torch.int32": (np.iinfo(np.int32).min, np.iinfo(np.int32).max)}
    assert "torch.int32: -2,147,483,648 to 2,147,483,647, element_size() = 4" in out
    real, imag, magnitude = facts["complex"]
    z = np.array([3 + 4j, 1 - 1j])
    assert real == z.real.tolist() and imag == z.imag.tolist() and np.allclose(magnitude, [5.0, math.sqrt(2)])
    assert "dtype torch.complex64, 8 bytes each" in out and "z.abs() = [5.0, 1.4142]" in out


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
    # Example 1's x is the first randn(3) of --seed (a script that ignores the flag fails here), and
    # its gradient is checked against central differences of z = sum(x^2), not against the script's 2x.
    x = torch.randn(3, generator=torch.Generator().manual_seed(int(seed)))
    assert torch.equal(facts["example1_x"], x)
    h = 1e-3
    numeric = [((x.double() + h * step) ** 2 - (x.double() - h * step) ** 2).sum() / (2 * h)
               for step in torch.eye(3, dtype=torch.float64)]
    assert torch.allclose(facts["example1_grad"].double(), torch.stack(numeric), atol=1e-5)
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
    original = dataset_dataloader.PointsDataset(size=200, seed=1)  # --seed 1 made the points
    assert float(rows[5]["x"]) == original.points[5, 0].item() and int(rows[5]["label"]) == original.labels[5]
    # What the file holds, checked from the file alone: points in [-2, 2]^2, written with every digit
    # (each value is an exact float32, as the tensor held it), labelled 1 exactly inside the unit circle,
    # which is pi/16 (about 20%) of the square.
    xy = np.array([[float(row["x"]), float(row["y"])] for row in rows])
    labels = np.array([int(row["label"]) for row in rows])
    assert np.abs(xy).max() <= 2 and np.array_equal(xy.astype(np.float32).astype(np.float64), xy)
    assert np.array_equal(labels, (xy[:, 0] ** 2 + xy[:, 1] ** 2 < 1).astype(int))
    assert abs(labels.mean() - math.pi / 16) < 0.08
    assert facts["batch_shapes"] == ((8, 2), (8, 2))  # a batch of 8 points, one-hot targets
    assert facts["keep_last"] == [4, 4, 2] and facts["drop_last"] == [4, 4]
    assert sorted(facts["shuffled"]) == list(range(10)) and facts["shuffled"] != list(range(10))
    assert 0.45 < facts["weighted_share"] < 0.55
    assert facts["padded_shape"] == (4, 7)
    assert facts["workers"] == [[-1]] * 4 and "0: main process" in out
    assert facts["pinned"] is torch.cuda.is_available() and "batch.device = cpu" in out
    assert headings(out) == list(range(1, 13)) and facts["claims"] == out.count("  [ok] ")


def test_image_batches_are_n_c_h_w_until_flattened(capsys):
    """The post's [batch_size, input_size] corrected: the tiny image set gives what torchvision's ToTensor() gives
    an MNIST image (checked with ToTensor itself), a batch is (4, 1, 28, 28), and (4, 784) only after flattening."""
    from torchvision.transforms import ToTensor

    images = dataset_dataloader.TinyImages(size=10)
    for index in (0, 7):
        grey = Image.fromarray(images.pixels[index].numpy(), mode="L")  # an MNIST sample is such a PIL image
        assert torch.equal(images[index][0], ToTensor()(grey))
    facts = dataset_dataloader.image_batches()
    out = capsys.readouterr().out
    assert facts["image_batch_shape"] == (4, 1, 28, 28) and facts["flat_shape"] == (4, 28 * 28)
    assert "images (4, 1, 28, 28), labels (4,); batch.view(batch.size(0), -1) -> (4, 784)" in out
    assert "mat1 and mat2 shapes cannot be multiplied (112x28 and 784x10)" in out  # 4 * 1 * 28 rows of 28


def test_batch_sampler_batches_and_the_options_it_excludes(capsys):
    facts = dataset_dataloader.batch_sampler_demo()
    out = capsys.readouterr().out
    assert facts["batch_sampler_batches"] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    # padding zeros, worked out from the sentences' word counts: pairs in order, then pairs of sorted lengths
    lengths = [len(sentence.split()) for sentence in dataset_dataloader.SentencesDataset.SENTENCES]
    by_length = sorted(lengths)
    pairs_in_order = [lengths[i:i + 2] for i in range(0, len(lengths), 2)]
    pairs_grouped = [by_length[i:i + 2] for i in range(0, len(by_length), 2)]
    assert facts["padding"] == {"in order": sum(len(p) * max(p) - sum(p) for p in pairs_in_order),
                                "grouped": sum(len(p) * max(p) - sum(p) for p in pairs_grouped)} \
        == {"in order": 6, "grouped": 4}
    assert ("ValueError: batch_sampler option is mutually exclusive with batch_size, shuffle, sampler, and "
            "drop_last") in out
    assert headings(out) == [9] and out.count("  [ok] ") == 3


def test_pin_memory_gives_host_memory_not_gpu_memory(tmp_path, capsys):
    """The post's "pin_memory loads into GPU memory" corrected. On a CPU-only machine the batch is on the CPU and
    not pinned; torch 2.7 and newer say why in a warning, torch 2.0 to 2.6 say nothing. On a CUDA machine the same
    call is pinned, still on the CPU."""
    facts = dataset_dataloader.main(["--num-workers", "0", "--no-accel", "--out-dir", str(tmp_path)])
    out = capsys.readouterr().out
    section = out[out.index("12. pin_memory"):]
    assert f"batch.device = cpu, batch.is_pinned() = {torch.cuda.is_available()}" in section
    assert facts["pinned"] is torch.cuda.is_available()
    if not torch.cuda.is_available():
        assert f"This is torch {torch.__version__}, so the script checks the claim for it:" in section
        if dataset_dataloader.torch_release() >= (2, 7):
            assert "torch warned: 'pin_memory' argument is set as true but no accelerator is found" in section
            assert "[ok] without CUDA torch 2.7 and newer ignore pin_memory=True with a warning" in section
            assert "torch 2.0 to 2.6 ignore pin_memory=True silently: nothing" not in section
        else:
            assert "torch said nothing" in section and "torch warned" not in section
            assert "[ok] without CUDA torch 2.0 to 2.6 ignore pin_memory=True silently" in section
            assert "torch 2.7 and newer ignore pin_memory=True with a warning:" not in section
    assert "batch.to('cpu', non_blocking=" in section


@pytest.mark.skipif(torch.cuda.is_available(), reason="what torch says about pin_memory=True without CUDA")
def test_pin_memory_claim_is_checked_for_the_installed_torch(monkeypatch, capsys):
    """The lesson checks what this torch really does: told that the warning came one release later (or earlier)
    than it did, it fails on the claim it would otherwise print."""
    dataset = dataset_dataloader.PointsDataset(size=16)
    warns = dataset_dataloader.torch_release() >= dataset_dataloader.PIN_MEMORY_WARNS_FROM
    # Direct evidence, without the lesson: whether torch warns, measured here.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        next(iter(torch.utils.data.DataLoader(dataset, batch_size=8, pin_memory=True)))
    assert any("pin_memory" in str(w.message) for w in caught) is warns
    # The lesson with the true boundary passes ...
    assert dataset_dataloader.pin_memory_demo(torch.device("cpu"), dataset) == {"pinned": False}
    capsys.readouterr()
    # ... and with the boundary on the wrong side of this torch it stops on the other claim.
    monkeypatch.setattr(dataset_dataloader, "PIN_MEMORY_WARNS_FROM", (99, 0) if warns else (0, 0))
    wrong = "silently" if warns else "with a warning"
    with pytest.raises(lesson.ClaimFailed, match=wrong):
        dataset_dataloader.pin_memory_demo(torch.device("cpu"), dataset)


@pytest.mark.parametrize(("version", "release"), [
    ("2.0.1", (2, 0)), ("2.0.1+cu117", (2, 0)), ("2.6.0+cpu", (2, 6)), ("2.7.0a0+git1234abc", (2, 7)),
    ("2.14.1", (2, 14)), ("10.0.0", (10, 0)),
])
def test_torch_release_parses_numbers_not_text(version, release):
    assert dataset_dataloader.torch_release(version) == release


def test_torch_releases_compare_as_numbers():
    release = dataset_dataloader.torch_release
    assert "2.14.1" < "2.7.0" and "10.0.0" < "2.7.0"  # the trap: as text, today's torch would come before 2.7
    assert release("10.0.0") > release("2.14.1") > release("2.7.0") == dataset_dataloader.PIN_MEMORY_WARNS_FROM
    assert release("2.7.0") > release("2.6.0+cpu") > release("2.0.1+cu117")


def test_torch_release_rejects_what_is_not_a_version():
    with pytest.raises(ValueError, match="not a torch version"):
        dataset_dataloader.torch_release("nightly")


@pytest.mark.processes  # starts Python processes: `make test-processes` (CI runs it)
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


def test_seed_worker_seeds_numpy_and_random_from_the_workers_torch_seed():
    """In a worker, torch.initial_seed() is that worker's seed; seed_worker must derive NumPy's and Python's
    seeds from it (a seed_worker that does nothing, or seeds one library only, fails here)."""
    torch.manual_seed(2**40 + 7)  # as a worker's seed: above 2**32, so the % 2**32 matters
    dataset_dataloader.seed_worker(0)
    drawn = (np.random.randint(1 << 30), random.random())
    np.random.seed((2**40 + 7) % 2**32)
    random.seed((2**40 + 7) % 2**32)
    assert drawn == (np.random.randint(1 << 30), random.random())


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
    assert facts["parameters"] == (784 * 512 + 512) + (512 * 512 + 512) + (512 * 10 + 10) == 669_706
    assert facts["conv"] == (3, 6, 24, 24) and facts["pooled"] == (3, 6, 12, 12)
    assert facts["batch_norm_shape"] == (3, 6, 24, 24)
    assert 0.45 < facts["dropped_fraction"] < 0.55
    assert facts["loss_after"] < facts["loss_before"]
    assert headings(out) == list(range(1, 10)) and "graph" not in facts  # no --graph: no section 10


def test_cross_entropy_matches_the_formula_in_numpy():
    """The loss the lesson prints is -mean(log softmax(logits)[true class]), computed here in float64
    NumPy from the same logits (section 6 draws them first: torch.randn(3, 10)), not by torch."""
    torch.manual_seed(0)
    facts = nn_building_blocks.losses()
    torch.manual_seed(0)
    logits = torch.randn(3, 10).double().numpy()
    log_probabilities = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    expected = -log_probabilities[[0, 1, 2], [3, 0, 7]].mean()  # the script's targets are 3, 0, 7
    assert facts["cross_entropy"] == pytest.approx(expected, abs=1e-5)
    assert facts["nll"] == pytest.approx(expected, abs=1e-5)


def test_regression_and_binary_losses_match_numpy(capsys):
    """Section 7's losses, each worked out in float64 NumPy from its textbook formula."""
    facts = nn_building_blocks.regression_and_binary_losses()
    out = capsys.readouterr().out
    d = np.array([2.5, 0.0, 2.0, 8.0]) - np.array([3.0, -0.5, 2.0, 7.0])
    assert facts["mse"] == pytest.approx(np.mean(d ** 2)) and facts["l1"] == pytest.approx(np.mean(np.abs(d)))
    smooth = np.where(np.abs(d) < 1.0, 0.5 * d ** 2, np.abs(d) - 0.5)  # beta = 1
    assert facts["smooth_l1"] == pytest.approx(smooth.mean())
    assert "MSELoss = 0.3750, L1Loss = 0.5000, SmoothL1Loss(beta=1) = 0.1875" in out
    assert "of a difference 0.5: 0.125 (MSE would give 0.25, L1 0.5); of 3.0: 2.5" in out
    p, y = np.array([0.9, 0.2, 0.6]), np.array([1.0, 0.0, 1.0])
    assert facts["bce"] == pytest.approx(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    x = np.array([2.0, -1.0, 0.5])
    # -log sigmoid(x) = log(1 + e^-x) for label 1, -log(1 - sigmoid(x)) = log(1 + e^x) for label 0
    with_logits = np.where(y == 1, np.logaddexp(0, -x), np.logaddexp(0, x))
    assert facts["bce_with_logits"] == pytest.approx(with_logits.mean())
    for value, (_, _, logits_loss, logits_grad, exact) in facts["unstable"].items():
        assert exact == pytest.approx(np.logaddexp(0, value), rel=1e-12)
        assert logits_loss == pytest.approx(exact, rel=1e-6)
        assert logits_grad == pytest.approx(1 / (1 + np.exp(-value)))  # d/dx log(1 + e^x) = sigmoid(x)
    assert facts["unstable"][30.0][0] == 100.0 and facts["unstable"][30.0][1] == 0.0  # torch's clamp of log at -100
    assert abs(facts["unstable"][10.0][0] - np.logaddexp(0, 10.0)) > 1e-4
    assert re.search(r"\n +30\.0 +100\.000000 +30\.000000 +30\.000000 +0\.0000, 1\.0000\n", out)


def numpy_optimizer(name: str, lr: float, steps: int) -> tuple[np.ndarray, float]:
    """Each optimizer's update rule written out in float64 NumPy (torch's defaults) on the bowl
    (w1 - 3)^2 + 5 (w2 + 1)^2 from (0, 0); returns w after the first step and the loss after `steps`."""
    w, first = np.zeros(2), None
    velocity, average, total, m, v = (np.zeros(2) for _ in range(5))
    for t in range(1, steps + 1):
        g = np.array([2 * (w[0] - 3), 10 * (w[1] + 1)])
        if name == "SGD":
            w = w - lr * g
        elif name == "SGD, momentum=0.9":
            velocity = g if t == 1 else 0.9 * velocity + g
            w = w - lr * velocity
        elif name == "RMSprop":
            average = 0.99 * average + 0.01 * g ** 2
            w = w - lr * g / (np.sqrt(average) + 1e-8)
        elif name == "Adagrad":
            total = total + g ** 2
            w = w - lr * g / (np.sqrt(total) + 1e-10)
        elif name == "Adam":
            m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g ** 2
            w = w - lr * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
        if t == 1:
            first = w.copy()
    return first, (w[0] - 3) ** 2 + 5 * (w[1] + 1) ** 2


def test_optimizers_compared_match_their_update_rules_in_numpy(capsys):
    """Section 9: every optimizer's first step and its loss after 100 steps, against the update rule in NumPy."""
    facts = nn_building_blocks.optimizers_compared()
    out = capsys.readouterr().out
    assert list(facts["optimizers"]) == ["SGD", "SGD, momentum=0.9", "RMSprop", "Adagrad", "Adam"]
    for name, result in facts["optimizers"].items():
        first, loss = numpy_optimizer(name, lr=0.05, steps=100)
        assert np.allclose(-np.array(result["first_step"]), first, rtol=1e-6), name
        assert result["loss"] == pytest.approx(loss, rel=0.02, abs=1e-7), name
        assert result["loss"] < 14.0
    assert np.allclose(numpy_optimizer("Adagrad", 0.05, 1)[0], [0.05, -0.05])  # lr * sign(g), g = (-6, 10)
    assert np.allclose(numpy_optimizer("RMSprop", 0.05, 1)[0], [0.5, -0.5])  # 10 lr * sign(g)
    assert "Adam's defaults (optimizer.defaults): betas (0.9, 0.999), eps 1e-08" in out
    assert "  Adagrad            (+0.0500, -0.0500) (+0.0500, -0.0500)   4.91" in out


def test_optimizer_step_uses_this_batchs_gradient_alone():
    """Guards the zero_grad() lesson: gradients left in .grad by an earlier backward() must not leak into
    the step. Dropping optimizer.zero_grad() (or taking another lr or sign) moves the weights elsewhere
    than w - 0.01 * (this batch's gradient), which is worked out here with torch.autograd.grad."""
    torch.manual_seed(0)
    model = nn_building_blocks.NeuralNetwork()
    images = torch.rand(3, 28, 28)
    reference = copy.deepcopy(model)
    loss = F.cross_entropy(reference(images), torch.tensor([1, 4, 9]))  # the targets section 8 uses
    gradients = torch.autograd.grad(loss, list(reference.parameters()))
    before = [p.detach().clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = torch.ones_like(p)  # stale gradients, as an earlier backward() would leave them
    nn_building_blocks.optimizer_step(model, images)
    for p, start, gradient in zip(model.parameters(), before, gradients):
        assert torch.allclose(p.detach(), start - 0.01 * gradient, rtol=0, atol=1e-7)


def test_graph_flag_without_graphviz_prints_a_hint(monkeypatch, capsys):
    monkeypatch.setattr(nn_building_blocks.shutil, "which", lambda name: None)  # as if `dot` were missing
    facts = nn_building_blocks.main(["--graph"])
    out = capsys.readouterr().out
    assert facts["graph"] is None
    hint = [line for line in out.splitlines() if line.startswith("--graph needs")]
    assert len(hint) == 1 and "pip install torchviz" in hint[0] and "graphviz.org" in hint[0]


def test_graph_flag_renders_with_torchviz(tmp_path, monkeypatch):
    """With torchviz (faked here) the script draws the graph of section 8's loss, with the parameter names."""
    calls = {}

    class FakeDot:
        def render(self, filename, format, cleanup):
            calls["render"] = (filename, format)
            return f"{filename}.{format}"

    def make_dot(output, params):
        calls["output"], calls["params"] = output, params
        return FakeDot()

    fake = types.ModuleType("torchviz")
    fake.__spec__ = importlib.machinery.ModuleSpec("torchviz", None)
    fake.make_dot = make_dot
    monkeypatch.setitem(sys.modules, "torchviz", fake)
    monkeypatch.setattr(nn_building_blocks.shutil, "which", lambda name: "/usr/bin/dot")
    facts = nn_building_blocks.main(["--graph", "--out-dir", str(tmp_path)])
    assert calls["render"] == (str(tmp_path / "graph"), "png") and facts["graph"] == tmp_path / "graph.png"
    # the loss before the step, with its graph (the loss after it is computed under no_grad: no graph)
    assert calls["output"].grad_fn is not None and calls["output"].item() == facts["loss_before"]
    assert sorted(calls["params"]) == sorted(n for n, _ in nn_building_blocks.NeuralNetwork().named_parameters())


# --- activations.py ----------------------------------------------------------------------------

def sigmoid(x):
    return 1 / (1 + np.exp(-x))


# Each activation and its derivative, written out here, for the curves the plot must show.
CURVES_BY_HAND = {
    "sigmoid": (sigmoid, lambda x: sigmoid(x) * (1 - sigmoid(x))),
    "tanh": (np.tanh, lambda x: 1 / np.cosh(x) ** 2),
    "ReLU": (lambda x: np.where(x > 0, x, 0.0), lambda x: np.where(x > 0, 1.0, 0.0)),
    "leaky ReLU (slope 0.01)": (lambda x: np.where(x > 0, x, 0.01 * x), lambda x: np.where(x > 0, 1.0, 0.01)),
}


def test_activations_writes_real_pngs_that_show_the_right_curves(tmp_path, monkeypatch, capsys):
    """The PNGs exist and are not blank, and the figures drew each function and its derivative (a plot that
    draws f where it says f' is caught), and softmax bars of exp(s) / sum(exp(s))."""
    figures = []
    real_savefig = matplotlib.figure.Figure.savefig

    def recording_savefig(fig, *args, **kwargs):
        figures.append(fig)
        return real_savefig(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", recording_savefig)
    facts = activations.main(["--out-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert [path.name for path in facts["figures"]] == ["activations.png", "softmax.png"]
    for path in facts["figures"]:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width > 500 and image.height > 300
            pixels = np.asarray(image.convert("L"), dtype=float)
        assert pixels.std() > 10  # something was drawn, not a blank canvas
    curves, softmax = figures
    assert sorted(ax.get_title() for ax in curves.axes) == sorted(CURVES_BY_HAND)
    for ax in curves.axes:
        function, derivative = CURVES_BY_HAND[ax.get_title()]
        lines = {line.get_label(): line for line in ax.get_lines()}
        x = lines["f(x)"].get_xdata()
        assert np.allclose(lines["f(x)"].get_ydata(), function(x)), ax.get_title()
        assert np.allclose(lines["f'(x) (autograd)"].get_ydata(), derivative(x)), ax.get_title()
    scores, probabilities = ([bar.get_height() for bar in ax.patches] for ax in softmax.axes[:2])
    assert np.allclose(probabilities, np.exp(scores) / np.exp(scores).sum())
    # The dead unit's input is 0.1 * sum(x) - 10 < 0 for every sample, so the gradient of mean(leaky_relu)
    # with respect to weight j is 0.01 * mean(x_j); ReLU's is 0. (The script draws the inputs first after seed 0.)
    torch.manual_seed(0)
    inputs = torch.randn(256, 4)
    assert facts["dead_relu_gradient"] == 0.0
    assert facts["leaky_relu_gradient"] == pytest.approx(0.01 * inputs.mean(dim=0).abs().max().item(), rel=1e-4)
    assert "exp(s) / sum(exp(s)) = [nan, nan]" in out
    assert headings(out) == list(range(1, 5)) and facts["claims"] == out.count("  [ok] ")


# Points where each function and its derivative are known exactly: sigmoid(ln 3) = 3/4, tanh(ln 2) = 3/5,
# and torch's default leaky slope of 0.01 (its derivative at exactly 0 takes the x < 0 side, as ReLU's does).
LN2, LN3 = math.log(2), math.log(3)
KNOWN_VALUES = {
    "sigmoid": ([-LN3, 0.0, LN3], [0.25, 0.5, 0.75], [0.1875, 0.25, 0.1875]),
    "tanh": ([-LN2, 0.0, LN2], [-0.6, 0.0, 0.6], [0.64, 1.0, 0.64]),
    "relu": ([-2.0, 0.0, 3.0], [0.0, 0.0, 3.0], [0.0, 0.0, 1.0]),
    "leaky_relu": ([-2.0, 0.0, 3.0], [-0.02, 0.0, 3.0], [0.01, 0.01, 1.0]),
}


@pytest.mark.parametrize("name", KNOWN_VALUES)
def test_activation_formulas_give_the_values_known_by_hand(name):
    """NumPy formula, torch function, hand derivative and autograd each against numbers known by hand, so a
    mistake made the same way on both sides (a wrong sign or slope the script compares with itself) shows."""
    points, values, slopes = (np.array(column) for column in KNOWN_VALUES[name])
    assert np.allclose(activations.NUMPY_FUNCTIONS[name](points), values)
    assert np.allclose(activations.DERIVATIVES[name](points), slopes)
    x = torch.tensor(points, requires_grad=True)
    y = activations.TORCH_FUNCTIONS[name](x)
    y.sum().backward()
    assert np.allclose(y.detach().numpy(), values) and np.allclose(x.grad.numpy(), slopes)


def test_softmax_numpy_gives_known_probabilities_without_overflow():
    """softmax([0, ln 3]) = [1/4, 3/4], and so for the same scores + 1000; [0, 1000] is [0, 1]. Shifting by
    anything but the max (or not at all) overflows exp() on one of these and gives nan."""
    for scores, expected in (([0.0, LN3], [0.25, 0.75]), ([1000.0, 1000.0 + LN3], [0.25, 0.75]),
                             ([0.0, 1000.0], [0.0, 1.0])):
        with np.errstate(over="ignore", invalid="ignore"):
            assert np.allclose(activations.softmax_numpy(np.array(scores)), expected), scores


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
    weights = load(run / "tiny_net_weights.pt")
    save_load.TinyNet().load_state_dict(weights)  # a plain state dict that loads with weights_only=True
    checkpoint = load(run / "checkpoint.pt")  # whole again after section 4's torn save
    assert checkpoint["epoch"] == save_load.EPOCHS_BEFORE_SAVE and checkpoint["loss"] == facts["before_save"][-1]
    model = save_load.TinyNet()
    model.load_state_dict(checkpoint["model_state_dict"])  # the post's way back: load_state_dict of its entries
    torch.optim.Adam(model.parameters()).load_state_dict(checkpoint["optimizer_state_dict"])
    with pytest.raises((pickle.UnpicklingError, RuntimeError), match="Unsupported (global|class)"):
        load(run / "tiny_net_whole_model.pt")  # the pickled model is refused by a weights_only load
    # torch names the class it refused ("Unsupported global: GLOBAL ..." today, "Unsupported class ..." before 2.4)
    assert re.search(r"Unsupported (global: GLOBAL|class) T04_tensor_autograd_basics\.save_load\.TinyNet", out)
    assert headings(out) == list(range(1, 7)) and facts["claims"] == out.count("  [ok] ")
    assert "torch.load -> " in out and "PytorchStreamReader failed" in out  # the torn checkpoint of section 4
    # What the script says about torch.load's default, against what a plain torch.load really does here
    # (rather than comparing the version number again, as the script does).
    torch.save(save_load.TinyNet(), tmp_path / "pickled_model.pt")
    try:
        torch.load(tmp_path / "pickled_model.pt")
        refused = False
    except (pickle.UnpicklingError, RuntimeError):
        refused = True
    assert facts["weights_only_default"] is refused


def test_save_load_trains_for_real_and_its_loader_shuffles(tmp_path):
    """The resume demonstration proves something only if the run learns and its batch order comes from the
    loader's generator. Guards against stepping up the gradient, an epoch loss averaged wrongly, and a
    training loader without shuffle=True (then restoring the generator's state would prove nothing)."""
    facts = save_load.main(["--no-accel", "--out-dir", str(tmp_path)])
    losses = facts["before_save"] + facts["straight"]  # epochs 1-3, then 4-6
    labels = save_load.make_loader(1)[0].dataset.tensors[1].double()
    share = labels.mean().item()
    guessing = -(share * math.log(share) + (1 - share) * math.log(1 - share))  # predict the share for every point
    assert 0.25 < losses[0] < 1.0  # the mean cross-entropy per sample starts near ln 2 = 0.69 (two classes)
    assert losses[-1] < min(losses[:3]) and losses[-1] < guessing
    loader, _ = save_load.make_loader(1)
    epoch1, epoch2 = (torch.cat([points for points, _ in loader]) for _ in range(2))
    assert not torch.equal(epoch1, loader.dataset.tensors[0]) and not torch.equal(epoch1, epoch2)


def test_save_atomically_keeps_the_old_file_when_a_save_stops_half_way(tmp_path):
    """A save cut short (here: an object that cannot be pickled) leaves the previous file whole, where a plain
    torch.save leaves a torn one; a save that finishes replaces it and leaves no temporary file behind."""
    path = tmp_path / "checkpoint.pt"
    torch.save({"epoch": 1}, path)
    with pytest.raises(save_load.CrashWhileSaving):
        save_load.save_atomically({"epoch": 2, "oops": save_load.StopsTheSave()}, path)
    assert load(path) == {"epoch": 1}
    save_load.save_atomically({"epoch": 2}, path)
    assert load(path) == {"epoch": 2} and sorted(os.listdir(tmp_path)) == ["checkpoint.pt"]
    with pytest.raises(save_load.CrashWhileSaving):
        torch.save({"epoch": 3, "oops": save_load.StopsTheSave()}, path)
    with pytest.raises((RuntimeError, pickle.UnpicklingError)):  # (the latter on torch 2.0)
        load(path)  # what section 4 shows: the plain save destroyed the last good file


def test_save_load_notices_a_save_that_is_not_atomic(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(save_load, "save_atomically", torch.save)  # writes over the checkpoint in place
    err = exit_with_error(save_load.main, ["--no-accel", "--out-dir", str(tmp_path)], capsys)
    assert err.startswith("error: claim failed: but only checkpoint.pt.tmp is torn")


def test_save_load_explains_the_old_default_on_torch_before_2_6(tmp_path, monkeypatch, capsys):
    """On torch < 2.6 (simulated: torch.load's default back to weights_only=False) the script shows that a
    plain torch.load(path) unpickles the whole model, and says so."""
    real_load = torch.load
    plain_loads = []

    def load_as_before_2_6(*args, weights_only=None, **kwargs):
        if weights_only is None:  # the call a reader writes, torch.load(path): the default used to be False
            result = real_load(*args, weights_only=False, **kwargs)
            plain_loads.append(result)
            return result
        return real_load(*args, weights_only=weights_only, **kwargs)

    monkeypatch.setattr(torch, "load", load_as_before_2_6)
    monkeypatch.setattr(save_load, "WEIGHTS_ONLY_IS_DEFAULT", False)  # steers the script into its old-torch branch
    save_load.main(["--no-accel", "--out-dir", str(tmp_path)])
    assert [type(result) for result in plain_loads] == [save_load.TinyNet]
    assert "is older than 2.6: a plain torch.load(path) still unpickles anything" in capsys.readouterr().out


# --- as a reader runs them: a real process, from inside the lesson folder ---------------------

@pytest.mark.processes  # starts Python processes: `make test-processes` (CI runs it)
def test_scripts_run_as_programs_from_their_folder(tmp_path):
    env = {**os.environ, "PYTHONPATH": "", "MPLBACKEND": "Agg"}
    result = subprocess.run([sys.executable, "dataset_dataloader.py", "--no-accel", "--num-workers", "2",
                             "--out-dir", str(tmp_path)], cwd=FOLDER, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "1: worker 1" in result.stdout and re.search(r"All \d+ claims above were checked and held.", result.stdout)
