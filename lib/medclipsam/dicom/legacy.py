"""Source header values that are legal in practice but stop (or spoil) a DICOM SEG built from them.

highdicom builds a SEG from the first source image's header: it copies the root attributes of the
source IOD's Patient and Study modules as they are, parses PatientBirthDate/StudyDate/StudyTime,
and reads PixelSpacing, SliceThickness, SpacingBetweenSlices and the lossy-compression attributes
with plain attribute access. :func:`legacy_fixes` lists what has to change on a *copy* of a source
so that the SEG can be built and passes ``dciodvfy``; :mod:`medclipsam.dicom.seg` applies the
fixes in the one place where it already repairs sources (blank UIDs, missing type-2 attributes)
and reports them with a :class:`~medclipsam.dicom.seg.DicomSegWarning`.

The repairs (each is one :class:`Fix`):

* **values their VR does not allow** (a PatientID or StudyID longer than LO/SH allow, a
  PatientAge ``45``, a PatientSex ``U``): text is cut to the VR's length, a bare age gets its unit
  (years), a sex other than M/F/O is emptied; anything else invalid is emptied (Type 2) or left out;
* **dates and times** (DA, TM, DT) that pydicom cannot parse or that are not in the standard's
  format: a legacy ``11:42:21`` or ``2001.01.01`` loses its separators; what stays invalid (a date
  ``00000000``) is emptied when the attribute is Type 2 and left out otherwise;
* **empty values** of Type 1/1C attributes (an empty DeidentificationMethod) and Type 3 sequences
  without items (an empty ProcedureCodeSequence) are left out; an empty DeidentificationMethod
  next to PatientIdentityRemoved ``YES`` (and no method code) says that the method is not known;
* **no PixelSpacing**: ImagerPixelSpacing (CR, DX, the spacing the series reader uses) or
  ImagePlanePixelSpacing (RTIMAGE) takes its place;
* **a negative SpacingBetweenSlices** (a direction, in some legacy NM/MR headers) keeps its
  magnitude, at the top level or in an enhanced image's shared/per-frame Pixel Measures; zero or an
  unreadable value is left out;
* **no (or an empty) SliceThickness** on positioned slices of a series: the slice spacing (median
  gap between the slice positions) stands in;
* **a frame of reference without a position** (a projection image with FrameOfReferenceUID but no
  ImagePositionPatient/ImageOrientationPatient) is written as a projection SEG, without one;
* **LossyImageCompression 01** without LossyImageCompressionRatio or LossyImageCompressionMethod:
  the method comes from the source's lossy transfer syntax when it has one; what is still unknown
  is left out of the SEG (the flag ``01`` itself is always kept: a SEG of lossy images says so).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset

DROP = object()          # Fix.value: remove the attribute from the source copy
LOSSY_KEYWORDS = ("LossyImageCompression", "LossyImageCompressionRatio", "LossyImageCompressionMethod")
_LOSSY_METHOD_BY_SYNTAX = {
    "1.2.840.10008.1.2.4.50": "ISO_10918_1", "1.2.840.10008.1.2.4.51": "ISO_10918_1",
    "1.2.840.10008.1.2.4.81": "ISO_14495_1", "1.2.840.10008.1.2.4.91": "ISO_15444_1",
    "1.2.840.10008.1.2.4.93": "ISO_15444_1", "1.2.840.10008.1.2.4.100": "ISO_13818_2",
    "1.2.840.10008.1.2.4.101": "ISO_13818_2", "1.2.840.10008.1.2.4.102": "ISO_14496_10",
    "1.2.840.10008.1.2.4.103": "ISO_14496_10",
}
_DA = re.compile(r"^\d{8}$")
_TM = re.compile(r"^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$")
_STRING_VRS = {"AE", "AS", "CS", "DS", "IS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"}
_MAX_TEXT = {"SH": 16, "LO": 64, "ST": 1024, "LT": 10240, "PN": 64}
_DEIDENTIFICATION_UNKNOWN = "unknown (empty in the source image)"


@dataclass(frozen=True)
class Fix:
    keyword: str
    value: Any            # the new value, or DROP
    reason: str           # "StudyTime '11:42:21' is not a DICOM time: written as '114221'"


def copied_attribute_types(sop_class_uid: str) -> dict[str, str] | None:
    """Keyword → type ('1', '2', '3', '1C', ...) of the root attributes highdicom copies into a SEG
    from a source of this SOP class (its Patient and Study modules); None for a SOP class highdicom
    does not know (it cannot copy them: no SEG can be built)."""
    from highdicom._iods import IOD_MODULE_MAP, SOP_CLASS_UID_IOD_KEY_MAP
    from highdicom._modules import MODULE_ATTRIBUTE_MAP

    iod = SOP_CLASS_UID_IOD_KEY_MAP.get(str(sop_class_uid))
    if iod is None:
        return None
    types: dict[str, str] = {}
    for module in IOD_MODULE_MAP[iod]:
        if module["ie"] not in ("Patient", "Study"):
            continue
        for item in MODULE_ATTRIBUTE_MAP[module["key"]]:
            if not item["path"]:
                types.setdefault(str(item["keyword"]), str(item["type"]))
    return types


def _valid_date_time(vr: str, text: str) -> bool:
    from pydicom.valuerep import DA, DT, TM

    try:
        if vr == "DA":
            return bool(_DA.match(text)) and DA(text) is not None
        if vr == "TM":
            return bool(_TM.match(text)) and TM(text) is not None
        return DT(text) is not None
    except (ValueError, TypeError, OverflowError):
        return False


def _date_time_fix(keyword: str, vr: str, value: Any, kind: str) -> Fix | None:
    text = "" if value is None else str(value).strip()
    if not text or _valid_date_time(vr, text):
        return None
    strip = {"DA": ".-/", "TM": ":", "DT": ":-. "}[vr]
    repaired = text
    if vr == "DT":
        repaired = None      # DT separators are ambiguous (fraction vs. separator): no guessing
    else:
        for ch in strip:
            repaired = repaired.replace(ch, "")
    if repaired and _valid_date_time(vr, repaired):
        return Fix(keyword, repaired, f"{keyword} {text!r} is not a DICOM {vr}: written as {repaired!r}")
    if kind.startswith("2"):
        return Fix(keyword, "", f"{keyword} {text!r} is not a valid DICOM {vr}: written empty (unknown)")
    return Fix(keyword, DROP, f"{keyword} {text!r} is not a valid DICOM {vr}: left out")


def _invalid(vr: str, text: str) -> bool:
    from pydicom import config
    from pydicom.valuerep import validate_value

    try:
        validate_value(vr, text, config.RAISE)
    except (ValueError, TypeError):
        return True
    return False


def _values(value: Any) -> list[Any] | None:
    """The values of a multi-valued element, or None for a single value."""
    from pydicom.multival import MultiValue

    return list(value) if isinstance(value, (list, tuple, MultiValue)) else None


def _value_fix(keyword: str, vr: str, value: Any, kind: str) -> Fix | None:
    """A copied value its VR does not allow (too long, wrong characters or format): text cut to the
    VR's length, a bare age in years given its unit, else emptied (Type 2) or left out."""
    many = _values(value)
    texts = [str(v) for v in (many if many is not None else [value])]
    if not any(_invalid(vr, t) for t in texts):
        return None
    shown = "\\".join(texts)
    limit = _MAX_TEXT.get(vr)
    if limit is not None:
        cut = [t if not _invalid(vr, t) else t[:limit].rstrip() for t in texts]
        if not any(_invalid(vr, t) for t in cut):
            cut_shown = "\\".join(cut)
            return Fix(keyword, cut if many is not None else cut[0],
                       f"{keyword} {shown!r} is longer than {vr} allows: cut to {cut_shown!r}")
    if vr == "AS" and many is None and re.fullmatch(r"\d{1,3}", texts[0].strip()):
        age = f"{int(texts[0]):03d}Y"
        return Fix(keyword, age, f"{keyword} {shown!r} is not a DICOM age: written as {age!r} (years)")
    if kind.startswith("2"):
        return Fix(keyword, "", f"{keyword} {shown!r} is not a valid {vr}: written empty (unknown)")
    return Fix(keyword, DROP, f"{keyword} {shown!r} is not a valid {vr}: left out")


