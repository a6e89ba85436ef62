"""The zero-shot infer task's work, independent of MONAI Label: an image path and a request dict
→ a uint8 label file in the source grid (or a DICOM SEG) and the result JSON.

Input (``request["image"]`` after the datastore resolved it): a NIfTI/NRRD volume (MONAI Label's
local datastore), a DICOM series folder, or a NIfTI with a folder of the same name beside it that
holds its DICOM series — the layout of MONAI Label's DICOMweb cache (``<uid>.nii.gz`` + ``<uid>/``)
and of our DICOM-folder datastore. Then the DICOM series is segmented (its modality picks the
window) when its grid is the NIfTI's, so the label fits the image the client shows and a DICOM SEG
can reference the source instances.

Inferences run one at a time (:attr:`ZeroShotSegmenter.busy`); concurrent requests wait their
turn instead of failing.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .. import __version__
from ..errors import InputError
from ..geometry import Geometry
from .models import ModelCache, resolve_device
from .request import Target, first, parse_options, resolve_targets, with_window
from .vocabulary import Vocabulary, load_vocabulary, segment_concept

LABEL_EXTENSIONS = (".nii.gz", ".nii", ".seg.nrrd", ".nrrd")
SEG_EXTENSIONS = (".dcm",)
GEOMETRY_TOLERANCE_MM = 1e-3


@dataclass
class ResolvedInput:
    volume_path: Path                       # what the engine reads (a DICOM folder or a volume file)
    dicom_dir: Path | None                  # the DICOM series, when there is one
    note: str | None = None


def _volume_geometry(path: Path) -> Geometry | None:
    """The grid of a NIfTI/NRRD file from its header (no pixel data read)."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None
    if reader.GetDimension() != 3:
        return None
    size = reader.GetSize()
    return Geometry(shape=(int(size[2]), int(size[1]), int(size[0])), spacing=tuple(reader.GetSpacing()),
                    origin=tuple(reader.GetOrigin()), direction=tuple(reader.GetDirection()))


def same_grid(a: Geometry, b: Geometry, tol: float = GEOMETRY_TOLERANCE_MM) -> bool:
    return (tuple(a.shape) == tuple(b.shape) and np.allclose(a.spacing, b.spacing, atol=tol)
            and np.allclose(a.origin, b.origin, atol=tol) and np.allclose(a.direction, b.direction, atol=1e-4))


def dicom_sibling(path: Path) -> Path | None:
    """``X/`` beside ``X.nii.gz`` (or ``X.nii`` ...), when it is a folder with files."""
    from ..volume.inputs import volume_stem

    stem = volume_stem(path)
    d = path.with_name(stem) if stem else None
    return d if d is not None and d.is_dir() and any(d.iterdir()) else None


def resolve_input(image: str | Path) -> ResolvedInput:
    if not str(image).strip():
        raise InputError("no image given; name one of the datastore's images (GET /datastore/?output=all)")
    p = Path(image)
    if not p.exists():
        raise InputError(f"image {p} not found on the server; pick an image of the datastore")
    if p.is_dir():
        return ResolvedInput(p, p)
    sibling = dicom_sibling(p)
    if sibling is None:
        return ResolvedInput(p, None)
    from ..dicom import read_series

    try:
        series = read_series(sibling)
    except InputError as e:
        return ResolvedInput(p, None, f"the DICOM files beside {p.name} were not used ({e}); segmented the volume")
    try:
        nifti = _volume_geometry(p)
        if nifti is not None and same_grid(series.geometry, nifti):
            return ResolvedInput(sibling, sibling)
        return ResolvedInput(p, None, f"the DICOM series beside {p.name} is not on its grid; segmented the volume "
                                      "(no DICOM SEG)")
    finally:
        series.close()


def result_extension(request: Mapping[str, Any], image: Path) -> str:
    """The label file's extension: ``result_extension`` (as clients send it), else the input's."""
    ext = str(request.get("result_extension") or "").strip().lower()
    if ext and not ext.startswith("."):
        ext = "." + ext
    if not ext:
        name = image.name.lower()
        ext = next((s for s in LABEL_EXTENSIONS if name.endswith(s)), ".nii.gz")
    if ext not in LABEL_EXTENSIONS + SEG_EXTENSIONS:
        raise InputError(f"result_extension {ext!r} is not a label format; use one of "
                         f"{', '.join(LABEL_EXTENSIONS + SEG_EXTENSIONS)}")
    return ext


