"""The on-disk image cache and the in-memory image bank the engine trains from.

Each image file is read once by its reader (`benchmark.data.readers`: Pillow, pydicom or nibabel, by file
type and the settings' reader policy) to a grayscale float32 array in [0, 1], resized to the configured
size and stored under its file's content hash, in a folder per size and (when not the default) per
reader policy. The cache is thus shared by runs, processes and data clones holding the same bytes.
Files that cannot be read are cached as failures too, so a corrupt file costs one attempt, not one per
run; beside each array the reader's record of what it did is kept (`<sha>.read.json`).

The result is resized to size x size (aspect ratio not kept) with Pillow's antialiased bilinear
filter. Normalisation (mean/std) happens at training time, not here.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from pydantic import ValidationError

from benchmark.atomic import write_atomically
from benchmark.data.readers import ReadInfo, read_image
from benchmark.errors import CacheError, ImageDecodeError
from benchmark.schemas import FilterReason, ReaderPolicy

DECODE_VERSION = 1  # bump when decoding changes: old cache entries are then ignored


def resize_unit(array: np.ndarray, size: int) -> np.ndarray:
    """A 2-D [0, 1] float32 array resized to (size, size) with antialiased bilinear filtering, kept in [0, 1]."""
    resized = Image.fromarray(np.asarray(array, dtype=np.float32)).resize((size, size), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def decode_file(path: Path | str, size: int, policy: ReaderPolicy | None = None) -> tuple[np.ndarray, ReadInfo]:
    """Read an image file by its reader and resize it: the array the cache stores; ImageDecodeError if impossible."""
    array, info = read_image(path, policy)
    return resize_unit(array, size), info


@dataclass(frozen=True)
class CachedImage:
    """Outcome of putting one file through the cache: its content hash, how it was read, and on failure why."""

    content_sha256: str
    failure: FilterReason | None = None
    message: str = ""
    read: ReadInfo | None = None  # None for a failure, or an array cached before read records were kept

    @property
    def ok(self) -> bool:
        """True when the image decoded and its array is in the cache."""
        return self.failure is None


def default_cache_dir() -> Path:
    """$CTXRAY_CACHE, else $XDG_CACHE_HOME/ctxray-bench, else ~/.cache/ctxray-bench."""
    if os.environ.get("CTXRAY_CACHE"):
        return Path(os.environ["CTXRAY_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "ctxray-bench"


class ImageCache:
    """Decoded images on disk, keyed by (content sha256, size, reader policy); safe for concurrent writers."""

    def __init__(self, root: Path | str | None = None, size: int = 128, policy: ReaderPolicy | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self.size = size
        self.policy = policy or ReaderPolicy()
        variant = "" if self.policy == ReaderPolicy() else f"-{self.policy.tag}"
        self.directory = self.root / f"images-v{DECODE_VERSION}" / f"{size}px{variant}"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CacheError(f"{self.directory}: cannot create the image cache: {exc}") from exc

    def _array_path(self, sha: str) -> Path:
        return self.directory / sha[:2] / f"{sha}.npy"

    def _failure_path(self, sha: str) -> Path:
        return self.directory / sha[:2] / f"{sha}.failed.json"

    def _read_info_path(self, sha: str) -> Path:
        return self.directory / sha[:2] / f"{sha}.read.json"

    def _read_info(self, sha: str, path: Path) -> ReadInfo | None:
        """The stored record of how the array was read; an array cached before records (or pixel hashes) were kept,
        or whose record is damaged, has the file read again, once, to write it."""
        try:
            stored = ReadInfo.model_validate_json(self._read_info_path(sha).read_bytes())
            if stored.pixels_sha256 is not None:
                return stored
        except (OSError, ValidationError):
            pass  # no record, a damaged one, or one kept before pixel hashes: read the file once to write it
        try:
            _, info = read_image(path, self.policy)
        except ImageDecodeError:
            return None
        self._write_atomically(self._read_info_path(sha), info.model_dump_json().encode("utf-8"))
        return info

    def ensure(self, path: Path) -> CachedImage:
        """Make sure the file's decoded array (or its decode failure) is cached; say which."""
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        if self._array_path(sha).exists():
            return CachedImage(sha, read=self._read_info(sha, path))
        failure_file = self._failure_path(sha)
        if failure_file.exists():
            try:
                stored = json.loads(failure_file.read_text(encoding="utf-8"))
                return CachedImage(sha, FilterReason(stored["reason"]), stored["message"])
            except (OSError, ValueError, KeyError):
                pass  # unreadable failure marker: decode again and rewrite it
        try:
            array, info = decode_file(path, self.size, self.policy)
        except ImageDecodeError as exc:
            reason = FilterReason(exc.reason)
            payload = json.dumps({"reason": reason.value, "message": str(exc)}).encode("utf-8")
            self._write_atomically(failure_file, payload)
            return CachedImage(sha, reason, str(exc))
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        self._write_atomically(self._read_info_path(sha), info.model_dump_json().encode("utf-8"))
        self._write_atomically(self._array_path(sha), buffer.getvalue())  # last: its presence means complete
        return CachedImage(sha, read=info)

    def load(self, sha: str) -> np.ndarray:
        """The cached (size, size) float32 array of the image with this content hash."""
        path = self._array_path(sha)
        try:
            return np.load(path, allow_pickle=False)
        except FileNotFoundError as exc:
            raise CacheError(f"{path}: image {sha} is not in the cache; build the cohort first") from exc
        except ValueError as exc:
            raise CacheError(f"{path}: cached array is unreadable ({exc}); delete the file to rebuild it") from exc

    def _write_atomically(self, target: Path, payload: bytes) -> None:
        try:
            write_atomically(target, payload)
        except OSError as exc:
            raise CacheError(f"{target}: cannot write to the image cache: {exc}") from exc


class ImageBank:
    """Normalised (N, 1, size, size) stacks of cached images; each image is read from disk once per process."""

    def __init__(self, cache: ImageCache, mean: float = 0.5, std: float = 0.25) -> None:
        self.cache = cache
        self.mean = mean
        self.std = std
        self._arrays: dict[str, np.ndarray] = {}

    def array(self, sha: str) -> np.ndarray:
        """The normalised (size, size) float32 array of the image with this content hash."""
        if sha not in self._arrays:
            self._arrays[sha] = (self.cache.load(sha) - np.float32(self.mean)) / np.float32(self.std)
        return self._arrays[sha]

    def stack(self, content_hashes: list[str]) -> np.ndarray:
        """The images, in order, as one (N, 1, size, size) float32 array."""
        if not content_hashes:
            return np.zeros((0, 1, self.cache.size, self.cache.size), dtype=np.float32)
        return np.stack([self.array(sha) for sha in content_hashes])[:, None]
