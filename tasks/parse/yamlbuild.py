"""Building data from the YAML (tasks/parse/yamlsafe.py, step 4): plain scalars for the fast path, a lean tree
builder for the usual tags, and the full ``SafeConstructor`` for the rest.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from tasks.parse.yamlfast import NotHere, plain_node
from tasks.parse.yamllimits import _children
from tasks.parse.yamlloader import (
    _NUMBER_TAGS,
    _READ_ERRORS,
    BOOL,
    FLOAT,
    INT,
    MAP,
    NULL,
    SEQ,
    STR,
    FrontMatterLoader,
    UnsafeYaml,
    _long_number,
    _short,
    _yaml_error_reason,
)

_FAST_SCALARS = {
    NULL: SafeConstructor.construct_yaml_null,
    BOOL: SafeConstructor.construct_yaml_bool,
    INT: SafeConstructor.construct_yaml_int,
    FLOAT: SafeConstructor.construct_yaml_float,
}
_FAST_KEY_TAGS = frozenset({STR, INT, FLOAT, BOOL, NULL})
# Numbers cost more than their length: YAML 1.1 base 60 (1:0:0:...) is quadratic in Python and skips its 4,300-digit
# guard, and a 0x... of 99,000 digits is a valid int no JSON writer takes. The fast path reads numbers up to this
# length (so it runs only when the limit allows at least as much); longer ones go the libyaml way, which refuses
# those past ``max_number_chars``.
_FAST_NUMBER_MAX = 32
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
