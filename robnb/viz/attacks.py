"""Charts of the attack stage."""

from __future__ import annotations

import altair as alt
import pandas as pd


def asr_curve_chart(records: pd.DataFrame) -> alt.Chart:
    """ASR per iteration, one line per attack/placement, one panel per task."""
    data = records.assign(setting=records["attack"] + " / " + records["placement"])
    data = data.groupby(["task", "setting", "iteration"], as_index=False)["asr"].mean()
    return alt.Chart(data).mark_line(point=True).encode(
        x=alt.X("iteration:Q"), y=alt.Y("asr:Q", title="attack success rate",
                                         scale=alt.Scale(domain=[0, 1])),
        color="setting:N", tooltip=["task", "setting", "iteration", "asr"],
    ).properties(width=220, height=160).facet(facet="task:N", columns=4)
