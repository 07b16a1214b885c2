"""T04 · Saving and loading: state_dict, whole pickled models, full checkpoints, map_location, eval().

Everything is saved with torch.save and read back with torch.load, in this file. Every file goes
into the run folder (--out-dir), never the current directory:

    tiny_net_weights.pt       torch.save(model.state_dict()): the weights only, what you ship
    tiny_net_whole_model.pt   torch.save(model): the pickled object (see why not, in section 2)
    checkpoint.pt             torch.save({...}) of model, optimizer, epoch, loss and random states: enough to resume

    python T04_tensor_autograd_basics/save_load.py
    python T04_tensor_autograd_basics/save_load.py --no-accel --out-dir runs/my_run
"""

from __future__ import annotations

import argparse
import os
import pickle
import signal
import sys
from pathlib import Path

if __name__ == "__main__":  # run as a script, Ctrl-C while torch loads (a second or two) stops it, no traceback
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # (imported, e.g. in a notebook, nothing changes)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so `common/` imports from any folder

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from common import cli
from common.device import seed_everything, select_device
from common.run import new_folder
from T04_tensor_autograd_basics.lesson import check, done, raises, section, start

# PyTorch 2.6 changed torch.load's default from weights_only=False to weights_only=True.
# Compare version numbers, not text: as strings "2.14" < "2.6".
WEIGHTS_ONLY_IS_DEFAULT = tuple(int(part) for part in torch.__version__.split(".")[:2]) >= (2, 6)
EPOCHS_BEFORE_SAVE, EPOCHS_AFTER_SAVE = 3, 3
LEARNING_RATE = 0.05


class TinyNet(nn.Module):
    """2 -> hidden -> 2 classifier with dropout (so train() and eval() behave differently)."""

    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        self.fc1 = nn.Linear(2, hidden)
        self.dropout = nn.Dropout(0.2)
        self.fc2 = nn.Linear(hidden, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(F.relu(self.fc1(x))))


def make_loader(seed: int) -> tuple[DataLoader, torch.Generator]:
    """256 points in a square, label 1 inside the unit circle; a shuffling loader and its generator."""
    data_generator = torch.Generator().manual_seed(seed)
    points = torch.rand(256, 2, generator=data_generator) * 4 - 2
    labels = (points.norm(dim=1) < 1).long()
    loader_generator = torch.Generator().manual_seed(seed)  # decides the shuffling: part of what a checkpoint keeps
    return DataLoader(TensorDataset(points, labels), batch_size=64, shuffle=True, generator=loader_generator), \
        loader_generator


def train_epochs(model: nn.Module, optimizer: torch.optim.Optimizer, loader: DataLoader, device: torch.device,
                 epochs: int) -> list[float]:
    """Train for `epochs` epochs; return each epoch's average loss."""
    model.train()
    losses = []
    for _ in range(epochs):
        total = 0.0
        for points, labels in loader:
            points, labels = points.to(device), labels.to(device)
            optimizer.zero_grad()
            loss = F.cross_entropy(model(points), labels)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(labels)
        losses.append(total / len(loader.dataset))
    return losses


def same(a: torch.Tensor, b: torch.Tensor, device: torch.device) -> bool:
    """Bit-for-bit equal on the CPU; on a GPU, equal to 1e-6 (its kernels may differ from run to run)."""
    return torch.equal(a, b) if device.type == "cpu" else torch.allclose(a, b, rtol=0, atol=1e-6)


def state_dict_section(model: TinyNet, device: torch.device, out_dir: Path, probe: torch.Tensor) -> Path:
    section(1, "state_dict: the weights, by name")
    for name, tensor in model.state_dict().items():
        print(f"  {name:<12} {tuple(tensor.shape)}")
    check(list(model.state_dict()) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"],
          "a state_dict maps each parameter's name to its tensor (Dropout has none)")
    path = out_dir / "tiny_net_weights.pt"
    torch.save(model.state_dict(), path)
    state = torch.load(path, map_location=device, weights_only=True)  # weights_only: tensors only, no code
    fresh = TinyNet().to(device)
    fresh.load_state_dict(state)
    model.eval()
    fresh.eval()
    with torch.no_grad():
        check(torch.equal(fresh(probe), model(probe)),
              f"saved to {path.name}, loaded into a new TinyNet: the same outputs")
    message = raises(RuntimeError, lambda: TinyNet(hidden=8).load_state_dict(state),
                     "loading it into a model of another shape is an error that names the mismatch")
    print(f"  TinyNet(hidden=8).load_state_dict(state) -> RuntimeError: {message}")
    return path


