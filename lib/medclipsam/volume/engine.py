"""The slice engine: a volume and text prompts → a label volume in the source geometry.

Per series, with the 2D pipeline's stages (:class:`~medclipsam.pipeline.Pipeline`) unchanged:

1. **Rendering** — one window for the whole series and target (:mod:`.render`); prompts that call
   for different windows (``lesion`` and ``lungs`` on CT) are rendered, and run through the passes
   below, separately. Each slice is shown to the models in the radiological display orientation a
   viewer uses (:mod:`.display`: a feet-first series is flipped left-right, a transposed plane
   transposed), so "left lung" is one side of the picture whatever ImageOrientationPatient says;
   masks are turned back onto the stored grid (``VolumeConfig.reorient=False`` shows slices as stored).
2. **Similarity pass** — every slice in range is rendered and encoded once, in batches; its cosine
   with each prompt's text embedding is the first presence signal (:mod:`.presence`).
3. **Saliency pass** — only on slices that pass the similarity gate: the saliency method's raw
   token grid per slice and prompt (a few hundred bytes each), with the M2IB noise seeded from
   the slice index (reproducible, docs/algorithms.md §Seeds); M2IB optimises several (slice, prompt) pairs per call
   (``VolumeConfig.saliency_batch``), each exactly as it would alone. The raw saliency peak is the
   second gate.
4. **SAM pass** — only on slices judged present: saliency map → coarse mask → visual prompts →
   SAM, the SAM image embedding computed once per slice for all prompts, in batches.
5. **3D consistency** per prompt (:mod:`.consistency`).
6. **Propagation** per prompt (:mod:`.propagation`): SAM prompted with a segmented slice's boxes on
   the empty slice beside it, kept only where the target looks like it is ending — a tumour's
   poles, which the whole-slice presence gate misses.

Memory: slices are read, rendered and dropped one batch at a time; what is kept for the whole
series is the label volume (one byte per voxel, one bit per prompt, up to 8 prompts) and a few
numbers per slice — peak memory grows with the series by the label volume only. On CUDA the
passes run under bf16 autocast and SAM's batch is fitted to the free GPU memory; on CPU SAM takes
one slice at a time.

Several prompts give a multi-label result: label ``i + 1`` is prompt ``i``; where two prompts
claim a voxel the smaller target (fewer voxels in the whole volume; ties: the earlier prompt)
keeps it, whatever the order — a tumour inside the lung survives ``lungs; tumor`` — and the
overlap is reported (:meth:`BitLabels.to_label_map`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from ..errors import ConfigError, InputError
from ..geometry import Geometry
from ..image import SquarePad, clip_input
from ..pipeline import Pipeline, chain_from_saliency
from ..prompts import VisualPrompts
from ..saliency import SALIENCY_METHODS, saliency_grids, saliency_map_from_grid
from .config import SALIENCY_BATCH_CPU, SALIENCY_BATCH_CUDA, VolumeConfig, parse_roi, parse_slice_range
from .consistency import ConsistencyReport, enforce_consistency
from .display import AS_STORED, DisplayOrientation, display_orientation
from .presence import (
    SimilarityGate,
    SliceRecord,
    confident_slices,
    model_presence_threshold,
    saliency_gate,
    similarity_gate,
)
from .propagation import PropagationReport, judge, mask_boxes, run_ends
from .render import Window, choose_window, render_slice
from .source import VolumeSource

MAX_PROMPTS = 8          # one bit per prompt in the working label volume
SIMILARITY_BATCH_CPU = 8
SIMILARITY_BATCH_CUDA = 64
def _resolve_range(cfg: VolumeConfig, n: int) -> tuple[int, int]:
    if cfg.slice_range is None:
        return 0, n
    start, stop = cfg.slice_range
    stop = n if stop is None or stop < 0 else stop
    if not 0 <= start < stop <= n:
        raise ConfigError(f"slice range {start}:{stop} is outside the series' {n} slices (0:{n})")
    return start, stop


def _resolve_roi(cfg: VolumeConfig, rows: int, cols: int) -> tuple[int, int, int, int]:
    if cfg.roi is None:
        return 0, 0, cols, rows
    x0, y0, x1, y1 = cfg.roi
    if not (0 <= x0 < x1 <= cols and 0 <= y0 < y1 <= rows):
        raise ConfigError(f"ROI {cfg.roi} is outside the {cols}×{rows} (columns×rows) slices")
    if x1 - x0 < 16 or y1 - y0 < 16:
        raise ConfigError(f"ROI {cfg.roi} is smaller than 16×16 pixels; give a larger region")
    return x0, y0, x1, y1


def fit_batch_size(free_bytes: int, bytes_per_item: int, cap: int, fraction: float = 0.5) -> int:
    """How many items fit in ``fraction`` of the free memory (at least 1, at most ``cap``)."""
    if bytes_per_item <= 0:
        return 1
    return int(max(1, min(cap, (free_bytes * fraction) // bytes_per_item)))


def sam_bytes_per_slice(sam_model: torch.nn.Module, dtype_bytes: int = 2) -> int:
    """Rough peak activation memory of SAM's image encoder for one image (no gradients)."""
    enc = sam_model.image_encoder
    if not hasattr(enc, "blocks"):
        # TinyViT (LiteMedSAM): the widest activations are the first stage's MBConv, at a quarter of the
        # input side with its channels expanded ×4; a dozen such tensors live at once
        side = enc.img_size // 4
        channels = enc.patch_embed.seq[-1].c.out_channels
        return int(side * side * channels * 4 * dtype_bytes * 12)
    side = enc.img_size // enc.patch_embed.proj.kernel_size[0]
    tokens = side * side
    dim = enc.patch_embed.proj.out_channels
    heads = enc.blocks[0].attn.num_heads
    return int(heads * tokens * tokens * dtype_bytes * 2 + tokens * dim * dtype_bytes * 24)


