"""The limits on a front matter's YAML (tasks/parse/yamlsafe.py, steps 1 and 3): nesting depth bounded before
composing (from the text, else exactly from the parser's events), and the walk over the composed graph that
counts aliases, nodes, list and string lengths, NULs and tags, naming the field that passes a limit.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from typing import Any

import yaml
from yaml.events import (
    CollectionEndEvent,
    Event,
    MappingStartEvent,
    NodeEvent,
    ScalarEvent,
    SequenceStartEvent,
)
from yaml.nodes import Node, ScalarNode, SequenceNode

from tasks.limits import ParseLimits
from tasks.parse.yamlloader import (
    _ALL_TAGS,
    _NO_NUL,
    _NUMBER_TAGS,
    _READ_ERRORS,
    _TAGS_BY_KIND,
    MERGE,
    NUL_REASON,
    NULL,
    STR,
    FrontMatterLoader,
    UnsafeYaml,
    _kind,
    _long_number,
    _short,
    _tag_refusal,
    _yaml_error_reason,
)

# libyaml also breaks lines at NEL, LS and PS, and skips a BOM (U+FEFF) at the start of any line: the text bound
# below only knows \n (and \r\n) and sees no indentation or indicator after a BOM
_OTHER_BREAKS = ("\x85", "\u2028", "\u2029", "\ufeff")
_INDENT = re.compile(r"\n([ \t]*)")  # searched in "\n" + text: a literal first character is found fast
# a line that starts with an indicator after which a block collection may start on the same line ("- - a", "? k")
_INDICATOR_LINE = re.compile(r"\n([ \t]*)[-?:&!]")
_COMPACT_TOKEN = re.compile(r"(?:---|[-?:])[ \t]+|[&!][^ \t\r\n]*[ \t]+")
_NUL_ESCAPE = re.compile(r"\\(?:0|x00|u0000|U00000000)")
# -- step 1: depth, before composing -------------------------------------------------------------------------


def _depth_bound(text: str) -> int:
    """An upper bound on the nesting depth, from the text alone.

    Block collections nest by column: a child starts right of its parent, except a sequence written at its
    parent key's indentation, so depth <= 2 x the distinct columns where a block collection can start (every
    line's indentation, and the position after each leading ``-``/``?``/``:`` indicator: ``- - - a``). Flow
    collections need a bracket each, plus at most one implicit single-pair mapping per bracket.
    """
    if ("\r" in text and text.count("\r") != text.count("\r\n")) or any(b in text for b in _OTHER_BREAKS):
        return sys.maxsize  # line breaks (or a BOM) the bound cannot see: let the exact pass decide
    lines = "\n" + text
    columns = set(map(len, _INDENT.findall(lines)))
    for line in _INDICATOR_LINE.finditer(lines):
        column, at = len(line.group(1)), line.end(1)
        while token := _COMPACT_TOKEN.match(lines, at):
            column += token.end() - at
            at = token.end()
            columns.add(column)
    return 2 * len(columns) + 2 * (text.count("[") + text.count("{"))


def _check_depth_exactly(source: bytes, limits: ParseLimits, first_line: int) -> None:
    """Depth from the parser's events: libyaml's parser keeps its own stack, so this pass cannot overflow."""
    where = _Where()
    too_deep = f"nested deeper than {limits.max_depth} levels of lists and mappings"
    try:
        for event in yaml.parse(source, Loader=FrontMatterLoader):
            where.step(event)
            if where.depth > limits.max_depth:
                raise UnsafeYaml(too_deep, where.labels())
    except yaml.YAMLError as exc:
        reason = _yaml_error_reason(exc, source, first_line)
        if "exceeded maximum nesting depth" in reason:  # libyaml's own cap (1000) met while looking ahead
            reason = f"{too_deep} ({reason})"
        raise UnsafeYaml(reason, where.labels()) from None


class _Where:
    """Follows an event stream: how deep it is, and the path (keys and indexes) of the node at hand."""

    def __init__(self) -> None:
        self._path: list[str | int | None] = []  # one label per open collection (None: the root, or a key)
        self._frames: list[list[Any]] = []  # [is_mapping, next index | key label | _KEY]

    @property
    def depth(self) -> int:
        return len(self._path)

    def labels(self, last: str | int | None = None) -> list[str | int]:
        labels = [label for label in self._path if label is not None]
        return labels if last is None else [*labels, last]

    def step(self, event: Event) -> list[str | int] | None:
        """Advance by one event; for a scalar, return its path (a key: its mapping's path)."""
        if isinstance(event, CollectionEndEvent):
            self._frames.pop()
            self._path.pop()
            return None
        if not isinstance(event, NodeEvent):
            return None
        label = self._label(event)
        if isinstance(event, SequenceStartEvent | MappingStartEvent):
            is_mapping = isinstance(event, MappingStartEvent)
            self._frames.append([is_mapping, _KEY if is_mapping else 0])
            self._path.append(label)
            return None
        return self.labels(label)

    def _label(self, event: NodeEvent) -> str | int | None:
        if not self._frames:
            return None
        frame = self._frames[-1]
        if not frame[0]:
            frame[1] += 1
            return int(frame[1] - 1)
        if frame[1] is _KEY:
            frame[1] = event.value if isinstance(event, ScalarEvent) else "?"
            return None
        label, frame[1] = frame[1], _KEY
        return str(label)


_KEY = object()  # a mapping frame waiting for its next key


def _raw_nul(text: str, first_line: int) -> UnsafeYaml:
    """A NUL typed into the file (libyaml refuses it as a character): say where, and in which field."""
    at = text.index("\0")
    line = text.count("\n", 0, at) + first_line
    column = at - (text.rfind("\n", 0, at) + 1) + 1
    reason = f"contains a NUL character (U+0000) at line {line}, column {column}; {_NO_NUL}"
    return UnsafeYaml(reason, _path_of_marker(text))


def _path_of_marker(text: str) -> list[str | int]:
    """The path of the first scalar holding a NUL, found by parsing with the NULs replaced by a marker."""
    marker = next((c for c in map(chr, range(0xE000, 0xF900)) if c not in text), None)  # a private-use char
    if marker is None:
        return []
    where = _Where()
    try:
        for event in yaml.parse(text.replace("\0", marker), Loader=FrontMatterLoader):
            here = where.step(event)
            if isinstance(event, ScalarEvent) and here is not None and marker in event.value:
                return here
    except yaml.YAMLError:
        pass  # the NUL sits outside any value: the line and column will do
    return []


# -- step 3: the graph walk ---------------------------------------------------------------------------------------


def _may_exceed(text: str, limits: ParseLimits) -> bool:
    """Could anything in this text (without aliases) pass a limit? False clears the walk for normal files.

    A string is never longer than the text (escapes and folding only shorten); a list item needs a ``-`` or a
    ``,``; a node needs at least a third of a character (``?`` alone is a mapping with a null key and value);
    a NUL can only come from an escape.
    """
    return (
        len(text) > limits.max_string
        or 3 * len(text) + 3 > limits.max_nodes
        or text.count("-") + text.count(",") + 1 > limits.max_list
        or ("\\" in text and _NUL_ESCAPE.search(text) is not None)
    )


def _check_graph(loader: FrontMatterLoader, root: Node, limits: ParseLimits) -> None:
    """Every limit on the composed graph, aliases expanded: iterative, each shared node measured once."""
    done: dict[int, tuple[int, int]] = {}  # id(node) -> (nodes, depth) with aliases expanded
    on_path: set[int] = set()
    aliases = 0
    stack: list[_Frame] = []
    _enter(root, None, stack, on_path, limits)
    while stack:
        frame = stack[-1]
        step = next(frame.children, None)
        if step is None:
            nodes, depth = frame.nodes + 1, frame.depth + 1
            if depth > limits.max_depth:
                raise UnsafeYaml(
                    f"nested deeper than {limits.max_depth} levels (with aliases expanded)", _labels(stack)
                )
            done[id(frame.node)] = (nodes, depth)
            on_path.discard(id(frame.node))
            stack.pop()
            if stack:
                stack[-1].add(nodes, depth, limits, stack)
            continue
        label, child = step
        if id(child) in on_path:
            raise UnsafeYaml("recursive alias: a value contains itself", _labels(stack, label))
        if id(child) in done:
            aliases += 1
            if aliases > limits.max_aliases:
                raise UnsafeYaml(f"more than {limits.max_aliases} aliases (*references)", _labels(stack, label))
            frame.add(*done[id(child)], limits, stack)
        elif isinstance(child, ScalarNode):
            _check_scalar(loader, child, limits, stack, label)
            done[id(child)] = (1, 0)
            frame.add(1, 0, limits, stack)
        else:
            _enter(child, label, stack, on_path, limits)


class _Frame:
    __slots__ = ("children", "depth", "label", "node", "nodes")

    def __init__(self, node: Node, label: str | int | None) -> None:
        self.node, self.label = node, label
        self.children = _children(node)
        self.nodes = self.depth = 0

    def add(self, nodes: int, depth: int, limits: ParseLimits, stack: list[_Frame]) -> None:
        self.nodes += nodes
        self.depth = max(self.depth, depth)
        if self.nodes >= limits.max_nodes:
            raise UnsafeYaml(f"more than {limits.max_nodes} values (with aliases expanded)", _labels(stack))


def _children(node: Node) -> Iterator[tuple[str | int | None, Node]]:
    if isinstance(node, SequenceNode):
        yield from enumerate(node.value)
        return
    for key, value in node.value:
        yield None, key
        yield (key.value if isinstance(key, ScalarNode) else "?"), value


def _enter(node: Node, label: str | int | None, stack: list[_Frame], on_path: set[int], limits: ParseLimits) -> None:
    _check_tag(node, stack, label)
    if isinstance(node, SequenceNode) and len(node.value) > limits.max_list:
        raise UnsafeYaml(
            f"a list of {len(node.value)} items is longer than the limit of {limits.max_list}", _labels(stack, label)
        )
    stack.append(_Frame(node, label))
    on_path.add(id(node))


def _check_scalar(
    loader: FrontMatterLoader, node: ScalarNode, limits: ParseLimits, stack: list[_Frame], label: str | int | None
) -> None:
    value: str = node.value
    if len(value) > limits.max_string:
        raise UnsafeYaml(
            f"a text of {len(value)} characters is longer than the limit of {limits.max_string}", _labels(stack, label)
        )
    if "\0" in value:
        raise UnsafeYaml(NUL_REASON if label is not None else f"a key {NUL_REASON}", _labels(stack, label))
    _check_tag(node, stack, label)
    if node.tag in _NUMBER_TAGS and len(value) > limits.max_number_chars:
        if label is None:
            return  # a key: kept as its text, never read as a number
        raise UnsafeYaml(_long_number(value, limits.max_number_chars), _labels(stack, label))
    if node.tag not in (STR, NULL, MERGE):  # read it now, so a bad one is refused naming its field
        try:
            FrontMatterLoader.yaml_constructors[node.tag](loader, node)
        except _READ_ERRORS:
            raise UnsafeYaml(f"the value cannot be read as {_short(node.tag)}", _labels(stack, label)) from None


def _check_tag(node: Node, stack: list[_Frame], label: str | int | None) -> None:
    if node.tag in _TAGS_BY_KIND[type(node)]:
        return
    if node.tag in _ALL_TAGS:
        raise UnsafeYaml(f"the tag {_short(node.tag)} does not fit {_kind(node)}", _labels(stack, label))
    raise UnsafeYaml(_tag_refusal(node.tag), _labels(stack, label))


def _labels(stack: list[_Frame], last: str | int | None = None) -> list[str | int]:
    labels = [f.label for f in stack[1:] if f.label is not None]
    return labels if last is None else [*labels, last]
