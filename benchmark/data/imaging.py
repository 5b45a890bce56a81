"""The on-disk image cache and the in-memory image bank the engine trains from.

Each file is read and decoded once, and its resized array is shared by every run through the cache.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image
from pydantic import ValidationError

from benchmark.atomic import write_atomically
from benchmark.data.files import open_image_file, stream_sha256
from benchmark.data.reader_common import ReadInfo
from benchmark.data.readers import file_kind, read_image
from benchmark.errors import CacheError, ImageDecodeError
from benchmark.schemas import FilterReason, ReaderPolicy, SliceLayout, image_cache_key

# Each file is opened once (`benchmark.data.files`), its bytes read once, hashed and decoded by its reader
# (`benchmark.data.readers`), and the resized array cached under the content hash and reader, shared by every run.

DECODE_VERSION = 2  # bump when decoding changes: old entries are then ignored (2: 2-D NIfTI turned by its affine, NaN)


# Resized to size x size (aspect ratio not kept) with Pillow's antialiased bilinear filter, each channel of a
# (channels, rows, columns) array alone; normalisation (mean/std) happens at training time, not here.
def resize_unit(array: np.ndarray, size: int) -> np.ndarray:
    """A [0, 1] float32 image, 2-D or (channels, rows, columns), resized to (size, size) per channel with
    antialiased bilinear filtering, kept in [0, 1]."""
    if array.ndim == 3:
        return np.stack([resize_unit(channel, size) for channel in array])
    resized = Image.fromarray(np.asarray(array, dtype=np.float32)).resize((size, size), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def decode_file(path: Path | str, size: int, policy: ReaderPolicy | None = None, *,
                handle: BinaryIO | None = None, slices: SliceLayout = "one") -> tuple[np.ndarray, ReadInfo]:
    """Read an image file by its reader and resize it: the array the cache stores; ImageDecodeError if impossible."""
    array, info = read_image(path, policy, handle=handle, slices=slices)
    return resize_unit(array, size), info


@dataclass(frozen=True)
class CachedImage:
    """Outcome of putting one file through the cache: its content hash and reader, how it was read, and on failure
    why (a file refused when opened has no content hash: nothing of it was read)."""

    content_sha256: str
    failure: FilterReason | None = None
    message: str = ""
    read: ReadInfo | None = None  # None for a failure, or an array cached before read records were kept
    reader: str = "pillow"  # the reader its type goes to (the key's second half); "unknown" for no reader

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


# A file of at most this many bytes (a 512^3 16-bit volume) is read into memory once, then hashed and decoded from
# those bytes; a larger one is hashed in chunks and decoded from the open file, so memory stays bounded however large
# the file (a gigabyte of holes named .png costs no gigabyte).
READ_WHOLE_MAX_BYTES = 1 << 28


class _FileBytes(io.BytesIO):
    """An open file's bytes in memory, named and shown as that file, so decoders read and word them alike."""

    def __init__(self, content: bytes, opened: BinaryIO) -> None:
        super().__init__(content)
        # Pillow quotes the file's repr, nibabel its name, and pydicom keeps the name: as the open file's, so results
        # and messages stay those of decoding from the file itself
        self.name = opened.name
        self._shown = repr(opened)

    def __repr__(self) -> str:
        return self._shown


def _read_once(opened: BinaryIO, limit: int) -> tuple[BinaryIO, str]:
    """What to decode from and its sha256: the file's bytes read into memory when at most `limit` of them, else the
    open file itself, hashed in chunks."""
    if os.fstat(opened.fileno()).st_size <= limit:
        opened.seek(0)
        try:
            content = opened.read()
        except MemoryError:
            pass  # more than this machine holds now: hashed in chunks and decoded from the file, as a larger one
        else:
            return _FileBytes(content, opened), hashlib.sha256(content).hexdigest()
    return opened, stream_sha256(opened)


# failures that depend on this machine or this moment (memory, permissions, I/O), not on the file's bytes
_NOT_CACHED = frozenset({FilterReason.UNREADABLE_FILE, FilterReason.MISSING_FILE, FilterReason.OUTSIDE_DATA_ROOT})


