"""Where does the time go in a small model? Each lesson's training, timed against its limit.

For each lesson's model it runs, each in a fresh Python process:

- the limit: the lesson's own main() (data, model, loss, optimizer, batch size, as the flags
  make them), but each epoch's train() is replaced by the bare loop: the training tensors,
  already on the device before the clock starts, indexed by a random permutation, and the
  steps. No DataLoader, no logging, no metrics: no training loop can be faster on this machine;
- the lesson's script itself, as a reader runs it.

It prints the training speed of each (images/s, and the script's share of the limit, by the
clock and by the CPU time the process used: on a machine that other jobs share, the clock also
counts the moments the process waited for a CPU, and the CPU-time share is the steadier
figure) and where the script's time went, from starting Python to the last file written: imports, data
preparation (up to the first training step), training, testing, checkpoints and metrics,
outputs (figures, weights). Everything runs twice, once with one thread and once with
torch's default number of threads.

    python benchmarks/bench_lessons.py --synthetic             # offline: full-size stand-in data (make bench)
    python benchmarks/bench_lessons.py                         # the real datasets from the data folder
    python benchmarks/bench_lessons.py --lessons t01 --epochs 14 --threads default
    python benchmarks/bench_lessons.py --lessons t01 -- --device cuda   # flags after -- go to every script
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

# Each lesson: its script, the flags that pick the model, and the data it trains on.
LESSONS = {
    "t01": ("T01 SimpleNN, batch 64", "T01_mnist_nn/mnist_nn.py", []),
    "t02-quickstart": ("T02 quickstart MLP, batch 64", "T02_fashion_mnist/quickstart.py", []),
    "t02-mlp": ("T02 MLP, batch 64", "T02_fashion_mnist/fashion_mnist.py", ["--model", "mlp"]),
    "t02-cnn": ("T02 CNN, batch 64", "T02_fashion_mnist/fashion_mnist.py", ["--model", "cnn"]),
    "t03-b4": ("T03 LeNet, batch 4", "T03_cifar10_lenet/cifar10_lenet.py", []),
    "t03-b64": ("T03 LeNet, batch 64", "T03_cifar10_lenet/cifar10_lenet.py", ["--batch-size", "64"]),
}
TARGET = 0.9  # issue 17: every training epoch at 90% of its limit or more
# The lessons' functions that train one epoch, and those that evaluate (T02's test() calls evaluate():
# a call inside another timed call is counted once, in the outer one).
TRAINING = ("train", "train_loop")
TESTING = ("test", "test_loop", "validate", "evaluate")
# The loss a lesson's train() computes itself rather than taking as `loss_fn=` (torch.nn.functional's name).
LOSS_INSIDE_TRAIN = {"T01_mnist_nn/mnist_nn.py": "nll_loss"}  # SimpleNN returns log-probabilities
PHASES = ["start", "imports", "data", "training", "testing", "checkpoints", "outputs", "other", "exit"]
PHASE_HELP = {
    "start": "starting the Python interpreter",
    "imports": "importing the script: torch, torchvision, common/ (matplotlib waits for the first figure)",
    "data": "reading the dataset and preparing it, up to the first training step",
    "training": "train(): the epochs' training loops",
    "testing": "test() (and T02's validation) after each epoch",
    "checkpoints": "run.end_epoch(): the checkpoint and metrics files after each epoch",
    "outputs": "after the last epoch: figures, weights",
    "other": "the rest (the run folder, the scheduler, ...)",
    "exit": "stopping Python: torch takes a while to tear down",
}


# --- In the child process: a lesson's main(), timed phase by phase, or with the bare loop ---------

def lesson_module(script: str):
    """Import a lesson's script as a module (its folder is a package under the repository)."""
    import importlib

    sys.path.insert(0, str(REPO))
    return importlib.import_module(script.removesuffix(".py").replace("/", "."))


def allow_stand_in_cifar() -> None:
    """The stand-in CIFAR-10's files are not the real ones: switch off torchvision's MD5 check for them."""
    from torchvision import datasets

    datasets.cifar.check_integrity = lambda *args, **kwargs: True
    datasets.CIFAR10._check_integrity = lambda self: True


