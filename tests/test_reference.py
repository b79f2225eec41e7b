"""docs/reference.md stays complete, and the public surface documents itself.

Every name in ``clos_web.__all__`` has an entry in the reference: a heading (outside fenced code
blocks) holding a code span that starts with the name, as in ``### `start(app, port=0)` `` or
``### `BadRequest`, `NotFound` ``. Every public class and function, generic functions included,
has a docstring of its own.
"""

from __future__ import annotations

import inspect
import pathlib
import re

import pytest

import clos_web
from clos_web.clos import generic, is_generic
from clos_web.http import close_stream, shutdown_stream

REFERENCE = pathlib.Path(__file__).resolve().parent.parent / "docs" / "reference.md"

_FENCE = re.compile(r"^```.*?^```[ \t]*$", re.S | re.M)
_HEADING = re.compile(r"^#{1,6}[ \t]+(.+)$", re.M)
_CODE_SPAN = re.compile(r"`([^`]+)`")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# The generic functions whose protocols the reference describes (two live in clos_web.loop).
PROTOCOLS = {
    "process_ready": clos_web.process_ready, "buffer_input": clos_web.buffer_input,
    "parse": clos_web.parse, "parse_params": clos_web.parse_params,
    "handle_request": clos_web.handle_request, "write": clos_web.write,
    "error_response": clos_web.error_response, "parse_param": clos_web.parse_param,
    "publish": clos_web.publish, "subscribe": clos_web.subscribe,
    "unsubscribe": clos_web.unsubscribe, "encode_event": clos_web.encode_event,
    "close_stream": close_stream, "shutdown_stream": shutdown_stream,
}


def documented_names(markdown: str) -> set:
    """The names that open a code span in a heading outside fenced code blocks."""
    names = set()
    for heading in _HEADING.findall(_FENCE.sub("", markdown)):
        for span in _CODE_SPAN.findall(heading):
            m = _NAME.match(span)
            if m:
                names.add(m.group(0))
    return names


def test_the_entry_finder_reads_headings_only_and_skips_code_blocks():
    text = ("# Reference\n## `start(app, port=0)` and `Limits`\ntext `serve` here\n"
            "```python\n# `hidden`\n```\n### `BadRequest`, `NotFound`: errors\n")
    assert documented_names(text) == {"start", "Limits", "BadRequest", "NotFound"}


def public_names() -> list:
    return list(clos_web.__all__)


def test_all_lists_each_name_once_and_every_name_exists():
    names = public_names()
    assert len(names) == len(set(names))
    assert [n for n in names if not hasattr(clos_web, n)] == []


def test_every_public_name_has_an_entry_in_the_reference():
    documented = documented_names(REFERENCE.read_text(encoding="utf-8"))
    missing = [name for name in public_names() if name not in documented]
    assert missing == [], f"docs/reference.md has no entry for {missing}"


def test_every_protocol_has_an_entry_in_the_reference():
    documented = documented_names(REFERENCE.read_text(encoding="utf-8"))
    assert sorted(set(PROTOCOLS) - documented) == []


def _own_docstring(obj) -> str | None:
    """The docstring ``obj`` itself declares: a class's is not inherited from its bases, and a
    generic function's is its declaration's."""
    if inspect.isclass(obj):
        return obj.__dict__.get("__doc__")
    return getattr(obj, "__doc__", None)


def _is_class_or_function(obj) -> bool:
    return inspect.isclass(obj) or inspect.isfunction(obj)


@pytest.mark.parametrize("name", [n for n in public_names()
                                  if _is_class_or_function(getattr(clos_web, n, None))])
def test_every_public_class_and_function_has_a_docstring(name):
    doc = _own_docstring(getattr(clos_web, name))
    assert doc and doc.strip(), f"clos_web.{name} has no docstring"


@pytest.mark.parametrize("name", sorted(PROTOCOLS))
def test_every_protocol_generic_function_has_a_docstring(name):
    fn = PROTOCOLS[name]
    assert is_generic(fn)
    doc = _own_docstring(fn)
    assert doc and doc.strip(), f"the generic function {name} has no docstring"


def test_a_generic_function_without_a_docstring_is_caught():
    @generic
    def undocumented(x):
        pass

    assert not _own_docstring(undocumented)
