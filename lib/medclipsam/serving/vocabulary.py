"""The label vocabulary a served app declares: fixed names with fixed label values, plus a generic
``prompted`` label for free text.

MONAI Label clients map voxel values to names differently (``docs/monailabel.md`` §Clients):
OHIF pastes the returned voxels into segments named by the *static* ``labels`` of ``/info/``, and
its Class Prompts tab sends ``label_prompt`` as indices into them; 3D Slicer names segments from
the response's ``label_names``. So the vocabulary fixes a value per known target (its position + 1)
and the ``prompted`` value follows them.

File format (JSON; ``configs/vocabulary/default.json`` is the default)::

    {"labels": [{"name": "left lung", "prompts": ["left lung"], "window": "auto",
                 "snomed": {"code": "44029006", "meaning": "Left lung", "category": "anatomy"},
                 "color": [102, 180, 219]}, ...]}

``prompts`` (default: the name) are what CLIP reads — several make a prompt ensemble (mean text
embedding); ``window`` is a rendering window preset or ``auto``; ``snomed`` gives the DICOM SEG
segment's coded type (default: derived from the name, :func:`medclipsam.dicom.codes.concept_for_prompt`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError

DEFAULT_VOCABULARY = Path(__file__).resolve().parents[1] / "configs" / "vocabulary" / "default.json"
PROMPTED = "prompted"
SNOMED_CATEGORIES = ("anatomy", "tissue", "abnormal")


@dataclass(frozen=True)
class SnomedCode:
    code: str
    meaning: str
    category: str = "anatomy"          # anatomy | tissue | abnormal (DICOM CID 7150)


@dataclass(frozen=True)
class VocabularyEntry:
    name: str
    value: int
    prompts: tuple[str, ...]
    window: str = "auto"
    snomed: SnomedCode | None = None
    color: tuple[int, int, int] | None = None

    @property
    def prompt(self) -> str | list[str]:
        """What the engine takes: one prompt, or a list for a prompt ensemble."""
        return self.prompts[0] if len(self.prompts) == 1 else list(self.prompts)


def normalise_name(text: str) -> str:
    """Case, spaces, underscores and the British spelling do not matter: "Left_Lung" = "left lung",
    "tumour" = "tumor"."""
    text = re.sub(r"[\s_]+", " ", text.strip().lower())
    return re.sub(r"tumour", "tumor", text)


@dataclass
class Vocabulary:
    entries: list[VocabularyEntry]
    source: str = "built-in"
    _by_name: dict[str, VocabularyEntry] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for e in self.entries:
            key = normalise_name(e.name)
            if key in self._by_name:
                raise ConfigError(f"label vocabulary {self.source}: {e.name!r} appears twice; give each label once")
            if key == PROMPTED:
                raise ConfigError(f"label vocabulary {self.source}: {PROMPTED!r} is the generic free-text label "
                                  "and is added by medclipsam; remove it from the file")
            self._by_name[key] = e

    @property
    def prompted_value(self) -> int:
        """The label value of free text that names no vocabulary entry."""
        return len(self.entries) + 1

    def labels(self) -> dict[str, int]:
        """``{name: value}`` for ``/info/`` (the static labels OHIF maps by), ``prompted`` last."""
        out = {e.name: e.value for e in self.entries}
        out[PROMPTED] = self.prompted_value
        return out

    def find(self, name: str) -> VocabularyEntry | None:
        return self._by_name.get(normalise_name(name))

    def by_value(self, value: int) -> VocabularyEntry:
        """The entry with label value ``value`` (OHIF's ``label_prompt`` indices)."""
        for e in self.entries:
            if e.value == value:
                return e
        raise ConfigError(f"label_prompt {value} names no label of the vocabulary ({self.source}); "
                          f"known: {', '.join(f'{v}={k}' for k, v in self.labels().items() if k != PROMPTED)}")


def _entry(item: Any, value: int, source: str) -> VocabularyEntry:
    where = f"label vocabulary {source}, entry {value}"
    if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"].strip():
        raise ConfigError(f"{where}: each entry needs a non-empty \"name\" (e.g. {{\"name\": \"liver\"}})")
    name = item["name"].strip()
    prompts = item.get("prompts", [name])
    if isinstance(prompts, str):
        prompts = [prompts]
    if (not isinstance(prompts, list) or not prompts
            or not all(isinstance(p, str) and p.strip() for p in prompts)):
        raise ConfigError(f"{where} ({name!r}): \"prompts\" must be a non-empty list of non-empty strings")
    window = item.get("window", "auto")
    if not isinstance(window, str):
        raise ConfigError(f"{where} ({name!r}): \"window\" must be a preset name or \"auto\"")
    if window != "auto":
        from ..volume.render import WINDOW_PRESETS

        WINDOW_PRESETS.get(window)              # unknown: the error lists the presets
    snomed = None
    if item.get("snomed") is not None:
        s = item["snomed"]
        if not isinstance(s, dict) or not str(s.get("code", "")).strip() or not str(s.get("meaning", "")).strip():
            raise ConfigError(f"{where} ({name!r}): \"snomed\" needs \"code\" and \"meaning\" "
                              "(e.g. {\"code\": \"10200004\", \"meaning\": \"Liver\"})")
        category = s.get("category", "anatomy")
        if category not in SNOMED_CATEGORIES:
            raise ConfigError(f"{where} ({name!r}): snomed category {category!r}; use one of {SNOMED_CATEGORIES}")
        snomed = SnomedCode(str(s["code"]).strip(), str(s["meaning"]).strip(), category)
    color = item.get("color")
    if color is not None:
        if (not isinstance(color, list) or len(color) != 3
                or not all(isinstance(c, int) and 0 <= c <= 255 for c in color)):
            raise ConfigError(f"{where} ({name!r}): \"color\" must be [R, G, B] with integers 0-255")
        color = tuple(color)
    return VocabularyEntry(name, value, tuple(p.strip() for p in prompts), window, snomed, color)


def vocabulary_from_dict(data: Any, source: str = "built-in") -> Vocabulary:
    items = data.get("labels") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise ConfigError(f"label vocabulary {source}: expected {{\"labels\": [{{\"name\": ...}}, ...]}} "
                          "with at least one label")
    return Vocabulary([_entry(item, i + 1, source) for i, item in enumerate(items)], source)


def load_vocabulary(path: str | Path | None = None) -> Vocabulary:
    """The vocabulary in ``path`` (JSON), or the default one."""
    p = Path(path) if path else DEFAULT_VOCABULARY
    if not p.is_file():
        raise ConfigError(f"label vocabulary {p} not found; pass an existing JSON file (format: "
                          f"{DEFAULT_VOCABULARY}) or leave the setting out for the default")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"label vocabulary {p} is not readable JSON ({e}); fix the file") from None
    return vocabulary_from_dict(data, str(p))


def segment_concept(entry: VocabularyEntry | None, name: str):
    """The DICOM SEG coded concept of a target: the entry's SNOMED code, else derived from its name."""
    from ..dicom.codes import (
        CATEGORY_ABNORMAL,
        CATEGORY_ANATOMY,
        CATEGORY_TISSUE,
        SegmentConcept,
        coded,
        concept_for_prompt,
    )

    if entry is None or entry.snomed is None:
        return concept_for_prompt(name)
    category = {"anatomy": CATEGORY_ANATOMY, "tissue": CATEGORY_TISSUE,
                "abnormal": CATEGORY_ABNORMAL}[entry.snomed.category]
    return SegmentConcept(coded(category), coded((entry.snomed.code, entry.snomed.meaning)),
                          matched_term=entry.name)
