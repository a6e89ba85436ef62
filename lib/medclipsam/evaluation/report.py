"""The result of a folder evaluation: per-image rows, their means, the CSV and the printed summary."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .metrics import CASES

__all__ = ["MaskScores", "EvaluationReport", "write_csv", "summary_lines"]

_METRICS = ("dsc", "iou", "nsd", "slab_nsd")


@dataclass
class MaskScores:
    """Scores of one prediction against its ground truth."""

    name: str
    dsc: float
    iou: float
    nsd: float  #: true 2D boundary NSD
    slab_nsd: float  #: the paper's slab-NSD
    case: str  #: one of CASES


def _preview(names, limit: int = 5) -> str:
    names = list(names)
    if not names:
        return "none"
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


@dataclass
class EvaluationReport:
    """Per-image scores of a folder evaluation."""

    rows: list[MaskScores]
    unmatched_pred: list[str] = field(default_factory=list)
    unmatched_gt: list[str] = field(default_factory=list)
    tolerance: float = 2.0

    @property
    def count(self) -> int:
        """Number of scored image pairs."""
        return len(self.rows)

    def means(self) -> dict[str, float]:
        """Mean ``dsc``, ``iou``, ``nsd`` and ``slab_nsd`` over all rows (NaN if no rows)."""
        if not self.rows:
            return {m: float("nan") for m in _METRICS}
        return {m: float(np.mean([getattr(r, m) for r in self.rows])) for m in _METRICS}

    def case_counts(self) -> dict[str, int]:
        """Number of rows per case (every case in CASES is present, possibly 0)."""
        counts = {c: 0 for c in CASES}
        for r in self.rows:
            counts[r.case] = counts.get(r.case, 0) + 1
        return counts


def write_csv(report: EvaluationReport, path) -> None:
    """Write one row per image: ``name,dsc,iou,nsd,slab_nsd,case`` (scores to 6 decimals)."""
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["name", *_METRICS, "case"])
        for r in report.rows:
            writer.writerow([r.name, *(f"{getattr(r, m):.6f}" for m in _METRICS), r.case])


def summary_lines(report: EvaluationReport) -> list[str]:
    """Human-readable summary; the last line is ``dsc=… iou=… nsd=… n=…`` (nsd = boundary NSD)."""
    m = report.means()
    counts = report.case_counts()
    lines = [
        f"images scored: {report.count} (NSD tolerance {report.tolerance:g} px)",
        "cases: " + ", ".join(f"{c}={counts[c]}" for c in counts),
    ]
    if report.unmatched_pred:
        lines.append(
            f"predictions without ground truth ({len(report.unmatched_pred)}): "
            + _preview(report.unmatched_pred, 10)
        )
    if report.unmatched_gt:
        lines.append(
            f"ground truths without prediction ({len(report.unmatched_gt)}): "
            + _preview(report.unmatched_gt, 10)
        )
    lines.append(
        f"mean DSC {m['dsc']:.4f}  IoU {m['iou']:.4f}  "
        f"NSD {m['nsd']:.4f}  slab-NSD {m['slab_nsd']:.4f}"
    )
    lines.append(
        "note: slab-NSD is the paper's metric (2D mask as an HxWx1 volume; tracks DSC); "
        "NSD is the true 2D boundary metric."
    )
    lines.append(f"dsc={m['dsc']:.4f} iou={m['iou']:.4f} nsd={m['nsd']:.4f} n={report.count}")
    return lines
