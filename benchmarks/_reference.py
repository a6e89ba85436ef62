"""Reference segmentations of the real DICOM corpus, on the series grid exactly as our reader returns it.

The corpus lives outside the project (``../shared/corpora/dicom`` from the project root; see its
MANIFEST.md) and is never copied in. Two cases carry anatomy references:

* ``ct_series_siemens_j2k_blank_uids_with_reference_seg`` — a 20-slice Siemens CT with
  TotalSegmentator's own test reference (``--fast``; a uint8 NIfTI label map, names in labels.json).
  The labels are resampled onto the series through the NIfTI affine, nearest neighbour: every series
  voxel's LPS position (DICOM geometry) → RAS (x, y negated) → NIfTI voxel index via the inverse
  affine, rounded. No axis flip is assumed; :func:`index_correspondence` says which ones the affines
  imply (for this case: columns → +i, rows → −j, slices → +k).
* ``seg_referencing_ct_ge_3slice`` — 3 GE CT slices with a dcmqi DICOM SEG holding one segment
  'Liver'; each SEG frame goes to the series slice at its ImagePositionPatient (within
  :data:`POSITION_TOLERANCE_MM`; anything that does not match is an error, never a guess).

``load_cases()`` returns one :class:`ReferenceCase` per case, each structure a bool array shaped
like ``open_volume(case.series).geometry.shape`` (slices, rows, columns in the reader's order).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CORPUS: Path = ROOT.parent / "shared" / "corpora" / "dicom"

SIEMENS_CT = "ct_series_siemens_j2k_blank_uids_with_reference_seg"
GE_CT = "seg_referencing_ct_ge_3slice"
DEFAULT_STRUCTURES: dict[str, list[str]] = {
    SIEMENS_CT: ["liver", "spleen", "aorta", "stomach", "kidney_left", "kidney_right"],
    GE_CT: ["liver"],
}
POSITION_TOLERANCE_MM = 0.05     # a SEG frame's ImagePositionPatient vs the series slice's (3D distance)
ORIENTATION_TOLERANCE = 1e-4     # ImageOrientationPatient components of the SEG vs the series


class ReferenceAlignmentError(ValueError):
    """A reference cannot be placed on its series (positions, orientation or grid disagree)."""


@dataclass
class ReferenceCase:
    name: str                              # the corpus folder
    series: Path                           # the folder of the image DICOM files
    structures: dict[str, np.ndarray]      # name → bool (slices, rows, columns) on the series grid
    source_description: str                # where the reference comes from
    truth: str                             # what kind of reference it is (model output, manual, ...)
    notes: list[str] = field(default_factory=list)   # how it was mapped (flips found, skipped structures)

    def open(self):
        """The series as our reader returns it (``medclipsam.volume.inputs.open_volume``); close it after use."""
        from medclipsam.volume.inputs import open_volume

        return open_volume(self.series)


def corpus_missing_reason() -> str | None:
    """Why the reference cases cannot be loaded here (None when they can)."""
    if not CORPUS.is_dir():
        return f"real DICOM corpus not found at {CORPUS}"
    missing = [name for name in DEFAULT_STRUCTURES if not (CORPUS / name).is_dir()]
    if missing:
        return f"corpus case(s) {', '.join(missing)} missing under {CORPUS}"
    return None


# ------------------------------------------------------------------------------------ geometry


def slice_lps(geometry, k: int) -> np.ndarray:
    """LPS position (mm) of every voxel centre of series slice ``k``: rows × columns × 3."""
    d = geometry.direction_matrix()
    col_step = d[:, 0] * geometry.spacing[0]         # one column to the right (IOP[0:3] × column spacing)
    row_step = d[:, 1] * geometry.spacing[1]         # one row down (IOP[3:6] × row spacing)
    _, rows, cols = geometry.shape
    r = np.arange(rows, dtype=np.float64)[:, None, None]
    c = np.arange(cols, dtype=np.float64)[None, :, None]
    return np.asarray(geometry.slice_position(k), dtype=np.float64) + r * row_step + c * col_step


LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def lps_to_nifti_index(lps: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Continuous NIfTI voxel indices (i, j, k) of LPS points (…×3) through the inverse of ``affine``."""
    inv = np.linalg.inv(np.asarray(affine, dtype=np.float64))
    ras = lps @ LPS_TO_RAS.T
    return ras @ inv[:3, :3].T + inv[:3, 3]


