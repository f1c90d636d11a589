"""MONAI transforms for brain MRI: loading, intensity scaling, slice extraction, resizing, and the pipeline builder."""

from __future__ import annotations

from brainvq_monai.transforms.intensity import (
    ClipIntensity,
    ClipIntensityd,
    ScaleIntensityRobust,
    ScaleIntensityRobustd,
    ThresholdForeground,
)
from brainvq_monai.transforms.io import LoadBrainImage, LoadBrainImaged
from brainvq_monai.transforms.pipeline import brain_transforms
from brainvq_monai.transforms.spatial import ExtractAxialSlice, ExtractAxialSliced, ResizeToFit, ResizeToFitd

__all__ = [
    "ClipIntensity",
    "ClipIntensityd",
    "ExtractAxialSlice",
    "ExtractAxialSliced",
    "LoadBrainImage",
    "LoadBrainImaged",
    "ResizeToFit",
    "ResizeToFitd",
    "ScaleIntensityRobust",
    "ScaleIntensityRobustd",
    "ThresholdForeground",
    "brain_transforms",
]
