"""DICOM Segmentation (SEG) out — and back in — on the source images' own slices.

:func:`write_dicom_seg` turns a label volume (``uint8`` slices×rows×cols, 0 = background) into a
BINARY DICOM SEG with one segment per label value, built with highdicom: each segment carries a
label, a description, a recommended display colour (CIELab), SNOMED CT codes from
:func:`medclipsam.dicom.codes.concept_for_prompt`, and an AUTOMATIC algorithm identification
(family: Artificial Intelligence). Every frame references its source image (and source frame, for
an enhanced multi-frame source) in its Derivation Image Sequence, and the SEG lists the source
series in its Referenced Series Sequence, so a PACS or viewer lays it over the right slices.

Decisions (also in the report):

* **Source images without pixel data.** highdicom 0.22 builds a SEG from metadata only, so the
  sources may (and should) be read with ``pydicom.dcmread(f, stop_before_pixels=True)``.
* **Segment numbers.** Segments are numbered 1..N in increasing label value (DICOM requires
  consecutive numbers from 1); a label volume with values 1..N keeps its values on
  :func:`read_dicom_seg`. A :class:`SegmentSpec` whose label has no voxel is left out (a segment
  without frames confuses viewers) with a :class:`DicomSegWarning`.
* **Nothing segmented.** A label volume without any foreground raises
  :class:`EmptySegmentationError` (an :class:`~medclipsam.errors.InputError`): "nothing was
  segmented; no SEG written" — an all-empty SEG would carry no information and some readers reject
  SEGs whose segments have no frames.
* **Blank UIDs.** Sources whose SOP Instance/Class UID or Study/Series Instance UID are empty
  (anonymised data) are copied (the caller's data sets are never modified): the SOP UIDs come from
  the file meta information (MediaStorageSOPInstanceUID / MediaStorageSOPClassUID); a blank
  Study/Series UID is borrowed from another source of the list if one has it, else generated
  deterministically with :func:`pydicom.uid.generate_uid` — the Study UID from the
  FrameOfReferenceUID (or, without one, the sources' SOP Instance UIDs), the Series UID from the
  sources' SOP Instance UIDs — so the same sources always get the same UIDs. Once the SEG is
  written, each such repair is reported with :func:`warnings.warn` and a :class:`DicomSegWarning`
  (the function returns only the path), because the SEG then references UIDs that a PACS holding
  the original files does not know. Dropped empty segments are reported the same way.
* **Legacy headers.** Values legal in practice that would stop highdicom or make the SEG fail
  ``dciodvfy`` (unparseable dates/times, no PixelSpacing but ImagerPixelSpacing, lossy flag without
  method, negative SpacingBetweenSlices, empty Type 1C/3 values, ...) are repaired or left out on
  the source copies, in the same place as the UID repairs (:mod:`medclipsam.dicom.legacy` lists
  them), and reported as one :class:`DicomSegWarning` once the SEG is written.
  :func:`check_seg_sources` runs the same preparation before any slice is processed and raises
  :class:`SegNotWritableError` (advising NIfTI) for what no repair can give: a SOP class highdicom
  does not know, several slices without a FrameOfReferenceUID, a positioned slice without
  PixelSpacing/SliceThickness that nothing can stand in for.
* **Atomic.** The data set is built in memory and written through :func:`medclipsam.io._atomic`;
  any failure leaves no file (nor temporary file) behind and raises a
  :class:`~medclipsam.errors.MedClipSamError` (:class:`DicomSegError`) naming the cause; a label
  array that does not fit the sources raises :class:`~medclipsam.errors.LabelShapeError`
  (an InputError that is also a ValueError).
"""

from __future__ import annotations

import copy
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import generate_uid

from .. import __version__
from ..errors import InputError, LabelShapeError, MedClipSamError
from ..io import _atomic
from ..labels import label_color
from .codes import SegmentConcept, concept_for_prompt
from .legacy import LOSSY_KEYWORDS, apply_fixes, copied_attribute_types, legacy_fixes, slice_spacing
from .mosaic import is_mosaic

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
MANUFACTURER = "medclipsam"
DEVICE_SERIAL_NUMBER = "0"
_PIXEL_DATA_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}
_UID_KEYWORDS = ("SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID")
# Type-2 attributes highdicom copies from the first source with plain attribute access.
_TYPE2_KEYWORDS = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber",
                   "StudyID", "StudyDate", "StudyTime", "ReferringPhysicianName")
_TEXT_VRS = {"SH", "LO", "ST", "LT", "UT", "UC", "PN"}
POSITION_TOLERANCE_MM = 0.01


class DicomSegError(MedClipSamError):
    """A DICOM SEG could not be built, written or read."""


class EmptySegmentationError(InputError):
    """The label volume has no foreground: nothing was segmented, so no SEG is written."""


class SegNotWritableError(InputError):
    """The sources cannot give a DICOM SEG at all (found before any slice is processed)."""


class DicomSegWarning(UserWarning):
    """Something the SEG writer/reader repaired or skipped (generated UIDs, empty segments, ...)."""