@dataclass(frozen=True)
class Overlap:
    """Voxels claimed by two prompts (0-based indices ``first`` < ``second``) and who keeps them."""

    first: int
    second: int
    voxels: int
    kept: int                           # the prompt index whose label the voxels get
    sizes: tuple[int, int]              # each prompt's voxels in the whole volume before the merge

    @property
    def reason(self) -> str:
        if self.sizes[0] == self.sizes[1]:
            return "same size: the earlier prompt"
        return "the smaller target"


class BitLabels:
    """A slices×rows×cols uint8 volume holding one bit per prompt."""

    def __init__(self, shape: tuple[int, int, int]) -> None:
        self.array = np.zeros(shape, dtype=np.uint8)

    def stack(self, bit: int) -> "_BitStack":
        return _BitStack(self.array, bit)

    def bit_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """Per bit the voxels that have it, and per bit pair (i, j) the voxels that have both.

        One histogram of the 256 byte values per slice (no whole-volume temporary); both counts are
        sums over that histogram."""
        hist = np.zeros(256, dtype=np.int64)
        for k in range(self.array.shape[0]):
            hist += np.bincount(self.array[k].ravel(), minlength=256)
        values = np.arange(256)
        bits = ((values[:, None] >> np.arange(MAX_PROMPTS)[None, :]) & 1).astype(bool)    # 256 × 8
        per_bit = hist @ bits
        pairs = (bits[:, :, None] & bits[:, None, :]).reshape(256, -1)
        per_pair = (hist @ pairs).reshape(MAX_PROMPTS, MAX_PROMPTS)
        return per_bit, per_pair

    def to_label_map(self) -> tuple[np.ndarray, list[Overlap]]:
        """In place: bit i → label i + 1; where several bits are set the **smallest** target wins.

        "Smallest" is the bit with the fewest voxels in the whole volume (ties: the lower bit, i.e.
        the earlier prompt), so a structure inside another (a tumour inside the lung) survives
        whatever the prompt order. A voxel claimed by three or more prompts goes to the smallest of
        them. Returns the label map and every overlapping pair with its voxel count and winner.
        Memory: two passes over the slices (a histogram, then a 256-entry lookup table), nothing of
        the volume's size besides the array itself."""
        per_bit, per_pair = self.bit_counts()
        rank = {b: r for r, b in enumerate(sorted(range(MAX_PROMPTS), key=lambda b: (int(per_bit[b]), b)))}
        lut = np.zeros(256, dtype=np.uint8)
        for v in range(1, 256):
            set_bits = [b for b in range(MAX_PROMPTS) if v >> b & 1]
            lut[v] = min(set_bits, key=rank.__getitem__) + 1
        overlaps = []
        for i in range(MAX_PROMPTS):
            for j in range(i + 1, MAX_PROMPTS):
                if per_pair[i, j]:
                    kept = i if rank[i] < rank[j] else j
                    overlaps.append(Overlap(i, j, int(per_pair[i, j]), kept, (int(per_bit[i]), int(per_bit[j]))))
        a = self.array
        for k in range(a.shape[0]):
            s = a[k]
            if s.any():
                a[k] = lut[s]
        return a, overlaps


