"""Tests of the offline demo cohort (``brainvq demo-data``): layouts, formats, splits, atrophy, determinism, errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from brainvq_monai.cli import main
from brainvq_monai.data.demo import (
    ADNI_SIZE,
    OASIS_SIZE,
    SEG_PNG_VALUES,
    DemoCohortSummary,
    _radiological,
    make_demo_cohort,
)
from brainvq_monai.utils.errors import BrainVQInputError

N_SUBJECTS, N_SLICES, SEED = 4, 3, 3
OASIS_RE = re.compile(r"case_(\d{3})_slice_(\d+)\.nii\.png")
SEG_RE = re.compile(r"seg_(\d{3})_slice_(\d+)\.nii\.png")
ADNI_RE = re.compile(r"(\d{6})_(\d+)\.jpeg")
NIFTI_RE = re.compile(r"sub-(\d{3})_T1w\.nii\.gz")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "cohort"
    summary = make_demo_cohort(out, subjects=N_SUBJECTS, seed=SEED, slices_per_subject=N_SLICES, workers=2)
    meta = json.loads((out / "demo_cohort.json").read_text(encoding="utf-8"))
    return out, summary, meta


def _load(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


def _arrays(root: Path) -> dict[str, np.ndarray]:
    """Every image file of a cohort as an array, keyed by its path relative to ``root``."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.suffix in (".png", ".jpeg"):
            out[str(path.relative_to(root))] = _load(path)
        elif path.name.endswith(".nii.gz"):
            out[str(path.relative_to(root))] = np.asanyarray(nib.load(path).dataobj)
    return out


def test_oasis_layout(cohort):
    out, _, meta = cohort
    split_of = {p["oasis"]["id"]: p["oasis"]["split"] for p in meta["participants"]}
    seen: dict[str, set[str]] = {}
    for split in ("train", "validate", "test"):
        images = sorted((out / f"keras_png_slices_{split}").iterdir())
        segs = sorted((out / f"keras_png_slices_seg_{split}").iterdir())
        assert images, f"no OASIS images in {split}"
        assert len(images) == len(segs)
        for path in images:
            m = OASIS_RE.fullmatch(path.name)
            assert m, path.name
            case = f"case_{m.group(1)}"
            assert split_of[case] == split
            seen.setdefault(case, set()).add(split)
            assert (out / f"keras_png_slices_seg_{split}" / f"seg_{m.group(1)}_slice_{m.group(2)}.nii.png").is_file()
        assert all(SEG_RE.fullmatch(p.name) for p in segs)
    assert len(seen) == N_SUBJECTS
    assert all(len(s) == 1 for s in seen.values()), "a subject in two OASIS splits"
    for case in seen:
        split = split_of[case]
        ks = {int(OASIS_RE.fullmatch(p.name).group(2)) for p in (out / f"keras_png_slices_{split}").glob(f"{case}_*")}
        assert ks == set(range(N_SLICES))


def test_adni_layout(cohort):
    out, _, meta = cohort
    by_id = {p["adni"]["id"]: p for p in meta["participants"]}
    assert len(by_id) == N_SUBJECTS and all(re.fullmatch(r"\d{6}", i) for i in by_id)
    where: dict[str, set[tuple[str, str]]] = {}
    for split in ("train", "test"):
        for group in ("AD", "NC"):
            files = sorted((out / "AD_NC" / split / group).iterdir())
            assert files, f"AD_NC/{split}/{group} is empty"  # 2 AD + 2 NC: both classes in both splits
            for path in files:
                m = ADNI_RE.fullmatch(path.name)
                assert m, path.name
                p = by_id[m.group(1)]
                assert (p["group"], p["adni"]["split"]) == (group, split)
                assert int(m.group(2)) in p["adni"]["slices"]
                where.setdefault(m.group(1), set()).add((split, group))
    assert all(len(w) == 1 for w in where.values()), "a patient in two ADNI splits or classes"
    assert all(len(p["adni"]["slices"]) == N_SLICES for p in meta["participants"])


