"""The rule-based decomposition: labels, relevant facts under each variant, ambiguity."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from helpers import config, data, decompose, paths
from helpers import qa
import helpers.qa.babi, helpers.qa.cotempqa, helpers.qa.marco  # noqa: E401,F401


def _row(dataset, question, context, answers, category, meta=None, rid="r1"):
    return {"id": rid, "dataset": dataset, "split": "train", "question": question,
            "context": context, "answers": answers, "category": category,
            "meta": json.dumps(meta or {})}


COT = _row("cotempqa",
           "While Ada Holt was working for Redfield Labs, which position did Ada Holt hold at the same time?",
           ["Ada Holt works for Redfield Labs from 1990 to 1995.",
            "Ada Holt holds the position of mayor from 1991 to 1993.",
            "Ada Holt holds the position of Mayor of Oakmont in 1980.",
            "Ada Holt holds the position of treasurer from 1970 to 1975."],
           ["mayor"], "during", {"scenario": "during"})


def test_cotempqa_default_is_case_sensitive_substring():
    assert decompose.relevant("cotempqa", COT) == [1]
    assert decompose.relevant("cotempqa", COT, "casefold") == [1, 2]
    assert decompose.ambiguity("cotempqa", COT) == "unique"


def test_cotempqa_condition_variant_adds_the_question_event():
    assert qa.cotempqa.condition_clause(COT["question"]) == "Ada Holt was working for Redfield Labs"
    assert qa.cotempqa.condition_facts(COT) == [0]
    assert decompose.relevant("cotempqa", COT, "condition") == [0, 1]


def test_condition_fact_needs_the_whole_object():
    # "bishop" must not match a clause about "auxiliary bishop"
    row = _row("cotempqa",
               "While Tom Park was holding the position of auxiliary bishop, which position did Tom Park hold concurrently?",
               ["Tom Park holds the position of bishop in 2004.",
                "Tom Park holds the position of auxiliary bishop from March, 2001 to June 19, 2002.",
                "Tom Park holds the position of titular bishop from 2001 to 2002."],
               ["titular bishop"], "equal")
    assert qa.cotempqa.condition_facts(row) == [1]
    assert qa.cotempqa.parse_fact(row["context"][1]) == {"x": "Tom Park", "rel": "position", "y": "auxiliary bishop"}
    # "titular bishop" is in one fact; "bishop" alone would be in three
    assert decompose.relevant("cotempqa", row) == [2]


def test_cotempqa_ambiguity_none_and_several():
    none = dict(COT, answers=["provost"])
    assert decompose.relevant("cotempqa", none) == []
    assert decompose.ambiguity("cotempqa", none) == "none"
    assert "answer_in_no_fact" in decompose.quality_flags("cotempqa", none)
    several = dict(COT, context=COT["context"] + ["Ada Holt holds the position of mayor in 1999."])
    assert decompose.relevant("cotempqa", several) == [1, 4]
    assert decompose.ambiguity("cotempqa", several) == "several"
    assert decompose.quality_flags("cotempqa", several) == ["several_facts_contain_answer"]
    empty = dict(COT, context=[])
    assert decompose.quality_flags("cotempqa", empty) == ["empty_context"]


def test_marco_largest_word_overlap_and_is_selected():
    row = _row("marco", "what year was the bridge built",
               ["The river is wide.", "The bridge was built in 1987 by masons.",
                "It opened in 1987.", "Built in 1987 it was."],
               ["Built in 1987."], "NUMERIC",
               {"query_type": "NUMERIC", "is_selected": [0, 0, 1, 0]})
    # answer words {built, in, 1987.} (punctuation stays attached, as in the original):
    # passage 1 shares built, in; passage 2 in, 1987.; passage 3 built, in -> a tie, the first wins
    assert qa.marco.overlaps(row["context"], row["answers"][0]) == [0, 2, 2, 2]
    assert decompose.relevant("marco", row) == [1]
    assert decompose.ambiguity("marco", row) == "several"
    assert decompose.relevant("marco", row, "is_selected") == [2]
    no = dict(row, answers=["No Answer Present."])
    assert decompose.relevant("marco", no) == []
    assert decompose.ambiguity("marco", no) == "none"
    assert decompose.quality_flags("marco", no) == ["no_answer_present"]


def test_babi_supporting_lines():
    row = _row("babi", "Where is the football?", ["Mary got the football there.", "John went to the office.",
                                                   "Mary went to the garden."],
               ["garden"], "two-supporting-facts",
               {"task": 2, "line_ids": ["1", "2", "3"], "supporting_ids": ["3", "1"]})
    assert decompose.relevant("babi", row) == [0, 2]
    assert decompose.classify("babi", row) == "two-supporting-facts"
    assert decompose.ambiguity("babi", row) == "unique"
    broken = dict(row, meta=json.dumps({"task": 2, "line_ids": ["1", "2"], "supporting_ids": ["5"]}))
    assert decompose.relevant("babi", broken) == []
    assert decompose.ambiguity("babi", broken) == "none"
    assert decompose.quality_flags("babi", broken) == ["supporting_fact_missing"]


def test_classify_and_unknown_variants():
    assert decompose.classify("cotempqa", COT) == "during"
    marco = _row("marco", "q", ["p"], ["a"], "PERSON", {"query_type": "person"})
    assert decompose.classify("marco", marco) == "PERSON"
    with pytest.raises(ValueError, match="unknown cotempqa label"):
        decompose.classify("cotempqa", dict(COT, meta="{}", category="before"))
    with pytest.raises(ValueError, match="no decomposition variant"):
        decompose.relevant("babi", COT, "is_selected")
    assert decompose.resolve_variant("cotempqa", "is_selected") == "default"
    assert decompose.resolve_variant("marco", "is_selected") == "is_selected"
    with pytest.raises(ValueError):
        decompose.resolve_variant("marco", "nonsense")


def test_frame_agreement_and_ambiguity_tables():
    rows = [COT, dict(COT, id="r2", answers=["provost"]),
            dict(COT, id="r3", context=COT["context"] + ["Ada Holt holds the position of mayor in 1999."])]
    df = pd.DataFrame(rows)
    d = decompose.decompose_frame(df, "cotempqa")
    assert d["relevant_default"].tolist() == [[1], [], [1, 4]]
    assert d["relevant_condition"].tolist() == [[0, 1], [0], [0, 1, 4]]
    assert d["agree_condition"].tolist() == [False, False, False]
    assert d["agree_casefold"].tolist() == [False, True, False]
    amb = decompose.ambiguity_table(d)
    assert amb.loc["during", "unique"] == 1 and amb.loc["during", "none"] == 1 and amb.loc["during", "several"] == 1
    agree = decompose.agreement_table(d, "cotempqa")
    assert agree.loc[agree["category"] == "during", "agree_casefold"].item() == pytest.approx(33.3)


def test_run_writes_variants_and_summary(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "DATA", tmp_path)
    cfg = config.load_profile("smoke")
    cfg.update(profile="t", datasets=["marco", "babi"], n_train=10, n_test=5)
    with pytest.raises(FileNotFoundError, match="make data PROFILE=t"):
        decompose.run(cfg)
    with pytest.raises(FileNotFoundError, match="make decompose PROFILE=t"):
        decompose.load_problems("t", "marco", "train")
    data.prepare(cfg)
    interim = data.load_split("t", "marco", "train")
    assert "relevant" not in interim.columns and "flags" not in interim.columns  # 01 applies no rule
    s = decompose.run(cfg)
    # 02 writes the problems 03 reads: the interim rows, in order, with their decomposition
    probs = decompose.load_problems("t", "marco", "train")
    assert list(probs.columns) == decompose.PROBLEM_COLUMNS
    assert probs["id"].tolist() == interim["id"].tolist()
    assert probs["relevant"].tolist() == [decompose.relevant("marco", r) for r in interim.to_dict("records")]
    assert probs["flags"].tolist() == [decompose.quality_flags("marco", r) for r in interim.to_dict("records")]
    assert (probs["label"] == probs["category"]).all()
    assert (tmp_path / "t" / "decomposition.json").exists()
    v = pd.read_parquet(tmp_path / "t" / "marco" / "variants.parquet")
    assert len(v) == 15 and {"relevant_default", "relevant_is_selected", "agree_is_selected"} <= set(v.columns)
    js = json.loads((tmp_path / "t" / "decomposition.json").read_text())
    assert js["datasets"]["babi"]["ambiguity"]["all"]["all"] == 15
    assert list(js["datasets"]) == ["marco", "babi"] and "stamp" not in js  # no times in the artifact
    st = decompose.stamp("t", "marco")
    assert st["config"] == {"decomposition": "default"} and set(st["inputs"]) == {
        "data/marco/train.parquet", "data/marco/test.parquet"}
    assert s["datasets"]["marco"]["label_matches_category"] == 15
    ft = decompose.flags_table(s)
    assert list(ft.columns) == ["dataset", "flag", "count", "ids"]
    assert ft["count"].sum() == sum(v["count"] for e in s["datasets"].values() for v in e["flagged"].values())
    # fresh: read back, not recomputed
    monkeypatch.setattr(decompose, "decompose_frame", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    again = decompose.run(cfg)
    assert again["frames"]["babi"]["relevant_default"].tolist() == s["frames"]["babi"]["relevant_default"].tolist()


# ------------------------------------------------------------------ real files

@pytest.fixture(scope="module")
def cotempqa_real():
    if not (paths.SHARED_DATA / "cotempqa").is_dir():
        pytest.skip("../shared/data/cotempqa absent")
    df, _ = qa.cotempqa.load_local(paths.SHARED_DATA, 42)
    return df


def test_real_cotempqa_rules(cotempqa_real):
    d = decompose.decompose_frame(cotempqa_real, "cotempqa")
    # every real question's condition event is found among its facts
    cond_found = (d["relevant_condition"].map(len) > d["relevant_default"].map(len)) | (~d["agree_condition"])
    assert cond_found.mean() >= 0.98
    # the default rule finds a fact for every row, and each row's flags agree with ambiguity
    assert (d["relevant_default"].map(len) > 0).all()
    several = set(d.loc[d["ambiguity"] == "several", "id"])
    probs = decompose.problems_frame(cotempqa_real, "cotempqa")
    flagged = set(probs.loc[probs["flags"].map(lambda f: "several_facts_contain_answer" in f), "id"])
    assert several == flagged and len(several) > 0
    # case-insensitive matching only ever adds facts
    assert all(set(a) <= set(b) for a, b in zip(d["relevant_default"], d["relevant_casefold"]))
