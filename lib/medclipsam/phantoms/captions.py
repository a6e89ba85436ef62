"""Captions generated from what is actually visible on an image.

Every caption names the modality and the plane, mentions each labelled structure only where it has
pixels on that image, and mentions a tumour **iff** one is there (never negated: a target-absent
slice simply does not name it). Wording is drawn from small synonym and template lists with a
seeded generator, so captions vary between examples but are fixed by the seed. :data:`TUMOUR_WORDS`
are the words used for tumours (:func:`mentions_tumour` finds them).
"""

from __future__ import annotations

import re

import numpy as np

TUMOUR_WORDS = ("tumor", "tumour", "mass", "lesion")
_TUMOUR_RE = re.compile(r"\b(tumou?rs?|mass(es)?|lesions?|nodules?|cysts?)\b", re.IGNORECASE)


def mentions_tumour(caption: str) -> bool:
    """True when ``caption`` names a tumour (tumor, tumour, mass, lesion, nodule, cyst)."""
    return bool(_TUMOUR_RE.search(caption))


def pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def join(items: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def ct_caption(rng: np.random.Generator, plane: str, *, left_lung: bool, right_lung: bool, liver: bool,
               tumour: bool, tumour_host: str, hidden: tuple[str, ...] = ()) -> str:
    """An axial CT caption naming the lungs, liver, spine and tumour that are visible. ``hidden``:
    structures present but not visible in the rendering (the region named still follows anatomy)."""
    lungs = left_lung or right_lung
    if lungs and liver:
        region = pick(rng, ["lower chest", "lower chest and upper abdomen", "thoracoabdominal junction"])
    elif lungs:
        region = pick(rng, ["chest", "thorax", "chest"])
    elif liver:
        region = pick(rng, ["upper abdomen", "abdomen", "liver region"])
    else:
        region = pick(rng, ["thoracic inlet", "lower neck and thoracic inlet", "upper chest wall"])
    items: list[str] = []
    if left_lung and right_lung:
        items.append(pick(rng, ["both lungs", "the lungs", "the left and right lungs"]))
    elif left_lung:
        items.append("the left lung")
    elif right_lung:
        items.append("the right lung")
    if liver and "liver" not in hidden:
        items.append("the liver")
    shown_tumour = tumour and "tumor" not in hidden
    if shown_tumour:
        word = pick(rng, TUMOUR_WORDS)
        if tumour_host == "liver":
            where = pick(rng, [f"{article(word)} {word} in the liver", f"{article(word)} liver {word}",
                               f"a hepatic {word}"])
        else:
            side = tumour_host.split()[0]
            where = pick(rng, [f"{article(word)} {word} in the {tumour_host}", f"{article(word)} {side} lung {word}",
                               f"{article(word)} pulmonary {word} in the {side} lung"])
        items.append(where)
    if not items or rng.random() < 0.4:
        items.insert(len(items) - int(shown_tumour),
                     pick(rng, ["the spine", "a vertebral body", "the vertebral column"]))
    what = join(items)
    templates = [
        f"{plane} CT slice of the {region} showing {what}",
        f"{plane} CT image of the {region} with {what}",
        f"CT of the {region}, {plane} view: {what}",
        f"{what} on {article(plane)} {plane} CT scan of the {region}",
        f"{plane} computed tomography section through the {region} showing {what}",
    ]
    return pick(rng, templates)


def mr_caption(rng: np.random.Generator, plane: str, weighting: str, *, ventricles: bool, tumour: bool,
               tumour_side: str, enhancing: bool) -> str:
    """A brain MR caption naming the brain, ventricles (when cut) and tumour (when present)."""
    seq = {"T2": pick(rng, ["T2-weighted", "T2", "T2-weighted"]),
           "T1C": pick(rng, ["contrast-enhanced T1-weighted", "post-contrast T1-weighted",
                             "T1 post-gadolinium"])}[weighting]
    items = [pick(rng, ["the brain", "the cerebral hemispheres", "brain parenchyma"])]
    if ventricles:
        items.append(pick(rng, ["the lateral ventricles", "the ventricles"]))
    if tumour:
        word = pick(rng, TUMOUR_WORDS)
        look = pick(rng, ["an enhancing", "a ring-enhancing", "an enhancing"]) if enhancing else \
            pick(rng, ["a hyperintense", "a bright", "a T2-hyperintense"])
        items.append(f"{look} {word} in the {tumour_side} hemisphere")
    what = join(items)
    templates = [
        f"{plane} {seq} MR image of the brain showing {what}",
        f"{plane} {seq} MRI of the head with {what}",
        f"brain MRI, {seq}, {plane} slice: {what}",
        f"{what} on {article(plane)} {plane} {seq} magnetic resonance image",
    ]
    return pick(rng, templates)


def us_caption(rng: np.random.Generator, *, shadowing: bool, irregular: bool, anechoic: bool) -> str:
    """A breast-ultrasound caption for the lesion and its posterior acoustic feature."""
    word = pick(rng, ("lesion", "mass", "cyst") if anechoic else TUMOUR_WORDS + ("nodule",))
    echo = "anechoic" if anechoic else "hypoechoic"
    shape = pick(rng, ["irregular", "spiculated", "taller-than-wide"]) if irregular else \
        pick(rng, ["oval", "circumscribed", "well-defined oval"])
    post = pick(rng, ["posterior acoustic shadowing", "a posterior acoustic shadow", "posterior shadowing"]) \
        if shadowing else pick(rng, ["posterior acoustic enhancement", "posterior enhancement"])
    image = pick(rng, ["breast ultrasound image", "B-mode ultrasound of the breast", "breast sonogram",
                       "ultrasound image of the breast"])
    templates = [
        f"{image} showing {article(shape)} {shape} {echo} {word} with {post}",
        f"{image}: {echo} {shape} {word} with {post}",
        f"{article(echo)} {echo} {word} with {post} on {article(image)} {image}",
    ]
    return pick(rng, templates)


def xray_caption(rng: np.random.Generator, *, view: str) -> str:
    """A frontal chest radiograph caption (both lungs are always in the field)."""
    image = pick(rng, ["chest X-ray", "chest radiograph", "frontal chest radiograph", "plain chest film"])
    lungs = pick(rng, ["both lungs", "the left and right lungs", "the lung fields", "both lung fields"])
    templates = [
        f"{view} {image} showing {lungs}",
        f"{image}, {view} projection, with {lungs}, the heart and the mediastinum",
        f"{lungs} on {article(view)} {view} {image}",
        f"{view} {image}: {lungs}, ribs and diaphragm",
    ]
    return pick(rng, templates)


__all__ = ["TUMOUR_WORDS", "mentions_tumour", "ct_caption", "mr_caption", "us_caption", "xray_caption",
           "join", "article", "pick"]
