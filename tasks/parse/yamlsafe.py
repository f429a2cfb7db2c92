"""Bounded safe YAML loading: front-matter text -> plain Python data, refusing hostile input cheaply.

Example::

    load_front_matter("title: Hi\\nquality: 37\\n", ParseLimits()).data  ->  {"title": "Hi", "quality": 37}

libyaml (``yaml.CSafeLoader``) does the reading; nothing here can build a Python object from a tag
(``!!python/...`` is refused by name, never executed). First, when the text cannot pass any limit (see
``_may_exceed``), ``tasks.parse.yamlfast.fast_tree`` reads the common shapes (block mappings and lists of one-line
values) in Python, exactly as the steps below would build them, and gives up on anything else. Otherwise, in
order, each step cheap on a normal file and exact only when the cheap one is inconclusive:

1. nesting depth (the item mapping is level 1), bounded *before* composing: libyaml's composer recurses in C
   once per level, so a deep ``[[[[...`` could overflow the C stack. A conservative bound from the text
   (``_depth_bound``) clears normal files; otherwise an exact pass over the parser's events (iterative) decides.
2. compose the node graph (aliases are shared nodes there: an alias bomb is still small).
3. walk the graph (``_check_graph``) when the text could hold something over a limit: aliases counted and
   expanded (nodes, depth), recursive aliases, list length, string length, NUL characters, tags.
4. construct: a lean tree builder for the usual tags; the full ``SafeConstructor`` for the rest.

The loader, its tags and refusals are in ``yamlloader``; steps 1 and 3 (the limits) in ``yamllimits``; step 4 and
the fast path's scalars in ``yamlbuild``; this module runs them in order.

Choices that differ from a bare ``yaml.safe_load``, and why:

- plain timestamps stay strings (``publishedDateTime: 2023-02-30T10:00:00Z`` reaches pydantic, which refuses
  it naming the field); an explicit ``!!timestamp`` is still read.
- mapping keys are names: a scalar key is kept as its text (``on:`` is the key ``"on"``, not ``True``;
  ``1:`` is ``"1"``), because field names are strings (pydantic and JSON need ``str`` keys).
- a plain ``=`` or ``<<`` *value* is the string it spells (the safe loader crashes on them: it has no
  constructor for the YAML 1.1 value and merge tags); ``<<`` as a key still merges.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from yaml.nodes import MappingNode

from tasks.limits import ParseLimits
from tasks.parse.yamlbuild import (
    _FAST_NUMBER_MAX,
    _build_tree,
    _construct,
    _plain_value,
    _SlowPath,
)
from tasks.parse.yamlfast import fast_tree
from tasks.parse.yamllimits import (
    _check_depth_exactly,
    _check_graph,
    _depth_bound,
    _may_exceed,
    _raw_nul,
)
from tasks.parse.yamlloader import (
    FrontMatterLoader,
    UnsafeYaml,
    _compose,
    _kind,
)


@dataclass(frozen=True, slots=True)
class Loaded:
    """A front matter as data. ``has_binary``: a ``!!binary`` value is in it (bytes, which pydantic may decode
    into a text field: the caller checks those for NUL)."""

    data: dict[str, Any]
    has_binary: bool


_FAST_MAX_DEPTH = 200  # the tree builder recurses; deeper limits use the (iterative) full constructor
def load_front_matter(text: str, limits: ParseLimits, *, raw: bytes | None = None, first_line: int = 1) -> Loaded:
    """The mapping a front matter holds, or ``UnsafeYaml``. ``raw``: ``text`` as UTF-8, when the caller has it;
    ``first_line``: the file's line number of the text's first line (for messages)."""
    if "\0" in text:
        raise _raw_nul(text, first_line)
    aliases = "&" in text and "*" in text  # an alias needs an anchor: without both, the graph is a tree
    may_exceed = aliases or _may_exceed(text, limits)
    if not may_exceed and limits.max_depth <= _FAST_MAX_DEPTH and limits.max_number_chars >= _FAST_NUMBER_MAX:
        # No limit but the depth can be passed (see _may_exceed), and fast_tree gives up past max_depth: the
        # common shapes are read in Python, ~2x faster than libyaml's compose + build; any other shape (and a
        # too deep one) goes on to libyaml.
        tree = fast_tree(text, _plain_value, limits.max_depth)
        if tree is not None:
            return Loaded(tree, has_binary=False)
    source = raw if raw is not None else text.encode("utf-8")
    if _depth_bound(text) > limits.max_depth:
        _check_depth_exactly(source, limits, first_line)
    return _load_with_libyaml(text, source, limits, first_line, aliases, may_exceed)


def _load_with_libyaml(text: str, source: bytes, limits: ParseLimits, first_line: int, aliases: bool,
                       walked: bool) -> Loaded:
    """Steps 2 to 4 (compose, walk, construct). ``walked``: the graph walk must come before building."""
    loader = FrontMatterLoader(source)
    loader.max_number_chars = limits.max_number_chars
    try:
        node = _compose(loader, source, first_line)
        if node is None:
            raise UnsafeYaml("the front matter is empty: it must be a mapping of fields (key: value)")
        if not isinstance(node, MappingNode):
            raise UnsafeYaml(f"the front matter must be a mapping of fields (key: value), found {_kind(node)}")
        if walked:
            _check_graph(loader, node, limits)
        if not aliases and limits.max_depth <= _FAST_MAX_DEPTH:
            try:
                return Loaded(_build_tree(loader, node), has_binary=False)
            except _SlowPath:
                pass
        if not walked:
            _check_graph(loader, node, limits)
        return Loaded(_construct(loader, node, source, first_line), has_binary=loader.binary_seen)
    finally:
        loader.dispose()
