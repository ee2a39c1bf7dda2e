"""The 'accuracy does not fall with size' check, on counts worked out by hand."""

from __future__ import annotations

import pandas as pd
import pytest

from robnb.analysis.size_checks import accuracy_steps, falls_with_size


def _ev(task: str, accs: list[float], n: int) -> pd.DataFrame:
    return pd.DataFrame([{"task": task, "model": f"m{i}", "model_size": 10 ** i, "accuracy": a,
                          "n_examples": n} for i, a in enumerate(accs)])


def test_a_dip_within_noise_is_not_a_drop():
    # 0.90 -> 0.88 on 400 examples: SE = sqrt(.9*.1/400 + .88*.12/400) = 0.0221 -> -0.9 SE
    steps = accuracy_steps(_ev("spam", [0.90, 0.88], 400))
    assert steps["se"].item() == pytest.approx(0.02211, abs=1e-4)
    assert not steps["significant_drop"].item()
    assert falls_with_size(steps).startswith("accuracy does not fall with size")


def test_a_large_drop_is_named():
    steps = accuracy_steps(pd.concat([_ev("pm", [0.70, 0.95, 0.80], 1000),
                                      _ev("wl", [0.6, 0.7, 0.8], 1000)]))
    flagged = steps[steps["significant_drop"]]
    assert list(zip(flagged["task"], flagged["larger"])) == [("pm", "m2")]
    line = falls_with_size(steps)
    assert line.startswith("accuracy falls with size") and "pm m1 0.950 -> m2 0.800" in line


def test_seeds_are_pooled_by_counts():
    ev = pd.concat([_ev("pm", [0.5, 0.9], 100), _ev("pm", [0.7, 0.9], 300)])
    steps = accuracy_steps(ev)
    assert steps["acc_smaller"].item() == pytest.approx((50 + 210) / 400)
