"""Bytes -> format and size: every format's size equals what Pillow reports, decided from as few bytes as it can."""

from __future__ import annotations

import io
import random
import struct
from typing import Any

import pytest
from PIL import Image

from tasks.images.sniff import ImageSize, NotAnImage, sniff, sniff_complete


def save(image: Image.Image, fmt: str, **kw: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **kw)
    return out.getvalue()


def frames(n: int, size: tuple[int, int]) -> list[Image.Image]:
    return [Image.new("RGB", size, (40 * i, 90, 160)) for i in range(n)]


PICTURE = Image.new("RGB", (641, 359), (10, 120, 200))
ANIMATION = frames(3, (120, 80))

SAMPLES: dict[str, bytes] = {
    "jpeg": save(PICTURE, "JPEG"),
    "jpeg progressive": save(PICTURE, "JPEG", progressive=True),
    "jpeg grey": save(PICTURE.convert("L"), "JPEG"),
    "jpeg cmyk": save(PICTURE.convert("CMYK"), "JPEG"),
    "png": save(PICTURE, "PNG"),
    "png rgba": save(PICTURE.convert("RGBA"), "PNG"),
    "png palette": save(PICTURE.convert("P"), "PNG"),
    "apng": save(ANIMATION[0], "PNG", save_all=True, append_images=ANIMATION[1:]),
    "gif": save(PICTURE, "GIF"),
    "gif animated": save(ANIMATION[0], "GIF", save_all=True, append_images=ANIMATION[1:], comment=b"hello"),
    "webp lossy": save(PICTURE, "WEBP"),
    "webp lossless": save(PICTURE, "WEBP", lossless=True),
    "webp alpha (VP8X)": save(PICTURE.convert("RGBA"), "WEBP"),
    "webp animated": save(ANIMATION[0], "WEBP", save_all=True, append_images=ANIMATION[1:]),
    "bmp": save(PICTURE, "BMP"),
    "bmp 1-bit": save(PICTURE.convert("1"), "BMP"),
    "avif": save(PICTURE, "AVIF"),
    "avif animated (avis)": save(ANIMATION[0], "AVIF", save_all=True, append_images=ANIMATION[1:]),
}


def _with_orientation() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: Pillow's size is still the stored one, before orientation
    return save(Image.new("RGB", (300, 100)), "JPEG", exif=exif.tobytes())


SAMPLES["jpeg exif orientation 6"] = _with_orientation()


@pytest.mark.parametrize("name", list(SAMPLES))
def test_size_equals_pillows(name: str) -> None:
    data = SAMPLES[name]
    verdict = sniff_complete(data)
    assert isinstance(verdict, ImageSize)
    with Image.open(io.BytesIO(data)) as reference:
        assert (verdict.width, verdict.height) == reference.size
        assert verdict.format == reference.format


@pytest.mark.parametrize("name", list(SAMPLES))
def test_decided_from_a_prefix_and_undecided_before(name: str) -> None:
    """Grown a byte at a time, the verdict is None until it is the final one (no early wrong answer)."""
    data, final = SAMPLES[name], sniff_complete(SAMPLES[name])
    decided_at = next(n for n in range(1, len(data) + 1) if sniff(data[:n]) is not None)
    assert sniff(data[:decided_at]) == final
    assert decided_at <= 1024  # headers only: these small files never need their pixel data


def test_jpeg_with_300_kib_of_icc_and_exif_before_the_frame_header() -> None:
    exif = Image.Exif()
    exif[0x010E] = "x" * 60_000  # ImageDescription: a fat APP1 segment
    data = save(Image.new("RGB", (1200, 630)), "JPEG", icc_profile=bytes(300 * 1024), exif=exif.tobytes())
    sof = data.index(b"\xff\xc0")
    assert sof > 300 * 1024
    assert sniff(data[:sof]) is None  # still reading: the size is further on
    assert sniff(data[: sof + 64 * 1024]) == ImageSize("JPEG", 1200, 630) == sniff_complete(data)
    assert Image.open(io.BytesIO(data)).size == (1200, 630)


