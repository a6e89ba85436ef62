"""The message for a series run that segmented nothing, worded for where the run was asked from.

A DICOM SEG cannot be empty, so a run whose every slice was judged target-absent or gave no mask
ends with an error. Its advice must fit the presence settings the run used (lowering the presence
threshold only helps when a threshold judged slices absent, not with the gate off) and must name
the settings as the caller knows them: command-line flags for ``segment-series``, request options
for the MONAI Label server. :class:`SettingNames` holds those names; :data:`CLI_NAMES` and
:data:`REQUEST_NAMES` are the two vocabularies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SettingNames:
    """How the caller names each setting the advice may mention (``None``: it has no such setting)."""

    threshold: str              # the presence threshold
    gate_off: str               # how to turn the presence gate off
    saliency_ratio_off: str     # how to keep slices with a weak saliency peak
    window: str
    roi: str | None
    slices: str | None
    empty_label: str            # how to get an empty label volume instead of a SEG


CLI_NAMES = SettingNames(threshold="--presence-threshold", gate_off="--no-gate",
                         saliency_ratio_off="--set presence.saliency_ratio=0", window="--window", roi="--roi",
                         slices="--slices", empty_label="write --out NAME.nii.gz for an empty label volume")
REQUEST_NAMES = SettingNames(threshold="the presence_threshold option", gate_off="the option gate=false",
                             saliency_ratio_off="the option set=presence.saliency_ratio=0", window="the window option",
                             roi=None, slices="the slices option",
                             empty_label="ask for a NIfTI/NRRD result for an empty label volume")


def nothing_segmented_message(result: Any, names: SettingNames = CLI_NAMES) -> str:
    """The error for a :class:`~medclipsam.volume.engine.VolumeResult` with no mask on any slice
    when a DICOM SEG was asked for, with advice that fits the presence settings it ran with."""
    head = (f"nothing was segmented ({result.gated} of {result.slices} slices judged target-absent, no mask on "
            "the others), and a DICOM SEG cannot be empty: no SEG written")
    several = len(result.prompts) > 1
    why, advice = [], []
    if all(p.gate.mode == "disabled" for p in result.prompts):
        why.append(f"the presence gate was off ({names.gate_off}): all {result.processed} slices were processed and "
                   "no mask was found on any")
    else:
        below = []     # the similarity thresholds that judged slices absent
        for p in result.prompts:
            n = sum(not r.passed_similarity for r in p.records)
            if n and p.gate.threshold is not None:
                what = {"user": names.threshold, "model calibration": "the model's calibrated threshold",
                        "series-relative split": "the series-relative split"}.get(p.gate.mode, p.gate.mode)
                below.append(f"{n} slice(s) had a similarity below {what} {p.gate.threshold:.4g}"
                             + (f" for label {p.label} {p.name!r}" if several else ""))
        if below:
            why.append("; ".join(below))
            advice.append(f"lower {names.threshold}, or use {names.gate_off} to process every slice")
        weak = sum(r.passed_similarity and not r.present for p in result.prompts for r in p.records)
        if weak:
            why.append(f"{weak} slice(s) passed the similarity gate but their saliency peak was weak (below "
                       "presence.saliency_ratio × the series' highest)")
            advice.append(f"{names.saliency_ratio_off} to keep them (or {names.gate_off})")
        if result.processed:
            why.append(f"saliency → SAM found no mask on the {result.processed} processed slice(s)")
    if result.processed or not advice:
        advice.append(f"word the prompt as the target's anatomical name, or try another {names.window}")
    if result.roi is not None and names.roi:
        advice.append(f"check that {names.roi} covers the target")
    if names.slices and result.slices and result.slice_range and result.slices < result.geometry.shape[0]:
        advice.append(f"widen {names.slices}")
    reasons = "; ".join(why)
    reasons = f"{reasons[:1].upper()}{reasons[1:]}. " if reasons else ""
    return f"{head}. {reasons}{names.empty_label[:1].upper()}{names.empty_label[1:]}, or {'; '.join(advice)}"
