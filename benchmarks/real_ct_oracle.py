"""The zero-shot geometry on real CT, end to end, with an ORACLE saliency map (issue 22, item 4).

The saliency method is ``oracle`` (``benchmarks/_oracle.py``): the reference label as the models see
it, shifted, blurred and noisy on the CLIP token grid. Everything else is the real product:
``medclipsam segment-series`` run in-process (``medclipsam.cli.main``) with LiteMedSAM (``--sam
litemedsam``) and the demo CLIP (its similarity pass; the presence gate off, ``--no-gate``, so the
oracle alone says where the target is) — rendering, display orientation, coarse mask, boxes, SAM, 3D
consistency, propagation, and the NIfTI and DICOM SEG writers. Both outputs are read back without the
project's readers and compared with the reference in 3D:

* the NIfTI with nibabel, resampled through its affine onto the series grid (LPS → RAS → voxel,
  nearest neighbour; ``_reference.nifti_labels_on_series``); label ``i + 1`` is prompt ``i``;
* the DICOM SEG with highdicom, each frame placed at the series slice whose ImagePositionPatient it
  carries (never by frame order), its orientation and pixel spacing checked; segments by label;
* the series grid itself from the DICOM headers (pydicom; slices sorted by ImagePositionPatient along
  the normal), checked against our reader's.

Scenarios (one ``segment-series`` call per scenario and output, every structure of the case one prompt,
the prompt text its name):

* ``siemens`` — the Siemens 20-slice CT (J2K, blank UIDs) with TotalSegmentator's labels, as stored;
* ``ge`` — the GE 3-slice CT with its DICOM SEG liver, as stored;
* ``siemens-rotated`` and ``siemens-mirrored`` — the same Siemens slices written again (uncompressed,
  new UIDs, InstanceNumbers reversed), only every sixth one (12 mm apart, so that a slice-order error
  shows: neighbouring slices 2 mm apart look alike), each slice's pixels turned and its
  ImageOrientationPatient / ImagePositionPatient rewritten so that every voxel stays where it was in
  the patient. *rotated*: transposed then flipped left-right (a quarter turn: not its own inverse, so
  an inverse applied in the wrong order shows), with a non-square ROI around the structures (the CLIP
  input is padded); *mirrored*: transposed and flipped both ways (a mirror: the slice normal is
  reversed, so the reader sorts the slices the other way round), whole slices. The engine must turn
  these slices to the radiological display and turn the masks back. Their reference is the original
  one resampled through patient coordinates.

Columns: Dice of the NIfTI and of the SEG with the reference (only the slices segmented count;
anything written elsewhere is a false positive), whether both hold the same voxels, ``map>=0.5``: the
Dice of the oracle's own saliency map (the engine's ``saliency_map_from_grid``, thresholded at 0.5) in
the models' view — what SAM starts from — and the voxel counts. Controls: the NIfTI result scored
against wrongly transformed references (left-right, top-bottom, transposed, slice order reversed):
the correct one must win by far.

Coarse mask: ``postprocess.method=otsu`` (preset v2's) by default instead of the demo CLIP card's CRF
(``--postprocess crf``), which costs seconds per slice and prompt on a CPU. ``--one-run``: one
``segment-series`` run per scenario whose result goes through both writers (what
``tests/test_real_geometry.py`` does, to halve its time); by default each output is its own run, so
``nifti_seg_agree`` also says the runs are reproducible.

Last line: ``oracle_e2e_mean_dice=<x> structures=<n> nifti_seg_agree=<true|false>`` — the mean NIfTI
Dice over every (scenario, structure), their number, and whether the NIfTI and the SEG hold exactly
the same voxels for every one. Without the corpus: ``skipped: <reason>`` and exit status 0.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine  # noqa: E402
from _oracle import oracle_grid, oracle_session, prepare_target  # noqa: E402
from _reference import (  # noqa: E402
    GE_CT,
    SIEMENS_CT,
    ReferenceCase,
    corpus_missing_reason,
    load_cases,
    nifti_labels_on_series,
    slice_lps,
)

ORACLE_PARAMS: dict[str, Any] = {"seed": 0, "blur_sigma": 2.0, "shift_px": 2.0, "noise": 0.05}
POSITION_TOLERANCE_MM = 0.05
ORIENTATION_TOLERANCE = 1e-4
RESTACK_STEP = 6                 # keep every sixth slice in the restacked series


# ------------------------------------------------------------------------------- the series grid


@dataclass
class HeaderGrid:
    """The series grid from the DICOM headers alone (not our reader)."""

    geometry: Any                 # medclipsam.geometry.Geometry (a plain container here)
    files: list[Path]             # file of each slice, sorted along the normal

    @property
    def iop(self) -> np.ndarray:
        d = self.geometry.direction_matrix()
        return np.concatenate([d[:, 0], d[:, 1]])


def header_grid(folder: Path) -> HeaderGrid:
    """Single-frame DICOM slices of one series: sorted by ImagePositionPatient · normal."""
    import pydicom

    from medclipsam.geometry import Geometry

    items = []
    for path in sorted(p for p in Path(folder).iterdir() if p.is_file()):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(str(path), stop_before_pixels=True)
        items.append((path, np.asarray(ds.ImagePositionPatient, float), np.asarray(ds.ImageOrientationPatient, float),
                      [float(v) for v in ds.PixelSpacing], int(ds.Rows), int(ds.Columns)))
    iop = items[0][2]
    if any(np.abs(it[2] - iop).max() > ORIENTATION_TOLERANCE for it in items):
        raise ValueError(f"{folder}: slices with different orientations")
    u, v = iop[:3], iop[3:]
    normal = np.cross(u, v)
    items.sort(key=lambda it: float(it[1] @ normal))
    positions = np.stack([it[1] for it in items])
    steps = np.diff(positions, axis=0)
    step = float(np.median(np.linalg.norm(steps, axis=1))) if len(items) > 1 else 1.0
    w = steps.mean(axis=0) / np.linalg.norm(steps.mean(axis=0)) if len(items) > 1 else normal
    row_spacing, col_spacing = items[0][3]
    geometry = Geometry(shape=(len(items), items[0][4], items[0][5]), spacing=(col_spacing, row_spacing, step),
                        origin=tuple(positions[0]), direction=tuple(np.stack([u, v, w], axis=1).ravel()),
                        slice_positions=tuple(tuple(map(float, p)) for p in positions))
    return HeaderGrid(geometry, [it[0] for it in items])


def same_grid(a, b, atol: float = 1e-3) -> bool:
    """Same shape, and every slice's first voxel and in-plane steps at the same LPS place."""
    if tuple(a.shape) != tuple(b.shape):
        return False
    for k in range(a.shape[0]):
        pa, pb = slice_lps(a, k), slice_lps(b, k)
        if not all(np.allclose(pa[i, j], pb[i, j], atol=atol) for i, j in ((0, 0), (0, -1), (-1, 0), (-1, -1))):
            return False
    return True


