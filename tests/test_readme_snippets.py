"""The READMEs' "use the saved weights elsewhere" snippets run as they stand, in a new folder.

Each snippet is copied out of its README, the weights file it loads is written from the
lesson's own model class, and the snippet runs in a fresh process outside the repository.
A snippet that lacks an import, or a class that has drifted from the lesson's, fails here.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import torch

from T01_mnist_nn import mnist_nn
from T03_cifar10_lenet import cifar10_lenet
from tests.lesson_tools import run_copied_code

REPO = Path(__file__).resolve().parents[1]
HEADINGS = ("To use the saved weights elsewhere:", "在别处使用保存的权重：")
# (README, the lesson's model class, the file name the snippet loads)
SNIPPETS = [
    ("T01_mnist_nn/README.md", mnist_nn.SimpleNN, "mnist_simple_nn.pt"),
    ("T01_mnist_nn/README.zh-CN.md", mnist_nn.SimpleNN, "mnist_simple_nn.pt"),
    ("T03_cifar10_lenet/README.md", cifar10_lenet.LeNet, "cifar10_lenet.pt"),
    ("T03_cifar10_lenet/README.zh-CN.md", cifar10_lenet.LeNet, "cifar10_lenet.pt"),
]


def snippet_after_heading(readme: Path) -> str:
    """The ```python block that follows the "use the saved weights elsewhere" line."""
    text = readme.read_text(encoding="utf-8")
    pattern = "(?:" + "|".join(re.escape(h) for h in HEADINGS) + r")\s*```python\n(.*?)```"
    blocks = re.findall(pattern, text, re.S)
    assert len(blocks) == 1, f"{readme.name}: expected one python block after the heading, found {len(blocks)}"
    return blocks[0]


@pytest.mark.parametrize(("readme", "model_class", "weights_name"), SNIPPETS, ids=[s[0] for s in SNIPPETS])
def test_snippet_defines_the_lessons_own_class(readme, model_class, weights_name):
    # The snippet defines the class itself, copied exactly from the lesson file.
    lesson_class = inspect.getsource(model_class).rstrip()
    assert lesson_class in snippet_after_heading(REPO / readme), \
        f"{readme}: {model_class.__name__} differs from the lesson file's"


@pytest.mark.processes  # starts Python processes: `make test-processes` (CI runs it)
def test_every_snippet_runs_in_a_new_folder(tmp_path):
    """One process runs the four snippets one after another, each in its own folder (a process each
    would spend most of its time importing torch)."""
    driver = ["import os, runpy, sys", "sys.modules['common'] = None  # nothing of the repository is reachable"]
    for number, (readme, model_class, weights_name) in enumerate(SNIPPETS):
        folder = tmp_path / f"snippet{number}"
        folder.mkdir()
        (folder / "snippet.py").write_text(snippet_after_heading(REPO / readme), encoding="utf-8")
        torch.manual_seed(0)
        torch.save(model_class().state_dict(), folder / weights_name)
        driver += [f"os.chdir({str(folder)!r})", f"print('--- {readme}', flush=True)",
                   "runpy.run_path('snippet.py', run_name='__main__')"]
    # No PYTHONPATH, a folder outside the repository, and common/ blocked (the editable install
    # would otherwise let `import common` succeed anywhere).
    result = run_copied_code("\n".join(driver) + "\n", tmp_path)
    assert result.returncode == 0, f"a snippet failed (the last '---' line names it):\n{result.stdout}\n{result.stderr}"
    assert result.stdout.count("predicted") == len(SNIPPETS)
