"""Tests of the leak-free datalists (OASIS, ADNI, NIfTI layouts) and of ``brainvq datalist``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.data import load_decathlon_datalist
from PIL import Image

from brainvq_monai.cli import main
from brainvq_monai.data import datalist as dl
from brainvq_monai.data.datalist import (
    SPLITS,
    assert_subject_disjoint,
    build_datalist,
    format_summary,
    read_participants,
    split_subjects,
    write_datalist,
)
from brainvq_monai.utils.errors import BrainVQInputError

# ------------------------------------------------------------------------------------------------ fake datasets


def _png(path: Path, size: tuple[int, int] = (16, 16), seed: int = 0, fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size[1], size[0]), dtype=np.uint8)
    Image.fromarray(arr, mode="L").save(path, format=fmt)


def _volume(path: Path, brain_slices: range = range(3, 7), shape=(12, 12, 10), analyze: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.zeros(shape, dtype=np.float32)
    data[2:10, 2:10, brain_slices.start : brain_slices.stop] = 100.0
    data[0, 0, 0] = 1.0  # not constant outside the brain either
    affine = np.diag([-2.0, 2.0, 2.0, 1.0])  # LAS on disk, a real (non-identity) affine
    affine[:3, 3] = [12.0, -12.0, -10.0]
    img = nib.AnalyzeImage(data, affine) if analyze else nib.Nifti1Image(data, affine)
    nib.save(img, str(path))


OASIS_SUBJECTS = {"train": ["001", "002", "003", "004"], "validate": ["005", "006"], "test": ["007", "008"]}


def _make_oasis(root: Path, splits=("train", "validate", "test"), slices: int = 3) -> Path:
    for split in splits:
        for sub in OASIS_SUBJECTS[split]:
            for k in range(slices):
                _png(root / f"keras_png_slices_{split}" / f"case_{sub}_slice_{k}.nii.png", seed=int(sub) * 10 + k)
                _png(root / f"keras_png_slices_seg_{split}" / f"seg_{sub}_slice_{k}.nii.png", seed=k)
    (root / f"keras_png_slices_{splits[0]}" / ".DS_Store").write_bytes(b"\x00\x01junk")
    (root / "README.txt").write_text("OASIS slices\n")
    return root


ADNI_PATIENTS = {
    ("train", "AD"): ["1001", "1002", "1003", "1004", "1005"],
    ("train", "NC"): ["2001", "2002", "2003", "2004", "2005"],
    ("test", "AD"): ["3001", "3002"],
    ("test", "NC"): ["4001", "4002"],
}


def _make_adni(parent: Path, slices: int = 3) -> Path:
    root = parent / "AD_NC"
    for (split, cls), patients in ADNI_PATIENTS.items():
        for pid in patients:
            for k in range(slices):
                _png(root / split / cls / f"{pid}_{80 + k}.jpeg", size=(20, 16), seed=int(pid) + k, fmt="JPEG")
    (root / "train" / "AD" / ".DS_Store").write_bytes(b"junk")
    return parent


NIFTI_GROUPS = {f"sub-{i:02d}": ("AD" if i <= 5 else ("CN" if i % 2 else "NC")) for i in range(1, 11)}


def _make_nifti(root: Path) -> Path:
    for i, sub in enumerate(NIFTI_GROUPS):
        if i < 6:
            _volume(root / f"{sub}_T1w.nii.gz")
        elif i < 9:
            _volume(root / sub / "anat" / f"{sub}_T1w.nii")
            (root / sub / "anat" / f"{sub}_T1w.json").write_text("{}")
        else:
            _volume(root / sub / "anat" / f"{sub}_T1w.hdr", analyze=True)  # Analyze pair: .hdr + .img
    rows = ["participant_id\tage\tgroup"] + [f"{s}\t70\t{g}" for s, g in NIFTI_GROUPS.items()]
    (root / "participants.tsv").write_text("\n".join(rows) + "\n")
    (root / ".DS_Store").write_bytes(b"junk")
    return root


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            st = os.stat(os.path.join(dirpath, name))
            out[os.path.relpath(os.path.join(dirpath, name), root)] = (st.st_mtime_ns, st.st_size)
    return out


def _subjects(datalist: dict, split: str) -> set[str]:
    return {it["subject"] for it in datalist[split]}


def _one_line(err: BaseException) -> str:
    msg = str(err)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


# -------------------------------------------------------------------------------------------------------- OASIS


def test_oasis_splits_counts_seg_and_no_label(tmp_path):
    root = _make_oasis(tmp_path / "oasis")
    d = build_datalist("oasis", root)
    assert (d["numTraining"], d["numValidation"], d["numTest"]) == (12, 6, 6)
    assert _subjects(d, "training") == set(OASIS_SUBJECTS["train"])
    assert _subjects(d, "validation") == set(OASIS_SUBJECTS["validate"])
    assert _subjects(d, "test") == set(OASIS_SUBJECTS["test"])
    for split in SPLITS:
        for it in d[split]:
            assert "label" not in it
            assert Path(it["image"]).is_absolute() and "keras_png_slices_seg" not in it["image"]
            assert Path(it["image"]).name == f"case_{it['subject']}_slice_{it['slice']}.nii.png"
            assert Path(it["seg"]).name == f"seg_{it['subject']}_slice_{it['slice']}.nii.png"
            assert Path(it["seg"]).parent.name.startswith("keras_png_slices_seg_")
    assert d["training"][0]["slice"] == 0 and d["training"][0]["subject"] == "001"
    assert d["skipped"] == [] and d["labels"] == {}  # .DS_Store and README ignored silently
    assert d["spatial_shapes"] == {"16x16": 24} and d["mixed_sizes"] is False
    summary = format_summary(d)
    assert "training:   4 subjects, 12 slices" in summary and "test:       2 subjects, 6 slices" in summary


def test_oasis_missing_split_folder_is_noted_and_data_root_parent_accepted(tmp_path):
    _make_oasis(tmp_path / "keras_png_slices_data", splits=("train", "validate"))
    d = build_datalist("oasis", tmp_path)  # the folder holding keras_png_slices_data
    assert d["numTraining"] == 12 and d["numValidation"] == 6 and d["test"] == []
    assert any("keras_png_slices_test" in n for n in d["notes"])
    assert "note: no keras_png_slices_test folder" in format_summary(d)


def test_oasis_subject_in_two_folders_is_a_leak_error(tmp_path):
    root = _make_oasis(tmp_path / "oasis")
    _png(root / "keras_png_slices_test" / "case_002_slice_0.nii.png")
    with pytest.raises(BrainVQInputError, match="leak") as exc:
        build_datalist("oasis", root)
    msg = _one_line(exc.value)
    assert "case 002" in msg and "keras_png_slices_train" in msg and "keras_png_slices_test" in msg
    assert "case 001" not in msg


# --------------------------------------------------------------------------------------------------------- ADNI


def test_adni_patient_level_stratified_split(tmp_path):
    root = _make_adni(tmp_path)
    d = build_datalist("adni", root, val_fraction=0.2, seed=3)
    assert d["labels"] == {"0": "NC", "1": "AD"}
    for split in SPLITS:
        for it in d[split]:
            cls = Path(it["image"]).parent.name
            assert it["label"] == {"AD": 1, "NC": 0}[cls]
            assert Path(it["image"]).stem == f"{it['subject']}_{it['slice']}"
    train_pids = {p for (s, _), ps in ADNI_PATIENTS.items() if s == "train" for p in ps}
    assert _subjects(d, "training") | _subjects(d, "validation") == train_pids
    assert not _subjects(d, "training") & _subjects(d, "validation")
    assert _subjects(d, "test") == {"3001", "3002", "4001", "4002"}
    # 20% of 5 patients per class -> one AD and one NC patient, with all their slices
    val_labels = sorted({(it["subject"], it["label"]) for it in d["validation"]}, key=lambda x: x[1])
    assert [lab for _, lab in val_labels] == [0, 1]
    assert (d["numTraining"], d["numValidation"], d["numTest"]) == (24, 6, 12)
    assert all(Path(it["image"]).parent.parent.name == "test" for it in d["test"])
    summary = format_summary(d)
    assert "validation: 2 subjects, 6 slices (NC: 1 subject, 3 slices; AD: 1 subject, 3 slices)" in summary


def test_adni_deterministic_and_seed_dependent(tmp_path):
    root = _make_adni(tmp_path)
    a, b = build_datalist("adni", root, seed=7), build_datalist("adni", root, seed=7)
    assert json.dumps(a) == json.dumps(b)
    vals = {frozenset(_subjects(build_datalist("adni", root, seed=s), "validation")) for s in range(6)}
    assert len(vals) > 1
    # AD_NC itself as root gives the same items
    c = build_datalist("adni", root / "AD_NC", seed=7)
    assert all(c[s] == a[s] for s in SPLITS)


def test_adni_patient_in_two_classes_or_splits_is_an_error(tmp_path):
    root = _make_adni(tmp_path)
    _png(root / "AD_NC" / "train" / "NC" / "1003_99.jpeg", fmt="JPEG")
    with pytest.raises(BrainVQInputError) as exc:
        build_datalist("adni", root)
    msg = _one_line(exc.value)
    assert "patient 1003" in msg and "train/AD" in msg and "train/NC" in msg
    (root / "AD_NC" / "train" / "NC" / "1003_99.jpeg").unlink()
    _png(root / "AD_NC" / "test" / "NC" / "2004_99.jpeg", fmt="JPEG")
    with pytest.raises(BrainVQInputError, match=r"patient 2004 in train/NC, test/NC"):
        build_datalist("adni", root)


# -------------------------------------------------------------------------------------------------------- NIfTI


def test_nifti_subject_split_labels_and_analyze_pair(tmp_path):
    root = _make_nifti(tmp_path / "bids")
    d = build_datalist("nifti", root, val_fraction=0.2, seed=1)
    assert d["spatial_dims"] == 3 and d["labels"] == {"0": "NC", "1": "AD"}
    items = [it for s in SPLITS for it in d[s]]
    assert len(items) == 10 and len({it["subject"] for it in items}) == 10  # .hdr/.img pair listed once
    assert sum(it["image"].endswith(".hdr") for it in items) == 1 and not any(
        it["image"].endswith(".img") for it in items
    )
    for it in items:
        assert it["label"] == (1 if NIFTI_GROUPS[it["subject"]] == "AD" else 0)  # CN and NC -> 0
        assert "slice" not in it
    # 10 subjects, 5 per class: one AD + one NC in validation and in test
    for split in ("validation", "test"):
        assert sorted(it["label"] for it in d[split]) == [0, 1]
    assert d["numTraining"] == 6
    assert d["spatial_shapes"] == {"12x12x10": 10}
    assert "training:   6 subjects, 6 volumes (NC: 3 subjects, 3 volumes; AD: 3 subjects, 3 volumes)" in format_summary(
        d
    )


def test_nifti_axial_slices_hold_brain_only(tmp_path):
    root = _make_nifti(tmp_path / "bids")
    d = build_datalist("nifti", root, slices="axial", seed=1)
    assert d["spatial_dims"] == 2 and d["slices"] == "axial"
    items = [it for s in SPLITS for it in d[s]]
    assert len(items) == 10 * 4
    by_subject: dict[str, list[int]] = {}
    for it in items:
        by_subject.setdefault(it["subject"], []).append(it["slice"])
    assert all(sorted(v) == [3, 4, 5, 6] for v in by_subject.values())
    vol = build_datalist("nifti", root, seed=1)
    assert {s: _subjects(vol, s) for s in SPLITS} == {s: _subjects(d, s) for s in SPLITS}


def test_nifti_without_participants_has_no_labels_and_nifti_folder_found(tmp_path):
    for i in range(4):
        _volume(tmp_path / "nifti" / f"scan{i}.nii.gz")
    d = build_datalist("nifti", tmp_path, val_fraction=0.25)
    assert d["labels"] == {} and all("label" not in it for s in SPLITS for it in d[s])
    assert {it["subject"] for s in SPLITS for it in d[s]} == {f"scan{i}" for i in range(4)}
    assert (d["numTraining"], d["numValidation"], d["numTest"]) == (2, 1, 1)
    d = build_datalist("nifti", tmp_path, val_fraction=0.25, test_fraction=0.0)
    assert (d["numTraining"], d["numValidation"], d["numTest"]) == (3, 1, 0)


def test_participants_tsv_bad_value_names_file_and_line(tmp_path):
    root = _make_nifti(tmp_path / "bids")
    tsv = root / "participants.tsv"
    tsv.write_text(tsv.read_text().replace("sub-03\t70\tAD", "sub-03\t70\tMCI"))
    with pytest.raises(BrainVQInputError) as exc:
        build_datalist("nifti", root)
    msg = _one_line(exc.value)
    assert f"{tsv}:4" in msg and "MCI" in msg and "sub-03" in msg
    tsv.write_text("participant_id\tgroup\nsub-01\tAD\n")
    with pytest.raises(BrainVQInputError, match="no row for subject sub-02"):
        build_datalist("nifti", root)
    tsv.write_text("participant_id\tdx\nsub-01\thc\n001\tAD\n")
    assert read_participants(tsv) == {"sub-01": 0, "001": 1}


def test_nifti_4d_volume_skipped(tmp_path):
    root = _make_nifti(tmp_path / "bids")
    nib.save(nib.Nifti1Image(np.random.rand(4, 4, 4, 3).astype(np.float32), np.eye(4)), str(root / "sub-01_bold.nii"))
    d = build_datalist("nifti", root)
    assert [Path(s["image"]).name for s in d["skipped"]] == ["sub-01_bold.nii"]
    assert "4D" in d["skipped"][0]["reason"]


# ------------------------------------------------------------------------------------------------ bad input


def test_truncated_png_skipped_with_reason_and_strict_raises(tmp_path, capsys):
    root = _make_oasis(tmp_path / "oasis")
    bad = root / "keras_png_slices_train" / "case_003_slice_1.nii.png"
    bad.write_bytes(bad.read_bytes()[:60])
    with pytest.raises(BrainVQInputError) as exc:
        build_datalist("oasis", root, strict=True)
    assert _one_line(exc.value).startswith(f"{bad}: ")
    misnamed = root / "keras_png_slices_test" / "scan.png"
    _png(misnamed)
    d = build_datalist("oasis", root)
    assert d["numTraining"] == 11 and d["numTest"] == 6
    reasons = {s["image"]: s["reason"] for s in d["skipped"]}
    assert set(reasons) == {str(bad), str(misnamed)} and reasons[str(bad)]
    assert "case_<NNN>_slice_<k>" in reasons[str(misnamed)]
    summary = format_summary(d)
    assert "skipped 2 file(s)" in summary and f"{bad}: {reasons[str(bad)]}" in summary
    with pytest.raises(BrainVQInputError, match="name does not match"):
        build_datalist("oasis", root, strict=True)
    assert capsys.readouterr().err == ""  # small sets: no progress output


def test_progress_on_stderr_for_many_files(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(dl, "PROGRESS_MIN_FILES", 5)
    build_datalist("oasis", _make_oasis(tmp_path / "oasis"))
    assert "checked 24/24 files" in capsys.readouterr().err


@pytest.mark.parametrize(
    "fmt, setup, match",
    [
        (
            "oasis",
            lambda p: (p / ".DS_Store").write_text("x"),
            "expected folders keras_png_slices_train/.*found an empty folder",
        ),
        ("adni", lambda p: (p / "stuff").mkdir(), r"expected AD_NC/\{train,test\}/\{AD,NC\}"),
        ("nifti", lambda p: (p / "notes.txt").write_text("x"), r"expected \*\.nii"),
        ("oasis", lambda p: (p / "AD_NC").mkdir(), "looks like the adni layout"),
    ],
)
def test_layout_errors_are_one_line_and_name_root(tmp_path, fmt, setup, match):
    root = tmp_path / "data"
    root.mkdir()
    setup(root)
    with pytest.raises(BrainVQInputError, match=match) as exc:
        build_datalist(fmt, root)
    assert _one_line(exc.value).startswith(f"{root}: not an {fmt} layout")


def test_setting_and_root_errors(tmp_path):
    with pytest.raises(BrainVQInputError, match="no such folder") as exc:
        build_datalist("adni", tmp_path / "missing")
    assert str(tmp_path / "missing") in _one_line(exc.value)
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(BrainVQInputError, match="not a folder"):
        build_datalist("adni", tmp_path / "file.txt")
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(BrainVQInputError, match=r"^val_fraction: must be in \[0, 1\)"):
            build_datalist("adni", tmp_path, val_fraction=bad)
    with pytest.raises(BrainVQInputError, match="^slices: only the nifti format"):
        build_datalist("adni", tmp_path, slices="axial")
    with pytest.raises(BrainVQInputError, match="^format:"):
        build_datalist("dicom", tmp_path)
    with pytest.raises(BrainVQInputError, match="val_fraction \\+ test_fraction"):
        build_datalist("nifti", tmp_path, val_fraction=0.5)
    # layout present but nothing usable
    (tmp_path / "AD_NC" / "train" / "AD").mkdir(parents=True)
    (tmp_path / "AD_NC" / "train" / "AD" / "1_1.jpeg").write_bytes(b"not a jpeg")
    with pytest.raises(BrainVQInputError, match="no usable images: 1 file") as exc:
        build_datalist("adni", tmp_path)
    _one_line(exc.value)


def test_root_never_modified_and_output_inside_root_refused(tmp_path):
    roots = {
        "oasis": _make_oasis(tmp_path / "o"),
        "adni": _make_adni(tmp_path / "a"),
        "nifti": _make_nifti(tmp_path / "n"),
    }
    before = {k: _snapshot(r) for k, r in roots.items()}
    for fmt, root in roots.items():
        d = build_datalist(fmt, root, slices="axial" if fmt == "nifti" else None)
        write_datalist(d, tmp_path / "out" / f"{fmt}.json")
        with pytest.raises(BrainVQInputError, match="never written"):
            write_datalist(d, root / "datalist.json")
    assert {k: _snapshot(r) for k, r in roots.items()} == before


# ---------------------------------------------------------------------------------------- format and invariant


def test_loadable_by_monai_and_deterministic_json(tmp_path):
    root = _make_adni(tmp_path / "a")
    out = write_datalist(build_datalist("adni", root, seed=5), tmp_path / "dl.json")
    text = out.read_text()
    write_datalist(build_datalist("adni", root, seed=5), tmp_path / "dl2.json")
    assert (tmp_path / "dl2.json").read_text() == text
    data = json.loads(text)
    for key in SPLITS:
        items = load_decathlon_datalist(out, data_list_key=key)
        assert len(items) == data[f"num{key.capitalize() if key != 'training' else 'Training'}"] > 0
        assert items == data[key] and all(os.path.isfile(it["image"]) for it in items)


def test_package_exports():
    import brainvq_monai.data as data

    assert data.build_datalist is build_datalist and callable(data.validate_image)
    assert callable(data.make_demo_cohort) and "make_demo_cohort" in data.__all__


def test_subject_disjoint_invariant():
    ok = {"training": [{"image": "a", "subject": "1"}], "validation": [{"image": "b", "subject": "2"}], "test": []}
    assert_subject_disjoint(ok)
    leak = dict(ok, test=[{"image": "c", "subject": "1"}])
    with pytest.raises(AssertionError, match="leak.*1"):
        assert_subject_disjoint(leak)


def test_split_subjects_stratified_minimums_and_seeded():
    subjects = {f"ad{i}": 1 for i in range(2)} | {f"nc{i}": 0 for i in range(7)} | {"x": None}
    out = split_subjects(subjects, {"validation": 0.2}, seed=0)
    assert out == split_subjects(subjects, {"validation": 0.2}, seed=0)
    val = {s for s, sp in out.items() if sp == "validation"}
    assert sum(s.startswith("ad") for s in val) == 1  # 2 patients -> still one held out
    assert sum(s.startswith("nc") for s in val) == 1  # round(0.2 * 7) = 1
    assert out["x"] == "training"  # a single subject always stays in training
    assert set(split_subjects(subjects, {"validation": 0.0}, seed=0).values()) == {"training"}


def test_mixed_sizes_reported(tmp_path):
    root = _make_adni(tmp_path, slices=1)
    _png(root / "AD_NC" / "test" / "AD" / "3001_90.jpeg", size=(32, 30), fmt="JPEG")
    d = build_datalist("adni", root)
    assert d["mixed_sizes"] is True and d["spatial_shapes"] == {"20x16": 14, "32x30": 1}
    assert "image sizes differ" in format_summary(d) and "resize" in format_summary(d)


# ------------------------------------------------------------------------------------------------------------ CLI


def test_cli_datalist_writes_file_and_prints_counts(tmp_path, capsys):
    root = _make_adni(tmp_path / "a")
    out = tmp_path / "dl" / "adni.json"
    rc = main(["datalist", "--format", "adni", "--root", str(root), "--out", str(out), "--seed", "2"])
    captured = capsys.readouterr()
    assert rc == 0 and out.is_file()
    assert "training:   8 subjects, 24 slices" in captured.out and f"wrote {out}" in captured.out
    assert json.loads(out.read_text())["seed"] == 2


@pytest.mark.parametrize("extra", [[], ["--slices", "axial"]])
def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys, extra):
    missing = tmp_path / "nope"
    rc = main(["datalist", "--format", "oasis", "--root", str(missing), "--out", str(tmp_path / "x.json"), *extra])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith("brainvq: error: ")
    assert ("slices" in err) if extra else (str(missing) in err)
    assert not (tmp_path / "x.json").exists()
