"""The teacher family in the pipeline: the stage of 03_traces
(helpers.teacher_stage), the test file per condition, the items' test_set column, the
answer-only scoring of the teacher conditions, the grid of 04 and the analysis of 06."""
import json

import numpy as np
import pandas as pd
import pytest

from helpers import conditions, config, data, decompose, evaluate, paths, scoring, sft, stats, traces
from helpers import teacher as TC
from helpers import teacher_stage as TS
from helpers.generate import prompt_hash

FAMILY = list(conditions.names(written_by="teacher"))


@pytest.fixture
def study(tmp_path, monkeypatch):
    """The smoke profile's synthetic data, written under a temporary root (01's own code)."""
    monkeypatch.setattr(paths, "DATA", tmp_path / "data")
    monkeypatch.setattr(paths, "RUNS", tmp_path / "runs")
    cfg = config.load_profile("smoke")
    data.prepare(cfg)
    decompose.run(cfg)
    return cfg


# ------------------------------------------------------------------ profile keys and conditions
def test_profiles_name_the_teacher_as_planned():
    smoke, quick = config.load_profile("smoke"), config.load_profile("quick")
    assert smoke["teacher"] == {"backend": "file", "path": "synthetic"} and smoke["teacher_conditions"] == ["teacher"]
    for name in ("quick", "paper", "colab"):
        p = config.load_profile(name)
        assert p["teacher"] is None, f"{name}: the teacher comparison must be off by default"
        assert traces.teacher_conditions(p) == [] and traces.all_conditions(p) == p["conditions"]
    assert quick["teacher_conditions"] == FAMILY
    assert set(TS.TEACHER_KEYS) <= set(config.param_keys())


def test_test_path_per_condition(study):
    cfg = study
    for ds in cfg["datasets"]:
        for c in ["untrained", "vanilla", "correct", "incorrect", "krsl", "shuffled"]:
            assert traces.test_set_of(c) == "full"
            assert traces.test_path_for(cfg, ds, c) == traces.test_path("smoke", ds)
        for c in FAMILY:
            assert traces.test_set_of(c) == "teacher"
            assert traces.test_path_for(cfg, ds, c) == traces.traces_dir("smoke", ds) / "teacher_test.parquet"
    assert traces.all_conditions(cfg) == cfg["conditions"] + ["teacher"]
    assert traces.all_conditions(dict(cfg, teacher=None)) == cfg["conditions"]
    with pytest.raises(ValueError, match="unknown teacher condition"):
        traces.teacher_conditions(dict(cfg, teacher_conditions=["teacher", "teacher_typo"]))
    # 04 trains them, with the teacher's settings in their stamp; the others' stamps are unchanged
    grid = sft.run_grid(cfg)
    assert {(d, "teacher") for d in cfg["datasets"]} <= {(d, c) for d, _, c, _ in grid}
    assert set(TS.TEACHER_KEYS) <= set(sft.run_keys("teacher"))
    assert not set(TS.TEACHER_KEYS) & set(sft.run_keys("correct"))
    assert ("babi", "tiny", "teacher", 0) in evaluate.runs(cfg)


# ------------------------------------------------------------------ the stage
def test_stage_is_skipped_when_no_teacher_is_named(study):
    cfg = dict(study, teacher=None, teacher_conditions=FAMILY)
    assert TS.prepare_teacher(cfg) == {}
    for ds in cfg["datasets"]:
        assert not TS.teacher_dir("smoke", ds).exists()
        assert not traces.teacher_test_path("smoke", ds).exists()
    assert traces.all_conditions(cfg) == cfg["conditions"]


