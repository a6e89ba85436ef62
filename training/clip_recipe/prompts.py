"""Structure prompts: the text a user types, the structures it names, and the presence label of a
(slice, prompt) pair."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Protocol

import numpy as np


class Slice(Protocol):
    """What the recipe needs of a training slice (``medclipsam.phantoms.PhantomSlice`` has it)."""

    rgb: np.ndarray                      # uint8 H×W×3
    caption: str                         # names what is visible
    masks: Mapping[str, np.ndarray]      # structure → bool H×W


# ---------------------------------------------------------------------------------------------
# structure prompts: text, the structures it names (any of them) and what must also be there


@dataclass(frozen=True)
class StructurePrompt:
    text: str
    targets: tuple[str, ...]             # present when any of these has enough pixels
    context: tuple[str, ...] = ()        # structures that must also be present ("brain" for "brain tumor")
    kinds: tuple[str, ...] = ()          # slice kinds it applies to (empty: any), e.g. "us-breast"


def _p(text: str, *targets: str, context: tuple[str, ...] = (), kinds: tuple[str, ...] = ()) -> StructurePrompt:
    return StructurePrompt(text, tuple(targets) or (text,), context, kinds)


# Each structure's own name is a prompt; the others are what users type for the same targets. In the
# phantom world "tumor" and "lesion" are the same kind of thing (the breast-ultrasound target is a
# "lesion"; captions call any of them tumour, mass, lesion, nodule or cyst).
STRUCTURE_PROMPTS: tuple[StructurePrompt, ...] = (
    _p("body"),
    _p("left lung"),
    _p("right lung"),
    _p("lungs", "left lung", "right lung"),
    _p("both lungs", "left lung", "right lung"),
    _p("lung", "left lung", "right lung"),
    _p("liver"),
    _p("spine"),
    _p("vertebra", "spine"),
    _p("brain"),
    _p("tumor", "tumor", "lesion"),
    _p("tumour", "tumor", "lesion"),
    _p("a tumor", "tumor", "lesion"),
    _p("mass", "tumor", "lesion"),
    _p("lesion", "lesion", "tumor"),
    _p("brain tumor", "tumor", context=("brain",)),
    _p("lung tumor", "tumor", context=("lungs",)),
    _p("liver tumor", "tumor", context=("liver",)),
    _p("breast lesion", "lesion", kinds=("us-breast",)),
    _p("breast tumor", "lesion", kinds=("us-breast",)),
)
GROUPS = {"lungs": ("left lung", "right lung")}     # context names standing for several structures
# Structures an image of a kind shows without a label for them: prompts naming only these are
# "unknown" there, not "absent" (elsewhere a structure the slice has no mask for is absent).
UNLABELLED = {"xray-chest": ("spine", "liver"), "us-breast": ("body",)}
MIN_PRESENT_TOKENS = 0.5     # "present": the target covers at least half a token (32 px at 128 px); 0 px: absent


def prompts_for(structures: Iterable[str]) -> list[StructurePrompt]:
    """The prompts trained and calibrated for data with these structures: those of
    :data:`STRUCTURE_PROMPTS` naming any of them, then each other structure by its own name."""
    names = sorted(set(structures))
    prompts = [p for p in STRUCTURE_PROMPTS if any(t in names for t in p.targets)]
    return prompts + [_p(k) for k in names if k not in {p.text for p in prompts}]


def presence_label(cover_sums: Mapping[str, float], prompt: StructurePrompt, kind: str | None) -> int:
    """1 present, 0 absent, -1 unknown (a sliver of the target, an unlabelled structure, or a
    kind-specific prompt on a slice of unknown kind). ``cover_sums``: structure → token coverage."""
    if prompt.kinds and kind is not None and kind not in prompt.kinds:
        return 0
    target = sum(cover_sums.get(t, 0.0) for t in prompt.targets)
    if target <= 0.0:
        unlabelled = UNLABELLED.get(kind or "", ())
        if all(t in unlabelled and t not in cover_sums for t in prompt.targets):
            return -1
        return 0
    for c in prompt.context:
        if sum(cover_sums.get(m, 0.0) for m in GROUPS.get(c, (c,))) <= 0.0:
            return 0
    if target < MIN_PRESENT_TOKENS or (prompt.kinds and kind is None):
        return -1
    return 1
