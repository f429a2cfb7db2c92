"""Bytes -> image format and real pixel size, judged by magic numbers and header parsing (never by Content-Type).

A ``Sniffer`` is fed the body chunk by chunk and answers as soon as the bytes decide, so the caller can stop
reading then. Its cost is linear in the bytes read, whatever the body: a parser is called again only once the
bytes it said it needs have arrived, the walks over a JPEG's segments and a GIF's blocks resume where they stopped
(junk and fill bytes are skipped by ``find``/regex, not a byte at a time), and ISOBMFF box lists are bounded. A
server can still choose the body (the image host is chosen by whoever wrote the drop): FFD8 + APP0 + 1 MiB of
zeros once cost ~3 s of the checker's event loop, re-walked byte by byte on every chunk. ``sniff(data, complete)``
judges a whole prefix at once. (One module over 300 lines: the six short parsers share the readers, the resume
state and the dispatch, and are read together against Pillow.)
The sizes match what ``PIL.Image.open(f).size`` reports for the same file: JPEG's last frame header before the
first scan (hundreds of KiB of EXIF/ICC may come first), PNG/APNG's IHDR, GIF's logical screen grown to hold the
first frame, WebP's canvas, BMP's header (top-down heights as positive), AVIF's primary item (``ispe``) or, for an
``avis`` sequence, its first track.

Example::

    sniff(png_bytes[:40])           -> ImageSize("PNG", 640, 360)
    sniff(jpeg_bytes[:4096])        -> None               (need more bytes: the frame header is further on)
    sniff(b"<html>...", complete=True) -> NotAnImage("looks like HTML")

Over 300 lines on purpose: one small reader per image format (JPEG, PNG, GIF, WebP, BMP, AVIF) and the incremental
Sniffer over them, each short; a module per format would scatter what is read as one table.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

_U16BE = struct.Struct(">H")
_U32BE = struct.Struct(">I")
_U16LE = struct.Struct("<H")
_U32LE = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class ImageSize:
    format: str  # JPEG, PNG, GIF, WEBP, BMP, AVIF
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class NotAnImage:
    reason: str


Verdict = ImageSize | NotAnImage | None  # None: undecided, read more bytes


class _Short(Exception):
    """The header runs past the bytes we have; ``need``: how many bytes must be there before trying again."""

    def __init__(self, need: int) -> None:
        super().__init__(need)
        self.need = need


class _Bad(Exception):
    """The bytes start like an image but the header is malformed."""


def _need(buf: bytes | bytearray, end: int) -> None:
    if end > len(buf):
        raise _Short(end)


def _u16be(buf: bytes | bytearray, pos: int) -> int:
    _need(buf, pos + 2)
    return int(_U16BE.unpack_from(buf, pos)[0])


def _u32be(buf: bytes | bytearray, pos: int) -> int:
    _need(buf, pos + 4)
    return int(_U32BE.unpack_from(buf, pos)[0])


def _u16le(buf: bytes | bytearray, pos: int) -> int:
    _need(buf, pos + 2)
    return int(_U16LE.unpack_from(buf, pos)[0])


def _u32le(buf: bytes | bytearray, pos: int) -> int:
    _need(buf, pos + 4)
    return int(_U32LE.unpack_from(buf, pos)[0])


class _Resume:
    """Where a walk over JPEG segments or GIF blocks stopped: everything before ``pos`` was judged already."""

    __slots__ = ("in_block", "pos", "size")

    def __init__(self) -> None:
        self.pos = 0  # 0: not started
        self.size: ImageSize | None = None  # JPEG: the last frame header seen
        self.in_block = False  # GIF: inside an extension's sub-blocks


# ---------------------------------------------------------------------------------------------------------- JPEG
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_NO_PAYLOAD = frozenset({0xD0, 0xD1, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xD9})


_FILL = re.compile(rb"\xff\xff+")


def _jpeg(buf: bytes | bytearray, complete: bool, at: _Resume) -> ImageSize:
    """Walk the marker segments as Pillow does; the size is the last frame header (SOFn) before the first scan."""
    pos, size = at.pos or 2, at.size
    try:
        while True:
            at.pos, at.size = pos, size  # every read below is checked first: a later call may start here
            _need(buf, pos + 2)
            if buf[pos] != 0xFF:  # junk between segments: Pillow skips it byte by byte, find() at once
                found = buf.find(b"\xff", pos)
                pos = found if found >= 0 else len(buf)
                continue
            marker = buf[pos + 1]
            if marker == 0xFF:  # fill bytes: skip the run, its last 0xFF starts the marker
                fill = _FILL.match(buf, pos)
                pos = fill.end() - 1 if fill else pos + 1
                continue
            if marker == 0x00:  # an escaped 0xFF
                pos += 2
                continue
            if marker in _NO_PAYLOAD:
                pos += 2
                continue
            if marker < 0xC0:
                raise _Bad("JPEG marker out of range")
            length = _u16be(buf, pos + 2)
            if length < 2:
                raise _Bad("JPEG segment length below 2")
            if marker in _SOF:
                _need(buf, pos + 9)
                size = ImageSize("JPEG", _u16be(buf, pos + 7), _u16be(buf, pos + 5))
            elif marker == 0xDA:  # start of scan: the header is over
                break
            pos += 2 + length
    except _Short:
        if complete and size is not None:  # the body (or the byte cap) ended between frame header and scan
            return size
        raise
    if size is None:
        raise _Bad("JPEG scan without a frame header")
    return size


# ----------------------------------------------------------------------------------------------------------- PNG
def _png(buf: bytes | bytearray, complete: bool, at: _Resume) -> ImageSize:
    """The first chunk must be a 13-byte IHDR with a good CRC (Pillow refuses a bad one)."""
    length, kind = _u32be(buf, 8), bytes(buf[12:16])
    if kind != b"IHDR" or length != 13:
        raise _Bad("PNG without IHDR first")
    _need(buf, 33)
    if zlib.crc32(buf[12:29]) != _u32be(buf, 29):
        raise _Bad("PNG IHDR checksum mismatch")
    return ImageSize("PNG", _u32be(buf, 16), _u32be(buf, 20))


# ----------------------------------------------------------------------------------------------------------- GIF
_GIF_STRAY = re.compile(rb"[^\x21\x2c\x3b]+")


def _gif(buf: bytes | bytearray, complete: bool, at: _Resume) -> ImageSize:
    """Logical screen size, grown (as Pillow does) to hold the first frame's extent."""
    width, height, flags = _u16le(buf, 6), _u16le(buf, 8), _byte(buf, 10)
    pos, in_block = at.pos or 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0), at.in_block
    while True:
        at.pos, at.in_block = pos, in_block
        if in_block:  # an extension's sub-blocks, up to a zero-length one
            n = _byte(buf, pos)
            pos, in_block = pos + 1 + n, n != 0
            continue
        kind = _byte(buf, pos)
        if kind == 0x3B:  # trailer before any image
            raise _Bad("GIF without an image")
        if kind == 0x21:  # extension: its label, then sub-blocks
            pos, in_block = pos + 2, True
        elif kind == 0x2C:  # image descriptor: x, y, w, h
            x0, y0 = _u16le(buf, pos + 1), _u16le(buf, pos + 3)
            x1, y1 = x0 + _u16le(buf, pos + 5), y0 + _u16le(buf, pos + 7)
            return ImageSize("GIF", max(width, x1), max(height, y1))
        else:  # Pillow skips stray bytes between blocks (one at a time; a regex here)
            stray = _GIF_STRAY.match(buf, pos)
            pos = stray.end() if stray else pos + 1


