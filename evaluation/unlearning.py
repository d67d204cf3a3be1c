"""The papers' evaluation of an unlearned model: accuracies, MIA efficacy and privacy, summary."""
import time

from evaluation.metrics import accuracy, predict_probs
from evaluation.mia import FEATURES, efficacy_sets, privacy_sets, svc_attacks
from utils import UserError


def evaluate(model, splits, device, rte_minutes=None, full=True):
    """eval_result.json's accuracy, SVC_MIA_forget_efficacy, SVC_MIA_training_privacy, summary, eval_seconds.

    The attack scores are fractions in [0, 1] (the reference's keys); `summary` is in percent.
    `full=False` computes only what the tables show: the forget-efficacy attack on the confidence feature
    (`SVC_MIA_forget_efficacy` = {"confidence": ...}) and no `SVC_MIA_training_privacy`; the numbers it
    gives are the same as the full evaluation's.
    """
    start = time.perf_counter()
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
    attacks = {"SVC_MIA_forget_efficacy": efficacy_sets(out["retain"], out["test"], out["forget"])}
    if full:
        attacks["SVC_MIA_training_privacy"] = privacy_sets(out["retain"], out["test"])
    result = {"accuracy": acc, **svc_attacks(attacks, FEATURES if full else ("confidence",))}
    result["summary"] = {"UA": 100 - acc["forget"], "RA": acc["retain"], "TA": acc["test"],
                         "MIA_efficacy": 100 * result["SVC_MIA_forget_efficacy"]["confidence"],
                         "RTE_minutes": rte_minutes}
    result["eval_seconds"] = time.perf_counter() - start
    return result
