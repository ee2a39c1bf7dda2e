"""The offense/defense explorer: one linked Altair view, driven by widgets or by its own inputs.

Two front ends share :func:`explorer_chart`:

- :func:`export_explorer_html` writes a standalone page whose dropdowns (data source, task,
  attack, placement, defense, target ASR, first/last round) are Vega-Lite parameters, so it
  stays interactive without a kernel and without network (the JavaScript is inlined);
- :class:`Explorer` recomputes the analysis in the kernel for any target ASR and size subset,
  from ipywidgets controls.

Clicking a size in a legend highlights that size in every panel (linked selection); tooltips
carry the run ids and source files behind every point. The data are aggregated (means over
seeds, curves thinned to a log-spaced iteration grid) before they reach the chart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import altair as alt
import numpy as np
import pandas as pd

from robnb.analysis.curves import GROUP_KEYS, asr_curves, id_summary
from robnb.analysis.offense_defense import (attach_defense_compute, offense_defense_points,
                                            offense_defense_slopes, parity_lines)
from robnb.analysis.target_compute import target_compute
from robnb.viz.scaling import (MAX_ROWS, materialize, size_color, size_order,
                                with_size_label)

TARGETS = (2.0, 5.0, 10.0)  # percent: the paper uses 2% and 5%
SELECTORS = ("source", "task", "attack", "placement", "defense")
PANEL_TITLES = ("ASR vs attack compute", "Attack compute to reach the target ASR",
                "Offense/defense balance", "Offense/defense slope by size")


@dataclass
class ExplorerData:
    """Aggregated tables behind the explorer (one row per plotted point)."""
    curves: pd.DataFrame
    target: pd.DataFrame
    od_points: pd.DataFrame
    od_parity: pd.DataFrame
    od_slopes: pd.DataFrame
    targets: tuple[float, ...] = field(default=TARGETS)


def thin_iterations(curves: pd.DataFrame, max_points: int = 20) -> pd.DataFrame:
    """Keep a log-spaced subset of iterations per curve (plus the first and last)."""
    keep = []
    for _, g in curves.groupby(GROUP_KEYS + ["model_size", "round", "stage"], dropna=False,
                               observed=True):
        its = np.sort(g["iteration"].unique())
        if len(its) > max_points:
            grid = np.unique(np.geomspace(max(its[0], 1), its[-1], max_points).round())
            chosen = {its[0], its[-1]} | {its[np.abs(its - v).argmin()] for v in grid}
            g = g[g["iteration"].isin(chosen)]
        keep.append(g)
    return pd.concat(keep, ignore_index=True) if keep else curves


def _provenance(attacks: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Run ids and source files behind each key, as short strings for tooltips."""
    src = attacks["source_file"] if "source_file" in attacks else pd.Series("", attacks.index)
    g = attacks.assign(_src=src.fillna("").astype(str), _run=attacks["run_id"].astype(str)) \
        .groupby(keys, dropna=False, observed=True)
    return g.agg(runs=("_run", id_summary), files=("_src", id_summary)).reset_index()