def _sex_fix(value: Any) -> Fix | None:
    """PatientSex must be M, F, O or empty (highdicom refuses anything else)."""
    text = "" if value is None else str(value).strip()
    up = {"MALE": "M", "FEMALE": "F", "OTHER": "O"}.get(text.upper(), text.upper())
    if up == text and up in ("", "M", "F", "O"):
        return None
    if up in ("M", "F", "O"):
        return Fix("PatientSex", up, f"PatientSex {text!r} written as {up!r}")
    return Fix("PatientSex", "", f"PatientSex {text!r} is not M, F or O: written empty (unknown)")


def _empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, (list, tuple)) or hasattr(value, "__len__") and not isinstance(value, (str, bytes)):
        return len(value) == 0
    return not str(value).strip()


def _number_list(value: Any) -> list[float] | None:
    if value is None:
        return None
    items = list(value) if isinstance(value, (list, tuple)) or hasattr(value, "__iter__") and \
        not isinstance(value, (str, bytes)) else [value]
    try:
        numbers = [float(v) for v in items]
    except (TypeError, ValueError):
        return None
    return numbers or None


def _frame_of_reference_mandatory(sop_class: str) -> bool:
    """The IOD requires a frame of reference (CT, MR, ...): it must not be dropped (a slice without a
    position is then refused by the SEG writer's up-front check instead)."""
    from highdicom._module_utils import ModuleUsageValues, get_module_usage

    try:
        return get_module_usage("frame-of-reference", sop_class) == ModuleUsageValues.MANDATORY
    except KeyError:            # a SOP class highdicom does not know: refused up front anyway
        return True


