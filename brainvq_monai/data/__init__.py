"""Brain-MRI data layer: robust image reading, leak-free datalists and the offline demo cohort."""

from __future__ import annotations

from typing import Any

from .codes import CodesDataset, codes_dataloader, load_codes, save_codes
from .datalist import (
    DATALIST_FORMATS,
    LABEL_NAMES,
    SPLITS,
    assert_subject_disjoint,
    build_datalist,
    format_summary,
    read_participants,
    split_subjects,
    write_datalist,
)
from .image_io import (
    IMAGE_2D_SUFFIXES,
    VOLUME_SUFFIXES,
    brain_axial_slices,
    image_kind,
    read_canonical_volume,
    read_image,
    robust_max,
    validate_image,
)
from .sampling import UNCONDITIONAL, sampling_requests
from .writers import save_image

__all__ = [
    "DATALIST_FORMATS",
    "LABEL_NAMES",
    "SPLITS",
    "assert_subject_disjoint",
    "build_datalist",
    "format_summary",
    "read_participants",
    "split_subjects",
    "write_datalist",
    "IMAGE_2D_SUFFIXES",
    "VOLUME_SUFFIXES",
    "brain_axial_slices",
    "image_kind",
    "read_canonical_volume",
    "read_image",
    "robust_max",
    "validate_image",
    "make_demo_cohort",
    "CodesDataset",
    "codes_dataloader",
    "load_codes",
    "save_codes",
    "save_image",
    "UNCONDITIONAL",
    "sampling_requests",
]


def __getattr__(name: str) -> Any:
    # imported lazily: the demo cohort pulls in nilearn/scipy, which plain datalist users do not need
    if name == "make_demo_cohort":
        from .demo import make_demo_cohort

        return make_demo_cohort
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