def test_stage_writes_the_teacher_family_and_stamps(study):
    cfg = dict(study, teacher_conditions=FAMILY)
    res = TS.prepare_teacher(cfg)
    assert set(res) == set(cfg["datasets"]) and not any(e["skipped"] for e in res.values())
    for ds in cfg["datasets"]:
        d = TS.teacher_dir("smoke", ds)
        probs = pd.concat([traces.load_problems(cfg, ds, s) for s in ("train", "test")], ignore_index=True)
        scored = pd.read_parquet(d / "teacher.parquet")
        assert sorted(scored["id"]) == sorted(probs["id"])  # the teacher ran on train + test
        lines = pd.read_json(d / "synthetic.jsonl", lines=True)
        wrong = set(lines.loc[lines["answer"] == TC.SYNTHETIC_WRONG_ANSWER, "id"])
        tset = pd.read_parquet(d / "teacher_set.parquet")
        assert set(tset["id"]) == set(probs["id"]) - wrong  # exactly the correctly answered ones
        assert set(tset["split"]) == {"train", "test"}
        test = pd.read_parquet(traces.teacher_test_path("smoke", ds))
        assert list(test.columns) == traces.TEST_COLUMNS
        assert set(test["id"]) == set(tset.loc[tset["split"] == "test", "id"])
        train_ids = set(tset.loc[tset["split"] == "train", "id"])
        kept = tset[tset["split"] == "train"].reset_index(drop=True)
        for c in FAMILY:
            fr = traces.load_condition("smoke", ds, c)
            assert list(fr.columns) == traces.COLUMNS and (fr["condition"] == c).all()
            assert set(fr["id"]) == train_ids, c  # every condition on the same problems
        # the restricted conditions are the full-set ones, built on the teacher set's rows
        labels = traces.labels_for(cfg, ds)
        for base in ("vanilla", "correct", "incorrect"):
            want = traces.build_condition(kept, ds, base, cfg["trace_seed"], labels=labels)
            assert traces.load_condition("smoke", ds, "tset_" + base)["assistant"].tolist() == want["assistant"].tolist()
        teach = traces.load_condition("smoke", ds, "teacher").set_index("id")
        for r in kept.to_dict("records"):
            assert teach.loc[r["id"], "assistant"] == TC.teacher_target(r["teacher_trace"], r["teacher_answer"])
        # the user turn is the student's, as in every other condition
        assert (teach["user"] == traces.load_condition("smoke", ds, "tset_correct").set_index("id")["user"]).all()
        sw = traces.load_condition("smoke", ds, "teacher_swapped")
        assert (sw["source_id"] != sw["id"]).all()
        stamp = config.read_json(d / "stamp.json")
        assert stamp["config"]["teacher"] == cfg["teacher"] and stamp["summary"]["synthetic"]
        assert stamp["summary"]["counts"]["teacher_set"] == len(tset)
        assert stamp["summary"]["teacher_run"]["status"] == {"ok": len(probs)}
        assert config.is_fresh(d, cfg, TS.STAGE_KEYS, stage="teacher", inputs=TS.stage_inputs(cfg, ds))
    again = TS.prepare_teacher(cfg)
    assert all(e["skipped"] for e in again.values())
    assert not any(e["skipped"] for e in TS.prepare_teacher(dict(cfg, teacher_resplit_seed=7)).values())
    table = TS.overview(again)
    assert table["teacher"].str.contains("SYNTHETIC").all()


def test_failed_summaries_leave_every_teacher_set_and_are_counted(study, tmp_path):
    cfg = dict(study, datasets=["cotempqa"])
    probs = pd.concat([traces.load_problems(cfg, "cotempqa", s) for s in ("train", "test")], ignore_index=True)
    lines = TC.synthetic_teacher(probs, "cotempqa", seed=0, wrong_share=0.0)
    first = probs["id"].iloc[0]
    lines.loc[lines["id"] == first, "summary"] = None  # no summary for one problem
    path = TC.write_trace_file(lines, tmp_path / "made_elsewhere.jsonl")
    cfg.update(teacher={"backend": "file", "path": str(path)},
               teacher_conditions=["teacher", "teacher_summary", "tset_correct"])
    res = TS.prepare_teacher(cfg)["cotempqa"]["summary"]
    assert not res["synthetic"]
    tset = pd.read_parquet(TS.teacher_dir("smoke", "cotempqa") / "teacher_set.parquet")
    in_train = first in set(tset.loc[tset["split"] == "train", "id"])
    assert res["counts"]["dropped"] == ({"summary": {"missing": 1}} if in_train else {"summary": {}})
    for c in cfg["teacher_conditions"]:
        ids = set(traces.load_condition("smoke", "cotempqa", c)["id"])
        assert first not in ids
        assert len(ids) == res["counts"]["train"] - int(in_train)


