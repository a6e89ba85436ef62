from .medclipsam import MedClipSamInfer

__all__ = ["MedClipSamInfer"]
