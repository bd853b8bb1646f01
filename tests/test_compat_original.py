"""The compat rules as the original's scripts applied them, on crafted rows and files in the
original's formats (STUDY_SPEC sections 5-6), and on the original's real test CSVs where
../shared/data/original is present."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from helpers import paths, rescore as rs
from helpers import qa
import helpers.qa.babi, helpers.qa.cotempqa, helpers.qa.marco  # noqa: E401,F401
from helpers.scoring import (answer_scores, cotemp_rule_table, cotempqa_entities,
                             cotempqa_official, extract_answer_compat, label_from_reasoning,
                             original_em, score_items)
from helpers.templates import CLASSIFICATION, RETRIEVAL, render_trace

ORIGINAL = paths.SHARED_DATA / "original"
C_CT = CLASSIFICATION["cotempqa"]
R_CT = RETRIEVAL["cotempqa"]


def _trace(label, facts, answers) -> str:
    """An output shaped like the original's (role word, newlines, list literals)."""
    return ("assistant\n<think>\n" + C_CT.format(label=label) + "\n"
            + R_CT.format(facts=repr(list(facts))) + "\n</think>\n\n <answer>" + repr(list(answers))
            + "</answer>")


def _line(facts, question, gold, prediction, te="S1_R1_O2") -> dict:
    prompt = ("Answer the question based on the context:\n" + repr(list(facts)) + "\nQuestion: "
              + question + " Only return the answer.\n")
    return {"input": {"text": prompt}, "prediction": prediction, "gold": list(gold),
            "triple_element": te, "question": question, "facts": list(facts)}


def _write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _csv_row(facts, answers, label, te="S1_R1_O2") -> dict:
    return {"index": 0, "triple_element": te, "facts": repr(list(facts)), "question": "q",
            "reasoning": C_CT.format(label=label) + "\n", "answer": repr(list(answers)),
            "messages": "[]"}


# Two problems of the "equal" file share the answer "titular bishop" (as in the real files).
P1 = (["Ann Bo holds the position of titular bishop in 1990.",
       "Ann Bo holds the position of auxiliary bishop in 1990."],
      "While Ann Bo was holding the position of auxiliary bishop, which position did Ann Bo hold?",
      ["titular bishop"])
P2 = (["Cy Di holds the position of titular bishop in 2001.",
       "Cy Di holds the position of auxiliary bishop in 2001."],
      "While Cy Di was holding the position of auxiliary bishop, which position did Cy Di hold?",
      ["titular bishop"])


# --------------------------------------------------------------------------------------------
# the join against the original's test CSV
# --------------------------------------------------------------------------------------------

def test_gold_csv_join_takes_the_first_containing_row_even_for_another_problem(tmp_path):
    csv = tmp_path / "equal_test.csv"
    pd.DataFrame([_csv_row(P1[0], P1[2], "equal"), _csv_row(P2[0], P2[2], "equal")]).to_csv(csv, index=False)
    # the model answers P2 right and cites P2's own answer fact
    pred = _write_jsonl(tmp_path / "equal" / "p.jsonl",
                        [_line(P2[0], P2[1], P2[2], _trace("equal", P2[0][:1], P2[2]))])
    s, items = rs.rescore("cotempqa", pred, mode="compat", gold_csv=csv, condition="correct")
    assert s["answer"]["em"] == 1.0
    assert s["join"]["joined"] == 1 and s["join"]["carried_over"] == 0
    # the joined row is P1's: none of P1's facts is in the trace, so IR (and the trace) is wrong
    assert items["cls_correct_compat"].tolist() == [True]
    assert items["ir_correct_compat"].tolist() == [False]
    assert s["tables"]["answer_x_trace"] == [[0, 1], [0, 0]]
    # joined by the line itself (id), or against the lines of the file, it is right
    s_id, _ = rs.rescore("cotempqa", pred, mode="compat", compat_join="id", condition="correct")
    assert s_id["tables"]["answer_x_trace"] == [[1, 0], [0, 0]]
    # with P2's row first in the CSV the same output is right
    pd.DataFrame([_csv_row(P2[0], P2[2], "equal"), _csv_row(P1[0], P1[2], "equal")]).to_csv(csv, index=False)
    s2, _ = rs.rescore("cotempqa", pred, mode="compat", gold_csv=csv, condition="correct")
    assert s2["tables"]["answer_x_trace"] == [[1, 0], [0, 0]]


