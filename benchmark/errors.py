"""One exception type per failure family, each naming the file, row and value at fault.

Every type survives pickling (a worker process's error reaches the driver as itself, with its message and fields).
"""

from __future__ import annotations

from pathlib import Path


class CtxrayError(Exception):
    """Base class of every error ctxray-bench raises on purpose (the CLI prints these without a traceback)."""


class ConfigError(CtxrayError):
    """A configuration file is unreadable or does not validate."""


class RegistryError(ConfigError):
    """An objective or network name that is unknown, or whose plugin entry does not load."""


class MetadataError(CtxrayError):
    """metadata.csv cannot be used at all (missing, empty, unparsable, or a required column is absent)."""

    def __init__(self, path: Path | str, message: str, *, row: int | None = None, value: object = None) -> None:
        where = f"{path}" + (f", line {row}" if row is not None else "")
        detail = f" (value: {value!r})" if value is not None else ""
        super().__init__(f"{where}: {message}{detail}")
        self.path = Path(path)
        self.message = message
        self.row = row
        self.value = value

    def __reduce__(self) -> tuple[object, ...]:  # rebuilt from its arguments in another process
        return _rebuild, (type(self), (self.path, self.message), {"row": self.row, "value": self.value})


class ImageDecodeError(CtxrayError):
    """An image file exists but cannot be decoded into a 2-D grayscale array."""

    def __init__(self, path: Path | str, reason: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = Path(path)
        self.reason = reason
        self.message = message

    def __reduce__(self) -> tuple[object, ...]:  # rebuilt from its arguments in another process
        return _rebuild, (type(self), (self.path, self.reason, self.message), {})


class SplitError(CtxrayError):
    """A split cannot be drawn as the protocol defines it (too few patients of a class, too few distinct sets)."""


class CacheError(CtxrayError):
    """The image cache directory cannot be created or written."""


class TrainingError(CtxrayError):
    """Training cannot go on: the loss became NaN or infinite (a plugin's objective, a learning rate too high)."""


def check_finite_loss(value: float, epoch: int, step: int, which: str = "") -> None:
    """TrainingError 'loss is NaN at epoch E, step S' (1-based) when a training loss is not a finite number."""
    import math

    if not math.isfinite(value):
        kind = "NaN" if math.isnan(value) else "infinite"
        raise TrainingError(f"{which + ' ' if which else ''}loss is {kind} at epoch {epoch}, step {step}")


class LeakageError(CtxrayError):
    """A model would train on a patient of the validation set it is evaluated on (directly or via a teacher)."""


class TestSetError(CtxrayError):
    """A test set cannot be used: a bad `--external` argument, a manifest with nothing kept, or one that shares a
    patient or an image's pixels with the cohort or another test set."""

    __test__ = False  # not a pytest test class


class StoreError(CtxrayError):
    """A results store is unreadable, incomplete, or belongs to other data."""


class PlanError(CtxrayError):
    """A pre-registration plan is unreadable, was edited after it was written, or differs from what a run would do."""


class FetchError(CtxrayError):
    """The dataset could not be fetched, or what was fetched does not verify."""


class RunError(CtxrayError):
    """Runs failed while executing (the message names them and the first error)."""


class OutputError(CtxrayError):
    """An output file or folder cannot be written: permissions, a file in the way, a read-only or full disk."""

    def __init__(self, path: Path | str, cause: str, *, errno: int | None = None) -> None:
        super().__init__(f"{path}: {cause}")
        self.path = Path(path)
        self.cause = cause
        self.errno = errno

    @property
    def no_space(self) -> bool:
        """True when the disk (or the user's quota) is full."""
        import errno

        return self.errno in (errno.ENOSPC, errno.EDQUOT)

    def __reduce__(self) -> tuple[object, ...]:  # rebuilt from its arguments in another process
        return _rebuild, (type(self), (self.path, self.cause), {"errno": self.errno})


def _rebuild(cls: type[CtxrayError], args: tuple[object, ...], kwargs: dict[str, object]) -> CtxrayError:
    """An error of ours unpickled in another process: built again from the arguments it was made with."""
    return cls(*args, **kwargs)  # type: ignore[call-arg]


def os_error_cause(exc: OSError) -> str:
    """The cause of an error of the machine, with the uid we run as where permissions matter."""
    import errno
    import os

    cause = exc.strerror or str(exc) or exc.__class__.__name__
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS) and hasattr(os, "getuid"):
        cause += f" (running as uid {os.getuid()})"
    return cause


def describe_os_error(exc: OSError) -> str:
    """One line for an error of the machine: the path(s) and the cause."""
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    return f"{' -> '.join(paths)}: {os_error_cause(exc)}" if paths else os_error_cause(exc)
