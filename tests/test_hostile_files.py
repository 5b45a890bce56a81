"""Hostile image files: a declared size above the cap is skipped before decoding, hashing streams, the file read is
the file checked (not a path resolved earlier), and the image cache knows the reader (issue 23, items 1-3)."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import nibabel
import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, RLELossless, generate_uid

from benchmark.config import Settings
from benchmark.data import cohort as cohort_module
from benchmark.data.imaging import ImageCache
from benchmark.data.pipeline import load_cohort
from benchmark.data.readers import ReaderPolicy, read_image
from benchmark.errors import ImageDecodeError
from benchmark.schemas import FilterReason
from tests.conftest import write_image
from tests.test_cohort_manifest import entry, write_manifest
from tests.test_readers import write_dicom


def reason_of(path: Path, policy: ReaderPolicy | None = None) -> tuple[str, str]:
    with pytest.raises(ImageDecodeError) as caught:
        read_image(path, policy)
    return caught.value.reason, str(caught.value)


def huge_nifti(path: Path, shape: tuple[int, ...]) -> Path:
    """A .nii.gz of a few hundred bytes whose header declares `shape` (uint8) and holds almost no voxels."""
    header = nibabel.Nifti1Header()
    header.set_data_dtype(np.uint8)
    header.set_data_shape(shape)
    header.set_qform(np.eye(4), code=1)
    header["vox_offset"] = 352
    path.write_bytes(gzip.compress(header.binaryblock + b"\0" * 4 + b"\1" * 4096))
    return path


def huge_rle_dicom(path: Path, rows: int, columns: int, frames: int) -> Path:
    """An RLE Lossless DICOM whose header declares frames x rows x columns 16-bit pixels, with a tiny fragment."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = RLELossless
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, columns, frames
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    from pydicom.encaps import encapsulate

    ds.PixelData = encapsulate([b"\x00" * 64])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


# --- item 1: size before memory --------------------------------------------------------------------------


def test_a_nifti_declaring_more_voxels_than_the_cap_is_refused_before_decoding(tmp_path: Path) -> None:
    reason, message = reason_of(huge_nifti(tmp_path / "bomb.nii.gz", (4096, 4096, 4096)))
    assert reason == "too_large"
    assert "declares 4096 x 4096 x 4096 voxels" in message and "max_pixels" in message


def test_a_small_rle_dicom_declaring_gigapixels_is_refused_before_decoding(tmp_path: Path) -> None:
    reason, message = reason_of(huge_rle_dicom(tmp_path / "bomb.dcm", 65535, 65535, 16))
    assert reason == "too_large" and "declares 16 x 65535 x 65535 x 1" in message


def test_the_cap_is_a_setting_that_applies_to_every_reader(tmp_path: Path) -> None:
    small = ReaderPolicy(max_pixels=100)
    png = write_image(tmp_path / "a.png", size=(20, 20))
    dicom = write_dicom(tmp_path / "a.dcm", np.arange(400, dtype=np.uint16).reshape(20, 20))
    nifti = tmp_path / "a.nii"
    nibabel.save(nibabel.Nifti1Image(np.arange(400, dtype=np.int16).reshape(20, 20), np.eye(4)), nifti)
    assert {reason_of(p, small)[0] for p in (png, dicom, nifti)} == {"too_large"}
    assert all(read_image(p, ReaderPolicy(max_pixels=400))[0].shape == (20, 20) for p in (png, dicom, nifti))
    parsed = Settings.model_validate({"cohort": {"readers": {"max_pixels": 1000}}})
    assert parsed.cohort.readers.max_pixels == 1000 and "max1000" in parsed.cohort.readers.tag


def test_a_dicom_cut_short_in_a_large_deferred_pixel_element_is_refused_not_crashed(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "big.dcm", np.arange(1024 * 1024, dtype=np.uint16).reshape(1024, 1024))
    path.write_bytes(path.read_bytes()[:-4096])
    assert reason_of(path)[0] in {"truncated", "undecodable_pixel_data"}


