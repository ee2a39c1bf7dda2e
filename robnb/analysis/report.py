"""The scaling report of notebook 04, as functions: which rows, which tables, which panels.

Notebook 04 only chooses parameters and displays what these functions return. Every function
here is pure (tables in, tables out) except :func:`write_csv`, the one place a table reaches a
file. Panels are returned as named tuples whose fields are, in order, the arguments of the
matching chart in :mod:`robnb.viz.scaling` (``charts.asr_vs_compute(*panel)``), so the split of
the data into panels is tested here and the charts stay plain builders.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import pandas as pd

from robnb.analysis.curves import adversarially_trained, asr_at_iteration, round_summary
from robnb.analysis.fits import (attack_scaling, fit_lines, laplace_smooth, logit,
                                 scaling_points, size_trend)
from robnb.analysis.offense_defense import attach_defense_compute

UNDEFENDED = ("finetuned", "unspecified")  # defenses of models without adversarial training
PLACEMENT_PREFERENCE = ("suffix", "infix90", "prefix")  # the ASR-vs-size figure's placement
SETTING = ["task", "attack", "placement", "defense"]  # one attack-scaling panel each
NO_TREND = "fewer than two sizes: no trend"
TREND_COLUMNS = ["model_size", "predicted", "low", "high", "extrapolated", "family", "task",
                 "trend_slope", "trend_slope_low", "trend_slope_high"]


class ComputePanel(NamedTuple):
    """Arguments of :func:`robnb.viz.scaling.asr_vs_compute` for one setting."""
    points: pd.DataFrame
    lines: pd.DataFrame
    title: str


class SlopePanel(NamedTuple):
    """Arguments of :func:`robnb.viz.scaling.slopes_vs_size` for one trend."""
    per_size: pd.DataFrame
    prediction: pd.DataFrame
    title: str


class RoundPanel(NamedTuple):
    """Arguments of :func:`robnb.viz.scaling.adversarial_training_asr` (x: column on x)."""
    per_round: pd.DataFrame
    x: str
    title: str


class TransferPanel(NamedTuple):
    """Arguments of :func:`robnb.viz.scaling.transfer` for one task (facet: column per panel)."""
    per_round: pd.DataFrame
    facet: str
    title: str


@dataclass(frozen=True)
class AttackScalingFits:
    """What the attack-scaling section shows: points, per-size fits, their trend, fit lines.

    ``points`` from :func:`robnb.analysis.fits.scaling_points`; ``per_size`` and ``trend``
    (with the :class:`~robnb.analysis.fits.TrendFit` in column ``fit``) from
    :func:`robnb.analysis.fits.attack_scaling`; ``lines`` from
    :func:`robnb.analysis.fits.fit_lines`.
    """
    points: pd.DataFrame
    per_size: pd.DataFrame
    trend: pd.DataFrame
    lines: pd.DataFrame


def select_source(attacks: pd.DataFrame, source: str,
                  results: Sequence[str | Path] | None = None) -> pd.DataFrame:
    """Attack rows of one ``source`` ("paper", "own"), or all of them for ``"all"``.

    Raises ValueError when nothing is left (``results``, the paths loaded, only go into the
    message).
    """
    out = attacks if source == "all" else attacks[attacks["source"] == source]
    if not len(out):
        where = f" in {results}" if results is not None else ""
        raise ValueError(f"no attack results for source={source!r}{where}")
    return out


def describe_attacks(attacks: pd.DataFrame) -> str:
    """One line: attack rows, distinct runs and the tasks present."""
    return (f"{len(attacks)} attack rows, {attacks['run_id'].nunique()} runs; "
            f"tasks: {sorted(attacks['task'].unique())}")


def undefended_at_iteration(before: pd.DataFrame, iteration: int | str) -> pd.DataFrame:
    """Per-run ASR at ``iteration`` of models without adversarial training.

    ``before`` holds first-round rows (:func:`robnb.analysis.curves.first_round`); only the
    defenses in :data:`UNDEFENDED` are kept, and only GCG runs when there are any (the paper's
    ASR-vs-size figure), otherwise every attack. Per (source, family, task) one placement is
    kept, the first present of :data:`PLACEMENT_PREFERENCE` (the paper's figure attacks the
    suffix), so runs of different placements are never pooled as if they were seeds.
    """
    at_it = asr_at_iteration(before[before["defense"].isin(list(UNDEFENDED))], iteration)
    gcg = at_it["attack"] == "gcg"
    at_it = at_it[gcg] if gcg.any() else at_it
    if at_it.empty:
        return at_it
    rank = at_it["placement"].map(
        {p: i for i, p in enumerate(PLACEMENT_PREFERENCE)}).fillna(len(PLACEMENT_PREFERENCE))
    rank = rank.astype(float) + at_it["placement"].astype(str).rank(method="dense") / 1e6
    best = rank.groupby([at_it[k] for k in ("source", "family", "task")]).transform("min")
    return at_it[rank == best]


def asr_by_size(per_run: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and count of per-run ASR per (family, task, model_size)."""
    return per_run.groupby(["family", "task", "model_size"])["asr"].agg(
        ["mean", "std", "count"]).reset_index()


