"""The YAML loader of the front matter (tasks/parse/yamlsafe.py): libyaml's ``CSafeLoader`` without implicit
timestamps or value tags, with mapping keys kept as text; the YAML tags it reads; ``UnsafeYaml`` and the words of
its refusals (step 2 of yamlsafe.py: compose, with libyaml's errors worded for people).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.reader import ReaderError

from tasks.limits import ParseLimits

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
_NUMBER_TAGS = frozenset({INT, FLOAT})
_READ_ERRORS = (ValueError, LookupError, TypeError, AttributeError, OverflowError, ConstructorError)

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
