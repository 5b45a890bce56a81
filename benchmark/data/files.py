"""Opening a cohort's image files: once, and checked for what was actually opened.

It keeps every read inside the cohort's folder, even if the folder is swapped for a link between check and read.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path
from typing import BinaryIO

from benchmark.errors import ImageDecodeError
from benchmark.schemas import FilterReason

# A row's path is checked twice. Before anything is read, the path as written must resolve under the cohort's folder
# (`benchmark.data.cohort`). Then the file is opened once, and the file the descriptor holds is checked: its real
# path (Linux: `/proc/self/fd/N`; macOS: `F_GETPATH`; elsewhere: the resolved path, which must still be the same
# file, device and inode, as the descriptor's) must lie under the folder. Hashing and decoding then read from that
# descriptor only, so a folder swapped for a symbolic link between the check and the read cannot send the reader
# outside: the swap is either seen at open or it changes nothing that is read.
# Symbolic links inside the folder that stay inside it are followed (datasets managed by git-annex or DataLad are
# links into the folder's own object store). A hard link is the file itself, under the folder by name: it is read
# (making one requires write access to the folder and, on Linux with `protected_hardlinks`, ownership of or write
# access to the target), as stated in README's limitations.
# The file is opened without blocking (a FIFO named like an image cannot hang the build) and must be a regular file.

HASH_CHUNK = 1 << 20  # bytes read at a time when hashing: memory stays flat however large the file


def open_image_file(path: Path, root: Path | None = None) -> BinaryIO:
    """Open an image file for binary reading; with a root, refuse it unless the file opened lies under the root."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
    try:
        descriptor = os.open(path, flags)
    except FileNotFoundError as exc:
        raise ImageDecodeError(path, FilterReason.MISSING_FILE, "file does not exist") from exc
    except OSError as exc:
        reason = FilterReason.MISSING_FILE if exc.errno == errno.ENOTDIR else FilterReason.UNREADABLE_FILE
        raise ImageDecodeError(path, reason, f"cannot open the file: {exc.strerror or exc}") from exc
    handle = os.fdopen(descriptor, "rb")
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise ImageDecodeError(path, FilterReason.UNREADABLE_FILE, "not a regular file (a folder, FIFO or device)")
        if root is not None:
            _check_inside(path, handle, status, Path(root).resolve())
        if status.st_size == 0:
            raise ImageDecodeError(path, FilterReason.EMPTY_FILE, "file is empty")
    except BaseException:
        handle.close()
        raise
    return handle


def stream_sha256(handle: BinaryIO) -> str:
    """sha256 of an open file's bytes from its start, read in chunks; the handle is left at its start."""
    handle.seek(0)
    digest = hashlib.sha256()
    while chunk := handle.read(HASH_CHUNK):
        digest.update(chunk)
    handle.seek(0)
    return digest.hexdigest()


def opened_path(handle: BinaryIO) -> Path | None:
    """The real path of the file an open handle holds, from the operating system; None where it cannot say."""
    descriptor = handle.fileno()
    try:
        return Path(os.readlink(f"/proc/self/fd/{descriptor}"))
    except OSError:
        pass
    try:
        import fcntl

        if hasattr(fcntl, "F_GETPATH"):
            raw = fcntl.fcntl(descriptor, fcntl.F_GETPATH, bytes(1024))
            return Path(os.fsdecode(raw.split(b"\0", 1)[0]))
    except OSError:
        pass
    return None


def _check_inside(path: Path, handle: BinaryIO, status: os.stat_result, root: Path) -> None:
    real = opened_path(handle)
    if real is None:  # no way to ask the descriptor: the resolved path must still be this very file
        real = Path(os.path.realpath(path))
        try:
            now = os.stat(real)
        except OSError:
            now = None
        if now is None or (now.st_dev, now.st_ino) != (status.st_dev, status.st_ino):
            raise ImageDecodeError(path, FilterReason.OUTSIDE_DATA_ROOT,
                                   "the file changed between opening and checking it; refused")
    if not real.is_relative_to(root):
        raise ImageDecodeError(path, FilterReason.OUTSIDE_DATA_ROOT,
                               f"the file opened is {real}, outside {root} (a link or a folder swapped for one)")