def _spacing_pair(value: Any) -> bool:
    numbers = _number_list(value)
    return numbers is not None and len(numbers) == 2 and min(numbers) > 0


def _lossy_fixes(ds: Dataset) -> list[Fix]:
    if str(ds.get("LossyImageCompression") or "").strip() != "01":
        return []
    out: list[Fix] = []
    ratio, method = ds.get("LossyImageCompressionRatio"), ds.get("LossyImageCompressionMethod")
    if _empty(ratio) and "LossyImageCompressionRatio" in ds:
        out.append(Fix("LossyImageCompressionRatio", DROP, "LossyImageCompressionRatio is empty: left out"))
    if _empty(method):
        syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
        guess = _LOSSY_METHOD_BY_SYNTAX.get(syntax)
        if guess:
            out.append(Fix("LossyImageCompressionMethod", guess, "LossyImageCompression is 01 without "
                           f"LossyImageCompressionMethod: {guess}, from the transfer syntax {syntax}"))
        elif "LossyImageCompressionMethod" in ds:
            out.append(Fix("LossyImageCompressionMethod", DROP, "LossyImageCompressionMethod is empty: left out"))
    unknown = [kw for kw, value in (("LossyImageCompressionRatio", ratio), ("LossyImageCompressionMethod", method))
               if _empty(value) and not any(f.keyword == kw and f.value is not DROP for f in out)]
    if unknown:
        # highdicom reads both when the flag is 01; the SEG gets the flag back after it is built.
        out.append(Fix("LossyImageCompression", DROP, f"LossyImageCompression is 01 without {' or '.join(unknown)}: "
                       "the SEG says 01 and leaves the unknown value(s) out"))
    return out


def slice_spacing(sources: list[Dataset]) -> float | None:
    """The spacing of single-frame slices along their normal (median of the gaps between distinct
    positions); None with fewer than two positioned slices."""
    import numpy as np

    points = []
    for ds in sources:
        ipp, iop = _number_list(ds.get("ImagePositionPatient")), _number_list(ds.get("ImageOrientationPatient"))
        if ipp is None or iop is None or len(ipp) != 3 or len(iop) != 6:
            return None
        points.append((np.asarray(ipp), np.cross(iop[:3], iop[3:])))
    if len(points) < 2:
        return None
    distances = sorted(float(p @ points[0][1]) for p, _ in points)
    gaps = [b - a for a, b in zip(distances, distances[1:]) if b - a > 1e-4]
    return float(np.median(gaps)) if gaps else None


