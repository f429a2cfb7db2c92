"""Canonical item identity: one spelling of a web address per item, so two spellings of one page are one record.

``canonical_url(url)`` returns that spelling, or raises ``ValueError`` with a short reason a person can act on
("not an http(s) URL", "no host", "invalid port", ...). It is also the judge of URL shape for ``webUrl`` and
``originalUrl`` (``tasks.parse.models``). The rules are in docs/identity.md; in detail::

    http://Example.COM:80/a/./b/?utm_source=x&id=7&FBCLID=1#top  ->  https://example.com/a/b/?id=7

- scheme: http and https are one item; the canonical spelling is ``https``.
- port: the default port of the URL's own scheme is dropped (``http:80``, ``https:443``). ``:443`` is dropped on
  ``http`` too: the canonical scheme is https, whose default it is, so keeping it would not be idempotent
  (``http://h:443/x`` -> ``https://h:443/x`` -> ``https://h/x``); plain HTTP on 443 is in practice a misspelled
  https URL. Any other port stays, ``:80`` on https included (``https://h:80/x`` is its own item).
- host: lower-cased, one trailing dot dropped; an international name is mapped as browsers map it (UTS #46) and
  written in punycode, so ``bücher.example`` and ``xn--bcher-kva.example`` are one item; IPv6 literals compressed.
- userinfo (``user:pw@host``) is refused: credentials are not part of an item and must not land in the store.
- path: empty becomes ``/``; ``.`` and ``..`` segments are resolved (RFC 3986 5.2.4); case and trailing slash kept.
- percent-encoding (path and query, RFC 3986 6.2.2): escapes of unreserved characters are decoded (``%7E`` ->
  ``~``), other escapes kept with upper-case hex (``%2f`` -> ``%2F``, never decoded to ``/``), characters a URI
  cannot hold literally (non-ASCII as UTF-8, ``{}|^[]<>"\\`` and a ``%`` that starts no escape) are encoded.
- query: tracking parameters dropped (``TRACKING_PARAMS``, ``TRACKING_PREFIXES``, names compared
  case-insensitively, after the decoding above); every other parameter kept as written, in its order (not sorted,
  unlike w3lib's canonicalize_url); empty ``&&`` pieces dropped; no ``?`` when nothing is left.
- fragment dropped. Surrounding whitespace is stripped; whitespace or control characters inside are refused.
"""

from __future__ import annotations

import functools
import ipaddress
import re

import idna

# Tracking parameter names (lower case), merged from the lists a feed reader and a browser keep:
# - Miniflux, internal/reader/urlcleaner/urlcleaner.go (miniflux/v2, as of 2026-02): its trackingParams map.
#   Its "outbound" ``ref`` is dropped there only when its value is the feed's own host name; we see no feed,
#   so ``ref`` is content here and stays.
# - Firefox's query-stripping list (remote settings collection "query-stripping", the records shipped in
#   services/settings/static-dumps/main/query-stripping.json): all in Miniflux's list too, except ``__s``.
TRACKING_PARAMS: frozenset[str] = frozenset({
    # Facebook
    "fbclid", "_openstat", "fb_action_ids", "fb_action_types", "fb_ref", "fb_source", "fb_comment_id",
    # Humble Bundle
    "hmb_campaign", "hmb_medium", "hmb_source",
    # itm_* (Google-style internal campaigns)
    "itm_campaign", "itm_medium", "itm_source",
    # Google click identifiers, Google Analytics, Google search
    "gclid", "dclid", "gbraid", "wbraid", "gclsrc",
    "campaign_id", "campaign_medium", "campaign_name", "campaign_source", "campaign_term", "campaign_content",
    "srsltid",
    # Yandex, Twitter, Microsoft
    "yclid", "ysclid", "twclid", "msclkid",
    # Mailchimp, Wicked Reports
    "mc_cid", "mc_eid", "mc_tc", "wickedid",
    # HubSpot
    "hsa_cam", "_hsenc", "__hssc", "__hstc", "__hsfp", "_hsmi", "hsctatracking",
    # Olytics, Vero, Marketo, Adobe, Beehiiv, Branch.io, Readwise
    "rb_clickid", "oly_anon_id", "oly_enc_id", "vero_id", "vero_conv", "mkt_tok", "sc_cid", "_bhlid",
    "_branch_match_id", "_branch_referrer", "__readwiselocation",
    # Drip (Firefox's list only)
    "__s",
})
# Name prefixes, as Miniflux defines them: Urchin (Google Analytics) and Matomo campaign parameters.
TRACKING_PREFIXES: tuple[str, ...] = ("utm_", "mtm_")

# Each URL is canonicalized several times (validation, linking, store) and recurs across drops;
# 16k entries of ~300 bytes bound the cache near 5 MB per process.
_CACHE_SIZE = 16384

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
_DEFAULT_PORT = {"http": 80, "https": 443}
_CANONICAL_DEFAULT_PORT = 443
# "//authority path ?query #fragment" (RFC 3986 appendix B), after the scheme's colon
_AFTER_SCHEME = re.compile(r"//([^/?#]*)([^?#]*)(?:\?([^#]*))?(?:#.*)?", re.DOTALL)
_WHITESPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")
_ASCII_HOST = re.compile(r"[a-z0-9_\-]+(?:\.[a-z0-9_\-]+)*")