# ------------------------------------------------------------------ scoring: answers only
COT_ROW = {"id": "c/1", "question": "Which party was X a member of while Y?", "answers": ["Red Party"],
           "category": "equal", "context": ["X was a member of Red Party from 1990 to 1995.",
                                            "X was a member of Blue Party from 1996 to 2000."],
           "relevant": [0], "meta": json.dumps({"triple_element": "S1_R1_O2"})}
PROSE = ("<think>The question asks about X's party while Y. The first fact covers those years, "
         "so it is Red Party.</think> <answer>Red Party</answer>")


def test_teacher_conditions_score_only_the_answer():
    gold = pd.DataFrame([COT_ROW])
    preds = pd.DataFrame({"id": ["c/1"], "prediction": [PROSE]})
    t = scoring.score_items(preds, gold, dataset="cotempqa", condition="teacher").iloc[0]
    c = scoring.score_items(preds, gold, dataset="cotempqa", condition="correct").iloc[0]
    # the same free-prose output: a step failure for a decomposed-trace condition ...
    assert c["parse_status"] != "ok" and c["trace_scored"] and not c["trace_correct"]
    # ... but for a teacher condition only the answer is scored
    assert t["parse_status"] == "ok" and t["answer_em"] and t["has_trace_target"]
    assert not t["trace_scored"] and t["cls_pred"] is None and np.isnan(t["ir_recall"])
    assert not t["compat_evaluated"]
    for cond in ("teacher_summary", "teacher_posthoc", "teacher_swapped"):
        assert not scoring.score_items(preds, gold, dataset="cotempqa", condition=cond)["trace_scored"].any()
    for cond in ("tset_correct", "tset_incorrect"):  # decomposed traces on the teacher set: checkable
        assert scoring.score_items(preds, gold, dataset="cotempqa", condition=cond)["trace_scored"].all()
    assert not scoring.score_items(preds, gold, dataset="cotempqa", condition="tset_vanilla")["has_trace_target"].any()
    # a shape failure still counts for a teacher condition
    cut = pd.DataFrame({"id": ["c/1"], "prediction": ["<think>The question asks about"]})
    assert scoring.score_items(cut, gold, dataset="cotempqa", condition="teacher")["parse_status"].iloc[0] == "unclosed_think"


def _items(conds, test_set, ids, em):
    rows = []
    for c in conds:
        for i, pid in enumerate(ids):
            ok = bool(em[c][i])
            rows.append({"dataset": "cotempqa", "model": "tiny", "condition": c, "seed": 0, "id": pid,
                         "category": "equal", "answer_em": ok, "answer_f1": float(ok),
                         "has_trace_target": c not in ("vanilla", "untrained"),
                         "trace_scored": c not in ("vanilla", "untrained") and not scoring.answer_only(c),
                         "parse_status": "ok", "cls_correct": False, "ir_exact": False, "trace_correct": False,
                         "test_set": test_set})
    return pd.DataFrame(rows)


def test_analysis_keeps_the_test_sets_apart_and_teacher_traces_out_of_the_association():
    full = _items(["vanilla", "correct"], "full", [f"f{i}" for i in range(6)],
                  {"vanilla": [1, 1, 0, 0, 1, 0], "correct": [1, 0, 0, 1, 1, 0]})
    # the same ids in both sets would pair a full-set condition with a teacher-set one
    teach = _items(["teacher", "tset_correct"], "teacher", [f"f{i}" for i in range(6)],
                   {"teacher": [1, 1, 1, 1, 1, 0], "tset_correct": [0, 0, 1, 1, 0, 0]})
    items = pd.concat([full, teach], ignore_index=True)
    comp = stats.compare_conditions(items, "answer_em")
    pairs = {frozenset((x, y)) for x, y in zip(comp["cond_x"], comp["cond_y"])}
    assert pairs == {frozenset(("vanilla", "correct")), frozenset(("teacher", "tset_correct"))}
    assert stats.conditions_present(items, trace_only=True) == ["correct", "tset_correct"]
    acc = stats.per_seed_accuracy(items).set_index("condition")
    assert np.isnan(acc.loc["teacher", "trace_correct"]) and acc.loc["correct", "trace_correct"] == 0.0
    tab = TS.accuracy_on_teacher_set(items)
    assert set(tab["condition"]) == {"teacher", "tset_correct"}
    row = tab[(tab["condition"] == "teacher") & (tab["category"] == "equal")].iloc[0]
    assert row["answer EM %"] == round(100 * 5 / 6, 1) and row["original EM %"] == 81.7
    assert tab[(tab["condition"] == "tset_correct") & (tab["category"] == "equal")]["original EM %"].iloc[0] == 42.7


