"""Tests for brainvq_monai.data.image_io: reading, conventions, one-line errors, read-only behaviour."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from brainvq_monai.data.image_io import (
    brain_axial_slices,
    image_kind,
    read_canonical_volume,
    read_image,
    validate_image,
)
from brainvq_monai.utils.errors import BrainVQInputError

OBLIQUE = np.array([[0.0, 0.0, -2.0, 90.0], [-1.0, 0.0, 0.0, 20.0], [0.0, 1.5, 0.2, -30.0], [0.0, 0.0, 0.0, 1.0]])


def _rows(h: int = 20, w: int = 24, hi: int = 255, dtype=np.uint8) -> np.ndarray:
    """A (H, W) test picture: gradient plus a bright block in the top-left corner."""
    y, x = np.mgrid[:h, :w]
    img = (x + y) * (hi // 2) // (h + w)
    img[:3, :5] = hi
    return img.astype(dtype)


def _volume(shape=(12, 14, 10), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = np.zeros(shape, np.float32)
    v[2:-2, 2:-2, 2:-2] = 50 + 50 * rng.random(tuple(s - 4 for s in shape))
    return v


def _write_png(path: Path, arr: np.ndarray, mode: str | None = None) -> Path:
    (Image.fromarray(arr, mode) if mode else Image.fromarray(arr)).save(path)
    return path


@pytest.fixture
def good_files(tmp_path: Path) -> dict[str, Path]:
    rows = _rows()
    f = {}
    f["png8"] = _write_png(tmp_path / "case_001_slice_0.nii.png", rows)
    f["png16"] = tmp_path / "deep.png"
    Image.fromarray((rows.astype(np.uint16) * 235).astype(np.uint16)).save(f["png16"])
    rgb = np.stack([rows, rows // 2, 255 - rows], -1).astype(np.uint8)
    f["rgb"] = _write_png(tmp_path / "rgb.png", rgb)
    f["rgba"] = _write_png(tmp_path / "rgba.png", np.concatenate([rgb, np.full(rows.shape + (1,), 128, np.uint8)], -1))
    f["palette"] = tmp_path / "pal.png"
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(f["palette"])
    f["jpeg"] = tmp_path / "123_S_4567_80.jpeg"
    Image.fromarray(rows).save(f["jpeg"], quality=95)
    vol = _volume()
    f["nii"] = tmp_path / "sub-01_T1w.nii"
    nib.save(nib.Nifti1Image(vol, OBLIQUE), f["nii"])
    f["niigz"] = tmp_path / "sub-02_T1w.nii.gz"
    nib.save(nib.Nifti1Image(vol, OBLIQUE), f["niigz"])
    f["analyze"] = tmp_path / "OAS1_0001_MR1.hdr"
    nib.save(nib.AnalyzeImage(vol.astype(np.int16), np.diag([-1.0, 1.0, 1.0, 1.0])), f["analyze"])
    f["single4d"] = tmp_path / "sub-03_T1w.nii.gz"
    nib.save(nib.Nifti1Image(vol[..., None], OBLIQUE), f["single4d"])
    return f


def test_image_kind():
    assert image_kind("a/case_001_slice_0.nii.png") == "2d"
    assert image_kind("X.JPEG") == "2d" and image_kind("x.tif") == "2d" and image_kind("b.bmp") == "2d"
    assert image_kind("sub-01_T1w.nii.gz") == "volume" and image_kind("a.nii") == "volume"
    assert image_kind("OAS1_0001.hdr") == "volume"
    assert image_kind("OAS1_0001.img") is None  # listed once, through its .hdr
    for name in (".DS_Store", "Thumbs.db", "notes.txt", "._case_001.png", "participants.tsv", "a.nii.gz.bak"):
        assert image_kind(name) is None, name


def test_2d_matches_monai_pilreader(good_files):
    from monai.transforms import LoadImage

    data, affine, meta = read_image(good_files["png8"])
    ref = LoadImage(image_only=True, reader="PILReader")(str(good_files["png8"]))
    assert data.dtype == np.float32 and data.shape == (24, 20)  # (W, H), as MONAI
    np.testing.assert_array_equal(data, ref.numpy())
    np.testing.assert_array_equal(affine, np.eye(4))
    np.testing.assert_array_equal(data, _rows().T.astype(np.float32))
    assert meta["kind"] == "2d" and meta["filename_or_obj"] == str(good_files["png8"])
    assert meta["original_shape"] == (24, 20)


def test_2d_modes(good_files):
    rows = _rows()
    d16, _, m16 = read_image(good_files["png16"])
    assert m16["mode"].startswith("I") and d16.max() == 255 * 235  # 16-bit range kept
    np.testing.assert_array_equal(d16, (rows.astype(np.float32) * 235).T)
    expected_l = np.asarray(Image.open(good_files["rgb"]).convert("L"), np.float32).T
    for key in ("rgb", "rgba"):
        d, _, _ = read_image(good_files[key])
        assert d.shape == (24, 20) and d.dtype == np.float32
        np.testing.assert_array_equal(d, expected_l)  # luminance, alpha ignored
    dp, _, _ = read_image(good_files["palette"])
    assert dp.shape == (24, 20) and np.abs(dp - expected_l).mean() < 12
    dj, _, _ = read_image(good_files["jpeg"])
    assert dj.shape == (24, 20) and np.abs(dj - rows.T).mean() < 4


def test_volumes(good_files):
    vol = _volume()
    for key in ("nii", "niigz", "single4d"):
        d, a, m = read_image(good_files[key])
        assert d.dtype == np.float32 and d.shape == vol.shape
        np.testing.assert_allclose(d, vol)
        np.testing.assert_allclose(a, OBLIQUE, atol=1e-5)
        assert m["kind"] == "volume" and m["original_shape"] == vol.shape
        np.testing.assert_allclose(m["pixdim"][1:4], [1.0, 1.5, np.hypot(2.0, 0.2)], rtol=1e-5)
    d, a, m = read_image(good_files["analyze"])
    np.testing.assert_allclose(d, vol.astype(np.int16))
    assert a[0, 0] < 0 and m["kind"] == "volume"
    # the .img half reads too (same pair)
    d_img, _, _ = read_image(str(good_files["analyze"])[:-4] + ".img")
    np.testing.assert_array_equal(d_img, d)


def test_canonical_matches_nibabel_and_monai(good_files):
    from monai.transforms import LoadImage, Orientation

    d, a, m = read_canonical_volume(good_files["niigz"])
    canon = nib.as_closest_canonical(nib.load(good_files["niigz"]))
    np.testing.assert_allclose(d, canon.get_fdata())
    np.testing.assert_allclose(a, canon.affine, atol=1e-5)
    assert m["spatial_shape"] == d.shape != _volume().shape
    ref = Orientation(axcodes="RAS", labels=None)(
        LoadImage(image_only=True, ensure_channel_first=True)(str(good_files["niigz"]))
    )
    np.testing.assert_allclose(ref[0].numpy(), d)


def test_partial_nan_zeroed(tmp_path):
    vol = _volume()
    vol[0, 0, :] = np.nan
    vol[1, 1, 1] = np.inf
    p = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.eye(4)), p)
    d, _, m = read_image(p)
    assert np.isfinite(d).all() and m["nan_voxels"] == vol.shape[2] + 1
    assert d[0, 0, 0] == 0 and d[1, 1, 1] == 0


def test_validate_image(good_files):
    assert validate_image(good_files["jpeg"]) == (24, 20)
    assert validate_image(good_files["single4d"]) == (12, 14, 10)
    assert validate_image(good_files["analyze"]) == (12, 14, 10)


def test_brain_axial_slices(tmp_path):
    vol = np.zeros((20, 16, 12), np.float32)
    vol[3:17, 2:14, 4:9] = 100.0  # brain in voxel slices 4..8 along the stored 3rd axis
    vol[10, 8, 10] = 100.0  # a single bright voxel: far below 5 % of the slice area
    flip_z = np.diag([1.0, 1.0, -1.0, 1.0])  # stored inferior-to-superior reversed: RAS slice k = 11 - z
    p = tmp_path / "b.nii.gz"
    nib.save(nib.Nifti1Image(vol, flip_z), p)
    assert brain_axial_slices(p) == [3, 4, 5, 6, 7]
    canon = nib.as_closest_canonical(nib.load(p)).get_fdata()
    assert all(canon[..., k].max() > 0 for k in brain_axial_slices(p))
    assert brain_axial_slices(p, min_fraction=0.9) == []


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name -> (path, expected substring of the reason)."""
    bad = {}
    png = tmp_path / "truncated.png"
    _write_png(png, np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    png.write_bytes(png.read_bytes()[:-300])
    bad["truncated_png"] = (png, "cannot read")
    gz = tmp_path / "corrupt.nii.gz"
    nib.save(nib.Nifti1Image(_volume(), np.eye(4)), gz)
    raw = bytearray(gz.read_bytes())
    raw[len(raw) // 2 : len(raw) // 2 + 64] = bytes(64)
    gz.write_bytes(bytes(raw))
    bad["corrupt_gz"] = (gz, "cannot read")
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(gzip.compress(nib.Nifti1Image(_volume(), np.eye(4)).to_bytes())[:-500])
    bad["truncated_gz"] = (cut, "cannot read")
    nii = tmp_path / "short.nii"
    nii.write_bytes(nib.Nifti1Image(_volume(), np.eye(4)).to_bytes()[:-100])
    bad["truncated_nii"] = (nii, "cannot read")
    rnd = tmp_path / "random.jpeg"
    rnd.write_bytes(np.random.default_rng(1).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    bad["random_jpeg"] = (rnd, "not a recognised image")
    ds = tmp_path / ".DS_Store"
    ds.write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(100))
    bad["ds_store"] = (ds, "not an image file")
    t4 = tmp_path / "bold.nii.gz"
    nib.save(nib.Nifti1Image(np.stack([_volume(seed=s) for s in range(3)], -1), np.eye(4)), t4)
    bad["true_4d"] = (t4, "4D series with 3 volumes; expected a 3D volume")
    nan = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(np.full((5, 5, 5), np.nan, np.float32), np.eye(4)), nan)
    bad["all_nan"] = (nan, "NaN")
    const = tmp_path / "const.nii"
    nib.save(nib.Nifti1Image(np.full((5, 5, 5), 7.0, np.float32), np.eye(4)), const)
    bad["constant_volume"] = (const, "constant image (all voxels = 7); nothing to learn")
    cpng = _write_png(tmp_path / "black.png", np.zeros((8, 8), np.uint8))
    bad["constant_png"] = (cpng, "constant image")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    bad["empty_file"] = (empty, "empty file")
    lone = tmp_path / "lone.hdr"
    nib.save(nib.AnalyzeImage(_volume().astype(np.int16), np.eye(4)), lone)
    os.remove(tmp_path / "lone.img")
    bad["lone_hdr"] = (lone, "without its .img")
    bad["missing"] = (tmp_path / "missing.png", "file not found")
    return bad


def test_bad_files_one_line_errors(tmp_path):
    for name, (path, reason) in _bad_files(tmp_path).items():
        for fn in (read_image, validate_image):
            with pytest.raises(BrainVQInputError) as exc_info:
                fn(path)
            msg = str(exc_info.value)
            assert "\n" not in msg and path.name in msg, (name, msg)
            assert reason in msg, (name, msg)
            assert len(msg) < len(str(path)) + 160, (name, msg)
            err = exc_info.value  # no chained PIL/nibabel traceback shown
            assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__), name


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir()) if p.is_file()}


def test_reading_never_writes(tmp_path, good_files):
    _bad_files(tmp_path)
    before = _snapshot(tmp_path)
    for p in sorted(tmp_path.iterdir()):
        for fn in (read_image, validate_image):
            try:
                fn(p)
            except BrainVQInputError:
                pass
        if image_kind(p) == "volume":
            try:
                brain_axial_slices(p)
            except BrainVQInputError:
                pass
    assert _snapshot(tmp_path) == before


def test_constant_images_are_refused_unless_allowed(tmp_path):
    """A blank input is refused (nothing to learn); a blank generated sample can be read to be shown."""
    black = _write_png(tmp_path / "sample_NC_0000.png", np.zeros((8, 6), np.uint8))
    with pytest.raises(BrainVQInputError, match="constant image"):
        read_image(black)
    data, _, meta = read_image(black, allow_constant=True)
    assert data.shape == (6, 8) and float(np.abs(data).max()) == 0.0 and meta["kind"] == "2d"