def asr_by_size_pivot(summary: pd.DataFrame, decimals: int = 3) -> pd.DataFrame:
    """Mean ASR of :func:`asr_by_size` with (family, model_size) rows and one column per task."""
    return summary.pivot_table(index=["family", "model_size"], columns="task",
                               values="mean").round(decimals)


def logit_asr_size_trend(per_run: pd.DataFrame, extrapolate_to: Sequence[float] = (),
                         n_boot: int = 1000, ci: float = 0.95, alpha: float = 1.0,
                         rng_seed: int = 0) -> pd.DataFrame:
    """Trend of logit ASR in log10(parameters) per (family, task), predicted beyond the data.

    Per run, ASR is Laplace-smoothed over its trials (``n_correct_before``, else
    ``n_examples``) and put on the logit scale; :func:`robnb.analysis.fits.size_trend` fits
    the per-size means against log10(size) with a bootstrap over seeds. Rows: predictions at
    every observed size and at ``extrapolate_to`` (``extrapolated`` marks sizes beyond the
    data), with the trend's slope and interval repeated on each row; columns
    :data:`TREND_COLUMNS`. A (family, task) with fewer than two sizes has no trend and no rows.
    """
    rows = []
    for (family, task), g in per_run.groupby(["family", "task"]):
        n = g["n_correct_before"].astype(float).fillna(g["n_examples"].astype(float))
        fit = size_trend(g.assign(logit_asr=logit(laplace_smooth(g["asr"], n, alpha))),
                         "logit_asr", n_boot=n_boot, ci=ci, rng_seed=rng_seed)
        if fit is None:
            continue
        pred = fit.predict(np.array(sorted(g["model_size"].unique()) + list(extrapolate_to)),
                           ci)
        rows.append(pred.assign(family=family, task=task, trend_slope=fit.slope,
                                trend_slope_low=fit.slope_low,
                                trend_slope_high=fit.slope_high))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=TREND_COLUMNS)


def extrapolated_trend(trend: pd.DataFrame) -> pd.DataFrame | str:
    """For display: the extrapolated rows of :func:`logit_asr_size_trend`, or :data:`NO_TREND`."""
    return trend[trend["extrapolated"]] if len(trend) else NO_TREND


def attack_scaling_fits(before: pd.DataFrame, n_boot: int = 1000) -> AttackScalingFits:
    """Points, per-size OLS fits, their size trend and fit lines of logit ASR vs attack compute."""
    points = scaling_points(before)
    per_size, trend = attack_scaling(before, n_boot=n_boot)
    return AttackScalingFits(points, per_size, trend, fit_lines(per_size, points))


def _finetuned_first(defense: pd.Series) -> pd.Series:
    return defense != "finetuned"


