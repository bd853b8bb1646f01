"""`python -m helpers.rescore` end to end on small files in the original's format and the
project's, written by the tests."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from helpers.rescore import original_to_frames, read_records
from helpers.templates import CLASSIFICATION, RETRIEVAL, render_trace

FACTS = [
    "Ann Lee is a member of the Green Party from 2001 to 2003.",
    "Ann Lee is a member of the Red Party from 2002 to 2004.",
    "Ann Lee is a member of the Blue Party in 2010.",
]
QUESTION = ("While Ann Lee was a member of the Green Party, which political party did Ann Lee "
            "belong to at the same time?")


def _original_trace(label: str, facts, answer_list) -> str:
    """An output shaped like the original's (role word, newlines around the tags)."""
    c = CLASSIFICATION["cotempqa"].format(label=label)
    r = RETRIEVAL["cotempqa"].format(facts=repr(list(facts)))
    return f"assistant\n<think>\n{c}\n{r}\n</think>\n\n <answer>{answer_list!r}</answer>"


def _ct_line(prediction: str, gold=("Red Party",)) -> dict:
    prompt = ("Answer the question based on the context:\n" + repr(FACTS) + "\nQuestion: "
              + QUESTION + "\nOnly return the answer.\n")
    return {"input": {"text": prompt}, "prediction": prediction, "gold": list(gold),
            "question": QUESTION, "facts": FACTS, "triple_element": "S1_R1_O2"}


def _write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for r in rows:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return path


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "helpers.rescore", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, env=env, timeout=120)


def _cotempqa_file(tmp_path: Path) -> Path:
    return _write_jsonl(tmp_path / "equal" / "predictions.jsonl", [
        # 1: right answer, right trace
        _ct_line(_original_trace("equal", [FACTS[1]], ["Red Party"])),
        # 2: right answer, wrong label and an irrelevant fact (compat: IR still counts)
        _ct_line(_original_trace("overlap", [FACTS[2]], ["Red Party"])),
        # 3: wrong answer, right trace
        _ct_line(_original_trace("equal", [FACTS[1]], ["Blue Party"])),
        # 4: answer only, continued into a new prompt (no trace: unevaluated under compat)
        _ct_line("assistant\nRed Party\nAnswer the question based on the context:\nBlue Party"),
    ])


def test_help_is_clear(tmp_path):
    out = _run("--help", cwd=tmp_path)
    assert out.returncode == 0
    for word in ["--dataset", "--predictions", "--category", "--gold", "--mode", "compat",
                 "--compat-join"]:
        assert word in out.stdout


