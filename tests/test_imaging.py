"""Image decoding and the content-keyed on-disk cache."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np
import pytest

from benchmark.data import imaging
from benchmark.data.imaging import ImageCache, decode_file
from benchmark.errors import CacheError, ImageDecodeError
from benchmark.schemas import FilterReason
from tests.conftest import write_image


def test_decoded_image_is_float32_in_unit_range_at_the_configured_size(tmp_path: Path) -> None:
    array, _ = decode_file(write_image(tmp_path / "a.png", mode="RGB", size=(50, 30)), 24)
    assert array.shape == (24, 24) and array.dtype == np.float32
    assert 0.0 <= array.min() and array.max() <= 1.0


def test_eight_bit_gray_is_divided_by_255_not_stretched(tmp_path: Path) -> None:
    from PIL import Image
    path = tmp_path / "flat.png"
    Image.fromarray(np.full((8, 8), 51, dtype=np.uint8)).save(path)
    np.testing.assert_allclose(decode_file(path, 4)[0], 0.2, atol=1e-6)


def test_an_empty_file_is_an_empty_file_error(tmp_path: Path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageDecodeError) as info:
        decode_file(tmp_path / "empty.png", 8)
    assert info.value.reason == FilterReason.EMPTY_FILE


def test_garbage_bytes_are_a_corrupt_image_error(tmp_path: Path) -> None:
    (tmp_path / "x.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(ImageDecodeError) as info:
        decode_file(tmp_path / "x.png", 8)
    assert info.value.reason == FilterReason.CORRUPT_IMAGE and "x.png" in str(info.value)


def test_a_cached_image_is_not_decoded_again(tmp_path: Path, cache: ImageCache,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_image(tmp_path / "a.png")
    first = cache.ensure(path)
    monkeypatch.setattr(imaging, "read_image", lambda *a, **k: pytest.fail("decoded twice"))
    assert cache.ensure(path) == first and first.ok


def test_identical_bytes_under_two_names_share_one_entry(tmp_path: Path, cache: ImageCache) -> None:
    a = write_image(tmp_path / "a.png")
    b = tmp_path / "b.png"
    b.write_bytes(a.read_bytes())
    assert cache.ensure(a).content_sha256 == cache.ensure(b).content_sha256
    assert len(list(cache.directory.rglob("*.npy"))) == 1


def test_decode_failures_are_cached_with_their_reason(tmp_path: Path, cache: ImageCache,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    first = cache.ensure(bad)
    monkeypatch.setattr(imaging, "read_image", lambda *a, **k: pytest.fail("decoded twice"))
    assert cache.ensure(bad) == first and first.failure == FilterReason.CORRUPT_IMAGE


def test_another_size_is_another_cache_entry(tmp_path: Path) -> None:
    path = write_image(tmp_path / "a.png")
    small, large = ImageCache(tmp_path / "c", 8), ImageCache(tmp_path / "c", 12)
    sha = small.ensure(path).content_sha256
    large.ensure(path)
    assert small.load(sha).shape == (8, 8) and large.load(sha).shape == (12, 12)


def test_loading_an_uncached_image_says_what_to_do(cache: ImageCache) -> None:
    with pytest.raises(CacheError, match="build the cohort first"):
        cache.load("ab" * 32)


def _fill(args: tuple[str, list[str]]) -> list[str]:
    root, paths = args
    cache = ImageCache(root, 16)
    return [cache.ensure(Path(p)).content_sha256 for p in paths]


def test_two_processes_filling_the_cache_at_once_leave_it_whole(tmp_path: Path) -> None:
    paths = [str(write_image(tmp_path / f"img{i}.png", size=(300, 300), seed=i)) for i in range(24)]
    root = str(tmp_path / "shared-cache")
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        first, second = pool.map(_fill, [(root, paths), (root, paths[::-1])])
    assert first == second[::-1]
    cache = ImageCache(root, 16)
    for sha, path in zip(first, paths, strict=True):
        np.testing.assert_array_equal(cache.load(sha), decode_file(path, 16)[0])
    assert not [p for p in Path(root).rglob("*") if p.name.endswith(".tmp")]
