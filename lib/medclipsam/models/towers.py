"""Access to the inside of a CLIP image tower, block by block.

Saliency methods need the tokens after a given Vision-Transformer block (M2IB inserts its
bottleneck there; the CAM methods read activations there) and the image embedding computed from
such tokens. :class:`VisionTower` gives both for open_clip's timm-based towers (BiomedCLIP's),
using the tower's own modules in the order of timm's ``forward_features`` / ``forward_head``.
"""

from __future__ import annotations

import torch

from ..errors import ModelSpecError


class VisionTower:
    def __init__(self, visual: torch.nn.Module) -> None:
        trunk = getattr(visual, "trunk", None)
        if trunk is None or not hasattr(trunk, "blocks") or not hasattr(trunk, "patch_embed"):
            raise ModelSpecError(
                "the CLIP image tower is not a timm Vision Transformer (open_clip TimmModel with a ViT trunk); "
                "medclipsam's saliency methods support BiomedCLIP-style towers only")
        self.visual = visual
        self.trunk = trunk

    @property
    def num_blocks(self) -> int:
        return len(self.trunk.blocks)

    @property
    def num_prefix_tokens(self) -> int:
        return int(getattr(self.trunk, "num_prefix_tokens", 1))

    @property
    def grid_size(self) -> tuple[int, int]:
        g = self.trunk.patch_embed.grid_size
        return int(g[0]), int(g[1])

    @property
    def width(self) -> int:
        return int(self.trunk.embed_dim)

    def check_layer(self, layer: int) -> int:
        n = self.num_blocks
        if not -n <= layer < n:
            raise ModelSpecError(f"block index {layer} is out of range for an image tower with {n} blocks; "
                                 f"choose a layer from 0 to {n - 1} (or -1 for the last), "
                                 f"e.g. the setting m2ib.layer={n - 2}")
        return layer % n

    def tokens_after(self, pixels: torch.Tensor, layer: int) -> torch.Tensor:
        """Tokens (B × tokens × width) at the output of block ``layer`` (0-based)."""
        layer = self.check_layer(layer)
        t = self.trunk
        x = t.patch_embed(pixels)
        x = t._pos_embed(x)
        x = t.patch_drop(x)
        x = t.norm_pre(x)
        for blk in t.blocks[: layer + 1]:
            x = blk(x)
        return x

    def embed_from(self, tokens: torch.Tensor, layer: int) -> torch.Tensor:
        """Unnormalised image embedding from the tokens output by block ``layer``."""
        layer = self.check_layer(layer)
        t = self.trunk
        x = tokens
        for blk in t.blocks[layer + 1:]:
            x = blk(x)
        x = t.norm(x)
        x = t.forward_head(x)
        return self.visual.head(x)

    def block_module(self, layer: int) -> torch.nn.Module:
        return self.trunk.blocks[self.check_layer(layer)]
