"""Reading a DICOM series (a folder, a .zip or a list of files) as a lazily read volume.

:func:`scan_series` lists the image series of an input (headers only); :func:`read_series` picks
one and returns a :class:`DicomSeries`, a :class:`~medclipsam.volume.VolumeSource` that reads
its slices from disk on demand (only the current multi-frame file's decoded frames are cached).

What the reader does with the things real DICOM folders hold:

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
* the same SOP instance twice (a file copied twice) is read once, with a note.
* **localizers** (ImageType LOCALIZER) next to other images of the series are left out, with a
  note; a series made only of a localizer is read as one slice.
* **slice order**: along the slice normal (cross product of the ImageOrientationPatient row and
  column directions), by ImagePositionPatient · normal. Refused with an error: mixed orientations
  (IOP differing by more than 1e-3), several images at one position (echoes, time points, two
  exports of the same slices), differing Rows/Columns/PixelSpacing/colour, a multi-slice series
  with a file lacking ImagePositionPatient or ImageOrientationPatient.
* **irregular stacks** (non-uniform spacing, missing slices, gantry tilt; found by
  :func:`~medclipsam.volume.geometry.geometry_from_positions`) are read, with a note:
  slice-by-slice processing and DICOM SEG output work, NIfTI/NRRD output refuses.
* **single 2D images** (DX, ultrasound, a lone localizer): a one-slice volume. Without
  ImagePositionPatient/ImageOrientationPatient it has no patient geometry
  (``geometry.has_patient_geometry`` False; pixel spacing from PixelSpacing, ImagerPixelSpacing
  or 1 mm); with them, the slice spacing is SliceThickness (or 1 mm).
* **enhanced multi-frame** CT/MR: each frame is a slice; position, orientation, pixel spacing,
  rescale and window come from the per-frame functional groups, else the shared ones.
  **Multi-frame files without a position per frame** (cine ultrasound, whose frames are time
  points, or other classic multi-frame objects) are *refused*: reading time points as slices would
  give a volume with a meaningless geometry; the message asks for one frame exported on its own.
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

import shutil
import tempfile
import warnings
import weakref
import zipfile
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any, Sequence

import numpy as np

from ..volume.geometry import Geometry, geometry_from_positions
from .pixels import (
    DEFLATED,
    UNCOMPRESSED,
    DicomInputError,
    check_decoders,
    decode_file,
    expected_pixel_bytes,
    inspect_pixel_element,
    read_dataset,
    to_physical,
    to_rgb8,
)

__all__ = ["SliceRef", "SeriesSummary", "DicomSeries", "DicomInputError", "scan_series", "read_series"]

DICOM_SUFFIXES = {".dcm", ".dicom", ".ima"}
NON_IMAGE_MODALITIES = {"SR", "RTSTRUCT", "SEG", "PR", "KO", "RTPLAN", "RTDOSE", "RTRECORD", "RTIMAGE_PLAN",
                        "REG", "FID", "RWV", "DOC", "PLAN", "AU", "ECG", "HD", "RESP"}
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
ORIENTATION_TOLERANCE = 1e-3       # largest IOP component difference within one series
SAME_POSITION_MM = 1e-3            # slices closer than this along the normal share a position
_DICOM_GROUPS = {0x0002, 0x0008}


@dataclass(frozen=True)
class SliceRef:
    """Where slice ``k`` of a series comes from."""

    path: Path            # the file
    frame: int | None     # 0-based frame in a multi-frame file; None for single-frame files
    sop_instance_uid: str # borrowed from file meta MediaStorageSOPInstanceUID when the dataset's is blank
    sop_class_uid: str


@dataclass(frozen=True)
class SeriesSummary:
    """One image series of an input, as :func:`scan_series` lists it.

    ``num_images`` counts image frames (a single-frame file is 1, a multi-frame file its
    NumberOfFrames), localizers included.
    """

    series_uid: str
    modality: str
    description: str
    num_images: int
    study_uid: str
    series_number: int | None


# --------------------------------------------------------------------------------------------- headers

@dataclass
class _Frame:
    """What one slice needs from its header (a single-frame file, or one frame of a multi-frame one)."""

    ipp: tuple[float, float, float] | None
    iop: tuple[float, ...] | None
    pixel_spacing: tuple[float, float] | None
    thickness: float | None
    slope: float
    intercept: float
    window: tuple[float, float] | None


@dataclass
class _Header:
    """The fields of one image file the reader uses (the dataset itself is dropped)."""

    path: Path
    display: str
    sop_instance_uid: str
    sop_class_uid: str
    blank: tuple[str, ...]            # UIDs that are blank in the data set
    series_uid: str
    study_uid: str
    for_uid: str | None
    modality: str
    series_description: str
    series_number: int | None
    instance_number: int | None
    localizer: bool
    transfer_syntax: str
    pixel_problem: str | None
    rows: int
    columns: int
    samples: int
    photometric: str
    bits_stored: int
    num_frames: int
    multiframe: bool                  # frames are addressed by index (enhanced or NumberOfFrames > 1)
    per_frame_positions: bool         # every frame has its own PlanePositionSequence
    imager_pixel_spacing: tuple[float, float] | None
    frames: list[_Frame] = field(default_factory=list)


@dataclass
class _Other:
    """A DICOM object that is not an image."""

    display: str
    kind: str            # modality or what it is
    series_uid: str


@dataclass
class _Inputs:
    files: list[Path]
    display: dict[Path, str]
    label: str
    tempdirs: list[Path]


def _cleanup(dirs: Sequence[Path]) -> None:
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


def _collect(inputs: str | Path | Sequence[str | Path]) -> _Inputs:
    """The files of a folder (recursive), a .zip (extracted to a private temporary folder) or a list."""
    items = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    if not items:
        raise DicomInputError("no DICOM input given: pass a folder, a .zip file or a list of files")
    files: list[Path] = []
    display: dict[Path, str] = {}
    tempdirs: list[Path] = []
    try:
        for item in items:
            p = Path(item)
            if p.is_dir():
                found = sorted(f for f in p.rglob("*") if f.is_file())
                if not found and len(items) == 1:
                    raise DicomInputError(f"the folder {p} is empty: point to the folder holding the DICOM files")
                files += found
            elif p.is_file() and p.suffix.lower() == ".zip":
                tmp = Path(tempfile.mkdtemp(prefix="medclipsam-dicom-"))
                tempdirs.append(tmp)
                for f, member in _extract_zip(p, tmp):
                    files.append(f)
                    display[f] = f"{member} (in {p})"
            elif p.is_file():
                files.append(p)
            elif not p.exists():
                raise DicomInputError(f"DICOM input not found: {p}")
            else:
                raise DicomInputError(f"DICOM input {p} is neither a file nor a folder")
    except BaseException:
        _cleanup(tempdirs)
        raise
    if len(items) == 1:
        p = Path(items[0])
        label = f"folder {p}" if p.is_dir() else f"zip file {p}" if tempdirs else f"file {p}"
    else:
        label = f"the {len(items)} inputs given"
    return _Inputs(files, display, label, tempdirs)


def _extract_zip(zip_path: Path, dest: Path) -> list[tuple[Path, str]]:
    """Extract the members of ``zip_path`` under ``dest`` (names sanitised: no absolute paths, no '..')."""
    out: list[tuple[Path, str]] = []
    try:
        with zipfile.ZipFile(zip_path) as zf:
            for info in zf.infolist():
                if info.is_dir():
                    continue
                parts = [q for q in PurePosixPath(info.filename.replace("\\", "/")).parts
                         if q not in ("", ".", "..", "/") and not q.endswith(":")]
                if not parts:
                    continue
                target = dest.joinpath(*parts)
                n = 1
                while target.exists():
                    target = target.with_name(f"{target.stem}_{n}{target.suffix}")
                    n += 1
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                out.append((target, info.filename))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, RuntimeError, ValueError) as e:
        raise DicomInputError(f"cannot extract the zip file {zip_path}: {e}. Check that the file is a complete, "
                              "unencrypted .zip archive (re-create or re-download it)") from None
    if not out:
        raise DicomInputError(f"the zip file {zip_path} holds no files")
    return out


def _sniff(path: Path) -> str | None:
    """Why ``path`` looks like DICOM ('marker', 'suffix', 'dataset'), or None when it does not."""
    if path.name.startswith("._"):      # macOS AppleDouble resource forks
        return None
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        head = b""
    if len(head) == 132 and head[128:132] == b"DICM":
        return "marker"
    if path.suffix.lower() in DICOM_SUFFIXES:
        return "suffix"
    if len(head) >= 8:
        group_le = int.from_bytes(head[0:2], "little")
        group_be = int.from_bytes(head[0:2], "big")
        vr = head[4:6]
        explicit = len(vr) == 2 and 65 <= vr[0] <= 90 and 65 <= vr[1] <= 90
        if group_le in _DICOM_GROUPS and (explicit or int.from_bytes(head[4:8], "little") < (1 << 16)):
            return "dataset"
        if group_be in _DICOM_GROUPS and explicit:
            return "dataset"
    return None


def _str(ds, keyword: str) -> str:
    try:
        v = ds.get(keyword, "")
    except Exception:
        return ""
    if v is None:
        return ""
    if not isinstance(v, (str, bytes)) and hasattr(v, "__iter__"):
        v = "\\".join(str(x) for x in v)
    return str(v).strip().strip("\x00").strip()


def _int(ds, keyword: str) -> int | None:
    try:
        v = ds.get(keyword, None)
        return None if v is None or v == "" else int(v)
    except Exception:
        return None


def _numbers(value: Any, n: int, what: str, display: str) -> tuple[float, ...] | None:
    """``value`` as ``n`` finite floats, None when absent/empty; an error when present but unusable."""
    if value is None or (isinstance(value, (str, bytes)) and not value.strip()):
        return None
    try:
        seq = [value] if isinstance(value, (str, bytes, int, float)) else list(value)
        if not seq:
            return None
        vals = tuple(float(v) for v in seq)
    except (TypeError, ValueError):
        vals = ()
    if len(vals) != n or not all(np.isfinite(vals)):
        raise DicomInputError(f"{display}: {what} should hold {n} numbers but is {value!r}; the header is damaged — "
                              "re-export the file or remove it from the input")
    return vals


def _element(ds, keyword: str, display: str) -> Any:
    try:
        return ds.get(keyword, None)
    except Exception as e:
        raise DicomInputError(f"{display}: cannot read {keyword}: {e}; the header is damaged — re-export the file "
                              "or remove it from the input") from None


def _first(value: Any) -> Any:
    if value is None or isinstance(value, (str, bytes, int, float)):
        return value
    try:
        return list(value)[0] if len(value) else None
    except TypeError:
        return value


def _window(center: Any, width: Any) -> tuple[float, float] | None:
    try:
        c, w = float(_first(center)), float(_first(width))
    except (TypeError, ValueError):
        return None
    if not (np.isfinite(c) and np.isfinite(w)) or w <= 0:
        return None
    return (c - w / 2.0, c + w / 2.0)


def _group_value(item, shared, sequence: str, keyword: str) -> Any:
    """``keyword`` from the functional group ``sequence`` of a per-frame item, else the shared one."""
    for src in (item, shared):
        if src is None:
            continue
        try:
            seq = src.get(sequence, None)
            if seq and keyword in seq[0]:
                v = seq[0].get(keyword, None)
                if v is not None and v != "":
                    return v
        except Exception:
            continue
    return None


def _read_header(path: Path, display: str, why: str) -> _Header | _Other | str:
    """The header of one file; ``'DICOMDIR'`` for a media directory. Raises for damaged files."""
    with warnings.catch_warnings():   # pydicom warns about odd values while converting them lazily
        warnings.simplefilter("ignore")
        return _read_header_fields(path, display, why)


def _read_header_fields(path: Path, display: str, why: str) -> _Header | _Other | str:
    import pydicom

    def corrupt(reason: str) -> DicomInputError:
        looks = {"marker": "it has the DICOM 'DICM' marker", "suffix": f"its name ends in {path.suffix}",
                 "dataset": "it starts like a DICOM data set"}[why]
        return DicomInputError(
            f"{display} is not a readable DICOM file ({reason}), although {looks}. Skipping it could silently drop "
            "an image, so the input is refused: replace the file with an intact copy (re-export or re-transfer it) "
            "or remove it from the input")

    try:
        size = path.stat().st_size
        if size == 0:
            raise corrupt("the file is empty")
        with open(path, "rb") as fp:
            ds = pydicom.dcmread(fp, stop_before_pixels=True, force=True)
            meta = getattr(ds, "file_meta", None)
            ts = str(meta.get("TransferSyntaxUID", "") if meta is not None else "").strip()
            if not ts:   # no file meta: the encoding pydicom found
                ts = ("1.2.840.10008.1.2" if getattr(ds, "is_implicit_VR", True) is not False else
                      "1.2.840.10008.1.2.1" if getattr(ds, "is_little_endian", True) is not False else
                      "1.2.840.10008.1.2.2")
            rows, columns = _int(ds, "Rows"), _int(ds, "Columns")
            samples = _int(ds, "SamplesPerPixel") or 1
            bits = _int(ds, "BitsAllocated") or 0
            frames = _int(ds, "NumberOfFrames") or 1
            photometric = _str(ds, "PhotometricInterpretation").upper() or "MONOCHROME2"
            expected = (expected_pixel_bytes(rows, columns, samples, bits, frames, photometric)
                        if rows and columns and bits and ts in UNCOMPRESSED else None)
            if ts == DEFLATED:
                has_pixels, problem = _deflated_pixels(path, expected)
            else:
                has_pixels, problem = inspect_pixel_element(fp, size, expected)
            ds_keys = set(ds.keys())
    except DicomInputError:
        raise
    except Exception as e:   # pydicom raises many kinds for damaged headers
        raise corrupt(f"{type(e).__name__}: {e}") from None

    meta = ds.file_meta if hasattr(ds, "file_meta") else None
    meta_class = _str(meta, "MediaStorageSOPClassUID") if meta is not None else ""
    meta_instance = _str(meta, "MediaStorageSOPInstanceUID") if meta is not None else ""
    if meta_class == DICOMDIR_SOP_CLASS or 0x00041220 in ds_keys:     # DirectoryRecordSequence
        return "DICOMDIR"
    modality = _str(ds, "Modality").upper()
    sop_class = _str(ds, "SOPClassUID")
    if not (sop_class or meta_class or modality or has_pixels or rows):
        raise corrupt("no SOP Class, Modality or pixel data could be found: the header is damaged")
    series_uid = _str(ds, "SeriesInstanceUID")
    if modality in NON_IMAGE_MODALITIES:
        return _Other(display, modality, series_uid)
    if not has_pixels:
        class_name = _sop_class_name(sop_class or meta_class)
        if rows and columns and bits and samples:
            raise DicomInputError(
                f"{display} has an image header (Rows {rows}, Columns {columns}) but no pixel data: the file is "
                "truncated or incomplete. Re-export or re-transfer it (or remove it from the input)")
        if "Image Storage" in class_name:
            raise DicomInputError(
                f"{display} is damaged or incomplete: it is a {class_name} object but no image (pixel data) could be "
                "read from it — its header is damaged or the file is truncated. Replace it with an intact copy "
                "(re-export or re-transfer it) or remove it from the input")
        return _Other(display, modality or class_name or "unknown", series_uid)
    if not rows or not columns or rows < 1 or columns < 1:
        raise corrupt(f"it has pixel data but its Rows/Columns are missing or invalid ({rows}, {columns})")

    blank = tuple(name for name, v in (("SOPInstanceUID", _str(ds, "SOPInstanceUID")),
                                       ("SOPClassUID", sop_class),
                                       ("StudyInstanceUID", _str(ds, "StudyInstanceUID")),
                                       ("SeriesInstanceUID", series_uid)) if not v)
    image_type = tuple(x.strip().upper() for x in _str(ds, "ImageType").split("\\"))
    shared_seq = _element(ds, "SharedFunctionalGroupsSequence", display)
    per_frame_seq = _element(ds, "PerFrameFunctionalGroupsSequence", display)
    enhanced = bool(shared_seq) or bool(per_frame_seq)
    shared = shared_seq[0] if shared_seq else None
    top_slope = _first(_element(ds, "RescaleSlope", display))
    top_intercept = _first(_element(ds, "RescaleIntercept", display))
    top_window = _window(_element(ds, "WindowCenter", display), _element(ds, "WindowWidth", display))

    def rescale(slope: Any, intercept: Any) -> tuple[float, float]:
        s = _numbers(slope, 1, "RescaleSlope", display) if slope is not None else None
        i = _numbers(intercept, 1, "RescaleIntercept", display) if intercept is not None else None
        return (s[0] if s and s[0] != 0 else 1.0), (i[0] if i else 0.0)

    out_frames: list[_Frame] = []
    per_frame_positions = False
    if enhanced:
        items = list(per_frame_seq) if per_frame_seq else []
        per_frame_positions = len(items) >= frames and all(
            _group_value(items[f], None, "PlanePositionSequence", "ImagePositionPatient") is not None
            for f in range(frames))
        for f in range(frames):
            item = items[f] if f < len(items) else None
            slope, intercept = rescale(
                _group_value(item, shared, "PixelValueTransformationSequence", "RescaleSlope") or top_slope,
                _group_value(item, shared, "PixelValueTransformationSequence", "RescaleIntercept") or top_intercept)
            win = _window(_group_value(item, shared, "FrameVOILUTSequence", "WindowCenter"),
                          _group_value(item, shared, "FrameVOILUTSequence", "WindowWidth")) or top_window
            thick = _numbers(_first(_group_value(item, shared, "PixelMeasuresSequence", "SliceThickness")), 1,
                             "SliceThickness", display)
            out_frames.append(_Frame(
                ipp=_numbers(_group_value(item, shared, "PlanePositionSequence", "ImagePositionPatient"), 3,
                             "ImagePositionPatient", display),
                iop=_numbers(_group_value(item, shared, "PlaneOrientationSequence", "ImageOrientationPatient"), 6,
                             "ImageOrientationPatient", display),
                pixel_spacing=_numbers(_group_value(item, shared, "PixelMeasuresSequence", "PixelSpacing"), 2,
                                       "PixelSpacing", display),
                thickness=thick[0] if thick else None, slope=slope, intercept=intercept, window=win))
    else:
        slope, intercept = rescale(top_slope, top_intercept)
        thick = _numbers(_first(_element(ds, "SliceThickness", display)), 1, "SliceThickness", display)
        frame = _Frame(
            ipp=_numbers(_element(ds, "ImagePositionPatient", display), 3, "ImagePositionPatient", display),
            iop=_numbers(_element(ds, "ImageOrientationPatient", display), 6, "ImageOrientationPatient", display),
            pixel_spacing=_numbers(_element(ds, "PixelSpacing", display), 2, "PixelSpacing", display),
            thickness=thick[0] if thick else None, slope=slope, intercept=intercept, window=top_window)
        out_frames = [frame] * frames if frames > 1 else [frame]
    imager = _numbers(_element(ds, "ImagerPixelSpacing", display), 2, "ImagerPixelSpacing", display)
    return _Header(
        path=path, display=display,
        sop_instance_uid=_str(ds, "SOPInstanceUID") or meta_instance,
        sop_class_uid=sop_class or meta_class,
        blank=blank, series_uid=series_uid, study_uid=_str(ds, "StudyInstanceUID"),
        for_uid=_str(ds, "FrameOfReferenceUID") or None,
        modality=modality or "OT", series_description=_str(ds, "SeriesDescription"),
        series_number=_int(ds, "SeriesNumber"), instance_number=_int(ds, "InstanceNumber"),
        localizer="LOCALIZER" in image_type, transfer_syntax=ts,
        pixel_problem=problem, rows=int(rows), columns=int(columns), samples=samples, photometric=photometric,
        bits_stored=_int(ds, "BitsStored") or bits, num_frames=frames,
        multiframe=enhanced or frames > 1, per_frame_positions=per_frame_positions,
        imager_pixel_spacing=imager, frames=out_frames)


def _deflated_pixels(path: Path, expected: int | None) -> tuple[bool, str | None]:
    """Deflated files are inflated in memory by pydicom: check their pixel data length there."""
    ds = read_dataset(path)
    if "PixelData" not in ds:
        return False, None
    n = len(ds.PixelData or b"")
    if expected is not None and n < expected:
        return True, f"its pixel data holds {n} bytes but its header needs {expected} bytes"
    return True, None


def _sop_class_name(uid: str) -> str:
    if not uid:
        return ""
    from pydicom.uid import UID

    name = UID(uid).name
    return name if name != uid else ""


# --------------------------------------------------------------------------------------------- scanning

@dataclass
class _Scan:
    inputs: _Inputs
    groups: dict[str, list[_Header]]
    others: list[_Other]
    non_dicom: list[str]     # file names

    def notes(self) -> list[str]:
        notes = []
        if self.non_dicom:
            shown = ", ".join(self.non_dicom[:3]) + (", ..." if len(self.non_dicom) > 3 else "")
            notes.append(f"ignored {len(self.non_dicom)} file(s) that are not DICOM images ({shown})")
        if self.others:
            counts = Counter(o.kind for o in self.others)
            what = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
            notes.append(f"skipped {len(self.others)} non-image DICOM object(s): {what} (structure sets, "
                         "segmentations, reports, presentation states, plans and dose grids are not images "
                         "to segment)")
        return notes

    def summaries(self) -> list[SeriesSummary]:
        out = []
        for uid, hdrs in self.groups.items():
            first = hdrs[0]
            out.append(SeriesSummary(
                series_uid=uid, modality=first.modality,
                description=next((h.series_description for h in hdrs if h.series_description), ""),
                num_images=sum(h.num_frames for h in hdrs), study_uid=first.study_uid,
                series_number=first.series_number))
        out.sort(key=lambda s: (s.study_uid, s.series_number if s.series_number is not None else 1 << 40,
                                s.series_uid))
        return out


def _scan(inputs: _Inputs) -> _Scan:
    groups: dict[str, list[_Header]] = {}
    others: list[_Other] = []
    non_dicom: list[str] = []
    for path in inputs.files:
        display = inputs.display.get(path, str(path))
        why = _sniff(path)
        if why is None:
            non_dicom.append(path.name)
            continue
        h = _read_header(path, display, why)
        if isinstance(h, str):
            non_dicom.append(path.name)
        elif isinstance(h, _Other):
            others.append(h)
        else:
            groups.setdefault(h.series_uid, []).append(h)
    scan = _Scan(inputs, groups, others, non_dicom)
    if not groups:
        if not inputs.files:
            raise DicomInputError(f"no files found in {inputs.label}: point to the folder, .zip or files holding "
                                  "the DICOM series")
        why = "; ".join(scan.notes()) or "no files"
        raise DicomInputError(f"no DICOM images found in {inputs.label} ({why}). Point to the folder, .zip or "
                              "files holding the image series (CT, MR, ...)")
    return scan


def _series_label(uid: str) -> str:
    return uid if uid else '"" (blank SeriesInstanceUID)'


def _listing(summaries: list[SeriesSummary]) -> str:
    lines = []
    for s in summaries:
        desc = f"'{s.description}'" if s.description else "(no description)"
        number = f"#{s.series_number} " if s.series_number is not None else ""
        lines.append(f"  {_series_label(s.series_uid)}  {number}{s.modality} {desc}, {s.num_images} image(s)")
    return "\n".join(lines)


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


def read_series(inputs: str | Path | Sequence[str | Path], series_uid: str | None = None) -> DicomSeries:
    """Read one image series from a folder (recursive), a .zip or a list of files.

    ``series_uid`` picks a series when the input holds several (``""`` picks files with a blank
    SeriesInstanceUID). See the module docstring for what is skipped, noted or refused.
    """
    inp = _collect(inputs)
    try:
        scan = _scan(inp)
        notes = scan.notes()
        summaries = scan.summaries()
        if series_uid is None:
            if len(scan.groups) > 1:
                raise DicomInputError(
                    f"{inp.label} holds {len(scan.groups)} image series; choose one with --series UID:\n"
                    + _listing(summaries))
            uid = next(iter(scan.groups))
        else:
            uid = str(series_uid).strip()
            if uid not in scan.groups:
                other = next((o for o in scan.others if o.series_uid == uid), None) if uid else None
                if other is not None:
                    raise DicomInputError(f"series {uid} in {inp.label} is a {other.kind} object, not images. "
                                          "Choose an image series with --series UID:\n" + _listing(summaries))
                raise DicomInputError(f"series {_series_label(uid)} is not in {inp.label}; its image series are:\n"
                                      + _listing(summaries) + "\nPass one of these UIDs with --series UID")
            if len(scan.groups) > 1:
                notes.append(f"read series {_series_label(uid)}; {len(scan.groups) - 1} other image series in "
                             f"{inp.label} ignored")
        series = _build(uid, scan.groups[uid], notes, inp.tempdirs)
    except BaseException:
        _cleanup(inp.tempdirs)
        raise
    return series


def _build(uid: str, headers: list[_Header], notes: list[str], tempdirs: list[Path]) -> DicomSeries:
    # the same instance twice (copies of one file)
    seen: dict[str, _Header] = {}
    unique: list[_Header] = []
    for h in headers:
        if h.sop_instance_uid and h.sop_instance_uid in seen:
            continue
        if h.sop_instance_uid:
            seen[h.sop_instance_uid] = h
        unique.append(h)
    if len(unique) < len(headers):
        notes.append(f"read {len(headers) - len(unique)} file(s) holding an already seen SOPInstanceUID "
                     "(copies of one image) only once")
    headers = unique

    # truncated files: found from the headers, before anything is decoded
    for h in headers:
        if h.pixel_problem:
            raise DicomInputError(f"{h.display} is truncated or incomplete: {h.pixel_problem}. Re-export or "
                                  "re-transfer the file (or remove it from the input)")

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


def _is_rgb(h: _Header) -> bool:
    return h.samples == 3 or h.photometric == "PALETTE COLOR"


def _pixel_spacing(s: _Slice, notes: list[str]) -> tuple[float, float]:
    ps = s.info.pixel_spacing or s.header.imager_pixel_spacing
    if ps is None or min(ps) <= 0:
        notes.append("no PixelSpacing (or ImagerPixelSpacing) in the header: 1 mm pixels assumed")
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
            "slices exported twice); pass the files of one echo / time point / export only")
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
