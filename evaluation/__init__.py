"""Evaluation: accuracies, the SVC membership-inference attack and the gap to retraining."""

from .metrics import accuracy, predict_probs
from .mia import (FEATURES, efficacy_sets, features, forget_efficacy, predict_distinct, privacy_sets, svc_attack,
                  svc_attacks, training_privacy)

__all__ = [
    "FEATURES",
    "accuracy",
    "avg_gap",
    "efficacy_sets",
    "evaluate",
    "features",
    "forget_efficacy",
    "predict_distinct",
    "predict_probs",
    "privacy_sets",
    "svc_attack",
    "svc_attacks",
    "training_privacy",
]


def avg_gap(result, reference, keys=("UA", "RA", "TA", "MIA_efficacy")):
    """Mean absolute difference between `result` and `reference` over `keys`."""
    return sum(abs(result[k] - reference[k]) for k in keys) / len(keys)


from .unlearning import evaluate  # noqa: E402
