"""Reading a DICOM series (a folder, a .zip or a list of files) as a lazily read volume.

:func:`scan_series` lists the image series of an input (headers only); :func:`read_series` picks
one and returns a :class:`DicomSeries`, a :class:`~medclipsam.volume.VolumeSource` that reads
its slices from disk on demand (only the current multi-frame file's decoded frames are cached).

Finding the files and reading their headers is :mod:`.scan`; this module orders the slices, builds
the geometry and reads pixels. What the reader does with the things real DICOM folders hold:

* **non-DICOM files** (DICOMDIR, NIfTI, JSON, README, AppleDouble ``._*`` files) are skipped and
  counted in a note. A file that *looks* like DICOM (``DICM`` marker, a ``.dcm``/``.dicom``/``.ima``
  name, or a bare data set starting with group 0002/0008) but cannot be parsed is an error naming
  it: skipping it would silently drop a slice.
* **non-image objects** (SR, RTSTRUCT, SEG, presentation states, KOs, RT plans and dose, anything
  without PixelData) are skipped with a note that counts them by modality.
* **several image series** and no ``series_uid``: an error that lists them (UID, modality,
  description, image count) and asks for ``--series UID``. Files with a blank SeriesInstanceUID
  form one series keyed ``""`` (accepted, with a note); blank SOPInstanceUID/SOPClassUID are
  borrowed from the file meta (MediaStorageSOP*UID).
* the same SOP instance twice (a file copied twice, or the same image in another transfer
  syntax) is read once, with a note; files that share a SOPInstanceUID but hold *different* images
  (pixel values, pixel description or rescale differ) are refused, naming them.
* **localizers** (ImageType LOCALIZER) next to other images of the series are left out, with a
  note; a series made only of a localizer is read as one slice.
* **slice order**: along the slice normal (cross product of the ImageOrientationPatient row and
  column directions), by ImagePositionPatient · normal. Refused with an error: mixed orientations
  (IOP differing by more than 1e-3), several images at one position (echoes, time points, two
  exports of the same slices), differing Rows/Columns/PixelSpacing/colour, a multi-slice series
  with a file lacking ImagePositionPatient or ImageOrientationPatient.
* **irregular stacks** (non-uniform spacing, missing slices, gantry tilt; found by
  :func:`~medclipsam.geometry.geometry_from_positions`) are read, with a note:
  slice-by-slice processing and DICOM SEG output work, NIfTI/NRRD output refuses.
* **single 2D images** (DX, ultrasound, a lone localizer): a one-slice volume. Without
  ImagePositionPatient/ImageOrientationPatient it has no patient geometry
  (``geometry.has_patient_geometry`` False; pixel spacing from PixelSpacing, ImagePlanePixelSpacing
  (RT images), ImagerPixelSpacing or 1 mm); with them, the slice spacing is SliceThickness (or 1 mm).
* **enhanced multi-frame** CT/MR: each frame is a slice; position, orientation, pixel spacing,
  rescale and window come from the per-frame functional groups, else the shared ones. A file
  holding **several stacks at the same positions** (diffusion b-values / directions, magnitude and
  phase, echoes, time points: told apart by StackID, TemporalPositionIndex, the MR diffusion,
  frame-type and echo groups) is refused unless ``stack=N`` picks one; the error and
  ``scan_series`` list the stacks.
  **Multi-frame files without a position per frame** (cine ultrasound, whose frames are time
  points, or other classic multi-frame objects) are *refused*: reading time points as slices would
  give a volume with a meaningless geometry; the message asks for one frame exported on its own.
* **Siemens mosaics** (ImageType MOSAIC: the slices of one acquisition tiled into one image) are
  unpacked into their slices, placed by :mod:`.mosaic` (a note says how); a mosaic lacking what
  that needs is refused with the advice to convert it with dcm2niix.
* **compressed transfer syntaxes** are decoded by pydicom's handlers; before any slice is decoded,
  every transfer syntax of the series is checked to have an available decoder (else an error
  naming it and ``pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg``).
* **truncated files** are found from the headers alone: the declared pixel data length against
  the file size and against Rows×Columns×SamplesPerPixel×BitsAllocated/8×frames (uncompressed),
  the fragment items and end marker (compressed); an image header without pixel data counts too.

Every problem is raised as :class:`DicomInputError` (an :class:`~medclipsam.errors.InputError`)
whose message names the file or series, the problem and the fix.
"""

