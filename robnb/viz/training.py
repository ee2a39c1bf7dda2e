"""Charts of the pretraining and fine-tuning stages."""

from __future__ import annotations

import altair as alt
import pandas as pd


def loss_curve_chart(curve: pd.DataFrame) -> alt.Chart:
    long = curve.melt(id_vars=["model", "tokens"], value_vars=["train_loss", "val_loss"],
                      var_name="kind", value_name="loss")
    return alt.Chart(long).mark_line(point=True).encode(
        x=alt.X("tokens:Q", title="tokens seen"), y=alt.Y("loss:Q", scale=alt.Scale(zero=False)),
        color="kind:N", detail="model:N", tooltip=["model", "tokens", "kind", "loss"],
    ).properties(title="Pretraining loss", width=420, height=240)


def accuracy_chart(scores: pd.DataFrame) -> alt.Chart:
    base = alt.Chart(scores).encode(x=alt.X("task:N"), tooltip=["task", "seed", "accuracy", "f1",
                                                               "majority_baseline"])
    bars = base.mark_bar(opacity=0.7).encode(y=alt.Y("mean(accuracy):Q", title="validation accuracy",
                                                     scale=alt.Scale(domain=[0, 1])))
    ticks = base.mark_tick(color="black", thickness=2).encode(y="mean(majority_baseline):Q")
    return (bars + ticks).properties(title="Validation accuracy (tick: majority class)",
                                     width=320, height=220)
