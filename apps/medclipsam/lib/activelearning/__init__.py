"""Active learning of the app: the strategy ``uncertainty`` and the scoring method that fills it."""

from __future__ import annotations

from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy

from medclipsam.weak import service
from medclipsam.weak.ensemble import EnsemblePredictor


class Uncertainty(Strategy):
    """The unlabeled study the retrained ensemble is least sure about."""

    def __init__(self, predictor: EnsemblePredictor) -> None:
        super().__init__("Most uncertain unlabeled study (checkpoint-ensemble entropy)")
        self.predictor = predictor

    def __call__(self, request, datastore):
        image, score, how = service.most_uncertain(datastore, self.predictor)
        if image is None:
            return None
        return {"id": image, "uncertainty": score, "strategy": "uncertainty", "chosen_by": how}


class UncertaintyScoring(ScoringMethod):
    """Stores every unlabeled study's ensemble uncertainty in its image info."""

    def __init__(self, predictor: EnsemblePredictor) -> None:
        super().__init__("Checkpoint-ensemble uncertainty of the unlabeled studies")
        self.predictor = predictor

    def __call__(self, request, datastore):
        scores = service.score_unlabeled(datastore, self.predictor)     # no model yet: logged, empty
        out = {"scored": len(scores), "scores": scores}
        return out if self.predictor.available() else {**out, "note": service.NOTHING_TO_SCORE}
