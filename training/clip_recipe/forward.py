"""The model's forward pieces for training: the training heads, the tokens at M2IB's bottleneck, and
what each token does to cos(image, prompt)."""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from .losses import contrastive_loss, dense_loss, laterality_loss, mass_loss, peak_loss, presence_loss


class Heads(torch.nn.Module):
    """Training-only scales and biases (not saved with the model): presence and dense logits."""

    def __init__(self) -> None:
        super().__init__()
        self.presence_log_scale = torch.nn.Parameter(torch.tensor(math.log(10.0)))
        self.presence_bias = torch.nn.Parameter(torch.tensor(0.0))
        self.dense_log_scale = torch.nn.Parameter(torch.tensor(math.log(10.0)))
        self.dense_bias = torch.nn.Parameter(torch.tensor(0.0))
        self.token_log_scale = torch.nn.Parameter(torch.tensor(math.log(10.0)))
        self.token_bias = torch.nn.Parameter(torch.tensor(0.0))

    def presence(self, cos: torch.Tensor) -> torch.Tensor:
        return self.presence_log_scale.exp() * cos + self.presence_bias

    def dense(self, cos: torch.Tensor) -> torch.Tensor:
        return self.dense_log_scale.exp() * cos + self.dense_bias

    def token(self, cos: torch.Tensor) -> torch.Tensor:
        return self.token_log_scale.exp() * cos + self.token_bias


def _run_tail(visual, tokens: torch.Tensor, layer: int) -> torch.Tensor:
    trunk = visual.trunk
    x = tokens
    for blk in trunk.blocks[layer + 1:]:
        x = blk(x)
    return trunk.norm(x)


def _pooled(visual, normed: torch.Tensor) -> torch.Tensor:
    """The image embedding from the normed last-block tokens (timm's pooling, then the projection)."""
    return visual.head(visual.trunk.forward_head(normed))


def token_contributions(visual, normed: torch.Tensor, npre: int) -> torch.Tensor:
    """What each patch token does to the image embedding, as M2IB sees it (B×T×D).

    The demo ViT pools first and normalises after (timm ``fc_norm``): e = P·LN(m), m the mean of the
    patch tokens. M2IB's bottleneck replaces a token x_t by zero-mean noise, which moves m by
    −x_t/T, so to first order e moves by −P·J·x_t/T with J the Jacobian of the pooled LayerNorm at
    m. Returns P·J·x_t. (A per-token LayerNorm before pooling would make this zero up to noise:
    a normalised token does not change when it is scaled, so a bottleneck on it sees no signal.)"""
    ln = visual.trunk.fc_norm
    if getattr(visual.trunk, "global_pool", None) != "avg" or not isinstance(ln, torch.nn.LayerNorm):
        raise ValueError("the demo CLIP recipe needs an image tower that averages its patch tokens and normalises "
                         "the mean (timm global_pool='avg', fc_norm=True), as configs/clip/demo.json's ViT does")
    x = normed[:, npre:].float()                                              # B × T × C
    m = x.mean(dim=1, keepdim=True)                                           # B × 1 × C
    sigma = (m.var(dim=-1, unbiased=False, keepdim=True) + ln.eps).sqrt()     # B × 1 × 1
    n = (m - m.mean(dim=-1, keepdim=True)) / sigma
    d = x - x.mean(dim=-1, keepdim=True)
    d = d - n * (d * n).mean(dim=-1, keepdim=True)
    jx = d * ln.weight.float() / sigma
    return visual.head(jx) - visual.head(torch.zeros_like(jx[:, :1]))         # the projection's linear part


def token_features(visual, normed: torch.Tensor, npre: int) -> torch.Tensor:
    """Each patch token on its own in the joint space (B×T×D): normalised and projected as the
    pooled mean is (the pooled LayerNorm applied to the token)."""
    return visual.head(visual.trunk.fc_norm(normed[:, npre:]))