def resample_nearest(mask: np.ndarray, source, target) -> tuple[np.ndarray, float]:
    """A bool volume on grid ``source`` → grid ``target`` through patient coordinates (nearest voxel;
    outside: False). Also the largest distance (voxels) from a target voxel to the source voxel it took."""
    d = source.direction_matrix()
    u, v = d[:, 0], d[:, 1]
    normal = np.cross(u, v)
    src_pos = np.asarray([source.slice_position(k) for k in range(source.shape[0])], float)
    src_depth = src_pos @ normal
    n, rows, cols = target.shape
    out = np.zeros((n, rows, cols), bool)
    worst = 0.0
    for k in range(n):
        lps = slice_lps(target, k)
        depth = lps @ normal
        s = np.abs(depth[..., None] - src_depth[None, None, :]).argmin(axis=-1)
        rel = lps - src_pos[s]
        c = rel @ u / source.spacing[0]
        r = rel @ v / source.spacing[1]
        gap = np.abs(depth - src_depth[s]) / (source.spacing[2] or 1.0)
        ci, ri = np.rint(c).astype(np.int64), np.rint(r).astype(np.int64)
        inside = (ci >= 0) & (ci < source.shape[2]) & (ri >= 0) & (ri < source.shape[1]) & (gap < 0.5)
        worst = max(worst, float(np.max(np.where(inside, np.maximum(np.abs(c - ci), np.abs(r - ri)), 0.0))),
                    float(np.max(np.where(inside, gap, 0.0))))
        out[k][inside] = mask[s[inside], ri[inside], ci[inside]]
    return out, worst


