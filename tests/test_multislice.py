"""Multi-slice privileged input (issue 26, item 6): [cohort.readers] privileged_slices = "middle-three-axial" reads
the privileged modality's 3-D volumes as their middle three axial slices, and every network reading it takes three
input channels."""

from __future__ import annotations

import copy
import csv
from pathlib import Path

import nibabel
import numpy as np
import pytest
import torch

from benchmark.cli import main
from benchmark.config import CohortSettings, load_settings
from benchmark.data.imaging import ImageBank, ImageCache, resize_unit
from benchmark.data.pipeline import load_cohort
from benchmark.data.readers import read_image
from benchmark.data.synthetic import write_medical_cohort
from benchmark.errors import CacheError, ConfigError, ImageDecodeError
from benchmark.experiment.store import ResultsStore
from benchmark.experiment.study import RunRequest, run_profile
from benchmark.methods.configurations import load_configurations
from benchmark.methods.losses import LossConfig
from benchmark.methods.models import NetworkConfig, build_network
from benchmark.methods.stacking import StackedClassifier
from benchmark.methods.trainable import build_trainable, configuration_trainable, teacher_trainable
from benchmark.schemas import ReaderPolicy, image_cache_key
from tests.conftest import write_image

THREE = ReaderPolicy(privileged_slices="middle-three-axial")


def _volume(path: Path, depth: int, affine: np.ndarray | None = None, shape: tuple[int, int] = (6, 4)) -> np.ndarray:
    """A RAS volume whose every voxel differs (values 0 ... n - 1), written to `path`; returns its voxels."""
    voxels = np.arange(shape[0] * shape[1] * depth, dtype=np.float32).reshape(*shape, depth)
    nibabel.save(nibabel.Nifti1Image(voxels, np.eye(4) if affine is None else affine), path)
    return voxels


def _display(axial: np.ndarray) -> np.ndarray:
    """An axial slice of a RAS volume as the reader shows it: anterior up, the patient's right on the left."""
    return axial[::-1, ::-1].T


def _first_conv(model: torch.nn.Module) -> torch.nn.Conv2d:
    return next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))


def test_the_three_channels_are_the_middle_three_axial_slices_in_display_orientation(tmp_path: Path) -> None:
    voxels = _volume(tmp_path / "ct.nii.gz", depth=5)
    array, info = read_image(tmp_path / "ct.nii.gz", THREE, slices="middle-three-axial")
    expected = np.stack([_display(voxels[:, :, i]) for i in (1, 2, 3)]).astype(np.float64)
    expected = (expected - expected.min()) / (expected.max() - expected.min())  # one scale over the three
    assert array.shape == (3, 4, 6) and array.dtype == np.float32
    np.testing.assert_allclose(array, expected, rtol=0, atol=1e-6)
    assert "axial slices 2-4 of 5 (middle three)" in info.policy and info.channels == "three-slices"


def test_the_middle_channel_shows_the_one_image_read_of_the_volume(tmp_path: Path) -> None:
    _volume(tmp_path / "ct.nii.gz", depth=7)
    three, _ = read_image(tmp_path / "ct.nii.gz", THREE, slices="middle-three-axial")
    one, info = read_image(tmp_path / "ct.nii.gz", THREE)  # the default layout: the middle axial slice
    middle = (three[1] - three[1].min()) / (three[1].max() - three[1].min())
    np.testing.assert_allclose(middle, one, atol=1e-6)
    assert "axial slice 4 of 7 (middle)" in info.policy and info.channels is None


def test_the_three_slices_follow_the_affine_as_the_one_image_read_does(tmp_path: Path) -> None:
    voxels = _volume(tmp_path / "ras.nii.gz", depth=5)
    flipped = voxels[::-1, ::-1, ::-1].copy()  # the same anatomy stored left-posterior-inferior
    nibabel.save(nibabel.Nifti1Image(flipped, np.diag([-1.0, -1.0, -1.0, 1.0])), tmp_path / "lpi.nii.gz")
    ras, _ = read_image(tmp_path / "ras.nii.gz", THREE, slices="middle-three-axial")
    lpi, info = read_image(tmp_path / "lpi.nii.gz", THREE, slices="middle-three-axial")
    np.testing.assert_array_equal(lpi, ras)
    assert "LPI -> RAS" in info.policy