from __future__ import annotations

import weakref
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from ..geometry import Geometry, geometry_from_positions
from .mosaic import unpack_mosaic
from .pixels import DicomInputError, check_decoders, decode_file, read_dataset, to_physical, to_rgb8
from .scan import (
    SeriesSummary,
    _cleanup,
    _collect,
    _Frame,
    _Header,
    _listing,
    _scan,
    _series_label,
    _str,
    describe_stacks,
    stack_keys,
    stack_lines,
)

__all__ = ["SliceRef", "SeriesSummary", "DicomSeries", "DicomInputError", "scan_series", "read_series"]

ORIENTATION_TOLERANCE = 1e-3       # largest IOP component difference within one series
SAME_POSITION_MM = 1e-3            # slices closer than this along the normal share a position


@dataclass(frozen=True)
class SliceRef:
    """Where slice ``k`` of a series comes from."""

    path: Path            # the file
    frame: int | None     # 0-based frame in a multi-frame file; None for single-frame files
    sop_instance_uid: str # borrowed from file meta MediaStorageSOPInstanceUID when the dataset's is blank
    sop_class_uid: str


def scan_series(inputs: str | Path | Sequence[str | Path]) -> list[SeriesSummary]:
    """The image series in ``inputs`` (a folder, a .zip or a list of files), from the headers only.

    Non-DICOM files and non-image objects are left out; an input without any image series, and a
    damaged file that looks like DICOM, raise :class:`DicomInputError`.
    """
    inp = _collect(inputs)
    try:
        return _scan(inp).summaries()
    finally:
        _cleanup(inp.tempdirs)


# --------------------------------------------------------------------------------------------- the series

@dataclass
class _Slice:
    header: _Header
    frame: int | None
    info: _Frame


