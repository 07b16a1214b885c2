"""benchmarks/bench_lessons.py: the limit, the lesson's script and the time breakdown, on small stand-ins.

`make bench` runs it on full-size stand-ins (minutes); here the stand-ins are 2% of that, so
the figures mean nothing, but every part of the benchmark runs: the data it writes, both kinds
of child process, the tables and the summary of each lesson's share of its limit.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import stand_in_data
import torch
from torchvision import datasets

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import bench_lessons  # noqa: E402


@pytest.mark.processes  # starts Python processes: `make test-processes` (CI runs it)
def test_the_benchmark_prints_the_limit_the_script_and_where_the_time_went():
    result = subprocess.run([sys.executable, "benchmarks/bench_lessons.py", "--synthetic", "--stand-in-scale", "0.02",
                             "--lessons", "t01", "--threads", "1"], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "T01 SimpleNN, batch 64 (torch threads: 1)" in out
    header = next(line for line in out.splitlines() if "train img/s" in line)
    assert header.split("|")[1].split() == bench_lessons.PHASES
    row = re.compile(r"  (limit|script) +[\d,]+ ")
    rows = {line.split()[0]: line for line in out.splitlines() if row.match(line)}
    assert set(rows) == {"limit", "script"}
    assert rows["limit"].split()[2:4] == ["100%", "100%"]  # by the clock and by CPU time
    times = [float(value.rstrip("s")) for value in rows["script"].split("|")[1].split()]
    end_to_end = float(rows["script"].split()[4].rstrip("s"))
    assert len(times) == len(bench_lessons.PHASES) and min(times) >= -0.01
    # The phases add up to the whole run (printed to 0.01 s each, the whole to 0.1 s).
    assert sum(times) == pytest.approx(end_to_end, abs=0.1)
    assert times[bench_lessons.PHASES.index("training")] > 0 and times[bench_lessons.PHASES.index("imports")] > 0
    # The summary repeats the script's shares of the limit.
    summary = out.split("Training speed as a share of the limit (target: 90% or more), by the clock and by "
                        "CPU time:\n")[1]
    assert summary.split()[:6] == ["T01", "SimpleNN,", "batch", "64,", "1", "thread(s)"]
    for precise, rounded in zip(summary.split()[6:8], rows["script"].split()[2:4]):  # 96.4% in the summary, 96%
        assert float(precise.rstrip("%")) == pytest.approx(float(rounded.rstrip("%")), abs=0.55)


@pytest.mark.parametrize("lesson", ["t01", "t02-quickstart", "t03-b4"])
def test_the_limit_trains_the_lessons_model_with_its_optimizer_and_loss(lesson, tmp_path, monkeypatch, one_thread):
    title, script, flags = bench_lessons.LESSONS[lesson]
    if "cifar10" in script:
        stand_in_data.write_cifar10(tmp_path, train_size=200, test_size=50)
        # What --stand-in does in the child process, undone after this test: not the real files' MD5s.
        monkeypatch.setattr(datasets.cifar, "check_integrity", lambda *a, **k: True)
        monkeypatch.setattr(datasets.CIFAR10, "_check_integrity", lambda self: True)
    else:
        stand_in_data.write_mnist(tmp_path, "MNIST" if lesson == "t01" else "FashionMNIST", train_size=200,
                                  test_size=50)
    lesson_module = bench_lessons.lesson_module(script)
    optimizer_class = torch.optim.Adadelta if lesson == "t01" else torch.optim.SGD
    steps, losses = [], []
    real_step = optimizer_class.step
    monkeypatch.setattr(optimizer_class, "step", lambda self, *a, **k: steps.append(self) or real_step(self, *a, **k))
    loss_name = "nll_loss" if lesson == "t01" else "cross_entropy"  # T01's model gives log-probabilities
    real_loss = getattr(torch.nn.functional, loss_name)
    monkeypatch.setattr(torch.nn.functional, loss_name,
                        lambda output, target, **k: losses.append(len(target)) or real_loss(output, target, **k))
    train_name = next(name for name in bench_lessons.TRAINING if hasattr(lesson_module, name))
    lessons_train, lesson_trained = getattr(lesson_module, train_name), []

    @functools.wraps(lessons_train)  # the limit reads its arguments by the lesson's parameter names
    def spy(*args, **kwargs):
        lesson_trained.append(True)
        return lessons_train(*args, **kwargs)

    monkeypatch.setattr(lesson_module, train_name, spy)

    result_path = tmp_path / "result.json"
    bench_lessons.child_limit(script, ["--data-dir", str(tmp_path), "--out-dir", str(tmp_path / "run"), "--no-accel",
                                       "--epochs", "1", "--log-interval", "1000", *flags], result_path, stand_in=False)
    result = json.loads(result_path.read_text())
    assert result["images_per_second"] > 0 and result["cpu_images_per_second"] > 0
    batch = 4 if lesson == "t03-b4" else 64
    assert len(steps) == -(-200 // batch)  # one step per batch of the lesson's size, over every image once
    assert losses[:len(steps)] == [batch] * (200 // batch) + [200 % batch] * (200 % batch > 0)  # then test()'s
    assert all(optimizer is steps[0] for optimizer in steps)
    assert steps[0].defaults["lr"] == lesson_module.parse_args([]).lr  # the lesson's optimizer, as its flags say
    model_class = {"t01": "SimpleNN", "t02-quickstart": "NeuralNetwork", "t03-b4": "LeNet"}[lesson]
    stepped = [p.shape for group in steps[0].param_groups for p in group["params"]]
    assert stepped == [p.shape for p in getattr(lesson_module, model_class)().parameters()]  # the lesson's model
    assert lesson_trained == []  # the bare loop trained in place of the lesson's train()