def explorer_data(tables: dict[str, pd.DataFrame], targets: Sequence[float] = TARGETS,
                  n_boot: int = 200, max_points: int = 20) -> ExplorerData:
    """Aggregate attack and training tables for the explorer; targets are in percent."""
    attacks = tables["attacks"]
    training = tables.get("training", pd.DataFrame())
    cur = asr_curves(attacks)
    g = cur.groupby(GROUP_KEYS + ["model_size"], dropna=False, observed=True)["round"]
    first, last = g.transform("min"), g.transform("max")
    cur = pd.concat([cur[cur["round"] == first].assign(stage="first"),
                     cur[cur["round"] == last].assign(stage="last")], ignore_index=True)
    cur = thin_iterations(cur, max_points)
    prov = _provenance(attacks, GROUP_KEYS + ["model_size", "round"])
    cur = cur.merge(prov, on=GROUP_KEYS + ["model_size", "round"], how="left")
    tgt, pts, par, slo = [], [], [], []
    for t in targets:
        tc = target_compute(attacks, t / 100.0)
        s = tc.groupby(GROUP_KEYS + ["model_size", "round"], dropna=False, observed=True).agg(
            attack_flops_fraction_pretrain=("attack_flops_fraction_pretrain", "mean"),
            interpolated_iteration=("interpolated_iteration", "mean"),
            n_reached=("reached", "sum"), n_seeds=("seed", "nunique")).reset_index()
        tgt.append(s.merge(prov, on=GROUP_KEYS + ["model_size", "round"], how="left")
                   .assign(target_asr=t))
        if len(training):
            joined = attach_defense_compute(tc, training)
            joined = joined[joined["defense_flops_cumulative"].notna()]
            if len(joined):
                p = offense_defense_points(joined)
                pts.append(p.assign(target_asr=t))
                par.append(parity_lines(p).assign(target_asr=t))
                slo.append(offense_defense_slopes(joined, n_boot=n_boot).assign(target_asr=t))

    def cat(parts: list[pd.DataFrame], cols: list[str]) -> pd.DataFrame:
        return (pd.concat(parts, ignore_index=True) if parts
                else pd.DataFrame(columns=GROUP_KEYS + ["model_size", "target_asr"] + cols))

    return ExplorerData(
        curves=cur, target=pd.concat(tgt, ignore_index=True),
        od_points=cat(pts, ["round", "defense_flops_fraction_pretrain",
                            "attack_flops_fraction_pretrain", "n_seeds", "n_censored",
                            "run_ids", "training_run_ids"]),
        od_parity=cat(par, ["defense_flops_fraction_pretrain", "attack_flops_fraction_pretrain"]),
        od_slopes=cat(slo, ["slope", "slope_low", "slope_high", "n_rounds", "n_seeds",
                            "n_censored"]),
        targets=tuple(targets))


def default_selection(data: ExplorerData) -> dict[str, str]:
    """The setting shown first: most seed × round offense/defense points, else most curves."""
    if len(data.od_points) and data.od_points["n_seeds"].sum() > 0:
        top = data.od_points.groupby(list(SELECTORS), dropna=False, observed=True)[
            "n_seeds"].sum().idxmax()
    else:
        top = data.curves.groupby(list(SELECTORS), dropna=False, observed=True).size().idxmax()
    return dict(zip(SELECTORS, (str(v) for v in top)))


def selection_for_source(data: ExplorerData, source: str) -> dict[str, str]:
    """The setting shown first within ``source``: its (task, attack, placement, defense) with the
    most offense/defense points; :func:`default_selection` when the source has none (or is not
    in the data)."""
    if source in set(data.curves["source"]) and len(data.od_points):
        sub = data.od_points[data.od_points["source"] == source]
        if not sub.empty:
            top = sub.groupby(list(SELECTORS)).size().idxmax()
            return dict(zip(SELECTORS, (str(v) for v in top)))
    return default_selection(data)


def default_target(targets: Sequence[float]) -> float:
    """The target ASR (percent) shown first: 5% when offered (the paper's), else the first."""
    return 5.0 if 5.0 in targets else targets[0]


def split_by_source(tables: dict[str, pd.DataFrame]) -> dict[str, dict[str, pd.DataFrame]]:
    """Every table restricted to each source present in the attacks (sorted by source name)."""
    return {s: {t: df[df["source"] == s] for t, df in tables.items()}
            for s in sorted(set(tables["attacks"]["source"]))}


