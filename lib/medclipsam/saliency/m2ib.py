"""M2IB: multi-modal information bottleneck saliency on the CLIP image tower (MedCLIP-SAMv2).

Algorithm (docs/algorithms.md §M2IB): a bottleneck after image block L masks the block's output tokens
X with λ = σ(α) (α ∈ R^{tokens×channels}, initialised to 5): Z = λX + (1−λ)ε, ε ~ N(0, 1) drawn
afresh for each of 10 noise samples and each step. The per-element capacity
KL(N(λX, (1−λ)²) ‖ N(0, 1)) = ½[(λX)² + (1−λ)² − 1 − log (1−λ)²] is traded against the cosine
between the text embedding and the image embeddings of the noisy samples:
loss = β·mean(capacity) − mean(cos). Adam on α alone, lr 1, 10 steps. The saliency map is the
capacity of the last forward pass (α after 9 updates), summed over channels, CLS dropped,
reshaped to the token grid.

:func:`m2ib` computes exactly that, efficiently: the text embedding is computed once, the blocks
before and including L run once per image (their output does not depend on α), only the blocks
after L run at each step, no gradient is computed for model weights, and the last forward pass
(whose loss is never used) is skipped because the capacity does not depend on it.
:func:`m2ib_batch` runs several (image, text) pairs in one optimisation — the bottleneck is per
pair, so each pair's map equals its own single run at the same seed — and :func:`m2ib` is its
batch of one.
:func:`m2ib_naive` is the literal form (the whole model, both towers, every step, weight
gradients on) kept to prove that both give the same map.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .base import MethodOutput, register_saliency

M2IB_SAMPLES_MAX = 64
M2IB_STEPS_MAX = 200


@dataclass
class M2IBConfig:
    layer: int = 9          # 0-based image block after which the bottleneck sits (code default 7, scripts 9)
    beta: float = 1.0       # γ, compression weight (--vbeta): 1 breast-like targets, 2 brain
    steps: int = 10
    lr: float = 1.0
    samples: int = 10       # noise samples per step
    init_alpha: float = 5.0
    seed: int = 12

    def __post_init__(self) -> None:
        if self.steps < 1 or self.samples < 1:
            raise ConfigError("M2IB needs steps >= 1 and samples >= 1")
        # settable from a request: the samples size one batch in memory, the steps its time
        if self.samples > M2IB_SAMPLES_MAX or self.steps > M2IB_STEPS_MAX:
            raise ConfigError(f"m2ib.samples must be at most {M2IB_SAMPLES_MAX} and m2ib.steps at most "
                              f"{M2IB_STEPS_MAX} (the papers use 10 and 10), got {self.samples} and {self.steps}")
        if self.lr <= 0:
            raise ConfigError("M2IB learning rate must be positive")


def capacity(alpha: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Per-element KL capacity of the bottleneck; ``tokens`` is the block output (T×C or B×T×C)."""
    lam = torch.sigmoid(alpha)
    one_minus = torch.sigmoid(-alpha)          # 1 − λ without cancellation
    mu = lam * tokens
    return 0.5 * (mu ** 2 + one_minus ** 2 - 1.0 - 2.0 * torch.log(one_minus))


