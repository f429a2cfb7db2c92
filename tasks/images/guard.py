"""The SSRF policy of the image checker: which URLs and addresses it may reach, enforced on the connection.

Three checks, each on what the next step will really use:

1. ``judge_url`` (before any I/O): http/https only, no userinfo, a well-formed host. A numeric IPv4 host in any
   spelling the resolver would accept (``2130706433``, ``0x7f.1``, ``0177.0.0.1``, ``127.1``) is read as the
   WHATWG URL parser and ``inet_aton`` read it, judged as that address, and the URL is rewritten to the canonical
   dotted form, so the library below sees the address we judged.
2. ``GuardedResolver`` (aiohttp's resolver hook): resolves a name once, under a deadline, and refuses it if ANY
   address is not allowed, even beside allowed ones; what it returns is exactly what was judged, so aiohttp
   connects to a checked address (pinning: a rebinding DNS answer later can't swap it in).
3. ``guarded_socket`` (aiohttp's socket factory): the last line, judging each address just before ``connect()``;
   it catches anything that bypassed 1 and 2 (it should never fire; if it does, a bug above is logged).

An address is refused when it is not global unicast: loopback, private, link-local (169.254.0.0/16: the cloud
metadata address), carrier-grade NAT, multicast, reserved, unspecified, documentation, IPv6 ULA/link-local/site-
local, or an IPv6 form that embeds a refused IPv4 (mapped, compatible, NAT64, 6to4, Teredo) -- unless it lies in
an allowed network (``ImageLimits.allow_networks``, e.g. ``["127.0.0.1/32"]`` for tests). An address reached only
because its network is allowed is reached only on an allowed port (``ImageLimits.allow_ports``, 80 and 443 unless
configured): allowing a private host must not open its Redis or PostgreSQL. Public addresses take any port.

Example::

    address_refusal(ip_address("64:ff9b::a9fe:a9fe"), [])
        -> "64:ff9b::a9fe:a9fe is an IPv6 form of 169.254.169.254 (link-local: the cloud metadata address)"
    address_refusal(ip_address("127.0.0.1"), [ip_network("127.0.0.1/32")])  -> None
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

import httpx
from aiohappyeyeballs import AddrInfoType
from aiohttp.abc import AbstractResolver, ResolveResult

logger = logging.getLogger(__name__)

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network
PortRanges = Sequence[tuple[int, int]]  # (low, high); None where a port rule does not apply


class PolicyRefusal(OSError):
    """A request or connection refused by policy, before any packet. An OSError so aiohttp keeps it in the chain."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_V4_SPECIAL: tuple[tuple[IPv4Network, str], ...] = tuple(
    (IPv4Network(net), label)
    for net, label in (
        ("0.0.0.0/8", "unspecified"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "carrier-grade NAT"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.169.254/32", "link-local: the cloud metadata address"),
        ("169.254.0.0/16", "link-local"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "IETF protocol assignments"),
        ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "6to4 relay anycast"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),  # and 255.255.255.255, broadcast
    )
)
_V6_SPECIAL: tuple[tuple[IPv6Network, str], ...] = tuple(
    (IPv6Network(net), label)
    for net, label in (
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("64:ff9b:1::/48", "local-use NAT64"),
        ("100::/64", "discard-only"),
        ("2001::/23", "IETF protocol assignments"),
        ("2001:db8::/32", "documentation"),
        ("3fff::/20", "documentation"),
        ("fc00::/7", "unique local (ULA)"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local"),
        ("ff00::/8", "multicast"),
    )
)
_GLOBAL_UNICAST = IPv6Network("2000::/3")
_MAPPED, _COMPAT = IPv6Network("::ffff:0:0/96"), IPv6Network("::/96")
_TRANSLATED, _NAT64 = IPv6Network("::ffff:0:0:0/96"), IPv6Network("64:ff9b::/96")
_6TO4, _TEREDO = IPv6Network("2002::/16"), IPv6Network("2001::/32")


def _embedded_v4(ip: IPv6Address) -> list[IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (and would reach through a translator or tunnel)."""
    low = IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _MAPPED or ip in _TRANSLATED or ip in _NAT64 or (ip in _COMPAT and int(ip) > 1):
        return [low]
    if ip in _6TO4:
        return [IPv4Address((int(ip) >> 80) & 0xFFFFFFFF)]
    if ip in _TEREDO and ip.teredo is not None:
        return list(ip.teredo)
    return []


def address_refusal(ip: Address, allow: Sequence[Network], port: int | None = None,
                    ports: PortRanges | None = None) -> str | None:
    """Why this address (on ``port``) may not be reached ("10.0.0.1 is private"), or None when it may."""
    if isinstance(ip, IPv6Address) and ip.scope_id:
        ip = IPv6Address(ip.compressed.split("%", 1)[0])
    label = _refusal_label(ip, allow)
    if label:
        return f"{ip} is {label}"
    if port is None or ports is None or any(low <= port <= high for low, high in ports):
        return None
    if _refusal_label(ip, ()) is None:
        return None  # a public address: any port
    return f"port {port} of {ip} is not allowed: an allowed network is reached only on {spell_ports(ports)}"


def spell_ports(ports: PortRanges) -> str:
    """``[(80, 80), (8000, 8099)]`` -> ``"ports 80, 8000-8099 (images.allow_ports)"``."""
    listed = ", ".join(str(low) if low == high else f"{low}-{high}" for low, high in ports) or "no port"
    return f"ports {listed} (images.allow_ports)"


def _refusal_label(ip: Address, allow: Sequence[Network]) -> str | None:
    if any(ip.version == net.version and ip in net for net in allow):
        return None
    if isinstance(ip, IPv4Address):
        label = next((label for net, label in _V4_SPECIAL if ip in net), None)
        if label is None and not ip.is_global:  # belt and braces: anything Python knows as non-global
            label = "not globally routable"
        return label
    embedded = _embedded_v4(ip)
    for inner in embedded:
        inner_label = _refusal_label(inner, allow)
        if inner_label:
            return f"an IPv6 form of {inner} ({inner_label})"
    if embedded:  # judged by the IPv4 address it leads to
        return None
    label = next((label for net, label in _V6_SPECIAL if ip in net), None)
    if label is None and ip not in _GLOBAL_UNICAST:
        label = "reserved (not global unicast)"
    return label


def addresses_refusal(addresses: Iterable[str], allow: Sequence[Network], port: int | None = None,
                      ports: PortRanges | None = None) -> str | None:
    """Refuse the whole answer if any one address is refused (a name beside an allowed address is no excuse)."""
    for text in addresses:
        try:
            ip = ip_address(text.split("%", 1)[0])
        except ValueError:
            return f"unparsable address {text!r}"
        why = address_refusal(ip, allow, port, ports)
        if why:
            return why
    return None


def parse_networks(values: Iterable[str | Network]) -> list[Network]:
    return [v if isinstance(v, IPv4Network | IPv6Network) else ip_network(v) for v in values]


# ------------------------------------------------------------------------------------------- 1. the URL itself
@dataclass(frozen=True, slots=True)
class Target:
    """A URL that passed the URL-level checks; ``url`` is what to request (numeric hosts made canonical)."""

    url: httpx.URL
    host: str  # the host as the connector will see it (lower case, IDNA-encoded, no brackets)
    port: int
    address: Address | None  # when the host is an address, the one judged


_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_NAME = re.compile(rf"^(?=.{{1,253}}\.?$){_LABEL}(?:\.{_LABEL})*\.?$")  # LDH labels (and _), IDNA already applied


def judge_url(url: str | httpx.URL, allow: Sequence[Network], ports: PortRanges | None = None) -> Target:
    """Check a URL before any I/O; raise PolicyRefusal with the reason."""
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise PolicyRefusal(f"invalid URL: {exc}") from None
    if parsed.scheme not in ("http", "https"):
        raise PolicyRefusal(f"scheme {parsed.scheme or '(none)'!r} is not http or https")
    if parsed.userinfo:
        raise PolicyRefusal("URL carries credentials (userinfo)")
    host = parsed.raw_host.decode("ascii", "replace").lower()
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    address = _literal_address(host)
    if address is None:
        if not _NAME.match(host):
            raise PolicyRefusal(f"invalid host {host!r}")
        return Target(parsed, host, port, None)
    why = address_refusal(address, allow, port, ports)
    if why:
        raise PolicyRefusal(why)
    canonical = str(address)
    if canonical != host:  # e.g. 0x7f.1 -> 127.0.0.1: the connector must see the address we judged
        parsed = parsed.copy_with(host=canonical)
    return Target(parsed, canonical, port, address)


def _literal_address(host: str) -> Address | None:
    """The address a host denotes by itself (no DNS): IPv6 literals, and IPv4 in any numeric spelling."""
    if ":" in host:
        try:
            return ip_address(host.split("%", 1)[0])
        except ValueError:
            raise PolicyRefusal(f"invalid IPv6 host {host!r}") from None
    return _numeric_ipv4(host)


_NUMBER = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")


def _numeric_ipv4(host: str) -> IPv4Address | None:
    """WHATWG's IPv4 parser (what browsers and inet_aton accept): 1-4 parts, decimal, 0x-hex or 0-octal.

    A host whose last label is a number but that is no valid address is refused: resolvers disagree on it.
    """
    parts = host.split(".")
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()
    if not parts or not _NUMBER.match(parts[-1]):
        return None
    try:
        numbers = [_ipv4_number(p) for p in parts]
    except ValueError:
        raise PolicyRefusal(f"invalid numeric host {host!r}") from None
    if len(numbers) > 4 or any(n > 255 for n in numbers[:-1]) or numbers[-1] >= 256 ** (5 - len(numbers)):
        raise PolicyRefusal(f"invalid numeric host {host!r}")
    value = numbers[-1]
    for i, n in enumerate(numbers[:-1]):
        value += n << (8 * (3 - i))
    return IPv4Address(value)


def _ipv4_number(part: str) -> int:
    if part.startswith("0x"):
        return int(part[2:] or "0", 16)
    if len(part) > 1 and part.startswith("0"):
        return int(part, 8)
    return int(part, 10)


# ---------------------------------------------------------------------------------- 2. the resolver hook (pins)
class GuardedResolver(AbstractResolver):
    """Resolve under a deadline; refuse the name if any address is refused; return exactly what was judged."""

    def __init__(self, inner: AbstractResolver, allow: Sequence[Network], timeout: float,
                 ports: PortRanges | None = None) -> None:
        self._inner, self._allow, self._timeout, self._ports = inner, list(allow), timeout, ports

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        try:
            async with asyncio.timeout(self._timeout):
                infos = await self._inner.resolve(host, port, family)
        except TimeoutError:
            raise socket.gaierror(socket.EAI_AGAIN, f"DNS lookup of {host} timed out") from None
        why = addresses_refusal((info["host"] for info in infos), self._allow, port or None, self._ports)
        if why:
            raise PolicyRefusal(f"{host} resolves to a refused address: {why}")
        if not infos:
            raise socket.gaierror(socket.EAI_NONAME, f"{host} has no address")
        return infos

    async def close(self) -> None:
        await self._inner.close()


# ---------------------------------------------------------------------------------- 3. the socket factory (last)
def guarded_socket(allow: Sequence[Network], ports: PortRanges | None = None
                   ) -> Callable[[AddrInfoType], socket.socket]:
    """A socket factory for aiohttp that refuses to create a socket for a refused address (or port)."""
    allowed = list(allow)

    def factory(addr_info: AddrInfoType) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        why = addresses_refusal([str(sockaddr[0])], allowed, int(sockaddr[1]), ports)
        if why:
            logger.error("connection to a refused address stopped at the socket: %s", why)
            raise PolicyRefusal(why)
        return socket.socket(family, type_, proto)

    return factory
