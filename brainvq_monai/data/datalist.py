"""Leak-free MONAI datalists for the OASIS PNG slices, the ADNI AD/NC JPEG slices and folders of NIfTI volumes.

The datalist is a Medical-Segmentation-Decathlon style JSON file (``training``, ``validation`` and ``test`` lists),
loadable by :func:`monai.data.load_decathlon_datalist`. Every item is
``{"image": <absolute path>, "subject": <id>, "label": <int, where known>, "slice": <int, where applicable>}``;
the label mapping (``{"0": "NC", "1": "AD"}``) is written into the file. Splits are always made by subject (patient),
never by slice, and no subject ever appears in two splits. The data folder is only read, never written.
"""

from __future__ import annotations

import csv
import math
import os
import random
import re
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from brainvq_monai.data.image_io import brain_axial_slices, image_kind, validate_image
from brainvq_monai.utils.errors import BrainVQInputError
from brainvq_monai.utils.io import atomic_write_json

__all__ = [
    "DATALIST_FORMATS",
    "SPLITS",
    "LABEL_NAMES",
    "build_datalist",
    "write_datalist",
    "format_summary",
    "split_subjects",
    "read_participants",
    "assert_subject_disjoint",
]

DATALIST_FORMATS = ("oasis", "adni", "nifti")
"""Dataset layouts understood by :func:`build_datalist`."""

SPLITS = ("training", "validation", "test")
"""Datalist keys, in order."""

LABEL_NAMES = {0: "NC", 1: "AD"}
"""Integer class labels: 0 = normal control, 1 = Alzheimer's disease."""

_LABEL_OF_CLASS = {"AD": 1, "NC": 0}
_NC_ALIASES = {"nc", "cn", "hc", "control", "controls", "normal"}
_AD_ALIASES = {"ad"}
_LABEL_COLUMNS = ("group", "diagnosis", "dx")

_OASIS_SPLITS = {"train": "training", "validate": "validation", "test": "test"}
_OASIS_RE = re.compile(r"^case_(\d+)_slice_(\d+)((?:\.nii)?\.png)$", re.IGNORECASE)
_ADNI_SPLITS = ("train", "test")
_ADNI_STEM_RE = re.compile(r"^(.+)_(\d+)$")
_BIDS_SUBJECT_RE = re.compile(r"^(sub-[A-Za-z0-9]+)")
_OASIS1_SUBJECT_RE = re.compile(r"^(OAS[123]_\d+)", re.IGNORECASE)
_VOLUME_SUFFIXES_STRIP = (".nii.gz", ".nii", ".hdr")

PROGRESS_MIN_FILES = 300
"""Validation progress is printed on stderr only when more files than this are checked."""


@dataclass
class _Candidate:
    """One image file found in the layout, before validation."""

    path: Path
    subject: str
    split: str | None = None  # fixed by the layout (OASIS folders, ADNI test) or None (chosen later)
    label: int | None = None
    slice: int | None = None
    seg: Path | None = None