class ZeroShotSegmenter:
    """Text prompts → label, for a server (module docstring)."""

    def __init__(self, models: ModelCache | None = None, vocabulary: Vocabulary | None = None) -> None:
        self.models = models or ModelCache()
        self.vocabulary = vocabulary or load_vocabulary()
        self._lock = threading.Lock()
        self._waiting = 0
        self._count_lock = threading.Lock()

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    @property
    def queued(self) -> int:
        """Requests waiting for the running one."""
        return self._waiting

    def __call__(self, image: str | Path, request: Mapping[str, Any],
                 output: str | None = None) -> tuple[str, dict[str, Any]]:
        """Segment ``image``; returns (label file, result JSON). ``output="dicom_seg"`` writes a DICOM SEG."""
        # everything a request can get wrong fails here, before waiting for the models
        options = parse_options(request)
        targets = with_window(resolve_targets(request, self.vocabulary), options)
        device = resolve_device(str(first(request.get("device")) or ""))
        inp = resolve_input(image)
        ext = ".dcm" if output == "dicom_seg" else result_extension(request, Path(image))
        if ext == ".dcm" and inp.dicom_dir is None:
            raise InputError(f"a DICOM SEG needs the image's DICOM series; {Path(image).name} has none (a NIfTI "
                             "datastore). Ask for a NIfTI/NRRD result, or serve the study from DICOM (a DICOM "
                             "folder or DICOMweb)")
        t_wait = time.perf_counter()
        with self._count_lock:
            self._waiting += 1
        with self._lock:
            with self._count_lock:
                self._waiting -= 1
            waited = time.perf_counter() - t_wait
            return self._run(inp, targets, options, device, ext, waited)

    def _run(self, inp: ResolvedInput, targets: list[Target], options, device, ext: str,
             waited: float) -> tuple[str, dict[str, Any]]:
        from ..pipeline import Pipeline
        from ..settings import resolve_settings
        from ..volume.config import VolumeConfig, parse_slice_range
        from ..volume.engine import VolumePipeline
        from ..volume.inputs import close_volume, open_volume

        t0 = time.perf_counter()
        loaded = self.models.get(device)
        t_models = time.perf_counter() - t0
        settings, setting_notes = resolve_settings(
            options.preset, (loaded.clip, loaded.sam), options.engine_overrides(),
            VolumeConfig(slice_range=parse_slice_range(options.slices or None)))
        pipeline = Pipeline(loaded.clip, loaded.sam, settings.pipeline)
        src = open_volume(inp.volume_path)
        try:
            result = VolumePipeline(pipeline, settings.volume).run(src, [t.prompt for t in targets],
                                                        window=[t.window for t in targets])
            lut = np.zeros(256, dtype=np.uint8)
            for i, t in enumerate(targets):
                lut[i + 1] = t.value
            labels = lut[result.labels]
            fd, tmp = tempfile.mkstemp(prefix="medclipsam_", suffix=ext)
            os.close(fd)
            os.unlink(tmp)                      # the writers write atomically to a name that does not exist
            try:
                path = self._write(Path(tmp), labels, result, src, targets, pipeline)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        finally:
            close_volume(src)
        return str(path), self._json(inp, targets, result, pipeline, device, t_models, waited, options, setting_notes)

    def _write(self, path: Path, labels: np.ndarray, result, src, targets: list[Target], pipeline) -> Path:
        from ..dicom.seg import EmptySegmentationError, SegmentSpec
        from ..volume.outputs import write_labels

        present = {t.value: t for t in targets}
        segments = [SegmentSpec(label=t.value, name=t.name, description=_prompt_text(t.prompt),
                                color=t.entry.color if t.entry else None,
                                concept=segment_concept(t.entry, t.name)) for t in present.values()]
        try:
            return write_labels(path, labels, src, segments, series_description=pipeline.series_description(),
                                algorithm_version=__version__)
        except EmptySegmentationError:
            from ..volume.messages import REQUEST_NAMES, nothing_segmented_message

            raise InputError(nothing_segmented_message(result, REQUEST_NAMES)) from None

    def _json(self, inp: ResolvedInput, targets: list[Target], result, pipeline, device, t_models: float,
              waited: float, options, setting_notes: list[str]) -> dict[str, Any]:
        per_target = []
        for t, p in zip(targets, result.prompts):
            per_target.append({
                "name": t.name, "value": t.value, "prompt": t.prompt, "vocabulary": t.entry is not None,
                "voxels": p.voxels, "window": p.window.preset if p.window else None,
                "presence": {"mode": p.gate.mode, "threshold": p.gate.threshold, "note": p.gate.note},
                "slices_with_mask": [r.index for r in p.records if r.found],
                "per_slice": [{"slice": r.index, "similarity": round(r.similarity, 6), "present": r.present,
                               "found": r.found, "propagated": r.propagated} for r in p.records],
            })
        seconds = {k: round(v, 3) for k, v in result.seconds.items()}
        seconds["load_models"] = round(t_models, 3)
        seconds["queued"] = round(waited, 3)
        return {
            "tool": "medclipsam", "version": __version__,
            "label_names": {t.name: t.value for t in sorted(targets, key=lambda t: t.value)},
            "targets": per_target, "source": str(inp.volume_path), "dicom": inp.dicom_dir is not None,
            "slices": result.slices, "processed": result.processed, "gated": result.gated,
            "notes": ([inp.note] if inp.note else []) + list(result.notes),
            "overlaps": result.overlap_report([t.value for t in targets], [t.name for t in targets]),
            "warnings": pipeline.warnings(), "models": pipeline.identity(), "device": str(device),
            "preset": options.preset, "config": pipeline.config.to_dict(), "setting_notes": setting_notes,
            "seconds": seconds,
        }


def _prompt_text(prompt: str | list[str]) -> str:
    return prompt if isinstance(prompt, str) else " | ".join(prompt)
