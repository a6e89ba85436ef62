"""A MONAI Label infer request → the targets to segment and the engine's settings.

Clients send options differently (``docs/monailabel.md`` §Options): 3D Slicer sends
every option on every call with lists reduced to the chosen item and values cast by the
default's type; OHIF sends only the options the user edited, lists whole, and its Class Prompts
tab sends ``label_prompt`` (indices into the static labels). So every option here is read with a
default, a list stands for its first item, and booleans and numbers may arrive as text.

Targets, in this order (duplicates dropped):

1. ``label_prompt`` — vocabulary entries by label value (OHIF Class Prompts);
2. ``prompt`` — free text, several targets separated by ``;``; a prompt that names a vocabulary
   entry ("Left lung", "tumour") is that entry (its value, prompts, window, code); other text gets
   the generic ``prompted`` value, and a second, third ... free-text prompt the values after it
   (3D Slicer names them from ``label_names``; OHIF shows only the static labels).

An OHIF request without any target — neither a ``prompt`` nor a ``label_prompt`` key, and the
``restore_label_idx`` key OHIF's client adds to every inference — gets **every label of
the vocabulary** (the first :data:`MAX_TARGETS`), each judged by the presence gate, so labels that are
not in the study stay empty. That is what OHIF's *Auto-Segmentation* sends when the user runs it with
the options as shown (OHIF sends only edited options, and the tab promises "everything from the
pre-trained model"); OHIF displays no text from the server — for any error only "Failed to Run
Segmentation" — so a 400 would leave that first click unexplained. A ``prompt`` that is present but
empty (3D Slicer sends every option; an OHIF user who cleared the field) or a ``label_prompt`` that
ticks nothing stays a 400 naming the fix, and so does an API call that names no target (a
script, curl), which would otherwise start the longest job the server has by omission.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..errors import ConfigError, InputError
from .vocabulary import PROMPTED, Vocabulary, VocabularyEntry, normalise_name

logger = logging.getLogger(__name__)

OHIF_MARKER = "restore_label_idx"  # OHIF's MONAI Label client adds it to every inference request
MAX_TARGETS = 8                     # the slice engine's one bit per prompt
PRESET_CHOICE = "preset"            # "keep the preset's method"
TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


@dataclass(frozen=True)
class Target:
    name: str                                   # segment name (vocabulary name or the prompt text)
    value: int                                  # voxel value in the returned label
    prompt: str | list[str]                     # what CLIP reads (a list: prompt ensemble)
    window: str = "auto"
    entry: VocabularyEntry | None = None        # None: free text


@dataclass
class InferOptions:
    """The options a client can edit (the task's ``config()``), normalised."""

    preset: str = "v2"
    saliency: str = PRESET_CHOICE
    postprocess: str = PRESET_CHOICE
    visual_prompts: str = PRESET_CHOICE
    window: str = "auto"                        # overrides every target's window unless "auto"
    presence_threshold: float | None = None     # None: the model's calibration, else a relative split
    gate: bool = True
    slices: str = ""                            # START:STOP, empty: all
    overrides: dict[str, str] = field(default_factory=dict)   # "set": "key=value; key=value"

    def engine_overrides(self) -> dict[str, str]:
        """The engine's ``--set`` pairs (2D pipeline and volume settings) for these options; the explicit
        ``set`` pairs win."""
        out: dict[str, str] = {}
        if self.saliency != PRESET_CHOICE:
            out["saliency"] = self.saliency
        if self.postprocess != PRESET_CHOICE:
            out["postprocess.method"] = self.postprocess
        if self.visual_prompts != PRESET_CHOICE:
            out["prompts.kind"] = self.visual_prompts
        if self.presence_threshold is not None:
            out["presence.threshold"] = repr(self.presence_threshold)
        if not self.gate:
            out["presence.enabled"] = "false"
        return {**out, **self.overrides}


def first(value: Any) -> Any:
    """OHIF sends an unedited list option whole: it stands for its first item (the default)."""
    if isinstance(value, (list, tuple)):
        return value[0] if value else None
    return value


def as_bool(value: Any, key: str) -> bool:
    value = first(value)
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return bool(value)
    text = str(value).strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise ConfigError(f"option {key!r} = {value!r} is not true or false")


def as_text(value: Any) -> str:
    value = first(value)
    return "" if value is None else str(value).strip()


def _choice(request: Mapping[str, Any], key: str, default: str, choices: list[str]) -> str:
    text = as_text(request.get(key, default)) or default
    if text.lower() not in [c.lower() for c in choices]:
        raise ConfigError(f"option {key!r} = {text!r}; choose one of: {', '.join(choices)}")
    return text.lower()


def _threshold(value: Any) -> float | None:
    text = as_text(value)
    if text.lower() in ("", "none", "auto", "model"):
        return None
    try:
        x = float(text)
    except ValueError:
        raise ConfigError(f"option 'presence_threshold' = {text!r} is not a number; give a cosine similarity "
                          "in [-1, 1] (e.g. 0.2), or leave it empty for the model's calibration") from None
    if not -1.0 <= x <= 1.0:
        raise ConfigError(f"option 'presence_threshold' = {x} is not a cosine similarity; give a value in [-1, 1]")
    return x


def _set_pairs(value: Any) -> dict[str, str]:
    text = as_text(value)
    out: dict[str, str] = {}
    for part in text.replace("\n", ";").split(";"):
        part = part.strip()
        if not part:
            continue
        key, sep, val = part.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"option 'set': {part!r} is not KEY=VALUE (e.g. m2ib.beta=2; separate pairs with ';')")
        out[key.strip()] = val.strip()
    return out


