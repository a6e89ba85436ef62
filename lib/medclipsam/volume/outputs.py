"""Writing a slice-engine result in the source geometry: NIfTI, NRRD or DICOM SEG.

:func:`check_output` runs before any computation, so a path that cannot be written, a format the
input cannot give (DICOM SEG needs a DICOM source; NIfTI/NRRD need a regular grid) or an existing
file fail in seconds, not after the series has been segmented. Every writer is atomic (temporary
file, then rename).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError
from .engine import VolumeResult
from .source import VolumeSource

if TYPE_CHECKING:
    from ..dicom.seg import SegmentSpec


def output_kind(path: str | Path) -> str:
    """'nifti', 'nrrd' or 'dicom-seg' from the output file name."""
    from .itk_io import label_suffix

    return label_suffix(path)


def check_output(path: str | Path, src: VolumeSource, overwrite: bool = False) -> str:
    """Fail early when ``path`` cannot take this volume's labels; returns the output kind."""
    p = Path(path)
    kind = output_kind(p)
    if p.is_dir():
        raise InputError(f"--out {p} is a folder; give a file name ending in .nii.gz, .nii, .nrrd or .dcm")
    if p.exists() and not overwrite:
        raise InputError(f"--out {p} already exists; choose another name or pass --overwrite")
    parent = p.parent if str(p.parent) else Path(".")
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"cannot write {p}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {p}: no write permission in {probe}; choose another --out")
    if kind == "dicom-seg":
        if not hasattr(src, "source_datasets"):
            raise InputError(f"a DICOM SEG output needs a DICOM series as input ({src.description} is not one); "
                             "write .nii.gz or .nrrd instead")
    elif not src.geometry.regular:
        raise InputError(f"the series is not on a regular grid ({src.geometry.irregular_reason}); NIfTI/NRRD "
                         "cannot store it. Write DICOM SEG (--out NAME.dcm), which keeps one position per slice")
    return kind


def slice_frames(src: Any) -> tuple[list, list[tuple[int, int | None]]]:
    """The distinct source datasets and, per sorted slice, (dataset index, frame index)."""
    datasets = src.source_datasets()
    order: dict[Path, int] = {}
    for ref in src.slices:
        order.setdefault(Path(ref.path), len(order))
    frames = [(order[Path(ref.path)], ref.frame) for ref in src.slices]
    return datasets, frames


def write_result(path: str | Path, result: VolumeResult, src: VolumeSource, *, series_description: str,
                 algorithm_version: str) -> tuple[Path, list[str]]:
    """Write the labels of ``result`` to ``path`` (format from the suffix); returns the path and the
    writer's notes (e.g. a prompt with no voxels left out of a DICOM SEG)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = _write(path, result, src, series_description=series_description,
                     algorithm_version=algorithm_version)
    return out, [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


def _write(path: str | Path, result: VolumeResult, src: VolumeSource, *, series_description: str,
           algorithm_version: str) -> Path:
    from ..dicom.seg import SegmentSpec

    segments = [SegmentSpec(label=p.label, name=p.name, description=p.name) for p in result.prompts]
    return write_labels(path, result.labels, src, segments, series_description=series_description,
                        algorithm_version=algorithm_version)


def write_labels(path: str | Path, labels: np.ndarray, src: VolumeSource, segments: Sequence[SegmentSpec], *,
                 series_description: str, algorithm_version: str) -> Path:
    """The one label writer (the CLI's :func:`write_result` and the server use it): ``labels``
    (uint8 slices×rows×cols in ``src``'s grid) to ``path``, the format from its suffix. NIfTI/NRRD
    name each label value by its segment's name; a DICOM SEG gets one segment per spec present
    (names and the series description shortened to DICOM's 64 characters) on ``src``'s slices.
    Raises :class:`~medclipsam.dicom.seg.EmptySegmentationError` for a SEG of an empty volume; the
    SEG writer's repairs are :class:`~medclipsam.dicom.seg.DicomSegWarning` warnings."""
    kind = output_kind(path)
    if kind in ("nifti", "nrrd"):
        from .itk_io import write_label

        return write_label(path, labels, src.geometry, label_names={s.label: s.name for s in segments})
    from ..dicom.seg import write_dicom_seg

    datasets, frames = slice_frames(src)
    return write_dicom_seg(path, datasets, labels, [replace(s, name=s.name[:64]) for s in segments],
                           frames=frames, series_description=series_description[:64],
                           algorithm_version=algorithm_version)
