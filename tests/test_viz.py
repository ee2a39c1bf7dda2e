"""Altair chart builders, the explorer (chart, standalone page, widget) and the row guard."""

from __future__ import annotations

import json

import altair as alt
import numpy as np
import pandas as pd
import pytest

from analysis_fixtures import SIZES, write_synthetic_results
from robnb.analysis.curves import asr_at_iteration, round_summary
from robnb.analysis.fits import attack_scaling, fit_lines, scaling_points
from robnb.analysis.load import load_results
from robnb.analysis.offense_defense import (attach_defense_compute, offense_defense_points,
                                            offense_defense_slopes, parity_lines)
from robnb.analysis.target_compute import target_compute
from robnb.viz import scaling
from robnb.viz.explorer import (PANEL_TITLES, Explorer, explorer_chart, explorer_data,
                                export_explorer_html, thin_iterations)


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    return load_results([write_synthetic_results(tmp_path_factory.mktemp("own"))])


def _marks(spec: dict) -> list[str]:
    out = []
    if isinstance(spec, dict):
        if "mark" in spec:
            m = spec["mark"]
            out.append(m["type"] if isinstance(m, dict) else m)
        for v in spec.values():
            out += _marks(v)
    elif isinstance(spec, list):
        for v in spec:
            out += _marks(v)
    return out


def test_size_labels_follow_the_paper():
    assert scaling.size_label(7_629_056) == "7.6M"
    assert scaling.size_label(1_311_629_312) == "1.3B"
    assert scaling.size_label(11_586_560_000) == "11.6B"
    assert scaling.size_order(pd.DataFrame({"model_size": [4e6, 1e6, 4e6]})) == ["1.0M", "4.0M"]


def test_figure_builders_produce_valid_specs(tables):
    a = tables["attacks"]
    first = a[a["round"] == 0]
    pts = scaling_points(first)
    per_size, trend = attack_scaling(first, n_boot=20)
    charts = [
        scaling.asr_vs_size(asr_at_iteration(first, 3), "ASR"),
        scaling.asr_vs_compute(pts, fit_lines(per_size, pts), "compute"),
        scaling.slopes_vs_size(per_size, trend["fit"].iloc[0].predict(np.array([1e6, 1e8])), "s"),
    ]
    last = asr_at_iteration(a, "last")
    per_round = round_summary(attach_defense_compute(last, tables["training"]),
                              ["asr", "defense_flops_fraction_pretrain"])
    charts += [scaling.adversarial_training_asr(per_round, "round", "r"),
               scaling.adversarial_training_asr(per_round[per_round["round"] > 0],
                                                "defense_flops_fraction_pretrain", "d"),
               scaling.transfer(per_round.assign(setting="x"), "setting", "t")]
    j = attach_defense_compute(target_compute(a, 0.05), tables["training"])
    pts_od = offense_defense_points(j)
    charts += [scaling.offense_defense(pts_od, parity_lines(pts_od), "od"),
               scaling.offense_defense_slopes(offense_defense_slopes(j, n_boot=20), "sl")]
    for c in charts:
        spec = c.to_dict()  # validates against the Vega-Lite schema
        assert _marks(spec)
    spec = charts[2].to_dict()
    data = [d for d in spec["datasets"].values() if d and "kind" in d[0]][0]
    assert {r["kind"] for r in data} == {"fit", "extrapolation"}


def test_explorer_chart_has_bound_selectors_linked_sizes_and_provenance(tables):
    data = explorer_data(tables, targets=(5.0, 10.0), n_boot=20)
    spec = explorer_chart(data).to_dict()
    params = {p["name"]: p for p in spec["params"]}
    for name in ("p_source", "p_task", "p_attack", "p_placement", "p_defense", "p_target",
                 "p_stage", "size_sel"):
        assert name in params, name
    assert params["p_target"]["bind"]["options"] == [5.0, 10.0]
    assert params["size_sel"]["bind"] == "legend"
    text = json.dumps(spec)
    assert text.count('"param": "size_sel"') >= 4  # every panel fades with the selection
    assert all(t in text for t in PANEL_TITLES)
    assert "synthetic-" in text  # run ids in tooltips
    unbound = explorer_chart(data, bind=False).to_dict()
    assert all("bind" not in p or p["name"] == "size_sel" for p in unbound["params"])


def test_thinning_keeps_ends_and_a_log_grid():
    c = pd.DataFrame({"source": "s", "family": "f", "task": "t", "attack": "a", "placement": "p",
                      "defense": "d", "model_size": 1, "round": 0, "stage": "first",
                      "iteration": np.arange(129)})
    kept = thin_iterations(c, max_points=10)["iteration"].tolist()
    assert kept[0] == 0 and kept[-1] == 128 and len(kept) <= 12
    assert {1, 2} & set(kept) and np.all(np.diff(kept) > 0)


def test_row_guard_is_explicit(tmp_path):
    big = pd.DataFrame({"x": np.arange(6000), "y": np.arange(6000)})
    chart = alt.Chart(big).mark_point().encode(x="x", y="y")
    with pytest.raises(alt.MaxRowsError):
        chart.to_dict()  # Altair's default guard is still on
    m = scaling.materialize(chart)
    assert len(next(iter(m.to_dict()["datasets"].values()))) == 6000
    with pytest.raises(alt.MaxRowsError):
        scaling.materialize(chart, max_rows=1000)
    with pytest.raises(alt.MaxRowsError):
        export_explorer_html(chart, tmp_path / "x.html", max_rows=1000)


def test_standalone_page_is_offline(tables, tmp_path):
    page = export_explorer_html(explorer_chart(explorer_data(tables, targets=(5.0,), n_boot=10)),
                                tmp_path / "sub" / "explorer.html")
    html = page.read_text()
    assert "vegaEmbed" in html and 'src="https://' not in html
    assert '"renderer": "svg"' in html


def test_widget_recomputes_for_target_and_sizes(tables):
    ex = Explorer({"own": tables}, target=5.0, n_boot=10)
    first = json.dumps(ex.chart.to_dict())
    ex.target.value = 40.0
    assert json.dumps(ex.chart.to_dict()) != first
    assert '"target_asr": 40.0' in json.dumps(ex.chart.to_dict())
    ex.sizes.value = (SIZES[0],)
    spec = json.dumps(ex.chart.to_dict())
    assert '"model_size": 1000000' in spec and '"model_size": 4000000' not in spec
    ex.sizes.value = ()
    assert ex.chart is None  # nothing selected: a message instead of an empty chart
