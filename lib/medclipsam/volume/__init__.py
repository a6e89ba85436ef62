"""Volumes in patient space: geometry, slice sources, NIfTI/NRRD input and label output."""

from .geometry import Geometry, geometry_from_positions
from .source import ArrayVolume, VolumeSource

__all__ = ["Geometry", "geometry_from_positions", "ArrayVolume", "VolumeSource"]