def test_image_formats(cohort):
    out, _, _ = cohort
    seg_values: set[int] = set()
    for path in out.glob("keras_png_slices_*/*.png"):
        with Image.open(path) as im:
            assert im.format == "PNG" and im.mode == "L" and im.size == (OASIS_SIZE[1], OASIS_SIZE[0])
            arr = np.asarray(im)
        if path.name.startswith("seg_"):
            seg_values |= set(np.unique(arr).tolist())
        else:
            # the brain fills the frame (cropped to its bounding box) without touching the border
            rows, cols = np.flatnonzero(arr.max(1) > 10), np.flatnonzero(arr.max(0) > 10)
            assert max(rows[-1] - rows[0], cols[-1] - cols[0]) > 0.8 * OASIS_SIZE[0]
            assert arr[0].max() == arr[-1].max() == arr[:, 0].max() == arr[:, -1].max() == 0
    assert seg_values == set(SEG_PNG_VALUES)
    jpegs = list(out.glob("AD_NC/*/*/*.jpeg"))
    assert len(jpegs) == N_SUBJECTS * N_SLICES
    for path in jpegs:
        with Image.open(path) as im:
            assert im.format == "JPEG" and im.mode == "L" and im.size == (ADNI_SIZE[1], ADNI_SIZE[0]) == (256, 240)


