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

Choices that differ from a bare ``yaml.safe_load``, and why:

- plain timestamps stay strings (``publishedDateTime: 2023-02-30T10:00:00Z`` reaches pydantic, which refuses
  it naming the field); an explicit ``!!timestamp`` is still read.
- mapping keys are names: a scalar key is kept as its text (``on:`` is the key ``"on"``, not ``True``;
  ``1:`` is ``"1"``), because field names are strings (pydantic and JSON need ``str`` keys).
- a plain ``=`` or ``<<`` *value* is the string it spells (the safe loader crashes on them: it has no
  constructor for the YAML 1.1 value and merge tags); ``<<`` as a key still merges.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.events import (
    CollectionEndEvent,
    Event,
    MappingStartEvent,
    NodeEvent,
    ScalarEvent,
    SequenceStartEvent,
)
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.reader import ReaderError

from tasks.limits import ParseLimits
from tasks.parse.yamlfast import NotHere, fast_tree, plain_node

_T = "tag:yaml.org,2002:"
STR, INT, FLOAT, BOOL, NULL = _T + "str", _T + "int", _T + "float", _T + "bool", _T + "null"
TIMESTAMP, BINARY, MERGE, VALUE = _T + "timestamp", _T + "binary", _T + "merge", _T + "value"
SEQ, MAP, SET, OMAP, PAIRS = _T + "seq", _T + "map", _T + "set", _T + "omap", _T + "pairs"

_SCALAR_TAGS = frozenset({STR, INT, FLOAT, BOOL, NULL, TIMESTAMP, BINARY, MERGE})
_TAGS_BY_KIND: dict[type[Node], frozenset[str]] = {
    ScalarNode: _SCALAR_TAGS,
    SequenceNode: frozenset({SEQ, OMAP, PAIRS}),
    MappingNode: frozenset({MAP, SET}),
}
_ALL_TAGS = frozenset().union(*_TAGS_BY_KIND.values())
_FAST_SCALARS = {
    NULL: SafeConstructor.construct_yaml_null,
    BOOL: SafeConstructor.construct_yaml_bool,
    INT: SafeConstructor.construct_yaml_int,
    FLOAT: SafeConstructor.construct_yaml_float,
}
_FAST_KEY_TAGS = frozenset({STR, INT, FLOAT, BOOL, NULL})
_FAST_MAX_DEPTH = 200  # the tree builder recurses; deeper limits use the (iterative) full constructor
# Numbers cost more than their length: YAML 1.1 base 60 (1:0:0:...) is quadratic in Python and skips its 4,300-digit
# guard, and a 0x... of 99,000 digits is a valid int no JSON writer takes. The fast path reads numbers up to this
# length (so it runs only when the limit allows at least as much); longer ones go the libyaml way, which refuses
# those past ``max_number_chars``.
_FAST_NUMBER_MAX = 32
_NUMBER_TAGS = frozenset({INT, FLOAT})
_READ_ERRORS = (ValueError, LookupError, TypeError, AttributeError, OverflowError, ConstructorError)

# libyaml also breaks lines at NEL, LS and PS, and skips a BOM (U+FEFF) at the start of any line: the text bound
# below only knows \n (and \r\n) and sees no indentation or indicator after a BOM
_OTHER_BREAKS = ("\x85", "\u2028", "\u2029", "\ufeff")
_INDENT = re.compile(r"\n([ \t]*)")  # searched in "\n" + text: a literal first character is found fast
# a line that starts with an indicator after which a block collection may start on the same line ("- - a", "? k")
_INDICATOR_LINE = re.compile(r"\n([ \t]*)[-?:&!]")
_COMPACT_TOKEN = re.compile(r"(?:---|[-?:])[ \t]+|[&!][^ \t\r\n]*[ \t]+")
_NUL_ESCAPE = re.compile(r"\\(?:0|x00|u0000|U00000000)")
_PATH_PART_MAX = 60
_NO_NUL = "text cannot hold NUL (PostgreSQL refuses it)"
NUL_REASON = f"contains a NUL character (U+0000); {_NO_NUL}"


class UnsafeYaml(ValueError):
    """The YAML cannot become data: ``reason`` (a sentence) and ``field`` (``related[3].webUrl`` or None)."""

    def __init__(self, reason: str, path: Iterable[str | int] = (), node: Node | None = None) -> None:
        self.reason = reason
        self.field = field_path(path) or None
        self.node = node  # where the tree builder failed, until its path is known
        super().__init__(f"{self.field}: {reason}" if self.field else reason)


