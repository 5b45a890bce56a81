"""Image decoding and the on-disk image cache.

Each image is decoded once to a grayscale float32 array in [0, 1] at the configured size and
stored under a key made of the file's content hash and that size, so the cache is shared by
runs, processes and data clones holding the same bytes. Files that fail to decode are cached
as failures too, so a corrupt file costs one decode attempt, not one per run.

Decoding choices (stated here and in the report's method section):
- 8-bit images (L, RGB, palette) are converted to luminance and divided by 255; an alpha
  channel is composited over black (in this collection every alpha channel is fully opaque).
- Images with more than 8 bits per pixel (16-bit PNG, 32-bit integer or float) are rescaled
  by their own minimum and maximum, because their effective bit depth (often 10-12 bits) is
  not recorded; a constant image becomes all zeros.
- The result is resized to size x size (aspect ratio not kept) with Pillow's antialiased
  bilinear filter. Normalisation (mean/std) happens at training time, not here.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from benchmark.atomic import write_atomically
from benchmark.errors import CacheError, ImageDecodeError
from benchmark.schemas import FilterReason

DECODE_VERSION = 1  # bump when decoding changes: old cache entries are then ignored
_MAX_PIXELS = 20_000 * 20_000  # refuse decompression bombs rather than exhausting memory
# Pillow modes deeper than 8 bits per pixel: rescaled by their own minimum and maximum (see above).
DEEP_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def decode_grayscale(data: bytes, size: int, *, source: Path | str = "<bytes>") -> np.ndarray:
    """Decode image bytes to a float32 (size, size) array in [0, 1]; ImageDecodeError when impossible."""
    array = to_unit_grayscale(open_image(data, source=source))
    resized = Image.fromarray(array).resize((size, size), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def open_image(data: bytes, *, source: Path | str = "<bytes>") -> Image.Image:
    """Open and load image bytes with Pillow; ImageDecodeError when empty, too large or undecodable."""
    if not data:
        raise ImageDecodeError(source, FilterReason.EMPTY_FILE, "file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > _MAX_PIXELS:
                raise ImageDecodeError(source, FilterReason.CORRUPT_IMAGE,
                                       f"{image.width}x{image.height} pixels is too large to decode")
            image.load()
    except ImageDecodeError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombWarning,
            Image.DecompressionBombError) as exc:
        raise ImageDecodeError(source, FilterReason.CORRUPT_IMAGE, f"cannot decode image: {exc}") from exc
    return image


def to_unit_grayscale(image: Image.Image) -> np.ndarray:
    """Luminance in [0, 1] as float32, following the module's decoding choices."""
    if image.mode in DEEP_MODES:
        values = np.asarray(image, dtype=np.float64)
        if values.ndim != 2:
            raise ImageDecodeError("<image>", FilterReason.CORRUPT_IMAGE, f"unexpected shape {values.shape}")
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
        return scaled.astype(np.float32)
    if "A" in image.mode or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, rgba)
    return np.asarray(image.convert("L"), dtype=np.float32) / 255.0


@dataclass(frozen=True)
class CachedImage:
    """Outcome of putting one file through the cache: its content hash and, on failure, why."""

    content_sha256: str
    failure: FilterReason | None = None
    message: str = ""

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
    """Decoded images on disk, keyed by (content sha256, size); safe for concurrent writers."""

    def __init__(self, root: Path | str | None = None, size: int = 128) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self.size = size
        self.directory = self.root / f"images-v{DECODE_VERSION}" / f"{size}px"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CacheError(f"{self.directory}: cannot create the image cache: {exc}") from exc

    def _array_path(self, sha: str) -> Path:
        return self.directory / sha[:2] / f"{sha}.npy"

    def _failure_path(self, sha: str) -> Path:
        return self.directory / sha[:2] / f"{sha}.failed.json"

    def ensure(self, path: Path) -> CachedImage:
        """Make sure the file's decoded array (or its decode failure) is cached; say which."""
        data = path.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        if self._array_path(sha).exists():
            return CachedImage(sha)
        failure_file = self._failure_path(sha)
        if failure_file.exists():
            try:
                stored = json.loads(failure_file.read_text(encoding="utf-8"))
                return CachedImage(sha, FilterReason(stored["reason"]), stored["message"])
            except (OSError, ValueError, KeyError):
                pass  # unreadable failure marker: decode again and rewrite it
        try:
            array = decode_grayscale(data, self.size, source=path)
        except ImageDecodeError as exc:
            reason = FilterReason(exc.reason)
            payload = json.dumps({"reason": reason.value, "message": str(exc)}).encode("utf-8")
            self._write_atomically(failure_file, payload)
            return CachedImage(sha, reason, str(exc))
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        self._write_atomically(self._array_path(sha), buffer.getvalue())
        return CachedImage(sha)

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