class _BitStack:
    def __init__(self, array: np.ndarray, bit: int) -> None:
        self.array, self.bit = array, bit

    def __len__(self) -> int:
        return int(self.array.shape[0])

    def get(self, k: int) -> np.ndarray:
        return ((self.array[k] >> self.bit) & 1).astype(bool)

    def set(self, k: int, mask: np.ndarray) -> None:
        flag = np.uint8(1 << self.bit)
        s = self.array[k]
        s &= np.uint8(~flag & 0xFF)
        s |= np.where(mask, flag, np.uint8(0)).astype(np.uint8)

    def any(self, k: int) -> bool:
        return bool(((self.array[k] >> self.bit) & 1).any())

    def or_region(self, k: int, rows: slice, cols: slice, mask: np.ndarray) -> None:
        self.array[k, rows, cols] |= np.where(mask, np.uint8(1 << self.bit), np.uint8(0)).astype(np.uint8)


@dataclass
class SliceDetail:
    """Every stage's output on one inspected slice (``VolumeConfig.inspect``), for a person to look at."""

    index: int
    prompt: int                          # 0-based prompt index
    rgb: np.ndarray                      # the rendering the models saw (ROI applied, display orientation)
    similarity: float
    present: bool
    saliency_map: np.ndarray | None = None
    coarse_mask: np.ndarray | None = None
    visual_prompts: Any = None
    mask: np.ndarray | None = None       # SAM's mask before 3D consistency


@dataclass
class PromptResult:
    prompt: str | list[str]
    label: int
    gate: SimilarityGate
    records: list[SliceRecord]
    consistency: ConsistencyReport
    voxels: int = 0
    window: Window | None = None
    propagation: PropagationReport = field(default_factory=PropagationReport)

    @property
    def name(self) -> str:
        return _name(self.prompt)

    def summary(self) -> dict[str, Any]:
        return {
            "label": self.label, "prompt": self.prompt, "voxels": self.voxels,
            "window": dataclasses.asdict(self.window) if self.window else None,
            "presence": {"mode": self.gate.mode, "threshold": self.gate.threshold, "note": self.gate.note},
            "slices_present": [r.index for r in self.records if r.present],
            "slices_with_mask": [r.index for r in self.records if r.found],
            "consistency": self.consistency.to_dict(),
            "propagation": self.propagation.to_dict(),
            "per_slice": [{"slice": r.index, "similarity": round(r.similarity, 6),
                           "passed_similarity": r.passed_similarity,
                           "raw_saliency_peak": None if r.raw_saliency_peak is None else round(r.raw_saliency_peak, 6),
                           "present": r.present, "confident": r.confident, "found": r.found,
                           "propagated": r.propagated, "mask_pixels": r.mask_pixels} for r in self.records],
        }


