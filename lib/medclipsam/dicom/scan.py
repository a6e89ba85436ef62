"""Finding the DICOM images of an input (folder, zip, files) and reading their headers.

The first half of series reading: :func:`scan` collects the files (extracting a zip into a
private temporary folder), sniffs which are DICOM, reads each header once into a small record
(no pixel data), checks for truncated pixel data, and groups the image headers by
SeriesInstanceUID; non-image objects and non-DICOM files are set aside for the notes. What the
records become — a sorted, lazily read volume — is :mod:`.series`; the rules for every case are
listed there.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
import zipfile
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any, Sequence

import numpy as np

from .mosaic import CONVERT_ADVICE as MOSAIC_CONVERT_ADVICE
from .mosaic import MosaicError, MosaicLayout, is_mosaic, mosaic_layout, tile_positions
from .pixels import DEFLATED, UNCOMPRESSED, DicomInputError, expected_pixel_bytes, inspect_pixel_element, read_dataset

DICOM_SUFFIXES = {".dcm", ".dicom", ".ima"}
NON_IMAGE_MODALITIES = {"SR", "RTSTRUCT", "SEG", "PR", "KO", "RTPLAN", "RTDOSE", "RTRECORD", "RTIMAGE_PLAN",
                        "REG", "FID", "RWV", "DOC", "PLAN", "AU", "ECG", "HD", "RESP"}
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
# ImageType values of a localizer: a projection (scout) image of the scan range, not a cross-sectional
# slice ("LOCALIZER" is the standard's value; the others are vendors' names for it)
LOCALIZER_IMAGE_TYPES = {"LOCALIZER", "SCOUT", "SURVIEW", "TOPOGRAM", "SCANOGRAM"}
_DICOM_GROUPS = {0x0002, 0x0008}


@dataclass(frozen=True)
class SeriesSummary:
    """One image series of an input, as :func:`scan_series` lists it.

    ``num_images`` counts image frames (a single-frame file is 1, a multi-frame file its
    NumberOfFrames), localizers included. ``localizer``: every image of the series is a localizer
    (a scout / projection image, see :data:`LOCALIZER_IMAGE_TYPES`), not a slice of a volume.
    ``stacks``: when enhanced multi-frame files hold several stacks (diffusion directions,
    magnitude and phase, echoes, time points), what each stack is, numbered from 1 in this order
    (``read_series(..., stack=N)`` reads one).
    """

    series_uid: str
    modality: str
    description: str
    num_images: int
    study_uid: str
    series_number: int | None
    localizer: bool = False
    stacks: tuple[str, ...] = ()    # several stacks in enhanced multi-frame files: one description each


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
    stack: tuple[tuple[str, str], ...] = ()   # what tells this frame's stack apart (enhanced files), see _stack_key


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
    imager_pixel_spacing: tuple[float, float] | None   # ImagePlanePixelSpacing (RT), else ImagerPixelSpacing
    frames: list[_Frame] = field(default_factory=list)
    image_type: str = ""              # as stored, e.g. ORIGINAL\PRIMARY\LOCALIZER
    mosaic: MosaicLayout | None = None  # a Siemens mosaic: its tiles are the frames (Rows/Columns of a tile)


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


def _nested(item, sequence: str, inner: str, keyword: str) -> Any:
    try:
        seq = item.get(sequence, None) if item is not None else None
        inner_seq = seq[0].get(inner, None) if seq else None
        return inner_seq[0].get(keyword, None) if inner_seq else None
    except Exception:
        return None


def _text(value: Any) -> str:
    if value is None or value == "":
        return ""
    if not isinstance(value, (str, bytes)) and hasattr(value, "__iter__"):
        return "(" + ", ".join(f"{float(v):.4g}" for v in value) + ")"
    try:
        return f"{float(value):g}"
    except (TypeError, ValueError):
        return str(value).strip()


def _stack_key(item, shared) -> tuple[tuple[str, str], ...]:
    """What tells the stack of one enhanced frame apart from others in the same file: StackID,
    temporal position, diffusion b-value and gradient direction, magnitude/phase, echo time. Empty
    fields are left out; the in-stack position is not part of it (it tells slices apart)."""
    def group(sequence: str, keyword: str) -> str:
        return _text(_group_value(item, shared, sequence, keyword))

    gradient = next((v for v in (_nested(src, "MRDiffusionSequence", "DiffusionGradientDirectionSequence",
                                         "DiffusionGradientOrientation") for src in (item, shared))
                     if v is not None), None)
    fields = (("stack", group("FrameContentSequence", "StackID")),
              ("time point", group("FrameContentSequence", "TemporalPositionIndex")),
              ("b", group("MRDiffusionSequence", "DiffusionBValue")),
              ("gradient", _text(gradient)),
              ("component", group("MRImageFrameTypeSequence", "ComplexImageComponent")),
              ("echo (ms)", group("MREchoSequence", "EffectiveEchoTime")))
    return tuple((name, value) for name, value in fields if value)


def stack_keys(headers: Sequence["_Header"]) -> list[tuple[tuple[str, str], ...]]:
    """The distinct stack keys of the frames of ``headers``, in order of first appearance; ``[]``
    unless every file is an enhanced multi-frame one (classic files next to an enhanced one are two
    exports of an acquisition, not stacks)."""
    if not headers or not all(h.multiframe and h.mosaic is None and h.per_frame_positions for h in headers):
        return []
    return list(dict.fromkeys(f.stack for h in headers for f in h.frames))


def describe_stacks(headers: Sequence["_Header"]) -> tuple[str, ...]:
    """One description per stack (numbered from 1 in :func:`stack_keys` order) when the frames form
    several stacks, e.g. ``"b 1000, gradient (0, 0, 1): 20 frames"``; ``()`` for one stack."""
    keys = stack_keys(headers)
    if len(keys) < 2:
        return ()
    counts = Counter(f.stack for h in headers for f in h.frames)
    names = [n for n in dict.fromkeys(name for key in keys for name, _ in key)
             if len({dict(key).get(n, "") for key in keys}) > 1]
    out = []
    for key in keys:
        values = dict(key)
        what = ", ".join(f"{n} {values.get(n, '-')}" for n in names)
        out.append(f"{what}: {counts[key]} frame{'s' if counts[key] != 1 else ''}")
    return tuple(out)


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
                thickness=thick[0] if thick else None, slope=slope, intercept=intercept, window=win,
                stack=_stack_key(item, shared)))
    else:
        slope, intercept = rescale(top_slope, top_intercept)
        thick = _numbers(_first(_element(ds, "SliceThickness", display)), 1, "SliceThickness", display)
        frame = _Frame(
            ipp=_numbers(_element(ds, "ImagePositionPatient", display), 3, "ImagePositionPatient", display),
            iop=_numbers(_element(ds, "ImageOrientationPatient", display), 6, "ImageOrientationPatient", display),
            pixel_spacing=_numbers(_element(ds, "PixelSpacing", display), 2, "PixelSpacing", display),
            thickness=thick[0] if thick else None, slope=slope, intercept=intercept, window=top_window)
        out_frames = [frame] * frames if frames > 1 else [frame]
    mosaic = None
    if is_mosaic(image_type) and not enhanced and frames == 1:
        try:
            mosaic = mosaic_layout(ds, int(rows), int(columns), frame.ipp, frame.iop, frame.pixel_spacing,
                                   frame.thickness)
        except MosaicError as e:
            raise DicomInputError(
                f"{display} is a Siemens mosaic (ImageType MOSAIC: several slices tiled into one image) that cannot "
                f"be unpacked into its slices: {e}. Segmenting the tiled picture as one slice would be meaningless; "
                f"{MOSAIC_CONVERT_ADVICE}") from None
        out_frames = [replace(frame, ipp=pos) for pos in tile_positions(mosaic)]
        rows, columns, frames = mosaic.tile_rows, mosaic.tile_columns, mosaic.count
    # without PixelSpacing: an RT image's spacing in its image plane (at the machine's isocentre), else the
    # spacing at a projection detector
    imager = (_numbers(_element(ds, "ImagePlanePixelSpacing", display), 2, "ImagePlanePixelSpacing", display)
              or _numbers(_element(ds, "ImagerPixelSpacing", display), 2, "ImagerPixelSpacing", display))
    return _Header(
        path=path, display=display,
        sop_instance_uid=_str(ds, "SOPInstanceUID") or meta_instance,
        sop_class_uid=sop_class or meta_class,
        blank=blank, series_uid=series_uid, study_uid=_str(ds, "StudyInstanceUID"),
        for_uid=_str(ds, "FrameOfReferenceUID") or None,
        modality=modality or "OT", series_description=_str(ds, "SeriesDescription"),
        series_number=_int(ds, "SeriesNumber"), instance_number=_int(ds, "InstanceNumber"),
        localizer=any(v in LOCALIZER_IMAGE_TYPES for v in image_type), transfer_syntax=ts,
        pixel_problem=problem, rows=int(rows), columns=int(columns), samples=samples, photometric=photometric,
        bits_stored=_int(ds, "BitsStored") or bits, num_frames=frames,
        multiframe=enhanced or frames > 1 or mosaic is not None,
        per_frame_positions=per_frame_positions or mosaic is not None,
        imager_pixel_spacing=imager, frames=out_frames, image_type="\\".join(v for v in image_type if v),
        mosaic=mosaic)


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
        if len(self.groups) == 1:
            note = localizer_note(next(iter(self.groups.values())))
            if note:
                notes.append(note)
        return notes

    def summaries(self) -> list[SeriesSummary]:
        out = []
        for uid, hdrs in self.groups.items():
            first = hdrs[0]
            out.append(SeriesSummary(
                series_uid=uid, modality=first.modality,
                description=next((h.series_description for h in hdrs if h.series_description), ""),
                num_images=sum(h.num_frames for h in hdrs), study_uid=first.study_uid,
                series_number=first.series_number, localizer=all(h.localizer for h in hdrs),
                stacks=describe_stacks(hdrs)))
        out.sort(key=lambda s: (s.study_uid, s.series_number if s.series_number is not None else 1 << 40,
                                s.series_uid))
        return out


def localizer_note(headers: Sequence[_Header]) -> str | None:
    """The note for a series made only of localizers (read as they are: one 2D image each), else None.

    Next to slices of the same series, localizers are left out (:mod:`.series`); a series of
    localizers alone is what the user pointed at, so it is read, but it must not pass for a
    one-slice CT: the note says what it is and where the slices usually are.
    """
    if not headers or not all(h.localizer for h in headers):
        return None
    types = sorted({h.image_type for h in headers if h.image_type})
    n = len(headers)
    what = "a localizer" if n == 1 else f"{n} localizers"
    return (f"the input is {what} (ImageType {', '.join(types) or 'LOCALIZER'}): a scout / projection image of "
            "the scan range, not a cross-sectional slice. It is segmented as a 2D projection image, where organs "
            "overlap in depth; the slices of the study are a separate series (usually in a folder next to this "
            "one): pass that series to segment the volume")


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


def stack_lines(stacks: Sequence[str], indent: str) -> list[str]:
    """``stack N: description`` lines for the stacks of one series (none for a single stack)."""
    return [f"{indent}stack {i}: {d}" for i, d in enumerate(stacks, 1)]


def _listing(summaries: list[SeriesSummary]) -> str:
    lines = []
    for s in summaries:
        desc = f"'{s.description}'" if s.description else "(no description)"
        number = f"#{s.series_number} " if s.series_number is not None else ""
        kind = " (localizer: a scout / projection image, not slices)" if s.localizer else ""
        lines.append(f"  {_series_label(s.series_uid)}  {number}{s.modality} {desc}, {s.num_images} image(s)"
                     + kind)
        lines += stack_lines(s.stacks, "    ")
    return "\n".join(lines)
