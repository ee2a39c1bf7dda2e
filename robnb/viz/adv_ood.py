"""Charts of the adversarial-vs-OOD stage: metric table per condition, adversarial vs OOD
robustness per size with fit lines, correlation vs size.

Axis titles come from the points' own ``x_title`` / ``y_title`` columns, which the analysis
derives from the same definitions as the numbers: x is always adversarial robustness.
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from robnb.analysis.adv_ood import CONDITION_ORDER


def _size_label(df: pd.DataFrame) -> pd.Series:
    return df["model"].astype(str) + " (" + df["model_size"].map(lambda n: f"{n / 1e6:.2g}M") + ")"


def metric_table_chart(table: pd.DataFrame, metric: str = "accuracy") -> alt.Chart:
    """Heat-map table: one row per (task, set), one column per condition, one panel per size."""
    data = table.assign(set=table["task"] + " · " + table["split"], size=_size_label(table),
                        value=table[metric].astype(float))
    data = data[["size", "model_size", "set", "condition", "value", "n_predictions",
                 "n_seeds", "set_kind"]]
    order = [c for c in CONDITION_ORDER if c in set(data["condition"])]
    kind = {"clean": 0, "adversarial": 1, "ood": 2}
    rows = (data.assign(_k=data["set_kind"].map(kind)).sort_values(["set", "_k"])
            .drop_duplicates("set"))
    rows = rows.assign(_t=rows["set"].str.split(" · ").str[0]).sort_values(["_t", "_k", "set"])
    base = alt.Chart(data).encode(
        x=alt.X("condition:N", sort=order, title="condition"),
        y=alt.Y("set:N", title=None, sort=list(rows["set"]), axis=alt.Axis(labelLimit=400)),
    )
    cells = base.mark_rect().encode(
        color=alt.Color("value:Q", title=metric, scale=alt.Scale(scheme="blues")),
        tooltip=["size", "set", "condition", alt.Tooltip("value:Q", format=".3f"),
                 "n_predictions", "n_seeds"])
    text = base.mark_text(fontSize=10).encode(
        text=alt.Text("value:Q", format=".2f"),
        color=alt.condition(alt.datum.value > 0.6, alt.value("white"), alt.value("black")))
    return alt.layer(cells, text, data=data).properties(width=160).facet(
        column=alt.Column("size:N", title=None,
                          sort=alt.SortField("model_size")),
        title=f"{metric} per condition (mean over seeds)")


def adv_ood_scatter(points: pd.DataFrame, corr: pd.DataFrame) -> alt.Chart:
    """Adversarial robustness (x) vs OOD robustness (y), one panel per size, with each size's
    least-squares line and r [interval] in the panel title."""
    x_title, y_title = points["x_title"].iloc[0], points["y_title"].iloc[0]
    pts = points.assign(kind="point", size=_size_label(points))
    lines = []
    for _, c in corr.iterrows():
        g = points[points["model"] == c["model"]]
        if not len(g) or not np.isfinite(c["slope"]):
            continue
        for xv in (float(g["x"].min()), float(g["x"].max())):
            lines.append({"model": c["model"], "model_size": c["model_size"], "x": xv,
                          "y": c["intercept"] + c["slope"] * xv, "kind": "fit"})
    fit = pd.DataFrame(lines, columns=["model", "model_size", "x", "y", "kind"])
    if len(fit):
        fit["size"] = _size_label(fit)
    labels = {r["model"]: f"r = {r['r']:.2f} [{r['r_lo']:.2f}, {r['r_hi']:.2f}], "
                          f"n = {r['n_points']}"
              for _, r in corr.iterrows()}
    data = pd.concat([pts, fit], ignore_index=True)
    data["panel"] = data["size"] + ": " + data["model"].map(labels).fillna("")
    order = [c for c in CONDITION_ORDER if c in set(points["condition"])]
    dots = alt.Chart().mark_point(filled=True, size=60).encode(
        x=alt.X("x:Q", title=x_title, scale=alt.Scale(zero=False)),
        y=alt.Y("y:Q", title=y_title, scale=alt.Scale(zero=False)),
        color=alt.Color("condition:N", sort=order),
        shape=alt.Shape("adversarial_task:N", title="task"),
        tooltip=["model", "condition", "adversarial_set", "ood_set",
                 alt.Tooltip("x:Q", format=".3f", title="adversarial"),
                 alt.Tooltip("y:Q", format=".3f", title="OOD"),
                 alt.Tooltip("x_clean:Q", format=".3f", title="clean (adversarial set's ref.)"),
                 alt.Tooltip("y_clean:Q", format=".3f", title="clean (OOD set's ref.)")],
    ).transform_filter(alt.datum.kind == "point")
    line = alt.Chart().mark_line(color="black", strokeDash=[4, 3]).encode(
        x="x:Q", y="y:Q").transform_filter(alt.datum.kind == "fit")
    return alt.layer(dots, line, data=data).properties(width=300, height=220).facet(
        facet=alt.Facet("panel:N", title=None, sort=alt.SortField("model_size")), columns=3)


def correlation_vs_size_chart(corr: pd.DataFrame) -> alt.Chart:
    """Pearson r (adversarial vs OOD robustness) per size with its bootstrap interval."""
    data = corr.assign(size=_size_label(corr))
    x = alt.X("model_size:Q", scale=alt.Scale(type="log"), title="classifier parameters")
    bars = alt.Chart(data).mark_rule().encode(x=x, y=alt.Y("r_lo:Q", title="Pearson r "
                                                            "(adversarial vs OOD robustness)",
                                                            scale=alt.Scale(domain=[-1, 1])),
                                              y2="r_hi:Q")
    dots = alt.Chart(data).mark_point(filled=True, size=70).encode(
        x=x, y="r:Q", tooltip=["size", alt.Tooltip("r:Q", format=".2f"),
                               alt.Tooltip("r_lo:Q", format=".2f"),
                               alt.Tooltip("r_hi:Q", format=".2f"), "n_points", "transfer"])
    zero = alt.Chart(pd.DataFrame({"y": [0.0]})).mark_rule(strokeDash=[2, 2], color="gray") \
        .encode(y="y:Q")
    return (bars + dots.mark_line(point=True) + zero).properties(
        width=320, height=220, title="correlation vs model size (95% bootstrap interval)")