class DicomSeries:
    """One DICOM image series read lazily (a :class:`~medclipsam.volume.VolumeSource`).

    ``slices[k]`` names the file (and frame) of slice ``k`` in sorted order; :meth:`read_slice`
    reads and decodes it each time (the decoded frames of the last multi-frame file are kept).
    ``photometric`` is the series' PhotometricInterpretation: MONOCHROME1 slices are returned as
    stored (not inverted), renderers invert them. Call :meth:`close` (or use ``with``) to remove
    the temporary folder of a .zip input.
    """

    def __init__(self, *, geometry: Geometry, modality: str, is_rgb: bool, window_hint: tuple[float, float] | None,
                 notes: list[str], description: str, series_uid: str, study_uid: str,
                 frame_of_reference_uid: str | None, series_number: int | None, photometric: str,
                 slices: list[_Slice], tempdirs: Sequence[Path] = ()) -> None:
        self.geometry = geometry
        self.modality = modality
        self.is_rgb = is_rgb
        self.window_hint = window_hint
        self.notes = notes
        self.description = description
        self.series_uid = series_uid
        self.study_uid = study_uid
        self.frame_of_reference_uid = frame_of_reference_uid
        self.series_number = series_number
        self.photometric = photometric
        self.slices = [SliceRef(s.header.path, s.frame, s.header.sop_instance_uid, s.header.sop_class_uid)
                       for s in slices]
        self._display = [s.header.display for s in slices]
        self._pixel = [(s.info.slope, s.info.intercept, s.header.bits_stored) for s in slices]
        self._mosaic = [s.header.mosaic for s in slices]
        self._cache: tuple[Path, np.ndarray] | None = None
        self._closed = False
        self._filled_note = False
        self._tempdirs = list(tempdirs)
        self._finalizer = weakref.finalize(self, _cleanup, list(tempdirs))

    def __len__(self) -> int:
        return len(self.slices)

    def __repr__(self) -> str:
        return f"DicomSeries({self.description}, {self.geometry.describe()})"

    def read_slice(self, k: int) -> np.ndarray:
        """Slice ``k``: float32 rows×cols in physical units (rescale applied), or uint8 rows×cols×3 (RGB)."""
        n = len(self.slices)
        if not -n <= k < n:
            raise IndexError(f"slice {k} is outside 0..{n - 1}")
        k %= n
        if self._closed:
            raise DicomInputError(f"the DICOM series {self.description} was closed; read it again to use it")
        ref = self.slices[k]
        display = self._display[k]
        if self._cache is not None and self._cache[0] == ref.path:
            frames = self._cache[1]
        else:
            frames = decode_file(ref.path, display)
            mosaic = self._mosaic[k]
            if mosaic is not None:
                try:
                    frames = unpack_mosaic(frames[0], mosaic)
                except ValueError as e:
                    raise DicomInputError(f"{display}: {e}; the file changed since the series was read — read it "
                                          "again") from None
            self._cache = (ref.path, frames) if ref.frame is not None else None
        index = ref.frame or 0
        if index >= frames.shape[0]:
            raise DicomInputError(f"{display} decoded to {frames.shape[0]} frame(s) but frame {index + 1} was "
                                  "expected; the file changed since the series was read — read it again")
        frame = frames[index]
        rows, cols = self.geometry.shape[1], self.geometry.shape[2]
        if frame.shape[:2] != (rows, cols):
            raise DicomInputError(f"{display} decoded to {frame.shape[0]}×{frame.shape[1]} pixels but the series is "
                                  f"{rows}×{cols}; the file is inconsistent — re-export it")
        slope, intercept, bits_stored = self._pixel[k]
        if self.is_rgb:
            return to_rgb8(frame, bits_stored)
        return to_physical(frame, slope, intercept)

    def source_datasets(self) -> list:
        """The distinct source files as pydicom datasets without pixel data, in slice order.

        Blank SOPInstanceUID/SOPClassUID are filled from the file meta (MediaStorageSOP*UID).
        """
        out = []
        filled = 0
        for path, display in dict(zip((r.path for r in self.slices), self._display)).items():
            try:
                ds = read_dataset(path, stop_before_pixels=True)
            except Exception as e:
                raise DicomInputError(f"cannot read DICOM file {display}: {type(e).__name__}: {e}. The file may have "
                                      "been changed or removed since the series was read") from None
            for keyword, meta_keyword in (("SOPInstanceUID", "MediaStorageSOPInstanceUID"),
                                          ("SOPClassUID", "MediaStorageSOPClassUID")):
                if not _str(ds, keyword) and _str(ds.file_meta, meta_keyword):
                    setattr(ds, keyword, _str(ds.file_meta, meta_keyword))
                    filled += 1
            out.append(ds)
        if filled and not self._filled_note:
            self._filled_note = True
            self.notes.append(f"filled {filled} blank SOPInstanceUID/SOPClassUID value(s) of the source datasets "
                              "from their file meta")
        return out

    def close(self) -> None:
        """Drop the cache and remove the temporary folder of a .zip input."""
        self._cache = None
        self._closed = True
        self._finalizer()

    def __enter__(self) -> "DicomSeries":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_series(inputs: str | Path | Sequence[str | Path], series_uid: str | None = None,
                stack: int | None = None) -> DicomSeries:
    """Read one image series from a folder (recursive), a .zip or a list of files.

    ``series_uid`` picks a series when the input holds several (``""`` picks files with a blank
    SeriesInstanceUID). ``stack`` (1-based, as :func:`scan_series` lists them in
    ``SeriesSummary.stacks``) picks one stack of enhanced multi-frame files that hold several at the
    same positions (diffusion directions, magnitude and phase, echoes, time points). See the module
    docstring for what is skipped, noted or refused.
    """
    if stack is not None and (isinstance(stack, bool) or not isinstance(stack, int) or stack < 1):
        raise DicomInputError(f"stack must be a stack number from 1 (as the series listing numbers them), got "
                              f"{stack!r}")
    inp = _collect(inputs)
    try:
        scan = _scan(inp)
        notes = scan.notes()
        summaries = scan.summaries()
        if series_uid is None:
            if len(scan.groups) > 1:
                raise DicomInputError(
                    f"{inp.label} holds {len(scan.groups)} image series; choose one with the series setting "
                    "(its SeriesInstanceUID; --series UID on the command line):\n"
                    + _listing(summaries))
            uid = next(iter(scan.groups))
        else:
            uid = str(series_uid).strip()
            if uid not in scan.groups:
                other = next((o for o in scan.others if o.series_uid == uid), None) if uid else None
                if other is not None:
                    raise DicomInputError(f"series {uid} in {inp.label} is a {other.kind} object, not images. "
                                          "Choose an image series with the series setting (--series UID):\n"
                                          + _listing(summaries))
                raise DicomInputError(f"series {_series_label(uid)} is not in {inp.label}; its image series are:\n"
                                      + _listing(summaries)
                                      + "\nGive one of these UIDs as the series setting (--series UID)")
            if len(scan.groups) > 1:
                notes.append(f"read series {_series_label(uid)}; {len(scan.groups) - 1} other image series in "
                             f"{inp.label} ignored")
        series = _build(uid, scan.groups[uid], notes, inp.tempdirs, stack)
    except BaseException:
        _cleanup(inp.tempdirs)
        raise
    return series