@dataclass
class SegmentSpec:
    label: int                                      # value in the label volume
    name: str                                       # segment label (the prompt, shortened to 64 chars)
    description: str | None = None                  # default: the name (the full prompt)
    color: tuple[int, int, int] | None = None       # RGB 0-255; default: label_color(label)
    concept: SegmentConcept | None = None           # default: concept_for_prompt(name)


# ---------------------------------------------------------------------------------------------
# colours: sRGB (D65) <-> CIELab in the ICC profile connection space (D50), DICOM-scaled


_SRGB_TO_XYZ_D65 = np.array([[0.4124564, 0.3575761, 0.1804375],
                             [0.2126729, 0.7151522, 0.0721750],
                             [0.0193339, 0.1191920, 0.9503041]])
_BRADFORD_D65_TO_D50 = np.array([[1.0478112, 0.0228866, -0.0501270],
                                 [0.0295424, 0.9904844, -0.0170491],
                                 [-0.0092345, 0.0150436, 0.7521316]])
_WHITE_D50 = np.array([0.96422, 1.0, 0.82521])
_RGB_TO_XYZ_D50 = _BRADFORD_D65_TO_D50 @ _SRGB_TO_XYZ_D65
_XYZ_D50_TO_RGB = np.linalg.inv(_RGB_TO_XYZ_D50)
_EPS = (6 / 29) ** 3


def rgb_to_dicom_lab(rgb: Sequence[int]) -> tuple[int, int, int]:
    """sRGB 0–255 → DICOM's scaled CIELab (L* 0..100 → 0..65535; a*, b* -128..127 → 0..65535)."""
    c = np.clip(np.asarray(rgb, dtype=np.float64) / 255.0, 0.0, 1.0)
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    t = (_RGB_TO_XYZ_D50 @ linear) / _WHITE_D50
    f = np.where(t > _EPS, np.cbrt(t), t / (3 * (6 / 29) ** 2) + 4 / 29)
    lab = (116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2]))
    scaled = (lab[0] * 65535 / 100, (lab[1] + 128) * 65535 / 255, (lab[2] + 128) * 65535 / 255)
    return tuple(int(min(max(round(v), 0), 65535)) for v in scaled)  # type: ignore[return-value]


def dicom_lab_to_rgb(values: Sequence[int]) -> tuple[int, int, int]:
    """The inverse of :func:`rgb_to_dicom_lab` (out-of-gamut colours are clipped)."""
    v = np.asarray(values, dtype=np.float64)
    lab = (v[0] * 100 / 65535, v[1] * 255 / 65535 - 128, v[2] * 255 / 65535 - 128)
    fy = (lab[0] + 16) / 116
    f = np.array([fy + lab[1] / 500, fy, fy - lab[2] / 200])
    t = np.where(f > 6 / 29, f ** 3, 3 * (6 / 29) ** 2 * (f - 4 / 29))
    linear = np.clip(_XYZ_D50_TO_RGB @ (t * _WHITE_D50), 0.0, 1.0)
    c = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)
    return tuple(int(round(x)) for x in np.clip(c * 255, 0, 255))  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# sources


def _blank(value) -> bool:
    return value is None or not str(value).strip()


def effective_sop_instance_uid(ds: Dataset) -> str:
    """The SOP Instance UID of a source: its own, else its file meta's MediaStorageSOPInstanceUID."""
    uid = ds.get("SOPInstanceUID")
    if _blank(uid):
        uid = getattr(getattr(ds, "file_meta", None), "MediaStorageSOPInstanceUID", None)
    return "" if _blank(uid) else str(uid).strip()


def _effective_sop_class_uid(ds: Dataset) -> str:
    uid = ds.get("SOPClassUID")
    if _blank(uid):
        uid = getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", None)
    return "" if _blank(uid) else str(uid).strip()


_SHAREABLE_GROUPS = ("PixelMeasuresSequence", "PlaneOrientationSequence")


def _per_frame_shareable_groups(ds: Dataset) -> dict[str, Any]:
    """Functional groups an enhanced multi-frame image repeats in every frame (identically) but lacks
    in its shared groups, where highdicom 0.22 looks for them (Philips writes them per frame)."""
    shared = ds.get("SharedFunctionalGroupsSequence")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    out: dict[str, Any] = {}
    if not shared or not per_frame:
        return out
    for keyword in _SHAREABLE_GROUPS:
        if keyword in shared[0]:
            continue
        items = [f.get(keyword) for f in per_frame]
        if any(not i for i in items):
            continue
        if all(str(i[0]) == str(items[0][0]) for i in items[1:]):
            out[keyword] = copy.deepcopy(items[0])
    return out


