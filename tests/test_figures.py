"""helpers.figures: every figure writes a non-empty PNG and PDF under its fixed name, copes
with thin data (one seed, one model, missing conditions, zero cells), and the CLI fails
clearly without items.parquet."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from helpers import figures, paths, stats  # noqa: E402

CATS = {"cotempqa": ["equal", "overlap", "during", "mix"],
        "marco": ["DESCRIPTION", "NUMERIC", "ENTITY", "LOCATION", "PERSON"],
        "babi": ["qa1 single-supporting-fact", "qa2 two-supporting-facts", "qa7 counting"]}


def make_items(models=("tiny", "smollm2-135m"), seeds=(0, 1),
               conditions=("untrained", "vanilla", "correct", "incorrect", "krsl", "shuffled"),
               n=15, rs=0) -> pd.DataFrame:
    """A seeded random items frame with every column of results/<profile>/items.parquet."""
    rng = np.random.default_rng(rs)
    rows = []
    for ds, cats in CATS.items():
        for model in models:
            for cond in conditions:
                trace = cond not in ("untrained", "vanilla")
                for seed in seeds:
                    for i in range(n):
                        cls = bool(trace and rng.random() < .6)
                        ir = bool(trace and rng.random() < .45)
                        em = bool(rng.random() < .3 + .3 * (cls and ir))
                        ev = bool(trace and rng.random() < .8)
                        rows.append(dict(
                            dataset=ds, model=model, condition=cond, seed=seed, id=f"{ds}/syn/test/{i}",
                            category=cats[i % len(cats)], prediction="<think>x</think> <answer>y</answer>",
                            parse_status="ok" if rng.random() < .9 else "no_answer_tag", answer_pred="y",
                            answer_em=em, answer_f1=1.0 if em else float(rng.random() / 2),
                            rouge_l=float(rng.random()) if ds == "marco" else np.nan,
                            has_trace_target=trace, cls_pred=cats[0] if trace else None,
                            cls_correct=cls, ir_pred=[0] if trace else [], ir_precision=float(ir),
                            ir_recall=float(ir), ir_exact=ir, trace_correct=cls and ir,
                            compat_evaluated=ev, cls_correct_compat=cls if ev else None,
                            ir_correct_compat=(ir or rng.random() < .5) if ev else None,
                            trace_correct_compat=(cls and ir) if ev else None))
    df = pd.DataFrame(rows)
    for c in ("cls_correct_compat", "ir_correct_compat", "trace_correct_compat"):
        df[c] = df[c].astype("boolean")
    return df


def _check(out, name, d):
    assert [p.name for p in out] == [f"{name}.png", f"{name}.pdf"]
    for p in out:
        assert p.parent == d and p.exists() and p.stat().st_size > 2000, p
    assert out[0].read_bytes()[:4] == b"\x89PNG" and out[1].read_bytes()[:4] == b"%PDF"


@pytest.fixture(scope="module")
def items():
    # two models, two seeds, the baseline, a no-trace and two trace conditions (kept small: speed)
    return make_items(conditions=("untrained", "vanilla", "correct", "shuffled"), n=9)


def test_registry_names():
    assert list(figures.FIGURES) == ["accuracy_by_condition", "step_accuracy", "contingency_heatmaps",
                                     "forest_phi_or", "accuracy_by_category", "key_steps"]
    # every figure has its own make target (make fig-<name>)
    mk = (paths.ROOT / "Makefile").read_text()
    figs = next(line for line in mk.splitlines() if line.startswith("FIGS :="))
    assert figs.split(":=")[1].split() == list(figures.FIGURES)


def test_key_steps_reads_krsl_metrics(items, tmp_path, monkeypatch):
    import json

    monkeypatch.setattr(paths, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(paths, "FIGURES", tmp_path / "figures")
    krsl_items = items.assign(condition="krsl")
    for r in krsl_items[["dataset", "model", "seed"]].drop_duplicates().itertuples():
        d = paths.run_dir("unit", r.dataset, r.model, "krsl", int(r.seed))
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps({
            "key_share_correct": 0.2, "key_share_incorrect": 0.1,
            "key_tokens_correct": {"n_key": 20}, "key_tokens_incorrect": {"n_key": 10}}))
    png, pdf = figures.fig_key_steps(krsl_items, "unit", synthetic=True)
    assert png.stat().st_size > 10_000 and pdf.stat().st_size > 0
    # without any krsl metrics the figure says so instead of failing
    empty_png, _ = figures.fig_key_steps(items.assign(condition="correct"), "unit2", synthetic=True)
    assert empty_png.exists()


@pytest.mark.parametrize("name", list(figures.FIGURES))
def test_each_figure_writes_png_and_pdf(items, name, tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "FIGURES", tmp_path / "figures")  # the default location
    out = figures.FIGURES[name](items, "unit", synthetic=True)
    _check(out, name, tmp_path / "figures" / "unit")


def test_thin_data(tmp_path):
    # one model, one seed, no vanilla/krsl, few items (zero cells in the 2x2 tables), and a
    # dataset with no trace condition at all
    it = make_items(models=("tiny",), seeds=(0,), conditions=("untrained", "correct", "incorrect"), n=5, rs=3)
    it = it[~((it.dataset == "babi") & it.condition.isin(["correct", "incorrect"]))]
    at = stats.association_table(it)
    assert ((at[["a_t", "a_nt", "na_t", "na_nt"]] == 0).any(axis=1)).any()  # the case is exercised
    out = figures.make_figures(["all"], "unit", items=it, out_dir=tmp_path, synthetic=False)
    assert set(out) == set(figures.FIGURES)
    for name, ps in out.items():
        _check(ps, name, tmp_path)
    # nothing with a trace target: the association figures say so instead of failing
    base = it[it.condition == "untrained"]
    _check(figures.fig_forest_phi_or(base, "unit", out_dir=tmp_path / "e"), "forest_phi_or", tmp_path / "e")
    _check(figures.fig_contingency_heatmaps(base, "unit", out_dir=tmp_path / "e"), "contingency_heatmaps",
           tmp_path / "e")


def test_make_figures_rejects_unknown(items, tmp_path):
    with pytest.raises(ValueError, match="unknown figure"):
        figures.make_figures(["nope"], "unit", items=items, out_dir=tmp_path)


def test_synthetic_flags(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "DATA", tmp_path / "data")
    dss = ["cotempqa", "babi"]
    assert figures.synthetic_flags("nocard", dss) == {"cotempqa": False, "babi": False}
    assert figures.synthetic_flags("nocard", dss, synthetic=True) == {"cotempqa": True, "babi": True}
    card = tmp_path / "data" / "p" / "data_card.json"
    card.parent.mkdir(parents=True)
    card.write_text(json.dumps({"datasets": {"cotempqa": {"source": "synthetic"},
                                             "babi": {"sources": ["local:qa1_train.txt"]}}}))
    assert figures.synthetic_flags("p", dss) == {"cotempqa": True, "babi": False}
    # the card helpers.data writes: per dataset a boolean "synthetic"
    card.write_text(json.dumps({"data_source": "local", "datasets": {
        "cotempqa": {"source": "local:cotempqa", "synthetic": False}, "babi": {"synthetic": True}}}))
    assert figures.synthetic_flags("p", dss) == {"cotempqa": False, "babi": True}
    card.write_text(json.dumps({"data_source": "synthetic"}))
    assert figures.synthetic_flags("p", dss) == {"cotempqa": True, "babi": True}
    assert figures.dataset_label("cotempqa", True) == "CoTempQA (synthetic)"
    assert figures.dataset_label("babi") == "bAbI"


def test_cli_without_items_fails_clearly(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(paths, "RESULTS", tmp_path / "results")
    rc = figures.main(["all", "--profile", "nowhere"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "items.parquet not found" in err and "make eval PROFILE=nowhere" in err
    with pytest.raises(SystemExit):
        figures.main(["no_such_figure", "--profile", "nowhere"])


def test_cli_subprocess(tmp_path):
    env = {**os.environ, "STUDY_ROOT": str(tmp_path), "MPLBACKEND": "Agg"}
    cmd = [sys.executable, "-m", "helpers.figures", "accuracy_by_condition", "--profile", "cli"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "make eval PROFILE=cli" in r.stderr
    (tmp_path / "results" / "cli").mkdir(parents=True)
    make_items(models=("tiny",), seeds=(0,), n=6).to_parquet(tmp_path / "results" / "cli" / "items.parquet")
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    for ext in ("png", "pdf"):
        assert (tmp_path / "figures" / "cli" / f"accuracy_by_condition.{ext}").stat().st_size > 2000


def test_saved_pdfs_carry_no_creation_date(tmp_path):
    """Same results, same bytes: a figure's PDF holds no creation date (matplotlib writes one
    by default, so two runs a second apart would differ)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from helpers import figures

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    png, pdf = figures._save(fig, "probe", "smoke", tmp_path)
    assert pdf.suffix == ".pdf" and b"CreationDate" not in pdf.read_bytes()
    assert png.read_bytes().startswith(b"\x89PNG")
