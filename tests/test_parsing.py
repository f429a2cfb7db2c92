"""The parsing layer (tasks.parse.parsing): drop bytes -> a validated Item, or a refusal naming file, field and reason.

Table-driven: each refusal with the words its message must hold, each acceptance with the item it must give.
Real sample drops live in tests/data/drops/ (the seed, the seed spelled three other ways, hostile files).

Over 300 lines: the tables are the specification of the format (docs/format.md), kept in one place.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import stat
import time
import traceback
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from tasks.errors import DropRejected
from tasks.limits import ParseLimits
from tasks.parse.models import Item
from tasks.parse.parsing import jsonable, parse_drop, read_drop, source_id
from tasks.parse.yamlbuild import _build_tree, _SlowPath
from tasks.parse.yamllimits import _depth_bound
from tasks.parse.yamlloader import FrontMatterLoader, UnsafeYaml

DROPS = Path(__file__).parent / "data" / "drops"
SEED = DROPS / "000_fb3687fbf0a8c61d.txt"
SEED_BYTES = SEED.read_bytes()
SEED_SECURED = re.search(rb'secured: "(.*)"', SEED_BYTES).group(1).decode()  # type: ignore[union-attr]
LIMITS = ParseLimits()
HEAD = "title: A title\nwebUrl: https://example.com/a\n"


def drop(*lines: str, head: str = HEAD) -> bytes:
    """A drop whose front matter is ``head`` (a valid title and webUrl) followed by ``lines``."""
    return ("---\n" + head + "".join(line + "\n" for line in lines) + "---\n").encode()


def parse(data: bytes, limits: ParseLimits = LIMITS) -> Item:
    return parse_drop("drop.txt", data, limits)


def refusal(data: bytes, limits: ParseLimits = LIMITS, name: str = "bad_drop.txt") -> DropRejected:
    with pytest.raises(DropRejected) as caught:
        parse_drop(name, data, limits)
    exc = caught.value
    assert exc.file == name and exc.stage == "parse"
    assert str(exc).startswith(f"{name}: ")
    if exc.field:
        assert repr(exc.field) in str(exc)
    return exc


def _seed() -> Item:
    return parse_drop(SEED.name, SEED_BYTES, LIMITS)


# -- acceptances ---------------------------------------------------------------------------------------------------


def test_seed_item() -> None:
    item = _seed()
    assert item.title == "Netflix has found an exciting new way to piss everyone off with AI art"
    assert item.category == "news" and item.type == "article"
    assert item.published_at == datetime(2023, 2, 2, 22, 17, tzinfo=UTC)
    assert item.web_url == item.original_url == (
        "https://bgr.com/entertainment/netflix-has-found-an-exciting-new-way-to-piss-everyone-off/"
    )
    assert (item.quality, item.heat, item.published) == (37, -1, False)
    assert item.provider is not None and (item.provider.name, item.provider.domain) == ("BGR", "bgr.com")
    assert item.topics == ["AI"]
    assert [(i.width, i.height, i.is_cached) for i in item.images] == [(1920, 1080, True)]
    assert [r.web_url.split("/")[2] for r in item.related] == ["www.pcmag.com", "siliconangle.com"]
    assert item.related[1].title == "Oracle is on a mission to become the \u2018Netflix of AI\u2019"
    assert item.related[0].images[0].width == 1120
    assert item.secured is not None and item.secured.get_secret_value() == SEED_SECURED
    assert SEED_SECURED not in repr(item)
    assert item.model_extra == {}


SAME_ITEM = {
    "JSON front matter": (DROPS / "001_seed_as_json.txt").read_bytes(),
    "flow style": (DROPS / "002_seed_in_flow_style.txt").read_bytes(),
    "comments, block scalars, quoting styles, tags, anchors, merge key, body": (
        DROPS / "003_seed_respelled.txt"
    ).read_bytes(),
    "UTF-8 BOM": b"\xef\xbb\xbf" + SEED_BYTES,
    "CRLF": SEED_BYTES.replace(b"\n", b"\r\n"),
    "BOM and CRLF": b"\xef\xbb\xbf" + SEED_BYTES.replace(b"\n", b"\r\n"),
    "fences with trailing spaces": b"---   \n" + SEED_BYTES[4:].rstrip(b"\n")[:-3] + b"--- \t\n",
    "closing fence at EOF without newline": SEED_BYTES.rstrip(b"\n"),
    "body with more --- lines": SEED_BYTES + b"\nA body.\n---\ntitle: not this one\n---\n",
}


@pytest.mark.parametrize("data", SAME_ITEM.values(), ids=SAME_ITEM.keys())
def test_same_data_is_the_same_item(data: bytes) -> None:
    assert parse(data) == _seed()


LAX = [
    ("quoted integer", "quality: '37'", "quality", 37),
    ("integral float", "quality: 37.0", "quality", 37),
    ("quoted negative", 'heat: "-1"', "heat", -1),
    ("quoted boolean", 'published: "true"', "published", True),
    ("YAML 1.1 boolean", "published: yes", "published", True),
    ("boolean as 0/1", "published: 0", "published", False),
    ("quoted timestamp", 'publishedDateTime: "2023-02-02T22:17:00Z"', "published_at",
     datetime(2023, 2, 2, 22, 17, tzinfo=UTC)),
    ("explicit !!timestamp", "publishedDateTime: !!timestamp 2023-02-02T23:17:00+01:00", "published_at",
     datetime(2023, 2, 2, 22, 17, tzinfo=UTC)),
    ("offset converted to UTC", "publishedDateTime: 2023-02-02T23:17:00+01:00", "published_at",
     datetime(2023, 2, 2, 22, 17, tzinfo=UTC)),
    ("naive taken as UTC", "publishedDateTime: 2023-02-02 22:17:00", "published_at",
     datetime(2023, 2, 2, 22, 17, tzinfo=UTC)),
    ("null list is empty", "topics: null", "topics", []),
    ("tilde null", "excerpt: ~", "excerpt", None),
    ("empty value is null", "category:", "category", None),
    ("plain = is text", "type: =", "type", "="),
    ("plain << value is text", "type: <<", "type", "<<"),
    ("int64 bounds", "heat: -9223372036854775808", "heat", -(2**63)),
]


@pytest.mark.parametrize(("case", "line", "attr", "value"), LAX, ids=[c[0] for c in LAX])
def test_lax_reading(case: str, line: str, attr: str, value: object) -> None:
    assert getattr(parse(drop(line)), attr) == value


def test_null_and_missing_fields() -> None:
    nulls = ["category:", "excerpt: null", "publishedDateTime: ~", "originalUrl: null", "type: null",
             "quality: null", "heat: null", "published: null", "provider: null", "topics: null",
             "images: null", "related: null", "secured: null"]
    for item in (parse(drop(*nulls)), parse(drop())):
        assert item.title == "A title" and item.web_url == "https://example.com/a"
        assert (item.category, item.excerpt, item.published_at, item.original_url, item.type) == (None,) * 5
        assert (item.quality, item.heat, item.published, item.provider, item.secured) == (None,) * 5
        assert (item.topics, item.images, item.related) == ([], [], [])


def test_related_entry_with_only_a_web_url() -> None:
    item = parse(drop("related:", "  - webUrl: https://example.com/b", "    images: null"))
    assert item.related[0].web_url == "https://example.com/b" and item.related[0].images == []


def test_unknown_fields_are_kept_and_jsonable() -> None:
    item = parse_drop("extras_and_tags.txt", (DROPS / "extras_and_tags.txt").read_bytes(), LIMITS)
    extra = item.model_extra or {}
    assert extra["on"] == "switched" and extra["1"] == "one"  # keys stay text
    assert extra["blob"] == b"hello\x00world"
    assert extra["tags"] == {"alpha", "beta"}
    assert extra["updatedAt"] == datetime(2023, 2, 3, 10, tzinfo=timezone(timedelta(hours=1)))
    assert jsonable(extra) == {
        "on": "switched",
        "1": "one",
        "updatedAt": "2023-02-03T10:00:00+01:00",
        "day": "2023-02-03",
        "blob": "aGVsbG8Ad29ybGQ=",
        "tags": ["alpha", "beta"],
        "order": [["first", 1], ["second", 2]],
        "ratio": "NaN",
        "limit": "-Infinity",
        "nested": {"list": [1, 2.5, None, True], "text": "x"},
        "plainValues": ["=", "<<"],
    }
    json.dumps(jsonable(extra), allow_nan=False)
    assert item.provider is not None and jsonable(item.provider.model_extra) == {"country": "FR"}


def test_nesting_at_the_limit_is_accepted() -> None:
    limits = ParseLimits(max_depth=5)  # the item mapping, then four more
    assert parse(drop("deep: {a: [[{b: 1}]]}"), limits).model_extra == {"deep": {"a": [[{"b": 1}]]}}
    assert parse(drop("deep:", "  - - - x"), limits).model_extra == {"deep": [[["x"]]]}


def test_small_anchors_and_aliases_are_accepted() -> None:
    item = parse(drop("provider: &p {name: A, domain: a.com}", "related:",
                      "  - {webUrl: 'https://example.com/b', provider: *p}"))
    assert item.related[0].provider == item.provider


def test_loader_is_libyaml_safe_loader() -> None:
    assert issubclass(FrontMatterLoader, yaml.CSafeLoader)


# -- refusals ------------------------------------------------------------------------------------------------------

# (case, drop bytes, field named, words the reason must hold)
REFUSED: list[tuple[str, bytes, str | None, list[str]]] = [
    # the file and its fences
    ("empty file", b"", None, ["empty"]),
    ("no front matter", b"title: a\n", None, ["first line must be '---'"]),
    ("unclosed front matter", b"---\ntitle: a\nwebUrl: https://example.com/a\n", None, ["not closed"]),
    ("not UTF-8", b"---\ntitle: caf\xe9\n---\n", None, ["UTF-8", "byte offset 14", "line 2"]),
    ("empty front matter", b"---\n---\n", None, ["empty", "mapping"]),
    ("comments only", b"---\n# nothing\n---\n", None, ["empty"]),
    ("top level is a list", b"---\n- title: a\n---\n", None, ["mapping", "a list"]),
    ("top level is a text", b"---\njust words\n---\n", None, ["mapping", "a single value"]),
    ("top level is a set", drop(head="!!set {title, webUrl}\n"), None, ["mapping"]),
    # YAML syntax, with the file's line and column
    ("mapping value in a plain scalar", drop("bad: : x"), None, ["YAML syntax error", "line 4, column 6"]),
    ("tab indentation", drop("bad:", "\t- x"), None, ["YAML syntax error", "line 5, column 1"]),
    ("unclosed flow list", drop("a: [1, 2", "b: 3"), None, ["YAML syntax error", "line 5"]),
    ("unclosed quote", drop('a: "x'), None, ["YAML syntax error", "end of stream"]),
    ("two documents", drop("a: 1", "...", "b: 2"), None, ["YAML syntax error", "line 6"]),
    ("undefined alias", drop("a: *nowhere"), None, ["undefined alias", "line 4"]),
    ("a list as a key", drop("? [a]", ": b"), None, ["key", "line 4"]),
    ("bad merge", drop("<<: [1]"), None, ["merging", "line 4"]),
    ("control character", drop('a: "\x01"'), None, ["U+0001", "line 4"]),
    # tags that would build Python objects, or that nobody defined: refused by name, never run
    ("python/object/apply", drop('payload: !!python/object/apply:os.system ["touch pwned"]'), "payload",
     ["!!python/object/apply:os.system", "refused", "never run"]),
    ("python/name", drop("payload: !!python/name:os.system"), "payload", ["!!python/name:os.system", "refused"]),
    ("python/object/new", drop("payload: !!python/object/new:subprocess.Popen [[touch, pwned]]"), "payload",
     ["refused"]),
    ("python/module", drop("payload: !!python/module:os"), "payload", ["refused"]),
    ("python tag in a list", drop("related:", "  - webUrl: https://example.com/b",
                                  "    x: [1, !!python/tuple [1]]"), "related[0].x[1]", ["refused"]),
    ("verbatim python tag", drop("payload: !<tag:yaml.org,2002:python/object/apply:os.system> [x]"),
     "payload", ["refused"]),
    ("python tag by %TAG shorthand",
     b"---\n%TAG !e! tag:yaml.org,2002:python/\n--- {title: a, webUrl: 'https://e.com/', k: !e!name:os.system }\n---\n",
     "k", ["!!python/name:os.system", "refused"]),
    ("local tag", drop("payload: !custom x"), "payload", ["!custom", "refused"]),
    ("python tag on a key", drop("? !!python/name:os.system", ": x"), None, ["refused"]),
    ("standard tag on the wrong kind", drop("payload: !!map x"), "payload", ["!!map", "does not fit"]),
    ("!!int that is not one", drop("quality: !!int high"), "quality", ["cannot be read as !!int"]),
    ("impossible !!timestamp", drop("publishedDateTime: !!timestamp 2023-02-30"), "publishedDateTime",
     ["cannot be read as !!timestamp"]),
    ("integer too long to read", drop("quality: 1" + "0" * 5000), "quality",
     ["a number of 5001 characters", "limit of 100"]),
    ("integer spelled wrong", drop("quality: !!int 12ab"), "quality", ["cannot be read as !!int"]),
    # NUL characters: PostgreSQL cannot store them
    ("escaped NUL", drop(r'excerpt: "a\0b"'), "excerpt", ["NUL", "PostgreSQL"]),
    ("hex-escaped NUL in a related title", drop("related:", r'  - {title: "a\x00", webUrl: "https://e.com/"}'),
     "related[0].title", ["NUL"]),
    ("unicode-escaped NUL in an extra", drop(r'x: {y: ["\u0000"]}'), "x.y[0]", ["NUL"]),
    ("raw NUL byte", drop("excerpt: a\x00b"), "excerpt", ["NUL", "line 4, column 11"]),
    ("raw NUL byte in a quoted title", drop(head='title: "a\x00b"\nwebUrl: https://e.com/\n'), "title", ["NUL"]),
    ("NUL in a key", drop(r'"a\0b": x'), None, ["key", "NUL"]),
    ("NUL via !!binary in a text field", drop("excerpt: !!binary YQBi"), "excerpt", ["NUL"]),
    # size bounds
    ("a long list", drop("topics: [" + ", ".join(["t"] * 1001) + "]"), "topics",
     ["1001 items", "limit of 1000"]),
    ("a long text", drop("excerpt: " + "x" * 100_001), "excerpt", ["100001 characters", "limit of 100000"]),
    ("a long key", drop("? " + "k" * 100_001, ": 1"), None, ["100001 characters"]),
    ("a long implicit key", drop("k" * 2000 + ": 1"), None, ["YAML syntax error", "could not find expected ':'"]),
    ("over max_bytes", drop("excerpt: " + "x" * 1_048_576), None, ["over the limit of 1048576 bytes"]),
    # nesting and aliases
    ("nested mappings", drop("deep:" + "".join("\n" + "  " * n + "a:" for n in range(1, 22)) + " x"),
     "deep" + ".a" * 19, ["nested deeper than 20"]),
    ("nested flow lists", drop("deep: " + "[" * 21 + "]" * 21), "deep" + "[0]" * 19, ["nested deeper than 20"]),
    ("deep through aliases", drop("a: &a " + "[" * 15 + "]" * 15, "b: " + "[" * 10 + "*a" + "]" * 10),
     "b" + "[0]" * 4, ["nested deeper than 20", "aliases expanded"]),
    ("too many aliases", drop("a: &a x", "b: [" + ", ".join(["*a"] * 101) + "]"), "b[100]",
     ["more than 100 aliases"]),
    ("aliases expanding past max_nodes", (DROPS / "hostile_billion_laughs.txt").read_bytes(), "lol4",
     ["more than 100000 values", "aliases expanded"]),
    ("recursive alias", (DROPS / "hostile_recursive_alias.txt").read_bytes(), "loop.again", ["recursive alias"]),
    ("recursive alias in a list", drop("a: &a [1, *a]"), "a[1]", ["recursive alias"]),
    ("recursive merge", drop("a: &a {<<: *a}"), "a.<<", ["recursive alias"]),
    # validation, pydantic's words
    ("missing title", drop(head="webUrl: https://example.com/a\n"), "title", ["required"]),
    ("empty title", drop(head='title: ""\nwebUrl: https://example.com/a\n'), "title", ["must not be empty"]),
    ("blank title", drop(head="title: '   '\nwebUrl: https://example.com/a\n"), "title", ["must not be empty"]),
    ("null title", drop(head="title: null\nwebUrl: https://example.com/a\n"), "title", ["valid string"]),
    ("title is a list", drop(head="title: [a]\nwebUrl: https://example.com/a\n"), "title", ["valid string"]),
    ("missing webUrl", drop(head="title: a\n"), "webUrl", ["required"]),
    ("null webUrl", drop(head="title: a\nwebUrl: null\n"), "webUrl", ["valid string"]),
    ("ftp webUrl", drop(head="title: a\nwebUrl: ftp://example.com/a\n"), "webUrl", ["http(s)"]),
    ("mailto webUrl", drop(head="title: a\nwebUrl: 'mailto:a@example.com'\n"), "webUrl", ["http(s)"]),
    ("javascript webUrl", drop(head="title: a\nwebUrl: 'javascript:alert(1)'\n"), "webUrl", ["http(s)"]),
    ("webUrl without host", drop(head="title: a\nwebUrl: 'https:///a'\n"), "webUrl", ["host"]),
    ("relative webUrl", drop(head="title: a\nwebUrl: /a/b\n"), "webUrl", ["http(s)"]),
    ("non-http originalUrl", drop("originalUrl: file:///etc/passwd"), "originalUrl", ["http(s)"]),
    ("related entry without webUrl", drop("related:", "  - title: b"), "related[0].webUrl", ["required"]),
    ("third related entry without webUrl",
     drop("related:", "  - webUrl: https://e.com/1", "  - webUrl: https://e.com/2", "  - {title: c}"),
     "related[2].webUrl", ["required"]),
    ("related entry with a bad webUrl", drop("related:", "  - webUrl: gopher://e.com/"), "related[0].webUrl",
     ["http(s)"]),
    ("related is a mapping", drop("related: {webUrl: 'https://e.com/'}"), "related", ["valid list"]),
    ("quality: high", drop("quality: high"), "quality", ["valid integer"]),
    ("quality with a fraction", drop("quality: 37.5"), "quality", ["fractional"]),
    ("quality past int64", drop("quality: 9223372036854775808"), "quality", ["less than or equal"]),
    ("published: maybe", drop("published: maybe"), "published", ["valid boolean"]),
    ("impossible date", drop("publishedDateTime: 2023-02-30T10:00:00Z"), "publishedDateTime", ["day value"]),
    ("publishedDateTime: yesterday", drop("publishedDateTime: yesterday"), "publishedDateTime",
     ["valid datetime"]),
    ("provider is a text", drop("provider: BGR"), "provider", ["valid dictionary"]),
    ("image width is a word", drop("images:", "  - {url: x, width: wide}"), "images[0].width", ["valid integer"]),
    ("topics hold a mapping", drop("topics: [{a: 1}]"), "topics[0]", ["valid string"]),
    ("several errors: the first named, the others counted", drop("quality: high", "heat: x", "published: 3"),
     "quality", ["valid integer", "2 more errors", "heat", "published"]),
]


@pytest.mark.parametrize(("case", "data", "field", "words"), REFUSED, ids=[c[0] for c in REFUSED])
def test_refused(case: str, data: bytes, field: str | None, words: list[str]) -> None:
    exc = refusal(data)
    assert exc.field == field
    for word in words:
        assert word in exc.reason, exc.reason


def test_python_tag_is_never_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    exc = refusal((DROPS / "hostile_python_tag.txt").read_bytes(), name="hostile_python_tag.txt")
    assert exc.field == "payload" and "refused" in exc.reason
    assert not (tmp_path / "pwned").exists()


def test_depth_is_checked_exactly_when_the_text_bound_is_inconclusive() -> None:
    """Line breaks the text bound cannot see (LS, NEL, a lone CR) leave the decision to the exact pass."""
    for breaks in ("\u2028", "\x85", "\r"):
        nested = drop(f"deep:{breaks}" + "- " * 25 + "x")
        assert "nested deeper than 20" in refusal(nested).reason
        shallow = drop(f"deep:{breaks}" + "- " * 3 + "x")
        assert parse(shallow).model_extra == {"deep": [[["x"]]]}


def _syntactic_depth(text: str) -> int:
    depth = deepest = 0
    for event in yaml.parse(text, Loader=yaml.CSafeLoader):
        if isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
            depth += 1
            deepest = max(deepest, depth)
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    return deepest


def test_text_depth_bound_is_conservative() -> None:
    """The cheap bound that lets normal files skip the exact pass never says less than the real depth."""
    rng = random.Random(7)

    def data(level: int) -> object:
        pick = rng.random()
        if level > 7 or pick < 0.3:
            return rng.choice(["a", "- x", "[b]", "k: v", "", None, 1])
        if pick < 0.65:
            return [data(level + 1) for _ in range(rng.randint(0, 3))]
        return {rng.choice(["a", "b", "? q", "- d"]): data(level + 1) for _ in range(rng.randint(0, 3))}

    texts = [
        yaml.dump(data(0), default_flow_style=rng.choice([False, None, True]), indent=rng.choice([2, 3, 4, 8]),
                  width=rng.choice([20, 80, 1000]))
        for _ in range(1_500)
    ]
    soup = [*"[]{}:,?- \n&*!a#'\"|>", "- ", ": ", "? ", "\n  ", "\n- ",
            "\n\ufeff", "\n\ufeff- "]  # libyaml skips a BOM at the start of a line
    texts += ["".join(rng.choice(soup) for _ in range(rng.randint(1, 30))) for _ in range(6_000)]
    checked = 0
    for text in texts + [t.replace("\n", "\r\n") for t in texts[:300]]:
        try:
            depth = _syntactic_depth(text)
        except yaml.YAMLError:
            continue
        assert _depth_bound(text) >= depth, text
        checked += 1
    assert checked > 2_000


def _tagged(value: object) -> object:
    """Values with their types, NaN made comparable: 1, 1.0 and True must not pass for one another."""
    if isinstance(value, dict):
        return {k: _tagged(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_tagged(v) for v in value]
    return (type(value).__name__, "nan" if value != value else value)


def test_tree_builder_matches_the_full_constructor() -> None:
    """The fast path for alias-free files gives what SafeConstructor (with our loader's rules) gives."""
    rng = random.Random(3)
    front = SEED_BYTES.split(b"---\n")[1].decode()
    words = ["[", "]", "{", "}", "- ", ": ", "\n", "\n  ", '"', "'", "#", ",", "~", "=", "<<", ".nan", "-.inf",
             "1:2:3", "0x1F", "0o17", "1_000", "+12", "yes", "No", "on", "null", "1e3", "!!int ", "!!bool ", "!!str "]
    compared = 0
    for _ in range(1_500):
        text = list(front)
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(text) + 1)
            text[at:at] = [rng.choice(words)]
        source = "".join(text)
        try:
            fast_loader, full_loader = FrontMatterLoader(source), FrontMatterLoader(source)
            fast_node, full_node = fast_loader.get_single_node(), full_loader.get_single_node()
            if fast_node is None:
                continue
            fast = _build_tree(fast_loader, fast_node)
        except (yaml.YAMLError, UnsafeYaml, _SlowPath):
            continue
        assert _tagged(fast) == _tagged(full_loader.construct_document(full_node)), source
        compared += 1
    assert compared > 500


