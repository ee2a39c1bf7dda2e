"""Altair charts of the scaling analysis (the paper's figures, from tidy or analysed tables).

Charts receive already-aggregated tables (means over seeds, fits, thinned curves), so the data
they embed stays small; :func:`materialize` serialises a chart's data under an explicit row cap
for the few charts that carry every setting at once (the explorer), instead of switching off
Altair's guard globally.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import altair as alt
import numpy as np
import pandas as pd

MAX_ROWS = 60_000  # rows of aggregated data one chart may embed (a few MB of JSON)
SIZE_SCHEME = "viridis"


def size_label(n: float) -> str:
    """Parameter count as the paper labels it: 7.6M, 1.3B, 11.6B."""
    n = float(n)
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def with_size_label(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    out["size_label"] = [size_label(n) for n in out["model_size"]]
    return out


def size_order(df: pd.DataFrame) -> list[str]:
    """Size labels sorted by parameter count (for legends and colour scales)."""
    return [size_label(n) for n in sorted(pd.unique(df["model_size"].astype(float)))]


def size_color(order: Sequence[str], selection: alt.Parameter | None = None,
               legend: bool = True) -> alt.Color:
    return alt.Color("size_label:O", title="model size", sort=list(order),
                     scale=alt.Scale(scheme=SIZE_SCHEME, domain=list(order)),
                     legend=alt.Legend() if legend else None)


def materialize(chart: alt.TopLevelMixin, max_rows: int = MAX_ROWS) -> alt.TopLevelMixin:
    """A chart that displays under Altair's default row guard, embedding up to ``max_rows``.

    Charts whose datasets already fit the default guard are returned unchanged; otherwise the
    data are embedded now (named datasets), under the explicit cap. Beyond ``max_rows`` Altair's
    MaxRowsError is raised: aggregate harder rather than raise the cap.
    """
    try:
        chart.to_dict()
        return chart
    except alt.MaxRowsError:
        pass
    with alt.data_transformers.enable("default", max_rows=max_rows):
        spec = chart.to_dict()
    return type(chart).from_dict(spec, validate=False)


def legend_selection(title: str) -> alt.Parameter:
    """A legend-bound size selection named after its chart, so concatenated charts keep
    independent selections (and Altair does not have to merge identical unnamed ones)."""
    return alt.selection_point(fields=["size_label"], bind="legend",
                               name="size_" + hashlib.sha1(title.encode()).hexdigest()[:8])


def asr_vs_size(per_seed: pd.DataFrame, title: str) -> alt.FacetChart:
    """ASR at a fixed iteration against model size: seeds as dots, mean as a line, per task."""
    d = with_size_label(per_seed)
    base = alt.Chart(d).encode(x=alt.X("model_size:Q", scale=alt.Scale(type="log"),
                                       title="parameters"))
    dots = base.mark_circle(size=30, opacity=0.5).encode(
        y=alt.Y("asr:Q", title="attack success rate", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("task:N"),
        tooltip=["task", "size_label", "seed", alt.Tooltip("asr:Q", format=".3f"), "run_id",
                 "source_file"] if "source_file" in d else ["task", "size_label", "seed", "asr"])
    line = base.mark_line(point=True).encode(y="mean(asr):Q", color="task:N")
    return (dots + line).properties(width=260, height=200).facet(
        column=alt.Column("task:N", title=None)).properties(title=title)


def asr_vs_compute(points: pd.DataFrame, lines: pd.DataFrame, title: str) -> alt.LayerChart:
    """logit ASR against attack compute (fraction of pretraining), with the per-size OLS fits."""
    order = size_order(points)
    sel = legend_selection(title)
    p = alt.Chart(with_size_label(points)).mark_circle(size=35).encode(
        x=alt.X("attack_flops_fraction_pretrain:Q", scale=alt.Scale(type="log"),
                title="attack compute ÷ pretraining compute"),
        y=alt.Y("logit_asr:Q", title="logit ASR (Laplace-smoothed)"),
        color=size_color(order), opacity=alt.condition(sel, alt.value(0.9), alt.value(0.1)),
        tooltip=["size_label", "round", "iteration", alt.Tooltip("asr_mean:Q", format=".3f"),
                 "n_seeds"]).add_params(sel)
    ln = alt.Chart(with_size_label(lines)).mark_line().encode(
        x="attack_flops_fraction_pretrain:Q", y="logit_asr:Q", color=size_color(order),
        detail="size_label:N", opacity=alt.condition(sel, alt.value(1.0), alt.value(0.1)))
    return (p + ln).properties(width=420, height=280, title=title)


def slopes_vs_size(per_size: pd.DataFrame, prediction: pd.DataFrame | None,
                   title: str) -> alt.LayerChart:
    """Per-size attack-scaling slopes with bootstrap intervals, trend and its extrapolation.

    ``prediction`` (from :meth:`robnb.analysis.fits.TrendFit.predict`) is drawn solid inside the
    fitted size range and dashed, labelled "extrapolation", beyond it.
    """
    d = with_size_label(per_size)
    x = alt.X("model_size:Q", scale=alt.Scale(type="log"), title="parameters")
    dots = alt.Chart(d).mark_circle(size=60, color="black").encode(
        x=x, y=alt.Y("slope:Q", title="slope of logit ASR vs log10 attack compute"),
        tooltip=["size_label", alt.Tooltip("slope:Q", format=".3f"),
                 alt.Tooltip("slope_low:Q", format=".3f"),
                 alt.Tooltip("slope_high:Q", format=".3f"), "n_seeds"])
    bars = alt.Chart(d).mark_rule(color="black").encode(x=x, y="slope_low:Q", y2="slope_high:Q")
    layers = [bars, dots]
    if prediction is not None and len(prediction):
        pr = prediction.sort_values("model_size")
        pr = pr.assign(kind=np.where(pr["extrapolated"], "extrapolation", "fit"))
        fitted = pr[~pr["extrapolated"]]
        if len(fitted) and pr["extrapolated"].any():  # join the dashed part to the solid one
            pr = pd.concat([pr, fitted.tail(1).assign(kind="extrapolation")], ignore_index=True)
        # constant colours: in a concatenation the colour scale is shared with the sizes
        band = alt.Chart(pr).mark_area(opacity=0.15, color="firebrick").encode(
            x=x, y="low:Q", y2="high:Q", detail="kind:N")
        line = alt.Chart(pr).mark_line(color="firebrick").encode(
            x=x, y="predicted:Q",
            strokeDash=alt.StrokeDash("kind:N", title="trend", scale=alt.Scale(
                domain=["fit", "extrapolation"], range=[[1, 0], [6, 4]])))
        layers = [band, line] + layers
    return alt.layer(*layers).properties(width=420, height=260, title=title)


def adversarial_training_asr(per_round: pd.DataFrame, x: str, title: str) -> alt.Chart:
    """Mean ASR (over seeds) of adversarially trained models against round or defense compute."""
    order = size_order(per_round)
    if x == "round":
        xenc = alt.X("round:Q", title="adversarial training round")
    else:
        xenc = alt.X(f"{x}:Q", scale=alt.Scale(type="log"),
                     title="defense compute ÷ pretraining compute")
    return alt.Chart(with_size_label(per_round)).mark_line(point=True).encode(
        x=xenc, y=alt.Y("asr:Q", title="attack success rate", scale=alt.Scale(domain=[0, 1])),
        color=size_color(order),
        tooltip=["size_label", "round", alt.Tooltip("asr:Q", format=".3f"), "n_seeds"],
    ).properties(width=360, height=240, title=title)


def transfer(per_round: pd.DataFrame, facet: str, title: str) -> alt.FacetChart:
    """ASR over rounds, one panel per evaluation setting (e.g. placement or training attack)."""
    order = size_order(per_round)
    return alt.Chart(with_size_label(per_round)).mark_line(point=True).encode(
        x=alt.X("round:Q", title="adversarial training round"),
        y=alt.Y("asr:Q", title="attack success rate", scale=alt.Scale(domain=[0, 1])),
        color=size_color(order),
        tooltip=["size_label", "round", facet, alt.Tooltip("asr:Q", format=".3f"), "n_seeds"],
    ).properties(width=260, height=200).facet(column=alt.Column(f"{facet}:N")).properties(
        title=title)


def offense_defense(points: pd.DataFrame, parity: pd.DataFrame, title: str) -> alt.LayerChart:
    """Attack compute for the target ASR against defense compute (log–log), with parity lines.

    Each size's dashed parity line has slope 1 from its first point: a size whose curve falls
    below its line gains less attack cost than it spends on defense (offense advantage).
    """
    order = size_order(points)
    sel = legend_selection(title)
    x = alt.X("defense_flops_fraction_pretrain:Q", scale=alt.Scale(type="log"),
              title="defense compute ÷ pretraining compute")
    y = alt.Y("attack_flops_fraction_pretrain:Q", scale=alt.Scale(type="log"),
              title="attack compute for target ASR ÷ pretraining compute")
    line = alt.Chart(with_size_label(points)).mark_line(point=True).encode(
        x=x, y=y, color=size_color(order), order="round:Q",
        opacity=alt.condition(sel, alt.value(1.0), alt.value(0.1)),
        tooltip=["size_label", "round", "n_seeds", "n_censored",
                 alt.Tooltip("defense_flops_fraction_pretrain:Q", format=".2e"),
                 alt.Tooltip("attack_flops_fraction_pretrain:Q", format=".2e")]).add_params(sel)
    par = alt.Chart(with_size_label(parity)).mark_line(strokeDash=[4, 4], opacity=0.6).encode(
        x=x, y=y, color=size_color(order), detail="size_label:N")
    return (par + line).properties(width=420, height=300, title=title)


def offense_defense_slopes(slopes: pd.DataFrame, title: str) -> alt.LayerChart:
    """Per-size log–log slopes with bootstrap intervals; the rule at 1 is parity."""
    d = with_size_label(slopes)
    x = alt.X("model_size:Q", scale=alt.Scale(type="log"), title="parameters")
    dots = alt.Chart(d).mark_circle(size=70).encode(
        x=x, y=alt.Y("slope:Q", title="offense/defense slope"), color=size_color(size_order(d)),
        tooltip=["size_label", alt.Tooltip("slope:Q", format=".3f"),
                 alt.Tooltip("slope_low:Q", format=".3f"),
                 alt.Tooltip("slope_high:Q", format=".3f"), "n_rounds", "n_seeds",
                 "n_censored"])
    bars = alt.Chart(d).mark_rule().encode(x=x, y="slope_low:Q", y2="slope_high:Q")
    one = alt.Chart(pd.DataFrame({"parity": [1.0]})).mark_rule(strokeDash=[4, 4]).encode(
        y="parity:Q")
    return (one + bars + dots).properties(width=360, height=240, title=title)


def grid(charts: Sequence[alt.TopLevelMixin], columns: int = 2) -> alt.VConcatChart:
    """Charts in rows of ``columns``, each keeping its own size colours and legend.

    Concatenated charts share colour scales by default and merge their size domains in order
    of appearance, which scrambles the size order; independent scales keep each legend sorted.
    """
    rows = [alt.hconcat(*charts[i:i + columns]).resolve_scale(color="independent")
            for i in range(0, len(charts), columns)]
    return alt.vconcat(*rows).resolve_scale(color="independent")


def grid_or_note(charts: Sequence[alt.TopLevelMixin], note: str, columns: int = 2,
                 max_charts: int | None = None) -> alt.VConcatChart | str:
    """:func:`grid` of the first ``max_charts`` charts (all when None), or ``note`` for none."""
    shown = list(charts)[:max_charts]
    return grid(shown, columns=columns) if shown else note