def test_gold_csv_cli_and_its_errors(tmp_path, capsys):
    csv = tmp_path / "equal_test.csv"
    pd.DataFrame([_csv_row(P1[0], P1[2], "equal"), _csv_row(P2[0], P2[2], "equal")]).to_csv(csv, index=False)
    pred = _write_jsonl(tmp_path / "equal" / "p.jsonl",
                        [_line(P2[0], P2[1], P2[2], _trace("equal", P2[0][:1], P2[2])),
                         _line(P2[0], P2[1], P2[2], "assistant\nCy Di")])
    def run(*a):  # the command line, in process (tests/test_rescore.py runs it as a program)
        rc = rs.main([str(x) for x in a])
        out = capsys.readouterr()
        return subprocess.CompletedProcess(a, rc, out.out, out.err)

    out = run("--dataset", "cotempqa", "--predictions", pred, "--mode", "compat",
              "--compat-join", "original", "--gold-csv", csv)
    assert out.returncode == 0, out.stderr
    s = json.loads(out.stdout)
    assert s["steps"]["n_evaluated"] == 1 and s["tables"]["answer_x_ir"] == [[0, 1], [0, 0]]
    assert s["gold_csv"] == str(csv) and s["cotemp_rule"] == "official"
    bad = run("--dataset", "cotempqa", "--predictions", pred, "--compat-join", "id", "--gold-csv", csv)
    assert bad.returncode == 2 and "--compat-join original" in bad.stderr
    pd.DataFrame([dict(_csv_row(P1[0], P1[2], "equal"), reasoning="no label here")]).to_csv(csv, index=False)
    bad = run("--dataset", "cotempqa", "--predictions", pred, "--mode", "compat", "--gold-csv", csv)
    assert bad.returncode == 2 and "row 1" in bad.stderr and "label" in bad.stderr


def test_label_from_reasoning_uses_the_original_scan_order():
    assert label_from_reasoning("... is: during or overlap.", "cotempqa") == "during"
    assert label_from_reasoning("The category ... is: two-supporting-facts.", "babi") == "two-supporting-facts"
    assert label_from_reasoning("The category ... is: LOCATION.", "marco") == "location"
    assert label_from_reasoning("nothing", "babi") is None


@pytest.mark.skipif(not (ORIGINAL / "cotempqa" / "with_facts").is_dir(),
                    reason="../shared/data/original is not present")
@pytest.mark.parametrize("category", ["equal", "overlap", "during", "mix"])
def test_join_on_the_real_original_test_csv(tmp_path, category):
    """Every row of the original's test CSV answered with its own training target: the join
    picks, for each line, the first row whose answer text contains the first gold answer
    (brute force here), carries the previous row over where none does, and the compat trace is
    right exactly where that row's facts include the cited fact."""
    csv = ORIGINAL / "cotempqa" / "with_facts" / f"{category}_test.csv"
    df = pd.read_csv(csv)
    lines, expect, other, carried, last = [], [], 0, 0, None
    texts = df["answer"].tolist()
    for k, r in df.iterrows():
        facts, gold = ast.literal_eval(r["facts"]), ast.literal_eval(r["answer"])
        target = ast.literal_eval(r["messages"])[-1]["content"]
        lines.append(_line(facts, "q", gold, "assistant\n" + target, r["triple_element"]))
        j = next((i for i, t in enumerate(texts) if gold[0] in t), None)
        if j is None:
            j, carried = last, carried + 1
        other += j != k
        last = j
        cited = target.split("</think>")[0]
        expect.append(any(f in cited for f in ast.literal_eval(df["facts"].iloc[j])))
    pred = _write_jsonl(tmp_path / category / "p.jsonl", lines)
    s, items = rs.rescore("cotempqa", pred, mode="compat", gold_csv=csv, condition="correct")
    assert s["join"]["carried_over"] == carried and s["join"]["no_row"] == 0
    assert s["steps"]["n_evaluated"] == len(df)
    assert items["ir_correct_compat"].astype(bool).tolist() == expect
    assert items["cls_correct_compat"].astype(bool).all()   # one category per file
    # the quirk is real: some lines are joined to another problem's row, and some of those
    # lose their IR point for it
    assert other > 0 and not all(expect)
    assert sum(expect) < len(df)