def _build(uid: str, headers: list[_Header], notes: list[str], tempdirs: list[Path],
           stack: int | None = None) -> DicomSeries:
    # truncated files: found from the headers, before anything is decoded
    for h in headers:
        if h.pixel_problem:
            raise DicomInputError(f"{h.display} is truncated or incomplete: {h.pixel_problem}. Re-export or "
                                  "re-transfer the file (or remove it from the input)")

    headers = _drop_copies(headers, notes)

    # blank UIDs
    if not uid:
        notes.append(f"the {len(headers)} file(s) of this series have a blank SeriesInstanceUID (anonymised?); they "
                     "were read as one series — check that they belong together")
    blank = Counter(name for h in headers for name in h.blank if name != "SeriesInstanceUID")
    if blank:
        what = ", ".join(f"{name} ({n} file(s))" for name, n in sorted(blank.items()))
        notes.append(f"blank UIDs in the data sets: {what}; SOP Instance/Class UIDs were taken from the file meta "
                     "(MediaStorageSOPInstanceUID/MediaStorageSOPClassUID)")

    # multi-frame files need a position per frame
    for h in headers:
        if h.num_frames > 1 and not h.per_frame_positions:
            raise DicomInputError(
                f"{h.display} holds {h.num_frames} frames without a position for each frame ({h.modality}); its "
                "frames are time points, not slices (cine loop), so it cannot be read as a volume. Export one "
                "frame as a single-frame DICOM file and use that (or pass a series of single-frame slices)")

    slices = [_Slice(h, (f if h.multiframe else None), info)
              for h in headers for f, info in enumerate(h.frames)]
    mosaics = [h.mosaic for h in headers if h.mosaic is not None]
    if mosaics:
        m = mosaics[0]
        direction = ("the slice direction is the CSA header's SliceNormalVector"
                     if all(x.normal_from_csa for x in mosaics)
                     else "without a CSA header's SliceNormalVector the slices were taken to follow the cross product "
                          "of the row and column directions (as nibabel and dcm2niix do): check head/foot order in "
                          "the viewer")
        notes.append(f"unpacked {len(mosaics)} Siemens mosaic image(s) (ImageType MOSAIC) into their slices: "
                     f"{m.count} tiles of {m.tile_rows}×{m.tile_columns} on a {m.grid}×{m.grid} grid each; "
                     f"{direction}. "
                     "DICOM SEG output cannot reference mosaic tiles: write NIfTI/NRRD")

    slices = _pick_stack(uid, headers, slices, stack, notes)

    localizers = [s for s in slices if s.header.localizer]
    if localizers and len(localizers) < len(slices):
        slices = [s for s in slices if not s.header.localizer]
        notes.append(f"left out {len(localizers)} localizer image(s) (ImageType LOCALIZER: scout views, not slices "
                     "of the volume)")

    first = slices[0].header
    for s in slices[1:]:
        h = s.header
        if (h.rows, h.columns) != (first.rows, first.columns):
            raise DicomInputError(
                f"the slices of series {_series_label(uid)} differ in size: {first.display} is {first.rows}×"
                f"{first.columns} (Rows×Columns) but {h.display} is {h.rows}×{h.columns}. The series mixes "
                "different images; pass only the files of one stack")
        if _is_rgb(h) != _is_rgb(first):
            raise DicomInputError(
                f"series {_series_label(uid)} mixes colour and grey-scale images ({first.display}: "
                f"{first.photometric}, {h.display}: {h.photometric}); pass only the files of one stack")

    rgb = _is_rgb(first)
    geometry, slices = _geometry(uid, slices, notes)
    if not geometry.regular:
        notes.append(f"the slices are not on a regular grid ({geometry.irregular_reason}); slice-by-slice "
                     "segmentation and DICOM SEG output work, NIfTI/NRRD output will refuse")

    # decoders: before any slice is decoded
    by_syntax: dict[str, list[str]] = {}
    for s in slices:
        by_syntax.setdefault(s.header.transfer_syntax, [])
        if s.header.display not in by_syntax[s.header.transfer_syntax][-1:]:
            by_syntax[s.header.transfer_syntax].append(s.header.display)
    check_decoders({ts: (files[0], len(files)) for ts, files in by_syntax.items()})

    modality = first.modality
    description_text = next((s.header.series_description for s in slices if s.header.series_description), "")
    n = len(slices)
    desc = (f"{modality} series {uid if uid else '(blank SeriesInstanceUID)'}"
            + (f" '{description_text}'" if description_text else "")
            + f" ({n} slice{'s' if n != 1 else ''})")
    return DicomSeries(
        geometry=geometry, modality=modality, is_rgb=rgb, window_hint=None if rgb else slices[0].info.window,
        notes=notes, description=desc, series_uid=uid, study_uid=first.study_uid,
        frame_of_reference_uid=next((s.header.for_uid for s in slices if s.header.for_uid), None),
        series_number=first.series_number, photometric=slices[0].header.photometric,
        slices=slices, tempdirs=tempdirs)


