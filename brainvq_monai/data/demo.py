"""Offline synthetic demo cohort made from the MNI152 T1 template shipped inside nilearn.

Every subject is the ICBM152 2009a template (nilearn's skull-stripped copy, no network) put through a random smooth
deformation (small affine plus an elastic field drawn on a coarse grid and upsampled), a multiplicative bias field, a
gamma / scale change of intensity and Rician noise. Half of the cohort is labelled ``AD`` and receives atrophy graded by
a per-subject severity: the ventricles are enlarged by a radial expansion centred on the lateral ventricles and the
cortex is thinned (grey-matter voxels bordering CSF become CSF), which widens the sulci. Tissue labels (0 background,
1 CSF, 2 GM, 3 WM) derived from the template's tissue maps follow the same deformation.

The cohort is written in the exact layouts of the public datasets it stands in for:

- OASIS (keras PNG slices): ``keras_png_slices_{train,validate,test}/case_<NNN>_slice_<k>.nii.png`` and the tissue
  maps ``keras_png_slices_seg_{train,validate,test}/seg_<NNN>_slice_<k>.nii.png`` (0/85/170/255);
- ADNI (AD/NC JPEG slices): ``AD_NC/{train,test}/{AD,NC}/<patientid>_<slice>.jpeg`` (256 wide x 240 high);
- NIfTI: ``nifti/sub-<NNN>_T1w.nii.gz`` plus ``nifti/participants.tsv``.

A ``README.txt`` and a machine-readable ``demo_cohort.json`` describe the cohort. The output depends only on the seed
(not on the number of worker processes).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from brainvq_monai.utils.errors import BrainVQInputError
from brainvq_monai.utils.io import atomic_write_json

__all__ = [
    "validate_demo_settings",
    "ADNI_SIZE",
    "DEMO_RESOLUTION_MM",
    "GROUPS",
    "OASIS_SIZE",
    "SEG_PNG_VALUES",
    "TISSUE_LABELS",
    "DemoCohortSummary",
    "make_demo_cohort",
]

#: voxel size (mm) of the template the cohort is synthesised from (1 mm fits the time budget; 2 is the alternative).
DEMO_RESOLUTION_MM = 1
#: tissue label of each class in the generated label maps.
TISSUE_LABELS: dict[str, int] = {"background": 0, "CSF": 1, "GM": 2, "WM": 3}
#: grey value of each tissue label in the OASIS segmentation PNGs (as in the real keras_png_slices_seg_* folders).
SEG_PNG_VALUES: tuple[int, int, int, int] = (0, 85, 170, 255)
#: the two diagnostic groups; ``AD`` subjects get atrophy.
GROUPS: tuple[str, str] = ("NC", "AD")
#: (height, width) of the OASIS PNG slices.
OASIS_SIZE: tuple[int, int] = (256, 256)
#: (height, width) of the ADNI JPEG slices (256 wide x 240 high).
ADNI_SIZE: tuple[int, int] = (240, 256)

OASIS_SPLITS = ("train", "validate", "test")
ADNI_SPLITS = ("train", "test")
_MARKER = "demo_cohort.json"
_GENERATOR = "brainvq_monai.data.demo"
_TEMPLATE_NAME = "MNI ICBM152 2009a nonlinear asymmetric T1 template (skull-stripped copy shipped with nilearn)"
_MAX_SUBJECTS = 999_999  # patient ids are distinct 6-digit numbers
_SEVERITY_RANGE = (0.3, 1.0)


# ----------------------------------------------------------------------------------------------------------- template
@dataclass(frozen=True)
class _Template:
    """The MNI152 template cropped to the brain: T1 in [0, 1], tissue labels and where the ventricles are."""

    t1: np.ndarray  # float32, (X, Y, Z), RAS voxel axes
    labels: np.ndarray  # uint8, 0 background / 1 CSF / 2 GM / 3 WM
    affine: np.ndarray  # voxel -> MNI mm of the cropped grid
    ventricle_centre: np.ndarray  # voxel coordinates of the lateral ventricles' centroid
    exterior: np.ndarray  # bool: background plus the CSF connected to it (subarachnoid space, sulci)
    csf_level: float  # typical T1 value of ventricular CSF
    resolution: int  # mm


_TEMPLATES: dict[int, _Template] = {}


def _load_template(resolution: int) -> _Template:
    """Loads (once per process) nilearn's MNI152 T1, GM, WM and brain-mask templates and derives tissue labels."""
    if resolution in _TEMPLATES:
        return _TEMPLATES[resolution]
    import warnings

    from nilearn import datasets
    from scipy import ndimage

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t1_img = datasets.load_mni152_template(resolution=resolution)
        gm = np.asarray(datasets.load_mni152_gm_template(resolution=resolution).get_fdata(), dtype=np.float32)
        wm = np.asarray(datasets.load_mni152_wm_template(resolution=resolution).get_fdata(), dtype=np.float32)
        mask = np.asarray(datasets.load_mni152_brain_mask(resolution=resolution).get_fdata()) > 0.5
    t1 = np.asarray(t1_img.get_fdata(), dtype=np.float32)
    if not (t1.shape == gm.shape == wm.shape == mask.shape):  # pragma: no cover - nilearn ships them on one grid
        raise RuntimeError("nilearn's MNI152 T1, GM, WM and mask templates are not on one grid")
    t1 = np.clip(t1 / max(float(t1.max()), 1e-6), 0.0, 1.0)
    mask &= t1 > 0
    t1[~mask] = 0.0

    # tissue labels: CSF = brain voxels that are neither GM- nor WM-dominant, or dark on T1
    csf = mask & ((np.maximum(gm, wm) < 0.5) | (t1 < 0.45))
    labels = np.zeros(t1.shape, dtype=np.uint8)
    labels[mask] = TISSUE_LABELS["WM"]
    labels[mask & (gm >= wm)] = TISSUE_LABELS["GM"]
    labels[csf] = TISSUE_LABELS["CSF"]

    # crop to the brain plus a margin
    margin = max(2, round(14 / resolution))  # room for the random deformation
    nz = np.argwhere(mask)
    lo = np.maximum(nz.min(0) - margin, 0)
    hi = np.minimum(nz.max(0) + margin + 1, t1.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    t1, labels, csf = t1[box], labels[box], csf[box]
    shift = np.eye(4)
    shift[:3, 3] = lo
    affine = np.asarray(t1_img.affine, dtype=np.float64) @ shift

    # lateral ventricles: the CSF components inside a central box (MNI mm), i.e. the template's central CSF
    ijk = np.indices(t1.shape, sparse=True)
    mm = [affine[a, a] * ijk[a] + affine[a, 3] for a in range(3)]
    central = (np.abs(mm[0]) < 28) & (mm[1] > -45) & (mm[1] < 28) & (mm[2] > -2) & (mm[2] < 32)
    comp, n = ndimage.label(csf & central)
    if n:
        sizes = np.bincount(comp.ravel())[1:]
        keep = np.flatnonzero(sizes >= 0.1 * sizes.max()) + 1
        ventricles = np.isin(comp, keep)
        centre = np.argwhere(ventricles).mean(0)
    else:  # pragma: no cover - the template always has ventricles
        centre = np.linalg.solve(affine, [0.0, -12.0, 15.0, 1.0])[:3]
        ventricles = csf & central
    csf_level = float(np.percentile(t1[ventricles], 25)) if ventricles.any() else 0.3

    # exterior: background and CSF connected to the volume's border (sulcal CSF), not the ventricles nor CSF islands
    comp, _ = ndimage.label(labels <= TISSUE_LABELS["CSF"])
    border = np.unique(np.concatenate([np.moveaxis(comp, a, 0)[[0, -1]].ravel() for a in range(comp.ndim)]))
    exterior = np.isin(comp, border[border > 0])

    template = _Template(
        t1=np.ascontiguousarray(t1),
        labels=np.ascontiguousarray(labels),
        affine=affine,
        ventricle_centre=np.asarray(centre, dtype=np.float64),
        exterior=exterior,
        csf_level=csf_level,
        resolution=resolution,
    )
    _TEMPLATES[resolution] = template
    return template


def _set_template(template: _Template) -> None:
    """Pool initializer: hands the prepared template to a worker process."""
    _TEMPLATES[template.resolution] = template


# ------------------------------------------------------------------------------------------------------- synthesis
def _upsample_matrix(n_coarse: int, n_fine: int) -> np.ndarray:
    """(n_fine, n_coarse) cubic-spline interpolation weights from a coarse grid spanning the fine axis."""
    from scipy.interpolate import CubicSpline

    coarse = np.linspace(0.0, n_fine - 1.0, n_coarse)
    return CubicSpline(coarse, np.eye(n_coarse), axis=0)(np.arange(n_fine, dtype=np.float64)).astype(np.float32)


def _smooth_field(rng: np.random.Generator, shape: Sequence[int], spacing_vox: float, channels: int = 1) -> np.ndarray:
    """Smooth random field: i.i.d. N(0, 1) on a coarse grid (``spacing_vox`` apart), cubic-upsampled to ``shape``.

    Returns:
        float32 array of shape ``(channels, *shape)``.
    """
    n_coarse = [max(4, int(round(s / spacing_vox)) + 1) for s in shape]
    field = rng.standard_normal((channels, *n_coarse)).astype(np.float32)
    # separable upsampling, last axis first; each step is one batched matmul giving a contiguous array
    for axis in reversed(range(len(shape))):
        dims = field.shape
        batch = int(np.prod(dims[: axis + 1]))
        field = np.matmul(_upsample_matrix(n_coarse[axis], shape[axis]), field.reshape(batch, dims[axis + 1], -1))
        field = field.reshape(*dims[: axis + 1], shape[axis], *dims[axis + 2 :])
    return field


def _dilate6(mask: np.ndarray) -> np.ndarray:
    """Binary dilation by the face-connected neighbourhood (any number of spatial dims)."""
    out = mask.copy()
    for axis in range(mask.ndim):
        lead = [slice(None)] * mask.ndim
        tail = [slice(None)] * mask.ndim
        lead[axis], tail[axis] = slice(1, None), slice(None, -1)
        out[tuple(lead)] |= mask[tuple(tail)]
        out[tuple(tail)] |= mask[tuple(lead)]
    return out


def _thin_cortex(
    t1: np.ndarray, labels: np.ndarray, severity: float, rng: np.random.Generator, template: _Template
) -> tuple[np.ndarray, np.ndarray]:
    """Cortical thinning / sulcal widening: GM bordering the sulcal CSF or the brain surface becomes CSF.

    Each GM voxel on that border is converted with probability ``0.75 * severity``, decided by a smooth random field
    so that atrophy is patchy (regional) rather than speckled; the erosion is repeated (more often for higher
    severity) so affected sulci widen visibly. Deep GM next to the ventricles or CSF islands is left alone.
    """
    from scipy.special import ndtr

    t1, labels = t1.copy(), labels.copy()
    where = ndtr(_smooth_field(rng, t1.shape, 6.0 / template.resolution)[0] / 0.8)  # ~uniform in [0, 1]
    gm = labels == TISSUE_LABELS["GM"]
    outside = template.exterior.copy()
    steps = max(1, int(round((1.0 + 2.0 * severity) / template.resolution)))
    for _ in range(steps):
        convert = gm & _dilate6(outside) & (where < 0.75 * severity)
        labels[convert] = TISSUE_LABELS["CSF"]
        t1[convert] = template.csf_level
        gm &= ~convert
        outside |= convert
    return t1, labels


def _sampling_coordinates(
    rng: np.random.Generator, template: _Template, severity: float
) -> tuple[np.ndarray, np.ndarray]:
    """Pull-back coordinates (template voxels) of every output voxel, and a small rigid 'scanner' transform.

    The map is: subject voxel ``x`` -> ``A (x - c) + c + t + u(x)`` (small affine plus a smooth elastic field ``u``),
    then, for AD, a radial expansion about the ventricles' centre ``v``: ``p -> p - a g(p) (p - v)`` with ``g`` an
    anisotropic Gaussian and ``a`` proportional to the severity (sampling closer to ``v`` enlarges the ventricles).
    """
    shape = np.array(template.t1.shape)
    res = float(template.resolution)
    ndim = len(shape)
    # small affine: rotation (deg), per-axis scale, shear, translation (mm)
    angles = np.deg2rad(rng.uniform(-5.0, 5.0, 3))
    rot = np.eye(3)
    for axis, angle in enumerate(angles):
        i, j = [k for k in range(3) if k != axis]
        r = np.eye(3)
        r[i, i] = r[j, j] = np.cos(angle)
        r[i, j], r[j, i] = -np.sin(angle), np.sin(angle)
        rot = rot @ r
    scale = np.diag(np.exp(rng.uniform(-0.05, 0.05, 3)))
    shear = np.eye(3) + np.triu(rng.uniform(-0.03, 0.03, (3, 3)), 1)
    mat = rot @ scale @ shear
    shift = rng.uniform(-3.0, 3.0, 3) / res
    elastic = _smooth_field(rng, shape, 25.0 / res, channels=ndim) * np.float32(2.5 / res)
    centre = (shape - 1) / 2.0
    grid = [np.arange(n, dtype=np.float32) - np.float32(c) for n, c in zip(shape, centre)]
    coords = np.empty((ndim, *shape), dtype=np.float32)
    for a in range(ndim):
        coords[a] = elastic[a] + np.float32(centre[a] + shift[a])
        for b in range(ndim):
            view = [1] * ndim
            view[b] = -1
            coords[a] += np.float32(mat[a, b]) * grid[b].reshape(view)
    del elastic
    if severity > 0:
        amp = np.float32(0.5 * severity)
        sigma_mm = np.array([24.0, 38.0, 22.0])  # wide along anterior-posterior, as the lateral ventricles
        rel = [coords[a] - np.float32(template.ventricle_centre[a]) for a in range(ndim)]
        arg = sum((r * np.float32(res / s)) ** 2 for r, s in zip(rel, sigma_mm))
        gain = amp * np.exp(np.float32(-0.5) * arg)
        for a in range(ndim):
            coords[a] -= gain * rel[a]
    # the volume's header gets a small rigid 'positioning' transform (metadata only, as a scanner would record)
    rigid = np.eye(4)
    rigid_angles = np.deg2rad(rng.uniform(-3.0, 3.0, 3))
    cx, cy, cz = np.cos(rigid_angles)
    sx, sy, sz = np.sin(rigid_angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    rigid[:3, :3] = rz @ ry @ rx
    rigid[:3, 3] = rng.uniform(-6.0, 6.0, 3)
    return coords, rigid


def _synthesise(seed: np.random.SeedSequence, severity: float, template: _Template) -> dict[str, np.ndarray]:
    """One subject: returns ``image`` (float32, ~[0, 1.2], 0 outside the brain), ``labels`` (uint8) and ``affine``."""
    from scipy import ndimage

    # independent streams for anatomy/pose, atrophy pattern and intensity: a subject's shape does not depend on its
    # severity; derived without SeedSequence.spawn so that calling this twice with one seed gives the same subject
    geometry_rng, atrophy_rng, rng = (
        np.random.default_rng(np.random.SeedSequence(seed.entropy, spawn_key=(*seed.spawn_key, k))) for k in range(3)
    )
    t1, labels = template.t1, template.labels
    if severity > 0:
        t1, labels = _thin_cortex(t1, labels, severity, atrophy_rng, template)
    coords, rigid = _sampling_coordinates(geometry_rng, template, severity)
    image = ndimage.map_coordinates(t1, coords, order=1, mode="constant", cval=0.0, prefilter=False)
    seg = ndimage.map_coordinates(labels, coords, order=0, mode="constant", cval=0, output=np.uint8)
    del coords
    brain = seg > 0
    # intensity: gamma, global scale, smooth multiplicative bias field, Rician noise (inside the brain)
    gamma = float(np.exp(rng.uniform(-0.2, 0.2)))
    gain = float(rng.uniform(0.85, 1.15))
    bias = np.exp(np.float32(rng.uniform(0.04, 0.12)) * _smooth_field(rng, image.shape, 60.0 / template.resolution)[0])
    sigma = np.float32(rng.uniform(0.01, 0.035))
    values = np.power(np.clip(image[brain], 0.0, None), np.float32(gamma)) * np.float32(gain) * bias[brain]
    n_vox = values.size
    real = values + sigma * rng.standard_normal(n_vox, dtype=np.float32)
    imag = sigma * rng.standard_normal(n_vox, dtype=np.float32)
    out = np.zeros(image.shape, dtype=np.float32)
    out[brain] = np.sqrt(real * real + imag * imag)
    return {"image": out, "labels": seg, "affine": rigid @ template.affine}


# ------------------------------------------------------------------------------------------------------------ writing
def _radiological(plane: np.ndarray) -> np.ndarray:
    """(X, Y) axial plane of an RAS volume -> image rows/cols as a radiological viewer shows it.

    Anterior at the top, the patient's right on the viewer's left.
    """
    return plane[::-1, ::-1].T


def _fit(image: np.ndarray, labels: np.ndarray, box: tuple[int, int, int, int], size: tuple[int, int]):
    """Crops ``box`` (r0, r1, c0, c1), resizes keeping aspect to fit ``size`` (H, W), pads centred with zeros."""
    from PIL import Image

    r0, r1, c0, c1 = box
    img = image[r0:r1, c0:c1]
    lab = labels[r0:r1, c0:c1]
    h, w = img.shape
    scale = min(size[0] / h, size[1] / w)
    nh, nw = min(size[0], max(1, round(h * scale))), min(size[1], max(1, round(w * scale)))
    img = np.asarray(Image.fromarray(np.ascontiguousarray(img)).resize((nw, nh), Image.BILINEAR))
    lab = np.asarray(Image.fromarray(np.ascontiguousarray(lab)).resize((nw, nh), Image.NEAREST))
    out_img = np.zeros(size, dtype=np.float32)
    out_lab = np.zeros(size, dtype=np.uint8)
    top, left = (size[0] - nh) // 2, (size[1] - nw) // 2
    out_img[top : top + nh, left : left + nw] = img
    out_lab[top : top + nh, left : left + nw] = lab
    return out_img, out_lab


def _to_uint8(image: np.ndarray, white: float) -> np.ndarray:
    return np.clip(np.rint(image * (255.0 / white)), 0, 255).astype(np.uint8)


def _slice_range(brain: np.ndarray, count: int, spacing: int = 1) -> range:
    """``count`` axial planes ``spacing`` planes apart, centred on the brain's axial extent."""
    planes = np.flatnonzero(brain.any(axis=(0, 1)))
    nz = brain.shape[2]
    span = (count - 1) * spacing + 1
    mid = (int(planes[0]) + int(planes[-1])) // 2 if planes.size else nz // 2
    start = int(np.clip(mid - span // 2, 0, max(nz - span, 0)))
    return range(start, start + span, spacing)


def _write_subject(task: dict[str, Any]) -> dict[str, Any]:
    """Synthesises one subject and writes its OASIS slices, ADNI slices and NIfTI volume (runs in a worker)."""
    import nibabel as nib
    from PIL import Image

    template = _load_template(task["resolution"])
    t0 = time.perf_counter()
    vol = _synthesise(task["seed"], task["severity"], template)
    image, labels = vol["image"], vol["labels"]
    out = Path(task["out_dir"])

    # NIfTI: int16, scanner-like units, template affine composed with a small rigid transform
    nii = nib.Nifti1Image(np.rint(image * 1000.0).astype(np.int16), vol["affine"])
    nii.header.set_xyzt_units("mm", "sec")
    nii.header["descrip"] = b"brainvq synthetic demo (MNI152 2009a)"
    nii.set_qform(vol["affine"], code=1)
    nii.set_sform(vol["affine"], code=1)
    nib.save(nii, out / "nifti" / f"{task['nifti_id']}_T1w.nii.gz")

    # 2D layouts: consecutive axial planes through the brain centre, radiological orientation, brain-filling crop
    brain = labels > 0
    planes = _slice_range(brain, task["slices"], task["slice_spacing"])
    white = float(np.percentile(image[brain], 99.5)) if brain.any() else 1.0
    sl_img = [_radiological(image[:, :, z]) for z in planes]
    sl_lab = [_radiological(labels[:, :, z]) for z in planes]
    union = np.any([lab > 0 for lab in sl_lab], axis=0)
    rows, cols = np.flatnonzero(union.any(1)), np.flatnonzero(union.any(0))
    if rows.size:
        pad = 2 + round(0.04 * max(rows[-1] - rows[0], cols[-1] - cols[0]))
        box = (
            max(int(rows[0]) - pad, 0),
            min(int(rows[-1]) + pad + 1, union.shape[0]),
            max(int(cols[0]) - pad, 0),
            min(int(cols[-1]) + pad + 1, union.shape[1]),
        )
    else:  # pragma: no cover - slices are centred on the brain
        box = (0, union.shape[0], 0, union.shape[1])
    lut = np.asarray(SEG_PNG_VALUES, dtype=np.uint8)
    oasis_img = out / f"keras_png_slices_{task['oasis_split']}"
    oasis_seg = out / f"keras_png_slices_seg_{task['oasis_split']}"
    adni_dir = out / "AD_NC" / task["adni_split"] / task["group"]
    number = task["oasis_number"]
    csf = brain_vox = 0
    for k, (z, img, lab) in enumerate(zip(planes, sl_img, sl_lab)):
        o_img, o_lab = _fit(img, lab, box, OASIS_SIZE)
        Image.fromarray(_to_uint8(o_img, white)).save(oasis_img / f"case_{number}_slice_{k}.nii.png")
        Image.fromarray(lut[o_lab]).save(oasis_seg / f"seg_{number}_slice_{k}.nii.png")
        a_img, _ = _fit(img, lab, box, ADNI_SIZE)
        Image.fromarray(_to_uint8(a_img, white)).save(
            adni_dir / f"{task['adni_id']}_{z}.jpeg", quality=92, subsampling=0
        )
        csf += int((lab == TISSUE_LABELS["CSF"]).sum())
        brain_vox += int((lab > 0).sum())
    return {
        "index": task["index"],
        "adni_slices": list(planes),
        "csf_fraction_slices": round(csf / max(brain_vox, 1), 4),
        "seconds": round(time.perf_counter() - t0, 2),
    }


# ----------------------------------------------------------------------------------------------------------- planning
def _round_half_up(x: float) -> int:
    return int(np.floor(x + 0.5))


def _plan(subjects: int, seed: int, slices: int, spacing: int, resolution: int, out_dir: Path) -> list[dict[str, Any]]:
    """Groups, severities, ids and splits of every subject (all from the seed), plus one SeedSequence each."""
    plan_seq, *subject_seqs = np.random.SeedSequence(seed).spawn(subjects + 1)
    rng = np.random.default_rng(plan_seq)
    order = rng.permutation(subjects)
    n_ad = subjects // 2
    groups = ["NC"] * subjects
    for i in order[:n_ad]:
        groups[int(i)] = "AD"
    severities = [round(float(rng.uniform(*_SEVERITY_RANGE)), 3) if g == "AD" else 0.0 for g in groups]
    patient_ids = [str(int(p)) for p in rng.choice(900_000, size=subjects, replace=False) + 100_000]

    by_group = {g: [int(i) for i in rng.permutation([i for i in range(subjects) if groups[i] == g])] for g in GROUPS}
    # OASIS: ~70/15/15 by subject, groups interleaved so that small splits hold both groups
    interleaved = [i for pair in zip(by_group["NC"], by_group["AD"]) for i in pair]
    interleaved += by_group["NC"][len(by_group["AD"]) :] + by_group["AD"][len(by_group["NC"]) :]
    if subjects >= 3:
        n_test = n_val = max(1, _round_half_up(0.15 * subjects))
    else:
        n_test, n_val = 1, 0
    oasis_split = {}
    for rank, i in enumerate(interleaved):
        oasis_split[i] = "test" if rank < n_test else "validate" if rank < n_test + n_val else "train"
    # ADNI: ~80/20 by patient within each class, both classes in both splits when a class has >= 2 patients
    adni_split = {}
    for members in by_group.values():
        n = len(members)
        n_test_c = min(max(1, _round_half_up(0.2 * n)), n - 1) if n >= 2 else 0
        for rank, i in enumerate(members):
            adni_split[i] = "test" if rank < n_test_c else "train"

    width = max(3, len(str(subjects)))
    return [
        {
            "index": i,
            "seed": subject_seqs[i],
            "group": groups[i],
            "severity": severities[i],
            "oasis_number": f"{i + 1:0{width}d}",
            "oasis_split": oasis_split[i],
            "adni_id": patient_ids[i],
            "adni_split": adni_split[i],
            "nifti_id": f"sub-{i + 1:0{width}d}",
            "slices": slices,
            "slice_spacing": spacing,
            "resolution": resolution,
            "out_dir": str(out_dir),
        }
        for i in range(subjects)
    ]


# ------------------------------------------------------------------------------------------------------------ summary
@dataclass(frozen=True)
class DemoCohortSummary:
    """What :func:`make_demo_cohort` wrote; ``str()`` gives a short human summary.

    Attributes:
        out_dir: the cohort folder.
        subjects: number of subjects.
        seed: the seed.
        slices_per_subject: axial slices per subject in the 2D layouts.
        slice_spacing: axial planes between consecutive slices.
        resolution_mm: voxel size of the template used.
        groups: subjects per group (``NC``, ``AD``).
        oasis: split -> group -> subjects, for the OASIS layout.
        adni: split -> group -> patients, for the ADNI layout.
        folders: layout name -> folder (``oasis`` is ``out_dir`` holding the ``keras_png_slices_*`` folders).
        files: layout name -> number of image files written.
        seconds: wall time of the generation.
    """

    out_dir: Path
    subjects: int
    seed: int
    slices_per_subject: int
    slice_spacing: int
    resolution_mm: int
    groups: Mapping[str, int]
    oasis: Mapping[str, Mapping[str, int]]
    adni: Mapping[str, Mapping[str, int]]
    folders: Mapping[str, Path]
    files: Mapping[str, int]
    seconds: float

    def __str__(self) -> str:
        def split_text(splits: Mapping[str, Mapping[str, int]]) -> str:
            return ", ".join(
                f"{s} {sum(c.values())} ({', '.join(f'{c[g]} {g}' for g in GROUPS)})" for s, c in splits.items()
            )

        g = self.groups
        return "\n".join(
            [
                f"demo cohort: {self.subjects} synthetic subjects ({g['NC']} NC, {g['AD']} AD) from the MNI152 "
                f"template at {self.resolution_mm} mm, seed {self.seed}, {self.slices_per_subject} axial slices each "
                f"({self.slice_spacing * self.resolution_mm} mm apart)",
                f"  OASIS {self.folders['oasis']}/keras_png_slices[_seg]_{{train,validate,test}}: "
                f"{split_text(self.oasis)}; {self.files['oasis']} PNG slices + as many tissue maps",
                f"  ADNI  {self.folders['adni']}/{{train,test}}/{{AD,NC}}: {split_text(self.adni)}; "
                f"{self.files['adni']} JPEG slices",
                f"  NIfTI {self.folders['nifti']}: {self.files['nifti']} volumes + participants.tsv",
                f"  described in {self.out_dir / 'README.txt'} and {self.out_dir / _MARKER} "
                f"(generated in {self.seconds:.1f} s)",
            ]
        )


# --------------------------------------------------------------------------------------------------------- the folder
def _owned_entries(out: Path) -> list[Path]:
    names = [f"keras_png_slices_{s}" for s in OASIS_SPLITS] + [f"keras_png_slices_seg_{s}" for s in OASIS_SPLITS]
    names += ["AD_NC", "nifti", "README.txt", _MARKER]
    return [out / n for n in names]


def _check_out_dir(out: Path) -> bool:
    """Refuses an unusable ``out``; returns whether it holds a previous demo cohort to replace."""
    if out.exists() and not out.is_dir():
        raise BrainVQInputError(out, "exists and is not a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return False
    try:
        previous = json.loads((out / _MARKER).read_text(encoding="utf-8"))
        ours = isinstance(previous, dict) and previous.get("generator") == _GENERATOR
    except (OSError, ValueError):
        ours = False
    if not ours:
        raise BrainVQInputError(
            out, f"folder is not empty and holds no {_MARKER} of a previous demo cohort; give a new or empty folder"
        )
    return True


def _prepare_out_dir(out: Path) -> None:
    """Creates ``out`` and the layout folders, first removing a previous demo cohort's files (and only those)."""
    if _check_out_dir(out):
        for path in _owned_entries(out):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
        for split in OASIS_SPLITS:
            (out / f"keras_png_slices_{split}").mkdir()
            (out / f"keras_png_slices_seg_{split}").mkdir()
        for split in ADNI_SPLITS:
            for group in ("AD", "NC"):
                (out / "AD_NC" / split / group).mkdir(parents=True)
        (out / "nifti").mkdir()
    except OSError as err:
        raise BrainVQInputError(out, f"cannot create the cohort folders ({err.strerror or err})") from None


def validate_demo_settings(subjects: Any, seed: Any, slices: Any, workers: Any = None, spacing: Any = 1) -> None:
    """Checks the demo cohort settings, raising a one-line :class:`BrainVQInputError` naming the bad one.

    Args:
        subjects: number of subjects (2 or more: one NC and one AD at least).
        seed: non-negative integer seed.
        slices: axial slices per subject in the 2D layouts (1 or more).
        workers: worker processes (1 or more) or ``None``.
        spacing: axial planes between consecutive slices (1 or more).
    """

    def is_int(v: Any) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if not is_int(subjects) or not 2 <= subjects <= _MAX_SUBJECTS:
        raise BrainVQInputError(
            "subjects", f"must be an integer from 2 to {_MAX_SUBJECTS} (one NC and one AD at least), got {subjects!r}"
        )
    if not is_int(seed) or seed < 0:
        raise BrainVQInputError("seed", f"must be a non-negative integer, got {seed!r}")
    if not is_int(slices) or slices < 1:
        raise BrainVQInputError("slices_per_subject", f"must be an integer >= 1, got {slices!r}")
    if workers is not None and (not is_int(workers) or workers < 1):
        raise BrainVQInputError("workers", f"must be an integer >= 1 or None, got {workers!r}")
    if not is_int(spacing) or spacing < 1:
        raise BrainVQInputError("slice_spacing", f"must be an integer >= 1 (axial planes), got {spacing!r}")


def _readme(meta: dict[str, Any]) -> str:
    lines = [
        "SYNTHETIC DEMO COHORT - NOT REAL PATIENTS, NOT FOR CLINICAL OR SCIENTIFIC CONCLUSIONS",
        "",
        f"Generated by {_GENERATOR} (brainvq demo-data) from the {_TEMPLATE_NAME}, at {meta['resolution_mm']} mm.",
        "Template: ICBM 2009a Nonlinear Asymmetric (MNI152NLin2009aAsym), McConnell Brain Imaging Centre.",
        "  Fonov V, Evans AC, Botteron K, Almli CR, McKinstry RC, Collins DL. Unbiased average age-appropriate",
        "  atlases for pediatric studies. NeuroImage 54(1):313-327, 2011.",
        "  Fonov VS, Evans AC, McKinstry RC, Almli CR, Collins DL. Unbiased nonlinear average age-appropriate brain",
        "  templates from birth to adulthood. NeuroImage 47(Suppl 1):S102, 2009.",
        "",
        "Each subject = the template after a random smooth deformation (small affine + elastic field), a bias field,",
        "gamma/scale intensity change and Rician noise. AD subjects additionally get atrophy graded by 'severity'",
        f"(uniform in {_SEVERITY_RANGE[0]}..{_SEVERITY_RANGE[1]}): enlarged ventricles (radial expansion about the lateral",
        "ventricles) and thinner cortex / wider sulci (GM bordering CSF turned into CSF). NC subjects have severity 0.",
        "Tissue labels (background/CSF/GM/WM) come from the template's tissue maps and follow the same deformation.",
        "",
        f"subjects: {meta['subjects']}   seed: {meta['seed']}   axial slices per subject: {meta['slices_per_subject']}"
        f" ({meta['slice_spacing']} mm apart)",
        "",
        "Layouts (same subjects in each, ids differ as in the public datasets):",
        "  OASIS  keras_png_slices_{train,validate,test}/case_<NNN>_slice_<k>.nii.png (256x256, 8-bit)",
        "         keras_png_slices_seg_{train,validate,test}/seg_<NNN>_slice_<k>.nii.png (0 bg, 85 CSF, 170 GM, 255 WM)",
        "  ADNI   AD_NC/{train,test}/{AD,NC}/<patientid>_<slice>.jpeg (256 wide x 240 high, <slice> = NIfTI z index)",
        "  NIfTI  nifti/sub-<NNN>_T1w.nii.gz (int16, skull-stripped) + nifti/participants.tsv (no predefined split)",
        "2D slices are shown radiologically: anterior at the top, the patient's right on the image's left.",
        "",
        f"{'nifti':<10} {'oasis':<10} {'oasis split':<12} {'adni':<8} {'adni split':<11} {'group':<6} severity",
    ]
    for p in meta["participants"]:
        lines.append(
            f"{p['nifti']['id']:<10} {p['oasis']['id']:<10} {p['oasis']['split']:<12} {p['adni']['id']:<8} "
            f"{p['adni']['split']:<11} {p['group']:<6} {p['severity']:.3f}"
        )
    lines += ["", f"Machine-readable: {_MARKER}", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------- entry point
def make_demo_cohort(
    out_dir: str | os.PathLike,
    subjects: int = 20,
    seed: int = 0,
    slices_per_subject: int = 20,
    workers: int | None = None,
    slice_spacing: int = 1,
) -> DemoCohortSummary:
    """Synthesises a demo cohort from nilearn's MNI152 template and writes it in the OASIS, ADNI and NIfTI layouts.

    Args:
        out_dir: output folder; created. A non-empty folder is refused unless it holds a previous demo cohort
            (its ``demo_cohort.json``), whose files are then replaced.
        subjects: number of subjects (>= 2); about half are ``AD`` (with atrophy), the rest ``NC``.
        seed: non-negative seed; the same seed gives the same cohort (groups, splits, image data).
        slices_per_subject: axial slices per subject in the 2D layouts (>= 1), centred on the brain.
        workers: worker processes (default ``min(2, os.cpu_count())``); the result does not depend on it.
        slice_spacing: axial planes (mm at the template's 1 mm) between consecutive slices; 1 gives adjacent
            planes, larger values cover more of the brain with as many slices. The slices must fit in the volume.

    Returns:
        a :class:`DemoCohortSummary` (``str()`` of it is a short human summary).

    Raises:
        BrainVQInputError: a bad setting or an unusable ``out_dir``.
    """
    validate_demo_settings(subjects, seed, slices_per_subject, workers, slice_spacing)
    subjects, seed, slices_per_subject, slice_spacing = (
        int(subjects),
        int(seed),
        int(slices_per_subject),
        int(slice_spacing),
    )
    workers = int(workers) if workers is not None else min(2, os.cpu_count() or 1)
    workers = min(workers, subjects)
    resolution = DEMO_RESOLUTION_MM
    t0 = time.perf_counter()
    out = Path(out_dir).expanduser()
    _check_out_dir(out)  # refuse early, before the template is loaded

    template = _load_template(resolution)
    depth = template.t1.shape[2]
    if (slices_per_subject - 1) * slice_spacing + 1 > depth:
        raise BrainVQInputError(
            "slices_per_subject",
            f"{slices_per_subject} slices {slice_spacing} planes apart do not fit in the {depth} axial planes of the "
            f"{resolution} mm volume",
        )
    _prepare_out_dir(out)
    tasks = _plan(subjects, seed, slices_per_subject, slice_spacing, resolution, out)
    meta: dict[str, Any] = {
        "generator": _GENERATOR,
        "complete": False,
        "template": _TEMPLATE_NAME,
        "resolution_mm": resolution,
        "subjects": subjects,
        "seed": seed,
        "slices_per_subject": slices_per_subject,
        "slice_spacing": slice_spacing,
        "groups": {"NC": "normal control", "AD": "Alzheimer's disease (synthetic atrophy)"},
        "tissue_labels": TISSUE_LABELS,
        "seg_png_values": dict(zip(TISSUE_LABELS, SEG_PNG_VALUES)),
        "layouts": {"oasis": ".", "adni": "AD_NC", "nifti": "nifti"},
    }
    atomic_write_json(out / _MARKER, meta)  # marks the folder as ours

    results: dict[int, dict[str, Any]] = {}

    def report(task: dict[str, Any], res: dict[str, Any]) -> None:
        results[task["index"]] = res
        print(
            f"demo-data: {len(results)}/{subjects} {task['nifti_id']} {task['group']} "
            f"(severity {task['severity']:.2f}) {res['seconds']:.1f} s",
            file=sys.stderr,
            flush=True,
        )

    try:
        if workers == 1:
            for task in tasks:
                report(task, _write_subject(task))
        else:
            with ProcessPoolExecutor(max_workers=workers, initializer=_set_template, initargs=(template,)) as pool:
                futures = {pool.submit(_write_subject, task): task for task in tasks}
                for fut in as_completed(futures):
                    report(futures[fut], fut.result())
    except OSError as err:  # disk full, permissions changed under us, ...
        raise BrainVQInputError(out, f"cannot write the demo cohort ({err})") from None

    with open(out / "nifti" / "participants.tsv", "w", encoding="utf-8", newline="\n") as f:
        f.write("participant_id\tgroup\n")
        for task in tasks:
            f.write(f"{task['nifti_id']}\t{task['group']}\n")
    meta["participants"] = [
        {
            "group": t["group"],
            "severity": t["severity"],
            "oasis": {"id": f"case_{t['oasis_number']}", "split": t["oasis_split"]},
            "adni": {"id": t["adni_id"], "split": t["adni_split"], "slices": results[t["index"]]["adni_slices"]},
            "nifti": {"id": t["nifti_id"], "split": None, "file": f"nifti/{t['nifti_id']}_T1w.nii.gz"},
            "csf_fraction_slices": results[t["index"]]["csf_fraction_slices"],
        }
        for t in tasks
    ]
    meta["complete"] = True
    (out / "README.txt").write_text(_readme(meta), encoding="utf-8")
    atomic_write_json(out / _MARKER, meta)  # "complete": the cohort is whole

    def count(split_key: str, splits: Sequence[str]) -> dict[str, dict[str, int]]:
        return {s: {g: sum(t[split_key] == s and t["group"] == g for t in tasks) for g in GROUPS} for s in splits}

    return DemoCohortSummary(
        out_dir=out,
        subjects=subjects,
        seed=seed,
        slices_per_subject=slices_per_subject,
        slice_spacing=slice_spacing,
        resolution_mm=resolution,
        groups={g: sum(t["group"] == g for t in tasks) for g in GROUPS},
        oasis=count("oasis_split", OASIS_SPLITS),
        adni=count("adni_split", ADNI_SPLITS),
        folders={"oasis": out, "adni": out / "AD_NC", "nifti": out / "nifti"},
        files={"oasis": subjects * slices_per_subject, "adni": subjects * slices_per_subject, "nifti": subjects},
        seconds=time.perf_counter() - t0,
    )