def test_rescore_cotempqa_original_format_strict(tmp_path):
    path = _cotempqa_file(tmp_path)
    out = _run("--dataset", "cotempqa", "--predictions", path, "--category", "equal",
               "--condition", "correct", "--items-out", tmp_path / "items.parquet", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    s = json.loads(out.stdout)
    assert s["format"] == "original" and s["mode"] == "strict" and s["n"] == 4
    assert s["answer"]["em"] == pytest.approx(0.75)
    assert s["tables"]["answer_x_trace"] == [[1, 2], [1, 0]]
    assert s["tables"]["answer_x_cls"] == [[1, 2], [1, 0]]
    assert s["tables"]["answer_x_ir"] == [[1, 2], [1, 0]]
    assert s["steps"]["trace_acc"] == pytest.approx(0.5)
    assert s["failure_classes"]["ok"] == 3 and s["failure_classes"]["no_tags"] == 1
    assert s["failure_classes"]["compat_unevaluated"] == 1
    items = pd.read_parquet(tmp_path / "items.parquet")
    assert items["category"].unique().tolist() == ["equal"]
    assert items["ir_pred"].map(list).tolist() == [[1], [2], [1], []]
    assert items["has_trace_target"].all()


def test_rescore_cotempqa_original_format_compat(tmp_path):
    path = _cotempqa_file(tmp_path)
    # the category comes from the folder name when --category is not given
    out = _run("--dataset", "cotempqa", "--predictions", path, "--mode", "compat", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    s = json.loads(out.stdout)
    assert s["mode"] == "compat"
    assert s["steps"]["n_evaluated"] == 3 and s["steps"]["n_unevaluated"] == 1
    assert s["tables"]["answer_x_ir"] == [[2, 0], [1, 0]]      # any context fact counts
    assert s["tables"]["answer_x_cls"] == [[1, 1], [1, 0]]
    assert s["tables"]["answer_x_trace"] == [[1, 1], [1, 0]]
    assert s["answer"]["em"] == pytest.approx(0.75)             # the original's fallbacks
    assert s["strict"]["tables"]["answer_x_trace"] == [[1, 2], [1, 0]]


def test_rescore_babi_original_format(tmp_path):
    ctx = ["Mary moved to the bathroom.", "John went to the hallway.", "Mary travelled to the office."]
    lab = "single-supporting-fact"
    rows = [
        {"input": "Answer the question based on the context:\n" + "\n".join(ctx)
                  + "\nQuestion: Where is Mary?\nOnly return the answer.\n",
         "prediction": render_trace("babi", lab, ctx[2:], "office"), "gold": "office",
         "question": "Where is Mary?", "passage": repr(ctx), "query_type": lab,
         "reasoning": repr(ctx[2:])},
        {"input": "...", "prediction": render_trace("babi", lab, ctx[:1], "bathroom"),
         "gold": "office", "question": "Where is Mary?", "passage": repr(ctx),
         "query_type": lab, "reasoning": ctx[2]},
    ]
    path = _write_jsonl(tmp_path / "babi" / "correct.jsonl", rows)
    out = _run("--dataset", "babi", "--predictions", path, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    s = json.loads(out.stdout)
    assert s["condition"] == "correct"  # from the path
    assert s["n"] == 2 and s["answer"]["em"] == pytest.approx(0.5)
    assert s["tables"]["answer_x_trace"] == [[1, 0], [0, 1]]
    assert s["gold_issues"]["relevant_not_in_context"] == 0
    assert list(s["by_category"]) == [lab]


def test_rescore_project_format_with_gold(tmp_path):
    gold = pd.DataFrame([{
        "id": f"cotempqa/equal/{k}", "dataset": "cotempqa", "split": "test", "question": QUESTION,
        "context": FACTS, "answers": ["Red Party"], "category": "equal", "relevant": [1],
        "source": "synthetic", "synthetic": True, "flags": [],
        "meta": json.dumps({"triple_element": "S1_R1_O2"})} for k in range(3)])
    gold_path = tmp_path / "test.parquet"
    gold.to_parquet(gold_path)
    preds = [{"id": "cotempqa/equal/0", "prediction": render_trace("cotempqa", "equal", [FACTS[1]],
                                                                   "['Red Party']")},
             {"id": "cotempqa/equal/1", "prediction": "['Red Party']"}]
    path = _write_jsonl(tmp_path / "runs" / "vanilla" / "seed0" / "predictions.jsonl", preds)
    out = _run("--dataset", "cotempqa", "--predictions", path, "--gold", gold_path, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    s = json.loads(out.stdout)
    assert s["format"] == "project" and s["condition"] == "vanilla"
    assert s["n"] == 2 and s["answer"]["em"] == 1.0
    assert s["tables"]["answer_x_trace"] == [[1, 1], [0, 0]]
    assert s["gold_issues"]["gold_without_prediction"] == 1
    # a prediction id missing from the gold data is an error, not a silent drop
    _write_jsonl(path, preds + [{"id": "cotempqa/equal/99", "prediction": "x"}])
    bad = _run("--dataset", "cotempqa", "--predictions", path, "--gold", gold_path, cwd=tmp_path)
    assert bad.returncode == 2 and "not in the gold" in bad.stderr


def test_rescore_errors_name_file_and_line(tmp_path):
    path = _write_jsonl(tmp_path / "equal" / "p.jsonl",
                        [_ct_line("x"), "{not json"])
    out = _run("--dataset", "cotempqa", "--predictions", path, cwd=tmp_path)
    assert out.returncode == 2 and f"{path}:2" in out.stderr
    path = _write_jsonl(tmp_path / "somewhere" / "p.jsonl", [_ct_line("x")])
    out = _run("--dataset", "cotempqa", "--predictions", path, cwd=tmp_path)
    assert out.returncode == 2 and "--category" in out.stderr
    line = _ct_line("x")
    del line["triple_element"]
    path = _write_jsonl(tmp_path / "equal" / "q.jsonl", [line])
    out = _run("--dataset", "cotempqa", "--predictions", path, cwd=tmp_path)
    assert out.returncode == 2 and f"{path}:1" in out.stderr and "triple_element" in out.stderr
    out = _run("--dataset", "cotempqa", "--predictions", tmp_path / "missing.jsonl", cwd=tmp_path)
    assert out.returncode == 2 and "no such file" in out.stderr
    # project-format predictions without --gold
    path = _write_jsonl(tmp_path / "r.jsonl", [{"id": "a", "prediction": "x"}])
    out = _run("--dataset", "babi", "--predictions", path, cwd=tmp_path)
    assert out.returncode == 2 and "--gold" in out.stderr


def test_gold_rows_rebuilt_from_the_original_lines(tmp_path):
    """In-process check of the reconstruction (relevant facts by the default rule)."""
    path = _write_jsonl(tmp_path / "mix" / "p.jsonl",
                        [_ct_line("x", gold=("Red Party", "Blue Party"))])
    preds, gold, issues = original_to_frames(read_records(path), "cotempqa", path, None)
    row = gold.iloc[0]
    assert row["category"] == "mix" and list(row["relevant"]) == [1, 2]
    assert list(row["answers"]) == ["Red Party", "Blue Party"]
    assert json.loads(row["meta"])["triple_element"] == "S1_R1_O2"
    assert preds["id"].tolist() == ["p.jsonl:1"]
    # MS MARCO: answer_passage located in the passages; a passage list given as a literal
    passages = ["Paris is the capital of France.", "Lyon is big."]
    line = {"input": "...", "prediction": "Paris", "gold": "Paris", "question": "capital?",
            "passage": repr(passages), "query_type": "LOCATION", "answer_passage": passages[0]}
    path = _write_jsonl(tmp_path / "m.jsonl", [line, dict(line, answer_passage="Not there.")])
    _, gold, issues = original_to_frames(read_records(path), "marco", path, None)
    assert [list(r) for r in gold["relevant"]] == [[0], []]
    assert issues["relevant_not_in_context"] == 1