def _byte(buf: bytes | bytearray, pos: int) -> int:
    _need(buf, pos + 1)
    return buf[pos]


# ---------------------------------------------------------------------------------------------------------- WebP
def _webp(buf: bytes | bytearray, complete: bool, at: _Resume) -> ImageSize:
    """The canvas: VP8X's declared canvas, else the lossy (VP8) or lossless (VP8L) frame size."""
    _need(buf, 30)
    kind = bytes(buf[12:16])
    if kind == b"VP8X":
        return ImageSize("WEBP", 1 + (_u32le(buf, 24) & 0xFFFFFF), 1 + (_u32le(buf, 27) & 0xFFFFFF))
    if kind == b"VP8L":
        if buf[20] != 0x2F:
            raise _Bad("WebP lossless signature missing")
        bits = _u32le(buf, 21)
        return ImageSize("WEBP", 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF))
    if kind == b"VP8 ":
        if buf[23:26] != b"\x9d\x01\x2a":
            raise _Bad("WebP lossy start code missing")
        return ImageSize("WEBP", _u16le(buf, 26) & 0x3FFF, _u16le(buf, 28) & 0x3FFF)
    raise _Bad("WebP without an image chunk")


# ----------------------------------------------------------------------------------------------------------- BMP
_BMP_INFO_HEADERS = frozenset({40, 52, 56, 64, 108, 124})