def _drop_copies(headers: list[_Header], notes: list[str]) -> list[_Header]:
    """Read files holding the same SOPInstanceUID once when they hold the same image; refuse when
    one UID names different images (pixel data, pixel description or rescale differ)."""
    by_uid: dict[str, list[_Header]] = {}
    for h in headers:
        if h.sop_instance_uid:
            by_uid.setdefault(h.sop_instance_uid, []).append(h)
    dropped: set[int] = set()
    for uid, group in by_uid.items():
        if len(group) < 2:
            continue
        first = group[0]
        for other in group[1:]:
            why = _image_difference(first, other)
            if why:
                raise DicomInputError(
                    f"{len(group)} files share the SOPInstanceUID {uid} but hold different images ({first.display} "
                    f"and {other.display}: {why}). One UID must name one image, so neither can be trusted to be "
                    "the slice a segmentation refers to; keep the right file and remove the others from the "
                    "input, or re-export the series (a UID re-used by an export or anonymisation tool)")
            dropped.add(id(other))
    if dropped:
        notes.append(f"read {len(dropped)} file(s) holding an already seen SOPInstanceUID (copies of one image, same "
                     "pixel data) only once")
    return [h for h in headers if id(h) not in dropped]


def _image_difference(a: _Header, b: _Header) -> str | None:
    """Why two files under one SOPInstanceUID are not the same image, or None when they are."""
    for name, va, vb in (("Rows×Columns", (a.rows, a.columns), (b.rows, b.columns)),
                         ("SamplesPerPixel", a.samples, b.samples),
                         ("PhotometricInterpretation", a.photometric, b.photometric),
                         ("NumberOfFrames", a.num_frames, b.num_frames),
                         ("RescaleSlope/RescaleIntercept", [(f.slope, f.intercept) for f in a.frames],
                          [(f.slope, f.intercept) for f in b.frames])):
        if va != vb:
            return f"{name} {va} vs {vb}"
    if a.path.stat().st_size == b.path.stat().st_size and a.path.read_bytes() == b.path.read_bytes():
        return None
    try:
        pa, pb = decode_file(a.path, a.display), decode_file(b.path, b.display)
    except DicomInputError as e:
        return f"one of them cannot be decoded ({e})"
    if pa.shape != pb.shape or not np.array_equal(pa, pb):
        return "their decoded pixel values differ"
    return None