def child_run(script: str, argv: list[str], result_path: Path, stand_in: bool) -> None:
    """Run the lesson's main(argv), adding up the time spent in each phase; write them to result_path."""
    imports_started, imports_started_wall = time.perf_counter(), time.time()  # "start" ends here
    lesson = lesson_module(script)
    from common.run import TrainingRun

    if stand_in and "cifar10" in script:
        allow_stand_in_cifar()
    calls: list[tuple[str, float, float]] = []  # (phase, started, ended) of every timed call
    inside = [False]  # in a timed call already: T02's test() calls evaluate(), counted once
    train_cpu = [0.0]  # CPU seconds of the process spent in the training phase

    def timed(function, phase: str):
        def wrapper(*args, **kwargs):
            if inside[0]:
                return function(*args, **kwargs)
            inside[0], started, cpu_started = True, time.perf_counter(), time.process_time()
            try:
                return function(*args, **kwargs)
            finally:
                inside[0] = False
                calls.append((phase, started, time.perf_counter()))
                if phase == "training":
                    train_cpu[0] += time.process_time() - cpu_started
        return wrapper

    for names, phase in ((TRAINING, "training"), (TESTING, "testing")):
        for name in names:
            if callable(getattr(lesson, name, None)):
                setattr(lesson, name, timed(getattr(lesson, name), phase))
    TrainingRun.end_epoch = timed(TrainingRun.end_epoch, "checkpoints")

    import torch

    main_started = time.perf_counter()
    lesson.main(argv)
    ended = time.perf_counter()
    loop_ended = max(end for phase, _, end in calls if phase == "checkpoints")  # the last epoch's end_epoch()
    totals = dict.fromkeys(PHASES, 0.0)
    for phase, started, end in calls:
        if end <= loop_ended:  # a test after the last epoch (T02's kept weights) counts as outputs
            totals[phase] += end - started
    totals["imports"] = main_started - imports_started
    totals["data"] = min(started for phase, started, _ in calls if phase == "training") - main_started
    totals["outputs"] = ended - loop_ended
    totals["other"] = ended - imports_started - sum(totals.values())
    result_path.write_text(json.dumps({"phases": totals, "threads": torch.get_num_threads(),
                                       "train_cpu_seconds": train_cpu[0],
                                       "python_started": imports_started_wall, "python_ended": time.time()}))


def bare_loop(train, loss_inside: str | None, epochs: list[tuple[int, float, float]]):
    """A stand-in for the lesson's train(): the same model, optimizer, loss and batches, and nothing else.

    It takes whatever arguments the lesson's train() takes (found by name: model, optimizer,
    loss_fn, and the DataLoader), and appends (images, seconds, CPU seconds) of each epoch to `epochs`.
    """
    import inspect

    import torch
    from torch.utils.data import BatchSampler, DataLoader, Subset

    signature = inspect.signature(train)

    def limit(*args, **kwargs) -> dict:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = bound.arguments
        model, optimizer = arguments["model"], arguments["optimizer"]
        loss_fn = arguments.get("loss_fn") or getattr(torch.nn.functional, loss_inside)
        loader = next(value for value in arguments.values() if isinstance(value, DataLoader))
        dataset, rows = loader.dataset, None
        if isinstance(dataset, Subset):  # a split of the training set: take its rows once, before the clock
            dataset, rows = dataset.dataset, torch.as_tensor(dataset.indices)
        device = next(model.parameters()).device
        images, labels = (t.to(device) if rows is None else t[rows].to(device) for t in dataset.tensors)
        if isinstance(loader.sampler, BatchSampler):
            batch_size, drop_last = loader.sampler.batch_size, loader.sampler.drop_last
        else:
            batch_size, drop_last = loader.batch_size, loader.drop_last
        count = len(labels) - (len(labels) % batch_size if drop_last else 0)
        model.train()
        if device.type == "cuda":
            torch.cuda.synchronize()
        started, cpu_started = time.perf_counter(), time.process_time()
        order = torch.randperm(len(labels), device=device)
        for start in range(0, count, batch_size):
            batch = order[start:start + batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model(images[batch]), labels[batch])
            loss.backward()
            optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        epochs.append((count, seconds, time.process_time() - cpu_started))
        return {"train_loss": loss.item(), "train_images": count, "train_seconds": seconds}

    return limit


def child_limit(script: str, argv: list[str], result_path: Path, stand_in: bool) -> None:
    """Run the lesson's main(argv) with its train() replaced by the bare loop; write the loop's speed."""
    lesson = lesson_module(script)
    import torch

    if stand_in and "cifar10" in script:
        allow_stand_in_cifar()
    name = next(name for name in TRAINING if callable(getattr(lesson, name, None)))
    epochs: list[tuple[int, float, float]] = []
    setattr(lesson, name, bare_loop(getattr(lesson, name), LOSS_INSIDE_TRAIN.get(script), epochs))
    lesson.main(argv)
    images, seconds, cpu = (sum(column) for column in zip(*epochs))
    result_path.write_text(json.dumps({"images_per_second": images / seconds, "cpu_images_per_second": images / cpu,
                                       "threads": torch.get_num_threads()}))