def test_an_oversized_file_is_a_skipped_row_and_the_rest_of_the_cohort_is_kept(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    rows = [entry("p1", "xray", 1, "img/a.png"), entry("p1", "ct", 1, "img/bomb.nii.gz"),
            entry("p2", "ct", 0, "img/b.png")]
    manifest = write_manifest(folder, rows)
    huge_nifti(folder / "img" / "bomb.nii.gz", (2048, 2048, 2048))
    cohort = load_cohort(manifest, ImageCache(tmp_path / "cache", size=16))
    [skipped] = [s for s in cohort.filter_report.skipped if s.reason == FilterReason.TOO_LARGE]
    assert skipped.line == 3 and "declares" in skipped.detail
    assert cohort.filter_report.kept_rows == 2


def test_hashing_a_large_sparse_file_streams_it_instead_of_reading_it_whole(tmp_path: Path) -> None:
    sparse = tmp_path / "sparse.png"
    write_image(sparse)
    with sparse.open("r+b") as handle:  # a valid PNG start, then a gigabyte of holes
        handle.truncate(1 << 30)
    # the peak of this process's own memory (VmHWM is reset by exec; ru_maxrss would carry pytest's peak over)
    script = ("import re, sys; from pathlib import Path; from benchmark.data.imaging import ImageCache\n"
              "outcome = ImageCache(sys.argv[2], size=16).ensure(Path(sys.argv[1]))\n"
              "peak = re.search(r'VmHWM:\\s+(\\d+) kB', Path('/proc/self/status').read_text()).group(1)\n"
              "print(outcome.failure, int(peak) // 1024)\n")
    done = subprocess.run([sys.executable, "-c", script, str(sparse), str(tmp_path / "cache")], capture_output=True,
                          text=True, check=True, timeout=300)
    peak_mib = int(done.stdout.split()[-1])
    assert peak_mib < 700  # the file alone is 1024 MiB


def test_stream_sha256_equals_the_hash_of_the_whole_file(tmp_path: Path) -> None:
    import hashlib

    from benchmark.data.files import open_image_file, stream_sha256

    path = tmp_path / "x.bin"
    path.write_bytes(os.urandom(3 * (1 << 20) + 17))
    with open_image_file(path) as handle:
        assert stream_sha256(handle) == hashlib.sha256(path.read_bytes()).hexdigest()
        assert handle.tell() == 0


# --- item 2: check what you open -------------------------------------------------------------------------


def test_a_folder_swapped_for_a_link_between_check_and_read_is_not_followed(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "c"
    manifest = write_manifest(folder, [entry("p1", "xray", 1, "img/a.png"), entry("p2", "xray", 0, "keep/b.png")])
    outside = tmp_path / "secret"
    outside.mkdir()
    write_image(outside / "a.png", seed=99)  # what an attacker wants read
    original = cohort_module._decode_all

    def swap_then_decode(*args):  # noqa: ANN002, ANN202 - whatever _decode_all takes (paths, layouts, root, ...)
        (folder / "img").rename(folder / "img-old")  # after the path check, before the read
        (folder / "img").symlink_to(outside, target_is_directory=True)
        return original(*args)

    monkeypatch.setattr(cohort_module, "_decode_all", swap_then_decode)
    cohort = load_cohort(manifest, ImageCache(tmp_path / "cache", size=16))
    [refused] = cohort.filter_report.skipped
    assert refused.line == 2 and refused.reason == FilterReason.OUTSIDE_DATA_ROOT
    assert str(outside / "a.png") in refused.detail
    assert [r.image_id for r in cohort.records] == ["keep/b.png"]


def test_a_link_inside_the_folder_to_a_file_inside_it_is_read(tmp_path: Path) -> None:
    from benchmark.data.files import open_image_file

    root = tmp_path / "root"
    write_image(root / "objects" / "x.png")
    (root / "img").mkdir()
    (root / "img" / "a.png").symlink_to(root / "objects" / "x.png")
    with open_image_file(root / "img" / "a.png", root) as handle:
        assert handle.read(4) == b"\x89PNG"


def test_a_link_inside_the_folder_to_a_file_outside_is_refused_when_opened(tmp_path: Path) -> None:
    from benchmark.data.files import open_image_file

    root = tmp_path / "root"
    root.mkdir()
    write_image(tmp_path / "outside.png")
    (root / "a.png").symlink_to(tmp_path / "outside.png")
    with pytest.raises(ImageDecodeError) as caught:
        open_image_file(root / "a.png", root)
    assert caught.value.reason == "outside_data_root" and "outside.png" in str(caught.value)


def test_a_hard_link_is_the_file_itself_and_is_read(tmp_path: Path) -> None:
    from benchmark.data.files import open_image_file

    root = tmp_path / "root"
    root.mkdir()
    write_image(tmp_path / "elsewhere.png")
    os.link(tmp_path / "elsewhere.png", root / "a.png")
    with open_image_file(root / "a.png", root) as handle:
        assert handle.read(4) == b"\x89PNG"


def test_a_fifo_named_like_an_image_is_skipped_without_hanging(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    os.mkfifo(root / "a.png")
    outcome: list[object] = []
    worker = threading.Thread(target=lambda: outcome.append(ImageCache(tmp_path / "cache", 16).ensure(
        root / "a.png", root)), daemon=True)
    started = time.monotonic()
    worker.start()
    worker.join(10)
    if not outcome:  # unblock a reader stuck in open() so that the test process can end
        try:
            os.close(os.open(root / "a.png", os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass  # no reader waiting
    assert outcome and time.monotonic() - started < 10
    assert outcome[0].failure == FilterReason.UNREADABLE_FILE


# --- item 3: the cache knows the reader ------------------------------------------------------------------


def _same_bytes_as_png_and_dicom(folder: Path) -> tuple[Path, Path]:
    png = write_image(folder / "img" / "a.png")
    (folder / "img" / "a.dcm").write_bytes(png.read_bytes())
    return png, folder / "img" / "a.dcm"


@pytest.mark.parametrize("first", ["png", "dcm"])
def test_identical_bytes_named_as_two_types_are_read_by_their_own_reader_whatever_ran_first(
        tmp_path: Path, first: str) -> None:
    png, dcm = _same_bytes_as_png_and_dicom(tmp_path)
    cache = ImageCache(tmp_path / "cache", size=16)
    order = [png, dcm] if first == "png" else [dcm, png]
    outcomes = {path.suffix: cache.ensure(path) for path in order}
    assert outcomes[".png"].ok and outcomes[".png"].reader == "pillow"
    assert not outcomes[".dcm"].ok and outcomes[".dcm"].reader == "pydicom"


def test_what_a_cohort_keeps_does_not_depend_on_what_the_cache_saw_before(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    rows = [entry("p1", "xray", 1, "img/a.png"), entry("p1", "ct", 1, "img/a.dcm"), entry("p2", "xray", 0, "img/b.png")]
    manifest = write_manifest(folder, rows)
    _same_bytes_as_png_and_dicom(folder)
    fresh = load_cohort(manifest, ImageCache(tmp_path / "fresh", size=16))
    warmed = ImageCache(tmp_path / "warmed", size=16)
    warmed.ensure(folder / "img" / "a.dcm")  # another cohort read the bytes as DICOM first
    again = load_cohort(manifest, warmed)
    assert [r.image_id for r in again.records] == [r.image_id for r in fresh.records] == ["img/a.png", "img/b.png"]
    assert {r.image_id: r.reader for r in fresh.records} == {"img/a.png": "pillow", "img/b.png": "pillow"}
