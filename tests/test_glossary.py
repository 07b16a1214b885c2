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


def prose(text: str) -> str:
    """The text without code blocks, inline code and link targets (flags such as --momentum are code)."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    return re.sub(r"\]\([^)]*\)", "]", text)


def test_the_glossary_names_each_preferred_word_and_the_rejected_ones():
    text = GLOSSARY.read_text(encoding="utf-8")
    for rejected, preferred in REJECTED.items():
        assert f"| {preferred} |" in text or preferred == "batch", preferred  # batch stays English, said in the intro
        assert rejected in text  # the intro names the word not to use


@pytest.mark.parametrize("path", [p for p in CHINESE_FILES if p != GLOSSARY], ids=lambda p: str(p.relative_to(REPO)))
def test_chinese_prose_uses_the_glossarys_words_and_chinese_quotes(path):
    text = prose(path.read_text(encoding="utf-8"))
    found = [f"{word} (the glossary says {REJECTED[word]})" for word in REJECTED if word in text]
    assert not found, found
    ascii_quoted = re.findall(r'"[^"\n]*[\u4e00-\u9fff][^"\n]*"', text)  # "中文" where “中文” belongs
    assert not ascii_quoted, ascii_quoted


def test_the_english_readme_links_the_glossary():
    assert "(docs/glossary.zh-CN.md)" in (REPO / "README.md").read_text(encoding="utf-8")
