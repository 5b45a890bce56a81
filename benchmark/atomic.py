"""Output files: atomic writes (readers and a killed writer see the whole old file or the whole new one), and
checking an output folder before any work is done for it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from benchmark.errors import OutputError, describe_os_error, os_error_cause


def write_atomically(target: Path, payload: bytes) -> None:
    """Write `payload` to a private temporary file beside `target`, fsync it, then rename it over `target`.

    OutputError naming `target` when the machine refuses (permissions, full disk, a file in the way);
    `target` then still holds its old content."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(target, f"cannot create its folder: {describe_os_error(exc)}", errno=exc.errno) from exc
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise OutputError(target, f"cannot write in {target.parent}: {os_error_cause(exc)}", errno=exc.errno) from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be read by others
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise OutputError(target, f"cannot write: {os_error_cause(exc)}", errno=exc.errno) from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def ensure_writable_folder(folder: Path, what: str = "output folder") -> Path:
    """Create `folder` if needed and prove a file can be written in it; OutputError naming it and the cause."""
    if folder.exists() and not folder.is_dir():
        raise OutputError(folder, f"the {what} exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(folder, f"cannot create the {what}: {describe_os_error(exc)}") from exc
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".ctxray-write-check.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(folder, f"cannot write in the {what}: {os_error_cause(exc)}") from exc
    return folder
