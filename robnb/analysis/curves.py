"""ASR curves: per run, per-example attack compute, and mean/spread over seeds.

Attack compute follows the paper: the compute to run ``i`` iterations on one example is
``i × mean FLOPs per iteration ÷ evaluated examples``; the mean is over the run's iterations
from 1 on (iteration 0 is the unattacked input and may log no compute). Dividing by
pretraining FLOPs puts models of different size on one axis.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

GROUP_KEYS = ["source", "family", "task", "attack", "placement", "defense"]
CURVE_KEYS = GROUP_KEYS + ["model_size", "seed", "round", "run_id"]


def with_attack_compute(attacks: pd.DataFrame) -> pd.DataFrame:
    """Add ``mean_flops_per_iteration``, ``attack_flops_per_example`` and its pretraining share."""
    out = attacks.copy()
    flops = out["attack_flops"].astype(float).where(out["iteration"] >= 1)
    out["mean_flops_per_iteration"] = flops.groupby([out[k] for k in CURVE_KEYS],
                                                    dropna=False).transform("mean")
    out["attack_flops_per_example"] = (out["iteration"].astype(float)
                                       * out["mean_flops_per_iteration"]
                                       / out["n_examples"].astype(float))
    out["attack_flops_fraction_pretrain"] = (out["attack_flops_per_example"]
                                             / out["pretrain_flops"].astype(float))
    return out


def seed_means(attacks: pd.DataFrame, value_cols: list[str]) -> pd.DataFrame:
    """Average repeated evaluations of one (group, size, seed, round, iteration) first.

    The same seed can be evaluated by several runs (e.g. two evaluation campaigns of one
    checkpoint); averaging them first keeps every seed's weight equal in the spread over seeds.
    """
    keys = GROUP_KEYS + ["model_size", "seed", "round", "iteration"]
    agg = {c: "mean" for c in value_cols}
    return (attacks.groupby(keys, dropna=False, observed=True).agg(agg)
            .assign(n_runs=attacks.groupby(keys, dropna=False, observed=True).size())
            .reset_index())


def asr_curves(attacks: pd.DataFrame) -> pd.DataFrame:
    """Mean, std, min and max of ASR over seeds per (group, size, round, iteration).

    Also carries the mean attack compute (fraction of pretraining) for the compute axis and the
    number of seeds behind every point, so sparse points are visible on charts.
    """
    df = with_attack_compute(attacks)
    per_seed = seed_means(df, ["asr", "attack_flops_fraction_pretrain"])
    keys = GROUP_KEYS + ["model_size", "round", "iteration"]
    g = per_seed.groupby(keys, dropna=False, observed=True)
    out = g.agg(asr_mean=("asr", "mean"), asr_std=("asr", "std"), asr_min=("asr", "min"),
                asr_max=("asr", "max"), n_seeds=("seed", "nunique"),
                attack_flops_fraction_pretrain=("attack_flops_fraction_pretrain", "mean"))
    out["asr_std"] = out["asr_std"].fillna(0.0)
    return out.reset_index()


def asr_at_iteration(attacks: pd.DataFrame, iteration: int | str = "last") -> pd.DataFrame:
    """Per-run ASR at one iteration (``"last"`` = each run's final logged iteration)."""
    if iteration == "last":
        last = attacks.groupby("run_id")["iteration"].transform("max")
        return attacks[attacks["iteration"] == last].copy()
    return attacks[attacks["iteration"] == int(iteration)].copy()


def round_stage(attacks: pd.DataFrame) -> pd.Series:
    """"first"/"last"/"middle" of each row's round within its (group, size, seed) history."""
    keys = GROUP_KEYS + ["model_size", "seed"]
    g = attacks.groupby(keys, dropna=False, observed=True)["round"]
    first, last = g.transform("min"), g.transform("max")
    return pd.Series(np.where(attacks["round"] == first, "first",
                              np.where(attacks["round"] == last, "last", "middle")),
                     index=attacks.index)


def first_round(attacks: pd.DataFrame) -> pd.DataFrame:
    """Rows of each (group, size)'s first round: the models before adversarial training.

    The first round is the smallest one any seed of the (group, model size) logged, so a seed
    whose history starts later contributes no rows. Rows with a missing grouping key are left
    out (they belong to no group).
    """
    first = attacks.groupby(GROUP_KEYS + ["model_size"])["round"].transform("min")
    return attacks[attacks["round"] == first]


def adversarially_trained(attacks: pd.DataFrame) -> pd.DataFrame:
    """Rows of models that went through adversarial training.

    A (group, size, seed) history qualifies when it logged more than one round, or when its
    defense names adversarial training (``adv…``) even with a single round evaluated.
    """
    n_rounds = attacks.groupby(GROUP_KEYS + ["model_size", "seed"])["round"].transform("nunique")
    return attacks[(n_rounds > 1) | attacks["defense"].str.startswith("adv")]


def round_summary(per_run: pd.DataFrame, value_cols: list[str]) -> pd.DataFrame:
    """Mean over seeds of per-run values per (group, size, round), with the seed count."""
    keys = GROUP_KEYS + ["model_size", "round"]
    g = per_run.groupby(keys, dropna=False, observed=True)
    out = g[value_cols].mean()
    out["n_seeds"] = g["seed"].nunique()
    return out.reset_index()


def id_summary(values: pd.Series, n: int = 4) -> str:
    """A few distinct ids (run ids, files) for a tooltip, with a count of the rest."""
    u = sorted(set(values) - {""})
    return ", ".join(u[:n]) + (f" (+{len(u) - n})" if len(u) > n else "")
