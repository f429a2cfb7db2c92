"""The YAML fast path against libyaml: whatever ``fast_tree`` accepts, libyaml + FrontMatterLoader builds the same
data from (types and key order included); everything else it leaves to libyaml (``None``)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from tasks.errors import DropRejected
from tasks.limits import ParseLimits
from tasks.parse.frontmatter import split_front_matter
from tasks.parse.parsing import parse_drop
from tasks.parse.yamlbuild import _plain_value
from tasks.parse.yamlfast import fast_tree
from tasks.parse.yamllimits import _may_exceed
from tasks.parse.yamlloader import UnsafeYaml
from tasks.parse.yamlsafe import load_front_matter
from tools.yamldiff import libyaml as slow
from tools.yamldiff import same  # one definition of "the same data" for the test and the offline check

DROPS = Path(__file__).parent / "data" / "drops"
SEED = DROPS / "000_fb3687fbf0a8c61d.txt"
LIMITS = ParseLimits()


def fast(text: str, max_depth: int = LIMITS.max_depth) -> dict[str, Any] | None:
    return fast_tree(text, _plain_value, max_depth)


def agree(text: str) -> bool:
    """The property: when the fast path answers, libyaml answers the same. Returns whether it answered."""
    got = fast(text)
    if got is None:
        return False
    want = slow(text)
    assert same(got, want), f"fast path disagrees with libyaml on {text!r}: {got!r} != {want!r}"
    return True


ACCEPTED = [
    "title: Hi\n",
    'title: "Hi"\nquality: 37\nheat: -1\npublished: false\n',
    "a: true\nb: yes\nc: No\nd: on\ne: ~\nf: null\ng:\nh: 0x1F\ni: 1_000\nj: 1:30\nk: 0o17\nl: 1.5\nm: -1.5e+3\n",
    "when: 2023-02-02T22:17:00Z\nday: 2023-02-30\n",  # timestamps stay text
    "topics:\n  - AI\n  - Chips\n",
    "topics:\n- AI\n- Chips\nnext: 1\n",  # a list at its key's indentation
    "related:\n- title: a\n  images:\n  - url: x\n    width: 1\n- title: b\n",
    "items:\n  -\n    a: 1\n  -\n  - 3\n",  # "-" alone: a nested block, or null
    "a:\n  b:\n    c:\n      d: deep\n",
    "empty: []\nalso: {}\n",
    "q: 'it''s'\ns: 'a \"b\" \\\\ c'\n",
    'e: "tab\\there \\"q\\" back\\\\slash \\/ \\u00e9 \\u2028 \\b\\f\\n\\r"\n',
    'u: "émission 東京 🎉 café"\n',
    "# a comment\ntitle: x\n  # an indented comment\n\nquality: 3\n",
    "title: x   \nlist:   \n  - a   \n",  # trailing spaces
    "title: a:b c#d e-f [x] {y} , & * ! | > ' \" % @ `\n",  # indicators inside a plain scalar
    "yes: key kept as text\nnull: 1\nTrue: 2\n_x-y: 3\n",
    "url: http://x.test/a?b=1#frag\n",
    "dup: 1\ndup: 2\n",
    "    indented: root\n    second: 2\n",
    "title: x\r\nquality: 3\r\n",
    "n: " + "9" * 32 + "\nh: 0x" + "f" * 30 + "\nt: 1" + ":0" * 15 + "\n",  # numbers up to 32 characters
]

REFUSED = [
    "title:\tx\n",  # a tab
    "title: |\n  block\n",
    "title: >\n  folded\n",
    "a: &x 1\nb: *x\n",
    "a: !!str 1\n",
    "a: [1, 2]\n",
    "a: {b: 1}\n",
    'a: "multi\n  line"\n',
    "a: multi\n  line plain\n",
    "a: x # comment\n",
    '"quoted key": 1\n',
    "? complex\n: key\n",
    "- a\n- b\n",  # not a mapping at the top
    "a:\n  - - nested\n",
    "a: 1\n b: 2\n",  # misaligned
    "a:\n    b: 1\n  c: 2\n",
    "a: x\r\rb: y\n",  # a lone CR
    "a: x\x85b: y\n",  # NEL is a line break to libyaml
    "a: x\u2028b\n",
    "a: \ufeffx\n",
    "a: x\x7f\n",
    'a: "\\ud83d\\ude00"\n',  # surrogate escapes
    'a: "\\x41"\n',
    "a: <<\n",
    "a: =\n",
    "a: .inf\n",
    "%YAML 1.1\n---\na: 1\n",
    "a: 1\n...\n",
    "key:value\n",
    "1: a number key\n",  # valid YAML, left to libyaml
    "-1: negative key\n",
    "",
    "# only a comment\n",
    "n: " + "9" * 33 + "\n",  # a longer number: libyaml's path bounds it (parse.max_number_chars)
    "n: 1" + ":0" * 16 + "\n",
]


@pytest.mark.parametrize("text", ACCEPTED)
def test_accepted_shapes_build_what_libyaml_builds(text: str) -> None:
    assert agree(text), f"expected the fast path to read {text!r}"


@pytest.mark.parametrize("text", REFUSED)
def test_other_shapes_are_left_to_libyaml(text: str) -> None:
    assert fast(text) is None


@pytest.mark.parametrize("path", sorted(DROPS.iterdir()), ids=lambda p: p.name)
def test_the_sample_drops(path: Path) -> None:
    text = split_front_matter(path.read_bytes()).text
    answered = agree(text)
    if path.name.startswith("000_"):
        assert answered  # the seed's own shape is the common case


def corpus_text(rng: random.Random) -> str:
    """A drop in the shape tools/corpus.py writes (JSON-quoted strings, plain words and numbers)."""
    def q(s: str) -> str:
        return json.dumps(s, ensure_ascii=False)

    words = ["netflix", "anime", "ai", "émission", "données", "café", "naïve", "東京", '"quoted"', "back\\slash",
             "tab\there"]
    lines = ["category: news", f"title: {q(' '.join(rng.choices(words, k=6)))}",
             f"publishedDateTime: 2023-02-0{rng.randint(1, 9)}T10:00:00Z", f"quality: {rng.randint(-5, 100)}",
             f"published: {rng.choice(['true', 'false'])}", "", "provider:", "  name: PC Magazine",
             "  domain: pcmag.com", "", "topics:"] + [f"  - {t}" for t in rng.sample(["AI", "Chips", "Space"], 2)]
    lines += ["", "related:"]
    for _ in range(rng.randint(0, 3)):
        lines += [f"  - title: {q(rng.choice(words))}", f"    webUrl: {q('https://x.test/' + rng.choice(words))}",
                  "    provider:", "      name: BGR", "    images:", f"      - url: {q('http://h/i.png?a=1')}",
                  f"        width: {rng.randint(1, 2000)}", "        isCached: true"]
    lines += ["", f"secured: {q('QUJD;REVG')}", ""]
    return "\n".join(lines)


MUTATIONS = ["\n", " ", "  ", "- ", ": ", ":", "#", " #", "'", '"', "\\", "\\u0041", "\\ud800", "\\0", "[", "]",
             "{", "}", ",", "&a ", "*a", "!!str ", "!", "|", ">", "\t", "\r", "\r\n", "~", "null", "true", "-1",
             "0x1F", "1:30", "---", "...", "%", "?", "? ", "@", "`", "\u2028", "\x85", "\ufeff", "é", "\x7f",
             "<<: ", "=", ".5", "-", "\n- ", "\n  ", "\n    - a: 1", "x: y", "''", "9" * 30, ":0:0:0:0:0",
             "0x" + "f" * 29]


def mutate(text: str, rng: random.Random) -> str:
    for _ in range(rng.randint(1, 3)):
        kind = rng.random()
        at = rng.randint(0, len(text))
        if kind < 0.6:
            text = text[:at] + rng.choice(MUTATIONS) + text[at:]
        elif kind < 0.8:
            text = text[:at] + text[at + rng.randint(1, 5):]
        else:
            lines = text.split("\n")
            i = rng.randrange(len(lines))
            lines[i] = " " * rng.choice([0, 1, 2, 4]) + lines[i].lstrip(" ") if rng.random() < 0.5 else lines[i]
            if rng.random() < 0.3:
                lines.insert(i, lines[i])
            text = "\n".join(lines)
    return text


def test_generated_drops_all_take_the_fast_path_and_agree() -> None:
    rng = random.Random(1)
    for _ in range(300):
        assert agree(corpus_text(rng))


def test_thousands_of_mutated_drops_never_disagree() -> None:
    rng = random.Random(7)
    bases = [split_front_matter(SEED.read_bytes()).text] + [corpus_text(rng) for _ in range(20)]
    answered = 0
    for n in range(4000):
        answered += agree(mutate(bases[n % len(bases)], rng))
    assert answered > 400  # the fast path really was exercised, not just bypassed


def test_depth_past_the_limit_is_refused_as_before() -> None:
    text = "a:\n  b:\n    c: 1\n"
    assert fast(text, max_depth=3) == {"a": {"b": {"c": 1}}}
    assert fast(text, max_depth=2) is None
    assert fast("a: []\n", max_depth=1) is None
    with pytest.raises(UnsafeYaml, match="nested deeper than 2"):
        load_front_matter(text, ParseLimits(max_depth=2))


def test_limits_still_apply_where_the_fast_path_would_read() -> None:
    text = "title: x\ntopics:\n" + "".join(f"  - t{i}\n" for i in range(20))
    assert _may_exceed(text, ParseLimits(max_list=10))
    with pytest.raises(UnsafeYaml, match="longer than the limit of 10"):
        load_front_matter(text, ParseLimits(max_list=10))
    with pytest.raises(DropRejected) as refused:
        parse_drop("x.txt", b'---\ntitle: "' + b"a" * 50 + b'"\nwebUrl: https://x.test/\n---\n',
                   ParseLimits(max_string=20))
    assert refused.value.field == "title"


def test_a_printable_text_holds_nothing_libyaml_would_refuse() -> None:
    """fast_tree skips its character regex for a text that str.isprintable accepts (newlines aside): sound only
    if no code point is printable and refused at once. Every code point, and the newline as the caller sees it."""
    from tasks.parse.yamlfast import _UNREAD

    both = [hex(c) for c in range(0x110000) if chr(c).isprintable() and _UNREAD.match(chr(c))]
    assert both == []
    assert _UNREAD.match("\n") is None and "\n".replace("\n", " ").isprintable()
    assert not "\t".isprintable() and _UNREAD.match("\t")  # the regex still decides what isprintable refuses
