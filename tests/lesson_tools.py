"""Tools the lesson tests share: copying a lesson's code out, and watching what train()/test() do.

They let a test check the lesson itself (is the model in eval mode while testing? is every step
taken with this batch's gradient alone?) rather than only the format of what it prints.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

ALLOWED_IMPORTS = {"torch", "torchvision", "__future__"} | set(getattr(sys, "stdlib_module_names", ()))


def extract_definitions(source: Path, names: list[str]) -> str:
    """The named classes/functions of a lesson file, with its torch/torchvision/standard-library imports.

    This is what a reader copies into a new file. Any other import (common/, numpy, matplotlib)
    is left out, so code that needs it fails when the copy runs.
    """
    tree = ast.parse(source.read_text(encoding="utf-8"))
    lines = source.read_text(encoding="utf-8").splitlines()
    imports, found = [], {}
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            module = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
            if (module or "").split(".")[0] in ALLOWED_IMPORTS:
                imports.append(ast.get_source_segment(source.read_text(encoding="utf-8"), node))
        elif isinstance(node, (ast.ClassDef, ast.FunctionDef)) and node.name in names:
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            found[node.name] = "\n".join(lines[start - 1:node.end_lineno])
    missing = [name for name in names if name not in found]
    assert not missing, f"{source.name} has no top-level {missing}"
    future = [line for line in imports if line.startswith("from __future__")]  # must come first in a file
    others = [line for line in imports if line not in future]
    blocker = ["import sys", "sys.modules['common'] = None  # the copy must not reach the repository's helpers"]
    return "\n".join(future + blocker + others) + "\n\n\n" + "\n\n\n".join(found[name] for name in names) + "\n"


def run_copied_code(code: str, folder: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    """Write `code` to <folder>/copied.py and run it there, with nothing of the repository on the path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "copied.py"
    path.write_text(code, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": "", "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(path)], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=timeout)


def record_modes(model: nn.Module) -> list[bool]:
    """A list that gets `model.training` appended at every forward pass (True = training mode)."""
    modes: list[bool] = []
    model.register_forward_pre_hook(lambda module, inputs: modes.append(module.training))
    return modes


class RecordingSGD(torch.optim.SGD):
    """Plain SGD that keeps a copy of the gradients of every step it takes.

    With lr=0 the weights never change, so a test can recompute, batch by batch, the gradient
    that step should have used, and compare.
    """

    def __init__(self, params, lr: float = 0.0) -> None:
        super().__init__(params, lr=lr)
        self.gradients: list[list[torch.Tensor]] = []

    def step(self, closure=None):  # noqa: ANN001 (torch's signature)
        self.gradients.append([p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
                               for group in self.param_groups for p in group["params"]])
        return super().step(closure)


def expected_gradients(model: nn.Module, loss_fn, batches) -> list[list[torch.Tensor]]:
    """For each (images, targets) batch: the gradient of the batch's mean loss alone, in training mode."""
    model.train()
    result = []
    for images, targets in batches:
        model.zero_grad()
        loss_fn(model(images), targets).backward()
        result.append([p.grad.detach().clone() for p in model.parameters()])
    model.zero_grad()
    return result


def count_single_image_reads(monkeypatch) -> list:
    """Record every TensorDataset read of one image (an int index) rather than a whole batch (a list of indices).

    Training should take none: the lessons' BatchSampler hands the dataset a batch's indices at once,
    and batch_size=None passes the batch it returns straight on.
    """
    from torch.utils.data import TensorDataset

    reads = []
    real = TensorDataset.__getitem__

    def spy(self, index):
        if isinstance(index, int):
            reads.append(index)
        return real(self, index)

    monkeypatch.setattr(TensorDataset, "__getitem__", spy)
    return reads
