"""Hostile drops that cost more than their size: long numbers in any base, depth hidden behind a BOM.

Each test asserts the refusal and its reason; the CPU guard (generous: the fixed code takes milliseconds, the old
code seconds) only catches a return of quadratic work, never stands alone.
"""

from __future__ import annotations

import time

import pytest

from tasks.errors import DropRejected
from tasks.limits import ParseLimits
from tasks.parse.parsing import parse_drop
from tasks.parse.yamlbuild import _plain_value
from tasks.parse.yamlfast import fast_tree
from tasks.parse.yamlsafe import load_front_matter

HEAD = "title: A title\nwebUrl: https://example.com/a\n"
LIMITS = ParseLimits()

# each spelling YAML 1.1 reads as a number, ~98,000 characters (under the 100,000-character string limit)
LONG_NUMBERS = {
    "base 60": "1" + ":0" * 49_000,
    "hex": "0x" + "f" * 98_000,
    "octal": "0" + "7" * 98_000,
    "binary": "0b" + "1" * 98_000,
    "underscores": "1" + "_0" * 49_000,
    "decimal": "9" * 98_000,
    "float": "1" + "0" * 98_000 + ".5",
    "base 60 float": "1" + ":0" * 49_000 + ".5",
}


def drop(body: str) -> bytes:
    return ("---\n" + HEAD + body + "---\n").encode()


def refused(data: bytes, limits: ParseLimits = LIMITS) -> tuple[DropRejected, float]:
    start = time.process_time()
    with pytest.raises(DropRejected) as caught:
        parse_drop("hostile.txt", data, limits)
    return caught.value, time.process_time() - start


@pytest.mark.parametrize("number", LONG_NUMBERS.values(), ids=LONG_NUMBERS.keys())
@pytest.mark.parametrize("shape", ["block", "flow"])
def test_a_megabyte_of_long_numbers_is_refused_cheaply(number: str, shape: str) -> None:
    """Ten ~98 KB numbers in one 1 MiB drop: base 60 alone cost ~4.5 s of CPU before the bound."""
    if shape == "block":
        body = "".join(f"n{i}: {number}\n" for i in range(10))
    else:
        body = "n: [" + ", ".join([number] * 10) + "]\n"
    data = drop(body)
    assert len(data) <= LIMITS.max_bytes
    exc, seconds = refused(data)
    assert exc.field == ("n0" if shape == "block" else "n[0]")
    assert f"a number of {len(number)} characters is longer than the limit of 100" in exc.reason
    assert "parse.max_number_chars" in exc.reason
    assert seconds < 0.5


def test_numbers_at_the_limit_are_read() -> None:
    item = parse_drop("ok.txt", drop("a: " + "1" + ":0" * 49 + "\nb: 0x" + "f" * 98 + "\nc: -1_000\n"), LIMITS)
    assert item.model_extra == {"a": 60**49, "b": 16**98 - 1, "c": -1000}


def test_the_limit_is_a_setting_and_explicit_tags_are_bounded_too() -> None:
    limits = ParseLimits(max_number_chars=5)
    for body, field in (("q: 123456\n", "q"), ("q: !!int 1:0:0:0\n", "q"), ("x: [1, !!float 1.00000]\n", "x[1]")):
        exc, _ = refused(drop(body), limits)
        assert exc.field == field and "longer than the limit of 5" in exc.reason
    assert parse_drop("ok.txt", drop("q: 12345\n"), limits).model_extra == {"q": 12345}


def test_a_long_number_as_a_key_stays_text() -> None:
    key = "1" + ":0" * 400  # a plain key: libyaml allows up to 1,024 characters
    assert load_front_matter(f"{key}: v\n", LIMITS).data == {key: "v"}
    assert load_front_matter(f"{key}: v\ny: &a v\nx: *a\n", LIMITS).data == {key: "v", "y": "v", "x": "v"}


def test_the_fast_path_leaves_long_numbers_to_libyaml() -> None:
    """The fast path reads short numbers itself and gives up on long ones, so only libyaml's path words the
    refusal: the two can never disagree on a long number."""
    assert fast_tree("n: 0x1F\n", _plain_value, 20) == {"n": 31}
    assert fast_tree("n: 0x" + "f" * 40 + "\n", _plain_value, 20) is None
    with pytest.raises(ValueError, match="longer than the limit of 100"):
        load_front_matter("n: 0x" + "f" * 200 + "\n", LIMITS)


# -- a BOM at the start of a line (libyaml skips it) -------------------------------------------------------------


@pytest.mark.parametrize("levels", [21, 450, 600, 5_000])
def test_depth_behind_a_bom_is_refused_like_without_it(levels: int) -> None:
    for prefix in ("", "\ufeff"):
        exc, seconds = refused(drop("a:\n" + prefix + "- " * levels + "x\n"))
        assert exc.field is not None and exc.field.startswith("a[0]")
        assert "nested deeper than 20 levels" in exc.reason, exc.reason
        assert seconds < 0.5


@pytest.mark.parametrize("body", [
    "a:\n\ufeff  - - - - - - - - - - - - - - - - - - - - - x\n",
    "a:\n  b:\n\ufeff " + "- " * 30 + "x\n",
    "a:\n\ufeff- \n" + "".join("\ufeff" + " " * n + "- \n" for n in range(1, 80, 2)),
])
def test_boms_anywhere_at_line_starts_do_not_hide_depth(body: str) -> None:
    exc, _ = refused(drop(body))
    assert "nested deeper than 20 levels" in exc.reason


def test_a_bom_at_a_line_start_in_a_normal_drop_is_read() -> None:
    item = parse_drop("ok.txt", drop("a:\n\ufeff- - x\nb: 1\n"), LIMITS)
    assert item.model_extra == {"a": [["x"]], "b": 1}


def test_depth_is_a_refusal_even_when_the_limit_is_raised_to_its_highest() -> None:
    """No RecursionError whatever the limit: a refusal naming the depth, or the data. The limit itself stops at
    200 levels: the data is read and written by code that recurses once a level (JSON, pydantic)."""
    limits = ParseLimits(max_depth=200)
    for levels in (600, 3_000):
        exc, _ = refused(drop("a:\n\ufeff" + "- " * levels + "x\n"), limits)
        assert "nested deeper than 200 levels" in exc.reason
    assert parse_drop("ok.txt", drop("a:\n\ufeff" + "- " * 150 + "x\n"), limits).model_extra is not None
    with pytest.raises(ValueError, match="less than or equal to 200"):
        ParseLimits(max_depth=5_000)