def _metadata_copy(ds: Dataset) -> Dataset:
    """A deep copy without pixel data (a copy we may modify; the caller's data set stays as is)."""
    new = Dataset()
    for elem in ds:
        if elem.tag not in _PIXEL_DATA_TAGS:
            new.add(copy.deepcopy(elem))
    if hasattr(ds, "file_meta"):
        new.file_meta = copy.deepcopy(ds.file_meta)
    new.is_little_endian = getattr(ds, "is_little_endian", True)
    new.is_implicit_VR = getattr(ds, "is_implicit_VR", False)
    return new


def _is_multiframe(ds: Dataset) -> bool:
    return "PerFrameFunctionalGroupsSequence" in ds or int(ds.get("NumberOfFrames") or 1) > 1


def _number_of_frames(ds: Dataset) -> int:
    return int(ds.get("NumberOfFrames") or 1)


def prepare_sources(source_images: Sequence[Dataset], *, warn: bool = True) -> list[Dataset]:
    """The sources as highdicom needs them: blank SOP/Study/Series UIDs filled (see the module
    docstring), missing type-2 patient/study attributes added empty, a stray NumberOfFrames = 1 on
    classic single-frame images of a series removed — always on copies; unchanged data sets are
    passed through as they are. UID repairs are reported as a :class:`DicomSegWarning`."""
    result, notes = _prepare_sources(source_images)
    if warn:
        for note in notes:
            warnings.warn(note, DicomSegWarning, stacklevel=2)
    return result


def _prepare_sources(source_images: Sequence[Dataset]) -> tuple[list[Dataset], list[str]]:
    sources = list(source_images)
    if not sources:
        raise InputError("no source images: a DICOM SEG must reference the images it segments")
    sop_uids = []
    for i, ds in enumerate(sources):
        uid = effective_sop_instance_uid(ds)
        if not uid:
            raise InputError(f"source image {i} has no SOP Instance UID, neither in the data set nor in "
                             "its file meta information; a DICOM SEG cannot reference it")
        if not _effective_sop_class_uid(ds):
            raise InputError(f"source image {i} ({uid}) has no SOP Class UID, neither in the data set nor "
                             "in its file meta information")
        sop_uids.append(uid)
    replacement: dict[str, str] = {}
    notes: list[str] = []
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID"):
        if not any(_blank(ds.get(keyword)) for ds in sources):
            continue
        present = sorted({str(ds.get(keyword)).strip() for ds in sources if not _blank(ds.get(keyword))})
        if len(present) == 1:
            replacement[keyword] = present[0]
            notes.append(f"blank {keyword} taken from another source image ({present[0]})")
            continue
        entropy = [f"medclipsam:{keyword}"]
        frame_of_reference = sources[0].get("FrameOfReferenceUID")
        if keyword == "StudyInstanceUID" and not _blank(frame_of_reference):
            entropy.append(str(frame_of_reference))     # stable for any subset of the series' slices
        else:
            entropy.extend(sorted(sop_uids))
        replacement[keyword] = generate_uid(entropy_srcs=entropy)
        notes.append(f"blank {keyword} replaced by the generated UID {replacement[keyword]}")
    strip_frames = len(sources) > 1
    spacing = slice_spacing(sources) if strip_frames else None
    result: list[Dataset] = []
    sop_from_meta = 0
    header_notes: dict[str, int] = {}
    for ds, sop_uid in zip(sources, sop_uids):
        blank_uids = [kw for kw in _UID_KEYWORDS if _blank(ds.get(kw))]
        missing_type2 = [kw for kw in _TYPE2_KEYWORDS if kw not in ds]
        stray_frames = (strip_frames and "NumberOfFrames" in ds and not _is_multiframe(ds))
        shareable = _per_frame_shareable_groups(ds)
        fixes = legacy_fixes(ds, spacing=spacing)
        if not blank_uids and not missing_type2 and not stray_frames and not shareable and not fixes:
            result.append(ds)
            continue
        c = _metadata_copy(ds)
        if fixes:
            apply_fixes(c, fixes)
            shareable = _per_frame_shareable_groups(c)      # from the repaired functional groups
        for fix in fixes:
            header_notes[fix.reason] = header_notes.get(fix.reason, 0) + 1
        for keyword, value in shareable.items():
            setattr(c.SharedFunctionalGroupsSequence[0], keyword, value)
        if "SOPInstanceUID" in blank_uids:
            c.SOPInstanceUID = sop_uid
            sop_from_meta += 1
        if "SOPClassUID" in blank_uids:
            c.SOPClassUID = _effective_sop_class_uid(ds)
        for kw in ("StudyInstanceUID", "SeriesInstanceUID"):
            if kw in blank_uids:
                setattr(c, kw, replacement[kw])
        for kw in missing_type2:
            setattr(c, kw, "")
        if stray_frames:
            del c.NumberOfFrames
        result.append(c)
    if sop_from_meta:
        notes.insert(0, f"{sop_from_meta} source image(s) have a blank SOP Instance UID; the SEG references "
                        "the MediaStorageSOPInstanceUID of their file meta information")
    out: list[str] = []
    if notes:
        out.append("DICOM SEG references repaired source UIDs (a PACS holding the original files may not "
                   "link them): " + "; ".join(notes))
    if header_notes:
        out.append("source header values repaired for the DICOM SEG: " + "; ".join(
            reason + (f" ({n} images)" if n > 1 else "") for reason, n in header_notes.items()))
    return result, out


