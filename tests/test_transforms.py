"""Tests for brainvq_monai.transforms: loading, intensity, slice extraction, resize, and the pipeline builder."""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from PIL import Image

from brainvq_monai.transforms import (
    ExtractAxialSlice,
    ExtractAxialSliced,
    LoadBrainImage,
    LoadBrainImaged,
    ResizeToFit,
    ResizeToFitd,
    ScaleIntensityRobust,
    brain_transforms,
)
from brainvq_monai.utils.errors import BrainVQError, BrainVQInputError

# on-disk voxel axes: i -> -y (posterior), j -> +z (superior), k -> -x (left); an oblique-ish, non-RAS affine
OBLIQUE = np.array([[0.0, 0.0, -2.0, 90.0], [-1.0, 0.0, 0.0, 20.0], [0.0, 1.5, 0.2, -30.0], [0.0, 0.0, 0.0, 1.0]])


def _input_error(exc: BaseException) -> BrainVQError | None:
    """The BrainVQError inside MONAI's ``RuntimeError("applying transform ...")`` wrappers, if any."""
    while exc is not None and not isinstance(exc, BrainVQError):
        exc = exc.__cause__
    return exc


def _volume(shape=(12, 14, 10), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = np.zeros(shape, np.float32)
    v[2:-2, 2:-2, 2:-2] = 50 + 50 * rng.random(tuple(s - 4 for s in shape))
    return v


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    rows = (rng.random((30, 40)) * 200 + 20).astype(np.uint8)  # (H, W)
    rgb = np.stack([rows, rows // 2, 255 - rows], -1)
    f = {}
    f["png8"] = root / "case_001_slice_0.nii.png"
    Image.fromarray(rows).save(f["png8"])
    f["png16"] = root / "deep.png"
    Image.fromarray(rows.astype(np.uint16) * 250).save(f["png16"])
    f["rgb"] = root / "rgb.png"
    Image.fromarray(rgb).save(f["rgb"])
    f["rgba"] = root / "rgba.png"
    Image.fromarray(np.concatenate([rgb, np.full((30, 40, 1), 200, np.uint8)], -1)).save(f["rgba"])
    f["palette"] = root / "pal.png"
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=32).save(f["palette"])
    f["jpeg"] = root / "1_80.jpeg"
    Image.fromarray(rows[:, :36]).save(f["jpeg"], quality=90)  # a different size: 36 wide x 30 high
    vol = _volume((16, 18, 14))
    f["nii"] = root / "sub-01_T1w.nii"
    nib.save(nib.Nifti1Image(vol, OBLIQUE), f["nii"])
    f["niigz"] = root / "sub-02_T1w.nii.gz"
    nib.save(nib.Nifti1Image(vol, OBLIQUE), f["niigz"])
    f["analyze"] = root / "OAS1_0001_MR1.hdr"
    nib.save(nib.AnalyzeImage(vol.astype(np.int16), np.diag([-1.0, 1.0, 1.25, 1.0])), f["analyze"])
    f["single4d"] = root / "sub-03_T1w.nii.gz"
    nib.save(nib.Nifti1Image(vol[..., None], OBLIQUE), f["single4d"])
    return f


IMAGES_2D = ["png8", "png16", "rgb", "rgba", "palette", "jpeg"]
VOLUMES = ["nii", "niigz", "analyze", "single4d"]


def _check(out: dict, size: tuple[int, ...]) -> None:
    x = out["image"]
    assert isinstance(x, MetaTensor) and x.dtype == torch.float32
    assert tuple(x.shape) == (1, *size)
    assert torch.isfinite(x).all() and x.min() >= 0.0 and x.max() <= 1.0
    assert x.max() > 0.3  # content survived, not an empty image
    assert out["label"] == 1 and out["subject"] == "s01" and out["slice"] == 5  # untouched


@pytest.mark.parametrize("train", [False, True])
def test_pipeline_2d_images(files, train):
    t = brain_transforms(2, (32, 24), train=train)
    for key in IMAGES_2D:
        _check(t({"image": str(files[key]), "label": 1, "subject": "s01", "slice": 5}), (32, 24))


@pytest.mark.parametrize("train", [False, True])
def test_pipeline_volumes_and_slices(files, train):
    t3 = brain_transforms(3, (12, 12, 10), train=train)
    ts = brain_transforms(2, (20, 16), train=train, from_volume_slices=True)
    tp = brain_transforms(3, (12, 12, 12), train=train, pixdim=(2.0, 2.0, 2.0))
    tps = brain_transforms(2, (20, 16), train=train, from_volume_slices=True, pixdim=(0.5, 0.5))
    for key in VOLUMES:
        item = {"image": str(files[key]), "label": 1, "subject": "s01", "slice": 5}
        _check(t3(item), (12, 12, 10))
        _check(ts(item), (20, 16))
        _check(tp(item), (12, 12, 12))
        _check(tps(item), (20, 16))


def test_pipeline_eval_is_deterministic_and_batches(files):
    from monai.data import DataLoader, Dataset

    t = brain_transforms(2, (16, 16), train=False)
    items = [{"image": str(files[k]), "label": 1, "subject": "s01", "slice": 5} for k in IMAGES_2D]
    batch = next(iter(DataLoader(Dataset(items, t), batch_size=len(items), num_workers=0)))
    assert batch["image"].shape == (len(items), 1, 16, 16)
    again = t(items[0])["image"]
    torch.testing.assert_close(batch["image"][0], again.as_tensor())
    ts = brain_transforms(2, (16, 16), train=True, from_volume_slices=True)
    vols = [{"image": str(files[k]), "label": 0, "subject": k, "slice": 4} for k in VOLUMES]
    assert next(iter(DataLoader(Dataset(vols, ts), batch_size=4)))["image"].shape == (4, 1, 16, 16)


def test_load_matches_monai_loadimage(files):
    from monai.transforms import EnsureChannelFirstd, LoadImaged, Orientationd

    for key in ("png8", "niigz"):
        ours = LoadBrainImaged("image")({"image": str(files[key])})["image"]
        # (MONAI's default reader picks nibabel for OASIS's "*.nii.png" names, hence PILReader named here)
        reader = "PILReader" if key == "png8" else None
        ref = EnsureChannelFirstd("image")(LoadImaged("image", reader=reader)({"image": str(files[key])}))["image"]
        assert ours.shape == ref.shape
        torch.testing.assert_close(ours.as_tensor(), ref.as_tensor().float())
        torch.testing.assert_close(ours.affine, ref.affine.to(torch.float64))
        if key == "png8":
            continue
        # interchangeable downstream: same result after orientation
        a = Orientationd("image", axcodes="RAS", labels=None)({"image": ours})["image"]
        b = Orientationd("image", axcodes="RAS", labels=None)({"image": ref})["image"]
        torch.testing.assert_close(a.as_tensor(), b.as_tensor().float())
        torch.testing.assert_close(a.affine, b.affine.to(torch.float64))
    single = LoadBrainImage(ensure_channel_first=False)(files["single4d"])
    assert single.shape == (16, 18, 14) and single.meta["filename_or_obj"] == str(files["single4d"])


def test_extract_slice_matches_nibabel_canonical(files):
    from monai.transforms import Orientationd

    canon = nib.as_closest_canonical(nib.load(files["niigz"])).get_fdata().astype(np.float32)
    vol = LoadBrainImaged("image")({"image": str(files["niigz"])})["image"]
    ras = Orientationd("image", axcodes="RAS", labels=None)({"image": vol})["image"]
    for k in (0, 3, canon.shape[-1] - 1):
        expected = np.flip(canon[..., k], axis=(0, 1))  # documented: radiological, anterior is row 0
        d = ExtractAxialSliced("image")({"image": ras, "slice": k})
        np.testing.assert_array_equal(d["image"][0].numpy(), expected)
        assert d["slice"] == k
        # a non-RAS volume is reoriented first: same slice
        np.testing.assert_array_equal(ExtractAxialSlice()(vol, k)[0].numpy(), expected)
    # the 2D affine maps slice voxels to the volume's world coordinates
    k = 3
    s = ExtractAxialSlice()(ras, k)
    x, y = 2, 5
    world_slice = s.affine.numpy() @ np.array([x, y, 0.0, 1.0])
    world_vol = ras.affine.numpy() @ np.array([s.shape[-2] - 1 - x, s.shape[-1] - 1 - y, k, 1.0])
    np.testing.assert_allclose(world_slice, world_vol, atol=1e-6)
    with pytest.raises(BrainVQInputError, match="slice 99 out of range"):
        ExtractAxialSlice()(ras, 99)


def test_slice_orientation_matches_2d_convention(tmp_path):
    """A marker at the anterior-right of the head lands where a PNG with a marker at its top-left puts it
    (radiological convention: the patient's right on the image's left, anterior at the top)."""
    vol = np.full((20, 24, 10), 10.0, np.float32)
    # LPS-like storage: voxel i -> patient right-to-left (x decreasing), j -> anterior-to-posterior, k -> superior
    lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    vol[:3, :3, :] = 200.0  # i small = patient right, j small = anterior
    nib.save(nib.Nifti1Image(vol, lps), tmp_path / "m.nii.gz")
    png = np.full((24, 20), 10, np.uint8)  # (H, W)
    png[:3, :3] = 200  # top rows, left columns
    Image.fromarray(png).save(tmp_path / "m.png")

    sl = brain_transforms(2, (20, 24), train=False, from_volume_slices=True)(
        {"image": str(tmp_path / "m.nii.gz"), "slice": 4}
    )
    im = brain_transforms(2, (20, 24), train=False)({"image": str(tmp_path / "m.png")})
    for x in (sl["image"][0], im["image"][0]):  # (W, H): x[column, row]
        assert x.shape == (20, 24)
        assert x[:3, :3].min() > 0.9 and x[3:, :].max() < 0.1 and x[:, 3:].max() < 0.1
    torch.testing.assert_close(sl["image"].as_tensor(), im["image"].as_tensor(), atol=0.02, rtol=0)


def test_scale_intensity_robust():
    x = torch.zeros(1, 40, 40)
    x[0, 2:38, 2:38] = torch.linspace(1, 100, 36 * 36).reshape(36, 36)
    x[0, 5, 5] = 1e6  # a hot voxel must not squash the range
    y = ScaleIntensityRobust(0.5, 99.5, nonzero=True)(x)
    assert y.min() == 0 and y.max() == 1 and y[0, 0, 0] == 0 and y[0, 5, 5] == 1
    assert 0.45 < y[0, 20, 20] < 0.55
    mm = ScaleIntensityRobust(0, 100, nonzero=False)(torch.tensor([[2.0, 4.0, 6.0]]))
    torch.testing.assert_close(mm, torch.tensor([[0.0, 0.5, 1.0]]))
    for const in (torch.zeros(1, 4, 4, 4), torch.full((1, 4, 4), 3.0)):
        out = ScaleIntensityRobust()(const)
        assert torch.isfinite(out).all() and (out == 0).all()
    two = ScaleIntensityRobust(0, 100, nonzero=False)(torch.stack([torch.arange(4.0), 10 * torch.arange(4.0)]))
    torch.testing.assert_close(two[0], two[1])  # channel-wise


def test_resize_to_fit_keeps_aspect_and_warns_once(caplog):
    img = MetaTensor(torch.ones(1, 40, 20), affine=torch.eye(4, dtype=torch.float64), meta={"filename_or_obj": "a.png"})
    r = ResizeToFit((16, 16))
    out = r(img)
    assert out.shape == (1, 16, 16)
    assert out[0, :, 4:12].min() > 0.99 and out[0, :, :3].max() == 0 and out[0, :, 13:].max() == 0  # 16x8 centred
    # physical aspect: 20x20 voxels of 2x1 mm are 40x20 mm
    aniso = MetaTensor(
        torch.ones(1, 20, 20), affine=torch.diag(torch.tensor([2.0, 1.0, 1.0, 1.0], dtype=torch.float64))
    )
    quiet = ResizeToFit((16, 16), warn_on_mixed_sizes=False)
    assert quiet.fitted_size((20, 20), (2.0, 1.0)) == (16, 8)
    assert (quiet(aniso)[0].sum(0) > 0).sum() == 8
    other = MetaTensor(torch.ones(1, 30, 30), meta={"filename_or_obj": "odd_size.png"})
    with caplog.at_level(logging.WARNING, logger="brainvq_monai.transforms.spatial"):
        r(other)
        r(MetaTensor(torch.ones(1, 50, 50), meta={"filename_or_obj": "third.png"}))
    warnings = [rec.getMessage() for rec in caplog.records if "mixed image sizes" in rec.getMessage()]
    assert len(warnings) == 1 and "odd_size.png" in warnings[0]
    d = ResizeToFitd("image", (8, 8, 8))({"image": torch.rand(1, 4, 8, 16), "label": 2})
    assert d["image"].shape == (1, 8, 8, 8) and d["label"] == 2


def test_settings_and_input_errors(files):
    with pytest.raises(BrainVQInputError, match="spatial_size"):
        brain_transforms(2, (32, 32, 32), train=False)
    with pytest.raises(BrainVQInputError, match="from_volume_slices"):
        brain_transforms(3, (8, 8, 8), train=False, from_volume_slices=True)
    with pytest.raises(BrainVQInputError, match="pixdim"):
        brain_transforms(2, (8, 8), train=False, pixdim=(1.0, 1.0))  # 2D image files have no physical grid
    with pytest.raises(BrainVQInputError, match="pixdim"):
        brain_transforms(3, (8, 8, 8), train=False, pixdim=(1.0, 1.0))
    t2 = brain_transforms(2, (8, 8), train=False)
    with pytest.raises(Exception) as exc_info:  # a volume in a 2D pipeline: one-line error naming the file
        t2({"image": str(files["niigz"])})
    err = _input_error(exc_info.value)
    assert err is not None and files["niigz"].name in str(err) and "\n" not in str(err)
    with pytest.raises(Exception) as exc_info:
        t2({"image": str(files["png8"]) + ".missing.png"})
    assert "file not found" in str(_input_error(exc_info.value))
    ts = brain_transforms(2, (8, 8), train=False, from_volume_slices=True)
    with pytest.raises(Exception) as exc_info:
        ts({"image": str(files["nii"])})
    assert "no 'slice' slice index" in str(_input_error(exc_info.value))


def test_bundle_config_target(files):
    from monai.bundle import ConfigParser

    parser = ConfigParser(
        {
            "load": {"_target_": "brainvq_monai.transforms.LoadBrainImaged", "keys": ["image"]},
            "pre": {
                "_target_": "brainvq_monai.transforms.brain_transforms",
                "spatial_dims": 2,
                "spatial_size": [8, 8],
                "train": False,
            },
        }
    )
    assert parser.get_parsed_content("load")({"image": str(files["png8"])})["image"].shape == (1, 40, 30)
    assert parser.get_parsed_content("pre")({"image": str(files["rgb"])})["image"].shape == (1, 8, 8)