@dataclass(frozen=True, slots=True)
class Loaded:
    """A front matter as data. ``has_binary``: a ``!!binary`` value is in it (bytes, which pydantic may decode
    into a text field: the caller checks those for NUL)."""

    data: dict[str, Any]
    has_binary: bool


class FrontMatterLoader(yaml.CSafeLoader):
    """``CSafeLoader`` without implicit timestamps or value tags, with mapping keys kept as text."""

    binary_seen = False
    max_number_chars = ParseLimits().max_number_chars  # set from the limits in force before building

    def resolve(self, kind: type[Node], value: Any, implicit: tuple[bool, bool]) -> str:
        # Called from C for every node. The cache spares the regex matches for the plain scalars that recur
        # in every drop (keys, "article", "news", true...): with no path resolvers registered, a plain
        # scalar's tag depends on its text alone; anything else resolves to the default tag of its kind.
        if kind is ScalarNode:
            if not implicit[0]:
                return STR
            tag = _PLAIN_TAGS.get(value)
            if tag is None:
                tag = str(super().resolve(kind, value, implicit))  # type: ignore[no-untyped-call]
                if len(value) <= 40:
                    if len(_PLAIN_TAGS) >= 8192:
                        _PLAIN_TAGS.clear()
                    _PLAIN_TAGS[value] = tag
            return tag
        return SEQ if kind is SequenceNode else MAP

    def construct_yaml_map(self, node: MappingNode) -> Iterator[dict[Any, Any]]:  # type: ignore[override]
        data: dict[str, Any] = {}
        yield data
        if not isinstance(node, MappingNode):
            raise ConstructorError(None, None, f"expected a mapping node, but found {node.id}", node.start_mark)
        self.flatten_mapping(node)
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                raise ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    "found a key that is a list or a mapping: keys must be single values",
                    key_node.start_mark,
                )
            data[key_node.value] = self.construct_object(value_node, deep=False)

    def construct_yaml_binary(self, node: ScalarNode) -> bytes:
        self.binary_seen = True
        return super().construct_yaml_binary(node)

    def construct_merge_value(self, node: ScalarNode) -> str:
        """A plain ``<<`` that is not a mapping key: the text it spells."""
        return self.construct_scalar(node)


_PLAIN_TAGS: dict[str, str] = {}  # plain scalar -> resolved tag (bounded: cleared when full)
FrontMatterLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (TIMESTAMP, VALUE)]
    for first, resolvers in yaml.CSafeLoader.yaml_implicit_resolvers.items()
}
FrontMatterLoader.add_constructor(MAP, FrontMatterLoader.construct_yaml_map)
FrontMatterLoader.add_constructor(BINARY, FrontMatterLoader.construct_yaml_binary)
FrontMatterLoader.add_constructor(MERGE, FrontMatterLoader.construct_merge_value)


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


_SCALARS = FrontMatterLoader("")  # resolve() and the scalar constructors read only their arguments


_PLAIN_VALUES: dict[str, Any] = {}  # plain scalar -> its value (immutable: str, int, float, bool, None); bounded


def _plain_value(text: str) -> Any:
    """A plain scalar's value for ``fast_tree``: the tag ``FrontMatterLoader.resolve`` gives it and the
    constructor libyaml's path would call; ``NotHere`` for anything ``_build`` would not read itself."""
    value = _PLAIN_VALUES.get(text, _PLAIN_VALUES)
    if value is not _PLAIN_VALUES:
        return value
    tag = _SCALARS.resolve(ScalarNode, text, (True, False))
    if tag == STR:
        value = text
    else:
        make = _FAST_SCALARS.get(tag)
        if make is None or (tag in _NUMBER_TAGS and len(text) > _FAST_NUMBER_MAX):
            raise NotHere
        try:
            value = make(_SCALARS, plain_node(tag, text))
        except _READ_ERRORS:
            raise NotHere from None  # libyaml's path words the refusal, naming the field
    if len(text) <= 40:
        if len(_PLAIN_VALUES) >= 8192:
            _PLAIN_VALUES.clear()
        _PLAIN_VALUES[text] = value
    return value


def field_path(parts: Iterable[str | int]) -> str:
    """``("related", 3, "webUrl")`` -> ``related[3].webUrl`` (long keys shortened)."""
    out: list[str] = []
    for part in parts:
        if isinstance(part, int):
            out.append(f"[{part}]")
        else:
            name = part if len(part) <= _PATH_PART_MAX else part[: _PATH_PART_MAX - 1] + "…"
            out.append(f".{name}" if out else name)
    return "".join(out)


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


# -- step 2: compose ---------------------------------------------------------------------------------------------


