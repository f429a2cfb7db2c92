"""File operations that never follow a symbolic link: through directory file descriptors, one name at a time.

Producers can write into the drop folder, so they can also swap a folder for a symbolic link between two of our
steps. Every path here is walked from a trusted base (the drop folder, or a reserved folder the operator named)
one component at a time with ``O_DIRECTORY | O_NOFOLLOW`` relative to the folder before it, and every link,
unlink, rename and create takes a directory fd and one name: no path string is ever resolved by the kernel again,
so no symlink, planted anywhere, is followed. Reserved folders (``processed/``, ``failed/`` and their
subfolders) must also be real folders owned by the service's user, checked on the open descriptor; anything else
raises :class:`Tampered`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
COPY_CHUNK = 1 << 20


class Tampered(OSError):
    """A folder on the way is not what the service made: a symbolic link, not a folder, or someone else's."""

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(errno.EPERM, why, str(path))
        self.path, self.why = path, why


def open_base(path: Path, create: bool, owned: bool) -> int:
    """A descriptor of a folder the operator named (its own path may hold links: the operator chose it)."""
    if create:
        os.makedirs(path, exist_ok=True)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if owned:
            _check_owner(fd, path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_under(base_fd: int, parts: Sequence[str], shown: Path, create: bool, owned_from: int | None) -> int:
    """Walk ``parts`` below ``base_fd`` without following links; a new descriptor of the last one.

    ``owned_from``: from this index of ``parts`` on, each folder must be ours (a reserved folder); ``create``:
    missing folders are made (then they are ours). ``shown``: the base's path, for messages."""
    fd = os.dup(base_fd)
    for i, part in enumerate(parts):
        shown = shown / part
        try:
            nxt = _open_one(fd, part, shown, create)
        finally:
            os.close(fd)
        fd = nxt
        if owned_from is not None and i >= owned_from:
            try:
                _check_owner(fd, shown)
            except BaseException:
                os.close(fd)
                raise
    return fd


def _open_one(fd: int, part: str, shown: Path, create: bool) -> int:
    try:
        return os.open(part, _DIR_FLAGS, dir_fd=fd)
    except FileNotFoundError:
        if not create:
            raise
    except OSError as exc:
        raise _explain(fd, part, shown, exc) from None
    try:
        os.mkdir(part, dir_fd=fd)
    except FileExistsError:
        pass  # another watcher made it meanwhile: checked all the same
    except OSError as exc:
        raise placed(exc, shown) from None
    try:
        return os.open(part, _DIR_FLAGS, dir_fd=fd)
    except OSError as exc:
        raise _explain(fd, part, shown, exc) from None


def placed(exc: OSError, path: Path) -> OSError:
    """``exc`` naming ``path`` in full (an error of a call relative to a folder descriptor names one part)."""
    if isinstance(exc, Tampered):
        return exc
    return type(exc)(exc.errno, exc.strerror or str(exc), str(path))


def _explain(fd: int, part: str, shown: Path, exc: OSError) -> OSError:
    if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
        return exc
    try:
        st = os.stat(part, dir_fd=fd, follow_symlinks=False)
    except OSError:
        return exc
    if stat.S_ISLNK(st.st_mode):
        return Tampered(shown, "is a symbolic link, not a folder (it is never followed)")
    return Tampered(shown, "is not a folder")


def _check_owner(fd: int, shown: Path) -> None:
    st = os.fstat(fd)
    if not stat.S_ISDIR(st.st_mode):
        raise Tampered(shown, "is not a folder")
    if st.st_uid != os.geteuid():
        raise Tampered(shown, f"is owned by uid {st.st_uid}, not by the service's uid {os.geteuid()}")


@contextlib.contextmanager
def opened(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


def lstat_at(fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=fd, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        return None


def unlink_at(fd: int, name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=fd)  # unlink never follows a link: it removes the link itself


def link_at(src_fd: int, src: str, dst_fd: int, dst: str) -> None:
    """``linkat`` without following: refuses an existing ``dst`` (FileExistsError), never replaces it."""
    os.link(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd, follow_symlinks=False)


def claim_copy(src_fd: int, src: str, dst_fd: int, dst: str) -> None:
    """Where hard links are refused: create ``dst`` exclusively (never through a link) and copy ``src`` into
    it, with its permission bits and times. Raises FileExistsError when ``dst`` is taken."""
    rfd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=src_fd)
    with opened(rfd):
        st = os.fstat(rfd)
        wfd = os.open(dst, _NEW_FILE, 0o600, dir_fd=dst_fd)
        try:
            with opened(wfd):
                os.fchmod(wfd, st.st_mode & 0o777)  # its own mode, whatever the umask; never set-id bits
                while chunk := os.read(rfd, COPY_CHUNK):
                    os.write(wfd, chunk)
                os.utime(wfd, ns=(st.st_atime_ns, st.st_mtime_ns))
        except BaseException:
            unlink_at(dst_fd, dst)
            raise


def write_new(fd: int, name: str, data: bytes, mode: int = 0o644) -> None:
    """Write ``name`` whole or not at all: a temporary file of a random name, created exclusively (a planted
    link at any name is never written through), then renamed over ``name`` (rename replaces a link itself)."""
    tmp = f".report-{secrets.token_hex(8)}.tmp"
    wfd = os.open(tmp, _NEW_FILE, mode, dir_fd=fd)
    try:
        with opened(wfd):
            view = memoryview(data)
            while view:
                view = view[os.write(wfd, view):]
        os.replace(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
    except BaseException:
        unlink_at(fd, tmp)  # no half-written file left behind (e.g. the disk is full)
        raise
