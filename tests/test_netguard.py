"""The SSRF policy, decided on addresses and URLs alone: no connection is made by any test here."""

from __future__ import annotations

import asyncio
import socket
from ipaddress import ip_address, ip_network

import pytest
import yarl
from aiohttp.abc import AbstractResolver, ResolveResult

from tasks.images.guard import (
    GuardedResolver,
    PolicyRefusal,
    address_refusal,
    addresses_refusal,
    guarded_socket,
    judge_url,
)

REFUSED = [  # (address, what the reason must say)
    ("127.0.0.1", "loopback"), ("127.255.255.254", "loopback"), ("10.1.2.3", "private"),
    ("172.16.0.1", "private"), ("172.31.255.255", "private"), ("192.168.1.1", "private"),
    ("169.254.169.254", "cloud metadata"), ("169.254.0.1", "link-local"), ("100.64.0.1", "carrier-grade NAT"),
    ("100.127.255.255", "carrier-grade NAT"), ("0.0.0.0", "unspecified"), ("0.1.2.3", "unspecified"),
    ("224.0.0.1", "multicast"), ("239.255.255.250", "multicast"), ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"), ("192.0.0.8", "IETF"), ("192.0.2.1", "documentation"),
    ("198.18.0.1", "benchmarking"), ("198.51.100.7", "documentation"), ("203.0.113.9", "documentation"),
    ("::", "unspecified"), ("::1", "loopback"), ("fe80::1", "link-local"), ("fd00::1", "unique local"),
    ("fc00::1", "unique local"), ("fec0::1", "site-local"), ("ff02::1", "multicast"), ("2001:db8::1", "documentation"),
    ("100::1", "discard"), ("4000::1", "not global unicast"), ("64:ff9b:1::a00:1", "local-use NAT64"),
    # IPv6 forms that embed a refused IPv4 address
    ("::ffff:127.0.0.1", "of 127.0.0.1 (loopback)"), ("::ffff:169.254.169.254", "of 169.254.169.254"),
    ("::ffff:0:a00:1", "of 10.0.0.1"), ("::127.0.0.1", "of 127.0.0.1"), ("::a9fe:a9fe", "of 169.254.169.254"),
    ("64:ff9b::a9fe:a9fe", "of 169.254.169.254"), ("64:ff9b::10.0.0.1", "of 10.0.0.1"),
    ("2002:a9fe:a9fe::", "of 169.254.169.254"), ("2002:7f00:1::1", "of 127.0.0.1"),
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "of 127.0.0.1"),  # Teredo: client 127.0.0.1, obfuscated
]
ALLOWED = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "2a00:1450:4001:80b::200e",
           "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"]


@pytest.mark.parametrize(("address", "label"), REFUSED)
def test_refused_addresses(address: str, label: str) -> None:
    reason = address_refusal(ip_address(address), [])
    assert reason is not None and label in reason


@pytest.mark.parametrize("address", ALLOWED)
def test_global_addresses_pass(address: str) -> None:
    assert address_refusal(ip_address(address), []) is None


def test_the_allow_list_opens_exactly_its_networks() -> None:
    allow = [ip_network("127.0.0.1/32"), ip_network("10.0.0.0/8")]
    assert address_refusal(ip_address("127.0.0.1"), allow) is None
    assert address_refusal(ip_address("10.200.0.1"), allow) is None
    assert address_refusal(ip_address("::ffff:127.0.0.1"), allow) is None  # the same place, spelled in IPv6
    assert address_refusal(ip_address("127.0.0.2"), allow) == "127.0.0.2 is loopback"
    assert address_refusal(ip_address("::1"), allow) == "::1 is loopback"


def test_any_refused_address_refuses_the_whole_answer() -> None:
    assert addresses_refusal(["93.184.216.34", "10.0.0.1"], []) == "10.0.0.1 is private"
    assert addresses_refusal(["127.0.0.1", "::1"], [ip_network("127.0.0.1/32")]) == "::1 is loopback"
    assert addresses_refusal(["fe80::1%eth0"], []) == "fe80::1 is link-local"
    assert addresses_refusal(["93.184.216.34", "2606:4700::1"], []) is None
    assert addresses_refusal(["not-an-address"], []) == "unparsable address 'not-an-address'"


# ------------------------------------------------------------------------------------------- the URL, before I/O
NUMERIC_LOOPBACK = ["127.0.0.1", "2130706433", "0x7f000001", "0X7F000001", "017700000001", "0x7f.1", "127.1",
                    "127.0.1", "0x7f.0.0.1", "127.0.0.1.", "0x7f.0x0.0x0.0x1"]


@pytest.mark.parametrize("host", NUMERIC_LOOPBACK)
def test_numeric_ipv4_spellings_are_judged_as_the_address_they_mean(host: str) -> None:
    with pytest.raises(PolicyRefusal, match=r"^127\.0\.0\.1 is loopback$"):
        judge_url(f"http://{host}:8080/a.png", [])
    target = judge_url(f"http://{host}:8080/a.png", [ip_network("127.0.0.1/32")])
    assert (str(target.url), target.host, target.port) == ("http://127.0.0.1:8080/a.png", "127.0.0.1", 8080)


def test_dotted_quads_with_leading_zeros_are_refused_as_invalid() -> None:
    """httpx refuses 4-part dotted hosts with leading zeros (octal to some, decimal to others): blocked either way."""
    for host in ("127.000.000.001", "0177.0.0.1", "0251.0376.0251.0376"):
        with pytest.raises(PolicyRefusal, match=r"^invalid URL: Invalid IPv4 address"):
            judge_url(f"http://{host}/a.png", [ip_network("0.0.0.0/0")])


