"""Fault 6 and the hostile drops: poison files (tens of MB, 100,000-deep nesting, an alias bomb, 20,000 related
items, YAML tags that would run code) and every other kind of bad drop, mixed among good ones in the same
batches. Each refused drop is listed by `feedworker failures` with its file name and a reason a person can act
on; every good drop lands; nothing is executed; the worker keeps running with bounded memory.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.corpus import write_corpus
from tests.faults import check_answers, children, fault_env, redis_pg_images, rss_kib
from tests.processes import celery_worker, export, feedworker

pytestmark = pytest.mark.slow

SETTINGS = {"FEEDWORKER_WATCH__BATCH_MAX": "8"}  # bad and good drops share batches: one bad drop fails alone
WORKER_RSS_LIMIT_KIB = 300_000  # each worker process after the poison (~110 MB measured; the child cap is 400 MB)
GOOD = "title: {t}\nwebUrl: https://hostile.test/{u}\n"


def _fm(body: str) -> bytes:
    return f"---\n{body}---\n".encode()


def _laughs() -> str:
    """A billion laughs: ten levels of ten aliases each, 10^10 values once expanded, 600 bytes written."""
    rows = ["l0: &a0 [" + ", ".join(["lol"] * 10) + "]"]
    rows += [f"l{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
    return "\n".join(rows) + "\n"


def refused_drops(canary: Path) -> dict[str, tuple[bytes, str]]:
    """file name -> (bytes, words its failure reason must hold)."""
    return {
        "empty.txt": (b"", "empty"),
        "no_front_matter.txt": (b"title: x\nwebUrl: https://hostile.test/x\n", "no front matter"),
        "unclosed front matter.txt": (b"---\ntitle: x\nwebUrl: https://hostile.test/x\n", "not closed"),
        "invalid_yaml.txt": (_fm("title: [unclosed\n"), "YAML syntax error at line"),
        "a_list.txt": (_fm("- title: x\n- webUrl: https://hostile.test/x\n"), "must be a mapping"),
        "alias_bomb.txt": (_fm(GOOD.format(t="bomb", u="bomb") + _laughs()), "aliases expanded"),
        "python_object.txt": (_fm(GOOD.format(t="t", u="t") + f"x: !!python/object/apply:os.system "
                                  f"['touch {canary}']\n"), "never run"),
        "python_name.txt": (_fm(f"title: !!python/name:os.system x\nwebUrl: https://hostile.test/pn\n"
                                f"y: !!python/object/new:subprocess.Popen [['touch', '{canary}']]\n"), "never run"),
        "binary.txt": (bytes(range(256)) * 64, "front matter"),
        "binary in yaml.txt": (b"---\ntitle: x\nwebUrl: https://hostile.test/b\nx: " + bytes(range(256)) + b"\n---\n",
                               "not valid UTF-8"),
        "latin1.txt": ("---\ntitle: café\nwebUrl: https://hostile.test/l\n---\n".encode("latin-1"), "UTF-8"),
        "utf16.txt": ("---\ntitle: x\nwebUrl: https://hostile.test/u\n---\n".encode("utf-16"), "UTF-16"),
        "huge.txt": (_fm(GOOD.format(t="huge", u="huge") + "excerpt: " + "a" * (30 << 20) + "\n"), "over the limit"),
        "deep_flow.txt": (_fm(GOOD.format(t="d", u="d") + "x: " + "[" * 100_000 + "]" * 100_000 + "\n"),
                          "nested deeper than"),
        "deep_block.txt": (_fm(GOOD.format(t="d", u="db") + "x:\n  " + "- " * 5000 + "v\n"), "nested deeper than"),
        "related_20k.txt": (_fm(GOOD.format(t="r", u="r") + "related:\n"
                                + "".join(f"- webUrl: https://r.test/{i}\n" for i in range(20_000))), "related"),
        "missing_title.txt": (_fm("webUrl: https://hostile.test/mt\n"), "title: required"),
        "blank_title.txt": (_fm("title: '  '\nwebUrl: https://hostile.test/bt\n"), "title: must not be empty"),
        "null_title.txt": (_fm("title: null\nwebUrl: https://hostile.test/nt\n"), "title"),
        "missing_weburl.txt": (_fm("title: x\n"), "webUrl: required"),
        "null_weburl.txt": (_fm("title: x\nwebUrl: ~\n"), "webUrl"),
        "ftp_url.txt": (_fm("title: x\nwebUrl: ftp://hostile.test/f\n"), "webUrl: not an http(s) URL"),
        "javascript_url.txt": (_fm("title: x\nwebUrl: 'javascript:alert(1)'\n"), "webUrl: not an http(s) URL"),
        "malformed_url.txt": (_fm("title: x\nwebUrl: 'http://'\n"), "webUrl"),
        "related_without_url.txt": (_fm(GOOD.format(t="r", u="rnu") + "related:\n- title: cited\n"),
                                    "related[0].webUrl: required"),
        "impossible_date.txt": (_fm(GOOD.format(t="d", u="id") + "publishedDateTime: 2023-02-30T10:00:00Z\n"),
                                "publishedDateTime"),
        "date_in_words.txt": (_fm(GOOD.format(t="d", u="dw") + "publishedDateTime: yesterday\n"), "publishedDateTime"),
        "number_in_words.txt": (_fm(GOOD.format(t="n", u="nw") + "quality: high\n"), "quality"),
        "bad_secured.txt": (_fm(GOOD.format(t="s", u="s") + "secured: not-base64\n"), "secured"),
        "nul_in_title.txt": (_fm('title: "a\\0b"\nwebUrl: https://hostile.test/nul\n'), "NUL"),
    }


ACCEPTED = {
    # unknown fields are kept, not refused
    "extras.txt": _fm(GOOD.format(t="Extras", u="extras") + "futureField: {nested: [1, 2]}\nflag: true\n"),
    # a BOM and CRLF line endings
    "bom_crlf.txt": b"\xef\xbb\xbf---\r\ntitle: BOM and CRLF\r\nwebUrl: https://hostile.test/bom\r\n---\r\nbody\r\n",
    # names with spaces and unicode
    "a name with spaces é 漢字 🚀.txt": _fm(GOOD.format(t="Unicode name", u="unicode")),
}


def test_hostile_and_poison_drops_fail_alone_with_reasons(tmp_path: Path) -> None:
    drops, canary = tmp_path / "drops", tmp_path / "PWNED"
    refused = refused_drops(canary)
    with ExitStack() as stack:
        broker, store, base = redis_pg_images(stack, tmp_path)
        ans = write_corpus(drops, base)  # good drops (and two refusals of its own) among the hostile ones
        for name, (data, _) in refused.items():
            (drops / name).write_bytes(data)
        for name, data in ACCEPTED.items():
            (drops / name).write_bytes(data)
        outside = tmp_path / "outside.txt"  # a valid drop outside the folder, reached only through a symlink
        outside.write_bytes(_fm(GOOD.format(t="Outside the drop folder", u="outside")))
        (drops / "link_outside.txt").symlink_to(outside)
        env = fault_env(broker.url(), store, SETTINGS)
        feedworker(env, "migrate")
        worker = stack.enter_context(celery_worker(env, tmp_path, "w1"))
        started = time.monotonic()
        summary = json.loads(feedworker(env, "ingest", str(drops), "--wait", "--json", timeout=120).stdout)
        took = time.monotonic() - started
        fails = [json.loads(line) for line in feedworker(env, "failures", "--json").stdout.splitlines()]
        records = export(env)
        assert worker.poll() is None, "the worker died on a poison drop"
        rss = {pid: rss_kib(pid) for pid in [worker.pid, *children(worker.pid)]}
    print(f"{len(refused)} hostile drops: summary {summary} in {took:.1f} s; worker RSS KiB {rss}")
    expected = {**{n: words for n, (_, words) in refused.items()}, **ans.refused,
                "link_outside.txt": "symbolic link"}  # listed as refused, never followed
    assert {f["file"] for f in fails} == set(expected)
    for f in fails:
        assert expected[f["file"]] in f["reason"], f
        assert f["stage"] in ("read", "parse"), f
    assert summary["failed"] == len(expected)
    assert not canary.exists(), "a YAML tag ran code"
    full = {r["title"]: r for r in records if not r["stub"]}
    check_answers([r for r in records if r["url"].startswith("https://news.test/")
                   or r["url"].startswith("https://else.test/")], ans)
    assert full["Extras"]["extra"] == {"futureField": {"nested": [1, 2]}, "flag": True}
    assert full["BOM and CRLF"]["url"] == "https://hostile.test/bom"
    assert full["Unicode name"]["source_id"] is None
    assert "Outside the drop folder" not in full and outside.exists()
    assert not any(r["url"].startswith("https://r.test/") for r in records)  # a refused drop writes nothing
    assert all(kib < WORKER_RSS_LIMIT_KIB for kib in rss.values()), rss
    assert os.path.getsize(drops / "huge.txt") > 30 << 20  # the poison was really there


def test_a_drop_whose_image_hosts_stall_never_blocks_the_queue(tmp_path: Path) -> None:
    """A poison that hangs a stage: 40 images on a host that accepts connections and never answers keep the
    verify stage busy past its soft time limit. Its batch-mates still land; the drop itself ends (failed with
    the reason, or published with its images unreachable) instead of being sent again and stalling again."""
    drops = tmp_path / "drops"
    settings = {"FEEDWORKER_TASK_SOFT_TIME_LIMIT": "3", "FEEDWORKER_TASK_TIME_LIMIT": "5",
                "FEEDWORKER_VISIBILITY_TIMEOUT": "10", "FEEDWORKER_WATCH__REQUEUE_AFTER_SECONDS": "5",
                "FEEDWORKER_WATCH__BATCH_MAX": "8"}
    with ExitStack() as stack:
        broker, store, base = redis_pg_images(stack, tmp_path)
        ans = write_corpus(drops, base, count=6)
        images = "".join(f"  - {{url: '{base}/tarpit/{i}.png'}}\n" for i in range(40))
        (drops / "stalling_images.txt").write_bytes(_fm(GOOD.format(t="Stalls", u="stall") + "images:\n" + images))
        env = fault_env(broker.url(), store, settings)
        feedworker(env, "migrate")
        worker = stack.enter_context(celery_worker(env, tmp_path, "w1"))
        summary = json.loads(feedworker(env, "ingest", str(drops), "--wait", "--json", timeout=60).stdout)
        fails = {f["file"]: f for f in map(json.loads, feedworker(env, "failures", "--json").stdout.splitlines())}
        records = export(env)
        assert worker.poll() is None
    print(f"stalling images: summary {summary}; failure {fails.get('stalling_images.txt')}")
    check_answers([r for r in records if r["url"] != "https://hostile.test/stall"], ans)
    stalled = fails.get("stalling_images.txt")
    if stalled is not None:
        assert stalled["stage"] == "verify" and "time limit" in stalled["reason"], stalled
    else:  # the checker gave up on the images in time: the drop is published, its images unreachable
        record = next(r for r in records if r["url"] == "https://hostile.test/stall")
        assert {im["status"] for im in record["images"]} == {"unreachable"}
