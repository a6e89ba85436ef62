"""Volumes in patient space: geometry, slice sources, rendering, the slice engine, NIfTI/NRRD I/O."""

from ..geometry import Geometry, geometry_from_positions
from .source import ArrayVolume, VolumeSource

__all__ = ["Geometry", "geometry_from_positions", "ArrayVolume", "VolumeSource"]
