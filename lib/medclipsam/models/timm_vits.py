"""Small timm Vision Transformers registered under our own names.

open_clip builds an image tower from a timm model *name*, so small BiomedCLIP-shaped models
(unit tests, demo models) need their ViT registered with timm. They use timm's
``VisionTransformer`` class unchanged, so every code path is the one the full ViT-B/16 takes.
Importing :mod:`medclipsam.models` registers them.
"""

from __future__ import annotations

from timm.models import register_model
from timm.models.vision_transformer import VisionTransformer

# name -> VisionTransformer keyword arguments
SMALL_VITS: dict[str, dict] = {
    "vit_medclipsam_tiny_patch8_64": dict(img_size=64, patch_size=8, embed_dim=48, depth=4, num_heads=3),
    "vit_medclipsam_small_patch16_224": dict(img_size=224, patch_size=16, embed_dim=192, depth=6, num_heads=3),
    # average pooling, LayerNorm after the pool: what training/clip_demo.py's localisation loss needs
    "vit_medclipsam_tinyavg_patch8_64": dict(img_size=64, patch_size=8, embed_dim=48, depth=4, num_heads=3,
                                             global_pool="avg", fc_norm=True),
    "vit_medclipsam_demo_patch8_128": dict(img_size=128, patch_size=8, embed_dim=128, depth=4, num_heads=4,
                                           global_pool="avg", fc_norm=True),
    # candidates for a demo CLIP that localises small lesions better: 4 px tokens (32×32), or deeper and wider
    "vit_medclipsam_demo_patch4_128": dict(img_size=128, patch_size=4, embed_dim=128, depth=4, num_heads=4,
                                           global_pool="avg", fc_norm=True),
    "vit_medclipsam_demowide_patch8_128": dict(img_size=128, patch_size=8, embed_dim=192, depth=8, num_heads=6,
                                               global_pool="avg", fc_norm=True),
}


def _make_factory(name: str, kwargs: dict):
    def factory(pretrained: bool = False, **overrides) -> VisionTransformer:
        if pretrained:
            raise ValueError(f"{name} has no pretrained weights; it is built by medclipsam")
        for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir", "features_only"):
            overrides.pop(key, None)
        model = VisionTransformer(**{**kwargs, **overrides})
        size = kwargs["img_size"]
        cfg = {"architecture": name, "input_size": (3, size, size), "num_classes": model.num_classes}
        model.pretrained_cfg = cfg
        model.default_cfg = cfg
        return model

    factory.__name__ = name
    factory.__qualname__ = name
    factory.__module__ = __name__
    return factory


def _register_all() -> None:
    from timm.models import is_model

    for name, kwargs in SMALL_VITS.items():
        if not is_model(name):
            register_model(_make_factory(name, kwargs))


_register_all()
