"""Does clean accuracy fall with model size? Asked of noisy estimates, so answered with a test.

One seed and a few hundred validation examples per task give accuracies that wobble by a
percent or two; on a saturated task (Spam near 98%) adjacent sizes can swap places by chance.
So each step up the ladder is a two-proportion z-test on the validation counts: a step is a
*drop* only when the larger size is lower by more than ``z`` standard errors of the difference.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def accuracy_steps(ev: pd.DataFrame, z: float = 1.96) -> pd.DataFrame:
    """Per task and adjacent pair of sizes (mean over seeds): the change in accuracy, its
    standard error, and whether it is a significant drop. ``ev`` needs model, model_size,
    task, accuracy, n_examples (the fine-tuned models' validation rows)."""
    g = (ev.assign(correct=ev["accuracy"] * ev["n_examples"])
         .groupby(["task", "model", "model_size"], as_index=False)[["correct", "n_examples"]].sum())
    rows = []
    for task, t in g.sort_values("model_size").groupby("task"):
        t = t.reset_index(drop=True)
        for i in range(1, len(t)):
            a, b = t.iloc[i - 1], t.iloc[i]
            pa, pb = a["correct"] / a["n_examples"], b["correct"] / b["n_examples"]
            se = float(np.sqrt(pa * (1 - pa) / a["n_examples"] + pb * (1 - pb) / b["n_examples"]))
            diff = pb - pa
            rows.append({"task": task, "smaller": a["model"], "larger": b["model"],
                         "acc_smaller": pa, "acc_larger": pb, "change": diff, "se": se,
                         "significant_drop": bool(diff < -z * se) if se > 0 else diff < 0})
    return pd.DataFrame(rows)


def falls_with_size(steps: pd.DataFrame) -> str:
    """One line: where accuracy falls significantly with size, or that it nowhere does."""
    drops = steps[steps["significant_drop"]]
    n_lower = int((steps["change"] < 0).sum())
    if drops.empty:
        return (f"accuracy does not fall with size: no significant drop in {len(steps)} steps "
                f"({n_lower} within-noise dips, two-proportion z-test at 1.96 SE)")
    return "accuracy falls with size: " + "; ".join(
        f"{r.task} {r.smaller} {r.acc_smaller:.3f} -> {r.larger} {r.acc_larger:.3f} "
        f"({r.change / r.se:.1f} SE)" for r in drops.itertuples())
