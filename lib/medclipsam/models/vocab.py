"""WordPiece vocabularies for BERT-style text towers the project builds itself.

Real BiomedCLIP ships PubMedBERT's ``vocab.txt``; offline we cannot download it, so random-weight
and demo models get a vocabulary written here: special tokens, single characters and their
``##`` continuations (so any text tokenizes), then caller-supplied whole words, optionally padded
with ``[unusedN]`` entries to a fixed size (30522 for the full BiomedCLIP embedding matrix).
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Iterable

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def build_wordpiece_vocab(words: Iterable[str] = (), size: int | None = None) -> list[str]:
    """Return the token list (index = token id). ``[PAD]`` is id 0 as in BERT."""
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    tokens: list[str] = list(SPECIAL_TOKENS) + chars + ["##" + c for c in chars]
    seen = set(tokens)
    for word in words:
        w = word.strip().lower()
        if w and w not in seen:
            tokens.append(w)
            seen.add(w)
    if size is not None:
        if len(tokens) > size:
            raise ValueError(f"vocabulary has {len(tokens)} tokens, more than the requested size {size}")
        tokens.extend(f"[unused{i}]" for i in range(size - len(tokens)))
    return tokens


def write_tokenizer_files(dest: Path, tokens: list[str], model_max_length: int) -> None:
    """Write ``vocab.txt`` and ``tokenizer_config.json`` that ``AutoTokenizer`` reads offline."""
    import json

    dest.mkdir(parents=True, exist_ok=True)
    (dest / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    (dest / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "BertTokenizer",
                "do_lower_case": True,
                "model_max_length": model_max_length,
                "unk_token": "[UNK]",
                "sep_token": "[SEP]",
                "pad_token": "[PAD]",
                "cls_token": "[CLS]",
                "mask_token": "[MASK]",
            },
            indent=2,
        ),
        encoding="utf-8",
    )