# --------------------------------------------------------------------------------------------
# answers under the original's rules
# --------------------------------------------------------------------------------------------

def test_unclosed_answer_tag_takes_the_fallbacks():
    # no other keyword: the text after <answer>
    assert extract_answer_compat("<answer>office") == "office"
    assert extract_answer_compat("assistant\n<answer>['Red Party']") == "['Red Party']"
    # a trace-shaped output: " answer " of the retrieval sentence wins
    out = render_trace("babi", "single-supporting-fact", ["Mary went to the office."], "office")
    cut = out[:out.rindex("</answer>")]
    got = extract_answer_compat(cut)
    assert got.startswith("the question:") and got.endswith("<answer>office") and "think" not in got
    row = {"id": "x", "answers": ["office"], "question": "Where?", "context": ["c"]}
    assert answer_scores(got, row, "babi", original_em_rule=True)["em"] is False
    assert answer_scores(extract_answer_compat("<answer>office"), row, "babi",
                         original_em_rule=True)["em"] is True
    # CoTempQA: the candidates are still found in the fallback text
    line = _line(P2[0], P2[1], P2[2], "")
    t = _trace("equal", P2[0][:1], P2[2])
    cut = t[:t.rindex("</answer>")]
    row = {"id": "x", "answers": P2[2], "question": P2[1], "context": P2[0],
           "meta": json.dumps({"triple_element": line["triple_element"]})}
    assert answer_scores(extract_answer_compat(cut), row, "cotempqa", decode_literal=False)["em"] is True


def test_babi_em_needs_the_raw_gold_as_a_substring_and_equal_normalised_text():
    assert original_em("Office.", ["office"], "babi") is True
    assert original_em("the office", ["office"], "babi") is False        # substring, not equal
    assert original_em("US", ["u.s."], "babi") is False                  # equal normalised only
    row = {"id": "x", "answers": ["u.s."], "question": "q", "context": []}
    assert answer_scores("US", row, "babi")["em"] is True                # the project's rule
    assert answer_scores("US", row, "babi", original_em_rule=True)["em"] is False


def test_marco_multi_answer_item_can_never_be_correct():
    golds = ["5 dollars", "five dollars"]
    assert original_em("5 dollars", golds, "marco") is False
    assert original_em("five dollars", golds, "marco") is False
    assert original_em("5 dollars", ["5 dollars"], "marco") is True
    assert original_em("5 dollars", ["5 dollars", "5 dollars"], "marco") is True   # one distinct
    row = {"id": "x", "answers": golds, "question": "q", "context": []}
    assert answer_scores("5 dollars", row, "marco")["em"] is True
    assert answer_scores("5 dollars", row, "marco", original_em_rule=True)["em"] is False
    # through score_items with the compat answer rule
    gold = pd.DataFrame([dict(row, id="m", category="NUMERIC", relevant=[], meta="{}")])
    items = score_items(pd.DataFrame({"id": ["m"], "prediction": ["<answer>5 dollars</answer>"]}),
                        gold, dataset="marco", condition="vanilla", answer_rule="compat")
    assert items["answer_em"].tolist() == [False]
    items = score_items(pd.DataFrame({"id": ["m"], "prediction": ["<answer>5 dollars</answer>"]}),
                        gold, dataset="marco", condition="vanilla")
    assert items["answer_em"].tolist() == [True]


# --------------------------------------------------------------------------------------------
# the CoTempQA subject/object rule
# --------------------------------------------------------------------------------------------

FACTS = ["Ann holds the position of mayor in 1990.", "Ann holds the position of sheriff in 1990.",
         "Bob holds the position of judge in 1990."]
Q = "While Ann was holding the position of mayor, which position did Ann hold at the same time?"


