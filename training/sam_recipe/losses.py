"""The losses of one image's prompts, decoded on the ``SamPredictor.predict_torch`` path."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .sampling import ImagePrompts


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft Dice loss per mask (over the last two dims)."""
    p = logits.sigmoid()
    inter = (p * target).sum(dim=(-2, -1))
    return 1 - (2 * inter + 1) / (p.sum(dim=(-2, -1)) + target.sum(dim=(-2, -1)) + 1)


def mask_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    pred = logits > 0
    t = target > 0.5
    inter = (pred & t).sum(dim=(-2, -1)).float()
    union = (pred | t).sum(dim=(-2, -1)).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter))


def prompt_losses(model, transform, embedding: torch.Tensor, input_size: tuple[int, int], prompts: ImagePrompts,
                  multimask_weight: float, iou_weight: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Decode the prompts of one image (the ``SamPredictor.predict_torch`` path) and score them."""
    original = prompts.targets.shape[1:]
    dev = model.device
    boxes = coords = labels = None
    if prompts.boxes is not None:
        boxes = transform.apply_boxes_torch(torch.as_tensor(prompts.boxes, device=dev), original)
    if prompts.points is not None:
        coords = transform.apply_coords_torch(torch.as_tensor(prompts.points, device=dev), original)
        labels = torch.as_tensor(prompts.labels, device=dev)
    sparse, dense = model.prompt_encoder(points=None if coords is None else (coords, labels), boxes=boxes, masks=None)
    # MaskDecoder.forward computes all four masks and slices [0:1] (multimask_output=False) or [1:]
    # (True); we take both slices of one decode so that the multimask tokens are trained as well.
    low_res, iou_pred = model.mask_decoder.predict_masks(
        image_embeddings=embedding, image_pe=model.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense)
    logits = model.postprocess_masks(low_res, input_size, original)          # n × 4 × H × W
    target = torch.as_tensor(prompts.targets, device=dev, dtype=torch.float32)[:, None].expand_as(logits)
    per_mask = (F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(dim=(-2, -1))
                + dice_loss(logits, target))                                   # n × 4
    single = per_mask[:, 0].mean()
    multi = per_mask[:, 1:].min(dim=1).values.mean()
    with torch.no_grad():
        iou_true = mask_iou(logits, target)
    iou_loss = F.mse_loss(iou_pred, iou_true)
    loss = single + multimask_weight * multi + iou_weight * iou_loss
    return loss, {"single": single.item(), "multi": multi.item(), "iou_mse": iou_loss.item(),
                  "iou": float(iou_true[:, 0].mean())}
