"""Bounds on untrusted input, as small typed config values (part of ``worker.settings.Settings``).

Example::

    ParseLimits(max_bytes=1_048_576, max_related=500)
    ImageLimits(allow_networks=["127.0.0.1/32"], max_bytes=1 << 20)
"""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, Field


def port_range(value: object) -> tuple[int, int]:
    """A port (``443``) or a range (``"8000-8099"``) as (low, high)."""
    if isinstance(value, tuple | list) and len(value) == 2:
        low, high = (int(v) for v in value)
    elif isinstance(value, int) and not isinstance(value, bool):
        low = high = value
    elif isinstance(value, str):
        first, _, last = value.strip().partition("-")
        low, high = int(first), int(last or first)
    else:
        raise ValueError("a port (443) or a range of ports (\"8000-8099\")")
    if not 1 <= low <= high <= 65535:
        raise ValueError(f"ports are 1 to 65535, low before high: {value!r}")
    return low, high


PortRange = Annotated[tuple[int, int], BeforeValidator(port_range)]


class ParseLimits(BaseModel):
    """What a drop file may be: checked before and while parsing, so a hostile file costs little."""

    max_bytes: int = 1_048_576  # checked from the file size before the file is read
    # nesting of mappings and lists; at most 200: what reads and writes the data afterwards recurses once a level
    max_depth: int = Field(default=20, ge=1, le=200)
    max_nodes: int = 100_000  # YAML nodes, after aliases are expanded (alias bombs)
    max_aliases: int = 100
    max_list: int = 1_000  # items in any one list (images, topics, related)
    max_string: int = 100_000  # characters in any one string
    max_number_chars: int = 100  # characters in any one number, whatever its base (1:30:00, 0x1F, 0b1, 1_000)


class ImageLimits(BaseModel):
    """How image URLs are checked. Private, loopback and link-local addresses are refused unless allowed here."""

    allow_networks: list[IPv4Network | IPv6Network] = []
    # Inside allow_networks, only these ports (a port or "low-high"): an allowed private host also runs Redis,
    # PostgreSQL, admin consoles... Public addresses are not limited.
    allow_ports: list[PortRange] = [(80, 80), (443, 443)]
    max_bytes: int = 1_048_576  # bytes read to find an image's size (JPEG metadata can be hundreds of KiB)
    timeout_seconds: float = 10.0  # one overall deadline per URL: a slow-drip server can't stretch it
    connect_timeout_seconds: float = 3.0
    dns_timeout_seconds: float = 3.0
    max_redirects: int = 5
    concurrency: int = 64  # in flight per worker process
    per_host: int = 8  # in flight per host, so one slow host can't starve the others
    retries: int = 2  # for transient failures only (timeouts, resets, 5xx, 429)
    backoff_seconds: float = 0.2
    cache_ok_seconds: int = 86_400
    cache_gone_seconds: int = 3_600  # 404 and 410
    user_agent: str = "feedworker/0.1 (+image check)"