# --- In the parent process: run the children, print the tables ---------------------------------

def run_child(mode: str, script: str, flags: list[str], folder: Path, threads: str, stand_in: bool) -> dict:
    """Run one child process; return its results, its wall time and its peak memory."""
    folder.mkdir(parents=True)
    flags = [*flags, "--out-dir", str(folder / "run")]
    result_path = folder / "result.json"
    command = [sys.executable, __file__, "--child", mode, script, str(result_path),
               *(["--stand-in"] if stand_in else []), "--", *flags]
    environment = dict(os.environ)
    environment.pop("OMP_NUM_THREADS", None)
    if threads != "default":
        environment["OMP_NUM_THREADS"] = threads  # torch reads it when it starts
    environment.setdefault("MPLBACKEND", "Agg")  # the figures go to files; no window waits for a click
    started, launched = time.perf_counter(), time.time()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, env=environment, cwd=REPO)
    if hasattr(os, "wait4"):  # POSIX: the child's own peak resident memory
        _, status, usage = os.wait4(process.pid, 0)
        returncode = os.waitstatus_to_exitcode(status)
        peak_mb = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024) / 2**20  # bytes on macOS, KiB on Linux
    else:
        returncode, peak_mb = process.wait(), float("nan")
    wall, finished = time.perf_counter() - started, time.time()
    if returncode != 0:
        sys.exit(f"error: {' '.join(command)} exited with {returncode}")
    result = json.loads(result_path.read_text()) | {"wall": wall, "peak_mb": peak_mb}
    if mode == "run":
        history = json.loads((folder / "run" / "metrics.json").read_text())
        train_seconds = sum(row["train_images"] / row["train_images_per_second"] for row in history)
        images = sum(row["train_images"] for row in history)
        result |= {"images_per_second": images / train_seconds,
                   "cpu_images_per_second": images / result["train_cpu_seconds"],
                   "test_accuracy": history[-1]["test_accuracy"], "test_loss": history[-1]["test_loss"]}
        result["phases"]["start"] = result["python_started"] - launched
        result["phases"]["exit"] = finished - result["python_ended"]
    return result


def write_stand_in_data(root: Path, lessons: list[str], scale: float = 1.0) -> None:
    """Stand-ins in the real file formats, full-size at scale 1: 60,000 + 10,000 MNIST-sized, 50,000 + 10,000 CIFAR.

    Written by a child process (tests/stand_in_data.py), so this one never holds a dataset in memory.
    """
    mnist_train, cifar_train, test = (max(100, round(size * scale)) for size in (60_000, 50_000, 10_000))
    code = ["import sys", "sys.path.insert(0, 'tests')", "import stand_in_data"]
    if "t01" in lessons:
        code.append(f"stand_in_data.write_mnist(sys.argv[1], 'MNIST', train_size={mnist_train}, test_size={test})")
    if any(name.startswith("t02") for name in lessons):
        code.append(f"stand_in_data.write_mnist(sys.argv[1], 'FashionMNIST', train_size={mnist_train}, "
                    f"test_size={test})")
    if any(name.startswith("t03") for name in lessons):
        code.append(f"stand_in_data.write_cifar10(sys.argv[1], train_size={cifar_train}, test_size={test})")
    subprocess.run([sys.executable, "-c", "; ".join(code), str(root)], cwd=REPO, check=True)


def fastest(runs: list[dict]) -> dict:
    """The run that trained fastest, with the fastest CPU-time speed of any run: the others were slowed
    down by something else on the machine."""
    return max(runs, key=lambda result: result["images_per_second"]) | {
        "cpu_images_per_second": max(result["cpu_images_per_second"] for result in runs)}


def share(result: dict, limit: dict, key: str = "images_per_second") -> float:
    """The result's training speed as a share of the limit's."""
    return result[key] / limit[key]