def test_a_2d_privileged_image_is_repeated_to_three_channels_and_says_so(tmp_path: Path) -> None:
    path = write_image(tmp_path / "ct.png")
    one, one_info = read_image(path, THREE)
    three, info = read_image(path, THREE, slices="middle-three-axial")
    assert three.shape == (3, *one.shape)
    for channel in three:
        np.testing.assert_array_equal(channel, one)
    assert info.channels == "one-image-repeated" and info.policy.endswith("one 2-D image repeated to 3 channels")
    assert info.pixels_sha256 == one_info.pixels_sha256  # the same picture, for the test-set overlap checks


def test_a_one_slice_volume_is_a_2d_image_and_is_repeated(tmp_path: Path) -> None:
    _volume(tmp_path / "ct.nii.gz", depth=1)
    array, info = read_image(tmp_path / "ct.nii.gz", THREE, slices="middle-three-axial")
    assert array.shape == (3, 4, 6) and info.channels == "one-image-repeated"


def test_a_volume_of_two_slices_is_refused_naming_the_setting(tmp_path: Path) -> None:
    _volume(tmp_path / "ct.nii.gz", depth=2)
    with pytest.raises(ImageDecodeError) as refused:
        read_image(tmp_path / "ct.nii.gz", THREE, slices="middle-three-axial")
    assert refused.value.reason == "unexpected_shape"
    assert "2 axial slices" in str(refused.value) and "privileged_slices" in str(refused.value)
    assert read_image(tmp_path / "ct.nii.gz", THREE)[0].shape == (4, 6)  # read as one image, as before


def test_resizing_treats_each_channel_alone() -> None:
    channels = np.random.default_rng(0).uniform(size=(3, 20, 12)).astype(np.float32)
    resized = resize_unit(channels, 8)
    assert resized.shape == (3, 8, 8)
    for got, channel in zip(resized, channels, strict=True):
        np.testing.assert_array_equal(got, resize_unit(channel, 8))


def test_the_default_policy_dumps_and_tags_as_before() -> None:
    assert "privileged_slices" not in ReaderPolicy().model_dump()
    assert ReaderPolicy().tag == "middle-middle-axial-voi"
    assert THREE.tag == "middle-middle-axial-voi-ct-middle-three-axial"
    assert (THREE.channels_for("ct"), THREE.channels_for("xray"), ReaderPolicy().channels_for("ct")) == (3, 1, 1)