def _resolve_frames(sources: Sequence[Dataset], frames, n_slices: int | None
                    ) -> list[tuple[int, int | None]]:
    """Validated ``(source index, 0-based frame index or None)`` per label slice."""
    if frames is None:
        if len(sources) == 1 and _is_multiframe(sources[0]):
            n = _number_of_frames(sources[0])
            resolved = [(0, f) for f in range(n)]
        else:
            if any(_is_multiframe(ds) for ds in sources):
                raise InputError("several multi-frame source images: pass frames=[(source index, frame "
                                 "index), ...] for the label slices")
            resolved = [(i, None) for i in range(len(sources))]
        if n_slices is not None and n_slices != len(resolved):
            unit = "frames" if resolved and resolved[0][1] is not None else "images"
            raise LabelShapeError(f"the label volume has {n_slices} slices but the sources have "
                                  f"{len(resolved)} {unit}; pass frames= to say which source slice each "
                                  "label slice belongs to")
        return resolved
    resolved = []
    for k, item in enumerate(frames):
        try:
            i, f = item
            i = int(i)
        except (TypeError, ValueError):
            raise InputError(f"frames[{k}] = {item!r} is not a (source index, frame index or None) pair") from None
        if not 0 <= i < len(sources):
            raise InputError(f"frames[{k}] refers to source image {i}, but there are {len(sources)}")
        if _is_multiframe(sources[i]):
            n = _number_of_frames(sources[i])
            if f is None or not 0 <= int(f) < n:
                raise InputError(f"frames[{k}] = {item!r}: source image {i} is multi-frame; give a frame "
                                 f"index 0..{n - 1}")
            resolved.append((i, int(f)))
        else:
            if f not in (None, 0):
                raise InputError(f"frames[{k}] = {item!r}: source image {i} is single-frame; use None")
            resolved.append((i, None))
    if n_slices is not None and n_slices != len(resolved):
        raise LabelShapeError(f"the label volume has {n_slices} slices but frames= lists {len(resolved)}")
    if len(set(resolved)) != len(resolved):
        raise InputError("frames= names the same source slice twice")
    multi = {i for i, f in resolved if f is not None}
    if multi and (len(multi) > 1 or any(f is None for _, f in resolved)):
        raise InputError("a DICOM SEG here references either one multi-frame image or a series of "
                         "single-frame images, not a mix")
    return resolved


_NII_ADVICE = "ask for a NIfTI/NRRD result instead (--out NAME.nii.gz on the command line)"


def check_seg_sources(source_images: Sequence[Dataset],
                      frames: Sequence[tuple[int, int | None]] | None = None) -> list[str]:
    """Can these sources give a DICOM SEG? Meant to run before any slice is processed (the CLI calls
    it right after opening the series when the output is .dcm; :func:`write_dicom_seg` runs the same
    checks). Raises :class:`SegNotWritableError` naming what is missing, with the advice to write
    NIfTI instead; returns the notes on the header values the writer will repair
    (:mod:`medclipsam.dicom.legacy`) or UIDs it will fill in."""
    try:
        sources, notes = _prepare_sources(source_images)
        _refuse_mosaics(sources)
    except (LabelShapeError, SegNotWritableError):
        raise
    except InputError as e:
        raise SegNotWritableError(f"no DICOM SEG can be written: {e}; {_NII_ADVICE}") from None
    _check_writable(sources, _resolve_frames(sources, frames, None))
    return notes


def _image_type(ds: Dataset) -> list[str]:
    value = ds.get("ImageType", None)
    if value is None:
        return []
    values = [value] if isinstance(value, (str, bytes)) else list(value)
    return [str(v).strip().upper() for v in values]


def _refuse_mosaics(sources: Sequence[Dataset]) -> None:
    if any(is_mosaic(_image_type(ds)) for ds in sources):
        raise SegNotWritableError(
            "no DICOM SEG can be written from this series: its images are Siemens mosaics (several slices tiled "
            "into one image), and a SEG can only reference whole images or frames, not the tiles the slices were "
            f"unpacked from; {_NII_ADVICE}")


