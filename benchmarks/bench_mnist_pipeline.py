"""Time T01 end to end with the in-memory pipeline (the default) against the classic one.

Each pipeline runs `T01_mnist_nn/mnist_nn.py` in a fresh process with the same model,
hyper-parameters and seed, so the times include starting Python, importing torch,
loading the data and writing the results: what a reader waits for. It prints both,
their ratio, the accuracies (which must match) and each run's peak memory.

    python benchmarks/bench_mnist_pipeline.py                  # real MNIST from the data folder, 14 epochs
    python benchmarks/bench_mnist_pipeline.py --epochs 3
    python benchmarks/bench_mnist_pipeline.py --synthetic      # full-size MNIST-format stand-in data (offline)
    python benchmarks/bench_mnist_pipeline.py -- --device cuda # anything after -- goes to mnist_nn.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# This parent process stays small on purpose (no torch, no dataset in memory): on Linux a
# child's peak-memory figure starts from its parent's peak at the moment it was started.


def run_once(extra: list[str], out_dir: Path) -> dict:
    """Run mnist_nn.py once in a new process; return wall time, peak memory and its metrics."""
    command = [sys.executable, str(REPO / "T01_mnist_nn" / "mnist_nn.py"), "--out-dir", str(out_dir), *extra]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    if hasattr(os, "wait4"):  # POSIX: the child's own peak resident memory
        _, status, usage = os.wait4(process.pid, 0)
        returncode = os.waitstatus_to_exitcode(status)
        scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
        peak_mb = usage.ru_maxrss * scale / 2**20
    else:
        returncode, peak_mb = process.wait(), float("nan")
    wall = time.perf_counter() - started
    if returncode != 0:
        sys.exit(f"error: {' '.join(command)} exited with {returncode}")
    history = json.loads((out_dir / "metrics.json").read_text())
    return {"wall": wall, "peak_mb": peak_mb, "epoch_seconds": sum(r["seconds"] for r in history) / len(history),
            "images_per_second": sum(r["train_images_per_second"] for r in history) / len(history),
            "accuracy": history[-1]["test_accuracy"], "test_loss": history[-1]["test_loss"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=14, help="epochs per run (default: 14, the post's run)")
    parser.add_argument("--data-dir", type=Path, default=None, help="folder holding MNIST (default: the data folder)")
    parser.add_argument("--synthetic", action="store_true",
                        help="write a full-size MNIST-format stand-in (60,000 + 10,000 images) to a temporary "
                             "folder and time on that (for machines without the real data)")
    parser.add_argument("script_args", nargs="*", help="extra flags for mnist_nn.py, after --")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir
        if args.synthetic:
            data_dir = Path(tmp) / "data"
            subprocess.run([sys.executable, "-c", "import sys; from common import synthetic; "
                            "synthetic.write_mnist(sys.argv[1], train_size=60_000, test_size=10_000)",
                            str(data_dir)], cwd=REPO, check=True)
        common = ["--epochs", str(args.epochs), "--log-interval", "100000", *args.script_args]
        if data_dir is not None:
            common += ["--data-dir", str(data_dir)]
        print(f"Machine: {platform.machine()}, {os.cpu_count()} CPU(s), {platform.system()}, "
              f"Python {platform.python_version()}")
        print(f"Data: {'synthetic full-size MNIST-format files' if args.synthetic else data_dir or 'the data folder'}; "
              f"{args.epochs} epoch(s); extra flags: {' '.join(args.script_args) or 'none'}")
        results = {}
        for name, flags in (("in-memory (default)", []), ("classic", ["--classic-pipeline"])):
            print(f"running {name} ...", flush=True)
            results[name] = run_once(common + flags, Path(tmp) / name.split()[0])

    print(f"\n{'pipeline':<20} {'end to end':>11} {'per epoch':>10} {'train img/s':>12} "
          f"{'accuracy':>9} {'peak RAM':>9}")
    for name, r in results.items():
        print(f"{name:<20} {r['wall']:>10.1f}s {r['epoch_seconds']:>9.2f}s {r['images_per_second']:>12,.0f} "
              f"{100 * r['accuracy']:>8.2f}% {r['peak_mb']:>7.0f}MB")
    fast, slow = results["in-memory (default)"], results["classic"]
    print(f"\nin-memory is {slow['wall'] / fast['wall']:.1f}x faster end to end, "
          f"{slow['epoch_seconds'] / fast['epoch_seconds']:.1f}x per epoch")
    same = fast["accuracy"] == slow["accuracy"] and abs(fast["test_loss"] - slow["test_loss"]) < 1e-6
    print("same accuracy and test loss: " + ("yes" if same else "NO (investigate!)"))


if __name__ == "__main__":
    main()