def whole_model_section(model: TinyNet, device: torch.device, out_dir: Path, probe: torch.Tensor) -> dict:
    section(2, "A whole pickled model, and why weights_only matters")
    path = out_dir / "tiny_net_whole_model.pt"
    torch.save(model, path)  # pickles the whole object, class name and all
    print(f"torch.save(model) pickles the object: the file says 'make a {type(model).__module__}.TinyNet', and\n"
          "unpickling runs whatever such a file asks for. weights_only=True refuses anything but tensors and\n"
          "plain containers, so a file from the internet cannot run code on your machine.")
    message = raises((pickle.UnpicklingError, RuntimeError),
                     lambda: torch.load(path, map_location=device, weights_only=True),
                     "torch.load(..., weights_only=True) refuses a whole pickled model", pick="Unsupported")
    print(f"  -> {message.split(' Please use')[0]}")
    if WEIGHTS_ONLY_IS_DEFAULT:
        raises((pickle.UnpicklingError, RuntimeError), lambda: torch.load(path, map_location=device),
               f"torch {torch.__version__} (2.6 or newer) refuses it with a plain torch.load(path) too: "
               "weights_only=True is the default")
    else:
        torch.load(path, map_location=device)
        print(f"  torch {torch.__version__} is older than 2.6: a plain torch.load(path) still unpickles anything")
    trusted = torch.load(path, map_location=device, weights_only=False)  # ONLY for files you made yourself
    trusted.eval()
    with torch.no_grad():
        check(isinstance(trusted, TinyNet) and torch.equal(trusted(probe), model(probe)),
              "weights_only=False loads it (do that only for files you trust); same outputs")
    print(f"  Better: save model.state_dict(), rebuild the model in code, load_state_dict (section 1). A pickled\n"
          f"  model also loads only where {type(model).__module__}.TinyNet can be imported, under that name.")
    return {"weights_only_default": WEIGHTS_ONLY_IS_DEFAULT}


def random_states(device: torch.device, loader_generator: torch.Generator) -> dict:
    """Every random-number state the training draws from, for a checkpoint that resumes bit for bit."""
    return {
        "rng_state": torch.get_rng_state(),  # the CPU generator: Dropout's masks on the CPU
        "cuda_rng_state": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,  # Dropout on CUDA
        "mps_rng_state": torch.mps.get_rng_state() if device.type == "mps" else None,  # Dropout on Apple's GPU
        "loader_generator_state": loader_generator.get_state(),  # the order of the next epoch's batches
    }


def restore_random_states(checkpoint: dict, device: torch.device, loader_generator: torch.Generator) -> None:
    """Put every generator back where random_states() found it."""
    torch.set_rng_state(checkpoint["rng_state"])  # a CPU tensor: load the checkpoint with map_location="cpu"
    if device.type == "cuda":
        torch.cuda.set_rng_state(checkpoint["cuda_rng_state"], device)
    if device.type == "mps":
        torch.mps.set_rng_state(checkpoint["mps_rng_state"])
    loader_generator.set_state(checkpoint["loader_generator_state"])