def option_choices() -> dict[str, list[str]]:
    """The choices of the list options (the first is the default)."""
    from ..config import PRESETS
    from ..postprocess import BINARIZATION_METHODS
    from ..prompts import VISUAL_PROMPT_TYPES
    from ..saliency import SALIENCY_METHODS
    from ..volume.render import WINDOW_PRESETS

    presets = PRESETS.names()
    presets = ["v2"] + [p for p in presets if p != "v2"]
    return {
        "preset": presets,
        "saliency": [PRESET_CHOICE] + SALIENCY_METHODS.names(),
        "postprocess": [PRESET_CHOICE] + BINARIZATION_METHODS.names(),
        "visual_prompts": [PRESET_CHOICE] + VISUAL_PROMPT_TYPES.names(),
        "window": ["auto"] + WINDOW_PRESETS.names(),
    }


def default_config() -> dict[str, Any]:
    """The options shown in 3D Slicer's Options table and OHIF's options dialog: strings are text
    fields, booleans check boxes, lists drop-downs (first item = default)."""
    choices = option_choices()
    return {"prompt": "", **choices, "presence_threshold": "", "gate": True, "slices": "", "set": ""}


def parse_options(request: Mapping[str, Any]) -> InferOptions:
    choices = option_choices()
    opts = InferOptions(
        preset=_choice(request, "preset", "v2", choices["preset"]),
        saliency=_choice(request, "saliency", PRESET_CHOICE, choices["saliency"]),
        postprocess=_choice(request, "postprocess", PRESET_CHOICE, choices["postprocess"]),
        visual_prompts=_choice(request, "visual_prompts", PRESET_CHOICE, choices["visual_prompts"]),
        window=_choice(request, "window", "auto", choices["window"]),
        presence_threshold=_threshold(request.get("presence_threshold")),
        gate=as_bool(request.get("gate", True), "gate"),
        slices=as_text(request.get("slices")),
        overrides=_set_pairs(request.get("set")),
    )
    if opts.slices:
        from ..volume.engine import parse_slice_range

        parse_slice_range(opts.slices)          # a bad range fails now, with the format
    return opts


def _label_prompt_values(value: Any) -> list[int]:
    if value is None or value == "" or value == []:
        return []
    items = value if isinstance(value, (list, tuple)) else str(value).replace(";", ",").split(",")
    out = []
    for item in items:
        try:
            out.append(int(str(item).strip()))
        except ValueError:
            raise ConfigError(f"label_prompt {value!r} must be label values (integers), e.g. [1, 4]") from None
    return out


def default_targets(vocabulary: Vocabulary) -> list[Target]:
    """The targets of a request that names none: the vocabulary's labels in order, at most
    :data:`MAX_TARGETS` (module docstring)."""
    entries = vocabulary.entries[:MAX_TARGETS]
    left_out = [e.name for e in vocabulary.entries[MAX_TARGETS:]]
    logger.info("medclipsam: the request names no target (no 'prompt' or 'label_prompt' option; OHIF's "
                "Auto-Segmentation sends only edited options): segmenting the vocabulary's labels %s%s. "
                "Type a prompt in the options or tick Class Prompts to choose.",
                ", ".join(e.name for e in entries),
                f" (left out, at most {MAX_TARGETS} per request: {', '.join(left_out)})" if left_out else "")
    return [Target(e.name, e.value, e.prompt, e.window, e) for e in entries]


def resolve_targets(request: Mapping[str, Any], vocabulary: Vocabulary) -> list[Target]:
    """The targets of a request (module docstring): without a ``prompt`` or ``label_prompt`` key the
    vocabulary's labels; an empty ``prompt`` (and nothing else) is an :class:`InputError`."""
    if "prompt" not in request and "label_prompt" not in request and OHIF_MARKER in request:
        return default_targets(vocabulary)
    targets: list[Target] = []
    seen: set[str] = set()

    def add(t: Target) -> None:
        key = normalise_name(t.name)
        if key not in seen:
            seen.add(key)
            targets.append(t)

    for value in _label_prompt_values(request.get("label_prompt")):
        e = vocabulary.by_value(value)
        add(Target(e.name, e.value, e.prompt, e.window, e))
    raw = as_text(request.get("prompt"))
    free = 0
    for text in (p.strip() for p in raw.split(";")):
        if not text:
            continue
        e = vocabulary.find(text)
        if e is not None:
            add(Target(e.name, e.value, e.prompt, e.window, e))
        elif normalise_name(text) == PROMPTED:
            raise InputError(f"{PROMPTED!r} is the label of free-text prompts, not a target; type what to "
                             "segment, e.g. \"left lung\"")
        else:
            key = normalise_name(text)
            if key in seen:
                continue
            add(Target(text, vocabulary.prompted_value + free, text))
            free += 1
    if not targets:
        raise InputError("no text prompt: type what to segment in the 'prompt' option (e.g. \"left lung\"; "
                         "several targets separated by ';'), or tick labels under OHIF's Class Prompts")
    if len(targets) > MAX_TARGETS:
        raise InputError(f"{len(targets)} targets in one request; at most {MAX_TARGETS} — split the request")
    if max(t.value for t in targets) > 255:
        raise InputError("label values above 255 do not fit the uint8 label; use fewer free-text prompts")
    return targets


def with_window(targets: list[Target], options: InferOptions) -> list[Target]:
    """The option ``window`` (unless auto) replaces every target's own window."""
    if options.window == "auto":
        return targets
    return [dataclasses.replace(t, window=options.window) for t in targets]
