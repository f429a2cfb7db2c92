"""Refusals of non-loopback places, end to end, where a leak could not leave the machine anyway.

The check runs in a fresh network namespace (``unshare -n``) whose only interface is its loopback, carrying the
metadata address 169.254.169.254, a private 10.0.0.1, a CGNAT 100.64.0.1 and a ULA fd00::1. A canary HTTP server
listens on each, and a plain client first proves each one reachable (so a broken guard WOULD be caught); then the
checker must block every way of naming them, and no canary may see a single request.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PLACES = {"metadata": "169.254.169.254", "private": "10.0.0.1", "cgnat": "100.64.0.1", "ula": "fd00::1"}
SETUP = ["ip link set lo up"] + [f"ip addr add {a}/{128 if ':' in a else 32} dev lo" for a in PLACES.values()]


def _namespace_available() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = subprocess.run(["unshare", "-n", "sh", "-c", " && ".join(SETUP)], capture_output=True, timeout=10)
    return probe.returncode == 0


def test_no_request_reaches_metadata_private_or_ula_addresses_in_any_spelling() -> None:
    if not _namespace_available():
        pytest.skip("needs unshare -n and ip (root or user namespaces); the policy tables cover the same rules")
    script = " && ".join([*SETUP, f"exec {sys.executable} {Path(__file__).resolve()} --child"])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(["unshare", "-n", "sh", "-c", script], capture_output=True, text=True, timeout=60,
                          cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["controls"] == {name: 1 for name in PLACES}  # each canary was reachable
    assert {url: r["status"] for url, r in report["results"].items()} == {url: "blocked" for url in report["results"]}
    assert report["canary_hits"] == {name: 0 for name in PLACES}
    assert report["allowed"] == "ok"  # the allow-listed server was checked normally beside them


def _child() -> None:
    """Inside the namespace: canaries, a reachability control, then the checker. Prints one JSON line."""
    from tests.test_images import Host, StaticResolver, b64, check

    allowed = Host("127.0.0.1")
    canaries = {name: Host(address) for name, address in PLACES.items()}
    controls = {}
    for name, canary in canaries.items():
        conn = http.client.HTTPConnection(canary.bind, canary.port, timeout=2)
        conn.request("GET", "/control")
        controls[name] = int(conn.getresponse().status == 404)
        conn.close()
    port = {name: c.port for name, c in canaries.items()}
    resolver = StaticResolver({f"{name}.test": [address] for name, address in PLACES.items()}
                              | {"mixed.test": ["127.0.0.1", "10.0.0.1"]})
    targets = [
        f"http://169.254.169.254:{port['metadata']}/latest/meta-data/",
        f"http://2852039166:{port['metadata']}/latest/meta-data/",
        f"http://0xa9.0xfe.0xa9.0xfe:{port['metadata']}/latest/meta-data/",
        f"http://[::ffff:169.254.169.254]:{port['metadata']}/latest/meta-data/",
        f"http://metadata.test:{port['metadata']}/latest/meta-data/",
        f"http://10.0.0.1:{port['private']}/a.png",
        f"http://private.test:{port['private']}/a.png",
        f"http://mixed.test:{port['private']}/a.png",
        f"http://100.64.0.1:{port['cgnat']}/a.png",
        f"http://cgnat.test:{port['cgnat']}/a.png",
        f"http://[fd00::1]:{port['ula']}/a.png",
        f"http://ula.test:{port['ula']}/a.png",
    ]
    urls = targets + [allowed.url(f"/goto/{b64(t)}/r.png") for t in targets]
    results = check([*urls, allowed.url("/ok/8/8/fine.png")], resolver)
    hits = {name: sum(n for path, n in c.paths.items() if path != "/control") for name, c in canaries.items()}
    print(json.dumps({"controls": controls, "canary_hits": hits,
                      "allowed": results.pop(allowed.url("/ok/8/8/fine.png"))["status"],
                      "results": {u: dict(r) for u, r in results.items()}}))


if __name__ == "__main__" and sys.argv[1:] == ["--child"]:
    _child()
