"""Datastores that check what they are asked to store (MONAI Label's local store and ours).

:class:`GuardedStore` sits in front of a MONAI Label ``LocalDatastore`` (or a subclass: our DICOM
folder and DICOMweb stores) and is where every id, tag and upload is checked, whichever route or
task calls the store — the HTTP routes (:mod:`.routes`) check again before they read an upload, so
a refusal comes early, but the store does not rely on them:

* images and labels are named by the store's own ids (:func:`.guard.check_known_image`); a label
  tag and a new image id match strict patterns; every written path stays inside the store;
* a label is validated against its image (:mod:`.label_check`: format, grid, integer values in the
  vocabulary, size) and written **atomically** under the canonical name ``labels/<tag>/<id>.nii.gz``
  — a refused or failed save leaves the previous label as it was; stores that also keep the label
  as DICOM SEG write the SEG first (:meth:`GuardedStore.publish_label`), so a SEG that cannot be
  written fails the request instead of leaving a stale one;
* deleting an image is refused unless the operator allows it (``--conf allow_delete true``), and
  only a store that owns its image files can delete them;
* image and label info cannot overwrite the keys the store itself keeps (``ts``, ``name``, ``path``).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from ..errors import ConflictError, InputError, NotFoundError, RefusedError
from .guard import check_known_image, check_name, check_tag, confine, shown
from .vocabulary import Vocabulary

logger = logging.getLogger(__name__)

CANONICAL_LABEL_EXT = ".nii.gz"
IMAGE_UPLOAD_EXTENSIONS = (".nii.gz", ".nii", ".nrrd")
RESERVED_INFO_KEYS = ("ts", "name", "path")
STAGING_DIR = ".medclipsam-staging"


@dataclass
class StorePolicy:
    """What a guarded store accepts (resolved once from the app's ``--conf``, :mod:`.app_setup`)."""

    vocabulary: Vocabulary | None = None
    allow_delete: bool = False                  # DELETE /datastore/image (a source study)
    label_limits: Any = None                    # label_check.LabelLimits (None: its defaults)
    max_info_bytes: int = 64 * 1024             # image/label info JSON
    notes: list[str] = field(default_factory=list)

    def limits(self):
        from .label_check import LabelLimits

        return self.label_limits or LabelLimits()


def check_info(info: Any, what: str, max_bytes: int) -> dict[str, Any]:
    """Info a client sends for an image or label: a JSON object, small, without the store's own keys."""
    import json

    if not isinstance(info, Mapping):
        raise InputError(f"{what} must be a JSON object, e.g. {{\"comment\": \"checked\"}}")
    if len(json.dumps(info, default=str)) > max_bytes:
        raise InputError(f"{what} is larger than {max_bytes // 1024} KiB; send less")
    reserved = sorted(k for k in info if k in RESERVED_INFO_KEYS)
    if reserved:
        raise InputError(f"{what} may not set {', '.join(reserved)}: the datastore keeps those itself")
    return dict(info)


def check_image_upload(path: Path, name: str) -> None:
    """An uploaded image: a self-contained NIfTI/NRRD file (:func:`.label_check.check_volume_file`)
    whose header reads as a 3D volume."""
    from .infer import _volume_geometry
    from .label_check import check_volume_file

    try:
        check_volume_file(path, name)
    except InputError as e:
        raise InputError(f"the uploaded image is refused: {str(e).replace('label map', 'volume')}") from None
    if _volume_geometry(path) is None:
        raise InputError(f"the uploaded image {shown(name)} is not a readable 3D volume; upload a NIfTI (.nii.gz) "
                         "or NRRD volume")


class GuardedStore:
    """Mixin: put it before a ``LocalDatastore`` base (module docstring)."""

    policy: StorePolicy = StorePolicy()
    accepts_image_uploads: bool = True          # False for stores whose images come from DICOM
    label_formats_note: str = "NIfTI (.nii.gz, .nii) or NRRD (.nrrd, .seg.nrrd)"

    # -- what a subclass tells ---------------------------------------------------------------
    def dicom_dir(self, image_id: str) -> Path | None:
        """The image's DICOM series folder, for stores that have one (then DICOM SEG labels are accepted)."""
        return None

    @property
    def store_root(self) -> Path:
        return Path(self._datastore_path).resolve()           # LocalDatastore's folder

    # -- checks ------------------------------------------------------------------------------
    def known_image(self, image_id: str) -> str:
        return check_known_image(image_id, self.list_images())

    def _label_dir(self, tag: str) -> Path:
        return confine(self.store_root, self._datastore.label_path(check_tag(tag)))

    @contextmanager
    def _staging(self) -> Iterator[Path]:
        """A private folder inside the store (same file system, so ``os.replace`` is atomic)."""
        root = self.store_root / STAGING_DIR
        root.mkdir(exist_ok=True)
        d = Path(tempfile.mkdtemp(dir=root))
        try:
            yield d
        finally:
            shutil.rmtree(d, ignore_errors=True)

    # -- images ------------------------------------------------------------------------------
    def add_image(self, image_id: str, image_filename: str, image_info: dict[str, Any]) -> str:
        from filelock import FileLock
        from monailabel.datastore.local import DataModel, ImageLabelModel

        if not self.accepts_image_uploads:
            raise RefusedError(f"images cannot be uploaded to this datastore ({self.name()}): its studies come "
                               "from DICOM; add the series there")
        check_name(image_id)
        if image_id in set(self.list_images()):
            raise ConflictError(f"image {shown(image_id)} already exists; upload under another id (an image is "
                                "never overwritten)")
        info = check_info(image_info or {}, "image info", self.policy.max_info_bytes)
        name = os.path.basename(str(image_filename)).lower()
        ext = next((e for e in IMAGE_UPLOAD_EXTENSIONS if name.endswith(e)), None)
        if ext is None:
            raise InputError(f"an uploaded image must be {', '.join(IMAGE_UPLOAD_EXTENSIONS)} (file name "
                             f"{shown(os.path.basename(str(image_filename)))})")
        check_image_upload(Path(image_filename), name)
        dest = confine(self.store_root, Path(self._datastore.image_path()) / f"{image_id}{ext}")
        with self._staging() as tmp:
            staged = tmp / f"upload{ext}"
            shutil.copyfile(image_filename, staged)
            with FileLock(self._lock_file):
                if dest.exists():
                    raise ConflictError(f"image {shown(image_id)} already exists; upload under another id")
                os.replace(staged, dest)
                info.update(ts=int(time.time()), name=dest.name)
                self._datastore.objects[image_id] = ImageLabelModel(image=DataModel(info=info, ext=ext))
                self._update_datastore_file(lock=False)
        logger.info("medclipsam: image %s added (%s)", image_id, dest.name)
        return image_id

    def remove_image(self, image_id: str) -> None:
        self.known_image(image_id)
        if not self.policy.allow_delete:
            raise RefusedError("deleting images through the API is turned off on this server; the operator can "
                               "allow it with --conf allow_delete true")
        if not self.accepts_image_uploads:
            raise RefusedError(f"this datastore ({self.name()}) reads its studies from DICOM and does not delete "
                               "them; remove the series at its source")
        confine(self.store_root, self.get_image_uri(image_id))
        super().remove_image(image_id)

    def update_image_info(self, image_id: str, info: dict[str, Any]) -> None:
        self.known_image(image_id)
        return super().update_image_info(image_id, info)

    def update_client_image_info(self, image_id: str, info: Any) -> None:
        """``PUT /datastore/image/info``: a client's info, checked (:func:`check_info`)."""
        self.update_image_info(image_id, check_info(info, "image info", self.policy.max_info_bytes))

    # -- labels ------------------------------------------------------------------------------
    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        from .label_check import check_label_upload

        self.known_image(image_id)
        tag = check_tag(label_tag)
        info = dict(label_info or {})
        for k in RESERVED_INFO_KEYS:
            info.pop(k, None)
        dicom_dir = self.dicom_dir(image_id)
        checked = check_label_upload(Path(label_filename), os.path.basename(str(label_filename)),
                                     Path(self.get_image_uri(image_id)), self.policy.vocabulary,
                                     allow_seg=dicom_dir is not None, dicom_dir=dicom_dir,
                                     limits=self.policy.limits())
        with self._staging() as tmp:
            staged = tmp / f"label{CANONICAL_LABEL_EXT}"
            self._write_staged(checked, staged)
            self.publish_label(image_id, tag, staged, info, empty=not checked.array.any())
        return image_id

    @staticmethod
    def _write_staged(checked, staged: Path) -> None:
        from .label_check import write_label_atomically

        write_label_atomically(checked, staged)

    def publish_label(self, image_id: str, tag: str, staged: Path, info: dict[str, Any], empty: bool = False) -> None:
        """Make the validated label at ``staged`` (canonical NIfTI, inside the store) the image's label
        for ``tag``. Subclasses that keep the label elsewhere too (DICOM SEG) do that first and then
        call this; whatever fails before :meth:`commit_label` leaves the previous label in place.
        ``empty``: the label has no foreground."""
        self.commit_label(image_id, tag, staged, info)

    def commit_label(self, image_id: str, tag: str, staged: Path, info: dict[str, Any]) -> None:
        from filelock import FileLock
        from monailabel.datastore.local import DataModel

        folder = self._label_dir(tag)
        folder.mkdir(parents=True, exist_ok=True)
        dest = confine(self.store_root, folder / f"{image_id}{CANONICAL_LABEL_EXT}")
        with FileLock(self._lock_file):
            obj = self._datastore.objects.get(image_id)
            if obj is None:
                raise NotFoundError(f"image {shown(image_id)} left the datastore while its label was saved")
            os.replace(staged, dest)
            for other in folder.glob(f"{image_id}.*"):         # an earlier label in another format
                if other != dest and other.name[len(image_id):] in (".nii", ".nrrd", ".seg.nrrd", ".nii.gz"):
                    other.unlink(missing_ok=True)
            info.update(ts=int(time.time()), name=dest.name)
            obj.labels[tag] = DataModel(info=info, ext=CANONICAL_LABEL_EXT)
            self._update_datastore_file(lock=False)
        logger.info("medclipsam: label %s/%s saved", tag, image_id)

    def remove_label(self, label_id: str, label_tag: str) -> None:
        self.known_image(label_id)
        tag = check_tag(label_tag)
        uri = self.get_label_uri(label_id, tag)
        if not uri:
            raise NotFoundError(f"image {shown(label_id)} has no label tagged {shown(tag)}")
        confine(self.store_root, uri)
        super().remove_label(label_id, tag)

    def update_label_info(self, label_id: str, label_tag: str, info: dict[str, Any]) -> None:
        self.known_image(label_id)
        tag = check_tag(label_tag)
        if not self.get_label_uri(label_id, tag):
            raise NotFoundError(f"image {shown(label_id)} has no label tagged {shown(tag)}")
        return super().update_label_info(label_id, tag, info)

    def update_client_label_info(self, label_id: str, label_tag: str, info: Any) -> None:
        self.update_label_info(label_id, label_tag, check_info(info, "label info", self.policy.max_info_bytes))


def guarded_local_datastore(studies: str, policy: StorePolicy):
    """MONAI Label's local (NIfTI folder) datastore, guarded, with the settings MONAI Label would use."""
    from monailabel.config import settings
    from monailabel.datastore.local import LocalDatastore

    class GuardedLocalDatastore(GuardedStore, LocalDatastore):
        pass

    store = GuardedLocalDatastore(studies, extensions=settings.MONAI_LABEL_DATASTORE_FILE_EXT,
                                  auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
                                  read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY)
    store.policy = policy
    return store
