"""The whole study, end to end: all six notebooks with papermill on the smoke profile."""
import shutil

import pandas as pd
import pytest

from helpers import config, paths, teacher_stage, traces

pytestmark = pytest.mark.notebooks

NOTEBOOKS = ["01_data", "02_decompose", "03_traces", "04_sft", "05_eval", "06_correlation"]


def test_six_notebooks_run_on_the_smoke_profile(tmp_path):
    papermill = pytest.importorskip("papermill")
    params = config.load_profile("smoke")
    # from nothing: the previous smoke run's artifacts must not be what the checks see
    for d in (paths.data_dir("smoke"), paths.RUNS / "smoke", paths.results_dir("smoke"),
              paths.figures_dir("smoke")):
        shutil.rmtree(d, ignore_errors=True)
    for name in NOTEBOOKS:
        papermill.execute_notebook(str(paths.NOTEBOOKS / f"{name}.ipynb"), str(tmp_path / f"{name}.ipynb"),
                                   parameters=params, kernel_name="python3", cwd=str(paths.NOTEBOOKS),
                                   progress_bar=False)
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