def explorer_chart(data: ExplorerData, bind: bool = True,
                   selection: dict[str, str] | None = None,
                   target: float | None = None) -> alt.VConcatChart:
    """The four linked panels; with ``bind`` the selectors are dropdowns inside the chart."""
    sel = {**default_selection(data), **(selection or {})}
    target = target if target is not None else default_target(data.targets)
    params = {}
    for name in SELECTORS:
        options = sorted(data.curves[name].astype(str).unique())
        binding = alt.binding_select(options=options, name=f"{name} ") if bind else alt.Undefined
        params[name] = alt.param(name=f"p_{name}", value=sel[name], bind=binding)
    params["target"] = alt.param(
        name="p_target", value=target,
        bind=alt.binding_select(options=list(data.targets), name="target ASR (%) ")
        if bind else alt.Undefined)
    params["stage"] = alt.param(
        name="p_stage", value="first",
        bind=alt.binding_radio(options=["first", "last"], name="round ") if bind
        else alt.Undefined)
    size_sel = alt.selection_point(fields=["size_label"], bind="legend", name="size_sel")

    def where(with_target: bool = False) -> alt.expr.core.Expression:
        cond = alt.datum.source == params["source"]
        for name in SELECTORS[1:]:
            cond = cond & (alt.datum[name] == params[name])
        if with_target:
            cond = cond & (alt.datum.target_asr == params["target"])
        return cond

    everything = pd.concat([data.curves[["model_size"]], data.target[["model_size"]]])
    order = size_order(everything) if len(everything) else []
    color = size_color(order)
    fade = alt.condition(size_sel, alt.value(1.0), alt.value(0.12))
    log = alt.Scale(type="log")

    curves = alt.Chart(with_size_label(data.curves)).mark_line(point=True).encode(
        x=alt.X("attack_flops_fraction_pretrain:Q", scale=log,
                title="attack compute ÷ pretraining compute"),
        y=alt.Y("asr_mean:Q", title="ASR (mean over seeds)", scale=alt.Scale(domain=[0, 1])),
        color=color, opacity=fade, order="iteration:Q",
        tooltip=["size_label", "round", "iteration", alt.Tooltip("asr_mean:Q", format=".3f"),
                 alt.Tooltip("asr_std:Q", format=".3f"), "n_seeds", "runs", "files"],
    ).transform_filter(alt.datum.iteration > 0).transform_filter(where()).transform_filter(
        alt.datum.stage == params["stage"]).add_params(
        *params.values(), size_sel).properties(title=PANEL_TITLES[0], width=420, height=260)

    target_chart = alt.Chart(with_size_label(data.target)).mark_line(point=True).encode(
        x=alt.X("round:Q", title="adversarial training round"),
        y=alt.Y("attack_flops_fraction_pretrain:Q", scale=log,
                title="attack compute for target ÷ pretraining"),
        color=color, opacity=fade,
        tooltip=["size_label", "round", alt.Tooltip("interpolated_iteration:Q", format=".2f"),
                 alt.Tooltip("attack_flops_fraction_pretrain:Q", format=".2e"), "n_reached",
                 "n_seeds", "runs", "files"],
    ).transform_filter(where(True)).transform_filter(
        "isValid(datum.attack_flops_fraction_pretrain)").properties(
        title=PANEL_TITLES[1], width=420, height=260)

    x_od = alt.X("defense_flops_fraction_pretrain:Q", scale=log,
                 title="defense compute ÷ pretraining compute")
    y_od = alt.Y("attack_flops_fraction_pretrain:Q", scale=log,
                 title="attack compute for target ÷ pretraining")
    od = alt.Chart(with_size_label(data.od_points)).mark_line(point=True).encode(
        x=x_od, y=y_od, color=color, opacity=fade, order="round:Q",
        tooltip=["size_label", "round", "n_seeds", "n_censored", "run_ids", "training_run_ids",
                 alt.Tooltip("defense_flops_fraction_pretrain:Q", format=".2e"),
                 alt.Tooltip("attack_flops_fraction_pretrain:Q", format=".2e")],
    ).transform_filter(where(True)).transform_filter(
        "isValid(datum.attack_flops_fraction_pretrain)")
    parity = alt.Chart(with_size_label(data.od_parity)).mark_line(
        strokeDash=[4, 4]).encode(x=x_od, y=y_od, color=color, detail="size_label:N",
                                  opacity=alt.condition(size_sel, alt.value(0.6),
                                                        alt.value(0.05))
                                  ).transform_filter(where(True))
    od_layer = alt.layer(parity, od).properties(
        title=alt.TitleParams(PANEL_TITLES[2], subtitle="dashed: parity (slope 1)"),
        width=420, height=260)

    sl = with_size_label(data.od_slopes)
    x_sl = alt.X("model_size:Q", scale=log, title="parameters")
    slope_dots = alt.Chart(sl).mark_circle(size=70).encode(
        x=x_sl, y=alt.Y("slope:Q", title="log–log slope (1 = parity)"), color=color,
        opacity=fade,
        tooltip=["size_label", alt.Tooltip("slope:Q", format=".3f"),
                 alt.Tooltip("slope_low:Q", format=".3f"),
                 alt.Tooltip("slope_high:Q", format=".3f"), "n_rounds", "n_seeds",
                 "n_censored"]).transform_filter(where(True))
    slope_bars = alt.Chart(sl).mark_rule().encode(
        x=x_sl, y="slope_low:Q", y2="slope_high:Q", color=color).transform_filter(where(True))
    one = alt.Chart(pd.DataFrame({"parity": [1.0]})).mark_rule(strokeDash=[4, 4]).encode(
        y="parity:Q").properties(name="parity_rule")  # named: the only data-free layer
    slopes = alt.layer(one, slope_bars, slope_dots).properties(
        title=PANEL_TITLES[3], width=420, height=260)

    return alt.vconcat(alt.hconcat(curves, target_chart), alt.hconcat(od_layer, slopes))


