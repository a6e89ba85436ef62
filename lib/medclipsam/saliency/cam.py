"""gScoreCAM (MedCLIP-SAM v1) and GradCAM (the baseline of MedCLIP-SAMv2's Table 5).

Both read the activations A (tokens × channels) at the LayerNorm before the MLP of an image block
(BiomedCLIP: ``visual.trunk.blocks[11].norm2``) and the gradient of the image–text logit with
respect to them (docs/algorithms.md §gScoreCAM):

* GradCAM: channel weights = spatial mean of the gradient; CAM = ReLU(Σ_k w_k A_k).
* gScoreCAM: rank channels by the spatial mean of the gradient (signed), keep the top k (300);
  each kept channel map, upsampled to the input size and min-max normalised, masks the
  (normalised) input image; the masked images are scored by the image→text logit in batches;
  non-kept channels score 0; weights = softmax over all channel scores; CAM = ReLU(Σ_k w_k A_k).

The raw CAM (before min-max) is returned; the v1 reference saved a JET-colour overlay instead of
the CAM and read it back as gray (docs/algorithms.md §gScoreCAM) — we never do.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .base import MethodOutput, register_saliency


@dataclass
class GradCAMConfig:
    layer: int = -1          # image block whose norm2 output is the target layer (-1 = last)


@dataclass
class GScoreCAMConfig:
    layer: int = -1
    topk: int = 300
    batch_size: int = 128

    def __post_init__(self) -> None:
        if self.topk < 1 or self.batch_size < 1:
            raise ConfigError("gScoreCAM needs topk >= 1 and batch_size >= 1")


def _activations_and_gradients(clip, pixels: torch.Tensor, text: torch.Tensor, layer: int):
    """Target-layer activations (T×C) and d(logit)/d(activations) for one image."""
    vision = clip.vision
    target = vision.block_module(layer).norm2
    captured: dict[str, torch.Tensor] = {}

    def hook(_m, _i, out):
        out.retain_grad()
        captured["act"] = out
        return out

    handle = target.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            x = pixels.to(clip.device).detach().requires_grad_(True)  # makes the graph reach the hook
            emb = F.normalize(clip.model.encode_image(x), dim=-1)
            logit = clip.logit_scale * (emb * text).sum()
            logit.backward()
    finally:
        handle.remove()
    act = captured["act"]
    return act.detach()[0], act.grad.detach()[0]


def _patch_maps(act: torch.Tensor, vision) -> torch.Tensor:
    """T×C token activations → C×gh×gw maps (prefix tokens dropped)."""
    gh, gw = vision.grid_size
    return act[vision.num_prefix_tokens:].T.reshape(act.shape[1], gh, gw)


@register_saliency("gradcam", GradCAMConfig, "GradCAM on the image tower (baseline)")
def gradcam(clip, pixels: torch.Tensor, text_embedding: torch.Tensor, cfg: GradCAMConfig) -> MethodOutput:
    vision = clip.vision
    layer = vision.check_layer(cfg.layer)
    act, grad = _activations_and_gradients(clip, pixels, text_embedding.to(clip.device), layer)
    weights = grad[vision.num_prefix_tokens:].mean(dim=0)                 # C
    cam = torch.relu(torch.einsum("c,chw->hw", weights, _patch_maps(act, vision)))
    return MethodOutput(raw_grid=cam.float().cpu(), extras={"layer": layer})


@register_saliency("gscorecam", GScoreCAMConfig, "gScoreCAM (MedCLIP-SAM v1)")
def gscorecam(clip, pixels: torch.Tensor, text_embedding: torch.Tensor, cfg: GScoreCAMConfig) -> MethodOutput:
    vision = clip.vision
    layer = vision.check_layer(cfg.layer)
    text = text_embedding.to(clip.device)
    pixels = pixels.to(clip.device)
    act, grad = _activations_and_gradients(clip, pixels, text, layer)
    maps = _patch_maps(act, vision)                                         # C × gh × gw
    channels = maps.shape[0]
    k = min(cfg.topk, channels)
    ranking = grad[vision.num_prefix_tokens:].mean(dim=0)
    top = torch.topk(ranking, k).indices
    size = pixels.shape[-2:]
    scores = torch.zeros(channels, device=clip.device)
    with torch.no_grad():
        for start in range(0, k, cfg.batch_size):
            idx = top[start:start + cfg.batch_size]
            up = F.interpolate(maps[idx].unsqueeze(1), size=size, mode="bilinear", align_corners=False)
            lo = up.amin(dim=(2, 3), keepdim=True)
            hi = up.amax(dim=(2, 3), keepdim=True)
            masks = (up - lo) / (hi - lo + 1e-6)
            emb = F.normalize(clip.model.encode_image(pixels * masks), dim=-1)
            scores[idx] = clip.logit_scale * (emb @ text.T).squeeze(-1)
    weights = torch.softmax(scores, dim=0)
    cam = torch.relu(torch.einsum("c,chw->hw", weights, maps))
    return MethodOutput(raw_grid=cam.float().cpu(), extras={"layer": layer, "topk": k})