def _pick_stack(uid: str, headers: list[_Header], slices: list[_Slice], stack: int | None,
                notes: list[str]) -> list[_Slice]:
    """The slices of stack ``stack`` (1-based) of enhanced files holding several; all slices when there
    is one stack, or when stacks lie side by side (no two frames at one position). Overlapping stacks
    without a choice are refused, listing them."""
    keys = stack_keys(headers)
    lines = "\n".join(stack_lines(describe_stacks(headers), "  "))
    if stack is None:
        if len(keys) > 1 and _overlapping(slices):
            files = sorted({s.header.display for s in slices if s.header.multiframe})
            where = (files[0] if len(files) == 1
                     else f"the {len(files)} multi-frame files of series {_series_label(uid)}")
            raise DicomInputError(
                f"{where} holds {len(keys)} stacks of frames at the same positions (several diffusion directions, "
                "magnitude and phase, echoes or time points), and one volume needs one stack. Choose one with "
                f"--stack N (the stack setting):\n{lines}")
        return slices
    if len(keys) < 2:
        if stack == 1:
            return slices
        raise DicomInputError(f"stack {stack} was asked for, but series {_series_label(uid)} holds a single stack of "
                              "images; leave the stack setting out (or give 1)")
    if stack > len(keys):
        raise DicomInputError(f"stack {stack} was asked for, but series {_series_label(uid)} holds {len(keys)} "
                              f"stacks:\n{lines}\nGive a stack number from 1 to {len(keys)}")
    key = keys[stack - 1]
    picked = [s for s in slices if s.info.stack == key]
    what = ", ".join(f"{n} {v}" for n, v in key) or "frames without stack attributes"
    notes.append(f"read stack {stack} of {len(keys)} ({what}: {len(picked)} frame(s)); the other stacks of the "
                 "file were left out")
    return picked


def _overlapping(slices: list[_Slice]) -> bool:
    """True when two slices share a position along the slice normal, or orientations differ, or a
    position is missing (then the stacks cannot be told to lie side by side)."""
    if any(s.info.ipp is None or s.info.iop is None for s in slices):
        return True
    iop0 = np.asarray(slices[0].info.iop, dtype=np.float64)
    if any(float(np.abs(np.asarray(s.info.iop) - iop0).max()) > ORIENTATION_TOLERANCE for s in slices):
        return True
    normal = np.cross(iop0[:3], iop0[3:])
    if np.linalg.norm(normal) < 0.5:
        return True
    keys = np.sort([float(np.dot(s.info.ipp, normal)) for s in slices])
    return bool(np.any(np.diff(keys) < SAME_POSITION_MM))


def _is_rgb(h: _Header) -> bool:
    return h.samples == 3 or h.photometric == "PALETTE COLOR"


def _pixel_spacing(s: _Slice, notes: list[str]) -> tuple[float, float]:
    ps = s.info.pixel_spacing or s.header.imager_pixel_spacing
    if ps is None or min(ps) <= 0:
        notes.append("no PixelSpacing (nor ImagePlanePixelSpacing or ImagerPixelSpacing) in the header: 1 mm pixels "
                     "assumed")
        return (1.0, 1.0)
    return (float(ps[0]), float(ps[1]))