# ------------------------------------------------------------------ 05: the teacher test file
def test_evaluation_uses_each_conditions_test_file(study):
    from helpers import models

    cfg = study
    TS.prepare_teacher(cfg)
    traces.prepare_traces(cfg)
    tok = models.load_tokenizer("tiny")
    ds = "cotempqa"
    full = evaluate.test_prompts(cfg, ds, "tiny", tok, "vanilla")
    teach = evaluate.test_prompts(cfg, ds, "tiny", tok, "teacher")
    assert [p["id"] for p in full] == pd.read_parquet(traces.test_path("smoke", ds))["id"].tolist()
    assert [p["id"] for p in teach] == pd.read_parquet(traces.teacher_test_path("smoke", ds))["id"].tolist()
    # complete predictions (written here) are scored, not regenerated: the gold rows must be
    # the teacher test file's, and the items say which test set they come from
    gold = pd.read_parquet(traces.teacher_test_path("smoke", ds)).set_index("id")
    run = paths.run_dir("smoke", ds, "tiny", "teacher", 0)
    run.mkdir(parents=True)
    # predictions count only with their stamp (the weights, test file and code they came from)
    config.write_stamp(run, cfg, evaluate.EVAL_KEYS, stage="eval", name=evaluate.PRED_STAMP,
                       inputs=evaluate.eval_inputs(cfg, ds, "tiny", "teacher", 0))
    with open(run / "predictions.jsonl", "w") as f:
        for p in teach:
            ans = ", ".join(gold.loc[p["id"], "answers"])  # as the synthetic teacher answers (scored correct)
            f.write(json.dumps({"id": p["id"], "prediction": f"<think>Some prose.</think> <answer>{ans}</answer>",
                                "prompt_hash": prompt_hash(p["prompt"]), "max_new_tokens": cfg["max_new_tokens"]}) + "\n")
    items = evaluate.evaluate_run(cfg, ds, "tiny", "teacher", 0, progress=False)
    assert items["id"].tolist() == [p["id"] for p in teach]
    assert (items["test_set"] == "teacher").all() and items["answer_em"].all()
    assert (items["parse_status"] == "ok").all() and not items["trace_scored"].any()


def test_a_stage_with_transport_failures_is_run_again(study, monkeypatch):
    """A 429 after every retry is not final: the stage is not stamped fresh, and the next
    run retries (here: the same failure once, then the call succeeds)."""
    cfg = dict(study, datasets=["babi"])
    real = TC.run_teacher
    calls = []

    def flaky(problems, dataset, backend, cache=None, **kw):
        rows, st = real(problems, dataset, backend, cache, **kw)
        calls.append(len(calls))
        if len(calls) == 1:
            rows.loc[0, "status"] = "rate_limited"
            st.status = TC.Counter(rows["status"])
        return rows, st

    monkeypatch.setattr(TC, "run_teacher", flaky)
    first = TS.prepare_teacher(cfg)["babi"]["summary"]
    assert first["transport_failures"] == 1 and first["teacher_run"]["status"]["rate_limited"] == 1
    second = TS.prepare_teacher(cfg)["babi"]
    assert not second["skipped"] and second["summary"]["transport_failures"] == 0
    assert TS.prepare_teacher(cfg)["babi"]["skipped"] and len(calls) == 2