def legacy_fixes(ds: Dataset, *, spacing: float | None = None) -> list[Fix]:
    """What has to change on a copy of source ``ds`` for a conformant SEG (see the module docstring).
    ``spacing``: the series' slice spacing (:func:`slice_spacing`), the SliceThickness of a slice
    that has none. An empty list: use the source as it is."""
    with warnings.catch_warnings():
        # pydicom warns on reading the very values repaired here (invalid value, value too long);
        # the repair notes say it instead.
        warnings.simplefilter("ignore", UserWarning)
        return _legacy_fixes(ds, spacing)


def _legacy_fixes(ds: Dataset, spacing: float | None) -> list[Fix]:
    fixes: list[Fix] = []
    sop_class = str(ds.get("SOPClassUID") or getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", ""))
    types = copied_attribute_types(sop_class) or {}
    for keyword in ("PatientBirthDate", "StudyDate", "StudyTime",     # parsed by highdicom, Type 2
                    "PositionReferenceIndicator"):                    # copied with the frame of reference
        types.setdefault(keyword, "2")
    for keyword, kind in types.items():
        if keyword not in ds:
            continue
        try:
            elem = ds[keyword]
            value = elem.value
        except (ValueError, TypeError, OverflowError) as e:    # e.g. a DS 'abc': pydicom cannot convert it
            fixes.append(Fix(keyword, "" if kind.startswith("2") else DROP, f"{keyword} cannot be read ({e}): "
                             + ("written empty (unknown)" if kind.startswith("2") else "left out")))
            continue
        if elem.VR == "UI":         # blank UIDs: the SEG writer's UID repair
            continue
        if elem.VR in ("DA", "TM", "DT"):
            if _values(value) is not None:
                continue        # multi-valued dates (rare; not copied by highdicom's parser)
            fix = _date_time_fix(keyword, elem.VR, value, kind)
            if fix is not None:
                fixes.append(fix)
        elif keyword == "PatientSex":
            fix = _sex_fix(value)
            if fix is not None:
                fixes.append(fix)
        elif elem.VR in _STRING_VRS and not _empty(value):
            fix = _value_fix(keyword, elem.VR, value, kind)
            if fix is not None:
                fixes.append(fix)
        elif _empty(value) and kind.startswith("1") or (elem.VR == "SQ" and _empty(value) and kind.startswith("3")):
            # empty Type 1/1C values and item-less Type 3 sequences fail dciodvfy; an empty plain
            # Type 3 value is legal and stays
            if (keyword == "DeidentificationMethod" and str(ds.get("PatientIdentityRemoved") or "").upper() == "YES"
                    and not ds.get("DeidentificationMethodCodeSequence")):
                fixes.append(Fix(keyword, _DEIDENTIFICATION_UNKNOWN, "DeidentificationMethod is empty although "
                                 f"PatientIdentityRemoved is YES: written as {_DEIDENTIFICATION_UNKNOWN!r}"))
            else:
                fixes.append(Fix(keyword, DROP, f"{keyword} is empty: left out"))

    has_position = ds.get("ImagePositionPatient") is not None and ds.get("ImageOrientationPatient") is not None
    enhanced = "PerFrameFunctionalGroupsSequence" in ds
    if "FrameOfReferenceUID" in ds and not str(ds.FrameOfReferenceUID or "").strip():
        fixes.append(Fix("FrameOfReferenceUID", DROP, "FrameOfReferenceUID is empty: left out"))
    elif not enhanced and "FrameOfReferenceUID" in ds and not has_position and \
            int(ds.get("NumberOfFrames") or 1) == 1 and not _frame_of_reference_mandatory(sop_class):
        fixes.append(Fix("FrameOfReferenceUID", DROP, "the image has a FrameOfReferenceUID but no "
                         "ImagePositionPatient/ImageOrientationPatient: written as a projection SEG without "
                         "a frame of reference"))
    modality = str(ds.get("Modality") or "")
    if modality and _invalid("CS", modality):      # the SEG's ContentLabel is "<Modality>_SEG" (CS)
        cleaned = re.sub(r"[^A-Z0-9 _]", "", modality.upper())[:12].strip() or "OT"
        fixes.append(Fix("Modality", cleaned, f"Modality {modality!r} is not a DICOM code string: {cleaned!r} "
                         "in the SEG's ContentLabel"))
    if not enhanced and not _spacing_pair(ds.get("PixelSpacing")):
        stand_in = next((kw for kw in ("ImagerPixelSpacing", "ImagePlanePixelSpacing") if _spacing_pair(ds.get(kw))),
                        None)
        what = "no PixelSpacing" if _empty(ds.get("PixelSpacing")) else \
            f"PixelSpacing {str(ds.get('PixelSpacing'))!r} is not a pixel spacing"
        if stand_in is not None:
            fixes.append(Fix("PixelSpacing", list(ds[stand_in].value),
                             f"{what}: the SEG's pixel spacing is the source's {stand_in}"))
        elif "PixelSpacing" in ds:
            fixes.append(Fix("PixelSpacing", DROP, f"{what}: left out"))
    if not enhanced and "SpacingBetweenSlices" in ds:
        between = _number_list(ds.get("SpacingBetweenSlices"))
        if between is None or len(between) != 1 or between[0] == 0:
            fixes.append(Fix("SpacingBetweenSlices", DROP,
                             f"SpacingBetweenSlices {ds.get('SpacingBetweenSlices')!r} is not a spacing: left out"))
        elif between[0] < 0:
            magnitude = f"{-between[0]:.10g}"
            fixes.append(Fix("SpacingBetweenSlices", magnitude, f"SpacingBetweenSlices {between[0]:g} is negative "
                             f"(not allowed in a SEG): written as {magnitude}"))
    thickness = _number_list(ds.get("SliceThickness"))
    if not enhanced and has_position and str(ds.get("FrameOfReferenceUID") or "").strip() and \
            (thickness is None or len(thickness) != 1 or thickness[0] <= 0) and spacing:
        value = f"{spacing:.6g}"
        fixes.append(Fix("SliceThickness", value, ("no SliceThickness" if _empty(ds.get("SliceThickness")) else
                          f"SliceThickness {str(ds.SliceThickness)!r} is not a thickness")
                         + f": the SEG's is the slice spacing, {value} mm"))
    if enhanced:
        for keyword in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
            fix = _functional_group_fix(keyword, ds.get(keyword))
            if fix is not None:
                fixes.append(fix)
    fixes.extend(_lossy_fixes(ds))
    return fixes


def _functional_group_fix(keyword: str, groups) -> Fix | None:
    """A negative SpacingBetweenSlices in the Pixel Measures of an enhanced image's functional groups
    (highdicom copies the shared one into the SEG): its magnitude, on a copy of the sequence."""
    import copy

    def negative(item) -> bool:
        pm = item.get("PixelMeasuresSequence")
        values = _number_list(pm[0].get("SpacingBetweenSlices")) if pm else None
        return bool(values) and values[0] < 0

    if not groups or not any(negative(item) for item in groups):
        return None
    repaired = copy.deepcopy(groups)
    found = sorted({float(item.PixelMeasuresSequence[0].SpacingBetweenSlices) for item in repaired if negative(item)})
    for item in repaired:
        if negative(item):
            pm = item.PixelMeasuresSequence[0]
            pm.SpacingBetweenSlices = f"{-float(pm.SpacingBetweenSlices):.10g}"
    return Fix(keyword, repaired, f"SpacingBetweenSlices {', '.join(f'{v:g}' for v in found)} in the {keyword} is "
               "negative (not allowed in a SEG): written as its magnitude")


def apply_fixes(ds: Dataset, fixes: list[Fix]) -> None:
    """Apply ``fixes`` to ``ds`` (a copy of the source) in place."""
    for fix in fixes:
        if fix.value is DROP:
            if fix.keyword in ds:
                delattr(ds, fix.keyword)
        else:
            setattr(ds, fix.keyword, fix.value)


__all__ = ["DROP", "Fix", "LOSSY_KEYWORDS", "apply_fixes", "copied_attribute_types", "legacy_fixes"]
