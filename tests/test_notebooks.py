"""The lessons' notebooks: built from their sources and the scripts, committed clean, linked, and run top to bottom.

The fast checks run in `make test`. Running the notebooks needs a real Jupyter kernel per notebook
(nbclient starts it): those tests are marked `notebooks` and run by `make test-notebooks`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import stand_in_data
from test_glossary import REJECTED, prose

from notebooks import build

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(build.all_notebooks())  # paths relative to the repository, English and Chinese
# The stand-in data each notebook reads: (writer, keyword arguments).
STAND_INS = {
    "T01_mnist_nn": (stand_in_data.write_mnist, {"folder": "MNIST", "train_size": 600, "test_size": 100}),
    "T02_fashion_mnist": (stand_in_data.write_mnist, {"folder": "FashionMNIST", "train_size": 600, "test_size": 100}),
    "T03_cifar10_lenet": (stand_in_data.write_cifar10, {"train_size": 200, "test_size": 50}),
    "T05_ddp_torchrun": (stand_in_data.write_mnist, {"folder": "FashionMNIST", "train_size": 600, "test_size": 100}),
}
# Stand-in CIFAR-10 files are not CIFAR-10's: their MD5s differ. Run first in the kernel, never committed.
ACCEPT_STAND_IN_CIFAR = """\
from torchvision import datasets
datasets.cifar.check_integrity = lambda *args, **kwargs: True
datasets.CIFAR10._check_integrity = lambda self: True"""


def test_every_notebook_is_what_its_source_and_its_script_give():
    stale = [path.as_posix() for path, text in build.all_notebooks().items()
             if not (REPO / path).is_file() or (REPO / path).read_text(encoding="utf-8") != text]
    assert not stale, f"out of date, run `python notebooks/build.py`: {stale}"
    on_disk = {path.relative_to(REPO) for path in REPO.glob("T*/*.ipynb")}
    assert on_disk == set(NOTEBOOKS), "every notebook comes from a source in notebooks/"


def test_a_changed_definition_in_the_script_changes_the_notebook(tmp_path, monkeypatch):
    """The notebook shows the script's own code: edit the script and the built notebook follows."""
    copy = tmp_path / "T01_mnist_nn"
    shutil.copytree(REPO / "T01_mnist_nn", copy)
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    script = copy / "mnist_nn.py"
    script.write_text(script.read_text(encoding="utf-8").replace("nn.Linear(28 * 28, 128)", "nn.Linear(28 * 28, 256)"),
                      encoding="utf-8")
    monkeypatch.setattr(build, "REPO_ROOT", tmp_path)
    rebuilt = build.build(build.SOURCES / "T01_mnist_nn" / "mnist_nn.py")
    committed = (REPO / "T01_mnist_nn" / "mnist_nn.ipynb").read_text(encoding="utf-8")
    assert "nn.Linear(28 * 28, 256)" in rebuilt[Path("T01_mnist_nn/mnist_nn.ipynb")]
    assert "nn.Linear(28 * 28, 256)" not in committed


@pytest.mark.parametrize("path", NOTEBOOKS, ids=str)
def test_notebooks_are_committed_without_outputs(path):
    import nbformat

    nbformat.validate(nbformat.reads((REPO / path).read_text(encoding="utf-8"), as_version=4))  # opens in Jupyter
    notebook = json.loads((REPO / path).read_text(encoding="utf-8"))
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert code and all(cell["outputs"] == [] and cell["execution_count"] is None for cell in code)
    assert set(notebook["metadata"]) == {"kernelspec", "language_info"}  # no widget state, no Colab runtime


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p.name.endswith(".zh-CN.ipynb")], ids=str)
def test_chinese_notebooks_use_the_glossarys_words(path):
    notebook = json.loads((REPO / path).read_text(encoding="utf-8"))
    text = prose("\n".join("".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "markdown"))
    assert re.search(r"[\u4e00-\u9fff]", text)
    found = [f"{word} (the glossary says {REJECTED[word]})" for word in REJECTED if word in text]
    assert not found, found
    assert not re.findall(r'"[^"\n]*[\u4e00-\u9fff][^"\n]*"', text)  # Chinese quotes “” around Chinese text


@pytest.mark.parametrize("path", NOTEBOOKS, ids=str)
def test_each_lesson_readme_opens_its_notebooks_in_colab_from_the_one_address(path):
    readme = REPO / path.parent / ("README.zh-CN.md" if path.name.endswith(".zh-CN.ipynb") else "README.md")
    text = readme.read_text(encoding="utf-8")
    assert build.colab_url(path) in text, f"{readme.relative_to(REPO)} has no Colab link to {path.name}"
    assert f"]({path.name})" in text, f"{readme.relative_to(REPO)} has no link to {path.name}"
    addresses = set(re.findall(r"https://colab\.research\.google\.com/github/([^/]+/[^/]+)/", text))
    assert addresses == {build.repository_url().removeprefix("https://github.com/")}


