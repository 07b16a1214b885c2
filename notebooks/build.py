"""Build the lessons' Jupyter notebooks from their sources here and from the lesson scripts themselves.

    python notebooks/build.py           # (re)write every notebook: T01_mnist_nn/mnist_nn.ipynb and .zh-CN.ipynb, ...
    python notebooks/build.py --check   # exit 1 if a committed notebook is not what its source and script give

A source, notebooks/<lesson folder>/<script stem>.py, is a list of cells, each starting with a `# %%` line
(the "percent" format that jupytext, VS Code and PyCharm use):

    # %% [markdown]          English text: every line starts with "# " (or is "#")
    # %% [markdown] zh-CN    the same text in Chinese: it follows its English cell, one for one
    # %%                     Python code, the same in both notebooks

Three lines in a code cell are replaced by code, so that a notebook never holds a second copy of a lesson's code:

    #> setup                                the first code cell: find the repository, or fetch it (Colab)
    #> mnist_nn.py: SimpleNN, train         those definitions, copied from the lesson script as they are
    #> mnist_nn.py: main "# 1. Data" "# 2." main()'s lines from the first marker up to the second, with the
                                            `args.` taken off the flags (the settings cell names them);
                                            `model=model_name` after them writes args.model as model_name,
                                            where main() gives `model` a value of its own

Both notebooks are written without outputs or execution counts, so that a diff shows only real changes.
Run them (Jupyter, VS Code) or open them in Colab to see the outputs. The repository's address, used by the
setup cell and the READMEs' Colab links, is read from one place: [project.urls] Repository in pyproject.toml.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
import textwrap
from pathlib import Path

import nbformat

REPO_ROOT = Path(__file__).resolve().parents[1]
SOURCES = Path(__file__).resolve().parent
LANGUAGES = ("en", "zh-CN")


def repository_url() -> str:
    """The repository's address, from pyproject.toml's [project.urls] Repository line."""
    text = (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    match = re.search(r'^\[project\.urls\][^\[]*?^Repository\s*=\s*"([^"]+)"', text, re.M | re.S)
    if not match:
        raise SystemExit("error: pyproject.toml has no Repository line under [project.urls]")
    return match.group(1).rstrip("/")


def colab_url(notebook: Path) -> str:
    """The "Open in Colab" address of a notebook of this repository (its path relative to the repository)."""
    github = repository_url().removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{github}/blob/main/{notebook.as_posix()}"


def setup_cell(lesson: str, script: str) -> str:
    """The first code cell: in a clone it only finds the lesson folder; elsewhere (Colab) it fetches the repository."""
    return textwrap.dedent(f'''\
        # Find the lesson folder, work there, and make its script and common/ importable. Opened
        # outside a clone of the repository (in Colab, say), this cell first clones it and installs
        # what is missing; in a clone it changes nothing else.
        from __future__ import annotations  # type hints such as list[float | None] on Python 3.9 too

        import importlib.util
        import os
        import subprocess
        import sys
        from pathlib import Path

        REPOSITORY = "{repository_url()}"
        LESSON = "{lesson}"
        here = Path.cwd().resolve()
        root = next((folder for folder in [here, *here.parents] if (folder / LESSON / "{script}").is_file()), None)
        if root is None:
            root = here / Path(REPOSITORY).name
            if not root.exists():
                subprocess.run(["git", "clone", "--depth", "1", REPOSITORY, str(root)], check=True)
            needed = ("torch", "torchvision", "matplotlib")
            missing = [name for name in needed if importlib.util.find_spec(name) is None]
            if missing:
                subprocess.run([sys.executable, "-m", "pip", "install", *missing], check=True)
        os.chdir(root / LESSON)
        sys.path[:0] = [str(root / LESSON), str(root)]
        print(f"Working in {{Path.cwd()}}")

        # Figures under the cells that draw them (needed with matplotlib older than 3.9 and today's IPython).
        %matplotlib inline''')


def definitions(script: Path, names: list[str]) -> str:
    """The source of the named top-level classes, functions and assignments, with the comments just above them."""
    text = script.read_text(encoding="utf-8")
    lines = text.splitlines()
    found = {}
    for node in ast.parse(text).body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            defined = [node.name]
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            defined = [name.id for target in targets for name in ast.walk(target) if isinstance(name, ast.Name)]
        else:
            continue
        start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])]) - 1
        while start > 0 and lines[start - 1].lstrip().startswith("#"):
            start -= 1
        for name in defined:
            found[name] = "\n".join(lines[start:node.end_lineno])
    missing = [name for name in names if name not in found]
    if missing:
        raise SystemExit(f"error: {script.relative_to(REPO_ROOT)} defines no {', '.join(missing)}")
    return "\n\n\n".join(dict.fromkeys(found[name] for name in names))


def main_lines(script: Path, first: str, last: str, renamed: dict[str, str]) -> str:
    """main()'s lines from the one containing `first` up to (not including) the one containing `last`,
    each `args.x` written as `x` (or as renamed[x])."""
    text = script.read_text(encoding="utf-8")
    main = next(node for node in ast.parse(text).body if isinstance(node, ast.FunctionDef) and node.name == "main")
    body = text.splitlines()[main.lineno:main.end_lineno]
    starts = [i for i, line in enumerate(body) if first in line]
    if not starts:
        raise SystemExit(f"error: main() in {script.relative_to(REPO_ROOT)} has no line with {first!r}")
    ends = [i for i, line in enumerate(body) if last in line and i > starts[0]]
    chosen = textwrap.dedent("\n".join(body[starts[0]:ends[0] if ends else None])).rstrip()
    return re.sub(r"\bargs\.(\w+)", lambda flag: renamed.get(flag.group(1), flag.group(1)), chosen)


def expand(code: str, lesson: str, script: str) -> str:
    """Replace the `#> ...` lines of a code cell by the code they name."""
    out = []
    for line in code.splitlines():
        if line.strip() == "#> setup":
            out.append(setup_cell(lesson, script))
        elif line.startswith("#> "):
            match = re.fullmatch(r'#> (\S+\.py): main "([^"]+)" "([^"]+)"((?: \w+=\w+)*)', line.strip())
            file_name, _, names = line[3:].partition(":")
            if match:
                renamed = dict(pair.split("=") for pair in match.group(4).split())
                out.append(main_lines(REPO_ROOT / lesson / match.group(1), match.group(2), match.group(3), renamed))
            else:
                out.append(definitions(REPO_ROOT / lesson / file_name.strip(), [n.strip() for n in names.split(",")]))
        else:
            out.append(line)
    return "\n".join(out).strip("\n")


def read_cells(source: Path) -> list[tuple[str, str, str]]:
    """(kind, language, text) for each cell of a percent-format source."""
    cells = []
    for chunk in re.split(r"^# %%", source.read_text(encoding="utf-8"), flags=re.M)[1:]:
        header, _, body = chunk.partition("\n")
        header = header.strip()
        if header.startswith("[markdown]"):
            language = header.removeprefix("[markdown]").strip() or "en"
            if language not in LANGUAGES:
                raise SystemExit(f"error: {source.name}: unknown language {language!r} in '# %% {header}'")
            text = "\n".join(re.sub(r"^# ?", "", line) for line in body.strip("\n").splitlines())
            cells.append(("markdown", language, text))
        else:
            cells.append(("code", "", body.strip("\n")))
    return cells


def build(source: Path) -> dict[Path, str]:
    """The notebooks (path relative to the repository -> JSON text) that one source gives, one per language."""
    lesson, script = source.parent.name, source.stem + ".py"
    cells = read_cells(source)
    english = [i for i, (kind, language, _) in enumerate(cells) if language == "en"]
    chinese = [i for i, (kind, language, _) in enumerate(cells) if language == "zh-CN"]
    if [i + 1 for i in english] != chinese:
        raise SystemExit(f"error: {source.relative_to(REPO_ROOT)}: every English markdown cell must be followed "
                         "by its Chinese one (# %% [markdown] zh-CN), and no Chinese cell may stand alone")
    notebooks = {}
    for language in LANGUAGES:
        nb = nbformat.v4.new_notebook()
        nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                       "language_info": {"name": "python"}}
        for kind, cell_language, text in cells:
            if kind == "markdown" and cell_language == language:
                nb.cells.append(nbformat.v4.new_markdown_cell(text))
            elif kind == "code":
                nb.cells.append(nbformat.v4.new_code_cell(expand(text, lesson, script)))
        for number, cell in enumerate(nb.cells, 1):
            cell.id = f"cell-{number}"  # fixed ids: a rebuild changes nothing that did not change
        suffix = ".ipynb" if language == "en" else f".{language}.ipynb"
        notebooks[Path(lesson) / (source.stem + suffix)] = nbformat.writes(nb) + "\n"
    return notebooks


def all_notebooks() -> dict[Path, str]:
    """Every notebook of the repository, built from every source."""
    built = {}
    for source in sorted(SOURCES.glob("T*/*.py")):
        built |= build(source)
    return built


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the lessons' notebooks from notebooks/ and the scripts.")
    parser.add_argument("--check", action="store_true", help="only check that the committed notebooks are current")
    args = parser.parse_args(argv)
    stale = []
    for path, text in all_notebooks().items():
        target = REPO_ROOT / path
        current = target.read_text(encoding="utf-8") if target.exists() else None
        if current != text:
            stale.append(path)
            if not args.check:
                target.write_text(text, encoding="utf-8", newline="\n")
    verb = "out of date (run: python notebooks/build.py)" if args.check else "written"
    for path in stale:
        print(f"{path.as_posix()}: {verb}")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