def _check_writable(sources: Sequence[Dataset], resolved: Sequence[tuple[int, int | None]]) -> None:
    """What highdicom needs from the (repaired) sources and no repair can give: refused up front."""
    def refuse(why: str) -> SegNotWritableError:
        return SegNotWritableError(f"no DICOM SEG can be written from this series: {why}; {_NII_ADVICE}")

    first = sources[resolved[0][0]]
    sop_class = _effective_sop_class_uid(first)
    if copied_attribute_types(sop_class) is None:
        raise refuse(f"its SOP class {sop_class} is not one the SEG writer (highdicom) knows")
    used = [sources[i] for i in dict.fromkeys(i for i, _ in resolved)]
    if "FrameOfReferenceUID" not in first:
        from highdicom._module_utils import ModuleUsageValues, get_module_usage

        if len(used) > 1 or len(resolved) > 1 or _number_of_frames(first) > 1:
            raise refuse(f"the images have no FrameOfReferenceUID, which a SEG of {len(resolved)} slices "
                         "needs to place them")
        if get_module_usage("frame-of-reference", sop_class) == ModuleUsageValues.MANDATORY:
            raise refuse("the image has no FrameOfReferenceUID although its IOD requires one")
        return
    if _is_multiframe(first) and "PerFrameFunctionalGroupsSequence" in first:
        return
    for ds in used:
        missing = [kw for kw in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
                                 "SliceThickness") if _blank(ds.get(kw))]
        if missing:
            raise refuse(f"image {effective_sop_instance_uid(ds)} has a FrameOfReferenceUID but no "
                         f"{' / '.join(missing)}")


def _frame_positions(ds: Dataset) -> list[np.ndarray | None]:
    """ImagePositionPatient of each frame of a source (one entry for a single-frame image)."""
    if not _is_multiframe(ds):
        ipp = ds.get("ImagePositionPatient")
        return [np.asarray(ipp, dtype=np.float64) if ipp is not None else None]
    shared = ds.get("SharedFunctionalGroupsSequence")
    shared_pos = None
    if shared and "PlanePositionSequence" in shared[0]:
        shared_pos = shared[0].PlanePositionSequence[0].get("ImagePositionPatient")
    out: list[np.ndarray | None] = []
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    for f in range(_number_of_frames(ds)):
        pos = shared_pos
        if f < len(per_frame) and "PlanePositionSequence" in per_frame[f]:
            pos = per_frame[f].PlanePositionSequence[0].get("ImagePositionPatient")
        out.append(np.asarray(pos, dtype=np.float64) if pos is not None else None)
    return out


# ---------------------------------------------------------------------------------------------
# writing


def _clean_text(text: str | None, limit: int = 64) -> str:
    """A valid LO value: no control characters or backslashes, at most ``limit`` bytes in UTF-8
    (validators count bytes, so non-ASCII text is cut shorter), shortened with "..."."""
    s = re.sub(r"[\x00-\x1f\x7f]", " ", str(text or "")).replace("\\", "/")
    s = " ".join(s.split())
    if len(s.encode("utf-8")) <= limit:
        return s
    cut = s[:limit]
    while len(cut.encode("utf-8")) > limit - 3:
        cut = cut[:-1]
    return cut.rstrip() + "..."


def _needs_utf8(seg: Dataset) -> bool:
    def non_ascii(ds: Dataset) -> bool:
        for elem in ds:
            if elem.VR == "SQ" and elem.keyword in ("SegmentSequence", "AnatomicRegionSequence",
                                                    "SegmentedPropertyCategoryCodeSequence",
                                                    "SegmentedPropertyTypeCodeSequence",
                                                    "SegmentationAlgorithmIdentificationSequence"):
                if any(non_ascii(item) for item in elem.value):
                    return True
            elif elem.VR in _TEXT_VRS and elem.value is not None:
                values = elem.value if isinstance(elem.value, (list, MultiValue)) else [elem.value]
                if any(not str(v).isascii() for v in values):
                    return True
        return False

    return non_ascii(seg)


def _segment_descriptions(kept: list[SegmentSpec], algorithm_name: str, algorithm_version: str):
    import highdicom as hd
    from highdicom.sr import CodedConcept
    from pydicom.sr.codedict import codes

    algorithm = hd.AlgorithmIdentificationSequence(
        name=_clean_text(algorithm_name), version=_clean_text(algorithm_version),
        family=codes.cid7162.ArtificialIntelligence)
    descriptions = []
    for number, spec in enumerate(kept, start=1):
        concept = spec.concept if spec.concept is not None else concept_for_prompt(spec.name)
        label = _clean_text(spec.name) or f"Segment {spec.label}"
        item = hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=label,
            segmented_property_category=concept.category_code,
            segmented_property_type=concept.type_code,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            anatomic_regions=[concept.anatomic_region] if concept.anatomic_region is not None else None,
        )
        if concept.type_modifier is not None:
            item.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
                CodedConcept.from_code(concept.type_modifier)]
        description = _clean_text(spec.description if spec.description is not None else spec.name)
        if description:
            item.SegmentDescription = description
        color = spec.color if spec.color is not None else label_color(spec.label)
        if len(tuple(color)) != 3 or any(not 0 <= int(c) <= 255 for c in color):
            raise InputError(f"segment {spec.label} ({spec.name!r}): colour {color!r} is not an RGB triple 0..255")
        item.RecommendedDisplayCIELabValue = list(rgb_to_dicom_lab(color))
        descriptions.append(item)
    return descriptions