def checkpoint_section(device: torch.device, out_dir: Path, seed: int) -> dict:
    section(3, "A full checkpoint: save, reload into new objects, resume training")
    seed_everything(seed)
    model = TinyNet().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)  # Adam keeps running averages: state to save
    loader, loader_generator = make_loader(seed)
    losses = train_epochs(model, optimizer, loader, device, EPOCHS_BEFORE_SAVE)

    # A checkpoint is one dict of state_dicts and plain values: the post's four keys, and the random states.
    path = out_dir / "checkpoint.pt"
    torch.save({
        "epoch": EPOCHS_BEFORE_SAVE,  # epochs finished: resume with the next one
        "model_state_dict": model.state_dict(),
        "optimizer_state_dict": optimizer.state_dict(),  # Adam's running averages and step count
        "loss": losses[-1],  # the last epoch's average loss
        **random_states(device, loader_generator),
    }, path)
    saved = torch.load(path, map_location="cpu", weights_only=True)
    print(f"saved {path.name} after epoch {saved['epoch']} (loss {saved['loss']:.4f}); it holds: {', '.join(saved)}")
    check(saved["epoch"] == EPOCHS_BEFORE_SAVE and saved["loss"] == losses[-1]
          and all(torch.equal(saved["model_state_dict"][name].to(device), tensor)
                  for name, tensor in model.state_dict().items()),
          "torch.load(..., weights_only=True) reads it back: state_dicts, numbers and random states are "
          "tensors and plain values, no code to run")

    # Keep training the original: what an uninterrupted run would do.
    straight = train_epochs(model, optimizer, loader, device, EPOCHS_AFTER_SAVE)

    # Pretend the program stopped: new model, new optimizer, new loader, all filled from the file.
    resumed_model = TinyNet().to(device)
    resumed_optimizer = torch.optim.Adam(resumed_model.parameters(), lr=LEARNING_RATE)
    resumed_loader, resumed_generator = make_loader(seed)  # its shuffling starts over; the checkpoint restores it
    # map_location="cpu" keeps the random states CPU tensors (torch.set_rng_state takes no other); load_state_dict
    # copies each weight to wherever the model lives, and the optimizer moves its state next to its parameters.
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    resumed_model.load_state_dict(checkpoint["model_state_dict"])
    resumed_optimizer.load_state_dict(checkpoint["optimizer_state_dict"])
    restore_random_states(checkpoint, device, resumed_generator)
    resumed = train_epochs(resumed_model, resumed_optimizer, resumed_loader, device, EPOCHS_AFTER_SAVE)
    first = checkpoint["epoch"] + 1
    for epoch, a, b in zip(range(first, first + EPOCHS_AFTER_SAVE), straight, resumed):
        print(f"  epoch {epoch}: uninterrupted loss {a:.6f}, resumed loss {b:.6f}")
    check(same(torch.tensor(straight), torch.tensor(resumed), device)
          and all(same(p, q, device) for p, q in zip(model.parameters(), resumed_model.parameters())),
          "resumed training gives the same losses and the same final weights as the uninterrupted run")

    # The same again, but restoring only the weights and not the optimizer: Adam starts from scratch.
    weights_only_model = TinyNet().to(device)
    fresh_optimizer = torch.optim.Adam(weights_only_model.parameters(), lr=LEARNING_RATE)
    other_loader, other_generator = make_loader(seed)
    weights_only_model.load_state_dict(checkpoint["model_state_dict"])  # and no optimizer.load_state_dict(...)
    restore_random_states(checkpoint, device, other_generator)
    without_optimizer = train_epochs(weights_only_model, fresh_optimizer, other_loader, device, EPOCHS_AFTER_SAVE)
    print(f"  without the optimizer's state, epoch {first}'s loss is {without_optimizer[0]:.6f} instead")
    check(not same(torch.tensor(straight), torch.tensor(without_optimizer), device),
          "restoring the weights alone (no optimizer state) does NOT continue the same run")
    return {"before_save": losses, "straight": straight, "resumed": resumed, "without_optimizer": without_optimizer}


class CrashWhileSaving(Exception):
    """Stands in for what can stop a program in the middle of torch.save: a crash, Ctrl-C, a full disk."""


class StopsTheSave:
    """An object that torch.save cannot pickle: saving it stops half-way, as such a crash would."""

    def __reduce__(self):
        raise CrashWhileSaving("the program stopped in the middle of torch.save")


def save_atomically(obj: object, path: Path) -> None:
    """torch.save(obj, path), but never half-written: save to `path`.tmp, then rename that over `path`.

    The training lessons (T01-T05) write their checkpoint.pt this way (common/run.py's atomic_write).
    """
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)  # one step on the same disk: `path` is the old file or the new one, never half of one