# ------------------------------------------------------------------------------- a restacked series


def restack_series(folder: Path, out_dir: Path, picks: Sequence[int], *, transpose: bool = True,
                   flip_rows: bool = True, flip_cols: bool = True) -> Path:
    """Write slices ``picks`` (indices in header order) of the series in ``folder`` again, each slice's
    pixels transposed / flipped and its ImageOrientationPatient / ImagePositionPatient rewritten so
    every pixel keeps its patient position; uncompressed, with new UIDs, InstanceNumbers reversed."""
    import pydicom
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    grid = header_grid(folder)
    out_dir.mkdir(parents=True, exist_ok=True)
    kind = f"transpose={transpose} flip_rows={flip_rows} flip_cols={flip_cols}"
    study, series, frame_ref = (generate_uid(entropy_srcs=["oracle-restack", str(folder), kind, what])
                                for what in ("study", "series", "frame-of-reference"))
    for order, k in enumerate(picks):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(str(grid.files[k]))
            ds.decompress()
        a = ds.pixel_array
        rows_idx, cols_idx = np.indices(a.shape)

        def turn(x: np.ndarray) -> np.ndarray:
            x = x.T if transpose else x
            x = x[::-1] if flip_rows else x
            return np.ascontiguousarray(x[:, ::-1] if flip_cols else x)

        b, old_r, old_c = turn(a), turn(rows_idx), turn(cols_idx)
        ipp = np.asarray(ds.ImagePositionPatient, float)
        iop = np.asarray(ds.ImageOrientationPatient, float)
        row_spacing, col_spacing = (float(s) for s in ds.PixelSpacing)

        def lps(r: int, c: int, ipp: np.ndarray = ipp, iop: np.ndarray = iop,
                row_spacing: float = row_spacing, col_spacing: float = col_spacing) -> np.ndarray:
            return ipp + c * col_spacing * iop[:3] + r * row_spacing * iop[3:]

        origin = lps(old_r[0, 0], old_c[0, 0])
        across = lps(old_r[0, 1], old_c[0, 1]) - origin          # one new column to the right
        down = lps(old_r[1, 0], old_c[1, 0]) - origin            # one new row down
        ds.ImagePositionPatient = [f"{x:.6f}" for x in origin]
        ds.ImageOrientationPatient = [f"{x:.6f}" for x in np.concatenate([across / np.linalg.norm(across),
                                                                           down / np.linalg.norm(down)])]
        ds.PixelSpacing = [f"{np.linalg.norm(down):.7g}", f"{np.linalg.norm(across):.7g}"]
        ds.Rows, ds.Columns = int(b.shape[0]), int(b.shape[1])
        ds.PixelData = b.astype(a.dtype).tobytes()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        sop = generate_uid(entropy_srcs=["oracle-restack", str(grid.files[k]), kind])
        ds.SOPClassUID = ds.SOPClassUID or ds.file_meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame_ref
        ds.InstanceNumber = len(picks) - order
        ds.SeriesDescription = f"oracle geometry check: {kind}"[:64]
        ds.save_as(str(out_dir / f"slice_{order:03d}.dcm"), write_like_original=False)
    return out_dir


# ------------------------------------------------------------------------------- reading outputs back