def test_answer_type_rule_is_the_reverse_of_the_official_one():
    assert cotempqa_entities(FACTS, "S1_R1_O2") == ["ann", "ann", "bob"]
    assert cotempqa_entities(FACTS, "S1_R1_O2", "answer_type") == ["mayor", "sheriff", "judge"]
    assert cotempqa_entities(FACTS, "S2_R1_O1", "answer_type") == ["ann", "ann", "bob"]
    # an object question: the official rule cannot see the extra object, answer_type can
    assert cotempqa_official("['judge', 'sheriff']", ["judge"], Q, FACTS, "S1_R1_O2")[1] is True
    assert cotempqa_official("['judge', 'sheriff']", ["judge"], Q, FACTS, "S1_R1_O2",
                             "answer_type")[1] is False
    with pytest.raises(ValueError, match="cotemp_rule"):
        cotempqa_entities(FACTS, "S1_R1_O2", "subject")


def test_cotemp_rule_table_side_by_side():
    gold = pd.DataFrame([{"id": f"c{k}", "question": Q, "context": FACTS, "answers": ["judge"],
                          "category": "equal", "relevant": [2],
                          "meta": json.dumps({"triple_element": "S1_R1_O2"})} for k in range(2)])
    items = pd.DataFrame({"dataset": "cotempqa", "model": "m", "condition": "correct", "seed": 0,
                          "id": ["c0", "c1"], "category": "equal",
                          "answer_pred": ["['judge', 'sheriff']", "['judge']"]})
    tab = cotemp_rule_table(items, gold)
    assert len(tab) == 1
    r = tab.iloc[0]
    assert (r["n"], r["em_official"], r["em_answer_type"]) == (2, 1.0, 0.5)
    assert r["diff_points"] == pytest.approx(-50.0) and r["only_official"] == 1
    with pytest.raises(KeyError, match="not in the gold"):
        cotemp_rule_table(items.assign(id=["c0", "zz"]), gold)


# --------------------------------------------------------------------------------------------
# a checkout of the original's repository (crafted, in its layout)
# --------------------------------------------------------------------------------------------

def _checkout(root: Path) -> Path:
    data = root / "data" / "cotempqa" / "sft_dataset_reasoning_with_facts_chat_template"
    data.mkdir(parents=True)
    pd.DataFrame([_csv_row(P1[0], P1[2], "equal"), _csv_row(P2[0], P2[2], "equal")]).to_csv(
        data / "equal_test.csv", index=False)
    mixf = ["Eve is a member of the Red Party in 2000.", "Eve is a member of the Blue Party in 2000."]
    pd.DataFrame([_csv_row(mixf, ["Red Party", "Blue Party"], "mix")]).to_csv(data / "mix_test.csv", index=False)
    out = root / "results" / "Cotempqa" / "evaluation_outputs"
    adapter = "Qwen3-1.7B-sft-adapter-reasoning-facts_default.json"
    _write_jsonl(out / "equal" / adapter, [
        _line(P1[0], P1[1], P1[2], _trace("equal", P1[0][:1], P1[2])),            # A, T
        _line(P2[0], P2[1], P2[2], _trace("equal", P2[0][:1], P2[2])),            # A, T strict; not T compat (joined to P1)
        _line(P2[0], P2[1], P2[2], "assistant\nCy Di holds auxiliary bishop"),    # unevaluated, not A
    ])
    mq = "While Eve was a member of the Green Party, which parties did Eve belong to?"
    _write_jsonl(out / "mix" / adapter, [
        _line(mixf, mq, ["Red Party", "Blue Party"], _trace("mix", mixf, ["Red Party"])),  # not A, T
    ])
    _write_jsonl(out / "equal" / "Qwen3-1.7B-sft-adapter_default.json",
                 [_line(P1[0], P1[1], P1[2], "assistant\n['titular bishop']")])
    vdir = root / "data" / "cotempqa" / "sft_dataset_chat_template"
    vdir.mkdir(parents=True)
    (vdir / "equal_test.csv").write_text((data / "equal_test.csv").read_text())
    cm = root / "results" / "Cotempqa" / "confusion_matrix"
    cm.mkdir(parents=True)
    m = lambda w, a, b, c, d: {f"correct_answer_correct_{w}": a, f"correct_answer_incorrect_{w}": b,  # noqa: E731
                               f"incorrect_answer_correct_{w}": c, f"incorrect_answer_incorrect_{w}": d}
    (cm / "Qwen3-1.7B-sft-adapter-reasoning-facts_default_confusion_matrix.json").write_text(json.dumps(
        {"accuracies": {}, "matrix1": m("category", 3.0, 0.0, 1.0, 0.0),
         "matrix2": m("fact", 2.0, 1.0, 1.0, 0.0), "matrix3": m("trace", 2.0, 1.0, 1.0, 0.0)}))
    return root