SECRET = "S3CR3TS3CR3T"
BAD_SECURED = [
    ("one part", f'secured: "{SECRET}AA"'),
    ("three parts", f'secured: "{SECRET}AA;{SECRET}BB;{SECRET}CC"'),
    ("not base64", f'secured: "{SECRET}!!;{SECRET}=="'),
    ("empty second part", f'secured: "{SECRET}AA;"'),
    ("bad padding", f'secured: "{SECRET}A;AAAA"'),
    ("spaces", f'secured: "{SECRET}AA; {SECRET}AA"'),
    ("a list", f'secured: ["{SECRET}AA", "AAAA"]'),
    ("a number", "secured: 12345678901234567890"),
    ("NUL inside", f'secured: "{SECRET}\\0AA;AAAA"'),
    ("python tag", f'secured: !!python/object/apply:os.system ["{SECRET}"]'),
    ("!!int", f"secured: !!int {SECRET}"),
    ("unclosed quote", f'secured: "{SECRET}AA;AAAA'),
    ("too long", f'secured: "{SECRET * 10}AA;AAAA"'),
]


@pytest.mark.parametrize("line", [c[1] for c in BAD_SECURED], ids=[c[0] for c in BAD_SECURED])
def test_bad_secured_is_refused_without_echoing_it(line: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    exc = refusal(drop(line, "quality: high"), limits=ParseLimits(max_string=100))
    told = [str(exc), exc.reason, exc.summary, "".join(traceback.format_exception(exc)), caplog.text]
    assert not any(SECRET in text for text in told)


def test_good_secured_never_shows() -> None:
    item = _seed()
    assert SEED_SECURED not in repr(item) and SEED_SECURED not in str(item)
    exc = refusal(SEED_BYTES.replace(b"quality: 37", b"quality: high"))
    assert exc.field == "quality" and SEED_SECURED not in "".join(traceback.format_exception(exc))


# -- hostile sizes: refused quickly, and the process survives -----------------------------------------------------


def _timed_refusal(data: bytes) -> tuple[DropRejected, float]:
    start = time.perf_counter()
    exc = refusal(data)
    return exc, time.perf_counter() - start


def test_half_a_million_nested_flow_lists() -> None:
    data = drop("deep: " + "[" * 500_000 + "]" * 500_000)
    assert len(data) < LIMITS.max_bytes
    exc, seconds = _timed_refusal(data)
    assert exc.field == "deep" and "nested deeper than 20" in exc.reason
    assert seconds < 2


def test_half_a_million_nested_flow_mappings() -> None:
    exc, seconds = _timed_refusal(drop("deep: " + "{a: " * 200_000 + "}" * 200_000))
    assert "nested deeper than 20" in exc.reason and seconds < 2


def test_deep_block_nesting() -> None:
    exc, seconds = _timed_refusal(drop("deep:", "- " * 400_000 + "x"))
    assert exc.field and exc.field.startswith("deep[0][0]") and "nested deeper than 20" in exc.reason
    assert seconds < 2


def test_deep_indented_nesting() -> None:
    lines = "".join(" " * n + "- \n" for n in range(0, 2_000, 2))  # each entry one column deeper
    exc, seconds = _timed_refusal(drop("deep:", lines))
    assert "nested deeper than 20" in exc.reason and seconds < 2


def test_twenty_thousand_related_items() -> None:
    related = "".join(f"  - webUrl: https://example.com/r{n}\n" for n in range(20_000))
    exc, seconds = _timed_refusal(drop("related:", related))
    assert exc.field == "related" and "20000 items" in exc.reason and "limit of 1000" in exc.reason
    assert seconds < 5


def test_many_small_nodes() -> None:
    exc = refusal(drop("x: [" + ",".join(["1"] * 5_000) + "]"), ParseLimits(max_list=10_000, max_nodes=4_000))
    assert exc.field == "x" and "more than 4000 values" in exc.reason


# -- reading files ---------------------------------------------------------------------------------------------------


def test_read_seed() -> None:
    assert read_drop(SEED, LIMITS) == SEED_BYTES


def _read_refusal(path: Path, limits: ParseLimits = LIMITS) -> DropRejected:
    with pytest.raises(DropRejected) as caught:
        read_drop(path, limits)
    assert caught.value.stage == "read" and caught.value.file == path.name
    return caught.value


def test_read_size_limit(tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    path.write_bytes(b"x" * 101)
    assert read_drop(path, ParseLimits(max_bytes=101)) == b"x" * 101
    assert "101 bytes, over the limit of 100" in _read_refusal(path, ParseLimits(max_bytes=100)).reason


def test_read_judges_size_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "huge.txt"
    with path.open("wb") as f:
        f.truncate(1 << 36)  # a sparse 64 GiB file: reading it would not end in time
    start = time.perf_counter()
    assert "over the limit" in _read_refusal(path).reason
    assert time.perf_counter() - start < 1


def test_read_refuses_what_is_not_a_regular_file(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)  # opening it for reading without a writer must not hang
    assert "named pipe" in _read_refusal(fifo).reason
    assert "directory" in _read_refusal(tmp_path).reason
    assert "character device" in _read_refusal(Path(os.devnull)).reason
    link = tmp_path / "link.txt"
    link.symlink_to(SEED)
    assert "symbolic link" in _read_refusal(link).reason


def test_read_vanished_file(tmp_path: Path) -> None:
    assert "vanished" in _read_refusal(tmp_path / "gone.txt").reason


def test_read_permission_denied(tmp_path: Path) -> None:
    path = tmp_path / "secret.txt"
    path.write_bytes(SEED_BYTES)
    path.chmod(0)
    if os.geteuid() != 0:
        assert "permission denied" in _read_refusal(path).reason
        return
    # root reads anything: ask as "nobody", in a forked child
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.setgid(65534)
            os.setuid(65534)
            read_drop(path, LIMITS)
            answer = "read it"
        except DropRejected as exc:
            answer = exc.reason
        except BaseException as exc:
            answer = repr(exc)
        os.write(write_end, answer.encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as answer_pipe:
        answer = answer_pipe.read().decode()
    os.waitpid(pid, 0)
    assert answer == "permission denied"
    assert stat.S_IMODE(path.stat().st_mode) == 0


# -- source_id and jsonable ------------------------------------------------------------------------------------------

SOURCE_IDS = [
    ("000_fb3687fbf0a8c61d.txt", "fb3687fbf0a8c61d"),
    ("123456_0123456789abcdef.txt", "0123456789abcdef"),
    ("7_ABCDEF.txt", "ABCDEF"),
    ("001_abc.txt", "abc"),
    ("fb3687fbf0a8c61d.txt", None),
    ("000_fb3687fbf0a8c61d.yaml", None),
    ("000_fb3687fbf0a8c61g.txt", None),
    ("000-fb3687fbf0a8c61d.txt", None),
    ("_fb3687fbf0a8c61d.txt", None),
    ("000_.txt", None),
    ("000_fb3687fbf0a8c61d.txt.bak", None),
    ("000_fb3687fbf0a8c61d.TXT", None),
    ("x000_fb3687fbf0a8c61d.txt", None),
    ("٣_abc.txt", None),  # non-ASCII digits
    ("000_" + "a" * 65 + ".txt", None),  # longer than the store's column
    ("", None),
]


@pytest.mark.parametrize(("name", "expected"), SOURCE_IDS)
def test_source_id(name: str, expected: str | None) -> None:
    assert source_id(name) == expected


JSONABLE = [
    ("scalars", {"a": 1, "b": "x", "c": None, "d": True, "e": 2.5}, {"a": 1, "b": "x", "c": None, "d": True, "e": 2.5}),
    ("datetime", datetime(2023, 2, 2, 22, 17, tzinfo=UTC), "2023-02-02T22:17:00+00:00"),
    ("naive datetime", datetime(2023, 2, 2, 22, 17, 0, 5), "2023-02-02T22:17:00.000005"),
    ("date", date(2023, 2, 2), "2023-02-02"),
    ("bytes", b"\x00\xffhi", "AP9oaQ=="),
    ("set", {"b", "a", "c"}, ["a", "b", "c"]),
    ("mixed set: sorted by JSON text", {1, "a"}, ["a", 1]),
    ("tuple", ("a", 1), ["a", 1]),
    ("nan", float("nan"), "NaN"),
    ("infinity", float("inf"), "Infinity"),
    ("minus infinity", float("-inf"), "-Infinity"),
    ("non-string keys", {1: "a", None: "b", 2.5: "d", date(2023, 1, 1): "e", b"k": "f"},
     {"1": "a", "null": "b", "2.5": "d", "2023-01-01": "e", "aw==": "f"}),
    ("boolean key", {True: "c"}, {"true": "c"}),
    ("nested", {"x": [{"y": {b"k"}}]}, {"x": [{"y": ["aw=="]}]}),
]


@pytest.mark.parametrize(("case", "value", "expected"), JSONABLE, ids=[c[0] for c in JSONABLE])
def test_jsonable(case: str, value: object, expected: object) -> None:
    converted = jsonable(value)
    assert converted == expected
    assert json.loads(json.dumps(converted, allow_nan=False)) == expected


def test_jsonable_refuses_what_a_loader_never_builds() -> None:
    with pytest.raises(TypeError):
        jsonable(object())