def index_correspondence(geometry, affine: np.ndarray) -> np.ndarray:
    """3×3 matrix M: NIfTI index step (i, j, k) per one step along the series' (column, row, slice)
    index — the columns of M. An identity up to sign and permutation when the grids are aligned."""
    origin = lps_to_nifti_index(slice_lps(geometry, 0)[0, 0], affine)
    col = lps_to_nifti_index(slice_lps(geometry, 0)[0, 1], affine) - origin
    row = lps_to_nifti_index(slice_lps(geometry, 0)[1, 0], affine) - origin
    nxt = lps_to_nifti_index(slice_lps(geometry, min(1, geometry.shape[0] - 1))[0, 0], affine) - origin
    return np.stack([col, row, nxt], axis=1)


def describe_correspondence(m: np.ndarray) -> str:
    """'columns → +i, rows → −j, slices → +k' (or the nearest axes with their sizes when oblique)."""
    parts = []
    for name, v in zip(("columns", "rows", "slices"), m.T):
        a = int(np.argmax(np.abs(v)))
        sign = "+" if v[a] > 0 else "−"
        scale = abs(float(v[a]))
        extra = "" if abs(scale - 1) < 1e-3 and np.abs(np.delete(v, a)).max() < 1e-3 else f" (×{scale:.3g}, oblique)"
        parts.append(f"{name} → {sign}{'ijk'[a]}{extra}")
    return ", ".join(parts)


def nifti_labels_on_series(geometry, labels: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, dict]:
    """The NIfTI label map ``labels`` (indexed [i, j, k]) resampled, nearest neighbour, onto the series
    grid (slices × rows × columns). Voxels outside the NIfTI get 0. Also returns mapping statistics."""
    n, rows, cols = geometry.shape
    out = np.zeros((n, rows, cols), dtype=labels.dtype)
    outside = 0
    off_grid = 0.0
    size = np.asarray(labels.shape[:3])
    for k in range(n):
        idx = lps_to_nifti_index(slice_lps(geometry, k), affine)
        near = np.rint(idx)
        off_grid = max(off_grid, float(np.abs(idx - near).max()))
        near = near.astype(np.int64)
        inside = np.all((near >= 0) & (near < size), axis=-1)
        outside += int((~inside).sum())
        i, j, kk = near[..., 0][inside], near[..., 1][inside], near[..., 2][inside]
        out[k][inside] = labels[i, j, kk]
    return out, {"outside": outside, "max_off_grid_voxels": off_grid}


# ------------------------------------------------------------------------------------ the cases


