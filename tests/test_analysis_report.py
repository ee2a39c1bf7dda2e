"""The notebook-04/05 layer: row selections, report tables, panel splits, CSV output, explorer
helpers. Small hand-made tables give exact expectations; the synthetic suite results and the
paper's data check the functions end to end."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import pytest

from analysis_fixtures import (SIZES, TOKENS_D, defense_flops, needs_paper_data,  # noqa: F401
                               paper_tables, synthetic_asr, write_synthetic_results)
from robnb.analysis import report
from robnb.analysis.curves import adversarially_trained, first_round
from robnb.analysis.fits import attack_scaling, fit_lines, scaling_points
from robnb.analysis.load import load_results
from robnb.viz import scaling as charts
from robnb.viz.explorer import (SELECTORS, Explorer, ExplorerData, default_selection,
                                default_target, selection_for_source, split_by_source)

KEYS = {"source": "own", "family": "f", "task": "t", "attack": "gcg", "placement": "suffix",
        "defense": "unspecified"}


def _rows(*records: dict) -> pd.DataFrame:
    """Attack-like rows: every record gets the default grouping keys it does not set."""
    return pd.DataFrame([{**KEYS, **r} for r in records])


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    return load_results([write_synthetic_results(tmp_path_factory.mktemp("own"))])


# ---- row selections ---------------------------------------------------------------------------

def test_select_source_filters_keeps_all_and_refuses_nothing():
    a = _rows({"source": "own", "run_id": "a"}, {"source": "paper", "run_id": "b"},
              {"source": "paper", "run_id": "c"})
    assert report.select_source(a, "paper")["run_id"].tolist() == ["b", "c"]
    assert report.select_source(a, "all") is a
    with pytest.raises(ValueError, match=r"source='nope' in \['x.csv'\]"):
        report.select_source(a, "nope", ["x.csv"])
    with pytest.raises(ValueError, match=r"source='nope'$"):
        report.select_source(a, "nope")


def test_describe_attacks_counts_rows_runs_and_tasks():
    a = _rows({"run_id": "r1", "task": "spam"}, {"run_id": "r1", "task": "spam"},
              {"run_id": "r2", "task": "imdb"})
    assert report.describe_attacks(a) == "3 attack rows, 2 runs; tasks: ['imdb', 'spam']"


def test_first_round_is_per_group_and_size_not_per_seed():
    a = _rows({"model_size": 1, "seed": 0, "round": 0}, {"model_size": 1, "seed": 0, "round": 1},
              {"model_size": 1, "seed": 1, "round": 1}, {"model_size": 1, "seed": 1, "round": 2},
              {"model_size": 2, "seed": 0, "round": 2},
              {"model_size": 1, "seed": 0, "round": 3, "defense": "adv_gcg"})
    got = first_round(a)
    assert list(zip(got["model_size"], got["seed"], got["round"], got["defense"])) == [
        (1, 0, 0, "unspecified"), (2, 0, 2, "unspecified"), (1, 0, 3, "adv_gcg")]


def test_adversarially_trained_needs_several_rounds_or_an_adv_defense():
    a = _rows({"run_id": "ft", "defense": "finetuned", "model_size": 1, "seed": 0, "round": 0},
              {"run_id": "multi0", "model_size": 1, "seed": 0, "round": 0},
              {"run_id": "multi1", "model_size": 1, "seed": 0, "round": 1},
              {"run_id": "single_other_seed", "model_size": 1, "seed": 1, "round": 0},
              {"run_id": "adv", "defense": "adv_gcg", "model_size": 1, "seed": 0, "round": 3})
    assert adversarially_trained(a)["run_id"].tolist() == ["multi0", "multi1", "adv"]


def test_undefended_at_iteration_prefers_gcg_and_drops_trained_models():
    a = _rows(*[{"run_id": f"{atk}-{d}", "attack": atk, "defense": d, "iteration": it,
                 "asr": it / 10}
                for atk in ("gcg", "random_token") for d in ("finetuned", "adv_gcg")
                for it in (0, 2, 4)])
    got = report.undefended_at_iteration(a, 2)
    assert got["run_id"].tolist() == ["gcg-finetuned"] and got["asr"].tolist() == [0.2]
    no_gcg = report.undefended_at_iteration(a[a["attack"] != "gcg"], "last")
    assert no_gcg["run_id"].tolist() == ["random_token-finetuned"]
    assert no_gcg["iteration"].tolist() == [4]


def test_undefended_at_iteration_keeps_one_placement_per_task():
    a = _rows(*[{"run_id": f"{task}-{pl}", "task": task, "placement": pl, "iteration": 2,
                 "asr": 0.5, "seed": 0, "model_size": 1}
                for task, pls in (("a", ("prefix", "suffix", "infix90")), ("b", ("prefix",)),
                                  ("c", ("prefix", "infix90")))
                for pl in pls])
    got = report.undefended_at_iteration(a, 2)
    assert sorted(got["run_id"]) == ["a-suffix", "b-prefix", "c-infix90"]
    assert report.asr_by_size(got)["count"].tolist() == [1, 1, 1]  # one seed, not two


# ---- ASR against size, and its trend ----------------------------------------------------------

def test_asr_by_size_summary_and_pivot_by_hand():
    per_run = _rows({"task": "a", "model_size": 1, "asr": 0.2}, {"task": "a", "model_size": 1,
                                                                  "asr": 0.4},
                    {"task": "a", "model_size": 2, "asr": 0.1},
                    {"task": "b", "model_size": 1, "asr": 0.12345})
    s = report.asr_by_size(per_run)
    assert s.columns.tolist() == ["family", "task", "model_size", "mean", "std", "count"]
    row = s[(s["task"] == "a") & (s["model_size"] == 1)].iloc[0]
    assert (row["mean"], row["std"], row["count"]) == pytest.approx((0.3, np.sqrt(0.02), 2))
    pivot = report.asr_by_size_pivot(s)
    assert pivot.loc[("f", 1), "a"] == pytest.approx(0.3)
    assert pivot.loc[("f", 1), "b"] == 0.123  # rounded to 3 decimals
    assert np.isnan(pivot.loc[("f", 2), "b"])


def _per_run_on_a_line(a: float, b: float, sizes=(1e6, 1e7, 1e8), n: int = 98) -> pd.DataFrame:
    """Two identical seeds per size whose smoothed logit ASR is a + b·log10(size)."""
    rows = []
    for size in sizes:
        p = 1 / (1 + np.exp(-(a + b * np.log10(size))))
        for seed in (0, 1):
            rows.append({"model_size": size, "seed": seed, "asr": (p * (n + 2) - 1) / n,
                         "n_examples": n, "n_correct_before": n if seed == 0 else np.nan})
    return _rows(*rows)


def test_logit_asr_size_trend_recovers_the_line_and_marks_extrapolation():
    per_run = pd.concat([_per_run_on_a_line(2.0, -0.5),
                         _per_run_on_a_line(1.0, 0.25).assign(task="u")], ignore_index=True)
    trend = report.logit_asr_size_trend(per_run, [1e10], n_boot=50)
    assert trend.columns.tolist() == report.TREND_COLUMNS
    t = trend[trend["task"] == "t"]
    assert t["model_size"].tolist() == [1e6, 1e7, 1e8, 1e10]
    assert t["extrapolated"].tolist() == [False, False, False, True]
    assert t["predicted"].to_numpy() == pytest.approx(2.0 - 0.5 * np.array([6, 7, 8, 10]))
    # identical seeds (n from n_correct_before or n_examples alike): a degenerate interval
    assert t["trend_slope"].to_numpy() == pytest.approx(-0.5)
    assert t["trend_slope_low"].to_numpy() == pytest.approx(-0.5)
    assert t["trend_slope_high"].to_numpy() == pytest.approx(-0.5)
    assert trend.loc[trend["task"] == "u", "trend_slope"].iloc[0] == pytest.approx(0.25)
    shown = report.extrapolated_trend(trend)
    assert isinstance(shown, pd.DataFrame) and shown["model_size"].tolist() == [1e10, 1e10]


def test_logit_asr_size_trend_needs_two_sizes():
    trend = report.logit_asr_size_trend(_per_run_on_a_line(2.0, -0.5, sizes=(1e6,)), [1e10],
                                        n_boot=10)
    assert trend.empty and trend.columns.tolist() == report.TREND_COLUMNS
    assert report.extrapolated_trend(trend) == report.NO_TREND


# ---- attack scaling: fits and panels ----------------------------------------------------------

def _attacks_on_lines(slopes: dict[int, float], defense: str, task: str = "t",
                      n: int = 198) -> pd.DataFrame:
    """Attacks whose smoothed logit ASR is -1 + slope·log10(compute share), two equal seeds."""
    rows = []
    for size, b in slopes.items():
        for seed in (0, 1):
            for it in range(1, 9):
                share = it * size / n / (size * 1e3)
                p = 1 / (1 + np.exp(-(-1.0 + b * np.log10(share))))
                rows.append({"run_id": f"{defense}-{size}-{seed}", "task": task,
                             "defense": defense, "model_size": size, "seed": seed, "round": 0,
                             "iteration": it, "asr": (p * (n + 2) - 1) / n,
                             "attack_flops": float(size), "n_examples": n,
                             "n_correct_before": n, "pretrain_flops": size * 1e3,
                             "checkpoint": pd.NA, "data_issue": ""})
    return _rows(*rows)


@pytest.fixture(scope="module")
def two_defenses() -> pd.DataFrame:
    # slope b(N) = 0.5 + 0.25·log10(N / 1e6) for the adversarially trained defense
    return pd.concat([_attacks_on_lines({10**6: 0.5, 10**7: 0.75, 10**8: 1.0}, "adv_gcg"),
                      _attacks_on_lines({10**6: 0.5, 10**7: 0.5}, "finetuned")],
                     ignore_index=True)


def test_attack_scaling_fits_bundles_the_fits_module(two_defenses):
    fits = report.attack_scaling_fits(two_defenses, n_boot=20)
    per_size, trend = attack_scaling(two_defenses, n_boot=20)
    pd.testing.assert_frame_equal(fits.per_size, per_size)
    pd.testing.assert_frame_equal(fits.trend.drop(columns="fit"), trend.drop(columns="fit"))
    pd.testing.assert_frame_equal(fits.points, scaling_points(two_defenses))
    pd.testing.assert_frame_equal(fits.lines, fit_lines(per_size, fits.points))


def test_compute_panels_one_per_setting_finetuned_first():
    settings = [("t", "gcg", "suffix", "adv_gcg"), ("t", "gcg", "suffix", "finetuned"),
                ("t", "gcg", "prefix", "finetuned")]
    points = pd.DataFrame([dict(zip(report.SETTING, s), model_size=m) for s in settings
                           for m in (1, 2)])
    lines = pd.DataFrame([dict(zip(report.SETTING, s), model_size=m, logit_asr=i)
                          for i, s in enumerate(settings) for m in (1, 2)])
    panels = report.compute_panels(points, lines)
    assert [p.title for p in panels] == ["t, gcg, prefix, finetuned", "t, gcg, suffix, finetuned",
                                         "t, gcg, suffix, adv_gcg"]
    for p in panels:
        setting = tuple(p.title.split(", "))
        assert {tuple(r) for r in p.points[report.SETTING].to_numpy()} == {setting}
        assert p.lines["logit_asr"].tolist() == [settings.index(setting)] * 2
    assert report.compute_panels(points.iloc[:0], lines) == []


def test_slope_panels_match_trends_and_extrapolate(two_defenses):
    fits = report.attack_scaling_fits(two_defenses, n_boot=20)
    panels = report.slope_panels(fits.per_size, fits.trend, [1e10])
    assert [p.per_size["defense"].unique().tolist() for p in panels] == [["finetuned"],
                                                                          ["adv_gcg"]]
    ft, adv = panels
    assert ft.prediction["model_size"].tolist() == [1e6, 1e7, 1e10]
    assert adv.prediction["extrapolated"].tolist() == [False, False, False, True]
    assert adv.prediction["predicted"].to_numpy() == pytest.approx([0.5, 0.75, 1.0, 1.5])
    assert adv.title == "t, gcg: slope 0.250 per decade"
    assert ft.title == "t, gcg: slope 0.000 per decade"
    # no trend at all (attack_scaling gives a table without columns): no panels, a note
    assert report.slope_panels(fits.per_size, pd.DataFrame([]), [1e10]) == []
    assert report.trend_fits_text(pd.DataFrame([])) == report.NO_TREND


def test_trend_fits_text_drops_fit_objects_and_rounds(two_defenses):
    fits = report.attack_scaling_fits(two_defenses, n_boot=20)
    text = report.trend_fits_text(fits.trend)
    header = text.splitlines()[0].split()
    assert "fit" not in header and "trend_slope" in header and "TrendFit" not in text
    assert "0.25 " in text and "-1.0" in text  # slope and intercept 0.5 - 0.25·6, at 4 decimals


# ---- adversarial training and transfer --------------------------------------------------------

def test_adversarial_training_summary_on_suite_results(tables):
    per_round = report.adversarial_training_summary(tables["attacks"], tables["training"])
    assert len(per_round) == len(SIZES) * 4 and (per_round["n_seeds"] == 2).all()
    for size in SIZES:
        for rnd in (0, 2):
            row = per_round[(per_round["model_size"] == size) & (per_round["round"] == rnd)]
            seeds = [synthetic_asr(size, s, rnd, 8) for s in (0, 1)]  # last iteration: 8
            assert row["asr"].iloc[0] == pytest.approx(np.mean(seeds))
            assert row["defense_flops_fraction_pretrain"].iloc[0] == pytest.approx(
                defense_flops(size, rnd) / (6.0 * size * TOKENS_D))
    none = report.adversarial_training_summary(tables["attacks"], tables["training"].iloc[:0])
    assert none["defense_flops_fraction_pretrain"].isna().all()
    pd.testing.assert_series_equal(none["asr"], per_round["asr"])


def test_adversarial_training_panels_split_by_task_and_defense():
    per_round = _rows(
        *[{"task": "t", "defense": "adv_gcg", "round": r, "asr": 0.5,
           "defense_flops_fraction_pretrain": 1e-3 * r, "model_size": 1} for r in range(3)],
        {"task": "t", "defense": "adv_gcg", "placement": "prefix", "round": 0, "asr": 0.1,
         "defense_flops_fraction_pretrain": 1.0, "model_size": 1},
        {"task": "u", "defense": "adv_rt", "round": 1, "asr": 0.2,
         "defense_flops_fraction_pretrain": np.nan, "model_size": 1})
    panels = report.adversarial_training_panels(per_round)
    assert [(p.x, p.title) for p in panels] == [
        ("round", "t, adv_gcg: ASR at the last iteration"),
        ("defense_flops_fraction_pretrain", "t, adv_gcg: ASR vs defense compute"),
        ("round", "u, adv_rt: ASR at the last iteration")]
    assert panels[0].per_round["round"].tolist() == [0, 1, 2]  # suffix only
    assert panels[1].per_round["round"].tolist() == [1, 2]  # positive defense compute only


def test_transfer_panels_only_for_tasks_with_several_settings():
    per_round = _rows({"task": "t", "defense": "adv_gcg", "round": 0},
                      {"task": "t", "defense": "adv_gcg", "placement": "prefix", "round": 0},
                      {"task": "u", "defense": "adv_gcg", "round": 0})
    panels = report.transfer_panels(per_round)
    assert [(p.facet, p.title) for p in panels] == [("setting", "t: transfer across settings")]
    assert panels[0].per_round["setting"].tolist() == ["adv_gcg → gcg suffix",
                                                       "adv_gcg → gcg prefix"]
    assert "setting" not in per_round.columns  # the input is left alone


def test_panels_feed_the_chart_builders(tables):
    attacks = tables["attacks"]
    fits = report.attack_scaling_fits(first_round(attacks), n_boot=10)
    per_round = report.adversarial_training_summary(attacks, tables["training"])
    built = ([charts.asr_vs_compute(*p) for p in report.compute_panels(fits.points, fits.lines)]
             + [charts.slopes_vs_size(*p) for p in report.slope_panels(fits.per_size,
                                                                       fits.trend, [1e9])]
             + [charts.adversarial_training_asr(*p)
                for p in report.adversarial_training_panels(per_round)])
    assert len(built) == 1 + 1 + 2
    for c in built:
        assert c.to_dict()["$schema"].startswith("https://vega.github.io/schema/vega-lite/")


def test_write_csv_creates_folders_and_omits_the_index(tmp_path):
    df = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}, index=[5, 6])
    path = report.write_csv(df, tmp_path / "new" / "dir", "t.csv")
    assert path == tmp_path / "new" / "dir" / "t.csv"
    assert path.read_text() == "a,b\n1,x\n2,y\n"
    no_runs = _per_run_on_a_line(2.0, -0.5).iloc[:0]
    empty = report.write_csv(report.logit_asr_size_trend(no_runs), tmp_path, "e.csv")
    assert empty.read_text().strip() == ",".join(report.TREND_COLUMNS)


def test_grid_or_note_limits_charts_and_falls_back_to_a_note():
    c = alt.Chart(pd.DataFrame({"x": [1]})).mark_point().encode(x="x:Q")
    assert charts.grid_or_note([], "nothing") == "nothing"
    g = charts.grid_or_note([c, c, c], "nothing", max_charts=2).to_dict()
    assert len(g["vconcat"]) == 1 and len(g["vconcat"][0]["hconcat"]) == 2
    assert len(charts.grid_or_note([c, c, c], "x", columns=1).to_dict()["vconcat"]) == 3


# ---- explorer helpers -------------------------------------------------------------------------

def _explorer_data() -> ExplorerData:
    def setting(source, defense, n_seeds, n_rows):
        return [{**KEYS, "source": source, "defense": defense, "n_seeds": n_seeds,
                 "round": r} for r in range(n_rows)]
    od = pd.DataFrame(setting("paper", "adv_a", 1, 3) + setting("paper", "adv_b", 10, 1)
                      + setting("own", "adv_c", 1, 2))
    curves = pd.DataFrame([{**KEYS, "source": s} for s in ("paper", "own", "extra")])
    empty = pd.DataFrame()
    return ExplorerData(curves, empty, od, empty, empty)


def test_selection_for_source_picks_its_most_populated_setting():
    data = _explorer_data()
    assert selection_for_source(data, "paper")["defense"] == "adv_a"  # most rows, not seeds
    assert default_selection(data)["defense"] == "adv_b"  # most seeds over all sources
    own = selection_for_source(data, "own")
    assert own == {"source": "own", "task": "t", "attack": "gcg", "placement": "suffix",
                   "defense": "adv_c"} and list(own) == list(SELECTORS)
    # a source with curves but no offense/defense points, or not loaded: the default
    assert selection_for_source(data, "extra") == default_selection(data)
    assert selection_for_source(data, "nope") == default_selection(data)


def test_default_target_prefers_five_percent():
    assert default_target([2.0, 5.0, 10.0]) == 5.0
    assert default_target((20.0, 40.0)) == 20.0


def test_split_by_source_restricts_every_table(tables):
    mixed = {"attacks": pd.concat([tables["attacks"],
                                   tables["attacks"].assign(source="paper")]),
             "training": tables["training"]}
    by = split_by_source(mixed)
    assert list(by) == ["own", "paper"]
    assert len(by["paper"]["attacks"]) == len(by["own"]["attacks"]) == len(tables["attacks"])
    assert by["paper"]["training"].empty and len(by["own"]["training"]) == len(tables["training"])


def test_explorer_for_tables_shows_the_requested_source(tables):
    mixed = {t: pd.concat([tables[t], tables[t].assign(source="paper")])
             for t in ("attacks", "training")}
    ex = Explorer.for_tables(mixed, target=20.0, n_boot=5, source="paper")
    assert ex.source.value == "paper" and ex.target.value == 20.0 and ex.chart is not None
    assert Explorer.for_tables(tables, n_boot=5, source="nope").source.value == "own"


# ---- the paper's data ---------------------------------------------------------------------------

@needs_paper_data
def test_paper_imdb_asr_falls_with_size(paper_tables):
    attacks = report.select_source(paper_tables["attacks"], "paper")
    per_run = report.undefended_at_iteration(first_round(attacks), 10)
    imdb = per_run[(per_run["family"] == "pythia") & (per_run["task"] == "imdb")]
    s = report.asr_by_size(imdb).sort_values("model_size")
    assert s["mean"].iloc[0] > 0.9 and s["mean"].iloc[-1] < 0.5  # 7.6M near 1, 11.6B far below
    trend = report.logit_asr_size_trend(imdb, [7e10], n_boot=50)
    assert trend["trend_slope"].iloc[0] < 0 and trend["trend_slope_high"].iloc[0] < 0
    assert trend["extrapolated"].sum() == 1