def export_explorer_html(chart: alt.TopLevelMixin, path: str | Path,
                         max_rows: int = MAX_ROWS) -> Path:
    """Write a standalone, offline page (Vega JavaScript inlined, SVG rendering).

    The page embeds every dataset in full, so the aggregated data must stay within
    ``max_rows`` rows per dataset (checked first; Altair's own save lifts its row guard).
    """
    with alt.data_transformers.enable("default", max_rows=max_rows):
        chart.to_dict()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    chart.save(str(path), format="html", inline=True,
               embed_options={"renderer": "svg", "actions": False})
    return path


class Explorer:
    """ipywidgets front end: recompute target compute and slopes for any target and sizes.

    ``tables_by_source`` maps a source name (e.g. "paper", "own") to its tables
    (``attacks``, ``training``). The chart of the current choice is ``self.chart``.
    """

    def __init__(self, tables_by_source: dict[str, dict[str, pd.DataFrame]],
                 target: float = 5.0, n_boot: int = 200):
        import ipywidgets as w

        self.tables_by_source = tables_by_source
        self.n_boot = n_boot
        self.chart: alt.TopLevelMixin | None = None
        self.source = w.Dropdown(options=sorted(tables_by_source), description="source")
        self.selects = {n: w.Dropdown(description=n) for n in SELECTORS[1:]}
        self.target = w.BoundedFloatText(value=target, min=0.1, max=100.0, step=0.5,
                                         description="target ASR %")
        self.sizes = w.SelectMultiple(description="sizes", rows=6)
        self.output = w.Output()
        self._refill_options()
        self.source.observe(lambda _: self._refill_options(), names="value")
        for widget in [*self.selects.values(), self.target, self.sizes]:
            widget.observe(lambda _: self.update(), names="value")
        self.widget = w.VBox([w.HBox([self.source, *self.selects.values()]),
                              w.HBox([self.target, self.sizes]), self.output])
        self.update()

    @classmethod
    def for_tables(cls, tables: dict[str, pd.DataFrame], target: float = 5.0,
                   n_boot: int = 200, source: str | None = None) -> Explorer:
        """An explorer over ``tables`` split by source, showing ``source`` first if present."""
        explorer = cls(split_by_source(tables), target=target, n_boot=n_boot)
        if source in explorer.tables_by_source:
            explorer.source.value = source
        return explorer

    def _attacks(self) -> pd.DataFrame:
        return self.tables_by_source[self.source.value]["attacks"]

    def _refill_options(self) -> None:
        a = self._attacks()
        self._updating = True
        try:
            top = a.groupby(list(SELECTORS[1:]), observed=True).size().idxmax()
            for (name, widget), default in zip(self.selects.items(), top):
                widget.options = sorted(a[name].astype(str).unique())
                widget.value = str(default)
            sizes = sorted(a["model_size"].unique())
            self.sizes.options = [(f"{n:,}", n) for n in sizes]
            self.sizes.value = tuple(sizes)
        finally:
            self._updating = False
        self.update()

    def selected_tables(self) -> dict[str, pd.DataFrame]:
        """The chosen source's tables restricted to the chosen setting and sizes."""
        tables = self.tables_by_source[self.source.value]
        a = tables["attacks"]
        for name, widget in self.selects.items():
            a = a[a[name].astype(str) == widget.value]
        a = a[a["model_size"].isin(self.sizes.value)]
        return {"attacks": a, "training": tables.get("training", pd.DataFrame())}

    def update(self) -> None:
        if getattr(self, "_updating", False):
            return
        tables = self.selected_tables()
        self.output.clear_output(wait=True)
        with self.output:
            if tables["attacks"].empty:
                print("no results for this choice")
                self.chart = None
                return
            data = explorer_data(tables, targets=(float(self.target.value),), n_boot=self.n_boot)
            self.chart = materialize(explorer_chart(data, bind=False))
            from IPython.display import display

            display(self.chart)