class _Report:
    """Collects skipped files and notes; raises on the first skipped file when ``strict``."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.skipped: list[dict[str, str]] = []
        self.notes: list[str] = []

    def skip(self, path: Path | str, reason: str) -> None:
        if self.strict:
            raise BrainVQInputError(path, f"{reason} (--strict)")
        self.skipped.append({"image": str(path), "reason": " ".join(str(reason).split())})


def _visible_entries(folder: Path) -> list[os.DirEntry]:
    """Sorted entries of ``folder``, hidden ones (``.DS_Store``, ``._x.png``, ``.git``) left out."""
    with os.scandir(folder) as it:
        return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)


def _describe(folder: Path, limit: int = 8) -> str:
    """Short list of what a folder holds, for layout errors."""
    entries = _visible_entries(folder)
    if not entries:
        return "found an empty folder"
    names = [e.name + ("/" if e.is_dir() else "") for e in entries[:limit]]
    more = f", ... ({len(entries) - limit} more)" if len(entries) > limit else ""
    return f"found: {', '.join(names)}{more}"


def _guess_format(folder: Path) -> str | None:
    """Which layout a folder looks like (for a hint in layout errors)."""
    names = {e.name for e in _visible_entries(folder)}
    if any(n.startswith("keras_png_slices") for n in names):
        return "oasis"
    if "AD_NC" in names or {"train", "test"} & names:
        return "adni"
    if "nifti" in names or "participants.tsv" in names or any(n.startswith("sub-") for n in names):
        return "nifti"
    return None


def _layout_error(root: Path, fmt: str, expected: str) -> BrainVQInputError:
    hint = ""
    guess = _guess_format(root)
    if guess is not None and guess != fmt:
        hint = f"; this looks like the {guess} layout (--format {guess})"
    return BrainVQInputError(root, f"not an {fmt} layout: expected {expected} ({_describe(root)}){hint}")


def _image_files(folder: Path, report: _Report, kinds: Sequence[str] = ("2d",)) -> list[Path]:
    """Image files directly in ``folder`` of the given kinds; other files are ignored silently."""
    out = []
    for e in _visible_entries(folder):
        if e.is_file() and image_kind(e.path) in kinds:
            out.append(Path(e.path))
    return out


# ----------------------------------------------------------------------------------------------------------- OASIS


def _list_oasis(root: Path, report: _Report) -> list[_Candidate]:
    """Lists the OASIS PNG slices: ``keras_png_slices_{train,validate,test}/case_<NNN>_slice_<k>.nii.png``.

    The dataset's own train/validate/test folders are the splits; the ``keras_png_slices_seg_*`` folders are never
    listed as images, but an item gets a ``"seg"`` path when its segmentation exists. ``root`` may also be the folder
    holding ``keras_png_slices_data``.

    Args:
        root: dataset folder (absolute).
        report: collects skipped files and notes.

    Returns:
        one candidate per slice, with ``split`` set.

    Raises:
        BrainVQInputError: layout not recognised, or a subject in more than one split folder (leak).
    """
    base = root
    if not any((root / f"keras_png_slices_{s}").is_dir() for s in _OASIS_SPLITS) and (
        (root / "keras_png_slices_data").is_dir()
    ):
        base = root / "keras_png_slices_data"
        report.notes.append(f"images found under {base.name}/")
    present = [s for s in _OASIS_SPLITS if (base / f"keras_png_slices_{s}").is_dir()]
    if not present:
        raise _layout_error(
            root, "oasis", "folders keras_png_slices_train/, keras_png_slices_validate/, keras_png_slices_test/"
        )
    missing = [f"keras_png_slices_{s}" for s in _OASIS_SPLITS if s not in present]
    if missing:
        given = ", ".join(_OASIS_SPLITS[s] for s in _OASIS_SPLITS if s not in present)
        report.notes.append(f"no {', '.join(missing)} folder: the {given} split is empty")

    candidates: list[_Candidate] = []
    for s in present:
        folder = base / f"keras_png_slices_{s}"
        seg_folder = base / f"keras_png_slices_seg_{s}"
        for path in _image_files(folder, report):
            m = _OASIS_RE.match(path.name)
            if m is None:
                report.skip(path, "name does not match case_<NNN>_slice_<k>.nii.png")
                continue
            seg = seg_folder / f"seg_{m.group(1)}_slice_{m.group(2)}{m.group(3)}"
            candidates.append(
                _Candidate(
                    path=path,
                    subject=m.group(1),
                    split=_OASIS_SPLITS[s],
                    slice=int(m.group(2)),
                    seg=seg if seg.is_file() else None,
                )
            )
    splits_of: dict[str, set[str]] = {}
    for c in candidates:
        splits_of.setdefault(c.subject, set()).add(c.split or "")
    leaks = {sub: sp for sub, sp in splits_of.items() if len(sp) > 1}
    if leaks:
        folder_of = {v: k for k, v in _OASIS_SPLITS.items()}
        desc = "; ".join(
            f"case {sub} in {', '.join(f'keras_png_slices_{folder_of[x]}' for x in SPLITS if x in sp)}"
            for sub, sp in sorted(leaks.items())[:10]
        )
        more = f" and {len(leaks) - 10} more" if len(leaks) > 10 else ""
        raise BrainVQInputError(base, f"subjects in more than one split folder (leak): {desc}{more}")
    return candidates


# ------------------------------------------------------------------------------------------------------------ ADNI


def _list_adni(root: Path, report: _Report) -> list[_Candidate]:
    """Lists the ADNI slices: ``AD_NC/{train,test}/{AD,NC}/<patientid>_<slice>.jpeg``.

    The label comes from the class folder (NC = 0, AD = 1); the patient id is the file stem before its last
    underscore. ``root`` may be ``AD_NC`` itself or the folder holding it. Items from ``test`` get ``split="test"``;
    those from ``train`` are left for the patient-level train/validation split.

    Args:
        root: dataset folder (absolute).
        report: collects skipped files and notes.

    Returns:
        one candidate per slice.

    Raises:
        BrainVQInputError: layout not recognised, or a patient whose slices sit in both AD and NC or in both train
            and test.
    """
    base = root / "AD_NC" if (root / "AD_NC").is_dir() else root
    if base != root:
        report.notes.append("images found under AD_NC/")
    found = [(s, c) for s in _ADNI_SPLITS for c in _LABEL_OF_CLASS if (base / s / c).is_dir()]
    if not found:
        raise _layout_error(root, "adni", "AD_NC/{train,test}/{AD,NC}/<patientid>_<slice>.jpeg")
    missing = [f"{s}/{c}" for s in _ADNI_SPLITS for c in ("AD", "NC") if (s, c) not in found]
    if missing:
        report.notes.append(f"missing folder(s) {', '.join(missing)}")

    candidates: list[_Candidate] = []
    for s, cls in found:
        for path in _image_files(base / s / cls, report):
            m = _ADNI_STEM_RE.match(path.name.rsplit(".", 1)[0])
            if m is None:
                report.skip(path, "name does not match <patientid>_<slice>.jpeg")
                continue
            candidates.append(
                _Candidate(
                    path=path,
                    subject=m.group(1),
                    split="test" if s == "test" else None,
                    label=_LABEL_OF_CLASS[cls],
                    slice=int(m.group(2)),
                )
            )
    folders_of: dict[str, set[str]] = {}
    for c in candidates:
        folders_of.setdefault(c.subject, set()).add(f"{c.path.parent.parent.name}/{c.path.parent.name}")
    bad = {}
    for pid, folders in folders_of.items():
        classes = {f.split("/")[1] for f in folders}
        splits = {f.split("/")[0] for f in folders}
        if len(classes) > 1 or len(splits) > 1:
            bad[pid] = sorted(folders, key=lambda f: (_ADNI_SPLITS.index(f.split("/")[0]), f))
    if bad:
        desc = "; ".join(f"patient {pid} in {', '.join(f)}" for pid, f in sorted(bad.items())[:10])
        more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise BrainVQInputError(
            base,
            f"patients with slices in more than one class or split folder (one label, one split each): {desc}{more}",
        )
    return candidates


# ----------------------------------------------------------------------------------------------------------- NIfTI


def read_participants(tsv: Path) -> dict[str, int] | None:
    """Reads the AD/NC labels of a BIDS ``participants.tsv``.

    Args:
        tsv: the file; needs a ``participant_id`` column and one of ``group``, ``diagnosis``, ``dx``
            (case-insensitive). Values ``AD`` -> 1; ``NC``, ``CN``, ``HC``, ``control`` -> 0.

    Returns:
        ``{participant_id: label}`` (ids as written, usually ``sub-<id>``), or ``None`` when the file has no label
        column.

    Raises:
        BrainVQInputError: unreadable file, no ``participant_id`` column, or a label value that is neither AD nor NC
            (names the file and line).
    """
    try:
        with open(tsv, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f, delimiter="\t"))
    except (OSError, UnicodeDecodeError) as err:
        raise BrainVQInputError(tsv, f"cannot read: {getattr(err, 'strerror', None) or err}") from None
    rows = [(i + 1, r) for i, r in enumerate(rows) if any(x.strip() for x in r)]
    if not rows:
        raise BrainVQInputError(tsv, "empty file; expected a header with participant_id and group")
    header = [h.strip().lower() for h in rows[0][1]]
    if "participant_id" not in header:
        raise BrainVQInputError(tsv, f"no participant_id column (columns: {', '.join(header)})")
    col = next((header.index(c) for c in _LABEL_COLUMNS if c in header), None)
    if col is None:
        return None
    pid_col = header.index("participant_id")
    labels: dict[str, int] = {}
    for line, row in rows[1:]:
        if len(row) <= max(col, pid_col):
            raise BrainVQInputError(f"{tsv}:{line}", f"expected {len(header)} tab-separated columns, got {len(row)}")
        pid, value = row[pid_col].strip(), row[col].strip()
        if value.lower() in _AD_ALIASES:
            labels[pid] = 1
        elif value.lower() in _NC_ALIASES:
            labels[pid] = 0
        else:
            raise BrainVQInputError(
                f"{tsv}:{line}",
                f"{header[col]} {value!r} of {pid} is neither AD nor NC (accepted: AD; NC, CN, HC, control)",
            )
    return labels


def _volume_subject(path: Path, base: Path) -> str:
    """``sub-<id>`` (BIDS entity, from the name or its ``sub-*`` folder), an OASIS-1 id, or the file stem."""
    name = path.name
    for part in (name, *path.relative_to(base).parts[:-1]):
        m = _BIDS_SUBJECT_RE.match(part)
        if m:
            return m.group(1)
    m = _OASIS1_SUBJECT_RE.match(name)
    if m:
        return m.group(1).upper()
    for suffix in _VOLUME_SUFFIXES_STRIP:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _volume_folders(root: Path) -> list[Path]:
    folders = [root]
    for e in _visible_entries(root):
        if e.is_dir() and e.name.startswith("sub-"):
            sub = Path(e.path)
            if (sub / "anat").is_dir():
                folders.append(sub / "anat")
            folders.extend(
                Path(s.path) / "anat"
                for s in _visible_entries(sub)
                if s.is_dir() and s.name.startswith("ses-") and (Path(s.path) / "anat").is_dir()
            )
    return folders


def _list_nifti(root: Path, report: _Report) -> list[_Candidate]:
    """Lists NIfTI (``.nii``, ``.nii.gz``) and Analyze (``.hdr``/``.img``) volumes.

    Volumes sit directly in ``root`` or in BIDS-like ``sub-*/anat/`` (or ``sub-*/ses-*/anat/``) folders; ``root``
    may also be the folder holding a ``nifti/`` folder. Labels come from ``participants.tsv`` when it exists.

    Args:
        root: dataset folder (absolute).
        report: collects skipped files and notes.

    Returns:
        one candidate per volume (``split`` left for the subject split).

    Raises:
        BrainVQInputError: no volumes found, bad ``participants.tsv``, or a subject missing from it.
    """
    base = root
    folders = _volume_folders(base)
    if len(folders) == 1 and not _image_files(base, report, ("volume",)) and (root / "nifti").is_dir():
        base = root / "nifti"
        folders = _volume_folders(base)
        report.notes.append("volumes found under nifti/")
    paths: list[Path] = []
    n_2d = 0
    for folder in folders:
        for e in _visible_entries(folder):
            if not e.is_file():
                continue
            kind = image_kind(e.path)
            if kind == "volume":
                paths.append(Path(e.path))
            elif kind == "2d":
                n_2d += 1
            elif e.name.lower().endswith(".img") and not any(
                Path(e.path[:-4] + ext).is_file() for ext in (".hdr", ".HDR")
            ):
                report.skip(e.path, "Analyze .img without its .hdr header")
    if n_2d:
        report.notes.append(f"ignored {n_2d} 2D image file(s): the nifti format lists volumes")
    if not paths and not report.skipped:
        raise _layout_error(root, "nifti", "*.nii, *.nii.gz or *.hdr/.img volumes in the folder or in sub-*/anat/")

    labels: dict[str, int] | None = None
    tsv = base / "participants.tsv"
    if tsv.is_file():
        labels = read_participants(tsv)
        if labels is None:
            report.notes.append("participants.tsv has no group/diagnosis/dx column: no labels")
    candidates = []
    for path in paths:
        subject = _volume_subject(path, base)
        label = None
        if labels is not None:
            keys = [k for k in (subject, subject.removeprefix("sub-"), f"sub-{subject}") if k in labels]
            if not keys:
                raise BrainVQInputError(tsv, f"no row for subject {subject} (of {path})")
            label = labels[keys[0]]
        candidates.append(_Candidate(path=path, subject=subject, label=label))
    return candidates


# ----------------------------------------------------------------------------------------------------------- split


def _held_out_counts(n: int, fractions: Sequence[float]) -> list[int]:
    """How many of ``n`` subjects go to each held-out split: rounded fractions, at least one per split with a
    positive fraction while two or more subjects remain, and always at least one left for training."""
    counts = [int(math.floor(f * n + 0.5)) for f in fractions]
    for i, f in enumerate(fractions):
        if f > 0 and counts[i] == 0 and n - sum(counts) >= 2:
            counts[i] = 1
    while sum(counts) > max(n - 1, 0):
        i = max(range(len(counts)), key=lambda j: (counts[j], j))
        counts[i] -= 1
    return counts


def split_subjects(subjects: Mapping[str, int | None], fractions: Mapping[str, float], seed: int = 0) -> dict[str, str]:
    """Assigns whole subjects to splits, stratified by label, reproducibly.

    Within each label group the sorted subject ids are shuffled with ``random.Random(seed)``; the first ones go to
    the held-out splits (``round(fraction * n)`` each, at least one when the group has enough subjects), the rest to
    ``"training"``. At least one subject of each group stays in training.

    Args:
        subjects: ``{subject_id: label or None}``.
        fractions: ``{split_name: fraction}`` for the held-out splits, e.g. ``{"validation": 0.2}``.
        seed: random seed.

    Returns:
        ``{subject_id: split_name}``.
    """
    rng = random.Random(seed)
    groups: dict[int | None, list[str]] = {}
    for sub, label in subjects.items():
        groups.setdefault(label, []).append(sub)
    names = list(fractions)
    out: dict[str, str] = {}
    for label in sorted(groups, key=lambda x: (x is None, x if x is not None else 0)):
        ids = sorted(groups[label])
        rng.shuffle(ids)
        counts = _held_out_counts(len(ids), [float(fractions[k]) for k in names])
        start = 0
        for name, count in zip(names, counts):
            for sub in ids[start : start + count]:
                out[sub] = name
            start += count
        for sub in ids[start:]:
            out[sub] = "training"
    return out


def assert_subject_disjoint(datalist: Mapping[str, Any]) -> None:
    """Checks the leak-free invariant: no subject appears in two of ``training``, ``validation``, ``test``.

    Args:
        datalist: a datalist dictionary.

    Raises:
        AssertionError: naming the subjects found in more than one split.
    """
    seen: dict[str, set[str]] = {}
    for split in SPLITS:
        for item in datalist.get(split, []):
            seen.setdefault(str(item["subject"]), set()).add(split)
    leaks = sorted(s for s, sp in seen.items() if len(sp) > 1)
    if leaks:
        raise AssertionError(f"subjects in more than one split (leak): {', '.join(leaks[:20])}")


# ------------------------------------------------------------------------------------------------------ validation


class _Progress:
    """A counter on stderr for long validations; silent for small sets."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.active = total > PROGRESS_MIN_FILES
        self.step = max(100, total // 20)

    def update(self, done: int) -> None:
        if self.active and (done % self.step == 0 or done == self.total):
            print(f"brainvq: checked {done}/{self.total} files", file=sys.stderr, flush=True)


def _stored_shape(path: Path) -> tuple[int, ...]:
    """Spatial shape of a volume from its header only (the data were already read by the caller)."""
    import nibabel as nib

    return tuple(int(s) for s in nib.load(path).shape[:3])


def _validate(
    candidates: Sequence[_Candidate], report: _Report, slices: str | None
) -> list[tuple[_Candidate, tuple[int, ...], list[int] | None]]:
    """Reads the header (and, for ``slices="axial"``, the brain slices) of each candidate; failures are skipped."""
    kept = []
    progress = _Progress(len(candidates))
    for i, c in enumerate(candidates, 1):
        try:
            if slices == "axial":  # reads the whole volume, so it validates it too
                brain = [int(k) for k in brain_axial_slices(c.path)]
                shape = _stored_shape(c.path)
            else:
                brain, shape = None, tuple(int(s) for s in validate_image(c.path))
        except BrainVQInputError as err:
            report.skip(c.path, err.reason if err.where == str(c.path) else str(err))
        except (OSError, ValueError) as err:  # a reader error that slipped through: still one line
            report.skip(c.path, f"unreadable ({type(err).__name__}: {err})")
        else:
            if brain is not None and not brain:
                report.skip(c.path, "no axial slice holds brain")
            else:
                kept.append((c, shape, brain))
        progress.update(i)
    return kept


# -------------------------------------------------------------------------------------------------------- datalist


def _check_fraction(name: str, value: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise BrainVQInputError(name, f"must be a number in [0, 1), got {value!r}") from None
    if not 0.0 <= v < 1.0:
        raise BrainVQInputError(name, f"must be in [0, 1), got {value!r}")
    return v


def _item(c: _Candidate, slice_index: int | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {"image": str(c.path), "subject": c.subject}
    if c.label is not None:
        item["label"] = c.label
    k = slice_index if slice_index is not None else c.slice
    if k is not None:
        item["slice"] = k
    if c.seg is not None:
        item["seg"] = str(c.seg)
    return item


def build_datalist(
    fmt: str,
    root: str | os.PathLike,
    val_fraction: float = 0.2,
    seed: int = 0,
    slices: str | None = None,
    strict: bool = False,
    test_fraction: float | None = None,
) -> dict[str, Any]:
    """Builds a leak-free MONAI (decathlon-style) datalist for a dataset folder.

    Args:
        fmt: ``"oasis"`` (PNG slices in their own train/validate/test folders), ``"adni"`` (AD/NC JPEG slices;
            validation carved out of ``train`` by patient, stratified by class) or ``"nifti"`` (volumes, split by
            subject into training/validation/test, stratified by label when ``participants.tsv`` gives labels).
        root: the dataset folder; only read, never written.
        val_fraction: fraction of subjects held out for validation, in ``[0, 1)`` (ADNI and NIfTI; OASIS uses its
            own folders).
        seed: seed of the subject split; the same seed gives the same datalist.
        slices: ``"axial"`` (NIfTI only): one item per axial slice holding brain instead of one per volume.
        strict: raise on the first unreadable or misnamed file instead of skipping it.
        test_fraction: NIfTI only, fraction of subjects held out for test; defaults to ``val_fraction``.

    Returns:
        the datalist: ``training``, ``validation``, ``test`` lists of items plus metadata (``labels``, ``skipped``,
        ``spatial_shapes``, ``notes``, counts, ...).

    Raises:
        BrainVQInputError: bad setting, missing root, unrecognised layout, data leak in the given folders, no usable
            images, or (``strict``) any unreadable file.
    """
    if fmt not in DATALIST_FORMATS:
        raise BrainVQInputError("format", f"must be one of {', '.join(DATALIST_FORMATS)}, got {fmt!r}")
    vf = _check_fraction("val_fraction", val_fraction)
    tf = _check_fraction("test_fraction", vf if test_fraction is None else test_fraction)
    if fmt == "nifti" and vf + tf >= 1.0:
        raise BrainVQInputError("val_fraction", f"val_fraction + test_fraction must be < 1, got {vf} + {tf}")
    if slices is not None:
        if fmt != "nifti":
            raise BrainVQInputError("slices", f"only the nifti format has volumes to slice, got format {fmt!r}")
        if slices != "axial":
            raise BrainVQInputError("slices", f"must be 'axial' or None, got {slices!r}")
    root_path = Path(os.path.abspath(os.path.expanduser(os.fspath(root))))
    if not root_path.exists():
        raise BrainVQInputError(root_path, "no such folder")
    if not root_path.is_dir():
        raise BrainVQInputError(root_path, "not a folder")

    report = _Report(strict)
    lister = {"oasis": _list_oasis, "adni": _list_adni, "nifti": _list_nifti}[fmt]
    try:
        candidates = lister(root_path, report)
    except PermissionError as err:
        raise BrainVQInputError(err.filename or root_path, "permission denied") from None
    kept = _validate(candidates, report, slices)
    if not kept:
        first = f" (first: {report.skipped[0]['image']}: {report.skipped[0]['reason']})" if report.skipped else ""
        raise BrainVQInputError(root_path, f"no usable images: {len(report.skipped)} file(s) skipped{first}")

    # subject-level split: OASIS folders as given; ADNI train -> training/validation; NIfTI -> all three
    split_of: dict[str, str] = {}
    if fmt == "adni":
        train = {c.subject: c.label for c, _, _ in kept if c.split is None}
        split_of = split_subjects(train, {"validation": vf}, seed)
    elif fmt == "nifti":
        subjects = {c.subject: c.label for c, _, _ in kept}
        split_of = split_subjects(subjects, {"validation": vf, "test": tf}, seed)

    datalist: dict[str, Any] = {
        "name": f"brainvq {fmt} datalist",
        "description": "leak-free subject-level split written by brainvq_monai (brainvq datalist)",
        "format": fmt,
        "root": str(root_path),
        "spatial_dims": 3 if fmt == "nifti" and slices is None else 2,
        "labels": {},
        "seed": int(seed),
        "val_fraction": vf,
        "split_method": {
            "oasis": "the dataset's keras_png_slices_train/validate/test folders",
            "adni": "train folder split by patient into training/validation, stratified by class; test folder kept",
            "nifti": "by subject into training/validation/test, stratified by label when known",
        }[fmt],
    }
    if fmt == "nifti":
        datalist["test_fraction"] = tf
        datalist["slices"] = slices
    lists: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    shapes: Counter[str] = Counter()
    for c, shape, brain in kept:
        split = c.split or split_of[c.subject]
        shapes["x".join(map(str, shape))] += 1
        if brain is None:
            lists[split].append(_item(c))
        else:
            lists[split].extend(_item(c, k) for k in brain)
    for split in SPLITS:
        lists[split].sort(key=lambda it: (_natural(it["subject"]), it["image"], it.get("slice", -1)))
        datalist[split] = lists[split]
    if any("label" in it for s in SPLITS for it in lists[s]):
        datalist["labels"] = {str(k): v for k, v in sorted(LABEL_NAMES.items())}
    datalist["numTraining"] = len(lists["training"])
    datalist["numValidation"] = len(lists["validation"])
    datalist["numTest"] = len(lists["test"])
    datalist["spatial_shapes"] = dict(sorted(shapes.items()))
    datalist["mixed_sizes"] = len(shapes) > 1
    for split in SPLITS:
        if not lists[split] and not any(f"the {split} split is empty" in n for n in report.notes):
            report.notes.append(f"the {split} split is empty")
    datalist["skipped"] = report.skipped
    datalist["notes"] = list(dict.fromkeys(report.notes))
    assert_subject_disjoint(datalist)
    return datalist


def _natural(text: str) -> tuple:
    """Sort key that orders embedded numbers numerically (``case_2`` before ``case_10``)."""
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", text) if t)


def write_datalist(datalist: Mapping[str, Any], out: str | os.PathLike) -> Path:
    """Writes a datalist as JSON (atomically), refusing to write inside the data folder.

    Args:
        datalist: the datalist from :func:`build_datalist`.
        out: the JSON file to write; its parent folders are created.

    Returns:
        the absolute path written.

    Raises:
        BrainVQInputError: ``out`` is inside the dataset root, is a folder, or cannot be written.
    """
    out_path = Path(os.path.abspath(os.path.expanduser(os.fspath(out))))
    root = datalist.get("root")
    if root and out_path.resolve().is_relative_to(Path(root).resolve()):
        raise BrainVQInputError(out_path, f"is inside the data folder {root}; the data folder is never written")
    if out_path.is_dir():
        raise BrainVQInputError(out_path, "is a folder; give the path of a .json file")
    atomic_write_json(out_path, datalist)  # temporary file, sync, rename: never a partial datalist
    return out_path


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _count_line(items: Iterable[Mapping[str, Any]], what: str) -> str:
    items = list(items)
    line = f"{_plural(len({it['subject'] for it in items}), 'subject')}, {_plural(len(items), what)}"
    labels = sorted({it["label"] for it in items if "label" in it})
    if labels:
        parts = []
        for lab in labels:
            sel = [it for it in items if it.get("label") == lab]
            n_sub = len({it["subject"] for it in sel})
            parts.append(f"{LABEL_NAMES.get(lab, lab)}: {_plural(n_sub, 'subject')}, {_plural(len(sel), what)}")
        line += f" ({'; '.join(parts)})"
    return line


def format_summary(datalist: Mapping[str, Any]) -> str:
    """Human-readable summary: counts per split and class, image sizes, skipped files with reasons, notes.

    Args:
        datalist: the datalist from :func:`build_datalist`.

    Returns:
        a multi-line string.
    """
    fmt = datalist.get("format", "?")
    what = "volume" if fmt == "nifti" and datalist.get("slices") is None else "slice"
    order = "X x Y x Z as stored" if fmt == "nifti" else "width x height"
    lines = [f"{fmt} datalist of {datalist.get('root', '?')} (seed {datalist.get('seed', '?')})"]
    width = max(len(s) for s in SPLITS) + 1
    for split in SPLITS:
        lines.append(f"  {split + ':':<{width}} {_count_line(datalist.get(split, []), what)}")
    shapes = datalist.get("spatial_shapes", {})
    if len(shapes) > 1:
        desc = ", ".join(f"{k} ({_plural(v, 'file')})" for k, v in shapes.items())
        lines.append(f"  image sizes differ ({order}): {desc}; the transforms resize them to the configured size")
    elif shapes:
        lines.append(f"  image size ({order}): {next(iter(shapes))}")
    skipped = datalist.get("skipped", [])
    if skipped:
        lines.append(f"  skipped {len(skipped)} file(s):")
        lines.extend(f"    {s['image']}: {s['reason']}" for s in skipped)
    for note in datalist.get("notes", []):
        lines.append(f"  note: {note}")
    return "\n".join(lines)
