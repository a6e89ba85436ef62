"""Coded concepts (SNOMED CT) that say *what* a DICOM SEG segment is.

A DICOM segment carries a Segmented Property Category (DICOM CID 7150: anatomical structure,
tissue, morphologically abnormal structure, ...) and a Segmented Property Type (CID 7151 and the
context groups under it, e.g. CID 7166 for tissues), optionally an anatomic region (where a
lesion lies) and a type modifier (laterality). :func:`concept_for_prompt` maps a free-text prompt
to those codes with a small vocabulary of well-known SNOMED CT concept ids (the ones DICOM PS3.16
uses in those context groups).

Matching: every vocabulary term found in the prompt (case-insensitive, on word boundaries, a
plural "s"/"es" allowed) is a candidate; overlapping matches keep the longest ("left lung" beats
"lung"). If an abnormality (tumour, lesion, nodule, cyst, ...) is mentioned it becomes the type and
the longest anatomical term, if any, becomes the anatomic region ("a round lesion in the breast" →
type Lesion, region Breast); otherwise the longest anatomical/tissue term is the type.

No match: the generic concept is category **Tissue** (SCT 85756007) with type **Tissue**
(SCT 85756007) — both are members of CID 7150 / CID 7151 respectively — and the prompt itself is
kept as the segment label/description so a reader still sees what was asked for. (SCT 91723000
"Anatomical Structure" is *not* used: DICOM lists it in CID 9501, not in CID 7150, whose
"Anatomical Structure" is SCT 123037004; and a generic anatomical category would claim more than
we know about an arbitrary prompt.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from highdicom.sr import CodedConcept

SCT = "SCT"

# Segmented Property Categories (DICOM CID 7150).
CATEGORY_ANATOMY = ("123037004", "Anatomical Structure")
CATEGORY_TISSUE = ("85756007", "Tissue")
CATEGORY_ABNORMAL = ("49755003", "Morphologically Abnormal Structure")

_CATEGORIES = {"anatomy": CATEGORY_ANATOMY, "tissue": CATEGORY_TISSUE, "abnormal": CATEGORY_ABNORMAL}

# Laterality modifiers (SegmentedPropertyTypeModifierCodeSequence; DICOM CID 244).
LEFT = ("7771000", "Left")
RIGHT = ("24028007", "Right")

GENERIC_TYPE = ("85756007", "Tissue")

# term -> (code value, code meaning, category key, type modifier or None)
VOCABULARY: dict[str, tuple[str, str, str, tuple[str, str] | None]] = {
    # anatomical structures
    "lung": ("39607008", "Lung", "anatomy", None),
    "left lung": ("44029006", "Left lung", "anatomy", None),
    "right lung": ("3341006", "Right lung", "anatomy", None),
    "brain": ("12738006", "Brain", "anatomy", None),
    "brain stem": ("119238007", "Brain stem", "anatomy", None),
    "brainstem": ("119238007", "Brain stem", "anatomy", None),
    "cerebellum": ("113305005", "Cerebellum", "anatomy", None),
    "hippocampus": ("5366008", "Hippocampus", "anatomy", None),
    "white matter": ("389080008", "White Matter", "anatomy", None),
    "gray matter": ("389081007", "Gray Matter", "anatomy", None),
    "grey matter": ("389081007", "Gray Matter", "anatomy", None),
    "lateral ventricle": ("66720007", "Lateral ventricle", "anatomy", None),
    "spinal cord": ("2748008", "Spinal cord", "anatomy", None),
    "liver": ("10200004", "Liver", "anatomy", None),
    "kidney": ("64033007", "Kidney", "anatomy", None),
    "left kidney": ("64033007", "Kidney", "anatomy", LEFT),
    "right kidney": ("64033007", "Kidney", "anatomy", RIGHT),
    "spleen": ("78961009", "Spleen", "anatomy", None),
    "heart": ("80891009", "Heart", "anatomy", None),
    "left ventricle": ("87878005", "Left Ventricle", "anatomy", None),
    "right ventricle": ("53085002", "Right ventricle", "anatomy", None),
    "left atrium": ("82471001", "Left atrium", "anatomy", None),
    "right atrium": ("73829009", "Right Atrium", "anatomy", None),
    "aorta": ("15825003", "Aorta", "anatomy", None),
    "pulmonary artery": ("81040000", "Pulmonary artery", "anatomy", None),
    "portal vein": ("32764006", "Portal Vein", "anatomy", None),
    "artery": ("51114001", "Artery", "anatomy", None),
    "vein": ("29092000", "Vein", "anatomy", None),
    "blood vessel": ("59820001", "Blood vessel", "anatomy", None),
    "vessel": ("59820001", "Blood vessel", "anatomy", None),
    "breast": ("76752008", "Breast", "anatomy", None),
    "pancreas": ("15776009", "Pancreas", "anatomy", None),
    "prostate": ("41216001", "Prostate", "anatomy", None),
    "bladder": ("89837001", "Bladder", "anatomy", None),
    "urinary bladder": ("89837001", "Bladder", "anatomy", None),
    "gallbladder": ("28231008", "Gallbladder", "anatomy", None),
    "stomach": ("69695003", "Stomach", "anatomy", None),
    "esophagus": ("32849002", "Esophagus", "anatomy", None),
    "oesophagus": ("32849002", "Esophagus", "anatomy", None),
    "duodenum": ("38848004", "Duodenum", "anatomy", None),
    "small intestine": ("30315005", "Small intestine", "anatomy", None),
    "colon": ("71854001", "Colon", "anatomy", None),
    "rectum": ("34402009", "Rectum", "anatomy", None),
    "trachea": ("44567001", "Trachea", "anatomy", None),
    "thyroid": ("69748006", "Thyroid", "anatomy", None),
    "thyroid gland": ("69748006", "Thyroid", "anatomy", None),
    "adrenal gland": ("23451007", "Adrenal gland", "anatomy", None),
    "uterus": ("35039007", "Uterus", "anatomy", None),
    "ovary": ("15497006", "Ovary", "anatomy", None),
    "ovaries": ("15497006", "Ovary", "anatomy", None),
    "eye": ("81745001", "Eye", "anatomy", None),
    "lymph node": ("59441001", "Lymph node", "anatomy", None),
    "skull": ("89546000", "Skull", "anatomy", None),
    "rib": ("113197003", "Rib", "anatomy", None),
    "vertebra": ("51282000", "Vertebra", "anatomy", None),
    "vertebrae": ("51282000", "Vertebra", "anatomy", None),
    "spine": ("421060004", "Spine", "anatomy", None),
    "femur": ("71341001", "Femur", "anatomy", None),
    "mandible": ("91609006", "Mandible", "anatomy", None),
    # tissues (CID 7166)
    "bone": ("272673000", "Bone", "tissue", None),
    "muscle": ("71616004", "Muscle", "tissue", None),
    "skin": ("39937001", "Skin", "tissue", None),
    "fat": ("248300009", "Body fat", "tissue", None),
    "tissue": ("85756007", "Tissue", "tissue", None),
    # morphologically abnormal structures (CID 7159)
    "neoplasm": ("108369006", "Neoplasm", "abnormal", None),
    "tumor": ("108369006", "Neoplasm", "abnormal", None),
    "tumour": ("108369006", "Neoplasm", "abnormal", None),
    "cancer": ("108369006", "Neoplasm", "abnormal", None),
    "metastasis": ("14799000", "Neoplasm, Secondary", "abnormal", None),
    "metastases": ("14799000", "Neoplasm, Secondary", "abnormal", None),
    "lesion": ("52988006", "Lesion", "abnormal", None),
    "mass": ("4147007", "Mass", "abnormal", None),
    "nodule": ("27925004", "Nodule", "abnormal", None),
    "cyst": ("367643001", "Cyst", "abnormal", None),
    "abscess": ("44132006", "Abscess", "abnormal", None),
    "edema": ("79654002", "Edema", "abnormal", None),
    "oedema": ("79654002", "Edema", "abnormal", None),
    "hemorrhage": ("50960005", "Hemorrhage", "abnormal", None),
    "haemorrhage": ("50960005", "Hemorrhage", "abnormal", None),
    "necrosis": ("6574001", "Necrosis", "abnormal", None),
}


@dataclass(frozen=True)
class SegmentConcept:
    """The codes of one segment (all :class:`highdicom.sr.CodedConcept`)."""

    category_code: CodedConcept
    type_code: CodedConcept
    anatomic_region: CodedConcept | None = None
    matched_term: str | None = None          # the vocabulary term the type came from; None: generic
    type_modifier: CodedConcept | None = None  # laterality (Left/Right) of the type, if any

    @property
    def is_generic(self) -> bool:
        return self.matched_term is None


def coded(code: tuple[str, str]) -> CodedConcept:
    return CodedConcept(value=code[0], scheme_designator=SCT, meaning=code[1])


def generic_concept() -> SegmentConcept:
    """What a prompt with no known term gets: category Tissue, type Tissue (see module docs)."""
    return SegmentConcept(coded(CATEGORY_TISSUE), coded(GENERIC_TYPE))


@lru_cache(maxsize=1)
def _pattern() -> re.Pattern:
    # Longest terms first so the regex alternation prefers "left lung" over "lung" at one position.
    terms = sorted(VOCABULARY, key=len, reverse=True)
    alternatives = "|".join(re.escape(t).replace(r"\ ", r"[\s\-_]+") for t in terms)
    return re.compile(rf"(?<![a-z0-9])({alternatives})(?:e?s)?(?![a-z0-9])", re.IGNORECASE)


def _normalise(term: str) -> str:
    return re.sub(r"[\s\-_]+", " ", term.lower())


def find_terms(text: str) -> list[str]:
    """The vocabulary terms in ``text``, non-overlapping, left to right (longest at each place)."""
    found: list[str] = []
    for m in _pattern().finditer(text or ""):
        term = _normalise(m.group(1))
        if term in VOCABULARY:
            found.append(term)
    return found


def concept_for_prompt(text: str) -> SegmentConcept:
    """The :class:`SegmentConcept` for a text prompt (see the module docstring for the rules)."""
    terms = find_terms(text)
    abnormal = [t for t in terms if VOCABULARY[t][2] == "abnormal"]
    normal = [t for t in terms if VOCABULARY[t][2] != "abnormal"]
    if not terms:
        return generic_concept()
    # max() keeps the first of equally long terms: the one mentioned first wins a tie.
    if abnormal:
        type_term = max(abnormal, key=len)
        region_term = max(normal, key=len) if normal else None
    else:
        type_term = max(normal, key=len)
        region_term = None
    value, meaning, category, modifier = VOCABULARY[type_term]
    region = None
    if region_term is not None:
        r_value, r_meaning, _, _ = VOCABULARY[region_term]
        region = coded((r_value, r_meaning))
    return SegmentConcept(
        category_code=coded(_CATEGORIES[category]),
        type_code=coded((value, meaning)),
        anatomic_region=region,
        matched_term=type_term,
        type_modifier=coded(modifier) if modifier else None,
    )
