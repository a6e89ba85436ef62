"""The DICOMweb datastore of the app (``--studies http://pacs/dicom-web``): MONAI Label's
:class:`~monailabel.datastore.dicom.DICOMWebDatastore` (series listed by QIDO, pulled by WADO into a
local cache, image id = SeriesInstanceUID), with final labels kept as DICOM SEG in the PACS by our
own SEG writer and read back so that a resubmitted label supersedes the earlier one.

**Writing** (:meth:`MedClipSamDicomWebDatastore.publish_label`, tag ``final``): the label, validated
by the guard in front of the store (:mod:`.store_guard`: NIfTI/NRRD or a DICOM SEG on the series'
grid, values of the vocabulary), becomes a DICOM SEG of the cached series through
:func:`medclipsam.serving.labels.write_label_as_seg` (highdicom; no dcmqi), which is STOWed to the
PACS. Only when the PACS has accepted it (its STOW answer lists the SEG's SOP Instance UID and no
failure) is the local label replaced; a label that cannot be written as SEG (wrong grid, empty,
unreadable) fails the request with 400, a STOW the PACS refuses or cannot take with 502, and in
both cases the previous local label and the PACS stay as they were. An empty final label is refused
(400): a DICOM SEG cannot be empty, and the PACS's earlier SEG would come back as the label. The steps:
:meth:`store_seg` (SEG + STOW, only the PACS changes), then the label's info records
:meth:`seg_info`, then the guard commits the local label atomically. Every submit adds one SEG
series (a viewer such as OHIF shows only the first instance of a SEG series, so a resubmit is a new
series rather than a new instance of the old one); the earlier SEGs stay in the PACS as history —
DICOMweb has no delete, and this store never deletes from the PACS.

**Ours and newest.** A SEG is *ours* when its Manufacturer is ``medclipsam``
(:data:`medclipsam.dicom.seg.MANUFACTURER`) and its SeriesDescription is ``medclipsam accepted
label`` (:data:`medclipsam.serving.labels.SEG_DESCRIPTION`), both set by the writer (SEGs of the
infer task's ``output=dicom_seg`` carry the models' description and are not accepted labels). Per
image series (the SEG's ReferencedSeriesSequence) the *newest* of ours is the one with the greatest
(ContentDate + ContentTime, which highdicom sets to the moment of writing with microseconds;
InstanceNumber; SeriesInstanceUID; SOPInstanceUID) — the times are the writing server's local clock,
so servers sharing a PACS should agree on the time.

**Reading** (``datalist()``, ``get_labeled_images()``; one QIDO for SEG series, the metadata of each
SEG series not seen before, and WADO only for a SEG newer than the local label): the local label of
a series records which SEG it is (``label info["seg"]``). It is replaced only by a strictly newer SEG
of ours, so an older SEG never overwrites a newer local label; the SEG is placed on the cached
series' slices (:func:`medclipsam.dicom.seg.read_dicom_seg`) and written on the image's NIfTI grid,
each segment with the vocabulary value of its name (``label N`` → N; a name outside the vocabulary →
the free-text value), and ``label_info`` lists the names. A local final label whose series has no
SEG of ours in the PACS any more is removed (the PACS is the shared record: every server and the
training subprocess see the same labels). If the PACS cannot be reached while reading, the local
labels are used as they are, with a warning.

Label ``ts`` (what the retraining trigger counts against the published model) is the SEG's content
time, the same on the server that submitted it and on any store that reads it back.

**SEGs made by other tools** (OHIF, 3D Slicer or a PACS workstation writing SEG directly to the PACS,
MONAI Label's own dcmqi SEGs) are left alone: never read as training labels, never counted, never
changed or deleted; they are counted in a log line. Their segment numbering need not follow our
vocabulary and they may be drafts; to make one a training label, load it in 3D Slicer and *Submit
Label* through the app.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List, Optional

from monailabel.datastore.dicom import DICOMwebClientX, DICOMWebDatastore
from monailabel.datastore.local import LocalDatastore
from monailabel.interfaces.datastore import DefaultLabelTag

from ..errors import InputError, MedClipSamError, UpstreamError
from .store_guard import GuardedStore, StorePolicy

logger = logging.getLogger(__name__)

FINAL = DefaultLabelTag.FINAL.value

# DICOM JSON tags (PS3.18 F.2) read from QIDO / metadata answers
_STUDY, _SERIES, _SOP = "0020000D", "0020000E", "00080018"
_MANUFACTURER, _SERIES_DESCRIPTION = "00080070", "0008103E"
_CONTENT_DATE, _CONTENT_TIME, _INSTANCE_NUMBER = "00080023", "00080033", "00200013"
_REFERENCED_SERIES, _REFERENCED_SOP, _FAILED_SOP = "00081115", "00081199", "00081198"


class LabelRejectedError(InputError):
    """400: the label cannot be a DICOM SEG of its series (wrong grid, empty, unreadable)."""


class PacsStoreError(UpstreamError):
    """502: the PACS did not take the SEG (unreachable, HTTP error, or a STOW answer that does not list
    it as stored) — not the client's fault."""