def _siemens_case(names: list[str]) -> ReferenceCase:
    import nibabel as nib

    from medclipsam.volume.inputs import close_volume, open_volume

    folder = CORPUS / SIEMENS_CT
    ref = folder / "reference_seg"
    table = json.loads((ref / "labels.json").read_text())["labels"]
    by_name = {v: int(k) for k, v in table.items()}
    unknown = [s for s in names if s not in by_name]
    if unknown:
        raise KeyError(f"{', '.join(unknown)} not in {ref / 'labels.json'} (TotalSegmentator 'total' names, "
                       "e.g. liver, spleen, aorta, kidney_left)")
    img = nib.load(str(ref / "example_seg_dicom.nii.gz"))
    labels = np.asarray(img.dataobj)
    if labels.ndim != 3:
        raise ReferenceAlignmentError(f"expected a 3-D label map, got shape {labels.shape}")
    src = open_volume(folder / "image")
    try:
        geometry = src.geometry
    finally:
        close_volume(src)
    on_series, stats = nifti_labels_on_series(geometry, labels, img.affine)
    corr = index_correspondence(geometry, img.affine)
    notes = [f"NIfTI index per series step: {describe_correspondence(corr)} (from the affines, not assumed)",
             f"{stats['outside']} series voxels fall outside the NIfTI; nearest-neighbour offset at most "
             f"{stats['max_off_grid_voxels']:.3g} voxel"]
    repeats = sum(bool((labels[..., k] == labels[..., k + 1]).all()) for k in range(labels.shape[2] - 1))
    if repeats:
        notes.append(f"{repeats} pairs of adjacent NIfTI slices are identical (the --fast model works at 3 mm; "
                     "its output was resampled to the series' 2 mm): the reference is coarse along z")
    structures: dict[str, np.ndarray] = {}
    for name in names:
        mask = on_series == by_name[name]
        if mask.any():
            structures[name] = mask
        else:
            notes.append(f"{name} (label {by_name[name]}) is absent from these {geometry.shape[0]} slices: skipped")
    return ReferenceCase(
        name=SIEMENS_CT, series=folder / "image", structures=structures,
        source_description=("wasserth/TotalSegmentator tests/reference_files: example_ct_dicom (Siemens Biograph40 "
                            "mCT, 20 slices) and example_seg_dicom.nii.gz, names from class_map['total']"),
        truth=("TotalSegmentator fast model output (NIfTI label map, 'TotalSegmentator --fast --ml'): a model's "
               "segmentation, not a manual contour"),
        notes=notes)


def _frame_position(frame) -> np.ndarray:
    return np.asarray(frame.PlanePositionSequence[0].ImagePositionPatient, dtype=np.float64)


def _seg_orientation(seg, frame) -> np.ndarray:
    for groups in (frame, seg.SharedFunctionalGroupsSequence[0]):
        if "PlaneOrientationSequence" in groups:
            return np.asarray(groups.PlaneOrientationSequence[0].ImageOrientationPatient, dtype=np.float64)
    raise ReferenceAlignmentError("the SEG has no PlaneOrientationSequence (shared or per frame)")


def seg_on_series(seg_path: Path, geometry, segment_label: str, frame_of_reference_uid: str | None = None,
                  tolerance_mm: float = POSITION_TOLERANCE_MM) -> np.ndarray:
    """One segment of a DICOM SEG as a bool array on the series grid, each frame placed at the series
    slice whose ImagePositionPatient lies within ``tolerance_mm`` of the frame's."""
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seg = pydicom.dcmread(str(seg_path))
    n, rows, cols = geometry.shape
    if (int(seg.Rows), int(seg.Columns)) != (rows, cols):
        raise ReferenceAlignmentError(f"{seg_path.name}: frames are {seg.Rows}×{seg.Columns}, the series {rows}×{cols}")
    if frame_of_reference_uid and getattr(seg, "FrameOfReferenceUID", None) not in (None, "", frame_of_reference_uid):
        raise ReferenceAlignmentError(f"{seg_path.name}: FrameOfReferenceUID {seg.FrameOfReferenceUID} is not the "
                                      f"series' {frame_of_reference_uid}")
    numbers = [int(s.SegmentNumber) for s in seg.SegmentSequence
               if str(s.SegmentLabel).lower() == segment_label.lower()]
    if len(numbers) != 1:
        have = [str(s.SegmentLabel) for s in seg.SegmentSequence]
        raise KeyError(f"{seg_path.name}: {len(numbers)} segments labelled {segment_label!r}; it has {have}")
    d = geometry.direction_matrix()
    series_iop = np.concatenate([d[:, 0], d[:, 1]])
    spacing = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
    if not np.allclose([float(spacing[1]), float(spacing[0])], geometry.spacing[:2], atol=1e-4):
        raise ReferenceAlignmentError(f"{seg_path.name}: PixelSpacing {list(spacing)} is not the series' "
                                      f"{geometry.spacing[1]:g}\\{geometry.spacing[0]:g}")
    positions = np.asarray([geometry.slice_position(k) for k in range(n)], dtype=np.float64)
    pixels = seg.pixel_array.reshape(int(seg.NumberOfFrames), rows, cols)
    if seg.SegmentationType != "BINARY":          # FRACTIONAL: occupancy over half
        pixels = pixels >= (int(getattr(seg, "MaximumFractionalValue", 255)) + 1) / 2
    out = np.zeros((n, rows, cols), dtype=bool)
    for f, frame in enumerate(seg.PerFrameFunctionalGroupsSequence):
        if int(frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber) != numbers[0]:
            continue
        iop = _seg_orientation(seg, frame)
        if np.abs(iop - series_iop).max() > ORIENTATION_TOLERANCE:
            raise ReferenceAlignmentError(f"{seg_path.name} frame {f + 1}: orientation {iop.tolist()} is not the "
                                          f"series' {series_iop.tolist()}")
        dist = np.linalg.norm(positions - _frame_position(frame), axis=1)
        k = int(np.argmin(dist))
        if dist[k] > tolerance_mm:
            raise ReferenceAlignmentError(
                f"{seg_path.name} frame {f + 1} at {_frame_position(frame).tolist()} is {dist[k]:.3g} mm from the "
                f"nearest series slice ({k}); tolerance {tolerance_mm} mm")
        out[k] |= pixels[f].astype(bool)
    return out


