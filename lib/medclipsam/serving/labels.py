"""A label volume a client submitted (NIfTI/NRRD on the series' grid) → a DICOM SEG of the series.

Segment names come from the request's ``label_info`` (``[{"name": ..., "idx": value}, ...]``, as
3D Slicer sends it; an entry without ``idx``/``labelID``/``label`` names the i-th value present,
MONAI Label 0.8.5's rule), else from the vocabulary by value, else "label N".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .. import __version__
from ..errors import InputError
from .vocabulary import Vocabulary, segment_concept

SEG_DESCRIPTION = "medclipsam accepted label"


def segment_names(values: Sequence[int], label_info: Any, vocabulary: Vocabulary | None) -> dict[int, str]:
    names: dict[int, str] = {}
    items = label_info if isinstance(label_info, list) else []
    positional = []
    for item in items:
        if not isinstance(item, dict) or not str(item.get("name", "")).strip():
            continue
        idx = next((item[k] for k in ("idx", "labelID", "label") if k in item), None)
        try:
            names[int(idx)] = str(item["name"]).strip()
        except (TypeError, ValueError):
            positional.append(str(item["name"]).strip())
    for v, name in zip([v for v in values if v not in names], positional):
        names[v] = name
    for v in values:
        if v not in names:
            entry = None
            if vocabulary is not None:
                entry = next((e for e in vocabulary.entries if e.value == v), None)
            names[v] = entry.name if entry else f"label {v}"
    return {v: names[v] for v in values}


def write_label_as_seg(dicom_dir: Path, label_path: Path, out: Path, label_info: Any = None,
                       vocabulary: Vocabulary | None = None) -> Path:
    from ..dicom import read_series
    from ..dicom.seg import SegmentSpec, write_dicom_seg
    from ..volume.itk_io import read_volume
    from ..volume.outputs import slice_frames
    from .infer import same_grid

    label = read_volume(label_path)
    series = read_series(dicom_dir)
    try:
        if not same_grid(series.geometry, label.geometry):
            raise InputError(f"the label {label_path.name} is not on the grid of series {series.description} "
                             f"({label.geometry.shape} vs {series.geometry.shape}); resample it onto the image")
        values = np.asarray(label.array)
        if np.any(values != np.round(values)) or values.min() < 0 or values.max() > 255:
            raise InputError(f"the label {label_path.name} holds values other than 0-255 integers")
        labels = values.astype(np.uint8)
        present = sorted(int(v) for v in np.unique(labels) if v)
        if not present:
            raise InputError(f"the label {label_path.name} is empty; a DICOM SEG needs at least one segment")
        names = segment_names(present, label_info, vocabulary)
        segments = []
        for v in present:
            entry = vocabulary.find(names[v]) if vocabulary is not None else None
            segments.append(SegmentSpec(label=v, name=names[v][:64], description=names[v],
                                        color=entry.color if entry else None,
                                        concept=segment_concept(entry, names[v])))
        datasets, frames = slice_frames(series)
        return write_dicom_seg(out, datasets, labels, segments, frames=frames, series_description=SEG_DESCRIPTION,
                               algorithm_version=__version__)
    finally:
        series.close()