# Keyed by the file's content hash and its reader (`schemas.image_cache_key`), in a folder per size and (when not the
# default) per reader policy: the cache is shared by runs, processes and data clones holding the same bytes, and
# identical bytes named as two file types (a `.png` and a `.dcm`) are two entries, so what a cohort keeps never depends
# on what was cached before. The privileged modality's three-channel arrays (`privileged_slices`) have keys of their
# own (the layout appended) in the folder of the rest of the policy, so one- and three-channel arrays never mix and
# every one-image array is shared by both settings. Files that cannot be read are cached as failures too, so a
# corrupt file costs one attempt, not one per run; beside each array the reader's record of what it did is kept
# (`<sha>.read.json`).
class ImageCache:
    """Decoded images on disk, keyed by (content sha256 and reader, size, reader policy); safe for concurrent
    writers."""

    def __init__(self, root: Path | str | None = None, size: int = 128, policy: ReaderPolicy | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self.size = size
        self.policy = policy or ReaderPolicy()
        folder_policy = self.policy.model_copy(update={"privileged_slices": "one"})  # the layout is in the keys
        variant = "" if folder_policy == ReaderPolicy() else f"-{folder_policy.tag}"
        self.directory = self.root / f"images-v{DECODE_VERSION}" / f"{size}px{variant}"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CacheError(f"{self.directory}: cannot create the image cache: {exc}") from exc

    def _array_path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.npy"

    def _failure_path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.failed.json"

    def _read_info_path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.read.json"

    def _read_info(self, key: str, path: Path, handle: BinaryIO, slices: SliceLayout) -> ReadInfo | None:
        """The stored record of how the array was read; an array cached before records (or pixel hashes) were kept,
        or whose record is damaged, has the file read again, once, to write it."""
        try:
            stored = ReadInfo.model_validate_json(self._read_info_path(key).read_bytes())
            if stored.pixels_sha256 is not None:
                return stored
        except (OSError, ValidationError):
            pass  # no record, a damaged one, or one kept before pixel hashes: read the file once to write it
        try:
            _, info = read_image(path, self.policy, handle=handle, slices=slices)
        except ImageDecodeError:
            return None
        self._write_atomically(self._read_info_path(key), info.model_dump_json().encode("utf-8"))
        return info

    def ensure(self, path: Path, root: Path | None = None, slices: SliceLayout = "one") -> CachedImage:
        """Make sure the file's decoded array (or its decode failure) is cached; say which. With a root, the file
        opened must lie under it; everything is then read from that one opened file. `slices`: the layout of the
        array (`ReaderPolicy.slices_for` the file's modality role)."""
        try:
            handle = open_image_file(path, root)
        except ImageDecodeError as exc:  # refused before a byte was read: nothing to cache
            return CachedImage("", FilterReason(exc.reason), str(exc), reader=file_kind(path) or "unknown")
        with handle:
            return self._ensure_opened(path, handle, slices)

    def _ensure_opened(self, path: Path, opened: BinaryIO, slices: SliceLayout) -> CachedImage:
        handle, sha = _read_once(opened, READ_WHOLE_MAX_BYTES)
        reader = file_kind(path, handle) or "unknown"
        key = image_cache_key(sha, reader, slices)
        if self._array_path(key).exists():
            return CachedImage(sha, read=self._read_info(key, path, handle, slices), reader=reader)
        failure_file = self._failure_path(key)
        if failure_file.exists():
            try:
                stored = json.loads(failure_file.read_text(encoding="utf-8"))
                return CachedImage(sha, FilterReason(stored["reason"]), stored["message"], reader=reader)
            except (OSError, ValueError, KeyError):
                pass  # unreadable failure marker: decode again and rewrite it
        try:
            array, info = decode_file(path, self.size, self.policy, handle=handle, slices=slices)
        except ImageDecodeError as exc:
            reason = FilterReason(exc.reason)
            if reason in _NOT_CACHED or isinstance(exc.__cause__, MemoryError):  # of this machine now, not of the bytes
                return CachedImage(sha, reason, str(exc), reader=reader)
            payload = json.dumps({"reason": reason.value, "message": str(exc)}).encode("utf-8")
            self._write_atomically(failure_file, payload)
            return CachedImage(sha, reason, str(exc), reader=reader)
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        self._write_atomically(self._read_info_path(key), info.model_dump_json().encode("utf-8"))
        self._write_atomically(self._array_path(key), buffer.getvalue())  # last: its presence means complete
        return CachedImage(sha, read=info, reader=reader)

    def load(self, key: str) -> np.ndarray:
        """The cached float32 array of the image with this cache key (ImageRecord.cache_key): (size, size), or
        (3, size, size) for a three-channel key."""
        path = self._array_path(key)
        try:
            return np.load(path, allow_pickle=False)
        except FileNotFoundError as exc:
            raise CacheError(f"{path}: image {key} is not in the cache; build the cohort first") from exc
        except ValueError as exc:
            raise CacheError(f"{path}: cached array is unreadable ({exc}); delete the file to rebuild it") from exc

    def _write_atomically(self, target: Path, payload: bytes) -> None:
        try:
            write_atomically(target, payload)
        except OSError as exc:
            raise CacheError(f"{target}: cannot write to the image cache: {exc}") from exc


class ImageBank:
    """Normalised (N, C, size, size) stacks of cached images (C = 1, or 3 for the privileged modality's middle three
    axial slices); each image is read from disk once per process."""

    def __init__(self, cache: ImageCache, mean: float = 0.5, std: float = 0.25) -> None:
        self.cache = cache
        self.mean = mean
        self.std = std
        self._arrays: dict[str, np.ndarray] = {}

    def array(self, key: str) -> np.ndarray:
        """The normalised float32 array of the image with this cache key, every channel by the same constants."""
        if key not in self._arrays:
            self._arrays[key] = (self.cache.load(key) - np.float32(self.mean)) / np.float32(self.std)
        return self._arrays[key]

    def stack(self, keys: list[str], channels: int = 1) -> np.ndarray:
        """The images with these cache keys (ImageRecord.cache_key), in order, as one (N, C, size, size) array;
        `channels` is C when there are none; CacheError if the images' channels differ."""
        if not keys:
            return np.zeros((0, channels, self.cache.size, self.cache.size), dtype=np.float32)
        arrays = [self.array(key) for key in keys]
        arrays = [array[None] if array.ndim == 2 else array for array in arrays]
        shapes = sorted({array.shape for array in arrays})
        if len(shapes) > 1:
            raise CacheError(f"{self.cache.directory}: images of one stack have shapes {shapes}; one- and "
                             "three-channel arrays cannot be stacked together")
        return np.stack(arrays)
