"""The image cache reads a new file from disk once: its bytes are hashed and decoded from memory (issue 25); only a
file above the in-memory bound is hashed as it streams and decoded from the open file, as before."""

from __future__ import annotations

from pathlib import Path
from typing import Any, BinaryIO

import pytest

from benchmark.data import imaging
from benchmark.data.imaging import ImageCache
from benchmark.schemas import image_cache_key
from tests.conftest import write_image


class _Counting:
    """An open file that counts the bytes read from it (everything else is the file's)."""

    def __init__(self, handle: BinaryIO, tally: list[int]) -> None:
        self._handle, self._tally = handle, tally

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self._tally.append(len(data))
        return data

    def readinto(self, buffer: Any) -> int:
        count = self._handle.readinto(buffer)  # type: ignore[attr-defined]
        self._tally.append(count or 0)
        return count or 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)

    def __enter__(self) -> _Counting:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()

    def __repr__(self) -> str:
        return repr(self._handle)


@pytest.fixture
def tally(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Bytes read from every image file the cache opens."""
    counted: list[int] = []
    opener = imaging.open_image_file
    monkeypatch.setattr(imaging, "open_image_file", lambda path, root=None: _Counting(opener(path, root), counted))
    return counted


def test_a_new_file_is_read_from_disk_once(tmp_path: Path, tally: list[int]) -> None:
    image = write_image(tmp_path / "a.png", size=(64, 48))
    cached = ImageCache(tmp_path / "cache", 32).ensure(image)
    assert cached.ok and sum(tally) == image.stat().st_size


def test_a_file_above_the_memory_bound_is_streamed_then_decoded_from_the_file(
        tmp_path: Path, tally: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(imaging, "READ_WHOLE_MAX_BYTES", 0)
    image = write_image(tmp_path / "a.png", size=(64, 48))
    streamed = ImageCache(tmp_path / "streamed", 32)
    cached = streamed.ensure(image)
    assert cached.ok and sum(tally) >= 2 * image.stat().st_size
    monkeypatch.setattr(imaging, "READ_WHOLE_MAX_BYTES", 1 << 28)
    in_memory = ImageCache(tmp_path / "memory", 32)
    again = in_memory.ensure(image)
    key = image_cache_key(cached.content_sha256, cached.reader)
    assert again.content_sha256 == cached.content_sha256 and again.read == cached.read
    assert (in_memory.load(key) == streamed.load(key)).all()
