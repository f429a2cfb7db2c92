"""The repository's own tools (``tools/``): the corpus generator and its answers, the export check, the loopback
image host (every path, several addresses, far-host latency) and the YAML differential check."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tools import checkexport, yamldiff
from tools.corpus import answers_path, generate
from tools.imagepaths import png

ROOT = Path(__file__).resolve().parent.parent


def test_a_seed_gives_the_same_corpus_and_answers(tmp_path: Path) -> None:
    a = generate(tmp_path / "a", 200, seed=5)
    b = generate(tmp_path / "b", 200, seed=5)
    c = generate(tmp_path / "c", 200, seed=6)
    assert a == b and a != c
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir())
    assert all((tmp_path / "a" / n).read_bytes() == (tmp_path / "b" / n).read_bytes() for n in names)
    assert json.loads(answers_path(tmp_path / "a").read_text(encoding="utf-8")) == a


def test_the_answers_describe_the_files(tmp_path: Path) -> None:
    ans = generate(tmp_path / "d", 300, seed=2, image_base="http://img.test:1")
    files = sorted((tmp_path / "d").iterdir())
    assert len(files) == ans["files"] == 300 and ans["items"] == 282
    text = "".join(p.read_text(encoding="utf-8") for p in files)
    assert all(json.dumps(t, ensure_ascii=False) in text for t in ans["titles"])
    assert all(json.dumps(url) in text for url in ans["images"])
    assert {v["status"] for v in ans["images"].values()} == {"ok", "broken", "not_image"}
    mtimes = [p.stat().st_mtime for p in files]
    assert mtimes == sorted(mtimes) and len(set(mtimes)) == len(mtimes)  # name order is drop order


def test_clean_mix_has_only_good_images(tmp_path: Path) -> None:
    ans = generate(tmp_path / "d", 100, seed=2, mix="clean")
    assert {v["status"] for v in ans["images"].values()} == {"ok"}
    assert all("/ok/" in url for url in ans["images"])


def perfect_export(ans: dict[str, Any]) -> list[dict[str, Any]]:
    """An export that holds every answer (what a correct run writes, reduced to what the check reads)."""
    images = [{"url": url, **{k: v[k] for k in ("status", "width", "height")}} for url, v in ans["images"].items()]
    records: list[dict[str, Any]] = [
        {"url": f"u:{t}", "title": t, "stub": False, "images": images if n == 0 else [],
         "related": [{"url": f"u:{x}", "resolved": True} for x in ans["links"].get(t, [])]}
        for n, t in enumerate(ans["titles"])]
    return records + [{"url": s, "title": "cited", "stub": True} for s in ans["stubs"]]


def test_the_export_check_passes_a_right_export_and_fails_each_kind_of_wrong_one(tmp_path: Path) -> None:
    ans = generate(tmp_path / "d", 150, seed=4)
    right = perfect_export(ans)
    score = checkexport.check(ans, right)
    assert score.passed == score.total and not score.misses
    no_stub = [r for r in right if not r["stub"]] + [r for r in right if r["stub"]][1:]
    assert not checkexport.check(ans, no_stub).stubs
    wrong_image = json.loads(json.dumps(right))
    wrong_image[0]["images"][0]["status"] = "unreachable"
    assert checkexport.check(ans, wrong_image).images[0] == len(ans["images"]) - 1
    unlinked = json.loads(json.dumps(right))
    linked = next(r for r in unlinked if r.get("related"))
    linked["related"][0]["resolved"] = False
    assert checkexport.check(ans, unlinked).links[0] == len(ans["links"]) - 1
    export = tmp_path / "export.jsonl"
    export.write_text("\n".join(json.dumps(r) for r in right[1:]), encoding="utf-8")
    res = subprocess.run([sys.executable, "-m", "tools.checkexport", str(answers_path(tmp_path / "d")), str(export)],
                         cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 1 and "items off" in res.stdout


@contextmanager
def image_host(*args: str) -> Iterator[tuple[subprocess.Popen[str], int]]:
    proc = subprocess.Popen([sys.executable, "-m", "tools.imagehost", "--port", "0", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("listening on "), proc.stderr.read() if proc.stderr else line
        yield proc, int(line.split(",")[0].rsplit(":", 1)[1])
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *_: Any) -> None:
        return None


def fetch(url: str, follow: bool = True, **headers: str) -> tuple[int, dict[str, str], bytes]:
    opener = urllib.request.build_opener(*([] if follow else [NoRedirect()]))
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=10) as res:
            return res.status, dict(res.headers), res.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_every_path_of_the_image_host(tmp_path: Path) -> None:
    stats = tmp_path / "stats.json"
    with image_host("--host", "127.0.0.1,127.0.0.2", "--stats-file", str(stats)) as (_, port):
        b, b2 = f"http://127.0.0.1:{port}", f"http://127.0.0.2:{port}"
        status, headers, body = fetch(f"{b2}/ok/64/48/x.png")
        assert status == 200 and headers["Content-Type"] == "image/png" and png_size(body) == (64, 48)
        assert fetch(f"{b}/ok/64/48/x.png", Range="bytes=0-23")[0] == 206
        assert png_size(fetch(f"{b}/redirect/2/30/20/x.png")[2]) == (30, 20)
        assert png_size(fetch(f"{b}/slow/50/7/8/x.png")[2]) == (7, 8)
        assert fetch(f"{b}/status/410/x.png")[0] == 410
        assert fetch(f"{b}/html/x.png")[1]["Content-Type"] == "text/html"
        liar = fetch(f"{b}/liar/5/5/x.png")
        assert liar[1]["Content-Type"] == "image/png" and liar[2].startswith(b"<html>")
        assert fetch(f"{b}/loop/x.png", follow=False)[1]["Location"] == "/loop/x.png"
        assert fetch(f"{b}/to-private/x.png", follow=False)[1]["Location"].startswith("http://169.254.169.254/")
        target = base64.urlsafe_b64encode(b"http://elsewhere.test/a.png").decode().rstrip("=")
        assert fetch(f"{b}/goto/{target}/x.png", follow=False)[1]["Location"] == "http://elsewhere.test/a.png"
        assert fetch(f"{b}/ok/x/y.png")[0] == 400 and fetch(f"{b}/nothing/x.png")[0] == 404
        with urllib.request.urlopen(f"{b}/huge/x.png", timeout=10) as res:
            assert res.headers["Content-Length"] == str(2 * 1024**3) and res.read(8) == png(100, 100)[:8]
        counts = json.loads(fetch(f"{b}/__stats")[2])["by_kind"]
        assert counts["ok"] == 4 and counts["redirect"] == 3 and counts["goto"] == 1
    assert json.loads(stats.read_text())["by_kind"]["huge"] == 1


def test_only_loopback_addresses_are_served() -> None:
    res = subprocess.run([sys.executable, "-m", "tools.imagehost", "--port", "0", "--host", "127.0.0.1,10.1.2.3"],
                         cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert res.returncode != 0 and "10.1.2.3 is not a loopback address" in res.stderr


def test_far_host_latency_is_paid_per_answer_and_once_more_per_connection() -> None:
    import http.client

    with image_host("--latency-ms", "150", "--connect-ms", "1500") as (_, port):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        times = []
        for _ in range(2):
            started = time.monotonic()
            conn.request("GET", "/ok/4/4/x.png")
            conn.getresponse().read()
            times.append(time.monotonic() - started)
        conn.close()
    assert times[0] >= 1.65  # handshake + round trip
    assert 0.15 <= times[1] < 1.5  # the same connection again: the round trip, no second handshake


def test_kill_ends_the_process_that_asked() -> None:
    with image_host() as (_, port):
        client = subprocess.Popen([sys.executable, "-c", "import sys, urllib.request; "
                                   f"urllib.request.urlopen('http://127.0.0.1:{port}/kill/x.png', timeout=20)"])
        assert client.wait(20) == -signal.SIGKILL


def test_the_yaml_differential_check_runs_and_can_fail() -> None:
    res = subprocess.run([sys.executable, "-m", "tools.yamldiff", "--count", "2000", "--seed", "2"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "2000 texts (seed 2)" in res.stdout and " 0 disagreements" in res.stdout
    answered = int(res.stdout.split(", ")[1].split()[0])
    assert answered > 200  # the fast path was really exercised

    def wrong(text: str) -> dict[str, Any] | None:  # a fast path that reads quality as text
        got = yamldiff.fast(text)
        if got is not None and isinstance(got.get("quality"), int):
            got["quality"] = str(got["quality"])
        return got

    assert yamldiff.run(300, 2, fast_path=wrong).disagreements


@pytest.mark.parametrize("text", ["title: Hi\nquality: 37\n", "a:\n  - 1\n  - x\n"])
def test_the_two_paths_agree_on_plain_front_matter(text: str) -> None:
    assert yamldiff.same(yamldiff.fast(text), yamldiff.libyaml(text))
