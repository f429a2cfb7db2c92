"""Image sniffing is linear in the bytes read, whatever the server sends (the image host is chosen by whoever
wrote the drop): work is counted (``Sniffer.walked``: bytes the parsers went over, summed over calls), and the
incremental answer is the one a single look at the whole prefix gives."""

from __future__ import annotations

import random
import struct
import time
from collections.abc import Iterator

import pytest

from tasks.images.sniff import ImageSize, NotAnImage, Sniffer, sniff, sniff_complete
from tests.test_images import Host, check_one
from tests.test_imagesniff import SAMPLES

MIB = 1 << 20
JPEG_APP0 = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
GIF_HEAD = b"GIF89a" + struct.pack("<HHBBB", 10, 10, 0, 0, 0)

HOSTILE = {  # each about 1 MiB, none decides before the end
    "jpeg + APP0 + zeros": JPEG_APP0 + b"\x00" * MIB,
    "jpeg + fill bytes": JPEG_APP0 + b"\xff" * MIB,
    "jpeg + escaped 0xFF": JPEG_APP0 + b"\xff\x00" * (MIB // 2),
    "jpeg + empty segments": JPEG_APP0 + b"\xff\xe1\x00\x02" * (MIB // 4),
    "gif + stray bytes": GIF_HEAD + b"\x00" * MIB,
    "gif + one-byte sub-blocks": GIF_HEAD + b"\x21\xf9" + b"\x01\x00" * (MIB // 2),
}


def chunks(data: bytes, size: int) -> Iterator[bytes]:
    return (data[at : at + size] for at in range(0, len(data), size))


def fed(data: bytes, size: int) -> tuple[Sniffer, ImageSize | NotAnImage, int]:
    """Feed ``data`` in chunks of ``size``: the sniffer, its verdict, and the most bytes walked by one feed."""
    sniffer, most = Sniffer(), 0
    for chunk in chunks(data, size):
        before = sniffer.walked
        verdict = sniffer.feed(chunk)
        most = max(most, sniffer.walked - before)
        if verdict is not None:
            return sniffer, verdict, most
    return sniffer, sniffer.finish(), most


@pytest.mark.parametrize("name", list(HOSTILE))
@pytest.mark.parametrize("size", [1024, 8192])
def test_a_hostile_megabyte_is_walked_about_once(name: str, size: int) -> None:
    data = HOSTILE[name]
    start = time.process_time()
    sniffer, verdict, most = fed(data, size)
    seconds = time.process_time() - start
    assert verdict == NotAnImage(f"truncated or oversized image header ({len(data)} bytes read)")
    assert sniffer.calls >= len(data) // size  # judged on the way, not only at the end
    assert sniffer.walked <= 2 * len(data)  # was ~len(data)**2 / (2 * size): every chunk re-walked it all
    assert most <= 2 * size + 64  # one feed never walks more than about its own bytes
    assert seconds < 0.5  # a guard against quadratic work (it was ~3 s for zeros in 16 KiB chunks)


def test_many_tiny_boxes_are_refused_after_a_bounded_walk() -> None:
    ftyp = struct.pack(">I", 16) + b"ftypavif" + b"\x00\x00\x00\x00"
    data = ftyp + (struct.pack(">I", 8) + b"free") * (MIB // 8)
    sniffer, verdict, _ = fed(data, 8192)
    assert verdict == NotAnImage("ISOBMFF with more than 1000 boxes in one box")
    assert sniffer.walked < 64 * 8192


@pytest.mark.parametrize("name", list(SAMPLES))
def test_fed_in_any_chunks_the_verdict_is_the_whole_prefix_verdict(name: str) -> None:
    data, rng = SAMPLES[name], random.Random(name)
    for size in (1, 3, 31, 32, 33, 500, 4096, rng.randint(2, 2000)):
        assert fed(data, size)[1] == sniff_complete(data), size


def test_fed_cuts_and_corruptions_agree_with_one_look() -> None:
    rng = random.Random(11)
    for data in SAMPLES.values():
        for _ in range(30):
            cut = bytearray(data[: rng.randint(0, min(len(data), 3000))])
            for _ in range(rng.randint(0, 4)):
                if cut:
                    cut[rng.randrange(len(cut))] = rng.randrange(256)
            whole = bytes(cut)
            sniffer = Sniffer()
            for chunk in chunks(whole, rng.randint(1, 600)):
                decided = sniffer.feed(chunk)
                assert decided == sniff(sniffer.buf)  # the first verdict is one look's at that prefix
                if decided is not None:
                    break
            else:
                assert sniffer.finish() == sniff_complete(whole), whole[:40]


def test_the_checker_reads_a_hostile_body_to_the_cap_cheaply() -> None:
    """End to end: the 1 MiB JPEG of zeros is judged as it arrives, in steps that leave the loop free."""
    host = Host()
    try:
        host.files["zeros"] = (HOSTILE["jpeg + APP0 + zeros"], "image/jpeg")
        start = time.process_time()
        result = check_one(host.url("/file/zeros"), max_bytes=MIB, timeout_seconds=10.0)
        seconds = time.process_time() - start
    finally:
        host.close()
    assert result["status"] == "not_image"
    assert result["reason"] == f"truncated or oversized image header ({MIB} bytes read)"
    assert seconds < 1.5  # the server's side included; it was over 3 s of the checker's loop alone