def read_nifti(path: Path, grid, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The NIfTI label map on ``grid`` (through its affine): name of prompt i → label i + 1."""
    import nibabel as nib

    img = nib.load(str(path))
    data = np.asarray(img.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    labels, _stats = nifti_labels_on_series(grid, data, img.affine)
    return {name: labels == i + 1 for i, name in enumerate(names)}


def read_seg(path: Path, grid, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The DICOM SEG on ``grid`` with highdicom: every frame at the slice of its ImagePositionPatient
    (within POSITION_TOLERANCE_MM), its orientation and pixel spacing checked; segments by label."""
    import highdicom as hd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seg = hd.seg.segread(str(path))
    n, rows, cols = grid.shape
    if (int(seg.Rows), int(seg.Columns)) != (rows, cols):
        raise ValueError(f"{path.name}: frames {seg.Rows}×{seg.Columns}, series {rows}×{cols}")
    by_number = {int(num): str(seg.get_segment_description(num).segment_label) for num in seg.segment_numbers}
    unknown = sorted(set(by_number.values()) - set(names))
    if unknown:
        raise ValueError(f"{path.name}: segments {unknown} are none of the prompts {list(names)}")
    d = grid.direction_matrix()
    series_iop = np.concatenate([d[:, 0], d[:, 1]])
    shared = seg.SharedFunctionalGroupsSequence[0]
    spacing = [float(s) for s in shared.PixelMeasuresSequence[0].PixelSpacing]
    if not np.allclose([spacing[1], spacing[0]], grid.spacing[:2], atol=1e-4):
        raise ValueError(f"{path.name}: PixelSpacing {spacing} is not the series'")
    positions = np.asarray([grid.slice_position(k) for k in range(n)], float)
    pixels = np.asarray(seg.pixel_array).reshape(int(seg.NumberOfFrames), rows, cols)
    out = {name: np.zeros((n, rows, cols), bool) for name in names}
    seen: set[tuple[int, int]] = set()
    for f, frame in enumerate(seg.PerFrameFunctionalGroupsSequence):
        groups = frame if "PlaneOrientationSequence" in frame else shared
        iop = np.asarray(groups.PlaneOrientationSequence[0].ImageOrientationPatient, float)
        if np.abs(iop - series_iop).max() > ORIENTATION_TOLERANCE:
            raise ValueError(f"{path.name} frame {f + 1}: orientation {iop.tolist()} is not the series' "
                             f"{series_iop.tolist()}")
        ipp = np.asarray(frame.PlanePositionSequence[0].ImagePositionPatient, float)
        dist = np.linalg.norm(positions - ipp, axis=1)
        k = int(np.argmin(dist))
        if dist[k] > POSITION_TOLERANCE_MM:
            raise ValueError(f"{path.name} frame {f + 1} at {ipp.tolist()} is {dist[k]:.3g} mm from every slice")
        number = int(frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        if (number, k) in seen:
            raise ValueError(f"{path.name}: two frames of segment {number} on slice {k}")
        seen.add((number, k))
        out[by_number[number]][k] |= pixels[f].astype(bool)
    return out


# ------------------------------------------------------------------------------- running the pipeline


@contextlib.contextmanager
def _also_write(paths: Sequence[Path]) -> Iterator[None]:
    """The CLI's writer also writes its result to ``paths`` (same function, same result): one
    segmentation, several formats, when a caller cannot afford a run per format."""
    import medclipsam.volume.outputs as outputs

    original = outputs.write_result

    def tee(path, result, src, **kwargs):
        written = original(path, result, src, **kwargs)
        for extra in paths:
            original(extra, result, src, **kwargs)
        return written

    outputs.write_result = tee
    try:
        yield
    finally:
        outputs.write_result = original


def segment_series(series: Path, prompts: Sequence[str], outs: Sequence[Path], *, roi=None, slices=None,
                   postprocess: str | None = "otsu", settings: Sequence[str] = (), one_run: bool = False,
                   quiet: bool = True) -> None:
    """``medclipsam segment-series`` in-process, once per output (``one_run``: once, the writer called
    for every output)."""
    from medclipsam import cli
    from medclipsam.demo import DEMO_CLIP

    def argv(out: Path) -> list[str]:
        a = ["segment-series", str(series), "--out", str(out), "--sam", "litemedsam", "--clip", DEMO_CLIP,
             "--no-gate", "--set", "saliency=oracle", "--quiet"]
        for p in prompts:
            a += ["--prompt", p]
        if postprocess:
            a += ["--set", f"postprocess.method={postprocess}"]
        for s in settings:
            a += ["--set", s]
        if roi is not None:
            a += ["--roi", ",".join(str(int(v)) for v in roi)]
        if slices is not None:
            a += ["--slices", f"{slices[0]}:{slices[1]}"]
        return a

    runs = [(outs[0], outs[1:])] if one_run else [(o, ()) for o in outs]
    for out, extra in runs:
        log = io.StringIO()
        with _also_write(list(extra)), contextlib.ExitStack() as stack:
            if quiet:
                stack.enter_context(contextlib.redirect_stdout(log))
                stack.enter_context(contextlib.redirect_stderr(log))
            rc = cli.main(argv(out))
        if rc != 0:
            raise RuntimeError(f"segment-series failed (exit {rc}): {' '.join(argv(out))}\n{log.getvalue()}")


# ------------------------------------------------------------------------------- scoring


def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return 2.0 * int((a & b).sum()) / s if s else 1.0


CONTROLS = {
    "left-right": lambda m: m[:, :, ::-1],
    "top-bottom": lambda m: m[:, ::-1, :],
    "transposed": lambda m: np.swapaxes(m, 1, 2),
    "slices reversed": lambda m: m[::-1],
}


@dataclass
class Scenario:
    name: str
    series: Path
    reference: dict[str, np.ndarray]         # on the series grid (reader = headers, checked)
    grid: HeaderGrid
    roi: tuple[int, int, int, int] | None = None
    slices: tuple[int, int] | None = None     # the slices segmented (segment-series --slices)
    notes: list[str] = field(default_factory=list)


@dataclass
class Score:
    scenario: str
    structure: str
    nifti: float
    seg: float
    agree: bool
    oracle_map: float                         # the oracle's map ≥ 0.5 vs the reference, in the models' view
    controls: dict[str, float]
    voxels: tuple[int, int]                   # (reference in the slices segmented, NIfTI in the volume)


def as_stored(case: ReferenceCase, slices: tuple[int, int] | None = None) -> Scenario:
    """A corpus case as stored; the reference checked to be on the header grid."""
    from medclipsam.volume.inputs import close_volume, open_volume

    grid = header_grid(case.series)
    src = open_volume(case.series)
    try:
        if not same_grid(src.geometry, grid.geometry):
            raise AssertionError(f"{case.name}: our reader's grid is not the DICOM headers' grid")
    finally:
        close_volume(src)
    return Scenario(case.name, case.series, dict(case.structures), grid, slices=slices, notes=list(case.notes))


TURNS = {
    "rotated": {"transpose": True, "flip_rows": False, "flip_cols": True},     # a quarter turn
    "mirrored": {"transpose": True, "flip_rows": True, "flip_cols": True},     # mirror: normal reversed
}


def restacked(case: ReferenceCase, out_dir: Path, turn: str, picks: Sequence[int] | None = None,
              roi: bool = False, roi_margin: int = 24) -> Scenario:
    """``case`` with its slices turned (:data:`TURNS`) and restacked (module docstring), ``roi``: with a
    non-square ROI around the structures; the reference resampled onto it through patient coordinates."""
    from medclipsam.volume.display import display_orientation
    from medclipsam.volume.inputs import close_volume, open_volume

    original = header_grid(case.series)
    picks = list(range(0, original.geometry.shape[0], RESTACK_STEP)) if picks is None else list(picks)
    folder = restack_series(case.series, out_dir, picks, **TURNS[turn])
    grid = header_grid(folder)
    src = open_volume(folder)
    try:
        if not same_grid(src.geometry, grid.geometry):
            raise AssertionError(f"{turn} series: our reader's grid is not the DICOM headers' grid")
        shown = display_orientation(src.geometry).describe()
    finally:
        close_volume(src)
    reference, worst = {}, 0.0
    for name, mask in case.structures.items():
        reference[name], off = resample_nearest(mask, original.geometry, grid.geometry)
        worst = max(worst, off)
    if worst > 1e-3:
        raise AssertionError(f"restacked voxels are {worst:.3g} voxel off the original ones; expected the same centres")
    box = None
    _n, rows, cols = grid.geometry.shape
    if roi:
        union = np.any(np.stack(list(reference.values())), axis=(0, 1))
        rr, cc = np.flatnonzero(union.any(axis=1)), np.flatnonzero(union.any(axis=0))
        y0, y1 = max(0, rr[0] - roi_margin), min(rows, rr[-1] + 1 + roi_margin)
        x0, x1 = max(0, cc[0] - roi_margin), min(cols, cc[-1] + 1 + roi_margin)
        if abs((y1 - y0) - (x1 - x0)) < 64:           # keep it clearly non-square: the padding must matter
            if y1 - y0 <= x1 - x0:
                x0, x1 = max(0, x0 - 32), min(cols, x1 + 32)
            else:
                y0, y1 = max(0, y0 - 32), min(rows, y1 + 32)
        box = (int(x0), int(y0), int(x1), int(y1))
    d = grid.geometry.direction_matrix()
    iop = np.round(np.concatenate([d[:, 0], d[:, 1]]), 3).tolist()
    notes = [f"original slices {picks}, {', '.join(k for k, on in TURNS[turn].items() if on)}; IOP {iop}, "
             f"slice step {np.round(d[:, 2], 3).tolist()}; shown to the models as {shown}"
             + (f"; ROI x {box[0]}:{box[2]}, y {box[1]}:{box[3]} ({box[2] - box[0]}×{box[3] - box[1]})" if box else "")]
    return Scenario(f"{case.name} {turn}", folder, reference, grid, roi=box, notes=notes)


SCENARIOS = ("siemens", "ge", "siemens-rotated", "siemens-mirrored")


def make_scenario(which: str, cases: dict[str, ReferenceCase], work: Path) -> Scenario:
    if which == "siemens":
        return as_stored(cases[SIEMENS_CT])
    if which == "ge":
        return as_stored(cases[GE_CT])
    if which == "siemens-rotated":
        return restacked(cases[SIEMENS_CT], work / "rotated-series", "rotated", roi=True)
    if which == "siemens-mirrored":
        return restacked(cases[SIEMENS_CT], work / "mirrored-series", "mirrored")
    raise ValueError(f"unknown scenario {which!r}; choose from {SCENARIOS}")


def evaluate(scenario: Scenario, work: Path, *, postprocess: str | None = "otsu", one_run: bool = False,
             oracle: dict[str, Any] | None = None, settings: Sequence[str] = (),
             reference_for_oracle: dict[str, np.ndarray] | None = None) -> list[Score]:
    """Run segment-series on ``scenario`` with the oracle (``reference_for_oracle``: what the oracle is
    given instead of the reference, for a control), read both outputs back and score them."""
    from medclipsam.demo import DEMO_CLIP
    from medclipsam.image import SquarePad
    from medclipsam.models import load_clip
    from medclipsam.saliency import saliency_map_from_grid
    from medclipsam.volume.display import display_orientation
    from medclipsam.volume.inputs import close_volume, open_volume

    params = {**ORACLE_PARAMS, **(oracle or {})}
    names = list(scenario.reference)
    clip = load_clip(DEMO_CLIP)
    src = open_volume(scenario.series)
    try:
        given = reference_for_oracle or scenario.reference
        targets = [prepare_target(name, given[name], src, image_size=clip.image_size, roi=scenario.roi)
                   for name in names]
        geometry = src.geometry
    finally:
        close_volume(src)
    work.mkdir(parents=True, exist_ok=True)
    outs = [work / "labels.nii.gz", work / "labels.dcm"]
    with oracle_session(targets, **params):
        segment_series(scenario.series, names, outs, roi=scenario.roi, slices=scenario.slices,
                       postprocess=postprocess, settings=settings, one_run=one_run)
    grid = scenario.grid.geometry
    nifti = read_nifti(outs[0], grid, names)
    seg = read_seg(outs[1], grid, names)

    n, rows, cols = grid.shape
    lo, hi = scenario.slices or (0, n)
    x0, y0, x1, y1 = scenario.roi or (0, 0, cols, rows)
    orientation = display_orientation(geometry)
    gh, gw = clip.vision.grid_size
    scores = []
    for name, target in zip(names, targets):
        ref = np.zeros_like(scenario.reference[name])
        ref[lo:hi] = scenario.reference[name][lo:hi]          # only the slices segmented count
        # the oracle's own map, thresholded at half its range, in the models' view
        inter = total = 0
        for k in range(lo, hi):
            cfg = dataclasses.replace(_oracle_config(targets, params), seed=params["seed"] + k)
            seen = orientation.apply(scenario.reference[name][k, y0:y1, x0:x1])
            smap = saliency_map_from_grid(oracle_grid(target.occupancy[k], (gh, gw), cfg),
                                          SquarePad.for_shape(*seen.shape), clip.image_size)
            inter += int(((smap >= 0.5) & seen).sum())
            total += int((smap >= 0.5).sum()) + int(seen.sum())
        controls = {}
        for c, f in CONTROLS.items():
            if c == "transposed" and rows != cols:
                continue
            wrong = np.zeros_like(ref)
            wrong[lo:hi] = f(scenario.reference[name])[lo:hi]
            controls[c] = dice(nifti[name], wrong)
        scores.append(Score(scenario.name, name, dice(nifti[name], ref), dice(seg[name], ref),
                            bool(np.array_equal(nifti[name], seg[name])), 2.0 * inter / total if total else 1.0,
                            controls, (int(ref.sum()), int(nifti[name].sum()))))
    return scores


def _oracle_config(targets, params):
    from _oracle import REGISTERED_CONFIG

    return REGISTERED_CONFIG(targets={t.name: t for t in targets}, **params)


# ------------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenario", action="append", choices=SCENARIOS,
                    help="scenarios to run (repeatable; default: all)")
    ap.add_argument("--postprocess", default="otsu", help="coarse-mask method (otsu; crf: the demo card's)")
    ap.add_argument("--one-run", action="store_true",
                    help="one segment-series run per scenario, its result written as NIfTI and as SEG "
                         "(default: a run per output)")
    ap.add_argument("--seed", type=int, default=ORACLE_PARAMS["seed"])
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    print(f"machine: {machine()}")
    reason = corpus_missing_reason()
    if reason:
        print(f"skipped: {reason}")
        return 0
    import torch

    torch.manual_seed(0)
    wanted = args.scenario or list(SCENARIOS)
    cases = {c.name: c for c in load_cases()}
    scores: list[Score] = []
    with tempfile.TemporaryDirectory(prefix="oracle-e2e-") as tmp:
        for which in wanted:
            ts = time.perf_counter()
            scenario = make_scenario(which, cases, Path(tmp))
            print(f"\n== {scenario.name}: {scenario.grid.geometry.shape[0]} slices, "
                  f"structures {', '.join(scenario.reference)}")
            for note in scenario.notes:
                print(f"   {note}")
            got = evaluate(scenario, Path(tmp) / which, postprocess=args.postprocess, one_run=args.one_run,
                           oracle={"seed": args.seed})
            print(f"   {'structure':<10} {'NIfTI':>6} {'SEG':>6} {'agree':>5} {'map>=0.5':>10} "
                  f"{'ref vox':>8} {'out vox':>8}  controls (NIfTI vs a wrongly transformed reference)")
            for s in got:
                ctrl = ", ".join(f"{k} {v:.3f}" for k, v in s.controls.items())
                print(f"   {s.structure:<10} {s.nifti:6.3f} {s.seg:6.3f} {str(s.agree).lower():>5} "
                      f"{s.oracle_map:10.3f} {s.voxels[0]:8d} {s.voxels[1]:8d}  {ctrl}")
            print(f"   seconds: {time.perf_counter() - ts:.1f}")
            scores.extend(got)
    mean = float(np.mean([s.nifti for s in scores])) if scores else float("nan")
    agree = all(s.agree for s in scores)
    print(f"\npostprocess: {args.postprocess}; oracle: {ORACLE_PARAMS | {'seed': args.seed}}; "
          f"{'one run per scenario' if args.one_run else 'one run per output'}")
    print(f"seconds: {time.perf_counter() - t0:.1f}")
    print(f"oracle_e2e_mean_dice={mean:.4f} structures={len(scores)} nifti_seg_agree={str(agree).lower()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