def _ge_case(names: list[str]) -> ReferenceCase:
    from medclipsam.volume.inputs import close_volume, open_volume

    folder = CORPUS / GE_CT
    src = open_volume(folder / "image")
    try:
        geometry = src.geometry
        for_uid = getattr(src, "frame_of_reference_uid", None)
    finally:
        close_volume(src)
    structures, notes = {}, []
    for name in names:
        mask = seg_on_series(folder / "seg" / "liver_seg.dcm", geometry, name, for_uid)
        if mask.any():
            structures[name] = mask
        else:
            notes.append(f"{name} is empty on the series: skipped")
    notes.append(f"SEG frames placed by ImagePositionPatient (tolerance {POSITION_TOLERANCE_MM} mm)")
    return ReferenceCase(
        name=GE_CT, series=folder / "image", structures=structures,
        source_description=("QIICR/dcmqi data/segmentations/ct-3slice (GE LightSpeed Ultra, 3 slices) and "
                            "liver_seg.dcm, made by dcmqi from label_nrrd/liver_seg.nrrd"),
        truth=("DICOM SEG (dcmqi test data): MANIFEST calls it a real liver delineation on these slices; "
               "whether drawn by hand is not stated"),
        notes=notes)


_LOADERS = {SIEMENS_CT: _siemens_case, GE_CT: _ge_case}


def load_cases(structures: dict[str, list[str]] | None = None) -> list[ReferenceCase]:
    """The reference cases (``structures``: case folder → structure names; default
    :data:`DEFAULT_STRUCTURES`; only the cases named are loaded). Structures absent from a case's
    slices are skipped (said in its notes); unknown names raise KeyError. Raises FileNotFoundError
    with :func:`corpus_missing_reason` when the corpus is absent."""
    reason = corpus_missing_reason()
    if reason:
        raise FileNotFoundError(reason)
    wanted = DEFAULT_STRUCTURES if structures is None else structures
    unknown = [c for c in wanted if c not in _LOADERS]
    if unknown:
        raise KeyError(f"no reference loader for {', '.join(unknown)}; cases: {', '.join(_LOADERS)}")
    return [_LOADERS[case](list(names)) for case, names in wanted.items()]


__all__ = ["CORPUS", "DEFAULT_STRUCTURES", "GE_CT", "SIEMENS_CT", "ReferenceAlignmentError", "ReferenceCase",
           "corpus_missing_reason", "describe_correspondence", "index_correspondence", "load_cases",
           "lps_to_nifti_index", "nifti_labels_on_series", "seg_on_series", "slice_lps"]
