"""MONAI transforms for brain MRI: loading, intensity scaling, slice extraction, resizing, and the pipeline builder."""

from __future__ import annotations

from brainvq_monai.transforms.batch import AugmentedPrepareBatch, RandBrainAugment
from brainvq_monai.transforms.intensity import (
    ClipIntensity,
    ClipIntensityd,
    ScaleIntensityRobust,
    ScaleIntensityRobustd,
    ThresholdForeground,
)
from brainvq_monai.transforms.io import ImageReadCache, LoadBrainImage, LoadBrainImaged
from brainvq_monai.transforms.pipeline import BRAIN_AUGMENT, BrainAugmentParams, brain_transforms
from brainvq_monai.transforms.spatial import ExtractAxialSlice, ExtractAxialSliced, ResizeToFit, ResizeToFitd

__all__ = [
    "AugmentedPrepareBatch",
    "BRAIN_AUGMENT",
    "BrainAugmentParams",
    "ClipIntensity",
    "ClipIntensityd",
    "ExtractAxialSlice",
    "ExtractAxialSliced",
    "ImageReadCache",
    "LoadBrainImage",
    "LoadBrainImaged",
    "RandBrainAugment",
    "ResizeToFit",
    "ResizeToFitd",
    "ScaleIntensityRobust",
    "ScaleIntensityRobustd",
    "ThresholdForeground",
    "brain_transforms",
]