def print_table(title: str, results: dict, threads: int) -> None:
    print(f"\n{title} (torch threads: {threads})")
    print(f"{'':10}{'train img/s':>12}{'of limit':>9}{'by CPU':>9}{'end to end':>11}{'peak RAM':>9} | "
          + " ".join(f"{phase:>8}" for phase in PHASES))
    limit = results["limit"]
    for name, result in results.items():
        speed, cpu_share = result["images_per_second"], share(result, limit, "cpu_images_per_second")
        line = f"  {name:<8}{speed:>12,.0f}{share(result, limit):>9.0%}{cpu_share:>9.0%}"
        if "phases" in result:
            line += f"{result['wall']:>10.1f}s{result['peak_mb']:>7.0f}MB | " + " ".join(
                f"{result['phases'][phase]:>7.2f}s" for phase in PHASES)
        print(line)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":  # python bench_lessons.py --child MODE SCRIPT RESULT ...
        mode, script, result_path, *rest = sys.argv[2:]
        stand_in = rest[:1] == ["--stand-in"]
        flags = rest[rest.index("--") + 1:]
        (child_run if mode == "run" else child_limit)(script, flags, Path(result_path), stand_in)
        return

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lessons", default=",".join(LESSONS), help=f"comma-separated, from {', '.join(LESSONS)} "
                        "(default: all)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per run (default: 1)")
    parser.add_argument("--threads", default="1,default", help="torch thread settings to run, comma-separated: "
                        "a number or 'default' (default: 1,default)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run everything N times and keep each one's fastest training (default: 1)")
    parser.add_argument("--data-dir", type=Path, default=None, help="folder holding the datasets (default: data/)")
    parser.add_argument("--synthetic", action="store_true",
                        help="write full-size stand-ins of the datasets, in their real file formats, to a "
                             "temporary folder and time on those (for machines without the real data)")
    parser.add_argument("--stand-in-scale", type=float, default=1.0, help=argparse.SUPPRESS)  # tests: smaller
    parser.add_argument("script_args", nargs="*", help="extra flags for every script, after --")
    args = parser.parse_args()
    lessons = args.lessons.split(",")
    unknown = [name for name in lessons if name not in LESSONS]
    if unknown:
        parser.error(f"unknown lesson {unknown[0]!r}: choose from {', '.join(LESSONS)}")

    print(f"Machine: {platform.machine()}, {os.cpu_count()} CPU(s), {platform.system()}, "
          f"Python {platform.python_version()}")
    source = "full-size stand-ins in the real file formats (--synthetic)" if args.synthetic else "the real datasets"
    if args.synthetic and args.stand_in_scale != 1:
        source = source.replace("full-size", f"{args.stand_in_scale:g}-size")
    print(f"Data: {source}; {args.epochs} epoch(s) a run; extra flags: {' '.join(args.script_args) or 'none'}; "
          + (f"the fastest of {args.repeat} runs each" if args.repeat > 1 else "one run each"))
    print("Phases: " + "; ".join(f"{phase} = {text}" for phase, text in PHASE_HELP.items()))
    shares = []
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir
        if args.synthetic:
            data_dir = Path(tmp) / "data"
            write_stand_in_data(data_dir, lessons, args.stand_in_scale)
        common = ["--epochs", str(args.epochs), "--log-interval", "1000000", *args.script_args]
        common += ["--data-dir", str(data_dir)] if data_dir is not None else []
        for threads in args.threads.split(","):
            for name in lessons:
                title, script, flags = LESSONS[name]
                folder = Path(tmp) / f"{name}-{threads}"
                tries: dict[str, list[dict]] = {"limit": [], "script": []}
                for attempt in range(args.repeat):
                    # Taken in turn, each attempt starting with the other one: a busy moment on the
                    # machine, or a CPU that slows down after a minute at full load, hits both alike.
                    for kind in ["limit", "script"] if attempt % 2 == 0 else ["script", "limit"]:
                        mode = "limit" if kind == "limit" else "run"
                        tries[kind].append(run_child(mode, script, [*common, *flags],
                                                     folder / f"{kind}{attempt}", threads, args.synthetic))
                results = {kind: fastest(runs) for kind, runs in tries.items()}
                print_table(title, results, results["limit"]["threads"])
                shares.append((f"{title}, {results['limit']['threads']} thread(s)",
                               share(results["script"], results["limit"]),
                               share(results["script"], results["limit"], "cpu_images_per_second")))
                sys.stdout.flush()
    print(f"\nTraining speed as a share of the limit (target: {TARGET:.0%} or more), by the clock and by CPU time:")
    for label, clock, cpu in shares:
        below = [name for name, value in (("clock", clock), ("CPU time", cpu)) if value < TARGET]
        print(f"  {label:<44}{clock:>7.1%}{cpu:>7.1%}" + (f"  <- below the target ({', '.join(below)})" if below
                                                         else ""))


if __name__ == "__main__":
    main()