def _check_segments(segments: Sequence[SegmentSpec], present: set[int]) -> tuple[list[SegmentSpec], str | None]:
    specs = sorted(segments, key=lambda s: int(s.label))
    labels = [int(s.label) for s in specs]
    if any(not 1 <= v <= 255 for v in labels):
        raise InputError(f"segment labels must be 1..255 (0 is background), got {labels}")
    if len(set(labels)) != len(labels):
        raise InputError(f"two segments share one label value: {labels}")
    undescribed = sorted(present - set(labels))
    if undescribed:
        raise InputError(f"label value(s) {undescribed} occur in the label volume but have no SegmentSpec")
    if not present:
        raise EmptySegmentationError("nothing was segmented (the label volume has no non-zero voxel); "
                                     "no SEG written")
    kept = [s for s in specs if int(s.label) in present]
    dropped = [f"{s.label} ({s.name!r})" for s in specs if int(s.label) not in present]
    note = f"segment(s) {', '.join(dropped)} have no voxel and are left out of the SEG" if dropped else None
    return kept, note


def _restore_lossy_flag(seg: Dataset, original: Dataset, used: Dataset) -> None:
    """A source flagged lossy (LossyImageCompression 01) whose ratio or method is unknown was given to
    highdicom without the flag (it requires both); the SEG gets the flag back, with what is known."""
    if str(original.get("LossyImageCompression") or "").strip() != "01" or "LossyImageCompression" in used:
        return
    seg.LossyImageCompression = "01"
    for keyword in LOSSY_KEYWORDS[1:]:
        if keyword in seg:
            delattr(seg, keyword)
        value = used.get(keyword)
        if not _blank(value) and (not isinstance(value, (list, MultiValue)) or len(value)):
            setattr(seg, keyword, value)


def write_dicom_seg(path: str | Path, source_images: Sequence[Dataset], labels: np.ndarray,
                    segments: Sequence[SegmentSpec], *,
                    frames: Sequence[tuple[int, int | None]] | None = None,
                    series_description: str, algorithm_name: str = "medclipsam", algorithm_version: str,
                    series_number: int = 9901, omit_empty_frames: bool = True) -> Path:
    """Write ``labels`` (uint8 slices×rows×cols, values 0..255) as a BINARY DICOM SEG at ``path``.

    ``source_images`` are the segmented images' data sets (pixel data not needed: read them with
    ``stop_before_pixels=True``): a series of single-frame images, or one enhanced multi-frame image.
    ``frames[k] = (index into source_images, 0-based frame index or None)`` says which source slice
    label slice ``k`` lies on; by default slice ``k`` is ``source_images[k]`` (or frame ``k`` of a
    single multi-frame source). ``segments`` describes each label value present (one segment each).
    See the module docstring for empty volumes, blank UIDs, warnings and errors.
    """
    import highdicom as hd

    p = Path(path)
    data = np.asarray(labels)
    if data.ndim != 3:
        raise LabelShapeError(f"labels must be a 3D array (slices, rows, cols), got shape {data.shape}")
    originals = list(source_images)
    sources, source_notes = _prepare_sources(originals)
    _refuse_mosaics(sources)
    resolved = _resolve_frames(sources, frames, data.shape[0])
    _check_writable(sources, resolved)
    if data.dtype == bool:
        data = data.astype(np.uint8)
    if not np.issubdtype(data.dtype, np.integer):
        raise LabelShapeError(f"labels must be integers 0..255, got dtype {data.dtype}")
    used = [sources[i] for i, _ in resolved]
    rows, cols = int(used[0].Rows), int(used[0].Columns)
    if any((int(ds.Rows), int(ds.Columns)) != (rows, cols) for ds in used):
        raise InputError("the source images differ in size (Rows × Columns); they are not one series")
    if tuple(data.shape[1:]) != (rows, cols):
        raise LabelShapeError(f"label slices are {data.shape[1]}×{data.shape[2]} but the source images are "
                              f"{rows}×{cols} (rows × columns)")
    if data.size and (int(data.min()) < 0 or int(data.max()) > 255):
        raise LabelShapeError(f"labels must be 0..255, got {int(data.min())}..{int(data.max())}")
    data = data.astype(np.uint8, copy=False)
    present = {int(v) for v in np.unique(data) if v != 0}
    kept, segment_note = _check_segments(segments, present)

    # Label values -> consecutive segment numbers 1..N (label-map style input for highdicom).
    lut = np.zeros(256, dtype=np.uint8)
    for number, spec in enumerate(kept, start=1):
        lut[int(spec.label)] = number
    relabelled = lut[data]
    if resolved[0][1] is not None:          # one multi-frame source: a plane per source frame
        source_list = [sources[resolved[0][0]]]
        pixel_array = np.zeros((_number_of_frames(source_list[0]), rows, cols), dtype=np.uint8)
        for k, (_, f) in enumerate(resolved):
            pixel_array[f] = relabelled[k]
    else:
        source_list = used
        pixel_array = relabelled

    try:
        descriptions = _segment_descriptions(kept, algorithm_name, algorithm_version)
        with warnings.catch_warnings():
            # Source names like "HEAD" are copied as they are; highdicom's advice is not for us.
            warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name.*")
            seg = hd.seg.Segmentation(
                source_images=source_list,
                pixel_array=pixel_array,
                segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
                segment_descriptions=descriptions,
                series_instance_uid=hd.UID(),
                series_number=int(series_number),
                sop_instance_uid=hd.UID(),
                instance_number=1,
                manufacturer=MANUFACTURER,
                manufacturer_model_name=_clean_text(algorithm_name),
                software_versions=[_clean_text(f"{algorithm_name} {algorithm_version}"),
                                   f"medclipsam {__version__}", f"highdicom {hd.__version__}"],
                device_serial_number=DEVICE_SERIAL_NUMBER,
                content_description=_clean_text(series_description) or None,
                omit_empty_frames=omit_empty_frames,
                series_description=_clean_text(series_description) or None,
            )
        if _needs_utf8(seg):
            seg.SpecificCharacterSet = "ISO_IR 192"
        _restore_lossy_flag(seg, originals[resolved[0][0]], source_list[0])
        if "FrameOfReferenceUID" not in seg and "PatientOrientation" not in seg:
            # General Image module: PatientOrientation is Type 2C when there is no frame of reference
            # (2D ultrasound, projection X-ray); copy the source's, or leave it empty (unknown).
            seg.PatientOrientation = source_list[0].get("PatientOrientation", "")
            # Without a frame of reference the pixel measures are optional; highdicom 0.22 copies the
            # projection image's spacing without a SliceThickness and then cannot read its own SEG
            # back (it requires both). Leave them out rather than invent a slice thickness.
            for shared in seg.get("SharedFunctionalGroupsSequence") or []:
                pm = shared.get("PixelMeasuresSequence")
                if pm and "SliceThickness" not in pm[0]:
                    del shared.PixelMeasuresSequence
    except MedClipSamError:
        raise
    except (ValueError, TypeError, AttributeError, IndexError, KeyError, NotImplementedError) as e:
        raise DicomSegError(f"could not build the DICOM SEG {p.name}: {type(e).__name__}: {e}") from e
    try:
        _atomic(p, lambda tmp: seg.save_as(tmp, write_like_original=False))
    except OSError as e:
        raise DicomSegError(f"cannot write {p}: {e.strerror or e}. Choose an output folder you can "
                            "write to") from None
    except (ValueError, TypeError, AttributeError, UnicodeError) as e:
        raise DicomSegError(f"could not encode the DICOM SEG {p.name}: {type(e).__name__}: {e}") from e
    # Reported only once the SEG exists (a failed write says why it failed instead).
    for note in (*source_notes, segment_note):
        if note:
            warnings.warn(f"{p.name}: {note}", DicomSegWarning, stacklevel=2)
    return p