def test_the_setting_is_read_from_the_settings_toml_and_checked(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[cohort.readers]\nprivileged_slices = "middle-three-axial"\n')
    assert load_settings(good).cohort.readers.privileged_slices == "middle-three-axial"
    bad = tmp_path / "bad.toml"
    bad.write_text('[cohort.readers]\nprivileged_slices = "three"\n')
    with pytest.raises(ConfigError, match="privileged_slices"):
        load_settings(bad)


def test_cache_keys_differ_between_layouts_and_not_otherwise() -> None:
    assert image_cache_key("ab" * 32, "nibabel") == f"{'ab' * 32}.nibabel"
    assert image_cache_key("ab" * 32, "nibabel", "middle-three-axial") == f"{'ab' * 32}.nibabel.middle-three-axial"
    assert image_cache_key("ab" * 32, "pillow", "middle-three-axial") != image_cache_key("ab" * 32, "pillow")


@pytest.fixture(scope="module")
def volume_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated cohort whose every privileged (CT) image is a 3-D NIfTI volume of 5 slices."""
    return write_medical_cohort(tmp_path_factory.mktemp("volumes") / "data", size=24, ct_volumes="all")


def test_every_ct_of_a_ct_volumes_all_cohort_is_a_volume_with_signal_beside_the_middle(volume_cohort: Path) -> None:
    with volume_cohort.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    cts = [r["path"] for r in rows if r["modality"] == "ct"]
    assert cts and all(p.endswith(".nii.gz") for p in cts)
    assert all(r["path"].endswith(".dcm") for r in rows if r["modality"] == "xray")
    voxels = np.asarray(nibabel.load(volume_cohort.parent / cts[-1]).dataobj)
    assert voxels.shape[2] == 5 and all(voxels[:, :, i].std() > 0 for i in range(5))


def test_xray_stays_one_channel_and_ct_takes_three_under_the_policy(volume_cohort: Path, tmp_path: Path) -> None:
    cache = ImageCache(tmp_path / "cache", 16, THREE)
    cohort = load_cohort(volume_cohort, cache, CohortSettings(readers=THREE))
    xrays = [r for r in cohort.records if r.modality == "xray"]
    cts = [r for r in cohort.records if r.modality == "ct"]
    assert {r.slices for r in xrays} == {"one"} and {r.slices for r in cts} == {"middle-three-axial"}
    bank = ImageBank(cache)
    assert bank.stack([r.cache_key for r in xrays]).shape == (len(xrays), 1, 16, 16)
    assert bank.stack([r.cache_key for r in cts], 3).shape == (len(cts), 3, 16, 16)
    assert bank.stack([], 3).shape == (0, 3, 16, 16)
    with pytest.raises(CacheError, match="one- and three-channel"):
        bank.stack([xrays[0].cache_key, cts[0].cache_key])


def test_both_layouts_share_one_cache_folder_without_mixing_arrays(volume_cohort: Path, tmp_path: Path) -> None:
    one_cache, three_cache = ImageCache(tmp_path, 16), ImageCache(tmp_path, 16, THREE)
    assert one_cache.directory == three_cache.directory  # one-image arrays are reused across the setting
    one = load_cohort(volume_cohort, one_cache, CohortSettings())
    three = load_cohort(volume_cohort, three_cache, CohortSettings(readers=THREE))
    keys = {r.image_id: r.cache_key for r in one.records}
    for record in three.records:
        assert (record.cache_key == keys[record.image_id]) == (record.modality == "xray")
        if record.modality == "ct":
            assert one_cache.load(keys[record.image_id]).shape == (16, 16)
            assert three_cache.load(record.cache_key).shape == (3, 16, 16)
    assert one.image_list_sha256 != three.image_list_sha256


def test_networks_reading_ct_take_three_channels_and_those_reading_xray_one() -> None:
    configs = load_configurations()
    weights, generator = torch.ones(2), torch.Generator().manual_seed(0)
    ct_teacher = teacher_trainable(configs["plain-ct-kd"].teacher, weights, generator, THREE)[0]
    xray_teacher = teacher_trainable(configs["same-modality-kd"].teacher, weights, generator, THREE)[0]
    student = configuration_trainable(configs["plain-ct-kd"], weights, generator, ct_teacher, THREE)[0]
    reference = configuration_trainable(configs["ct-teacher-ref"], weights, generator, None, THREE)[0]
    fusion = configuration_trainable(configs["late-fusion"], weights, generator, None, THREE)[0]
    assert _first_conv(ct_teacher).in_channels == _first_conv(reference).in_channels == 3
    assert _first_conv(xray_teacher).in_channels == _first_conv(student).in_channels == 1
    assert (_first_conv(fusion.xray).in_channels, _first_conv(fusion.ct).in_channels) == (1, 3)
    assert fusion(torch.zeros(2, 1, 16, 16), torch.zeros(2, 3, 16, 16)).logits.shape == (2, 2)
    assert configs["plain-ct-kd"].teacher.network.in_channels == 1  # the configuration itself is not edited


def test_a_timm_network_reading_ct_takes_three_channels() -> None:
    pytest.importorskip("timm")
    network = NetworkConfig(architecture="timm", options={"model": "resnet10t"})
    model, _ = build_trainable(network, LossConfig(), torch.ones(2), torch.Generator().manual_seed(0), reads="ct",
                               readers=THREE)
    assert _first_conv(model).in_channels == 3
    assert model.eval()(torch.zeros(1, 3, 32, 32)).logits.shape == (1, 2)


def test_a_network_declaring_other_input_channels_is_refused() -> None:
    with pytest.raises(ConfigError, match="in_channels = 2"):
        build_trainable(NetworkConfig(in_channels=2), LossConfig(), torch.ones(2), torch.Generator(), reads="ct",
                        readers=THREE)


def test_a_stacked_forward_of_three_channel_networks_matches_each_plain_network() -> None:
    config = NetworkConfig(widths=(8, 16, 32), in_channels=3)
    models = [build_network(config, torch.Generator().manual_seed(i)) for i in range(2)]
    plain = copy.deepcopy(models)
    stacked = StackedClassifier(models, image_size=16).eval()
    images = torch.randn(4, 2, 3, 16, 16, generator=torch.Generator().manual_seed(1))  # [B, K, C, H, W]
    outputs = StackedClassifier.outputs(*stacked(images))
    for k, model in enumerate(plain):
        torch.testing.assert_close(outputs[k].logits, model.eval()(images[:, k]).logits, rtol=1e-5, atol=1e-5)


def test_the_synthetic_command_writes_all_volumes_on_request(tmp_path: Path) -> None:
    assert main(["synthetic", "--out", str(tmp_path / "all"), "--ct-volumes", "all"]) == 0
    with (tmp_path / "all" / "manifest.csv").open(encoding="utf-8") as handle:
        assert all(r["path"].endswith(".nii.gz") for r in csv.DictReader(handle) if r["modality"] == "ct")
    assert main(["synthetic", "--out", str(tmp_path / "png"), "--layout", "collection", "--ct-volumes", "all"]) == 2


MATRIX = """
[profiles.slices]
description = "multi-slice privileged input"
settings = { splits = { monte_carlo_val_patients = 3, monte_carlo_resamples = 1 } }
training = { epochs = 1 }
teacher_training = { epochs = 1 }

[[profiles.slices.blocks]]
name = "tier-1"
purpose = "students with and without a 3-slice CT teacher, and late fusion"
configurations = ["student-only", "plain-ct-kd", "late-fusion"]
regimes = ["paired-monte-carlo"]
"""


@pytest.mark.parametrize("path", ["per-run", "stacked"])
def test_a_tiny_profile_runs_on_3d_volumes_under_the_policy(volume_cohort: Path, tmp_path: Path, path: str) -> None:
    settings = tmp_path / "settings.toml"
    settings.write_text(f'[data]\nimage_size = 16\n\n[engine]\npath = "{path}"\n\n'
                        '[cohort.readers]\nprivileged_slices = "middle-three-axial"\n')
    matrix = tmp_path / "matrix.toml"
    matrix.write_text(MATRIX)
    outcome = run_profile(RunRequest(cohort=volume_cohort, profile="slices", out=tmp_path / "store", workers=1,
                                     settings_path=settings, matrix_path=matrix, cache_root=tmp_path / "cache",
                                     progress=False))
    assert outcome.failures == {} and outcome.executed == outcome.total == 3
    store = ResultsStore(tmp_path / "store")
    assert store.manifest().settings.cohort.readers == THREE
    teachers = [r.teacher for r in store.load_all() if r.teacher is not None]
    assert len(teachers) == 1 and teachers[0].modality == "ct" and teachers[0].path == path
    meta = next((tmp_path / "store").rglob(f"{teachers[0].teacher_id}.json")).read_text(encoding="utf-8")
    assert '"in_channels": 3' in meta