def bottleneck_sample(alpha: torch.Tensor, tokens: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(alpha) * tokens + torch.sigmoid(-alpha) * noise


def readout(cap: torch.Tensor, num_prefix: int, grid: tuple[int, int]) -> torch.Tensor:
    """Channel-summed capacity of the patch tokens as a gh×gw grid (NaN-safe sum, CLS dropped)."""
    if cap.ndim == 3:
        cap = cap.mean(dim=0)
    per_token = torch.nansum(cap, dim=-1)[num_prefix:]
    return per_token.reshape(grid)


def _noise(gen: torch.Generator, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    return torch.randn(shape, generator=gen, device=gen.device, dtype=torch.float32).to(like.device, like.dtype)


def _generator(seed: int, device: torch.device) -> torch.Generator:
    gen = torch.Generator(device=device if device.type == "cuda" else "cpu")
    gen.manual_seed(seed)
    return gen


def _shared_config(cfgs: Sequence[M2IBConfig]) -> M2IBConfig:
    """The one configuration of a batch: every pair's config must agree on everything but the seed."""
    first = cfgs[0]
    for c in cfgs[1:]:
        if not isinstance(c, M2IBConfig) or dataclasses.replace(c, seed=first.seed) != first:
            raise ConfigError("a batched M2IB call needs configs that differ only in their seed; "
                              f"got {first} and {c}")
    return first


def m2ib_batch(clip, pixels: torch.Tensor, text_embeddings: torch.Tensor,
               cfgs: Sequence[M2IBConfig]) -> list[MethodOutput]:
    """M2IB on B (image, text) pairs in one optimisation: ``pixels`` B×3×S×S, ``text_embeddings``
    B×D (each pair its own target), ``cfgs`` one per pair, equal but for the seed.

    Each pair's map is the one a call on that pair alone gives: the bottleneck α is per pair (a
    B×T×C tensor whose rows never mix), each pair's noise comes from its own generator seeded with
    its own ``cfg.seed`` and drawn in the same order as alone, and the loss is the SUM of the pairs'
    losses, so the gradient reaching pair b's α is exactly its own and Adam, elementwise, takes the
    same steps (a mean over pairs would shrink the gradients by B against Adam's eps)."""
    n = len(cfgs)
    if n == 0:
        return []
    if not pixels.shape[0] == text_embeddings.shape[0] == n:
        raise ValueError(f"{pixels.shape[0]} images, {text_embeddings.shape[0]} text embeddings and {n} configs "
                         "given; give one of each per pair")
    cfg = _shared_config(cfgs)
    vision = clip.vision
    layer = vision.check_layer(cfg.layer)
    device = clip.device
    pixels = pixels.to(device)
    text = text_embeddings.to(device).detach()                           # B × D
    with torch.no_grad():
        tokens = vision.tokens_after(pixels, layer)                     # B × T × C, computed once per image
    tokens = tokens.detach()
    alpha = torch.full_like(tokens, cfg.init_alpha, requires_grad=True)
    opt = torch.optim.Adam([alpha], lr=cfg.lr)
    gens = [_generator(c.seed, device) for c in cfgs]                    # one noise stream per pair
    per_pair = (cfg.samples,) + tuple(tokens.shape[1:])
    text_b = text.unsqueeze(1).expand(-1, cfg.samples, -1)              # B × samples × D
    for _ in range(cfg.steps - 1):                                      # the last step's update is never read out
        noise = torch.stack([_noise(gen, per_pair, tokens) for gen in gens])      # B × samples × T × C
        z = bottleneck_sample(alpha.unsqueeze(1), tokens.unsqueeze(1), noise)
        emb = vision.embed_from(z.flatten(0, 1), layer).unflatten(0, (n, cfg.samples))
        losses = (cfg.beta * capacity(alpha, tokens).mean(dim=(1, 2))
                  - F.cosine_similarity(text_b, emb, dim=-1, eps=1e-6).mean(dim=1))      # B
        opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        opt.step()
    with torch.no_grad():
        cap = capacity(alpha, tokens)
        grids = [readout(cap[b], vision.num_prefix_tokens, vision.grid_size).detach().float().cpu()
                 for b in range(n)]
    return [MethodOutput(raw_grid=g, extras={"layer": layer, "beta": cfg.beta}) for g in grids]


@register_saliency("m2ib", M2IBConfig, "multi-modal information bottleneck (MedCLIP-SAMv2)", batch=m2ib_batch)
def m2ib(clip, pixels: torch.Tensor, text_embedding: torch.Tensor, cfg: M2IBConfig) -> MethodOutput:
    """One image (1×3×S×S) and one 1×D text embedding: :func:`m2ib_batch` on a batch of one."""
    return m2ib_batch(clip, pixels, text_embedding.reshape(1, -1), [cfg])[0]


def m2ib_naive(clip, pixels: torch.Tensor, prompts: list[str], cfg: M2IBConfig) -> MethodOutput:
    """The literal form, as the reference runs it: a bottleneck module inside the image tower, the
    whole model (both towers) forward and backward at every step, weight gradients computed."""
    model = clip.model
    vision = clip.vision
    layer = vision.check_layer(cfg.layer)
    device = clip.device
    tokens_shape = vision.tokens_after(pixels.to(device), layer).shape[1:]
    alpha = torch.full(tokens_shape, cfg.init_alpha, device=device, requires_grad=True)
    opt = torch.optim.Adam([alpha], lr=cfg.lr)
    gen = _generator(cfg.seed, device)
    stored: dict[str, torch.Tensor] = {}

    def bottleneck_hook(_module, _inputs, output):
        noise = _noise(gen, tuple(output.shape), output)
        stored["capacity"] = capacity(alpha, output).detach()
        stored["block_output"] = output
        return bottleneck_sample(alpha, output, noise)

    token_ids = clip.tokenize(prompts)
    images = pixels.to(device).expand(cfg.samples, -1, -1, -1)
    was = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(True)
    handle = vision.block_module(layer).register_forward_hook(bottleneck_hook)
    try:
        for _ in range(cfg.steps):
            emb = model.encode_image(images)
            txt = model.encode_text(token_ids)
            txt = F.normalize(F.normalize(txt, dim=-1).mean(dim=0, keepdim=True), dim=-1).expand(cfg.samples, -1)
            cap = capacity(alpha, stored["block_output"])
            loss = cfg.beta * cap.mean() - F.cosine_similarity(txt, emb, dim=-1, eps=1e-6).mean()
            model.zero_grad(set_to_none=True)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    finally:
        handle.remove()
        for p, r in zip(model.parameters(), was):
            p.requires_grad_(r)
        model.zero_grad(set_to_none=True)
    grid = readout(stored["capacity"], vision.num_prefix_tokens, vision.grid_size)
    return MethodOutput(raw_grid=grid.detach().float().cpu(), extras={"layer": layer, "beta": cfg.beta})
