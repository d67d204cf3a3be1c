"""The papers' evaluation of an unlearned model: accuracies, MIA efficacy and privacy, summary."""
from evaluation.metrics import accuracy, predict_probs
from evaluation.mia import forget_efficacy, training_privacy
from utils import UserError


def evaluate(model, splits, device, rte_minutes=None):
    """eval_result.json's accuracy, SVC_MIA_forget_efficacy, SVC_MIA_training_privacy and summary."""
    names = ["retain", "forget", "val", "test"]
    if splits.forget_class >= 0:
        names.append("test_forgotten_class")
    out = {}
    for name in names:
        x, y = splits.xy(name)
        out[name] = (predict_probs(model, x, device), y.cpu())
        if not out[name][0].isfinite().all():
            raise UserError(f"the model's outputs on the {name} set are NaN or infinite: the run diverged; "
                            f"lower --unlearn_lr or --alpha")
    acc = {name: accuracy(*out[name]) for name in names}
    efficacy = forget_efficacy(out["retain"], out["test"], out["forget"])
    privacy = training_privacy(out["retain"], out["test"])
    summary = {"UA": 100 - acc["forget"], "RA": acc["retain"], "TA": acc["test"],
               "MIA_efficacy": efficacy["confidence"], "RTE_minutes": rte_minutes}
    return {"accuracy": acc, "SVC_MIA_forget_efficacy": efficacy, "SVC_MIA_training_privacy": privacy,
            "summary": summary}
