"""Charts of the adversarial-training stage: ASR after each evaluated round, against the round
and against the defense compute spent so far."""

from __future__ import annotations

import altair as alt
import pandas as pd


def final_asr_by_round(records: pd.DataFrame) -> pd.DataFrame:
    """ASR after each evaluation attack's last iteration, mean over seeds, with the setting
    (attack / placement, marked when it is a transfer evaluation) and the defense FLOPs."""
    if records.empty:
        return pd.DataFrame(columns=["model", "task", "round", "setting", "asr",
                                     "defense_flops_cumulative"])
    last = records[records["iteration"] == records.groupby("run_id")["iteration"].transform("max")]
    setting = last["attack"] + " / " + last["placement"]
    if "transfer" in last.columns:
        setting = setting + last["transfer"].astype(bool).map({True: " (transfer)", False: ""})
    return (last.assign(setting=setting)
            .groupby(["model", "task", "round", "setting"], as_index=False)
            .agg(asr=("asr", "mean"), defense_flops_cumulative=("defense_flops_cumulative",
                                                                  "mean")))


def asr_by_round_chart(records: pd.DataFrame) -> alt.Chart:
    """ASR vs adversarial-training round (0 = before), one line per evaluation attack."""
    data = final_asr_by_round(records)
    return alt.Chart(data).mark_line(point=True).encode(
        x=alt.X("round:Q", title="adversarial training round"),
        y=alt.Y("asr:Q", title="attack success rate", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("setting:N", title="evaluation attack"),
        detail="model:N",
        tooltip=["model", "task", "round", "setting", alt.Tooltip("asr:Q", format=".3f")],
    ).properties(width=220, height=160).facet(facet="task:N", columns=4)


def asr_vs_defense_flops_chart(records: pd.DataFrame) -> alt.Chart:
    """ASR vs cumulative defense FLOPs (generation + training), symlog x so round 0 shows."""
    data = final_asr_by_round(records)
    return alt.Chart(data).mark_line(point=True).encode(
        x=alt.X("defense_flops_cumulative:Q", title="defense FLOPs (cumulative)",
                scale=alt.Scale(type="symlog")),
        y=alt.Y("asr:Q", title="attack success rate", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("setting:N", title="evaluation attack"),
        detail="model:N",
        tooltip=["model", "task", "round", "setting", alt.Tooltip("asr:Q", format=".3f"),
                 alt.Tooltip("defense_flops_cumulative:Q", format=".3g")],
    ).properties(width=220, height=160).facet(facet="task:N", columns=4)
