"""Every ```python block in docs/*.md runs: the blocks of one page in order, in one namespace.

A page that starts a server stops it itself; the runner checks that no server it started is
left running (a page is a program, not a fixture).
"""

from __future__ import annotations

import pathlib
import re
import threading

import pytest

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"
_BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(line number, code)`` of every ```python fenced block of a Markdown page."""
    return [(text.count("\n", 0, m.start()) + 2, m.group(1)) for m in _BLOCK.finditer(text)]


PAGES = sorted(DOCS.glob("*.md")) + [DOCS.parent / "README.md"]


def test_the_block_finder_finds_fenced_python_only():
    text = "# t\n```python\na = 1\n```\n```\nnot = python\n```\n```python\nb = a\n```\n"
    assert python_blocks(text) == [(3, "a = 1\n"), (9, "b = a\n")]


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_doc_page_runs(page, tmp_path, monkeypatch):
    blocks = python_blocks(page.read_text(encoding="utf-8"))
    if not blocks:
        pytest.skip("no python blocks")
    monkeypatch.chdir(tmp_path)
    threads_before = {t for t in threading.enumerate() if t.name.startswith("clos_web:")}
    namespace = {"__name__": f"docs_{page.stem}"}
    for line, code in blocks:
        # pad with newlines so tracebacks point at the page's own line numbers
        compiled = compile("\n" * (line - 1) + code, str(page), "exec")
        exec(compiled, namespace)
    left = {t for t in threading.enumerate() if t.name.startswith("clos_web:")} - threads_before
    for t in left:
        t.join(5)
    assert not [t for t in left if t.is_alive()], f"{page.name} left a server running"