# ---------------------------------------------------------------------------------------------
# reading


def _concept_from_item(item: Dataset) -> SegmentConcept | None:
    from highdicom.sr import CodedConcept

    try:
        category = CodedConcept.from_dataset(item.SegmentedPropertyCategoryCodeSequence[0])
        type_item = item.SegmentedPropertyTypeCodeSequence[0]
        type_code = CodedConcept.from_dataset(type_item)
    except (AttributeError, IndexError, KeyError, TypeError):
        return None
    region = None
    if item.get("AnatomicRegionSequence"):
        region = CodedConcept.from_dataset(item.AnatomicRegionSequence[0])
    modifier = None
    if type_item.get("SegmentedPropertyTypeModifierCodeSequence"):
        modifier = CodedConcept.from_dataset(type_item.SegmentedPropertyTypeModifierCodeSequence[0])
    return SegmentConcept(category, type_code, region, None, modifier)


def _referenced_slices(item: Dataset, by_uid: dict[tuple[str, int | None], int]) -> list[int]:
    """Slices a SEG frame's Derivation Image Sequence points to."""
    found: list[int] = []
    for derivation in item.get("DerivationImageSequence") or []:
        for src in derivation.get("SourceImageSequence") or []:
            uid = str(src.get("ReferencedSOPInstanceUID") or "").strip()
            numbers = src.get("ReferencedFrameNumber")
            if numbers is None or numbers == "":
                if (uid, None) in by_uid:
                    found.append(by_uid[(uid, None)])
                continue
            numbers = numbers if isinstance(numbers, (list, MultiValue)) else [numbers]
            for n in numbers:
                key = (uid, int(n))
                if key in by_uid:
                    found.append(by_uid[key])
                elif int(n) == 1 and (uid, None) in by_uid:     # frame 1 of a single-frame image
                    found.append(by_uid[(uid, None)])
    return found