def _bmp(buf: bytes | bytearray, complete: bool, at: _Resume) -> ImageSize:
    """OS/2 core headers hold 16-bit sizes; the others 32-bit, a negative height meaning top-down rows."""
    header = _u32le(buf, 14)
    if header == 12:
        return ImageSize("BMP", _u16le(buf, 18), _u16le(buf, 20))
    if header not in _BMP_INFO_HEADERS:
        raise _Bad(f"BMP header of {header} bytes")
    width, height = _u32le(buf, 18), _u32le(buf, 22)
    if buf[25] == 0xFF:  # Pillow's reading of a negative (top-down) height
        height = 2**32 - height
    return ImageSize("BMP", width, height)


# ---------------------------------------------------------------------------------------------------------- AVIF
_MAX_BOXES = 1_000  # in one box (or at the top): real files hold a handful; bounds each walk


def _boxes(buf: bytes | bytearray, start: int, end: int) -> list[tuple[bytes, int, int]]:
    """ISOBMFF boxes in buf[start:end] as (type, payload start, box end); _Short if one runs past the buffer."""
    out: list[tuple[bytes, int, int]] = []
    pos = start
    while pos + 8 <= end:
        if len(out) >= _MAX_BOXES:
            raise _Bad(f"ISOBMFF with more than {_MAX_BOXES} boxes in one box")
        size, kind = _u32be(buf, pos), bytes(buf[pos + 4 : pos + 8])
        head = 8
        if size == 1:
            size, head = _u32be(buf, pos + 8) << 32 | _u32be(buf, pos + 12), 16
        elif size == 0:
            size = end - pos
        if size < head:
            raise _Bad("ISOBMFF box smaller than its header")
        out.append((kind, pos + head, pos + size))
        pos += size
    return out


def _child(buf: bytes | bytearray, boxes: list[tuple[bytes, int, int]], kind: bytes) -> tuple[int, int]:
    for k, start, end in boxes:
        if k == kind:
            _need(buf, end)
            return start, end
    raise _Short(max(len(buf) + 1, boxes[-1][2] + 8 if boxes else 0))  # maybe in the next box


def _avif(buf: bytes | bytearray, complete: bool, resume: _Resume) -> ImageSize:
    """libavif's size (what Pillow reports): the first track of an ``avis`` sequence, else the primary item."""
    top = _boxes(buf, 0, len(buf))
    if bytes(buf[8:12]) == b"avis" and any(k == b"moov" for k, _, _ in top):
        return _avis_track(buf, top)
    start, end = _child(buf, top, b"meta")
    meta = _boxes(buf, start + 4, end)  # meta is a full box: version and flags first
    p_start, _ = _child(buf, meta, b"pitm")
    primary = _u16be(buf, p_start + 4) if _byte(buf, p_start) == 0 else _u32be(buf, p_start + 4)
    i_start, i_end = _child(buf, meta, b"iprp")
    iprp = _boxes(buf, i_start, i_end)
    c_start, c_end = _child(buf, iprp, b"ipco")
    properties = _boxes(buf, c_start, c_end)
    m_start, _ = _child(buf, iprp, b"ipma")
    for index in _associations(buf, m_start, primary):
        if 0 < index <= len(properties) and properties[index - 1][0] == b"ispe":
            at = properties[index - 1][1]
            return ImageSize("AVIF", _u32be(buf, at + 4), _u32be(buf, at + 8))
    raise _Bad("AVIF primary item without a size (ispe)")


def _associations(buf: bytes | bytearray, start: int, item: int) -> list[int]:
    """Property indices (1-based) that the ipma box associates with ``item``."""
    version, flags = _byte(buf, start), _u32be(buf, start) & 0xFFFFFF
    pos, count = start + 8, _u32be(buf, start + 4)
    for _ in range(count):
        if version < 1:
            item_id, pos = _u16be(buf, pos), pos + 2
        else:
            item_id, pos = _u32be(buf, pos), pos + 4
        n, pos = _byte(buf, pos), pos + 1
        if flags & 1:
            indices = [_u16be(buf, pos + 2 * i) & 0x7FFF for i in range(n)]
            pos += 2 * n
        else:
            indices = [_byte(buf, pos + i) & 0x7F for i in range(n)]
            pos += n
        if item_id == item:
            return indices
    return []


