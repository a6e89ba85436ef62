"""A MONAI Label datastore over a local folder of DICOM series (MONAI Label's local datastore takes
only flat NIfTI/NRRD files, ``docs/monailabel.md`` §Datastores).

``--studies /path/to/dicom`` (any nesting, any file names): every image series found (SR, SEG,
RTSTRUCT, presentation states and series made only of localizers are skipped) is one image whose id
is its SeriesInstanceUID. Beside the studies, in ``<studies>/.medclipsam/`` (or ``cache_dir``), the
store keeps what MONAI Label needs:

* ``images/<uid>.nii.gz`` — the series as a NIfTI volume on the series' own grid (what 3D Slicer
  downloads), made once and remade when the series' files change;
* ``images/<uid>/`` — links to the series' files, so the infer task segments the DICOM itself
  (modality, window, DICOM SEG output; :mod:`medclipsam.serving.infer`);
* ``labels/<tag>/<uid>.nii.gz`` — labels, as in MONAI Label's local datastore (``final``:
  accepted labels, the training data);
* ``dicom-seg/<uid>.dcm`` — every ``final`` label also as a DICOM SEG referencing the series
  (our highdicom writer), for PACS import and other DICOM viewers.

The DICOM files are only read. A series that cannot be stored as one volume (irregular spacing,
colour) is left out with a log line naming it and why.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from monailabel.datastore.local import LocalDatastore

from ..errors import InputError, MedClipSamError
from .store_guard import GuardedStore, StorePolicy

logger = logging.getLogger(__name__)

STORE_DIR = ".medclipsam"
MANIFEST = "series.json"


def _files(root: Path, exclude: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        dirnames[:] = sorted(n for n in dirnames if (d / n).resolve() != exclude.resolve() and not n.startswith("."))
        out.extend(d / f for f in sorted(filenames) if not f.startswith("."))
    return out


def _fingerprint(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        st = p.stat()
        h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def index_dicom_folder(studies: Path, store: Path) -> dict[str, dict[str, Any]]:
    """Find the image series under ``studies`` and bring ``store/images`` up to date; returns
    ``{uid: {"files": [...], "nifti": path, "description": ..., "modality": ...}}``.

    A series made only of localizer images (ImageType LOCALIZER: CT scout views, projections, not
    slices of a volume) is not a study: it is left out with a log line, and what an earlier index
    made of it is removed (localizers inside a series of slices are dropped by the reader)."""
    import shutil

    import pydicom

    from ..dicom import read_series, scan_series
    from ..volume.itk_io import write_image

    images = store / "images"
    images.mkdir(parents=True, exist_ok=True)
    manifest_path = store / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        manifest = {}
    files = _files(studies, store)
    if not files:
        logger.warning("medclipsam: no files under %s", studies)
        return {}
    try:
        summaries = scan_series(files)
    except MedClipSamError as e:
        logger.warning("medclipsam: no DICOM image series under %s (%s)", studies, e)
        return {}
    out: dict[str, dict[str, Any]] = {}
    for s in summaries:
        uid = s.series_uid
        if not uid:
            logger.warning("medclipsam: a series without SeriesInstanceUID under %s is left out", studies)
            continue
        try:
            series = read_series(files, series_uid=uid)
        except MedClipSamError as e:
            logger.warning("medclipsam: series %s left out: %s", uid, e)
            continue
        try:
            # the reader keeps localizers only when the series has nothing else: its first slice tells
            image_type = pydicom.dcmread(series.slices[0].path, stop_before_pixels=True,
                                         specific_tags=["ImageType"]).get("ImageType") or []
            image_type = [str(image_type)] if isinstance(image_type, str) else [str(v) for v in image_type]
            if "LOCALIZER" in [v.upper() for v in image_type]:
                logger.info("medclipsam: series %s (%s, %s) left out: a localizer (ImageType %s), not slices of a "
                            "volume", uid, s.modality, s.description or "no description", "\\".join(image_type))
                if uid in manifest:                                   # made by an earlier index: not a study
                    (images / f"{uid}.nii.gz").unlink(missing_ok=True)
                    shutil.rmtree(images / uid, ignore_errors=True)
                continue
            paths = sorted({Path(ref.path).resolve() for ref in series.slices})
            fp = _fingerprint(paths)
            nifti = images / f"{uid}.nii.gz"
            links = images / uid
            if manifest.get(uid, {}).get("fingerprint") != fp or not nifti.is_file():
                write_image(nifti, series)
                if links.exists():
                    for old in links.iterdir():
                        old.unlink()
                links.mkdir(exist_ok=True)
                for i, f in enumerate(paths):
                    (links / f"{i:05d}.dcm").symlink_to(f)
        except MedClipSamError as e:
            logger.warning("medclipsam: series %s left out: %s", uid, e)
            continue
        finally:
            series.close()
        out[uid] = {"files": [str(p) for p in paths], "fingerprint": fp, "nifti": str(nifti),
                    "description": s.description, "modality": s.modality, "study_uid": s.study_uid}
    tmp = manifest_path.with_suffix(".partial")
    tmp.write_text(json.dumps(out, indent=1))
    os.replace(tmp, manifest_path)
    return out


class DicomFolderDatastore(GuardedStore, LocalDatastore):
    """MONAI Label datastore over a local DICOM folder (module docstring), guarded
    (:class:`~medclipsam.serving.store_guard.GuardedStore`): no image uploads or deletions (the
    studies are DICOM), labels validated, a ``final`` label stored only together with its DICOM SEG."""

    accepts_image_uploads = False

    def __init__(self, studies: str | Path, cache_dir: str | Path | None = None, *, vocabulary=None,
                 auto_reload: bool = False, read_only: bool = False, policy: StorePolicy | None = None) -> None:
        self.studies = Path(studies).resolve()
        if not self.studies.is_dir():
            raise MedClipSamError(f"studies folder {self.studies} not found; pass a folder of DICOM series")
        self.store = Path(cache_dir).resolve() if cache_dir else self.studies / STORE_DIR
        self.vocabulary = vocabulary
        self.policy = policy or StorePolicy(vocabulary=vocabulary)
        self.series = index_dicom_folder(self.studies, self.store)
        super().__init__(str(self.store), images_dir="images", labels_dir="labels", extensions=("*.nii.gz",),
                         auto_reload=auto_reload, read_only=read_only)
        for uid, meta in self.series.items():
            info = {k: meta[k] for k in ("description", "modality", "study_uid")}
            try:
                self.update_image_info(uid, {"dicom": info})
            except MedClipSamError:               # an image the base class has not indexed: skipped
                logger.debug("no datastore entry for %s", uid)

    def name(self) -> str:
        return f"DICOM folder {self.studies}"

    def dicom_dir(self, image_id: str) -> Path:
        return self.store / "images" / image_id

    def seg_path(self, image_id: str) -> Path:
        return self.store / "dicom-seg" / f"{image_id}.dcm"

    def publish_label(self, image_id: str, tag: str, staged: Path, info: dict[str, Any], empty: bool = False) -> None:
        """A ``final`` label: its DICOM SEG is written first (beside, then moved into place after the
        label), so a SEG that cannot be made fails the request and leaves label and SEG as they were.
        An empty final label ("nothing there") is kept; a DICOM SEG cannot be empty, so an earlier
        SEG of the image is removed rather than left stale."""
        from .labels import write_label_as_seg

        if tag != "final":
            return super().publish_label(image_id, tag, staged, info, empty)
        dest = self.seg_path(image_id)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if empty:
            super().publish_label(image_id, tag, staged, info, empty)
            if dest.exists():
                dest.unlink()
                logger.info("medclipsam: empty final label of %s: its earlier DICOM SEG removed", image_id)
            return
        partial = staged.with_name("label.dcm")
        try:
            write_label_as_seg(self.dicom_dir(image_id), staged, partial, info.get("label_info"), self.vocabulary)
        except MedClipSamError as e:
            raise InputError(f"the final label of {image_id} was not saved: its DICOM SEG could not be written "
                             f"({e})") from None
        super().publish_label(image_id, tag, staged, info, empty)
        os.replace(partial, dest)