def _value(item: Dict[str, Any], tag: str) -> Any:
    values = (item.get(tag) or {}).get("Value") or []
    return values[0] if values else None


def _content_datetime(date: Any, time_: Any) -> str:
    """ContentDate + ContentTime as ``YYYYMMDDHHMMSS.ffffff`` (sortable as text); ``""`` without a date."""
    d = re.sub(r"\D", "", str(date or ""))
    if len(d) != 8:
        return ""
    t = str(time_ or "").replace(":", "").strip()
    whole, _, frac = t.partition(".")
    whole = re.sub(r"\D", "", whole)[:6].ljust(6, "0")
    frac = re.sub(r"\D", "", frac)[:6].ljust(6, "0")
    return f"{d}{whole}.{frac}"


def _epoch(content_dt: str) -> float:
    """The content date-time (the writing server's local time) as seconds since the epoch; 0 if none."""
    if not content_dt:
        return 0.0
    try:
        return datetime.strptime(content_dt, "%Y%m%d%H%M%S.%f").timestamp()
    except ValueError:
        return 0.0


@dataclass(frozen=True)
class SegRef:
    """One SEG instance of ours in the PACS and the image series it labels."""

    image: str            # referenced image SeriesInstanceUID (= the datastore's image id)
    study: str
    series: str           # the SEG's SeriesInstanceUID
    sop: str
    content: str          # YYYYMMDDHHMMSS.ffffff
    instance: int

    @property
    def key(self) -> tuple:
        return (self.content, self.instance, self.series, self.sop)

    @property
    def ts(self) -> float:
        return _epoch(self.content)

    @classmethod
    def from_info(cls, info: Any) -> "SegRef | None":
        try:
            return cls(**{k: info[k] for k in cls.__dataclass_fields__})     # type: ignore[arg-type]
        except (KeyError, TypeError):
            return None


def _json_fields(meta: Dict[str, Any]) -> Dict[str, Any]:
    """The attributes :func:`seg_ref_of` needs, from one instance's DICOM JSON (QIDO / WADO metadata)."""
    ref = _value(meta, _REFERENCED_SERIES)
    return {"Manufacturer": _value(meta, _MANUFACTURER), "SeriesDescription": _value(meta, _SERIES_DESCRIPTION),
            "ReferencedSeries": _value(ref, _SERIES) if isinstance(ref, dict) else None,
            "StudyInstanceUID": _value(meta, _STUDY), "SeriesInstanceUID": _value(meta, _SERIES),
            "SOPInstanceUID": _value(meta, _SOP), "ContentDate": _value(meta, _CONTENT_DATE),
            "ContentTime": _value(meta, _CONTENT_TIME), "InstanceNumber": _value(meta, _INSTANCE_NUMBER)}