def compute_panels(points: pd.DataFrame, lines: pd.DataFrame) -> list[ComputePanel]:
    """One ASR-vs-compute panel per (task, attack, placement, defense), fine-tuned models first.

    Sources, families and rounds of one setting share its panel (sizes tell them apart).
    """
    groups = sorted(points.groupby(SETTING), key=lambda kv: kv[0][3] != "finetuned")
    return [ComputePanel(p, lines.merge(pd.DataFrame([key], columns=SETTING)), ", ".join(key))
            for key, p in groups]


def slope_panels(per_size: pd.DataFrame, trend: pd.DataFrame,
                 extrapolate_to: Sequence[float] = ()) -> list[SlopePanel]:
    """One slopes-vs-size panel per trend row (fine-tuned models first).

    Each panel holds that trend's per-size slopes and the trend predicted at the observed sizes
    and at ``extrapolate_to``. No trend (fewer than two sizes anywhere: an empty table, possibly
    without columns) gives no panels.
    """
    if trend.empty:
        return []
    panels = []
    keys = ["task", "attack", "placement", "defense", "round", "source"]
    for _, row in trend.sort_values("defense", key=_finetuned_first, kind="stable").iterrows():
        match = pd.Series(True, index=per_size.index)
        for k in keys:
            match &= per_size[k] == row[k]
        ps = per_size[match]
        sizes = np.array(sorted(ps["model_size"].unique()) + list(extrapolate_to), float)
        panels.append(SlopePanel(ps, row["fit"].predict(sizes),
                                 f"{row['task']}, {row['attack']}: slope "
                                 f"{row['trend_slope']:.3f} per decade"))
    return panels


def trend_fits_text(trend: pd.DataFrame, decimals: int = 4) -> str:
    """The attack-scaling trend table as text (without the fit objects), or :data:`NO_TREND`."""
    return trend.drop(columns="fit").round(decimals).to_string() if len(trend) else NO_TREND


def adversarial_training_summary(attacks: pd.DataFrame, training: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds of last-iteration ASR and defense compute per (group, size, round).

    Only adversarially trained models (:func:`robnb.analysis.curves.adversarially_trained`);
    defense compute (``defense_flops_fraction_pretrain``) comes from the training table, NaN
    when it is empty or has no matching row.
    """
    last = asr_at_iteration(adversarially_trained(attacks), "last")
    with_def = (attach_defense_compute(last, training) if len(training)
                else last.assign(defense_flops_fraction_pretrain=np.nan))
    return round_summary(with_def, ["asr", "defense_flops_fraction_pretrain"])


def adversarial_training_panels(per_round: pd.DataFrame) -> list[RoundPanel]:
    """Per (task, defense) of suffix attacks: ASR vs round, and vs defense compute when known.

    The defense-compute panel keeps the rounds with positive defense compute (log axis).
    """
    panels = []
    suffix = per_round[per_round["placement"] == "suffix"]
    for (task, defense), g in suffix.groupby(["task", "defense"]):
        panels.append(RoundPanel(g, "round", f"{task}, {defense}: ASR at the last iteration"))
        spent = g["defense_flops_fraction_pretrain"] > 0
        if spent.any():
            panels.append(RoundPanel(g[spent], "defense_flops_fraction_pretrain",
                                     f"{task}, {defense}: ASR vs defense compute"))
    return panels


def transfer_panels(per_round: pd.DataFrame) -> list[TransferPanel]:
    """Per task evaluated in more than one setting: ASR over rounds, one facet per setting.

    A setting is "<defense> → <attack> <placement>": the same trained models against other
    placements or attacks than they were trained on.
    """
    d = per_round.assign(setting=per_round["defense"] + " → " + per_round["attack"] + " "
                         + per_round["placement"])
    return [TransferPanel(g, "setting", f"{task}: transfer across settings")
            for task, g in d.groupby("task") if g["setting"].nunique() > 1]


def write_csv(table: pd.DataFrame, out_dir: str | Path, name: str) -> Path:
    """Write ``table`` (without its index) to ``out_dir/name``, creating folders; the path."""
    path = Path(out_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    return path