# RFC 3986: unreserved characters are the same item encoded or not; pchar adds sub-delims, ":" and "@".
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PATH_LITERAL = r"A-Za-z0-9\-._~!$&'()*+,;=:@/"
_QUERY_LITERAL = _PATH_LITERAL + "?"
_PATH_TO_FIX = re.compile(f"%[0-9A-Fa-f]{{2}}|[^{_PATH_LITERAL}]")
_QUERY_TO_FIX = re.compile(f"%[0-9A-Fa-f]{{2}}|[^{_QUERY_LITERAL}]")


@functools.lru_cache(maxsize=_CACHE_SIZE)
def canonical_url(url: str) -> str:
    """The canonical spelling of an http(s) URL (see the module docstring); ``ValueError`` names what is wrong."""
    scheme, rest = _split_scheme(url.strip())
    if _WHITESPACE_OR_CONTROL.search(rest):
        raise ValueError("contains whitespace or control characters")
    parts = _AFTER_SCHEME.fullmatch(rest)
    if parts is None:
        raise ValueError("no host (expected http(s)://host/...)")
    authority, path, query = parts.groups()
    query_part = "" if query is None else _canonical_query(query)
    return f"https://{_host_and_port(authority, scheme)}{_canonical_path(path)}{query_part}"


def _split_scheme(url: str) -> tuple[str, str]:
    """The lower-cased scheme and what follows its colon; anything but http(s) is refused."""
    match = _SCHEME.match(url)
    if match is None:
        raise ValueError("not an http(s) URL")
    scheme = match.group(1).lower()
    if scheme not in _DEFAULT_PORT:
        raise ValueError(f"not an http(s) URL (scheme {scheme[:20]!r})")
    return scheme, url[match.end():]


def _host_and_port(authority: str, scheme: str) -> str:
    """``host`` or ``host:port`` as the canonical URL writes it."""
    if "@" in authority:
        raise ValueError("contains user info (user:password@); give the address without it")
    if authority.startswith("["):
        literal, bracket, port = authority[1:].partition("]")
        if not bracket or (port and not port.startswith(":")):
            raise ValueError("invalid host")
        host, port = _ipv6_host(literal), port[1:]
    else:
        name, _, port = authority.partition(":")
        host = _domain_host(name)
    return host + _canonical_port(port, scheme)


def _canonical_port(port: str, scheme: str) -> str:
    """``""`` for no port or a default one, ``":N"`` otherwise."""
    if not port:
        return ""  # "http://h:/" has an empty port, which means the default one (as browsers read it)
    if len(port) > 5 or not (port.isascii() and port.isdigit()) or not 0 < int(port) <= 65535:
        raise ValueError("invalid port")
    number = int(port)
    if number in (_DEFAULT_PORT[scheme], _CANONICAL_DEFAULT_PORT):
        return ""
    return f":{number}"


def _ipv6_host(literal: str) -> str:
    try:
        return f"[{ipaddress.IPv6Address(literal).compressed}]"
    except ValueError:
        raise ValueError("invalid host (bad IPv6 address)") from None


def _domain_host(name: str) -> str:
    """A lower-case ASCII host name: international names mapped (UTS #46) and written in punycode."""
    name = name[:-1] if name.endswith(".") else name
    if not name:
        raise ValueError("no host")
    host = name.lower() if name.isascii() else _punycode(name)
    if not _ASCII_HOST.fullmatch(host):
        raise ValueError("invalid host")
    return host


def _punycode(name: str) -> str:
    # Mapping first (case, width, NFC, the ideographic full stop) makes the unicode and xn-- spellings meet.
    try:
        mapped = idna.uts46_remap(name, std3_rules=False)
    except idna.IDNAError:
        raise ValueError("invalid host (not a valid international domain name)") from None
    labels = (label if label.isascii() else "xn--" + label.encode("punycode").decode("ascii")
              for label in mapped.split("."))
    return ".".join(labels)


def _canonical_path(path: str) -> str:
    if not path:
        return "/"
    path = _PATH_TO_FIX.sub(_fix_escape, path)
    return _remove_dot_segments(path) if "/." in path else path


def _canonical_query(query: str) -> str:
    """``"?a=1&b=2"`` without tracking parameters, order kept; ``""`` when nothing is left."""
    kept = [piece for piece in (_QUERY_TO_FIX.sub(_fix_escape, raw) for raw in query.split("&"))
            if piece and not _is_tracking(piece)]
    return "?" + "&".join(kept) if kept else ""


def _is_tracking(piece: str) -> bool:
    name = piece.partition("=")[0].lower()
    return name in TRACKING_PARAMS or name.startswith(TRACKING_PREFIXES)


def _fix_escape(match: re.Match[str]) -> str:
    """One escape or one character that cannot stay literal, in its canonical form."""
    text = match.group()
    if len(text) == 3:  # "%XX"
        char = chr(int(text[1:], 16))
        return char if char in _UNRESERVED else text.upper()
    return "".join(f"%{byte:02X}" for byte in text.encode("utf-8", "surrogatepass"))


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 5.2.4 for an absolute path: ``/a/./b/../c`` -> ``/a/c``."""
    output: list[str] = []
    segments = path.split("/")[1:]
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == "..":
            if output:
                output.pop()
            if last:
                output.append("")
        elif segment == ".":
            if last:
                output.append("")
        else:
            output.append(segment)
    return "/" + "/".join(output)