def test_original_checkout_rescored_side_by_side(tmp_path):
    root = _checkout(tmp_path / "repo")
    layout = rs.original_layout(root)
    assert [(r["model"], r["condition"], [c for c, _, _ in r["files"]]) for r in layout] == [
        ("Qwen3-1.7B", "vanilla", ["equal"]), ("Qwen3-1.7B", "correct", ["equal", "mix"])]
    tables, ems, joins = rs.rescore_original(root)
    tr = tables[tables["step"] == "trace"].set_index("source")["table"]
    assert tr["committed"] == [[2, 1], [1, 0]]                 # from the committed JSON
    assert tr["compat"] == [[1, 1], [1, 0]]                    # 3 evaluated; line 2 joined to P1
    assert tr["strict"] == [[2, 0], [1, 1]]                    # every line, each its own gold
    assert tables[(tables["source"] == "committed")]["step"].tolist() == ["cls", "ir", "trace"]
    j = joins[joins["condition"] == "correct"].set_index("category")
    assert j.loc["equal", "n_evaluated"] == 2 and j.loc["equal", "joined"] == 2
    e = ems.set_index(["condition", "category"])
    assert e.loc[("correct", "equal"), "em_official"] == pytest.approx(2 / 3)
    assert e.loc[("vanilla", "equal"), "em_strict"] == 1.0
    sbs = rs.side_by_side(tables)
    assert {"committed:chi2", "compat:chi2_yates", "strict:phi", "compat:joint"} <= set(sbs.columns)
    written = rs.write_original_tables(root, tmp_path / "out")
    assert all(p.exists() for p in written.values())
    assert "answer x trace" in written["side_by_side"].read_text()
    # the command line
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-m", "helpers.rescore", "--original-dir", str(root),
                          "--out", str(tmp_path / "cli")], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "cli" / "tables.json").exists()
    assert rs.main(["--original-dir", str(tmp_path / "nowhere")]) == 2


def test_committed_only_tables_have_the_spec_numbers():
    t = rs.with_association(rs.committed_only())
    assert set(t["step"]) == {"cls", "ir", "trace"} and set(t["dataset"]) == {"cotempqa", "babi"}
    t = t[(t["step"] == "trace") & (t["dataset"] == "cotempqa")]
    q = t[(t["model"] == "Qwen3-1.7B") & (t["condition"] == "correct")].iloc[0]
    assert q["n"] == 949 and q["joint"] == pytest.approx(261 / 949)
    assert q["chi2_yates"] == pytest.approx(4.30, abs=0.01)
    ll = t[(t["model"] == "Llama-3.2-1B") & (t["condition"] == "correct")].iloc[0]
    assert ll["chi2_yates"] == pytest.approx(3.90, abs=0.01)


# --------------------------------------------------------------------------------------------
# the original's order of the project's test split
# --------------------------------------------------------------------------------------------

@pytest.mark.skipif(not (ORIGINAL / "cotempqa" / "with_facts").is_dir()
                    or not (paths.SHARED_DATA / "cotempqa" / "equal.json").exists(),
                    reason="../shared/data (CoTempQA files and original/) is not present")