def read_dicom_seg(path: str | Path, source_images: Sequence[Dataset], *,
                   frames: Sequence[tuple[int, int | None]] | None = None
                   ) -> tuple[np.ndarray, list[SegmentSpec]]:
    """Rebuild the label volume of a DICOM SEG on the given source slices.

    ``source_images`` / ``frames`` as for :func:`write_dicom_seg`. Each SEG frame is placed on the
    slice its Derivation Image Sequence references (SOP Instance UID + frame number; blank source
    UIDs are matched through the file meta information as on writing), else on the slice at its
    Plane Position (within 0.01 mm). Returns ``(labels, segments)``: a uint8 (slices, rows, cols)
    array whose values are the segment numbers (where BINARY segments overlap, the higher number
    wins, with a warning) and one :class:`SegmentSpec` per segment (label = segment number).
    """
    p = Path(path)
    try:
        seg = pydicom.dcmread(str(p))
    except FileNotFoundError:
        raise InputError(f"DICOM SEG not found: {p}") from None
    except Exception as e:   # pydicom raises several types for damaged files
        raise InputError(f"cannot read {p} as DICOM: {e}") from None
    if str(seg.get("SOPClassUID", "")) != SEGMENTATION_STORAGE and seg.get("Modality") != "SEG":
        raise InputError(f"{p.name} is not a DICOM Segmentation (SOP Class {seg.get('SOPClassUID', '?')})")
    sources = list(source_images)
    if not sources:
        raise InputError("no source images to place the segmentation on")
    resolved = _resolve_frames(sources, frames, None)
    rows, cols = int(seg.Rows), int(seg.Columns)
    src_rows, src_cols = int(sources[resolved[0][0]].Rows), int(sources[resolved[0][0]].Columns)
    if (rows, cols) != (src_rows, src_cols):
        raise InputError(f"the SEG frames are {rows}×{cols} but the source images are {src_rows}×{src_cols}")

    by_uid: dict[tuple[str, int | None], int] = {}
    positions: list[np.ndarray | None] = []
    frame_positions = {}
    for k, (i, f) in enumerate(resolved):
        uid = effective_sop_instance_uid(sources[i])
        by_uid[(uid, None if f is None else f + 1)] = k
        if i not in frame_positions:
            frame_positions[i] = _frame_positions(sources[i])
        positions.append(frame_positions[i][0 if f is None else f])

    try:
        pixels = seg.pixel_array
    except Exception as e:
        raise InputError(f"cannot decode the pixel data of {p.name}: {e}") from None
    n_frames = int(seg.get("NumberOfFrames") or 1)
    pixels = pixels.reshape(n_frames, rows, cols)
    if seg.get("SegmentationType") == "FRACTIONAL":
        masks = pixels > (int(seg.get("MaximumFractionalValue") or 255) / 2)
    else:
        masks = pixels > 0

    shared = (seg.get("SharedFunctionalGroupsSequence") or [Dataset()])[0]
    per_frame = seg.get("PerFrameFunctionalGroupsSequence") or []
    labels = np.zeros((len(resolved), rows, cols), dtype=np.uint8)
    unmapped = overlaps = 0
    for n in range(n_frames):
        item = per_frame[n] if n < len(per_frame) else Dataset()
        ident = item.get("SegmentIdentificationSequence") or shared.get("SegmentIdentificationSequence")
        if not ident:
            raise InputError(f"{p.name}: frame {n + 1} does not say which segment it belongs to")
        number = int(ident[0].ReferencedSegmentNumber)
        if not 1 <= number <= 255:
            raise InputError(f"{p.name}: segment number {number} does not fit a uint8 label volume")
        slices = _referenced_slices(item, by_uid)
        if not slices:
            plane = item.get("PlanePositionSequence") or shared.get("PlanePositionSequence")
            if plane and plane[0].get("ImagePositionPatient") is not None:
                ipp = np.asarray(plane[0].ImagePositionPatient, dtype=np.float64)
                slices = [k for k, pos in enumerate(positions)
                          if pos is not None and float(np.abs(pos - ipp).max()) <= POSITION_TOLERANCE_MM][:1]
        if not slices:
            unmapped += 1
            continue
        for k in slices:
            target = labels[k]
            mask = masks[n]
            if np.any(target[mask] != 0):
                overlaps += 1
            target[mask] = np.maximum(target[mask], number)
    if n_frames and unmapped == n_frames:
        raise InputError(f"{p.name}: none of its {n_frames} frames lies on the given source images "
                         "(different series, or different slices?)")
    if unmapped:
        warnings.warn(f"{p.name}: {unmapped} of {n_frames} frames lie on none of the given source slices "
                      "and were skipped", DicomSegWarning, stacklevel=2)
    if overlaps:
        warnings.warn(f"{p.name}: segments overlap on {overlaps} frame(s); the higher segment number "
                      "is kept in the label volume", DicomSegWarning, stacklevel=2)

    specs: list[SegmentSpec] = []
    for item in seg.get("SegmentSequence") or []:
        lab = item.get("RecommendedDisplayCIELabValue")
        specs.append(SegmentSpec(
            label=int(item.SegmentNumber),
            name=str(item.get("SegmentLabel") or ""),
            description=str(item.SegmentDescription) if item.get("SegmentDescription") else None,
            color=dicom_lab_to_rgb(lab) if lab is not None and len(lab) == 3 else None,
            concept=_concept_from_item(item),
        ))
    return labels, specs
