"""The whole study, end to end: all six notebooks with papermill on the smoke profile."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from helpers import config, paths, teacher_stage, traces

pytestmark = pytest.mark.notebooks

NOTEBOOKS = ["01_data", "02_decompose", "03_traces", "04_sft", "05_eval", "06_correlation"]
REPO = Path(__file__).resolve().parents[1]
# what make sets or removes for its recipes that is make's own bookkeeping, not the kernels' concern
MAKE_OWN = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKE_TERMOUT", "MAKE_TERMERR", "MAKEOVERRIDES"}


def make_recipe_env(base: dict) -> dict:
    """The environment `make` gives its recipes (and so its papermill kernels), started from ``base``."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed: the notebooks cannot run the way make runs them")
    dump = f"{sys.executable} -c 'import json, os; print(json.dumps(dict(os.environ)))'"
    out = subprocess.run(["make", "-s", "--no-print-directory", "-C", str(REPO),
                          "--eval", f"_recipe_env: ; @{dump}", "_recipe_env"],
                         env=base, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def as_make_runs_them(monkeypatch) -> dict:
    """Give this process the environment make's recipes get, so the kernels papermill starts here
    inherit what `make reproduce` gives them (conftest's MPLBACKEND=Agg included: make must drop it)."""
    base = dict(os.environ)
    env = make_recipe_env(base)
    changed = {}
    for k in (set(base) | set(env)) - MAKE_OWN:
        if base.get(k) != env.get(k):
            changed[k] = env.get(k)
            if env.get(k) is None:
                monkeypatch.delenv(k)
            else:
                monkeypatch.setenv(k, env[k])
    return changed


def image_cells(nb) -> list[int]:
    """Indices of the code cells that hold a PNG image among their outputs."""
    return [i for i, c in enumerate(nb.cells) if c.cell_type == "code"
            and any("image/png" in o.get("data", {}) for o in c.get("outputs", []))]


# the notebooks that draw on the smoke profile and how many of their cells draw at least: the
# inline matplotlib plots of 01-04 (categories and lengths, rule agreement, trace lengths, loss
# curves) and the saved figures 06 shows as images (05 draws nothing)
PLOTTING_CELLS = {"01_data": 1, "02_decompose": 1, "03_traces": 1, "04_sft": 1, "06_correlation": 6}


def test_six_notebooks_run_on_the_smoke_profile(tmp_path, monkeypatch, caplog):
    papermill = pytest.importorskip("papermill")
    caplog.set_level("WARNING", logger="papermill")
    make_env = as_make_runs_them(monkeypatch)
    params = config.load_profile("smoke")
    # from nothing: the previous smoke run's artifacts must not be what the checks see
    for d in (paths.data_dir("smoke"), paths.RUNS / "smoke", paths.results_dir("smoke"),
              paths.figures_dir("smoke")):
        shutil.rmtree(d, ignore_errors=True)
    for name in NOTEBOOKS:
        papermill.execute_notebook(str(paths.NOTEBOOKS / f"{name}.ipynb"), str(tmp_path / f"{name}.ipynb"),
                                   parameters=config.notebook_params(name, "smoke"), kernel_name="python3",
                                   cwd=str(paths.NOTEBOOKS), progress_bar=False)
    # each notebook got exactly the keys of its parameters cell (what make passes it)
    unknown = [r.getMessage() for r in caplog.records if "unknown parameter" in r.getMessage()]
    assert not unknown, unknown
    for ds in params["datasets"]:
        for split in ("train", "test"):
            df = pd.read_parquet(paths.data_dir("smoke", ds) / f"{split}.parquet")
            assert len(df) > 0
        for cond in params["conditions"]:
            for model in params["models"]:
                run = paths.run_dir("smoke", ds, model, cond, params["seeds"][0])
                assert (run / "config.json").exists(), run
                assert (run / "predictions.jsonl").exists(), run
    items = pd.read_parquet(paths.results_dir("smoke") / "items.parquet")
    n_test = sum(len(pd.read_parquet(paths.data_dir("smoke", ds) / "test.parquet")) for ds in params["datasets"])
    runs = len(params["conditions"]) + int(params["eval_untrained"])
    # the teacher family (smoke: the synthetic stand-in teacher, one condition) answers the
    # teacher set's test split
    tconds = params["teacher_conditions"]
    assert params["teacher"] and tconds == ["teacher"]
    n_tteach = 0
    for ds in params["datasets"]:
        ttest = pd.read_parquet(traces.teacher_test_path("smoke", ds))
        assert len(ttest) > 0
        n_tteach += len(ttest)
        stamp = config.read_json(teacher_stage.teacher_dir("smoke", ds) / "stamp.json")
        assert stamp["summary"]["synthetic"] and stamp["config"]["teacher"] == params["teacher"]
        for model in params["models"]:
            run = paths.run_dir("smoke", ds, model, "teacher", params["seeds"][0])
            assert (run / "config.json").exists() and (run / "predictions.jsonl").exists(), run
            preds = pd.read_json(run / "predictions.jsonl", lines=True)
            assert set(preds["id"]) == set(ttest["id"])  # evaluated on ITS test file
        got = items[(items["dataset"] == ds) & (items["condition"] == "teacher")]
        assert set(got["id"]) == set(ttest["id"]) and (got["test_set"] == "teacher").all()
        assert not got["trace_scored"].any() and got["has_trace_target"].all()
    assert (items.loc[items["condition"] != "teacher", "test_set"] == "full").all()
    assert len(items) == (n_test * runs + n_tteach * len(tconds)) * len(params["models"]) * len(params["seeds"])
    acc = pd.read_csv(paths.results_dir("smoke") / "accuracy.csv")
    assert "teacher" in set(acc["condition"])
    out06 = (tmp_path / "06_correlation.ipynb").read_text()
    assert "SYNTHETIC" in out06 and "original EM %" in out06
    figs = sorted(p.name for p in paths.figures_dir("smoke").glob("*.png"))
    assert len(figs) >= 5, figs
    assert all(p.stat().st_size > 0 for p in paths.figures_dir("smoke").glob("*.pdf"))
    # executed notebooks carry their plots (an MPLBACKEND=Agg handed to the kernels drops every
    # inline one)
    drawn = {n: image_cells(nbformat.read(tmp_path / f"{n}.ipynb", as_version=4)) for n in NOTEBOOKS}
    short = {n: cells for n, cells in drawn.items() if len(cells) < PLOTTING_CELLS.get(n, 0)}
    assert not short, f"cells with a PNG per notebook: {drawn}; make changed the kernels' env by {make_env}"
