"""benchmarks/bench_lessons.py: the limit, both pipelines and the time breakdown, on small stand-ins.

`make bench` runs it on full-size stand-ins (minutes); here the stand-ins are 2% of that, so
the figures mean nothing, but every part of the benchmark runs: the data it writes, the three
kinds of child process, the tables and the check that both pipelines give the same numbers.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torchvision import datasets

from common import synthetic

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import bench_lessons  # noqa: E402


def test_the_benchmark_prints_the_limit_both_pipelines_and_where_the_time_went():
    result = subprocess.run([sys.executable, "benchmarks/bench_lessons.py", "--synthetic", "--stand-in-scale", "0.02",
                             "--lessons", "t01", "--threads", "1"], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "T01 SimpleNN, batch 64 (torch threads: 1)" in out
    header = next(line for line in out.splitlines() if "train img/s" in line)
    assert header.split("|")[1].split() == bench_lessons.PHASES
    row = re.compile(r"  (limit|in-memory|classic) +[\d,]+ ")
    rows = {line.split()[0]: line for line in out.splitlines() if row.match(line)}
    assert set(rows) == {"limit", "in-memory", "classic"}
    assert rows["limit"].split()[2] == "100%"
    for name in ("in-memory", "classic"):
        times = [float(value.rstrip("s")) for value in rows[name].split("|")[1].split()]
        end_to_end = float(rows[name].split()[3].rstrip("s"))
        assert len(times) == len(bench_lessons.PHASES) and min(times) >= -0.01
        # The phases add up to the whole run (printed to 0.01 s each, the whole to 0.1 s).
        assert sum(times) == pytest.approx(end_to_end, abs=0.1)
        assert times[bench_lessons.PHASES.index("training")] > 0 and times[bench_lessons.PHASES.index("imports")] > 0
    assert "same test accuracy and loss: yes" in out


@pytest.mark.parametrize("lesson", ["t02-cnn", "t03-b4"])
def test_the_limit_trains_the_lessons_model_with_its_optimizer(lesson, tmp_path, monkeypatch, one_thread):
    title, script, flags = bench_lessons.LESSONS[lesson]
    if "cifar10" in script:
        synthetic.write_cifar10(tmp_path, train_size=200, test_size=50)
        # What --stand-in does in the child process, undone after this test: not the real files' MD5s.
        monkeypatch.setattr(datasets.cifar, "check_integrity", lambda *a, **k: True)
        monkeypatch.setattr(datasets.CIFAR10, "_check_integrity", lambda self: True)
    else:
        synthetic.write_mnist(tmp_path, "FashionMNIST", train_size=200, test_size=50)
    built = []
    real_step = torch.optim.SGD.step
    monkeypatch.setattr(torch.optim.SGD, "step", lambda self, *a, **k: built.append(self) or real_step(self, *a, **k))
    result_path = tmp_path / "result.json"
    bench_lessons.child_limit(script, ["--data-dir", str(tmp_path), "--no-accel", "--epochs", "1", *flags], result_path,
                              stand_in=False)
    assert json.loads(result_path.read_text())["images_per_second"] > 0
    batch = 4 if lesson == "t03-b4" else 64
    assert len(built) == -(-200 // batch)  # one step per batch of the lesson's size, over every image once
    optimizer = built[0]
    assert optimizer.defaults["momentum"] == 0.9
    assert optimizer.defaults["lr"] == (0.001 if lesson.startswith("t03") else 0.01)