def test_nifti_and_participants(cohort):
    out, _, meta = cohort
    files = sorted((out / "nifti").glob("*.nii.gz"))
    assert [NIFTI_RE.fullmatch(f.name) is not None for f in files] == [True] * N_SUBJECTS
    for f in files:
        img = nib.load(f)
        assert img.ndim == 3 and min(img.shape) > 100
        assert not np.allclose(img.affine, np.eye(4))
        assert np.allclose(np.abs(np.linalg.det(img.affine[:3, :3])), 1.0, atol=1e-3)  # 1 mm voxels, rigid
        data = img.get_fdata(dtype=np.float32)
        assert data.dtype == np.float32 and np.isfinite(data).all()
        assert 0.1 < (data > 0).mean() < 0.9 and data.min() >= 0
    lines = (out / "nifti" / "participants.tsv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "participant_id\tgroup"
    rows = dict(line.split("\t") for line in lines[1:])
    assert rows == {p["nifti"]["id"]: p["group"] for p in meta["participants"]}
    assert sorted(rows) == [f.name.replace("_T1w.nii.gz", "") for f in files]


def test_metadata_summary_and_readme(cohort):
    out, summary, meta = cohort
    assert meta["complete"] and meta["subjects"] == N_SUBJECTS and meta["seed"] == SEED
    parts = meta["participants"]
    assert sorted(p["group"] for p in parts) == ["AD", "AD", "NC", "NC"]
    for p in parts:
        assert (0.3 <= p["severity"] <= 1.0) if p["group"] == "AD" else p["severity"] == 0.0
    assert {p["oasis"]["split"] for p in parts} == {"train", "validate", "test"}
    assert isinstance(summary, DemoCohortSummary)
    assert summary.groups == {"NC": 2, "AD": 2}
    assert sum(sum(c.values()) for c in summary.oasis.values()) == N_SUBJECTS
    assert summary.adni["test"] == {"NC": 1, "AD": 1}
    text = str(summary)
    assert "4 synthetic subjects (2 NC, 2 AD)" in text and str(out) in text and "test 2 (1 NC, 1 AD)" in text
    readme = (out / "README.txt").read_text(encoding="utf-8")
    assert "SYNTHETIC" in readme and "MNI152" in readme and "2009a" in readme and f"seed: {SEED}" in readme
    for p in parts:
        assert re.search(rf"{p['nifti']['id']}\s.*\s{p['group']}\s+{p['severity']:.3f}", readme)


def test_ad_has_more_csf(cohort):
    out, _, meta = cohort
    fraction = {"AD": [], "NC": []}
    for p in meta["participants"]:
        number = p["oasis"]["id"].split("_")[1]
        segs = np.stack([_load(f) for f in out.glob(f"keras_png_slices_seg_*/seg_{number}_slice_*.nii.png")])
        fraction[p["group"]].append((segs == 85).sum() / (segs > 0).sum())
    assert min(fraction["AD"]) > max(fraction["NC"]), fraction


def test_orientation():
    # RAS volume plane (x: left->right, y: posterior->anterior): anterior-right corner goes to the top-left
    plane = np.zeros((5, 7))
    plane[4, 6] = 1  # right, anterior
    plane[0, 0] = 2  # left, posterior
    shown = _radiological(plane)
    assert shown.shape == (7, 5) and shown[0, 0] == 1 and shown[-1, -1] == 2


def test_slices_match_volume(cohort):
    # an ADNI slice is the NIfTI axial plane of the same number shown radiologically (anterior up, right on the left)
    out, _, meta = cohort
    p = meta["participants"][0]
    z = p["adni"]["slices"][1]
    vol = nib.load(out / p["nifti"]["file"]).get_fdata(dtype=np.float32)
    shown = _radiological(vol[:, :, z])
    jpeg = _load(out / "AD_NC" / p["adni"]["split"] / p["group"] / f"{p['adni']['id']}_{z}.jpeg").astype(np.float32)

    def brain_box(a: np.ndarray, thr: float) -> np.ndarray:
        r, c = np.flatnonzero(a.max(1) > thr), np.flatnonzero(a.max(0) > thr)
        return a[r[0] : r[-1] + 1, c[0] : c[-1] + 1]

    target = brain_box(jpeg, 20)
    h, w = target.shape

    def corr(a: np.ndarray) -> float:
        resized = np.asarray(Image.fromarray(brain_box(a, 50)).resize((w, h), Image.BILINEAR))
        return float(np.corrcoef(resized.ravel(), target.ravel())[0, 1])

    good = corr(shown)
    assert good > 0.8
    for flipped in (shown[::-1], shown[:, ::-1], shown[::-1, ::-1]):  # upside down, left-right, both
        assert good > corr(np.ascontiguousarray(flipped)) + 0.05
    assert abs(h / w - brain_box(shown, 50).shape[0] / brain_box(shown, 50).shape[1]) < 0.1


def test_deterministic_and_overwrites_previous(cohort, tmp_path):
    out, _, meta = cohort
    again = tmp_path / "again"
    stale = again / "keras_png_slices_train" / "case_999_slice_0.nii.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    (again / "notes.txt").write_text("mine")
    (again / "demo_cohort.json").write_text(json.dumps({"generator": "brainvq_monai.data.demo"}))
    make_demo_cohort(again, subjects=N_SUBJECTS, seed=SEED, slices_per_subject=N_SLICES, workers=1)
    assert not stale.exists() and (again / "notes.txt").read_text() == "mine"
    first, second = _arrays(out), _arrays(again)
    assert sorted(first) == sorted(second) and len(first) == 3 * N_SUBJECTS * N_SLICES + N_SUBJECTS
    for key, arr in first.items():
        np.testing.assert_array_equal(arr, second[key], err_msg=key)
    assert json.loads((again / "demo_cohort.json").read_text()) == meta


def test_cli_and_other_seed(cohort, tmp_path, capsys):
    out, _, _ = cohort
    other = tmp_path / "other"
    assert main(["demo-data", "--out", str(other), "--subjects", "2", "--seed", "4", "--slices", "1"]) == 0
    printed = capsys.readouterr()
    assert "2 synthetic subjects (1 NC, 1 AD)" in printed.out and str(other) in printed.out
    assert "2/2" in printed.err  # progress
    assert len(list(other.glob("keras_png_slices_*/case_*.png"))) == 2
    assert len(list(other.glob("AD_NC/*/*/*.jpeg"))) == 2
    a = np.asanyarray(nib.load(out / "nifti" / "sub-001_T1w.nii.gz").dataobj)
    b = np.asanyarray(nib.load(other / "nifti" / "sub-001_T1w.nii.gz").dataobj)
    assert a.shape == b.shape and not np.array_equal(a, b)

    # bad input through the CLI: one line on stderr, exit status 2
    assert main(["demo-data", "--out", str(tmp_path / "x"), "--subjects", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "subjects" in err and not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "kwargs, setting",
    [
        ({"subjects": 1}, "subjects"),
        ({"subjects": 2.5}, "subjects"),
        ({"slices_per_subject": 0}, "slices_per_subject"),
        ({"slices_per_subject": 100_000}, "slices_per_subject"),
        ({"seed": -1}, "seed"),
        ({"workers": 0}, "workers"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, setting):
    with pytest.raises(BrainVQInputError) as err:
        make_demo_cohort(tmp_path / "out", **kwargs)
    assert err.value.where == setting
    assert not (tmp_path / "out").exists()


def test_refuses_foreign_folder(tmp_path):
    (tmp_path / "data.nii.gz").write_bytes(b"precious")
    with pytest.raises(BrainVQInputError) as err:
        make_demo_cohort(tmp_path, subjects=2, slices_per_subject=1)
    assert err.value.where == str(tmp_path) and "not empty" in err.value.reason
    (tmp_path / "demo_cohort.json").write_text("{not json")
    with pytest.raises(BrainVQInputError):
        make_demo_cohort(tmp_path, subjects=2, slices_per_subject=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.nii.gz", "demo_cohort.json"]
    a_file = tmp_path / "data.nii.gz"
    with pytest.raises(BrainVQInputError, match="not a folder"):
        make_demo_cohort(a_file, subjects=2, slices_per_subject=1)