def _compose(loader: FrontMatterLoader, source: bytes, first_line: int) -> Node | None:
    try:
        return loader.get_single_node()
    except yaml.YAMLError as exc:
        raise UnsafeYaml(_yaml_error_reason(exc, source, first_line)) from None


def _yaml_error_reason(exc: yaml.YAMLError, source: bytes, first_line: int) -> str:
    """libyaml's words with the file's line and column. Its problems quote no input, so nothing leaks."""
    if isinstance(exc, ReaderError):
        char = exc.character
        code = char if isinstance(char, int) else ord(char)
        line = source.count(b"\n", 0, exc.position) + first_line
        return f"character U+{code:04X} at line {line} is not allowed in YAML ({exc.reason})"
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + first_line}, column {mark.column + 1}" if mark is not None else ""
        problem = exc.problem or "invalid YAML"
        context = f" ({exc.context})" if exc.context and exc.problem else ""
        if problem.startswith("could not determine a constructor for the tag"):
            return f"a tag is refused{where}: only the standard YAML tags are read, nothing is run ({problem})"
        kind = "syntax error" if isinstance(exc, yaml.scanner.ScannerError | yaml.parser.ParserError) else "error"
        return f"YAML {kind}{where}: {problem}{context}"
    return f"invalid YAML ({type(exc).__name__})"


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


# -- step 4: construct ---------------------------------------------------------------------------------------------


class _SlowPath(Exception):
    """The tree builder met something only the full constructor reads (merge keys, sets, binary...)."""


def _build_tree(loader: FrontMatterLoader, root: Node) -> dict[str, Any]:
    """The common case, about 3x faster than ``SafeConstructor``: a tree (no aliases) of the usual tags."""
    try:
        data: dict[str, Any] = _build(loader, root)
    except UnsafeYaml as exc:
        raise UnsafeYaml(exc.reason, _path_to(root, exc.node) if exc.node is not None else ()) from None
    return data


def _build(loader: FrontMatterLoader, node: Node) -> Any:
    cls = node.__class__
    tag = node.tag
    if cls is ScalarNode:
        if tag == STR:
            return node.value
        make = _FAST_SCALARS.get(tag)
        if make is None:
            raise _SlowPath
        if tag in _NUMBER_TAGS and len(node.value) > loader.max_number_chars:
            raise UnsafeYaml(_long_number(node.value, loader.max_number_chars), node=node)
        try:
            return make(loader, node)  # type: ignore[arg-type]  # cls is ScalarNode
        except _READ_ERRORS:
            raise UnsafeYaml(f"the value cannot be read as {_short(tag)}", node=node) from None
    if cls is SequenceNode:
        if tag != SEQ:
            raise _SlowPath
        return [_build(loader, child) for child in node.value]
    if tag != MAP:
        raise _SlowPath
    out = {}
    for key, value in node.value:
        if key.__class__ is not ScalarNode or key.tag not in _FAST_KEY_TAGS:
            raise _SlowPath
        out[key.value] = _build(loader, value)
    return out


def _path_to(root: Node, target: Node) -> list[str | int]:
    """The labels leading to ``target`` in a tree (an error path only)."""
    stack: list[tuple[Node, list[str | int]]] = [(root, [])]
    while stack:
        node, path = stack.pop()
        if node is target:
            return path
        if isinstance(node, SequenceNode | MappingNode):
            stack.extend((child, path if label is None else [*path, label]) for label, child in _children(node))
    return []


def _construct(loader: FrontMatterLoader, node: Node, source: bytes, first_line: int) -> dict[str, Any]:
    try:
        data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise UnsafeYaml(_yaml_error_reason(exc, source, first_line)) from None
    except _READ_ERRORS as exc:  # the graph walk read every scalar already: this is a structural oddity
        raise UnsafeYaml(f"a value cannot be read ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise UnsafeYaml(f"the front matter must be a mapping of fields (key: value), found a {type(data).__name__}")
    return data


def _long_number(text: str, limit: int) -> str:
    return f"a number of {len(text)} characters is longer than the limit of {limit} (parse.max_number_chars)"


def _tag_refusal(tag: str) -> str:
    shown = _short(tag)
    if len(shown) > 80:
        shown = shown[:79] + "…"
    if tag.startswith(_T + "python/"):
        return f"the tag {shown} is refused: tags that build Python objects are never run"
    return f"the tag {shown} is refused: only the standard YAML tags are read (!!str, !!int, !!map, ...)"


def _short(tag: str) -> str:
    return "!!" + tag[len(_T) :] if tag.startswith(_T) else tag


def _kind(node: Node) -> str:
    return {ScalarNode: "a single value", SequenceNode: "a list", MappingNode: "a mapping"}[type(node)]