def test_jpeg_with_300_kib_of_exif_and_xmp_segments_before_the_frame_header() -> None:
    """EXIF is capped at one 64 KiB APP1 by Pillow's writer; real files stack APP1 EXIF/XMP segments: splice some."""
    exif = Image.Exif()
    exif[0x010E] = "y" * 60_000
    plain = save(Image.new("RGB", (1920, 1080)), "JPEG", exif=exif.tobytes())
    xmp = b"http://ns.adobe.com/xap/1.0/\x00" + b"<x:xmpmeta>" + b" " * 60_000 + b"</x:xmpmeta>"
    segment = b"\xff\xe1" + struct.pack(">H", len(xmp) + 2) + xmp
    data = plain[:2] + segment * 5 + plain[2:]
    assert data.index(b"\xff\xc0") > 300 * 1024
    assert sniff(data[: 300 * 1024]) is None
    assert sniff_complete(data) == ImageSize("JPEG", 1920, 1080)
    assert Image.open(io.BytesIO(data)).size == (1920, 1080)


def test_gif_grows_to_hold_its_first_frame_as_pillow_does() -> None:
    screen = b"GIF89a" + struct.pack("<HHBBB", 10, 10, 0, 0, 0)
    descriptor = b"\x2c" + struct.pack("<HHHHB", 5, 6, 20, 30, 0)
    data = screen + b"\x21\xfe\x03abc\x00" + descriptor + b"\x02\x02\x44\x01\x00\x3b"
    assert sniff_complete(data) == ImageSize("GIF", 25, 36)
    assert Image.open(io.BytesIO(data)).size == (25, 36)


def test_bmp_top_down_rows_report_a_positive_height() -> None:
    data = bytearray(save(Image.new("RGB", (12, 7)), "BMP"))
    struct.pack_into("<i", data, 22, -7)
    assert sniff_complete(bytes(data)) == ImageSize("BMP", 12, 7)
    assert Image.open(io.BytesIO(bytes(data))).size == (12, 7)


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "empty body"),
    (b"<!DOCTYPE html><html><head><title>404</title></head></html>", "looks like HTML"),
    (b"\n  <html><body>not found</body></html>", "looks like HTML"),
    (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
     "SVG (vector image: no pixel size)"),
    (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(40), "ISO media file that is not AVIF (e.g. HEIC)"),
    (b"%PDF-1.7\n" + bytes(100), "unknown format"),
    (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + bytes(17), "PNG IHDR checksum mismatch"),
    (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IDAT" + bytes(30), "PNG without IHDR first"),
    (b"\xff\xd8\xff\xda\x00\x02" + bytes(40), "JPEG scan without a frame header"),
    (b"GIF89a" + bytes(7) + b"\x3b" + bytes(20), "GIF without an image"),
    (b"RIFF\x00\x00\x00\x00WEBPJUNK" + bytes(30), "WebP without an image chunk"),
])
def test_what_is_not_an_image_says_why(data: bytes, reason: str) -> None:
    assert sniff_complete(data) == NotAnImage(reason)
    if data:
        with pytest.raises(Exception):  # noqa: B017 (Pillow agrees: any of its errors)
            Image.open(io.BytesIO(data)).load()


def test_truncated_headers_need_more_bytes_until_the_body_ends() -> None:
    data = SAMPLES["jpeg"][:100]
    assert sniff(data) is None
    assert sniff_complete(data) == NotAnImage("truncated or oversized image header (100 bytes read)")


def test_random_cuts_and_corruptions_never_raise() -> None:
    rng = random.Random(7)
    for data in SAMPLES.values():
        for _ in range(40):
            cut = bytearray(data[: rng.randint(0, min(len(data), 2048))])
            for _ in range(rng.randint(0, 4)):
                if cut:
                    cut[rng.randrange(len(cut))] = rng.randrange(256)
            verdict = sniff_complete(bytes(cut))
            assert isinstance(verdict, ImageSize | NotAnImage)
            assert sniff(bytes(cut)) in (None, verdict)