@pytest.fixture(scope="session")
def repository_copy(tmp_path_factory) -> Path:
    """The repository's files as a fresh clone has them, so that what the notebooks write lands in a copy."""
    copy = tmp_path_factory.mktemp("clone") / "pytorch-tutorial-lessons"
    ignore = shutil.ignore_patterns(".git", ".venv*", "data", "runs", "__pycache__", "*.egg-info", ".*cache")
    shutil.copytree(REPO, copy, ignore=ignore)
    return copy


@pytest.fixture(scope="session")
def executed(repository_copy, tmp_path_factory):
    """Run a notebook top to bottom in a new kernel, as Jupyter's "Run All" does; return it with its outputs.
    Each notebook runs once per pytest worker: its tests are grouped on one worker (--dist loadgroup)."""
    import nbclient
    import nbformat

    done = {}

    def run(path: Path) -> dict:
        if path not in done:
            data_dir = tmp_path_factory.mktemp("data")
            if path.parent.name in STAND_INS:  # the lessons that read a dataset
                writer, options = STAND_INS[path.parent.name]
                writer(data_dir, **options)
            notebook = nbformat.read(repository_copy / path, as_version=4)
            if path.parent.name == "T03_cifar10_lenet":
                notebook.cells.insert(0, nbformat.v4.new_code_cell(ACCEPT_STAND_IN_CIFAR))
            client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                             resources={"metadata": {"path": str(repository_copy / path.parent)}})
            env = {**os.environ, "PYTORCH_TUTORIAL_DATA_DIR": str(data_dir)}
            env.pop("MPLBACKEND", None)  # the kernel's own inline backend, as in Jupyter
            with client.setup_kernel(env=env):
                for index, cell in enumerate(notebook.cells):
                    client.execute_cell(cell, index)  # raises CellExecutionError, naming the cell, on any error
            nbformat.write(notebook, tmp_path_factory.mktemp("executed") / path.name)  # to look at, if need be
            done[path] = notebook
        return done[path]

    return run


def outputs(notebook: dict, kind: str) -> list:
    return [out for cell in notebook["cells"] if cell["cell_type"] == "code" for out in cell["outputs"]
            if kind in out.get("data", {}) or out.get("name") == kind]


RUNS = [pytest.param(path, marks=pytest.mark.xdist_group(path.stem)) for path in NOTEBOOKS]


@pytest.mark.notebooks
@pytest.mark.parametrize("path", RUNS, ids=str)
def test_notebook_runs_top_to_bottom(path, executed, repository_copy):
    printed = "".join(out["text"] for out in outputs(executed(path), "stdout"))
    assert f"Working in {repository_copy / path.parent}" in printed  # the first cell found the lesson folder
    # the lesson's own code printed its line: test()'s, or (T04, no training) the count of the claims it checked
    assert "Test" in printed or "claims above were checked and held" in printed


@pytest.mark.notebooks
@pytest.mark.parametrize("path", RUNS, ids=str)
def test_notebook_shows_its_figures_inline(path, executed):
    assert outputs(executed(path), "image/png"), "no figure shown inline"


@pytest.mark.notebooks
def test_the_first_cell_fetches_the_repository_where_there_is_none(tmp_path, repository_copy):
    """Colab's case: the notebook opened alone. The first cell clones the repository (here from a local copy
    of it, there is no network) and moves into the lesson folder, where the lesson's script imports."""
    import nbclient
    import nbformat

    origin = tmp_path / "origin"
    shutil.copytree(repository_copy, origin)
    for command in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"]):
        subprocess.run(["git", *command], cwd=origin, check=True)
    notebook = nbformat.read(REPO / "T01_mnist_nn" / "mnist_nn.ipynb", as_version=4)
    setup = next(cell for cell in notebook.cells if cell.cell_type == "code")
    assert setup.source.count(build.repository_url()) == 1
    setup.source = setup.source.replace(build.repository_url(), origin.as_uri())
    check = nbformat.v4.new_code_cell("import common, mnist_nn\nprint(Path(mnist_nn.__file__).parent)")
    notebook.cells = [setup, check]
    empty = tmp_path / "content"
    empty.mkdir()
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(empty)}}).execute()
    printed = "".join(out.get("text", "") for cell in notebook.cells for out in cell.outputs)
    assert f"Working in {empty / 'origin' / 'T01_mnist_nn'}" in printed
    assert str(empty / "origin" / "T01_mnist_nn") in printed.splitlines()[-1]
