"""The glossary is the one vocabulary of the Chinese READMEs and notes: no rejected alternative in their prose."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GLOSSARY = REPO / "docs" / "glossary.zh-CN.md"
# The rejected word -> the glossary's word for the same thing.
REJECTED = {"批次": "batch", "批归一化": "批标准化", "数据流程": "数据管线", "worker 进程": "工作进程",
            "momentum": "动量"}
CHINESE_FILES = sorted(p for p in REPO.glob("**/*.zh-CN.md")
                       if not {".venv", "runs", "data", "node_modules"} & set(p.relative_to(REPO).parts))


# Chinese punctuation marks that never follow one another: "，：" is a sentence broken in an edit.
CHINESE_PUNCTUATION = "，：。；、"


def rejected_in(text: str) -> list[str]:
    """The rejected words in `text`, in any case and with or without the space ("worker进程", "Momentum")."""
    return [word for word in REJECTED
            if re.search(re.escape(word).replace(r"\ ", r"\s*"), text, flags=re.IGNORECASE)]


def glossary_terms() -> list[str]:
    """The Chinese terms of the glossary's first column ("前向传播 / 反向传播" is two, "epoch（轮）" two)."""
    terms = []
    for line in GLOSSARY.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0] not in ("中文", "---"):
            terms += [t.strip() for t in re.split(r"[/（）()]", cells[0]) if t.strip()]
    return terms


def prose(text: str) -> str:
    """The text without code blocks, link targets and inline code (flags such as --momentum are code), each
    piece of inline code left as one mark, so that the punctuation around it stays apart."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r"`[^`\n]*`", "▯", text)
    return re.sub(r"\]\([^)]*\)", "]", text)


def test_the_glossary_names_each_preferred_word_and_the_rejected_ones():
    text = GLOSSARY.read_text(encoding="utf-8")
    for rejected, preferred in REJECTED.items():
        assert f"| {preferred} |" in text or preferred == "batch", preferred  # batch stays English, said in the intro
        assert rejected in text  # the intro names the word not to use


@pytest.mark.parametrize("path", [p for p in CHINESE_FILES if p != GLOSSARY], ids=lambda p: str(p.relative_to(REPO)))
def test_chinese_prose_uses_the_glossarys_words_and_chinese_quotes(path):
    text = prose(path.read_text(encoding="utf-8"))
    found = [f"{word} (the glossary says {REJECTED[word]})" for word in rejected_in(text)]
    assert not found, found
    ascii_quoted = re.findall(r'"[^"\n]*[\u4e00-\u9fff][^"\n]*"', text)  # "中文" where “中文” belongs
    assert not ascii_quoted, ascii_quoted
    broken = re.findall(f".{{0,12}}[{CHINESE_PUNCTUATION}]{{2}}.{{0,12}}", text)
    assert not broken, broken


@pytest.mark.parametrize("text, expected", [
    ("每个批次的损失", ["批次"]), ("先做批归一化", ["批归一化"]), ("数据流程很慢", ["数据流程"]),
    ("两个 worker 进程", ["worker 进程"]), ("两个worker进程", ["worker 进程"]), ("加上 Momentum", ["momentum"]),
    ("用 batch、批标准化、数据管线、工作进程和动量", []),
])
def test_each_rejected_word_is_found_in_any_spelling(text, expected):
    assert rejected_in(text) == expected


def test_a_broken_sentence_and_ascii_quotes_are_found():
    assert re.findall(f"[{CHINESE_PUNCTUATION}]{{2}}", prose("见 `--lessons t02-mlp,t02-cnn`，：2 核")) == ["，："]
    assert re.findall(r'"[^"\n]*[\u4e00-\u9fff][^"\n]*"', 'the "检查点" file') == ['"检查点"']


def test_every_glossary_term_is_used_in_the_chinese_text():
    """A glossary whose terms the text never uses (前向传播, 丢弃, 状态字典 once) is no vocabulary."""
    text = "".join(prose(p.read_text(encoding="utf-8")) for p in CHINESE_FILES if p != GLOSSARY)
    terms = glossary_terms()
    assert {"前向传播", "丢弃", "状态字典", "批标准化", "动量", "数据管线", "工作进程"} <= set(terms)
    unused = [term for term in terms if term not in text]
    assert not unused, unused


def test_the_english_readme_links_the_glossary():
    assert "(docs/glossary.zh-CN.md)" in (REPO / "README.md").read_text(encoding="utf-8")