def _dataset_fields(ds) -> Dict[str, Any]:
    """The same attributes from a pydicom data set."""
    refs = ds.get("ReferencedSeriesSequence") or []
    out = {k: ds.get(k) for k in ("Manufacturer", "SeriesDescription", "StudyInstanceUID", "SeriesInstanceUID",
                                  "SOPInstanceUID", "ContentDate", "ContentTime", "InstanceNumber")}
    out["ReferencedSeries"] = refs[0].get("SeriesInstanceUID") if refs else None
    return out


def seg_ref_of(fields: Dict[str, Any]) -> SegRef | None:
    """The :class:`SegRef` of one SEG instance (:func:`_json_fields` / :func:`_dataset_fields`) when
    the SEG is ours (module docstring), else None."""
    from ..dicom.seg import MANUFACTURER
    from .labels import SEG_DESCRIPTION

    text = {k: str(v).strip() if v is not None else "" for k, v in fields.items()}
    if text["Manufacturer"] != MANUFACTURER or text["SeriesDescription"] != SEG_DESCRIPTION:
        return None
    if not all(text[k] for k in ("ReferencedSeries", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")):
        return None
    try:
        instance = int(text["InstanceNumber"] or 0)
    except ValueError:
        instance = 0
    return SegRef(text["ReferencedSeries"], text["StudyInstanceUID"], text["SeriesInstanceUID"],
                  text["SOPInstanceUID"], _content_datetime(text["ContentDate"], text["ContentTime"]), instance)


def newest_per_image(refs: List[SegRef]) -> Dict[str, SegRef]:
    out: Dict[str, SegRef] = {}
    for r in refs:
        if r.image not in out or r.key > out[r.image].key:
            out[r.image] = r
    return out


class MedClipSamDicomWebDatastore(GuardedStore, DICOMWebDatastore):
    """MONAI Label's DICOMweb datastore with our SEG writer and newest-of-ours label reading (module
    docstring), guarded (:class:`~medclipsam.serving.store_guard.GuardedStore`: ids, tags and labels
    checked; no image uploads or deletions — the studies live in the PACS). ``vocabulary`` names the
    SEG segments and maps them back to label values."""

    accepts_image_uploads = False

    def __init__(self, client, search_filter: Dict[str, Any], cache_path: Optional[str] = None,
                 fetch_by_frame: bool = False, convert_to_nifti: bool = True, *, vocabulary=None,
                 policy: StorePolicy | None = None) -> None:
        self._vocabulary = vocabulary
        self.policy = policy or StorePolicy(vocabulary=vocabulary)
        self._sync_lock = threading.RLock()
        self._seg_meta: Dict[str, List[SegRef]] = {}       # SEG series UID -> our instances ([] = foreign)
        super().__init__(client, search_filter, cache_path=cache_path, fetch_by_frame=fetch_by_frame,
                         convert_to_nifti=convert_to_nifti)

    # ---- writing -------------------------------------------------------------------------------

    def publish_label(self, image_id: str, tag: str, staged: Path, info: Dict[str, Any], empty: bool = False) -> None:
        """The validated label (:class:`~medclipsam.serving.store_guard.GuardedStore` checked it and
        wrote it as the canonical NIfTI ``staged``) becomes the ``tag`` label of series ``image_id``. A
        ``final`` label goes to the PACS first (:meth:`store_seg`); the local label changes only once
        the PACS has it. Raises :class:`LabelRejectedError` (400) or :class:`PacsStoreError` (502),
        leaving everything as it was. An empty final label is refused: a DICOM SEG cannot be empty, and
        the earlier SEG would come back from the PACS as the label."""
        with self._sync_lock:
            if tag != FINAL:
                return super().publish_label(image_id, tag, staged, info, empty)
            if empty:
                raise LabelRejectedError(f"the final label of {image_id} is empty; a DICOM SEG needs at least one "
                                         "segment, so an empty final label cannot be stored in the PACS")
            ref = self.store_seg(image_id, staged, info)
            info.update(self.seg_info(ref))
            super().publish_label(image_id, tag, staged, info, empty)
            LocalDatastore.update_label_info(self, image_id, tag, {"ts": ref.ts})

    def dicom_dir(self, image_id: str) -> Path:
        """The series' DICOM files in the cache (pulled from the PACS when not there yet)."""
        self.get_image_uri(image_id)
        return Path(self._datastore.image_path()) / image_id

    @staticmethod
    def seg_info(ref: SegRef) -> Dict[str, Any]:
        """What the local label's info records about its SEG (:meth:`sync_labels` compares it)."""
        return {"seg": asdict(ref), "SeriesInstanceUID": ref.series}

    def store_seg(self, image_id: str, label_filename: str | Path, info: Dict[str, Any]) -> SegRef:
        """Write the final label ``label_filename`` of ``image_id`` as DICOM SEG (our writer; segment
        names from ``info["label_info"]`` and the vocabulary) and STOW it; returns the SEG stored. Only
        the PACS changes (one new SEG series). :class:`LabelRejectedError` (400) when the label cannot
        be a SEG of the series (wrong grid, empty, unreadable), :class:`PacsStoreError` (502) when the
        PACS does not take it."""
        import pydicom

        from .labels import write_label_as_seg

        image_dir = self.dicom_dir(image_id)
        with tempfile.TemporaryDirectory(prefix="medclipsam-seg-") as tmp:
            try:
                path = write_label_as_seg(image_dir, Path(label_filename), Path(tmp) / "seg.dcm",
                                          info.get("label_info"), self._vocabulary)
            except MedClipSamError as e:
                raise LabelRejectedError(f"final label of {image_id} not stored: {e}") from None
            ds = pydicom.dcmread(str(path))
        ref = seg_ref_of(_dataset_fields(ds))
        if ref is None or ref.image != image_id:
            raise RuntimeError(f"the SEG written for {image_id} does not reference it; nothing stored")
        try:
            answer = self._client.store_instances([ds])
        except Exception as e:
            raise PacsStoreError(f"the PACS did not store the DICOM SEG of the final label of {image_id} "
                               f"({type(e).__name__}: {e}); the previous label is unchanged") from None
        stored = {str(item.get("ReferencedSOPInstanceUID", "")) for item in answer.get("ReferencedSOPSequence") or []}
        failed = answer.get("FailedSOPSequence") or []
        if failed or ref.sop not in stored:
            reasons = ", ".join(str(item.get("FailureReason", "?")) for item in failed) or "not listed as stored"
            raise PacsStoreError(f"the PACS refused the DICOM SEG of the final label of {image_id} "
                               f"(failure reason {reasons}); the previous label is unchanged")
        self._seg_meta[ref.series] = [ref]
        logger.info("medclipsam: final label of %s stored in the PACS as SEG series %s", image_id, ref.series)
        return ref

    # ---- reading -------------------------------------------------------------------------------

    def get_label_uri(self, label_id: str, label_tag: str, image_id: str = "") -> str:
        """The local label file (kept in step with the PACS by :meth:`sync_labels`)."""
        return LocalDatastore.get_label_uri(self, label_id, label_tag)

    def pacs_labels(self) -> Dict[str, SegRef]:
        """The newest SEG of ours per image series in the PACS (QIDO + metadata of new SEG series)."""
        from .labels import SEG_DESCRIPTION

        rows = self._client.search_for_series(search_filters={"Modality": "SEG"},
                                              fields=["SeriesDescription", "Manufacturer"], get_remaining=True)
        refs: List[SegRef] = []
        foreign = 0
        for row in rows:
            study, series = str(_value(row, _STUDY) or ""), str(_value(row, _SERIES) or "")
            if not (study and series):
                continue
            description = _value(row, _SERIES_DESCRIPTION)
            if description is not None and str(description) != SEG_DESCRIPTION:
                foreign += 1
                continue
            if series not in self._seg_meta:
                metas = self._client.retrieve_series_metadata(study, series)
                self._seg_meta[series] = [r for r in (seg_ref_of(_json_fields(m)) for m in metas) if r is not None]
            found = self._seg_meta[series]
            foreign += not found
            refs.extend(found)
        if foreign:
            logger.info("medclipsam: %d SEG series in the PACS are not accepted labels of this app (made by "
                        "other tools) and are not used as labels", foreign)
        return newest_per_image(refs)

    def sync_labels(self) -> None:
        """Bring the local final labels in step with the newest SEG of ours per series (module docstring)."""
        with self._sync_lock:
            try:
                remote = self.pacs_labels()
                known = set(self.list_images()) | set(LocalDatastore.list_images(self))
            except Exception as e:                     # PACS down: keep what we have
                logger.warning("medclipsam: cannot read the labels in the PACS (%s: %s); using the labels "
                               "cached locally", type(e).__name__, e)
                return
            for image_id, ref in sorted(remote.items()):
                if image_id not in known:
                    logger.info("medclipsam: SEG %s labels series %s, which the datastore does not list; "
                                "ignored", ref.series, image_id)
                    continue
                local = SegRef.from_info(self._local_info(image_id).get("seg"))
                if local is not None and local.key >= ref.key:
                    continue                           # the same SEG, or a newer local label
                try:
                    self._download_label(ref)
                except (MedClipSamError, OSError) as e:
                    logger.warning("medclipsam: SEG %s of series %s not read: %s", ref.series, image_id, e)
            for image_id in LocalDatastore.get_labeled_images(self):
                if image_id not in remote:
                    logger.info("medclipsam: the PACS has no accepted label of %s any more; local final label "
                                "removed", image_id)
                    self._remove_local_final(image_id)

    def _local_info(self, image_id: str) -> Dict[str, Any]:
        if not LocalDatastore.get_label_uri(self, image_id, FINAL):
            return {}
        return LocalDatastore.get_label_info(self, image_id, FINAL) or {}

    def _remove_local_final(self, image_id: str) -> None:
        path = LocalDatastore.get_label_uri(self, image_id, FINAL)
        if path and os.path.isfile(path):
            os.unlink(path)
        obj = self._datastore.objects.get(image_id)
        if obj is not None and obj.labels.pop(FINAL, None) is not None:
            self._update_datastore_file()

    def _download_label(self, ref: SegRef) -> None:
        """Read SEG ``ref`` from the PACS onto the image's grid and make it the local final label."""
        from ..dicom import read_series
        from ..dicom.seg import read_dicom_seg
        from ..volume.itk_io import read_volume, write_label
        from ..volume.outputs import slice_frames
        from .infer import same_grid

        image_uri = self.get_image_uri(ref.image)
        image_dir = Path(self._datastore.image_path()) / ref.image
        with self._staging() as tmp:                 # inside the store: the label is moved into place
            seg_path = Path(tmp) / "seg.dcm"
            self._client.retrieve_instance(ref.study, ref.series, ref.sop).save_as(str(seg_path))
            series = read_series(image_dir)
            try:
                datasets, frames = slice_frames(series)
                numbers, segments = read_dicom_seg(seg_path, datasets, frames=frames)
                grid = series.geometry
            finally:
                series.close()
            image = read_volume(image_uri) if os.path.isfile(image_uri) else None
            if image is not None and not same_grid(grid, image.geometry):
                raise InputError(f"the cached image {Path(image_uri).name} is not on the grid of its DICOM series")
            lut, label_info = self._segment_values(segments)
            labels = lut[numbers]
            out = write_label(Path(tmp) / f"{ref.image}.nii.gz", labels, image.geometry if image else grid)
            self.commit_label(ref.image, FINAL, out, {"label_info": label_info, **self.seg_info(ref)})
            LocalDatastore.update_label_info(self, ref.image, FINAL, {"ts": ref.ts})
        logger.info("medclipsam: final label of %s read from SEG series %s", ref.image, ref.series)

    def _segment_values(self, segments) -> tuple:
        """Segment number → label value (vocabulary value of the segment's name; ``label N`` → N; other
        names → the free-text value), and the ``label_info`` naming those values."""
        import numpy as np

        lut = np.zeros(256, dtype=np.uint8)
        names: Dict[int, str] = {}
        for spec in segments:
            number, name = int(spec.label), (spec.name or "").strip()
            entry = self._vocabulary.find(name) if self._vocabulary is not None and name else None
            match = re.fullmatch(r"label (\d+)", name)
            if entry is not None:
                value = entry.value
            elif match and 0 < int(match.group(1)) < 256:
                value = int(match.group(1))
            elif self._vocabulary is not None:
                value = self._vocabulary.prompted_value
            else:
                value = number
            if 0 < number < 256:
                lut[number] = value
                names.setdefault(value, name or f"label {value}")
        return lut, [{"name": n, "idx": v} for v, n in sorted(names.items())]

    def _download_labeled_data(self) -> None:
        self.sync_labels()

    def datalist(self, full_path=True) -> List[Dict[str, Any]]:
        self.sync_labels()
        return LocalDatastore.datalist(self, full_path)

    def get_labeled_images(self, label_tag: Optional[str] = None, labels: Optional[List[str]] = None) -> List[str]:
        """Series with a final label (one each, however many SEGs the PACS holds for it), in step with
        the PACS (not cached: a label submitted a moment ago is listed)."""
        self.sync_labels()
        return sorted(LocalDatastore.get_labeled_images(self))

    def get_unlabeled_images(self, label_tag: Optional[str] = None, labels: Optional[List[str]] = None) -> List[str]:
        labeled = set(self.get_labeled_images())
        return [s for s in self.list_images() if s not in labeled]


def dicomweb_datastore(studies: str, vocabulary=None,
                       policy: StorePolicy | None = None) -> MedClipSamDicomWebDatastore | None:
    """The datastore for a DICOMweb URL, set up from MONAI Label's settings as MONAI Label's own
    ``_init_dicomweb_datastore`` does (``MONAI_LABEL_DICOMWEB_USERNAME/PASSWORD`` basic auth, a Google
    Cloud session for ``googleapis.com``, ``MONAI_LABEL_QIDO/WADO/STOW_PREFIX``, ``..._SEARCH_FILTER``,
    ``..._CACHE_PATH``, ``..._FETCH_BY_FRAME``, ``..._CONVERT_TO_NIFTI``), without dcmqi. None when
    ``MONAI_LABEL_DATASTORE`` picks MONAI Label's XNAT or DSA store for the URL instead."""
    from monailabel.config import settings

    if settings.MONAI_LABEL_DATASTORE.lower() in ("xnat", "dsa"):
        return None
    url = studies.strip().rstrip("/")
    if "googleapis.com" in url:
        from dicomweb_client import DICOMwebClient
        from dicomweb_client.ext.gcp.session_utils import create_session_from_gcp_credentials

        client = DICOMwebClient(url=url, session=create_session_from_gcp_credentials())
    else:
        session = None
        if settings.MONAI_LABEL_DICOMWEB_USERNAME and settings.MONAI_LABEL_DICOMWEB_PASSWORD:
            from dicomweb_client.session_utils import create_session_from_user_pass

            session = create_session_from_user_pass(settings.MONAI_LABEL_DICOMWEB_USERNAME,
                                                    settings.MONAI_LABEL_DICOMWEB_PASSWORD)
        client = DICOMwebClientX(url=url, session=session, qido_url_prefix=settings.MONAI_LABEL_QIDO_PREFIX,
                                 wado_url_prefix=settings.MONAI_LABEL_WADO_PREFIX,
                                 stow_url_prefix=settings.MONAI_LABEL_STOW_PREFIX)
    cache = (settings.MONAI_LABEL_DICOMWEB_CACHE_PATH or "").strip()
    return MedClipSamDicomWebDatastore(client, settings.MONAI_LABEL_DICOMWEB_SEARCH_FILTER,
                                       cache_path=cache or None,
                                       fetch_by_frame=settings.MONAI_LABEL_DICOMWEB_FETCH_BY_FRAME,
                                       convert_to_nifti=settings.MONAI_LABEL_DICOMWEB_CONVERT_TO_NIFTI,
                                       vocabulary=vocabulary, policy=policy)