def test_original_order_is_the_order_of_the_originals_test_csv():
    from helpers import data
    from helpers.scoring import original_order

    df, _ = qa.cotempqa.load_local(paths.SHARED_DATA, 42)
    train, test = df[df["split"] == "train"], df[df["split"] == "test"]
    order, how = original_order(train, test, "cotempqa", seed=42)
    assert how == "draw" and sorted(order) == sorted(test["id"])
    assert order != test["id"].tolist()                       # the stored order differs
    # the shared during.json is a subset of the original's during file: compare the others
    for cat in ("equal", "overlap", "mix"):
        csv = pd.read_csv(ORIGINAL / "cotempqa" / "with_facts" / f"{cat}_test.csv")
        mine = [i for i in order if i.split("/")[1] == cat]
        qs = df.set_index("id").loc[mine, "question"].tolist()
        # the original numbered its rows across the four files; the questions identify them
        assert len(qs) == len(csv) and all(q in p for q, p in zip(qs, csv["question"]))
    # a capped test split cannot be drawn again: the stored order, with the reason
    capped = test.groupby("category").head(5)
    order, how = original_order(train, capped, "cotempqa", seed=42)
    assert order == capped["id"].tolist() and how.startswith("stored")


def test_join_order_decides_which_row_is_first():
    rows = [dict(id=f"cotempqa/equal/{k}", question=p[1], context=p[0], answers=p[2],
                 category="equal", relevant=[0], meta=json.dumps({"triple_element": "S1_R1_O2"}))
            for k, p in enumerate((P1, P2))]
    gold = pd.DataFrame(rows)
    preds = pd.DataFrame({"id": ["cotempqa/equal/1"],
                          "prediction": [_trace("equal", P2[0][:1], P2[2])]})
    as_stored = score_items(preds, gold, dataset="cotempqa", condition="correct")
    reordered = score_items(preds, gold, dataset="cotempqa", condition="correct",
                            join_order=["cotempqa/equal/1", "cotempqa/equal/0"])
    assert as_stored["ir_correct_compat"].tolist() == [False]   # P1's row comes first
    assert reordered["ir_correct_compat"].tolist() == [True]
    assert as_stored.attrs["compat_join"]["other_row"] == 1
    assert reordered.attrs["compat_join"]["other_row"] == 0


# --------------------------------------------------------------------------------------------
# the original's rules on the original's own gold traces (a student that is always right)
# --------------------------------------------------------------------------------------------

def test_script_on_gold_traces_crafted(tmp_path):
    d = tmp_path / "cotempqa" / "with_facts"
    d.mkdir(parents=True)
    rows = []
    for facts, q, gold in (P1, P2):
        r = _csv_row(facts, gold, "equal")
        target = _trace("equal", facts[:1], gold).split("assistant\n", 1)[1]
        r.update(question="Answer the question based on the context:\n" + repr(facts) + "\nQuestion: "
                 + q + " Only return the answer.\n",
                 messages=repr([{"role": "user", "content": "u"}, {"role": "assistant", "content": target}]))
        rows.append(r)
    pd.DataFrame(rows).to_csv(d / "equal_test.csv", index=False)
    t = rs.script_on_gold_traces(tmp_path).set_index("category")
    # P2's line joins P1's row: its (right) retrieval counts as wrong; by its own row it is right
    assert t.loc["equal", "other_row"] == 1
    assert t.loc["equal", "ir_compat"] == 0.5 and t.loc["equal", "ir_own_row"] == 1.0
    assert t.loc["equal", "cls_compat"] == 1.0 and t.loc["equal", "answer_em"] == 1.0
    with pytest.raises(rs.RescoreError, match="no correct-trace test CSV"):
        rs.script_on_gold_traces(tmp_path / "empty")


@pytest.mark.skipif(not (ORIGINAL / "babi" / "with_facts" / "test.csv").exists(),
                    reason="../shared/data/original is not present")
def test_script_on_the_real_gold_traces():
    t = rs.script_on_gold_traces(ORIGINAL).set_index(["dataset", "category"])
    # joined by their own rows, the gold traces are right (as they must be)...
    assert (t["cls_own_row"] == 1.0).all() and (t["ir_own_row"] >= 0.99).all()
    # ...under the original's join they are not: bAbI answers repeat across stories
    b = t.loc[("babi", "all")]
    assert b["other_row"] > b["n"] / 2 and b["trace_compat"] < 0.5
    c = t.loc["cotempqa"]
    assert (c["cls_compat"] == 1.0).all() and (c["ir_compat"] < 1.0).all()
