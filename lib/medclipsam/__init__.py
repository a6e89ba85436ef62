"""medclipsam: text-prompted zero-shot medical image segmentation.

BiomedCLIP saliency map -> CRF / Otsu coarse mask -> visual prompts -> SAM, as described in
MedCLIP-SAM (MICCAI 2024) and MedCLIP-SAMv2 (Medical Image Analysis 2025).
"""

__version__ = "0.1.0"
