"""The adversarial-vs-OOD analysis on hand cases: metrics, Pearson r and fit, bootstrap
intervals, robustness points (x adversarial, y OOD), prediction audit, charts."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

from robnb.analysis.adv_ood import (axis_title, bootstrap_fit, check_predictions,
                                    correlation_by_size, correlation_trend, linear_fit,
                                    metric_table, pearson, robustness_points, verdict)
from robnb.evaluation import metrics, performance_drop_rate


def test_metrics_equal_sklearn_and_the_hand_computation():
    y, p = [0, 0, 1, 1, 1], [0, 1, 1, 1, 0]
    m = metrics(y, p)
    assert m["accuracy"] == pytest.approx(0.6) == accuracy_score(y, p)
    # class 0: 1 of 2 predicted right, 1 of 2 found; class 1: 2 of 3 and 2 of 3
    assert (m["precision_0"], m["recall_0"]) == pytest.approx((0.5, 0.5))
    assert (m["precision_1"], m["recall_1"], m["f1_1"]) == pytest.approx((2 / 3,) * 3)
    assert m["f1"] == pytest.approx(0.4 * 0.5 + 0.6 * 2 / 3)  # weighted by support
    sk = precision_recall_fscore_support(y, p, average="weighted")
    assert (m["precision"], m["recall"], m["f1"]) == pytest.approx(sk[:3])
    assert performance_drop_rate(0.8, 0.6) == pytest.approx(0.25)


def test_pearson_and_fit_on_hand_cases():
    x = np.array([1.0, 2, 3, 4])
    assert pearson(x, 2 * x) == pytest.approx(1.0)
    assert pearson(x, -x + 3) == pytest.approx(-1.0)
    y = np.array([1.0, 3, 2, 4])  # Sxy = 4, Sxx = Syy = 5
    assert pearson(x, y) == pytest.approx(0.8)
    slope, intercept = linear_fit(x, y)
    assert (slope, intercept) == pytest.approx((0.8, 0.5))
    from scipy import stats

    assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y).statistic)
    assert np.isnan(pearson(x, np.ones(4)))  # constant y: undefined, not 0
    assert np.isnan(linear_fit(np.ones(4), y)[0])
    batch = pearson(np.stack([x, x]), np.stack([y, 2 * x]))  # vectorised over replicates
    assert batch == pytest.approx([0.8, 1.0])


def test_bootstrap_interval_contains_the_point_estimate():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, 30)
    y = 0.5 * x + rng.normal(0, 0.1, 30)
    fit = bootstrap_fit(x, y, n_boot=1000, seed=0)
    assert fit["r_lo"] <= fit["r"] <= fit["r_hi"] and fit["r_lo"] > 0
    assert fit["slope_lo"] <= fit["slope"] <= fit["slope_hi"]
    assert fit["slope"] == pytest.approx(np.polyfit(x, y, 1)[0])
    assert fit["n_boot_valid"] == 1000 and 0 <= fit["p_value"] < 0.01
    assert bootstrap_fit(x, y, 200, 5) == bootstrap_fit(x, y, 200, 5)  # seeded
    noise = bootstrap_fit(rng.uniform(size=12), rng.uniform(size=12), 1000, 0)
    assert noise["r_lo"] < noise["r"] < noise["r_hi"]
    assert verdict(fit["r"], fit["r_lo"], fit["r_hi"]).startswith("positive")
    assert verdict(-0.5, -0.9, -0.1).startswith("negative")
    assert verdict(0.2, -0.3, 0.6).startswith("no clear")


def _evals():
    """2 sizes × 3 conditions × 1 task: clean, 2 adversarial sets, 1 OOD set. For the small
    model OOD robustness rises with adversarial robustness; for the large one it falls."""
    rows = []
    for model, size, sign in (("s", 1_000_000, 1), ("l", 10_000_000, -1)):
        for k, cond in enumerate(("baseline", "adversarial", "ood_method")):
            base = {"stage": "adv_ood", "model": model, "model_size": size, "condition": cond,
                    "task": "t", "seed": 0, "run_id": f"{model}-{cond}", "n_examples": 10,
                    "clean_accuracy": 0.9, "clean_f1": 0.9}
            rows.append({**base, "split": "validation", "set_kind": "clean", "accuracy": 0.9,
                         "f1": 0.9, "pdr": 0.0, "pdr_f1": 0.0})
            for j, name in enumerate(("gcg", "rt")):
                pdr = 0.8 - 0.3 * k - 0.1 * j
                rows.append({**base, "split": f"adversarial:{name}", "set_kind": "adversarial",
                             "accuracy": 0.9 * (1 - pdr), "f1": 0.9 * (1 - pdr), "pdr": pdr,
                             "pdr_f1": pdr})
            pdr = 0.5 - sign * 0.2 * k
            rows.append({**base, "split": "ood:o", "set_kind": "ood", "accuracy": 0.9 * (1 - pdr),
                         "f1": 0.9 * (1 - pdr), "pdr": pdr, "pdr_f1": pdr})
    return pd.DataFrame(rows)


def test_points_put_adversarial_on_x_and_ood_on_y():
    pts = robustness_points(_evals())
    assert len(pts) == 2 * 3 * 2 * 1  # sizes × conditions × adversarial sets × OOD sets
    row = pts[(pts.model == "s") & (pts.condition == "adversarial") &
              (pts.adversarial_set == "adversarial:gcg")].iloc[0]
    assert row["x"] == pytest.approx(1 - 0.5) and row["y"] == pytest.approx(1 - 0.3)
    assert row["ood_set"] == "ood:o" and "adversarial" in row["x_title"]
    assert row["y_title"].startswith("OOD") == axis_title("ood").startswith("OOD")
    assert row["x_clean"] == pytest.approx(0.9) and row["y_clean"] == pytest.approx(0.9)
    ev = _evals()
    ev["clean_accuracy"] = 0.9
    ev.loc[(ev.model == "s") & (ev.condition == "baseline"), "clean_accuracy"] = 0.4
    kept = robustness_points(ev, min_clean=0.5)
    assert len(kept) == len(pts) - 2 and not ((kept.model == "s") &
                                              (kept.condition == "baseline")).any()
    raw = robustness_points(_evals(), robustness="raw")
    assert raw["x"].max() <= 0.9 and raw["x_title"].iloc[0].endswith("adversarial sets")
    corr = correlation_by_size(pts, n_boot=500)
    assert list(corr["model"]) == ["s", "l"]
    assert corr["r"].iloc[0] > 0.9 and corr["r"].iloc[1] < -0.9
    assert (corr["r_lo"] <= corr["r"]).all() and (corr["r"] <= corr["r_hi"]).all()
    per_task = correlation_by_size(pd.concat([pts, pts.assign(adversarial_task="u")]), 200,
                                   by=["adversarial_task"])
    assert list(per_task["adversarial_task"]) == ["t", "u", "t", "u"]
    assert per_task["r"].to_numpy() == pytest.approx(np.repeat(corr["r"].to_numpy(), 2))
    trend = correlation_trend(pts, n_boot=300)
    assert trend["n_sizes"] == 2 and trend["slope_per_decade"] < -1.5


def test_points_across_tasks_when_asked():
    ev = _evals()
    other = ev.assign(task="u", run_id=ev["run_id"] + "-u")
    both = pd.concat([ev, other])
    assert len(robustness_points(both)) == 2 * len(robustness_points(ev))
    assert len(robustness_points(both, pairing="all")) == 4 * len(robustness_points(ev))


def test_metric_table_means_over_seeds_and_counts_predictions():
    ev = pd.concat([_evals(), _evals().assign(seed=1, accuracy=lambda d: d["accuracy"] - 0.1)])
    table = metric_table(ev)
    clean = table[(table.model == "s") & (table.split == "validation") &
                  (table.condition == "baseline")].iloc[0]
    assert clean["accuracy"] == pytest.approx(0.85) and clean["n_seeds"] == 2
    assert clean["n_predictions"] == 20
    assert list(table[table.model == "s"]["condition"].unique()) == [
        "baseline", "adversarial", "ood_method"]


def test_check_predictions_recomputes_and_catches_a_lost_prediction():
    y, p = [0, 0, 1, 1, 1], [0, 1, 1, 1, 0]
    m = metrics(y, p)
    ev = pd.DataFrame([{"stage": "adv_ood", "condition": "baseline", "run_id": "r",
                        "split": "ood:x", **m}])
    preds = pd.DataFrame({"run_id": "r", "split": "ood:x", "label": y, "prediction": p})
    out = check_predictions(ev, preds)
    assert out["accuracy"].iloc[0] == pytest.approx(0.6)
    with pytest.raises(AssertionError, match="counted"):
        check_predictions(ev, preds.iloc[:4])
    with pytest.raises(AssertionError, match="accuracy"):
        check_predictions(ev.assign(accuracy=0.7), preds)


def test_charts_render_to_vega_lite_with_correct_axes():
    from robnb.viz.adv_ood import adv_ood_scatter, correlation_vs_size_chart, metric_table_chart

    pts = robustness_points(_evals())
    corr = correlation_by_size(pts, n_boot=200)
    spec = adv_ood_scatter(pts, corr).to_dict()
    layer = spec["spec"]["layer"]
    assert layer[0]["encoding"]["x"]["title"].startswith("adversarial robustness")
    assert layer[0]["encoding"]["y"]["title"].startswith("OOD robustness")
    assert layer[0]["encoding"]["x"]["field"] == "x"
    metric_table_chart(metric_table(_evals())).to_dict()
    c = correlation_vs_size_chart(corr).to_dict()
    assert "layer" in c
