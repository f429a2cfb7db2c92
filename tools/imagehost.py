"""A loopback image host for benchmarks and tests: real PNG bytes, and every way an image URL can go wrong.

    python -m tools.imagehost [--port 8765] [--host 127.0.0.1[,127.0.0.2,...]] [--latency-ms MS] [--connect-ms MS]
                              [--stats-file FILE]

It listens on loopback addresses only (several, comma-separated: distinct "hosts" for per-host limits) and prints
``listening on http://HOST:PORT`` once it accepts connections (``--port 0``: a free port). ``--latency-ms`` makes
it answer like a far host: every answer waits that long (the round trip), and a new connection waits
``--connect-ms`` more before its first answer (the handshake; by default the same as ``--latency-ms``). Paths
(W and H are the real size served):

  /ok/W/H/NAME.png         200, image/png, a valid W x H PNG (keep-alive, HEAD and Range supported)
  /status/CODE/NAME.png    that status code, a text body
  /html/NAME.png           200 text/html: a page, not an image
  /liar/W/H/NAME.png       200 labelled image/png, but the bytes are HTML
  /slow/MS/W/H/NAME.png    waits MS milliseconds, then serves /ok/W/H
  /redirect/N/W/H/NAME.png N redirects (302), then /ok/W/H
  /loop/NAME.png           redirects to itself for ever
  /to-private/NAME.png     302 to http://169.254.169.254/latest/meta-data/ (a checker must never follow it)
  /goto/B64/NAME.png       302 to the URL whose urlsafe base64 is B64
  /huge/NAME.png           declares and streams 2 GiB of PNG-looking bytes
  /stall/NAME.png          headers, then one byte every 2 s (slowloris)
  /canary/NAME.png         a 10 x 10 image; any request here is a policy breach (counted like every path)
  /kill/NAME.png           SIGKILLs the local process whose socket asked (a drop that crashes its worker), then
                           drops the connection
  /__stats                 JSON: requests per first path segment and per full path; also written to
                           --stats-file on SIGTERM / SIGINT (with the pids /kill killed)
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import signal
import sys
from collections import Counter
from pathlib import Path

from tools.imagepaths import Answer, Stats, answer, kill_peer

STALL_BYTES = 600  # /stall sends at most this many bytes, one every 2 s
HUGE_BYTES = 2 * 1024**3


class Host:
    """The server's state: latency, counts, the pids /kill killed."""

    def __init__(self, latency: float, connect: float) -> None:
        self.latency, self.connect = latency, connect
        self.stats = Stats(Counter(), Counter(), [])

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.sleep(self.connect)  # the handshake of a new connection to a far host
            while await self._one(reader, writer):
                pass
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, UnicodeError,
                ValueError, asyncio.CancelledError):
            pass  # a client that hung up, or shutdown with keep-alive connections open: nothing to report
        finally:
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; False when the connection should end."""
        request = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        method, path, _ = request[0].split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in request[1:] if line)}
        result = answer(path, headers, method == "HEAD", self.stats)
        await asyncio.sleep(self.latency + result.delay)  # the round trip (and /slow's own pause)
        if result.kind == "kill":
            self.stats.killed.extend(await kill_peer(writer.get_extra_info("peername")))
            return False
        if result.kind in ("huge", "stall"):
            await self._stream(writer, result)
            return True
        writer.write(result.data)
        await writer.drain()
        return headers.get("connection", "").lower() != "close"

    async def _stream(self, writer: asyncio.StreamWriter, result: Answer) -> None:
        writer.write(result.data)  # the headers
        if result.head:
            return
        if result.kind == "huge":
            chunk, sent = result.body, 0
            while sent < HUGE_BYTES:
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)
            return
        for _ in range(STALL_BYTES):
            writer.write(b"\x89")
            await writer.drain()
            await asyncio.sleep(2)


def loopback_hosts(spec: str) -> list[str]:
    """The comma-separated addresses, each a loopback address (this host never listens anywhere else)."""
    hosts = [h.strip() for h in spec.split(",") if h.strip()]
    for h in hosts:
        if not ipaddress.ip_address(h).is_loopback:
            raise SystemExit(f"imagehost: {h} is not a loopback address")
    return hosts


async def serve(args: argparse.Namespace) -> None:
    connect = args.latency_ms if args.connect_ms is None else args.connect_ms
    host = Host(args.latency_ms / 1000, connect / 1000)
    hosts = loopback_hosts(args.host)
    first = await asyncio.start_server(host.handle, hosts[0], args.port, backlog=1024)
    port = first.sockets[0].getsockname()[1]  # the others take the same port (--port 0 picks it here)
    servers = [first, *[await asyncio.start_server(host.handle, h, port, backlog=1024) for h in hosts[1:]]]
    print(f"listening on {', '.join(f'http://{h}:{port}' for h in hosts)}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for server in servers:
        server.close()
    if args.stats_file:
        Path(args.stats_file).write_text(json.dumps(host.stats.as_dict()), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.imagehost", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=8765, help="0: any free port (printed)")
    ap.add_argument("--host", default="127.0.0.1", help="loopback address(es), comma-separated")
    ap.add_argument("--latency-ms", type=float, default=0.0, help="before every answer (a far host's round trip)")
    ap.add_argument("--connect-ms", type=float, default=None,
                    help="more before a new connection's first answer (default: --latency-ms)")
    ap.add_argument("--stats-file", help="write the request counts here on SIGTERM / SIGINT")
    asyncio.run(serve(ap.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
