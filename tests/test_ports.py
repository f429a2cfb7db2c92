"""Inside ``images.allow_networks`` only the ports of ``images.allow_ports`` (80 and 443 unless configured).

Decided before any connection: the URL check (literal addresses), the resolver hook (names) and the socket factory
each refuse; end to end, the refused listener on loopback counts no connection at all.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from ipaddress import ip_network
from typing import Any

import pytest
from pydantic import ValidationError

from tasks.images.guard import PolicyRefusal, address_refusal, guarded_socket, judge_url
from tasks.limits import ImageLimits
from tests.test_images import Host, StaticResolver, b64, check_one
from worker.settings import Settings

LOOPBACK = [ip_network("127.0.0.1/32")]
PRIVATE = [ip_network("10.0.0.0/8")]
WEB = ImageLimits().allow_ports  # the default: 80 and 443


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379/a.png", "http://127.0.0.1:5432/a.png",
                                 "https://127.0.0.1:8443/a.png", "http://[::ffff:127.0.0.1]:6379/a.png",
                                 "http://0x7f.1:25/a.png"])
def test_an_allowed_network_is_refused_on_other_ports(url: str) -> None:
    with pytest.raises(PolicyRefusal) as refused:
        judge_url(url, LOOPBACK, WEB)
    reason = str(refused.value)
    assert "is not allowed: an allowed network is reached only on ports 80, 443 (images.allow_ports)" in reason


@pytest.mark.parametrize("url", ["http://127.0.0.1/a.png", "https://127.0.0.1/a.png", "http://127.0.0.1:443/a.png"])
def test_an_allowed_network_on_its_ports(url: str) -> None:
    assert judge_url(url, LOOPBACK, WEB).port in (80, 443)


def test_ranges_and_public_addresses() -> None:
    ports = ImageLimits(allow_ports=[8080, "9000-9099"]).allow_ports
    assert ports == [(8080, 8080), (9000, 9099)]
    assert judge_url("http://10.1.2.3:9050/a.png", PRIVATE, ports).port == 9050
    with pytest.raises(PolicyRefusal, match="ports 8080, 9000-9099"):
        judge_url("http://10.1.2.3:9100/a.png", PRIVATE, ports)
    assert judge_url("http://93.184.215.14:6379/a.png", PRIVATE, WEB).port == 6379  # public: any port
    with pytest.raises(PolicyRefusal, match="is private"):  # not allowed at all: the network rule speaks first
        judge_url("http://192.168.1.1:80/a.png", PRIVATE, WEB)


def test_names_and_sockets_are_judged_on_their_port() -> None:
    assert address_refusal(LOOPBACK[0][0], LOOPBACK, 80, WEB) is None
    assert "port 6379" in (address_refusal(LOOPBACK[0][0], LOOPBACK, 6379, WEB) or "")
    factory = guarded_socket(LOOPBACK, WEB)
    with pytest.raises(PolicyRefusal, match=r"port 6379 of 127\.0\.0\.1"):
        factory((socket.AF_INET, socket.SOCK_STREAM, 0, "", ("127.0.0.1", 6379)))
    factory((socket.AF_INET, socket.SOCK_STREAM, 0, "", ("127.0.0.1", 80))).close()


def test_settings_read_ports_and_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEEDWORKER_IMAGES__ALLOW_PORTS", '[80, "8000-8099"]')
    assert Settings().images.allow_ports == [(80, 80), (8000, 8099)]
    for bad in ([0], ["9-1"], [70000], ["http"]):
        with pytest.raises(ValidationError):
            ImageLimits(allow_ports=bad)


@pytest.fixture
def hosts() -> Iterator[tuple[Host, Host]]:
    allowed, other = Host(), Host()
    yield allowed, other
    allowed.close()
    other.close()


def test_end_to_end_no_connection_reaches_a_port_not_allowed(hosts: tuple[Host, Host]) -> None:
    allowed, other = hosts
    only: dict[str, Any] = {"allow_ports": [allowed.port]}
    assert check_one(allowed.url("/ok/3/2/a.png"), **only)["status"] == "ok"
    by_address = check_one(other.url("/ok/3/2/a.png"), **only)
    resolver = StaticResolver({"other.test": ["127.0.0.1"]})
    by_name = check_one(other.url("/ok/3/2/a.png", host="other.test"), resolver, **only)
    redirected = check_one(allowed.url(f"/goto/{b64(other.url('/ok/3/2/a.png'))}/r.png"), **only)
    for result in (by_address, by_name, redirected):
        assert result["status"] == "blocked"
        assert f"port {other.port} of 127.0.0.1 is not allowed" in (result["reason"] or "")
    assert other.connections == 0 and allowed.connections >= 2
