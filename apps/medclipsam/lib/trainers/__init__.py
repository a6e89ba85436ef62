from .medclipsam_weak import MedClipSamWeakTrain

__all__ = ["MedClipSamWeakTrain"]