def dense_scores(contrib: torch.Tensor, img: torch.Tensor, txt: torch.Tensor) -> torch.Tensor:
    """B×T×P: for each token and prompt, how much the token raises cos(image, prompt) — the
    derivative of the cosine along the token's contribution (``img`` the unnormalised image
    embeddings B×D, ``txt`` normalised prompt embeddings P×D). Kept target tokens raise the
    similarity, the others do not: what M2IB's bottleneck looks for."""
    norm = img.norm(dim=-1, keepdim=True).clamp(min=1e-6)                     # B × 1
    unit = img / norm
    cos = unit @ txt.T                                                        # B × P
    along_text = contrib @ txt.T                                              # B × T × P
    along_img = (contrib * unit[:, None, :]).sum(dim=-1, keepdim=True)       # B × T × 1
    return (along_text - along_img * cos[:, None, :]) / norm[:, None, :]


def _tokens_after(visual, pixels: torch.Tensor, layer: int) -> torch.Tensor:
    trunk = visual.trunk
    x = trunk.norm_pre(trunk.patch_drop(trunk._pos_embed(trunk.patch_embed(pixels))))
    for blk in trunk.blocks[: layer + 1]:
        x = blk(x)
    return x


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


def _encode_texts(model, tokenizer, texts: Sequence[str]) -> torch.Tensor:
    return F.normalize(model.encode_text(tokenizer(list(texts)).to(_device_of(model))), dim=-1)


def batch_losses(model, tokenizer, heads: Heads, batch, caps: Sequence[str], *, layer: int, npre: int,
                 prompt_texts: Sequence[str], weights, pairs, mass_prompts, dense_focal: float,
                 presence_focal: float, bf16: bool) -> dict[str, torch.Tensor]:
    """The loss terms of one training batch (``batch``: pixels, cover, labels, known on the device;
    ``caps`` its captions): the terms whose weight is 0 are not computed."""
    pixels, cover, labels, known = batch
    visual = model.visual
    dev = pixels.device
    uniq = list(dict.fromkeys(caps))
    cap_idx = torch.tensor([uniq.index(c) for c in caps], device=dev)
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
        txt = model.encode_text(tokenizer(uniq + list(prompt_texts)).to(dev))
        mid = _tokens_after(visual, pixels, layer)
        normed = _run_tail(visual, mid, layer)
        img_raw = _pooled(visual, normed)
    txt = F.normalize(txt.float(), dim=-1)
    txt_cap, txt_prompt = txt[: len(uniq)], txt[len(uniq):]
    img = F.normalize(img_raw.float(), dim=-1)
    scores = dense_scores(token_contributions(visual, normed, npre), img_raw.float(), txt_prompt)
    own = F.normalize(token_features(visual, normed, npre).float(), dim=-1) @ txt_prompt.T  # B × T × P

    w = weights
    scale = model.logit_scale.exp().clamp(max=100.0)
    parts = {"contrastive": contrastive_loss(img, txt_cap, cap_idx, scale),
             "presence": presence_loss(heads.presence(img @ txt_prompt.T), labels,
                                       focal=presence_focal)}
    # keep the bottleneck block's tokens at the scale of M2IB's N(0, 1) noise (mean square 1
    # per element): else they grow with training, unit noise hides nothing and the capacity
    # read-out follows the tokens' energy instead of what is kept
    parts["token_scale"] = (mid.float().pow(2).mean(dim=-1).clamp(min=1e-6).log() ** 2).mean()
    cov = cover.flatten(2).transpose(1, 2)                                  # B × T × P
    dense_logits = heads.dense(scores)
    parts["dense"] = dense_loss(dense_logits, cov, known, focal=dense_focal)
    if w["laterality"] > 0 and pairs:
        parts["laterality"] = laterality_loss(dense_logits, cov, pairs)
    if w["mass"] > 0:
        parts["mass"] = mass_loss(dense_logits, cov, known, prompts=mass_prompts)
    if w["peak"] > 0:
        parts["peak"] = peak_loss(dense_logits, cov, known, prompts=mass_prompts)
    if w["token_dense"] > 0:
        parts["token_dense"] = dense_loss(heads.token(own), cov, known, focal=dense_focal)
    return parts
