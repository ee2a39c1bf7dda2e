"""Notebooks 04 and 05 run under papermill on the suite's own results and on the paper's data."""

from __future__ import annotations

import json

import nbformat
import papermill as pm
import pytest

from analysis_fixtures import PAPER, REPO, needs_paper_data, write_synthetic_results

NOTEBOOKS = {"04": REPO / "notebooks" / "04_scaling_analysis.ipynb",
             "05": REPO / "notebooks" / "05_offense_defense_explorer.ipynb"}
PAPER_SUBSET = [("evaluation", "ian_106_gcg_pythia_imdb.csv"),
                ("evaluation", "tom_013_eval_niki_171_gcg.csv"),
                ("training", "niki_171_adv_tr_gcg_pm_small.csv")]


@pytest.mark.parametrize("key", sorted(NOTEBOOKS))
def test_stored_thin_and_without_outputs(key):
    nb = nbformat.read(NOTEBOOKS[key], as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    assert "parameters" in code[0].metadata.get("tags", [])
    assert len(code) <= 10 and all(len(c.source.splitlines()) <= 25 for c in code)


def _run(key: str, tmp_path, results: list[str], **params) -> nbformat.NotebookNode:
    out_dir = tmp_path / f"out{key}"
    nb = pm.execute_notebook(str(NOTEBOOKS[key]), str(tmp_path / f"{key}.ipynb"),
                             parameters={"results": results, "out_dir": str(out_dir),
                                         "n_boot": 30, **params},
                             cwd=str(REPO), progress_bar=False, kernel_name="python3",
                             execution_timeout=600)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
    return nb


def _text(nb: nbformat.NotebookNode) -> str:
    return json.dumps([o for c in nb.cells if c.cell_type == "code" for o in c.outputs])


@pytest.fixture(scope="module")
def own_root(tmp_path_factory):
    return write_synthetic_results(tmp_path_factory.mktemp("own"))


def test_04_on_own_results(own_root, tmp_path):
    nb = _run("04", tmp_path, [str(own_root)], source="own", iteration=4)
    assert (tmp_path / "out04" / "attack_scaling_slopes.csv").exists()
    assert "application/vnd.vegalite" in _text(nb) or "text/html" in _text(nb)


def test_05_on_own_results(own_root, tmp_path):
    nb = _run("05", tmp_path, [str(own_root)], source="own", targets=[5.0, 20.0])
    page = tmp_path / "out05" / "explorer.html"
    assert page.exists() and "vegaEmbed" in page.read_text()
    assert "application/vnd.jupyter.widget-view+json" in _text(nb)


@needs_paper_data
def test_04_and_05_on_paper_data(tmp_path):
    files = [str(PAPER / sub / name) for sub, name in PAPER_SUBSET]
    nb4 = _run("04", tmp_path, files, source="paper")
    text = _text(nb4)
    assert "PaperAccountingWarning" in text  # the 12B under-count of ian_106 is surfaced
    assert "pythia-12b" in text
    nb5 = _run("05", tmp_path, files, source="paper", targets=[5.0])
    assert "password_match" in _text(nb5)
    assert (tmp_path / "out05" / "explorer.html").stat().st_size > 100_000