def _avis_track(buf: bytes | bytearray, top: list[tuple[bytes, int, int]]) -> ImageSize:
    """Track header width/height are 16.16 fixed point; libavif keeps the integer part."""
    start, end = _child(buf, top, b"moov")
    t_start, t_end = _child(buf, _boxes(buf, start, end), b"trak")
    h_start, _ = _child(buf, _boxes(buf, t_start, t_end), b"tkhd")
    at = h_start + (88 if _byte(buf, h_start) == 1 else 76)  # width and height close the box, after the matrix
    return ImageSize("AVIF", _u32be(buf, at) >> 16, _u32be(buf, at + 4) >> 16)


def _is_avif(buf: bytes | bytearray) -> bool:
    """ftyp whose major or compatible brands name avif/avis (a HEIC is not AVIF, and Pillow can't open it)."""
    size = min(_u32be(buf, 0), len(buf))
    brands = {bytes(buf[i : i + 4]) for i in range(8, size - 3, 4)}
    return bool(brands & {b"avif", b"avis"})


# ------------------------------------------------------------------------------------------------------ dispatch
_Parser = Callable[[bytes | bytearray, bool, _Resume], ImageSize]

_MIN_PREFIX = 32  # enough to tell every format below apart


def _parser_for(buf: bytes | bytearray) -> _Parser | None:
    if buf.startswith(b"\xff\xd8\xff"):
        return _jpeg
    if buf.startswith(b"\x89PNG\r\n\x1a\n"):
        return _png
    if buf.startswith((b"GIF87a", b"GIF89a")):
        return _gif
    if buf.startswith(b"RIFF") and buf[8:12] == b"WEBP":
        return _webp
    if buf.startswith(b"BM") and (_u32le(buf, 14) in _BMP_INFO_HEADERS or _u32le(buf, 14) == 12):
        return _bmp
    if buf[4:8] == b"ftyp" and _is_avif(buf):
        return _avif
    return None


class Sniffer:
    """Judges a body as it arrives: ``feed`` each chunk (a verdict, or None: more bytes could decide), then
    ``finish`` when no more will come (end of body, or the byte cap). ``calls`` and ``walked`` (bytes the parsers
    went over, summed over calls) measure the work: ``walked`` stays linear in the body, whatever its shape."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.calls = self.walked = 0
        self._parser: _Parser | None = None
        self._at = _Resume()
        self._need = _MIN_PREFIX
        self._verdict: Verdict = None

    def feed(self, chunk: bytes | bytearray) -> Verdict:
        self.buf += chunk
        if self._verdict is None and len(self.buf) >= self._need:
            self._verdict = self.judge(complete=False)
        return self._verdict

    def finish(self) -> ImageSize | NotAnImage:
        if self._verdict is None:
            self._verdict = self.judge(complete=True) or NotAnImage("undecided")
        return self._verdict

    def judge(self, complete: bool) -> Verdict:
        """The verdict on the bytes so far (``complete``: no more will come)."""
        buf = self.buf
        if len(buf) < _MIN_PREFIX and not complete:
            return None
        try:
            if self._parser is None:
                self._parser = _parser_for(buf)
                if self._parser is None:
                    return NotAnImage(_what_else(buf))
            self.calls += 1
            self.walked += max(0, len(buf) - self._at.pos)
            return self._parser(buf, complete, self._at)
        except _Short as short:
            if not complete:
                self._need = max(short.need, len(buf) + 1)
                return None
            return NotAnImage(f"truncated or oversized image header ({len(buf)} bytes read)")
        except _Bad as exc:
            return NotAnImage(str(exc))


def sniff(data: bytes | bytearray, complete: bool = False) -> Verdict:
    """Judge the first bytes of a body at once. ``complete``: no more bytes will come (end of body, or the byte cap).

    Returns the image's format and size, a reason it is not an image, or None while more bytes could decide.
    """
    sniffer = Sniffer()
    sniffer.buf += data
    return sniffer.judge(complete)


def sniff_complete(data: bytes | bytearray) -> ImageSize | NotAnImage:
    """The verdict on a whole body (or all of it we will read)."""
    return sniff(data, complete=True) or NotAnImage("undecided")


def _what_else(data: bytes | bytearray) -> str:
    """A short, human reason for bytes that are no image we read."""
    head = bytes(data[:512]).lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if not head:
        return "empty body"
    if head.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in head:
        return "looks like HTML"
    if b"<svg" in head:
        return "SVG (vector image: no pixel size)"
    if head[4:8] == b"ftyp":
        return "ISO media file that is not AVIF (e.g. HEIC)"
    return "unknown format"