def _geometry(uid: str, slices: list[_Slice], notes: list[str]) -> tuple[Geometry, list[_Slice]]:
    first = slices[0]
    rows, cols = first.header.rows, first.header.columns
    if len(slices) == 1:
        spacing = _pixel_spacing(first, notes)
        if first.info.ipp is None or first.info.iop is None:
            notes.append("the image has no patient geometry (no ImagePositionPatient/ImageOrientationPatient): "
                         "read as a single 2D image")
            return Geometry(shape=(1, rows, cols), spacing=(spacing[1], spacing[0], 1.0),
                            has_patient_geometry=False), slices
        _check_orientation(first)
        g = geometry_from_positions(rows, cols, first.info.iop[:3], first.info.iop[3:], spacing, [first.info.ipp])
        thickness = first.info.thickness if first.info.thickness and first.info.thickness > 0 else 1.0
        return replace(g, spacing=(g.spacing[0], g.spacing[1], float(thickness))), slices

    for s in slices:
        for value, name in ((s.info.ipp, "ImagePositionPatient (0020,0032)"),
                            (s.info.iop, "ImageOrientationPatient (0020,0037)")):
            if value is None:
                where = f"{s.header.display}" + (f" (frame {s.frame + 1})" if s.frame is not None else "")
                raise DicomInputError(
                    f"{where} has no {name}, which a series of {len(slices)} slices needs to put its slices in "
                    "order. Re-export the series with its geometry, or pass that single file on its own")
    iop0 = np.asarray(first.info.iop, dtype=np.float64)
    _check_orientation(first)
    differing = [s for s in slices if float(np.abs(np.asarray(s.info.iop) - iop0).max()) > ORIENTATION_TOLERANCE]
    if differing:
        raise DicomInputError(
            f"series {_series_label(uid)} has mixed orientations: {len(differing)} of {len(slices)} slices (e.g. "
            f"{differing[0].header.display}) have an ImageOrientationPatient different from {first.header.display} "
            f"({_fmt(differing[0].info.iop)} vs {_fmt(first.info.iop)}). It holds several stacks (e.g. axial, "
            "sagittal and coronal views); pass the files of one orientation only")
    spacing = _pixel_spacing(first, notes)
    for s in slices[1:]:
        ps = s.info.pixel_spacing or s.header.imager_pixel_spacing
        if ps is not None and not np.allclose(ps, spacing, rtol=1e-4, atol=1e-6):
            raise DicomInputError(
                f"the slices of series {_series_label(uid)} have different PixelSpacing: {_fmt(spacing)} mm in "
                f"{first.header.display} but {_fmt(ps)} mm in {s.header.display}. Pass only the files of one stack")

    normal = np.cross(iop0[:3], iop0[3:])
    normal /= np.linalg.norm(normal)
    keyed = sorted(((float(np.dot(s.info.ipp, normal)), s.header.instance_number or 0, s.frame or 0, i)
                    for i, s in enumerate(slices)))
    ordered = [slices[i] for *_, i in keyed]
    keys = [k[0] for k in keyed]
    same = [j for j in range(1, len(keys)) if keys[j] - keys[j - 1] < SAME_POSITION_MM]
    if same:
        a, b = ordered[same[0] - 1], ordered[same[0]]
        involved = len({j for j in same} | {j - 1 for j in same})
        raise DicomInputError(
            f"series {_series_label(uid)} has several images at one position: {involved} of {len(slices)} slices share "
            f"a position with another slice (e.g. {_where(a)} and {_where(b)} at {keys[same[0]]:.2f} mm along the "
            "slice normal). It holds more than one image per position (several echoes or time points, or the same "
            "slices exported twice); pass the files of one echo / time point / export only"
            + ("" if not (a.header is b.header and a.header.multiframe) else
               ". Here both are frames of one multi-frame file whose headers do not tell its stacks apart: export "
               "one stack from it, or convert it with dcm2niix, which writes one NIfTI file per stack, and segment "
               "that"))
    try:
        g = geometry_from_positions(rows, cols, iop0[:3], iop0[3:], spacing, [s.info.ipp for s in ordered])
    except (ValueError, ZeroDivisionError, FloatingPointError) as e:
        raise DicomInputError(f"cannot build the geometry of series {_series_label(uid)}: {e}") from None
    return g, ordered


def _check_orientation(s: _Slice) -> None:
    iop = np.asarray(s.info.iop, dtype=np.float64)
    r, c = iop[:3], iop[3:]
    if min(np.linalg.norm(r), np.linalg.norm(c)) < 0.5 or np.linalg.norm(np.cross(r, c)) < 0.5:
        raise DicomInputError(f"{_where(s)} has an invalid ImageOrientationPatient {_fmt(s.info.iop)} (its row and "
                              "column directions must be perpendicular unit vectors); the header is damaged — "
                              "re-export the series")


def _where(s: _Slice) -> str:
    return s.header.display + (f" (frame {s.frame + 1})" if s.frame is not None else "")


def _fmt(values) -> str:
    return "(" + ", ".join(f"{float(v):.4g}" for v in values) + ")"