@pytest.mark.parametrize("host", ["169.254.169.254", "2852039166", "0xa9fea9fe", "0xa9.0xfe.0xa9.0xfe", "169.254.43518",
                                  "[::ffff:169.254.169.254]", "[::ffff:a9fe:a9fe]", "[64:ff9b::a9fe:a9fe]",
                                  "[2002:a9fe:a9fe::]", "[fe80::a9fe:a9fe]", "[::169.254.169.254]"])
def test_the_metadata_address_in_every_spelling(host: str) -> None:
    with pytest.raises(PolicyRefusal, match=r"169\.254\.169\.254|fe80"):
        judge_url(f"http://{host}/latest/meta-data/", [])


@pytest.mark.parametrize(("url", "reason"), [
    ("ftp://example.com/a.png", "scheme 'ftp' is not http or https"),
    ("file:///etc/passwd", "scheme 'file' is not http or https"),
    ("javascript:alert(1)", "scheme 'javascript' is not http or https"),
    ("//example.com/a.png", "scheme '(none)' is not http or https"),
    ("http://user:secret@example.com/a.png", "URL carries credentials (userinfo)"),
    ("http://%31%32%37.0.0.1/", "invalid numeric host '%31%32%37.0.0.1'"),
    ("http://exa mple.com/", None),
    ("http://example.123/", "invalid numeric host 'example.123'"),
    ("http://256.0.0.1/", "invalid URL: Invalid IPv4 address: '256.0.0.1'"),
    ("http://0x100000000/", "invalid numeric host '0x100000000'"),
    ("http://1.2.3.4.5/", "invalid numeric host '1.2.3.4.5'"),
    ("http://[::1/", None),
])
def test_url_level_refusals(url: str, reason: str | None) -> None:
    with pytest.raises(PolicyRefusal) as refused:
        judge_url(url, [])
    if reason is not None:
        assert refused.value.reason == reason


@pytest.mark.parametrize("url", ["http://evil.test\\@127.0.0.1/", "http://127.0.0.1#@evil.test/",
                                 "http://evil.test?@127.0.0.1/", "http://evil.test%2f@127.0.0.1/",
                                 "http://evil.test:@127.0.0.1/", "http://127.0.0.1%00.evil.test/",
                                 "http://ex\tample.test/", "http://[::ffff:127.0.0.1]%2f/"])
def test_parser_confusions_are_refused_or_judged_as_the_connector_will_see_them(url: str) -> None:
    """The host we judge must be the host aiohttp (yarl) connects to; the resolver and socket hooks back this up."""
    try:
        target = judge_url(url, [])
    except PolicyRefusal:
        return
    assert yarl.URL(str(target.url)).raw_host == target.host and target.host == "evil.test"


def test_names_pass_to_the_resolver_lower_cased_and_idna_encoded() -> None:
    assert judge_url("http://@example.com/a.png", []).host == "example.com"  # empty userinfo: nothing to refuse
    target = judge_url("https://Bücher.Example/a.png?q=1", [])
    assert (target.host, target.port, target.address) == ("xn--bcher-kva.example", 443, None)
    assert judge_url("http://8.8.8.8/a.png", []).address == ip_address("8.8.8.8")
    assert str(judge_url("http://134744072/a.png", []).url) == "http://8.8.8.8/a.png"  # public: made canonical


# ------------------------------------------------------------------------- the resolver hook and socket factory
class FixedResolver(AbstractResolver):
    def __init__(self, addresses: list[str]) -> None:
        self.addresses = addresses

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        return [ResolveResult(hostname=host, host=a, port=port, family=socket.AF_INET, proto=0, flags=0)
                for a in self.addresses]

    async def close(self) -> None:
        pass


def resolve(addresses: list[str], allow: list[str] | None = None) -> list[str]:
    guard = GuardedResolver(FixedResolver(addresses), [ip_network(n) for n in allow or []], timeout=1)
    return [info["host"] for info in asyncio.run(guard.resolve("name.test", 80))]


def test_the_resolver_returns_exactly_the_addresses_it_judged() -> None:
    assert resolve(["93.184.216.34", "2606:4700::1"]) == ["93.184.216.34", "2606:4700::1"]
    assert resolve(["127.0.0.1"], ["127.0.0.1/32"]) == ["127.0.0.1"]


@pytest.mark.parametrize("answer", [["169.254.169.254"], ["93.184.216.34", "10.0.0.1"], ["::ffff:127.0.0.1"],
                                    ["64:ff9b::a9fe:a9fe"], ["127.0.0.1"]])
def test_the_resolver_refuses_a_name_with_any_refused_address(answer: list[str]) -> None:
    with pytest.raises(PolicyRefusal, match=r"^name\.test resolves to a refused address: "):
        resolve(answer)


def test_the_system_resolver_reads_odd_spellings_as_addresses() -> None:
    """getaddrinfo reads 0x7f000001 (a "name" to aiohttp) as 127.0.0.1 without asking DNS; the guard sees that."""

    async def ask(host: str) -> list[ResolveResult]:
        import aiohttp

        return await GuardedResolver(aiohttp.ThreadedResolver(), [], timeout=1).resolve(host, 80)

    for host in ("0x7f000001", "localhost", "2130706433", "127.1"):
        with pytest.raises(PolicyRefusal, match=r"resolves to a refused address: (127\.0\.0\.1|::1) is loopback$"):
            asyncio.run(ask(host))


def test_the_socket_factory_refuses_before_connect() -> None:
    factory = guarded_socket([ip_network("127.0.0.1/32")])
    with pytest.raises(PolicyRefusal, match=r"169\.254\.169\.254"):
        factory((socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", 80)))
    with pytest.raises(PolicyRefusal, match="unparsable"):
        factory((socket.AF_INET, socket.SOCK_STREAM, 6, "", ("2130706433", 80)))
    sock = factory((socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 80)))
    sock.close()