def atomic_section(path: Path) -> dict:
    section(4, "Saving over a checkpoint safely: a temporary file, then a rename")
    good = torch.load(path, map_location="cpu", weights_only=True)
    next_save = {**good, "epoch": good["epoch"] + 1, "oops": StopsTheSave()}  # this save will stop half-way
    print("A training run saves over its checkpoint after every epoch. Say the program stops in the middle:")
    raises(CrashWhileSaving, lambda: torch.save(next_save, path), "torch.save(checkpoint, path) stopped half-way")
    # (torch 2.0 reports the torn file as a pickle.UnpicklingError, later releases as a RuntimeError)
    message = raises((RuntimeError, pickle.UnpicklingError),
                     lambda: torch.load(path, map_location="cpu", weights_only=True),
                     f"and the last good {path.name} is gone: torch.save empties the file first, so a save cut "
                     "short leaves a torn one", pick="PytorchStreamReader")
    print(f"  torch.load -> {message[max(message.find('PytorchStreamReader'), 0):].split('. ')[0]}")  # the why
    torch.save(good, path)  # (put the good checkpoint back for the second try)
    print("The same save with save_atomically(): torch.save to checkpoint.pt.tmp, then os.replace() renames it")
    raises(CrashWhileSaving, lambda: save_atomically(next_save, path), "save_atomically() stopped half-way too")
    tmp = path.with_name(path.name + ".tmp")
    try:
        kept = torch.load(path, map_location="cpu", weights_only=True)["epoch"]
    except (RuntimeError, pickle.UnpicklingError):  # torn (torch 2.0 says UnpicklingError)
        kept = None
    check(kept == good["epoch"], f"but only {tmp.name} is torn: {path.name} still holds epoch {good['epoch']}, whole")
    tmp.unlink()  # (a real run would simply write over it next time)
    return {"torn_by_plain_save": True}


def map_location_section(weights_path: Path, device: torch.device) -> dict:
    section(5, "map_location: load a GPU checkpoint on a machine without one")
    on_cpu = torch.load(weights_path, map_location="cpu", weights_only=True)
    check(all(t.device.type == "cpu" for t in on_cpu.values()), "map_location='cpu' puts every tensor on the CPU")
    on_device = torch.load(weights_path, map_location=device, weights_only=True)
    check(all(t.device.type == device.type for t in on_device.values()),
          f"map_location=device puts every tensor on the chosen device ({device})")
    if device.type == "cpu":
        print("  No accelerator in use: the file was saved from the CPU, so this ran on the CPU only. A file\n"
              "  saved on a GPU loads on a CPU-only machine only with map_location='cpu'; without it torch.load\n"
              "  fails with 'Attempting to deserialize object on a CUDA device but torch.cuda.is_available()\n"
              "  is False'.")
        return {"saved_on": "cpu"}
    as_saved = torch.load(weights_path, weights_only=True)  # no map_location: back where they were saved
    check(all(t.device.type == device.type for t in as_saved.values()),
          f"without map_location the tensors come back on the device they were saved from ({device.type})")
    return {"saved_on": device.type}


def eval_section(trained: TinyNet, device: torch.device, weights_path: Path, probe: torch.Tensor) -> dict:
    section(6, "After loading: eval() before predicting")
    model = TinyNet().to(device)
    model.load_state_dict(torch.load(weights_path, map_location=device, weights_only=True))
    check(model.training, "a freshly built model is in train mode, and load_state_dict() does not change that")
    with torch.no_grad():
        first, second = model(probe), model(probe)
        check(not torch.equal(first, second), "in train mode Dropout is on: the same input gives different outputs")
        model.eval()  # Dropout off (and BatchNorm would use its running statistics)
        trained.eval()
        check(torch.equal(model(probe), model(probe)) and torch.equal(model(probe), trained(probe)),
              "after eval() the outputs are repeatable and equal the saved model's")
    return {"train_mode_differs": True}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = cli.ArgumentParser(description="T04: saving and loading models and checkpoints, every claim checked.")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default: 1)")
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="folder for the .pt files (default: a new folder under <repo>/runs)")
    parser.add_device_flags()  # --device, --no-cuda, --no-mps, --no-accel (common/cli.py)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = select_device(args)  # reads --device, --no-cuda, --no-mps, --no-accel
    seed_everything(args.seed)
    out_dir, _ = new_folder(args.out_dir, "save_load")  # --out-dir, or a new folder under runs/
    start("T04 - Saving and loading")
    print(f"device {device}, torch {torch.__version__}")
    model = TinyNet().to(device)
    probe = torch.rand(5, 2, device=device) * 4 - 2  # a few inputs to compare outputs on
    weights_path = state_dict_section(model, device, out_dir, probe)
    facts = whole_model_section(model, device, out_dir, probe)
    facts |= checkpoint_section(device, out_dir, args.seed)
    facts |= atomic_section(out_dir / "checkpoint.pt")
    facts |= map_location_section(weights_path, device)
    facts |= eval_section(model, device, weights_path, probe)
    print(f"\nRun folder: {out_dir} (tiny_net_weights.pt, tiny_net_whole_model.pt, checkpoint.pt)")
    return {**facts, "out_dir": out_dir, "claims": done()}


if __name__ == "__main__":
    cli.run_main(main)