@dataclass
class VolumeResult:
    labels: np.ndarray                  # uint8 slices×rows×cols in the source geometry (0 = background)
    geometry: Geometry
    prompts: list[PromptResult]
    window: Window                      # the first prompt's (each prompt's is in its PromptResult)
    slices: int                         # slices in range
    processed: int                      # slices that went through saliency → SAM for at least one prompt
    gated: int                          # slices in range judged absent for every prompt
    seconds: dict[str, float]
    notes: list[str] = field(default_factory=list)
    overlaps: list[Overlap] = field(default_factory=list)
    slice_range: tuple[int, int] = (0, 0)
    roi: tuple[int, int, int, int] | None = None
    details: list[SliceDetail] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "geometry": {"shape": list(self.geometry.shape), "spacing": list(self.geometry.spacing),
                         "origin": list(self.geometry.origin), "direction": list(self.geometry.direction),
                         "regular": self.geometry.regular},
            "window": dataclasses.asdict(self.window),
            "slice_range": list(self.slice_range), "roi": list(self.roi) if self.roi else None,
            "slices": self.slices, "processed": self.processed, "gated": self.gated,
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "notes": self.notes,
            "overlaps": self.overlap_report(),
            "prompts": [p.summary() for p in self.prompts],
        }

    def overlap_report(self, values: Sequence[int] | None = None,
                       names: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """The overlapping prompt pairs as JSON: labels (``values[i]``, default ``i + 1``), their
        voxels, the label that kept them and why; ``names`` adds the targets' names."""
        value = (lambda i: int(values[i])) if values is not None else (lambda i: i + 1)
        out = []
        for o in self.overlaps:
            row: dict[str, Any] = {"labels": [value(o.first), value(o.second)], "voxels": o.voxels,
                                   "kept_label": value(o.kept), "sizes": list(o.sizes), "rule": o.reason}
            if names is not None:
                row["names"] = [names[o.first], names[o.second]]
                row["kept_name"] = names[o.kept]
            out.append(row)
        return out


def _batches(items: Sequence[int], size: int) -> Iterator[list[int]]:
    for i in range(0, len(items), size):
        yield list(items[i:i + size])


def _name(item: str | list[str]) -> str:
    return item if isinstance(item, str) else " | ".join(item)


class _Run:
    """The state of one :meth:`VolumePipeline.run`: per slice in range × prompt arrays, labels, notes."""

    def __init__(self, src: VolumeSource, items: list, indices: list[int], region: tuple[slice, slice],
                 labels: BitLabels, notes: list[str], progress: bool,
                 orientation: DisplayOrientation = AS_STORED) -> None:
        self.src, self.items, self.indices, self.region, self.labels = src, items, indices, region, labels
        self.orientation = orientation
        self.notes, self.progress = notes, progress
        shape = (len(indices), len(items))
        self.sims = np.zeros(shape, dtype=np.float64)
        self.peaks = np.full(shape, np.nan)
        self.present = np.zeros(shape, dtype=bool)
        self.confident = np.zeros(shape, dtype=bool)
        self.gates: list[SimilarityGate] = [None] * len(items)      # type: ignore[list-item]
        self.records: list[list[SliceRecord]] = [[] for _ in items]
        self.seconds: dict[str, float] = {}
        self.details: dict[tuple[int, int], SliceDetail] = {}

    def add_seconds(self, stage: str, value: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + value

    def rendered(self, k: int, win: Window) -> np.ndarray:
        """Slice ``k`` as the models see it: rendered with ``win``, the ROI cut, reoriented for display."""
        rs, cs = self.region
        return self.orientation.apply(render_slice(self.src.read_slice(k), win)[rs, cs])


class VolumePipeline:
    """Runs a :class:`~medclipsam.pipeline.Pipeline` over a volume, slice by slice (module docstring)."""

    def __init__(self, pipeline: Pipeline, config: VolumeConfig | None = None) -> None:
        self.pipeline = pipeline
        self.config = config or VolumeConfig()

    @property
    def device(self) -> torch.device:
        return self.pipeline.clip.device

    def _autocast(self):
        if self.device.type == "cuda" and self.config.autocast:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def sam_batch_size(self) -> int:
        cfg = self.config
        if cfg.batch_size > 0:
            return cfg.batch_size
        if self.device.type != "cuda":
            return 1
        free, _total = torch.cuda.mem_get_info(self.device)
        return fit_batch_size(free, sam_bytes_per_slice(self.pipeline.sam.model), cfg.max_batch_size)

    def saliency_batch_size(self) -> int:
        """(slice, prompt) pairs per call of a batched saliency method: the setting, or the device default."""
        if self.config.saliency_batch > 0:
            return self.config.saliency_batch
        return SALIENCY_BATCH_CUDA if self.device.type == "cuda" else SALIENCY_BATCH_CPU

    def run(self, src: VolumeSource, prompts: Sequence[str | Sequence[str]],
            window: str | Sequence[str | None] | None = None, progress: bool = False) -> VolumeResult:
        """Segment ``src`` for ``prompts`` (label i + 1 = prompt i). ``window``: a preset name (or
        None / "auto": chosen from modality and prompt) for every prompt, or a list with one per prompt."""
        t0 = time.perf_counter()
        items = self._check_prompts(prompts)
        if window is None or isinstance(window, str):
            per_prompt = [window] * len(items)
        else:
            per_prompt = list(window)
            if len(per_prompt) != len(items):
                raise ConfigError(f"{len(per_prompt)} windows given for {len(items)} prompts; give one per prompt")
        cfg = self.config
        n, rows, cols = src.geometry.shape
        start, stop = _resolve_range(cfg, n)
        x0, y0, x1, y1 = _resolve_roi(cfg, rows, cols)
        orientation = display_orientation(src.geometry) if cfg.reorient else AS_STORED
        run = _Run(src, items, list(range(start, stop)), (slice(y0, y1), slice(x0, x1)), BitLabels((n, rows, cols)),
                   notes=list(getattr(src, "notes", [])), progress=progress, orientation=orientation)
        if not orientation.identity:
            run.notes.append(f"slices shown to the models in radiological orientation ({orientation.describe()}); "
                             "the label is on the series' own grid")

        # one window per series and target: prompts that want different windows are rendered apart
        tw = time.perf_counter()
        windows = [choose_window(src, [_name(item)], w) for item, w in zip(items, per_prompt)]
        run.add_seconds("window", time.perf_counter() - tw)
        groups: dict[tuple, list[int]] = {}
        for p, w in enumerate(windows):
            groups.setdefault((w.preset, w.low, w.high, w.invert), []).append(p)
        calibrated = model_presence_threshold(self.pipeline.clip)
        for members in groups.values():
            self._segment(run, members, windows[members[0]], calibrated)

        tc = time.perf_counter()
        reports = []
        for p in range(len(items)):
            conf_full = np.zeros(n, bool)
            conf_full[start:stop] = run.confident[:, p]
            reports.append(enforce_consistency(run.labels.stack(p), cfg.consistency, conf_full))
        run.add_seconds("consistency", time.perf_counter() - tc)
        tp = time.perf_counter()
        propagated = [PropagationReport() for _ in items]
        if cfg.propagation.enabled:
            embeddings: dict[tuple, Any] = {}
            for p in range(len(items)):
                propagated[p] = self._propagate(run, p, windows[p], embeddings)
            run.add_seconds("propagation", time.perf_counter() - tp)

        label_map, overlaps = run.labels.to_label_map()
        for o in overlaps:
            kept, lost = (0, 1) if o.kept == o.first else (1, 0)
            run.notes.append(f"prompts {o.first + 1} ({_name(items[o.first])}) and {o.second + 1} "
                             f"({_name(items[o.second])}) overlap on {o.voxels} voxels; prompt {o.kept + 1} keeps "
                             f"them ({o.reason}: {o.sizes[kept]} voxels vs {o.sizes[lost]})")
        voxels = np.zeros(len(items) + 1, dtype=np.int64)
        for k in range(n):                       # per slice: a whole-volume comparison would double memory
            voxels += np.bincount(label_map[k].ravel(), minlength=len(items) + 1)[:len(items) + 1]
        results = []
        for p, item in enumerate(items):
            results.append(PromptResult(item, p + 1, run.gates[p], run.records[p], reports[p], int(voxels[p + 1]),
                                        windows[p], propagated[p]))
        processed = int(run.present.any(axis=1).sum())
        run.seconds["total"] = time.perf_counter() - t0
        return VolumeResult(label_map, src.geometry, results, windows[0], len(run.indices), processed,
                            len(run.indices) - processed, run.seconds, run.notes, overlaps, (start, stop), cfg.roi,
                            sorted(run.details.values(), key=lambda d: (d.prompt, d.index)))

    def _segment(self, run: "_Run", members: list[int], win: Window, calibrated: float | None) -> None:
        """The three passes for the prompts ``members``, which share the rendering ``win``."""
        from tqdm import tqdm

        cfg, pcfg = self.config, self.pipeline.config
        clip = self.pipeline.clip
        indices, (rs, cs) = run.indices, run.region
        texts = {p: self.pipeline.text_embedding(run.items[p]) for p in members}
        text_matrix = torch.cat([texts[p] for p in members], dim=0).to(clip.device)      # M × D

        def rendered(k: int) -> np.ndarray:       # what the models see: the ROI, reoriented for display
            return run.rendered(k, win)

        bar = dict(disable=not run.progress, unit="slice", leave=False)
        label = f" [{win.preset}]" if len(members) < len(run.items) else ""     # several windows: say which
        # 1. similarity pass (batched)
        ts = time.perf_counter()
        batch = SIMILARITY_BATCH_CUDA if self.device.type == "cuda" else SIMILARITY_BATCH_CPU
        with tqdm(total=len(indices), desc="similarity" + label, **bar) as pb:
            for chunk in _batches(list(range(len(indices))), batch):
                pixels = torch.cat([clip_input(rendered(indices[i]), clip.image_size, clip.mean, clip.std)[0]
                                    for i in chunk])
                with torch.no_grad(), self._autocast():
                    emb = clip.encode_image(pixels).float()
                run.sims[np.ix_(chunk, members)] = (emb @ text_matrix.float().T).cpu().numpy()
                pb.update(len(chunk))
        run.add_seconds("similarity", time.perf_counter() - ts)
        for p in members:
            gate = similarity_gate(run.sims[:, p], cfg.presence, calibrated)
            run.gates[p] = gate
            if gate.note:
                run.notes.append(f"prompt {_name(run.items[p])!r}: {gate.note}")

        # 2. saliency pass on candidate slices: their (slice, prompt) pairs, several per call for a
        #    method with a batch form (M2IB: saliency_batch_size()), one per call otherwise. Slice k's
        #    config has seed params.seed + k whichever way it runs, so the maps do not depend on the batch.
        tsal = time.perf_counter()
        grids: dict[tuple[int, int], np.ndarray] = {}
        params = pcfg.saliency_params()
        method = SALIENCY_METHODS.get(pcfg.saliency)
        candidates = [i for i in range(len(indices)) if any(run.gates[p].present[i] for p in members)]
        pairs = [(i, p) for i in candidates for p in members if run.gates[p].present[i]]
        pair_batch = self.saliency_batch_size() if method.batched else 1
        last_slice: dict[int, torch.Tensor] = {}

        def slice_pixels(i: int) -> torch.Tensor:     # pairs come slice by slice: each slice rendered once
            if i not in last_slice:
                last_slice.clear()
                last_slice[i] = clip_input(rendered(indices[i]), clip.image_size, clip.mean, clip.std)[0]
            return last_slice[i]

        def slice_params(i: int) -> Any:
            k = indices[i]
            return dataclasses.replace(params, seed=params.seed + k) if hasattr(params, "seed") else params

        with tqdm(total=len(candidates), desc="saliency" + label, **bar) as pb:
            for start in range(0, len(pairs), pair_batch):
                chunk = pairs[start:start + pair_batch]
                pixels = torch.cat([slice_pixels(i) for i, _ in chunk])
                text_batch = torch.cat([texts[p] for _, p in chunk])
                with self._autocast():
                    outs = saliency_grids(clip, pixels, text_batch, pcfg.saliency, [slice_params(i) for i, _ in chunk])
                for (i, p), out in zip(chunk, outs):
                    grid = out.raw_grid.float().numpy().astype(np.float32)
                    grids[(i, p)] = grid
                    finite = grid[np.isfinite(grid)]
                    run.peaks[i, p] = float(finite.max()) if finite.size else 0.0
                stop = start + len(chunk)                  # the bar counts slices whose last pair is done
                pb.update(sum(1 for j in range(start, stop) if j + 1 == len(pairs) or pairs[j + 1][0] != pairs[j][0]))
        run.add_seconds("saliency", time.perf_counter() - tsal)
        for p in members:
            gate = run.gates[p]
            run.present[:, p] = (saliency_gate(run.peaks[:, p], gate.present, cfg.presence.saliency_ratio)
                                 if cfg.presence.enabled else gate.present)
            run.confident[:, p] = confident_slices(run.sims[:, p], run.present[:, p])
            run.records[p] = [SliceRecord(index=indices[i], similarity=float(run.sims[i, p]),
                                          passed_similarity=bool(gate.present[i]),
                                          raw_saliency_peak=(None if np.isnan(run.peaks[i, p])
                                                             else float(run.peaks[i, p])),
                                          present=bool(run.present[i, p]), confident=bool(run.confident[i, p]))
                              for i in range(len(indices))]

        if cfg.inspect:
            self._pick_inspected(run, members, rendered)

        # 3. SAM pass on present slices (one SAM embedding per slice for all prompts of this window)
        tsam = time.perf_counter()
        todo = [i for i in range(len(indices)) if run.present[i, members].any()]
        segmenter = self.pipeline.segmenter
        with tqdm(total=len(todo), desc="SAM" + label, **bar) as pb:
            for chunk in _batches(todo, self.sam_batch_size()):
                images = [rendered(indices[i]) for i in chunk]
                with torch.no_grad(), self._autocast():
                    embeddings = segmenter.encode(images)
                for i, rgb, emb in zip(chunk, images, embeddings):
                    k = indices[i]
                    segmenter.set_embedding(emb)
                    pad = SquarePad.for_shape(*rgb.shape[:2])
                    for p in members:
                        if not run.present[i, p]:
                            continue
                        smap = saliency_map_from_grid(grids.pop((i, p)), pad, clip.image_size)
                        with self._autocast():
                            chain = chain_from_saliency(smap, rgb, run.items[p], pcfg, segmenter,
                                                        prompt_seed=pcfg.prompts.seed + k)
                        detail = run.details.get((i, p))
                        if detail is not None:
                            detail.saliency_map, detail.coarse_mask = smap, chain.coarse_mask
                            detail.visual_prompts, detail.mask = chain.visual_prompts, chain.mask
                        if chain.sam is None:
                            continue
                        mask = chain.mask
                        rec = run.records[p][i]
                        rec.found = bool(mask.any())
                        rec.mask_pixels = int(mask.sum())
                        if rec.found:
                            run.labels.stack(p).or_region(k, rs, cs, run.orientation.invert(mask))
                    pb.update(1)
                del embeddings
        run.add_seconds("sam", time.perf_counter() - tsam)

    def _propagate(self, run: "_Run", p: int, win: Window, embeddings: dict[tuple, Any]) -> PropagationReport:
        """Stage 6 for prompt ``p`` (module :mod:`.propagation`), in place on its label bits."""
        pc = self.config.propagation
        stack, (rs, cs) = run.labels.stack(p), run.region
        lo, hi = run.indices[0], run.indices[-1] + 1
        sam_cfg = dataclasses.replace(self.pipeline.config.sam, coarse_clip=-1.0)     # no coarse mask here
        segmenter = self.pipeline.segmenter
        report = PropagationReport()

        def seen(k: int) -> tuple[np.ndarray, np.ndarray]:     # (RGB as the models see it, its grey levels)
            rgb = run.rendered(k, win)
            return rgb, rgb.astype(np.float32).mean(axis=2)

        for first, direction in run_ends(np.array([stack.any(k) for k in range(lo, hi)])):
            source_k = lo + first
            source = run.orientation.apply(stack.get(source_k)[rs, cs])
            grey_source = seen(source_k)[1]
            for _step in range(pc.max_slices):
                k = source_k + direction
                if not lo <= k < hi or stack.any(k):
                    break
                rgb, grey = seen(k)
                key = (win.preset, win.low, win.high, win.invert, k)
                if key not in embeddings:
                    with torch.no_grad(), self._autocast():
                        embeddings[key] = segmenter.encode([rgb])[0]
                segmenter.set_embedding(embeddings[key])
                boxes = mask_boxes(source)
                with self._autocast():
                    out = segmenter.segment(VisualPrompts(boxes=boxes, num_components=len(boxes)), sam_cfg)
                why = judge(out.mask, source, grey, grey_source, pc)
                if why is not None:
                    report.rejected[k] = why
                    break
                stack.or_region(k, rs, cs, run.orientation.invert(out.mask))
                rec = run.records[p][k - lo]
                rec.found, rec.propagated, rec.mask_pixels = True, True, int(out.mask.sum())
                report.rejected.pop(k, None)
                report.added_slices.append(k)
                source, grey_source, source_k = out.mask, grey, k
        report.added_slices.sort()
        return report

    def _pick_inspected(self, run: "_Run", members: list[int], rendered) -> None:
        """Up to ``inspect`` present slices per prompt, evenly spread, plus one judged absent."""
        for p in members:
            present = np.flatnonzero(run.present[:, p])
            absent = np.flatnonzero(~run.present[:, p])
            chosen = [int(present[j]) for j in np.unique(np.linspace(0, len(present) - 1,
                                                                     num=min(len(present), self.config.inspect))
                                                         .round().astype(int))] if len(present) else []
            if len(absent):
                chosen.append(int(absent[np.argmin(np.abs(absent - (np.median(present) if len(present) else 0)))]))
            for i in chosen:
                run.details[(i, p)] = SliceDetail(run.indices[i], p, rendered(run.indices[i]), float(run.sims[i, p]),
                                                  bool(run.present[i, p]))

    @staticmethod
    def _check_prompts(prompts: Sequence[str | Sequence[str]]) -> list[str | list[str]]:
        items: list[str | list[str]] = []
        for p in prompts:
            if isinstance(p, str):
                if not p.strip():
                    raise InputError("a text prompt is empty; give the target in words, e.g. \"left lung\"")
                items.append(p.strip())
            else:
                group = [q.strip() for q in p]
                if not group or any(not q for q in group):
                    raise InputError("a prompt ensemble is empty or has an empty prompt")
                items.append(group)
        if not items:
            raise InputError("no text prompt given; give the target in words "
                             "(one prompt per label; --prompt TEXT on the command line)")
        if len(items) > MAX_PROMPTS:
            raise InputError(f"{len(items)} prompts given; at most {MAX_PROMPTS} labels per run — split the run")
        return items


__all__ = ["VolumeConfig", "VolumePipeline", "VolumeResult", "PromptResult", "SliceDetail", "BitLabels", "Overlap",
           "fit_batch_size", "sam_bytes_per_slice", "parse_slice_range", "parse_roi"]
