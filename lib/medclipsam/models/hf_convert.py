"""Convert BiomedCLIP weights between the Hugging Face layout and the open_clip layout.

MedCLIP-SAMv2 distributes its DHN-NCE fine-tuned BiomedCLIP as ``pytorch_model.bin`` in the
layout of ``chuhac/BiomedCLIP-vit-bert-hf`` (CLIP-style HF modules). Our engine runs open_clip
models, so the keys are mapped back (docs/algorithms.md §HF-weights):

* vision attention: HF ``q_proj`` / ``k_proj`` / ``v_proj`` ↔ open_clip (timm) fused ``qkv``;
* ``class_embedding`` (D) ↔ ``cls_token`` (1×1×D); ``position_embedding.weight`` (N×D) ↔ ``pos_embed`` (1×N×D);
* blocks, norms, MLPs and the bias-free visual projection by name;
* text tower: HF CLIP-style names ↔ BERT names inside open_clip's ``text.transformer``;
  the 2-layer text projection ``text_projection.fc1/fc2`` ↔ ``text.proj.0/2``.

Keys that need no renaming (``logit_scale``) pass through.
"""

from __future__ import annotations

import re
from typing import Callable

import torch

_V = "visual.trunk."
_T = "text.transformer."
_HV = "vision_model."
_HT = "text_model."

# (open_clip pattern, HF pattern); "{i}" is a block index, "{p}" a parameter name (weight/bias).
_NAME_PAIRS: list[tuple[str, str]] = [
    ("visual.head.proj.{p}", "visual_projection.{p}"),
    (_V + "norm.{p}", _HV + "post_layernorm.{p}"),
    (_V + "patch_embed.proj.{p}", _HV + "embeddings.patch_embedding.{p}"),
    (_V + "blocks.{i}.norm1.{p}", _HV + "encoder.layers.{i}.layer_norm1.{p}"),
    (_V + "blocks.{i}.norm2.{p}", _HV + "encoder.layers.{i}.layer_norm2.{p}"),
    (_V + "blocks.{i}.attn.proj.{p}", _HV + "encoder.layers.{i}.self_attn.out_proj.{p}"),
    (_V + "blocks.{i}.mlp.fc1.{p}", _HV + "encoder.layers.{i}.mlp.fc1.{p}"),
    (_V + "blocks.{i}.mlp.fc2.{p}", _HV + "encoder.layers.{i}.mlp.fc2.{p}"),
    (_T + "embeddings.token_type_embeddings.{p}", _HT + "embeddings.token_type_embedding.{p}"),
    (_T + "embeddings.word_embeddings.{p}", _HT + "embeddings.token_embedding.{p}"),
    (_T + "embeddings.position_embeddings.{p}", _HT + "embeddings.position_embedding.{p}"),
    (_T + "embeddings.LayerNorm.{p}", _HT + "embeddings.layer_norm.{p}"),
    (_T + "encoder.layer.{i}.attention.self.query.{p}", _HT + "encoder.layers.{i}.self_attn.q_proj.{p}"),
    (_T + "encoder.layer.{i}.attention.self.key.{p}", _HT + "encoder.layers.{i}.self_attn.k_proj.{p}"),
    (_T + "encoder.layer.{i}.attention.self.value.{p}", _HT + "encoder.layers.{i}.self_attn.v_proj.{p}"),
    (_T + "encoder.layer.{i}.attention.output.dense.{p}", _HT + "encoder.layers.{i}.self_attn.out_proj.{p}"),
    (_T + "encoder.layer.{i}.attention.output.LayerNorm.{p}", _HT + "encoder.layers.{i}.layer_norm1.{p}"),
    (_T + "encoder.layer.{i}.intermediate.dense.{p}", _HT + "encoder.layers.{i}.mlp.fc1.{p}"),
    (_T + "encoder.layer.{i}.output.LayerNorm.{p}", _HT + "encoder.layers.{i}.layer_norm2.{p}"),
    (_T + "encoder.layer.{i}.output.dense.{p}", _HT + "encoder.layers.{i}.mlp.fc2.{p}"),
    ("text.proj.0.{p}", "text_projection.fc1.{p}"),
    ("text.proj.2.{p}", "text_projection.fc2.{p}"),
]

# Buffers some exports carry that no model parameter corresponds to.
_IGNORED_HF_KEYS = re.compile(r"^(text_model|vision_model)\.embeddings\.position_ids$")


def _compile(pattern: str) -> re.Pattern[str]:
    rx = re.escape(pattern).replace(r"\{i\}", r"(?P<i>\d+)").replace(r"\{p\}", r"(?P<p>\w+)")
    return re.compile("^" + rx + "$")


_TO_HF = [(_compile(oc), hf) for oc, hf in _NAME_PAIRS]
_TO_OC = [(_compile(hf), oc) for oc, hf in _NAME_PAIRS]


def _rename(key: str, table: list[tuple[re.Pattern[str], str]]) -> str | None:
    for rx, target in table:
        m = rx.match(key)
        if m:
            return target.format(**m.groupdict())
    return None


def open_clip_to_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """open_clip BiomedCLIP state dict → Hugging Face layout (as MedCLIP-SAMv2 distributes it)."""
    out: dict[str, torch.Tensor] = {}
    qkv = re.compile(r"^visual\.trunk\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)$")
    for k, v in state.items():
        m = qkv.match(k)
        if m:
            for name, chunk in zip(("q_proj", "k_proj", "v_proj"), v.chunk(3, dim=0)):
                out[f"{_HV}encoder.layers.{m.group(1)}.self_attn.{name}.{m.group(2)}"] = chunk.clone()
        elif k == _V + "cls_token":
            out[_HV + "embeddings.class_embedding"] = v.reshape(-1).clone()
        elif k == _V + "pos_embed":
            out[_HV + "embeddings.position_embedding.weight"] = v.reshape(v.shape[-2], v.shape[-1]).clone()
        else:
            out[_rename(k, _TO_HF) or k] = v
    return out


def hf_to_open_clip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face layout → open_clip layout (inverse of :func:`open_clip_to_hf`)."""
    out: dict[str, torch.Tensor] = {}
    qkv_parts: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    split = re.compile(r"^vision_model\.encoder\.layers\.(\d+)\.self_attn\.(q|k|v)_proj\.(weight|bias)$")
    for k, v in state.items():
        if _IGNORED_HF_KEYS.match(k):
            continue
        m = split.match(k)
        if m:
            qkv_parts.setdefault((m.group(1), m.group(3)), {})[m.group(2)] = v
        elif k == _HV + "embeddings.class_embedding":
            out[_V + "cls_token"] = v.reshape(1, 1, -1).clone()
        elif k == _HV + "embeddings.position_embedding.weight":
            out[_V + "pos_embed"] = v.unsqueeze(0).clone()
        else:
            out[_rename(k, _TO_OC) or k] = v
    for (block, param), parts in qkv_parts.items():
        if set(parts) != {"q", "k", "v"}:
            missing = sorted({"q", "k", "v"} - set(parts))
            raise KeyError(f"vision block {block}: {param} of {missing} projection(s) missing in the HF checkpoint")
        out[f"{_V}blocks.{block}.attn.qkv.{param}"] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


CONVERTERS: dict[str, Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]] = {
    "hf-to-open_clip": hf_to_open_clip,
    "open_clip-to-hf": open_clip_to_hf,
}
