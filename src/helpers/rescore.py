"""Re-score prediction files with the study's scorers and print a JSON summary.

Two input formats (STUDY_SPEC §6 and docs/architecture.md):

* the original study's published outputs: JSON lines (or one JSON array) with ``input``
  (the prompt, a string or ``{"text": ...}``), ``prediction``, ``gold`` and, for CoTempQA,
  ``question``, ``facts``, ``triple_element`` (the category is the folder name: pass
  ``--category``), for bAbI / MS MARCO ``passage`` (a list literal), ``query_type``,
  ``reasoning`` / ``answer_passage``. The gold row of each line is rebuilt from the line:
  context = the facts / passages; answers = ``gold``; relevant facts by the default rule
  (CoTempQA: the facts that contain a gold answer; bAbI: ``reasoning``; MS MARCO:
  ``answer_passage``).
* the project's own ``runs/.../predictions.jsonl`` (``id``, ``prediction``) with
  ``--gold`` = a data parquet (``data/<profile>/<dataset>/test.parquet``).

Compat mode is the original's confusion-matrix script: its "evaluated" test, its
classification and IR checks and its gold-row join (``--compat-join original``, the default:
the first row of the category's test file whose answer text contains the line's first gold
answer; ``--gold-csv`` = the original's own test CSV for that file, else the prediction
file's own lines in file order). ``--cotemp-rule`` picks the CoTempQA subject/object rule.

Example::

    python -m helpers.rescore --dataset cotempqa --predictions outputs/equal/correct.jsonl \\
        --category equal --mode compat --gold-csv data/cotempqa/.../equal_test.csv

``--original-dir DIR`` re-scores every published prediction file of a checkout of the
original's repository (its layout, :func:`original_layout`) and writes the side-by-side
tables (committed / its own script on its published files / strict) to ``--out``.
"""
from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from . import conditions, paths, qa, scoring


def _file_categories(dataset: str) -> tuple[str, ...]:
    """The categories the original kept one test file each for (CoTempQA's scenarios; none
    for a dataset with one test file)."""
    spec = qa.get(dataset)
    return spec.label_set() if spec.original_files_per_category else ()




class RescoreError(Exception):
    """Bad input: the message names the file, the line and the reason."""


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------

def read_records(path: Path) -> list[tuple[int, dict]]:
    """(line number, object) for every record of a JSON-lines file or a JSON array file."""
    if not path.exists():
        raise RescoreError(f"{path}: no such file")
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise RescoreError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
        out = []
        for k, obj in enumerate(data, start=1):
            if not isinstance(obj, dict):
                raise RescoreError(f"{path}: item {k} of the JSON array is not an object")
            out.append((k, obj))
        return out
    from .data import read_jsonl

    try:
        out = read_jsonl(path)
    except ValueError as e:  # names file:line and the reason
        raise RescoreError(str(e)) from None
    if not out:
        raise RescoreError(f"{path}: no records")
    return out


def detect_format(records: Sequence[tuple[int, dict]]) -> str:
    """``original`` (has ``input`` / ``gold``) or ``project`` (``id`` + ``prediction``)."""
    first = records[0][1]
    if "gold" in first or "input" in first:
        return "original"
    if "id" in first and "prediction" in first:
        return "project"
    raise RescoreError(f"line {records[0][0]}: neither the original format (input, prediction, "
                       f"gold, ...) nor the project's (id, prediction); keys: {sorted(first)}")


def _prompt_text(obj: dict) -> str:
    inp = obj.get("input", "")
    if isinstance(inp, dict):
        inp = inp.get("text", "")
    return "" if inp is None else str(inp)


def _listish(value: Any) -> list[str] | None:
    """A list from a list, a list literal, or None."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    if isinstance(value, str):
        s = value.strip()
        if s.startswith(("[", "(")):
            try:
                v = ast.literal_eval(s)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                return None
            if isinstance(v, (list, tuple)):
                return [str(x) for x in v]
    return None


def _question_from_prompt(prompt: str) -> str | None:
    k = prompt.rfind("Question:")
    if k < 0:
        return None
    q = prompt[k + len("Question:"):]
    end = q.find("Only return the answer")
    return (q[:end] if end >= 0 else q).strip() or None


def _context_from_prompt(prompt: str) -> list[str] | None:
    head = "based on the context:"
    i, j = prompt.find(head), prompt.rfind("Question:")
    if i < 0 or j < 0 or j < i:
        return None
    body = prompt[i + len(head):j].strip()
    as_list = _listish(body)
    if as_list is not None:
        return as_list
    lines = [ln.strip() for ln in body.split("\n") if ln.strip()]
    return lines or None


def _relevant_indices(context: list[str], wanted: list[str]) -> tuple[list[int], int]:
    """Indices of the context items that are the wanted texts (whitespace-normalised equal;
    else containing it; else contained in it), and how many wanted texts matched none."""
    norm = [scoring.ws(c) for c in context]
    out: set[int] = set()
    unmatched = 0
    for w in wanted:
        w = scoring.ws(w)
        if not w:
            continue
        hits = [i for i, n in enumerate(norm) if n == w]
        if not hits:
            hits = [i for i, n in enumerate(norm) if n and w in n]
        if not hits:
            hits = [i for i, n in enumerate(norm) if n and n in w]
        if hits:
            out.update(hits)
        else:
            unmatched += 1
    return sorted(out), unmatched


def original_to_frames(records: Sequence[tuple[int, dict]], dataset: str, path: Path,
                       category: str | None) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(predictions, gold rows, gold-issue counts) from the original's format."""
    spec = qa.get(dataset)
    if spec.original_files_per_category and category is None:
        folder = path.parent.name
        if folder in _file_categories(dataset):
            category = folder
        else:
            raise RescoreError(f"{path}: {spec.display_name} needs --category (one of "
                               f"{_file_categories(dataset)}); "
                               f"the original stored it as the folder name, here {folder!r}")
    issues = {"relevant_not_in_context": 0, "no_relevant_field": 0, "answer_in_no_fact": 0}
    preds, gold = [], []
    for lineno, obj in records:
        where = f"{path}:{lineno}"
        if "prediction" not in obj:
            raise RescoreError(f"{where}: no 'prediction' field")
        if "gold" not in obj:
            raise RescoreError(f"{where}: no 'gold' field")
        prompt = _prompt_text(obj)
        answers = _listish(obj["gold"])
        if answers is None:
            answers = [str(obj["gold"])] if obj["gold"] is not None else []
        if not answers:
            raise RescoreError(f"{where}: empty 'gold'")
        question = obj.get("question") or _question_from_prompt(prompt)
        if not question:
            raise RescoreError(f"{where}: no 'question' field and none found in 'input'")
        meta: dict[str, Any] = {"source_line": lineno}
        if spec.original_relevant_by_answer:  # CoTempQA: facts, triple_element, answer facts
            context = _listish(obj.get(spec.original_context_field))
            if context is None:
                context = _context_from_prompt(prompt)
            if context is None:
                raise RescoreError(f"{where}: no 'facts' list and no context found in 'input'")
            if "triple_element" not in obj:
                raise RescoreError(f"{where}: no 'triple_element' (the official CoTempQA "
                                   "scorer needs it)")
            meta["triple_element"] = str(obj["triple_element"])
            relevant = [i for i, f in enumerate(context) if any(a in f for a in answers)]
            if not relevant:
                issues["answer_in_no_fact"] += 1
            cat = category
        else:
            context = _listish(obj.get("passage"))
            if context is None:
                context = _context_from_prompt(prompt)
            if context is None:
                raise RescoreError(f"{where}: no 'passage' list and no context found in 'input'")
            cat = category if category is not None else obj.get("query_type")
            if cat is None:
                raise RescoreError(f"{where}: no 'query_type' (the category); pass --category")
            order = spec.original_relevant_fields
            field = next((f for f in order if obj.get(f) not in (None, "", [])), None)
            if field is None:
                issues["no_relevant_field"] += 1
                relevant = []
            else:
                value = obj[field]
                wanted = _listish(value)
                if wanted is None:
                    value = str(value)
                    wanted = value.split("\n") if spec.original_relevant_lines else [value]
                relevant, unmatched = _relevant_indices(context, wanted)
                issues["relevant_not_in_context"] += unmatched
        rid = f"{path.name}:{lineno}"
        preds.append({"id": rid, "prediction": obj["prediction"]})
        gold.append({"id": rid, "dataset": dataset, "question": str(question),
                     "context": [str(c) for c in context], "answers": answers,
                     "category": str(cat), "relevant": relevant, "meta": json.dumps(meta)})
    return pd.DataFrame(preds), pd.DataFrame(gold), issues


def read_gold_csv(path: Path, dataset: str) -> list[scoring.JoinRow]:
    """The rows of one of the original's test CSVs as its join saw them, in file order:
    answer text = the ``answer`` column (MS MARCO: ``answers``) as stored; label = the first
    label of the original's scan order found in ``reasoning``; facts = every item of
    ``facts`` (CoTempQA) or ``passages`` (bAbI / MS MARCO), parsed as a list literal."""
    path = Path(path)
    if not path.exists():
        raise RescoreError(f"{path}: no such file")
    try:
        df = pd.read_csv(path, keep_default_na=False)
    except (ValueError, pd.errors.ParserError) as e:
        raise RescoreError(f"{path}: not a readable CSV ({e})") from None
    ans_col = next((c for c in ("answer", "answers") if c in df.columns), None)
    fact_col = next((c for c in ("facts", "passages") if c in df.columns), None)
    missing = [n for n, c in (("answer/answers", ans_col), ("facts/passages", fact_col),
                              ("reasoning", "reasoning" if "reasoning" in df.columns else None)) if c is None]
    if missing:
        raise RescoreError(f"{path}: no column {', '.join(missing)} (have {list(df.columns)})")
    rows = []
    for k, r in enumerate(df.to_dict("records")):
        where = f"{path}: row {k + 1}"
        label = scoring.label_from_reasoning(r["reasoning"], dataset)
        if label is None:  # the original failed here (its label variable was never set)
            raise RescoreError(f"{where}: no {dataset} label in 'reasoning' ({str(r['reasoning'])[:80]!r})")
        facts = _listish(r[fact_col])
        if facts is None:
            raise RescoreError(f"{where}: {fact_col!r} is not a list literal")
        rows.append(scoring.JoinRow(str(r[ans_col]), label, facts, key=None))
    return rows


def project_to_frames(records: Sequence[tuple[int, dict]], path: Path, gold_path: Path,
                      dataset: str) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    preds = []
    for lineno, obj in records:
        for key in ("id", "prediction"):
            if key not in obj:
                raise RescoreError(f"{path}:{lineno}: no {key!r} field")
        preds.append({"id": str(obj["id"]), "prediction": obj["prediction"]})
    if not gold_path.exists():
        raise RescoreError(f"{gold_path}: no such file")
    gold = pd.read_parquet(gold_path)
    if "dataset" in gold.columns:
        other = sorted(set(gold["dataset"].astype(str)) - {dataset})
        if other:
            raise RescoreError(f"{gold_path}: holds dataset(s) {other}, but --dataset is {dataset!r}")
    preds = pd.DataFrame(preds)
    ids = set(preds["id"])
    issues = {"gold_without_prediction": int(sum(i not in ids for i in gold["id"].astype(str)))}
    return preds, gold, issues


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

def infer_condition(path: Path) -> str:
    """The last folder name or the file's stem that names a condition, else "unknown"."""
    hits = [p for p in list(path.parent.parts) + [path.stem] if conditions.find(p) is not None]
    return hits[-1] if hits else "unknown"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m helpers.rescore",
        description="Score a prediction file with the study's answer and trace scorers and "
                    "print a JSON summary (n, answer EM/F1, step accuracies, the 2x2 tables "
                    "answer x classification / IR / trace, failure-class counts).",
        epilog="Formats: the original study's published outputs (JSON lines with input, "
               "prediction, gold, question and facts+triple_element or passage+query_type+"
               "reasoning/answer_passage; the gold row is rebuilt from each line), or the "
               "project's runs/.../predictions.jsonl (id, prediction) together with --gold. "
               "Tables are [[A and T, A and not T], [not A and T, not A and not T]].",
    )
    p.add_argument("--dataset", choices=qa.names(), help="which dataset's scorer (required "
                   "unless --original-dir)")
    p.add_argument("--predictions", type=Path, metavar="FILE",
                   help="JSON-lines prediction file (original format, or the project's with --gold)")
    p.add_argument("--category", default=None, metavar="LABEL",
                   help="original format: the category of every line (CoTempQA: equal, overlap, "
                        "during, mix; default: the file's folder name); bAbI/MS MARCO: overrides "
                        "query_type. Not used with --gold")
    p.add_argument("--gold", default=None, type=Path, metavar="FILE",
                   help="project format: the data parquet (docs/architecture.md schema) that "
                        "holds the gold rows of the prediction ids")
    p.add_argument("--mode", default="strict", choices=["strict", "compat"],
                   help="(default strict) strict: the project's rules (answer tag, exact labels, cited facts vs "
                        "relevant facts); compat: the original's rules (its answer-extraction "
                        "fallbacks; its substring/any-fact trace checks) for the headline numbers. "
                        "Both rule sets are always in the output; --mode picks 'steps'/'tables'")
    p.add_argument("--compat-join", default="original", choices=["original", "id"],
                   help="(default original) compat trace checks: the original's join (the first "
                        "row of the category's test file whose answer text contains the line's "
                        "first gold answer; none: the previous line's row) or the item's own row (id)")
    p.add_argument("--gold-csv", default=None, type=Path, metavar="FILE",
                   help="with --compat-join original: the original's own test CSV the join "
                        "scans (CoTempQA: {category}_test.csv; bAbI: test.csv); default: the "
                        "prediction file's own lines, in file order")
    p.add_argument("--cotemp-rule", default="official", choices=list(scoring.COTEMP_RULES),
                   help="(default official) CoTempQA subject/object rule: official = the "
                        "benchmark's code (reproduces the published EMs); answer_type = "
                        "subjects only for S2_R1_O1 questions")
    p.add_argument("--condition", default=None,
                   help="the run's condition (sets has_trace_target); default: a condition "
                        f"name in the file's path ({', '.join(conditions.names())}), else 'unknown'")
    p.add_argument("--items-out", default=None, type=Path, metavar="FILE",
                   help="also write the per-item scores (.parquet or .csv)")
    p.add_argument("--original-dir", default=None, type=Path, metavar="DIR",
                   help="instead of one file: re-score every published prediction file of a "
                        "checkout of the original's repository (results/Cotempqa/..., "
                        "results/Babiqa/..., data/...) and write the side-by-side tables")
    p.add_argument("--out", default=None, type=Path, metavar="DIR",
                   help="with --original-dir: where the tables go (default results/original)")
    return p


def rescore(dataset: str, predictions: Path, *, category: str | None = None,
            gold: Path | None = None, mode: str = "strict", compat_join: str = "original",
            condition: str | None = None, gold_csv: Path | None = None,
            cotemp_rule: str = "official") -> tuple[dict, pd.DataFrame]:
    """(JSON summary, per-item scores) of one prediction file."""
    predictions = Path(predictions)
    if compat_join == "answer":
        compat_join = "original"
    if gold_csv is not None and compat_join != "original":
        raise RescoreError("--gold-csv is the table the original's join scans: it needs "
                           "--compat-join original")
    join_rows = read_gold_csv(gold_csv, dataset) if gold_csv is not None else None
    records = read_records(predictions)
    fmt = "project" if gold is not None else detect_format(records)
    if fmt == "project":
        if gold is None:
            raise RescoreError(f"{predictions}: project-format predictions (id, prediction) "
                               "need --gold DATA.parquet")
        if category is not None:
            raise RescoreError("--category is for the original format; with --gold the "
                               "category of each item comes from the gold parquet")
        preds, gold_df, issues = project_to_frames(records, predictions, Path(gold), dataset)
    else:
        preds, gold_df, issues = original_to_frames(records, dataset, predictions, category)
    condition = condition or infer_condition(predictions)
    return rescore_frames(dataset, preds, gold_df, condition=condition, mode=mode,
                          compat_join=compat_join, cotemp_rule=cotemp_rule, join_rows=join_rows,
                          source=str(predictions), fmt=fmt,
                          gold_csv=None if gold_csv is None else str(gold_csv), issues=issues)


def rescore_frames(dataset: str, preds: pd.DataFrame, gold: pd.DataFrame, *, condition: str,
                   mode: str = "strict", compat_join: str = "original", cotemp_rule: str = "official",
                   join_rows: Sequence[scoring.JoinRow] | None = None,
                   join_order: Sequence[str] | None = None, source: str = "(in memory)",
                   fmt: str = "project", gold_csv: str | None = None,
                   issues: dict | None = None) -> tuple[dict, pd.DataFrame]:
    """(JSON summary, per-item scores) of predictions already in memory: ``preds`` (``id``,
    ``prediction``) against ``gold`` (rows of the data schema), under ``mode`` (``strict``
    or ``compat``, the original's rules). :func:`rescore` reads the files, then calls this."""
    try:
        items = scoring.score_items(preds, gold, dataset=dataset,
                                    condition=condition, mode_compat_join=compat_join,
                                    answer_rule="compat" if mode == "compat" else "strict",
                                    cotemp_rule=cotemp_rule, join_rows=join_rows,
                                    join_order=join_order)
    except (KeyError, ValueError) as e:
        raise RescoreError(f"{source}: {e}") from None
    summary = scoring.summarize(items)
    chosen = summary["strict"] if mode == "strict" else summary["compat"]
    head = {"predictions": source, "format": fmt, "dataset": dataset, "mode": mode,
            "compat_join": compat_join, "gold_csv": gold_csv,
            "cotemp_rule": cotemp_rule, "join": items.attrs.get("compat_join", {}),
            "condition": condition,
            "n": summary["n"], "answer": summary["answer"],
            "steps": {k: v for k, v in chosen.items() if k != "tables"},
            "tables": chosen["tables"],
            "failure_classes": dict(summary["parse_status"]["by_class"],
                                    compat_unevaluated=summary["compat"]["n_unevaluated"]),
            "gold_issues": issues if issues is not None else {}}
    head.update({k: v for k, v in summary.items() if k not in head})
    return head, items


# --------------------------------------------------------------------------------------------
# The original's published outputs, re-scored (06_correlation, `make original`)
# --------------------------------------------------------------------------------------------

ORIGINAL_REPO = "https://github.com/sbhambr1/Trace_Check_QA"
ORIGINAL_OUT = paths.RESULTS / "original"
# The original's model names in its file names -> the project's.
ORIGINAL_MODELS = {"Qwen3-1.7B": "Qwen3-1.7B", "Llama-3.2-1B-Instruct": "Llama-3.2-1B"}
# The original's adapter suffixes -> the project's conditions.
ORIGINAL_CONDITIONS = {"": "vanilla", "-reasoning-facts": "correct",
                       "-reasoning-facts-perturbed": "incorrect"}
# The pooled tables the original committed, [[A and T, A and not T], [not A and T, not A and
# not T]] per step (cls = matrix1, ir = matrix2, trace = matrix3 of its
# results/{Cotempqa,Babiqa}/confusion_matrix/*_confusion_matrix.json; CoTempQA at commits
# 509ef3d3 / 2d289d30, bAbI at bf5b3d55 / 3b5881c3; the trace tables of CoTempQA are
# STUDY_SPEC section 7's). Shown when no checkout is given.
COMMITTED_TABLES = {
    ("cotempqa", "Qwen3-1.7B", "correct"): {
        "cls": [[372, 137], [236, 204]], "ir": [[379, 130], [365, 75]], "trace": [[261, 248], [195, 245]]},
    ("cotempqa", "Llama-3.2-1B", "correct"): {
        "cls": [[275, 143], [247, 285]], "ir": [[303, 115], [441, 91]], "trace": [[174, 244], [187, 345]]},
    ("cotempqa", "Qwen3-1.7B", "incorrect"): {
        "cls": [[65, 454], [44, 357]], "ir": [[257, 262], [250, 151]], "trace": [[34, 485], [30, 371]]},
    ("cotempqa", "Llama-3.2-1B", "incorrect"): {
        "cls": [[47, 334], [85, 484]], "ir": [[220, 161], [440, 129]], "trace": [[34, 347], [71, 498]]},
    ("babi", "Qwen3-1.7B", "correct"): {
        "cls": [[222, 141], [6, 7]], "ir": [[89, 274], [4, 9]], "trace": [[85, 278], [4, 9]]},
    ("babi", "Llama-3.2-1B", "correct"): {
        "cls": [[221, 134], [11, 10]], "ir": [[88, 267], [5, 16]], "trace": [[86, 269], [5, 16]]},
    ("babi", "Qwen3-1.7B", "incorrect"): {
        "cls": [[63, 295], [4, 14]], "ir": [[0, 358], [0, 18]], "trace": [[0, 358], [0, 18]]},
    ("babi", "Llama-3.2-1B", "incorrect"): {
        "cls": [[11, 313], [2, 50]], "ir": [[0, 324], [0, 52]], "trace": [[0, 324], [0, 52]]},
}
_MATRIX_STEP = {"matrix1": ("cls", "category"), "matrix2": ("ir", "fact"), "matrix3": ("trace", "trace")}
STEP_TABLE = {"cls": "answer_x_cls", "ir": "answer_x_ir", "trace": "answer_x_trace"}
SOURCES = ("committed", "compat", "compat_answer_type", "strict")


def original_layout(root: Path) -> list[dict]:
    """Every published prediction run of a checkout of the original's repository: one dict per
    (dataset, model, condition) with ``files`` = [(category or None, prediction file, gold
    CSV)] and ``committed`` = its committed confusion-matrix JSON (None when absent).

    Layout (the original's): ``results/Cotempqa/evaluation_outputs/{category}/{model}-sft-
    adapter{suffix}_default.json`` with the gold CSV ``data/cotempqa/
    sft_dataset_reasoning_with_facts_chat_template/{category}_test.csv`` (vanilla runs:
    ``sft_dataset_chat_template``), and ``results/Babiqa/evaluation_outputs/...`` with
    ``data/babiqa/.../test.csv``; confusion matrices in ``results/{Cotempqa,Babiqa}/
    confusion_matrix/{adapter}_default_confusion_matrix.json``. Runs of other models, seeds
    (``-121`` ...) or trace kinds are not listed."""
    root = Path(root)
    if not root.is_dir():
        raise RescoreError(f"{root}: no such folder (a checkout of {ORIGINAL_REPO})")
    out = []
    for dataset, res, data in (("cotempqa", "Cotempqa", "cotempqa"), ("babi", "Babiqa", "babiqa")):
        for model, mname in ORIGINAL_MODELS.items():
            for suffix, cond in ORIGINAL_CONDITIONS.items():
                adapter = f"{model}-sft-adapter{suffix}_default"
                gold_dir = root / "data" / data / ("sft_dataset_reasoning_with_facts_chat_template"
                                                   if suffix else "sft_dataset_chat_template")
                files = []
                if _file_categories(dataset):
                    for cat in _file_categories(dataset):
                        f = root / "results" / res / "evaluation_outputs" / cat / f"{adapter}.json"
                        if f.exists():
                            files.append((cat, f, gold_dir / f"{cat}_test.csv"))
                else:
                    f = root / "results" / res / "evaluation_outputs" / f"{adapter}.json"
                    if f.exists():
                        files.append((None, f, gold_dir / "test.csv"))
                if not files:
                    continue
                cm = root / "results" / res / "confusion_matrix" / f"{adapter}_confusion_matrix.json"
                out.append({"dataset": dataset, "model": mname, "condition": cond, "files": files,
                            "committed": cm if cm.exists() else None})
    if not out:
        raise RescoreError(f"{root}: no published prediction file found (expected e.g. "
                           "results/Cotempqa/evaluation_outputs/equal/Qwen3-1.7B-sft-adapter-"
                           "reasoning-facts_default.json)")
    return out


def committed_tables(path: Path) -> dict[str, list[list[int]]]:
    """The three tables of a committed confusion-matrix JSON (counts; ``matrix1`` = answer x
    category, ``matrix2`` = answer x fact, ``matrix3`` = answer x trace) by step."""
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise RescoreError(f"{path}: not readable as JSON ({e})") from None
    out = {}
    for key, (step, word) in _MATRIX_STEP.items():
        m = obj.get(key)
        if not isinstance(m, dict):
            continue
        cells = [m.get(f"correct_answer_correct_{word}"), m.get(f"correct_answer_incorrect_{word}"),
                 m.get(f"incorrect_answer_correct_{word}"), m.get(f"incorrect_answer_incorrect_{word}")]
        if any(c is None for c in cells):
            raise RescoreError(f"{path}: {key} lacks a cell ({sorted(m)})")
        if any(float(c) != int(float(c)) for c in cells):
            raise RescoreError(f"{path}: {key} holds shares, not counts; cannot rebuild its table")
        a, b, c, d = (int(float(x)) for x in cells)
        out[step] = [[a, b], [c, d]]
    return out


def _add(t1: list[list[int]] | None, t2: list[list[int]]) -> list[list[int]]:
    if t1 is None:
        return [list(r) for r in t2]
    return [[t1[i][j] + t2[i][j] for j in range(2)] for i in range(2)]


def rescore_original(root: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(tables, ems, joins) of every published run of a checkout (:func:`original_layout`).

    ``tables``: one row per dataset, model, trace condition, source and step with the pooled
    2x2 table (categories summed, as the original pooled) and ``n``. Sources: ``committed``
    (the original's committed JSON), ``compat`` (its own script's rules on its published
    files: evaluated outputs only, the original's join against its test CSVs, the official
    subject/object rule), ``compat_answer_type`` (the same with the ``answer_type`` rule) and
    ``strict`` (the project's rules, every output, the gold rebuilt from each line).
    ``ems``: answer EM per dataset, model, condition and category under the original's answer
    rules with either subject/object rule, and the strict EM. ``joins``: the join's counts."""
    tab_rows, em_rows, join_rows = [], [], []
    for run in original_layout(root):
        ds, model, cond = run["dataset"], run["model"], run["condition"]
        pooled: dict[tuple[str, str], list[list[int]]] = {}
        n_items: dict[str, int] = {}
        for cat, pred_path, gold_csv in run["files"]:
            if not gold_csv.exists():
                raise RescoreError(f"{gold_csv}: the test CSV of {pred_path} is missing")
            res = {}
            for key, mode, rule in (("compat", "compat", "official"),
                                    ("compat_answer_type", "compat", "answer_type"),
                                    ("strict", "strict", "official")):
                summ, items = rescore(ds, pred_path, category=cat, mode=mode, compat_join="original",
                                      condition=cond, gold_csv=gold_csv if mode == "compat" else None,
                                      cotemp_rule=rule)
                res[key] = (summ, items)
                block = summ["compat"] if mode == "compat" else summ["strict"]
                n_items[key] = n_items.get(key, 0) + (summ["compat"]["n_evaluated"] if mode == "compat"
                                                      else summ["n"])
                for step, tname in STEP_TABLE.items():
                    pooled[(key, step)] = _add(pooled.get((key, step)), block["tables"][tname])
            j = res["compat"][0]["join"]
            join_rows.append({"dataset": ds, "model": model, "condition": cond, "category": cat,
                              "n": res["compat"][0]["n"],
                              "n_evaluated": res["compat"][0]["compat"]["n_evaluated"],
                              **{k: v for k, v in j.items() if k != "mode"}})
            em_rows.append({"dataset": ds, "model": model, "condition": cond, "category": cat,
                            "n": res["strict"][0]["n"],
                            "em_official": res["compat"][0]["answer"]["em"],
                            "em_answer_type": res["compat_answer_type"][0]["answer"]["em"],
                            "em_strict": res["strict"][0]["answer"]["em"]})
        if not scoring.has_trace_target(cond):  # vanilla: no steps to compare
            continue
        committed = committed_tables(run["committed"]) if run["committed"] is not None else {}
        if not committed:
            committed = COMMITTED_TABLES.get((ds, model, cond), {})
        for step in STEP_TABLE:
            if step in committed:
                t = committed[step]
                tab_rows.append({"dataset": ds, "model": model, "condition": cond,
                                 "source": "committed", "step": step, "n": int(np.sum(t)), "table": t})
            for key in ("compat", "compat_answer_type", "strict"):
                t = pooled[(key, step)]
                tab_rows.append({"dataset": ds, "model": model, "condition": cond, "source": key,
                                 "step": step, "n": int(np.sum(t)), "table": t})
    return pd.DataFrame(tab_rows), pd.DataFrame(em_rows), pd.DataFrame(join_rows)


def committed_only() -> pd.DataFrame:
    """The committed tables (:data:`COMMITTED_TABLES`) in the layout of
    :func:`rescore_original`'s tables (what 06 shows when no checkout is given)."""
    return pd.DataFrame([{"dataset": ds, "model": m, "condition": c, "source": "committed",
                          "step": step, "n": int(np.sum(t)), "table": t}
                         for (ds, m, c), steps in COMMITTED_TABLES.items() for step, t in steps.items()])


def with_association(tables: pd.DataFrame) -> pd.DataFrame:
    """``tables`` with chi-square (without and with Yates), their p-values, phi and the joint
    share P(A and T) of every table (:func:`helpers.stats.association`)."""
    from . import stats

    keys = ["chi2", "chi2_p", "chi2_yates", "chi2_yates_p", "phi", "joint", "p_a_given_t",
            "p_a_given_not_t"]
    rows = []
    for t in tables["table"]:
        a = stats.association(t)
        rows.append({k: a[k] for k in keys})
    return pd.concat([tables.reset_index(drop=True), pd.DataFrame(rows, columns=keys)], axis=1)


def side_by_side(tables: pd.DataFrame, step: str = "trace") -> pd.DataFrame:
    """One row per dataset, model and condition; for each source its table, n, chi-square
    (without / with Yates), phi and joint share, side by side."""
    t = with_association(tables[tables["step"] == step])
    out = None
    idx = ["dataset", "model", "condition"]
    for src in SOURCES:
        part = t[t["source"] == src]
        if part.empty:
            continue
        part = part[idx + ["table", "n", "chi2", "chi2_yates", "phi", "joint"]].rename(
            columns={c: f"{src}:{c}" for c in ["table", "n", "chi2", "chi2_yates", "phi", "joint"]})
        out = part if out is None else out.merge(part, on=idx, how="outer")
    return out.reset_index(drop=True) if out is not None else pd.DataFrame(columns=idx)


def write_original_tables(root: Path, out: Path = ORIGINAL_OUT) -> dict[str, Path]:
    """Re-score a checkout and write ``tables.json`` (every table with its statistics),
    ``ems.csv``, ``joins.csv`` and ``side_by_side.md`` to ``out``; returns the paths."""
    tables, ems, joins = rescore_original(Path(root))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    full = with_association(tables)
    written = {"tables": out / "tables.json", "ems": out / "ems.csv", "joins": out / "joins.csv",
               "side_by_side": out / "side_by_side.md"}
    written["tables"].write_text(json.dumps({"original_dir": str(Path(root).resolve()),
                                             "rows": scoring._jsonable(full.to_dict("records"))},
                                            indent=1))
    ems.to_csv(written["ems"], index=False)
    joins.to_csv(written["joins"], index=False)
    from . import stats

    md = []
    for step in STEP_TABLE:
        sbs = side_by_side(tables, step)
        if len(sbs):
            md += [f"## answer x {step}", "", stats.markdown_table(sbs.astype(
                {c: str for c in sbs.columns if c.endswith(":table")})), ""]
    written["side_by_side"].write_text("\n".join(md))
    return written


def gold_trace_files(root: Path) -> dict[str, list[tuple[str | None, Path]]]:
    """The original's correct-trace test CSVs under ``root``: a checkout of its repository
    (``data/{cotempqa,babiqa}/sft_dataset_reasoning_with_facts_chat_template/``) or the
    layout of ``../shared/data/original`` (``{cotempqa,babi}/with_facts/``). Per dataset,
    [(category or None, csv)]; datasets without files are left out."""
    root = Path(root)
    out: dict[str, list[tuple[str | None, Path]]] = {}
    for ds, subdirs in (("cotempqa", ("data/cotempqa/sft_dataset_reasoning_with_facts_chat_template",
                                      "cotempqa/with_facts")),
                        ("babi", ("data/babiqa/sft_dataset_reasoning_with_facts_chat_template",
                                  "babi/with_facts"))):
        for sub in subdirs:
            d = root / sub
            if _file_categories(ds):
                files = [(c, d / f"{c}_test.csv") for c in _file_categories(ds) if (d / f"{c}_test.csv").exists()]
            else:
                files = [(None, d / "test.csv")] if (d / "test.csv").exists() else []
            if files:
                out[ds] = files
                break
    return out


def script_on_gold_traces(root: Path, work: Path | None = None) -> pd.DataFrame:
    """What the original's confusion-matrix rules give a student that writes every test row's
    own training target (the correct trace and answer of the original's test CSVs, their
    ``messages``): per dataset and category, the step accuracies under the original's join
    (``compat``) and joined by the row itself (``own_row``), and how often the join took
    another problem's row. Every step of these targets is right by construction, so what is
    below 1 is the scoring. ``work``: a folder for the intermediate prediction files (default:
    a temporary one)."""
    import tempfile

    files = gold_trace_files(root)
    if not files:
        raise RescoreError(f"{root}: no correct-trace test CSV of the original found")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(work) if work is not None else Path(tmp)
        for ds, pairs in files.items():
            for cat, csv in pairs:
                df = pd.read_csv(csv, keep_default_na=False)
                texts = df["answer"].astype(str).tolist()
                lines, other = [], 0
                for k, r in enumerate(df.to_dict("records")):
                    msgs = ast.literal_eval(r["messages"])
                    target = "assistant\n" + str(msgs[-1]["content"])
                    if qa.get(ds).original_needs_triple:
                        gold = ast.literal_eval(r["answer"])
                        facts = ast.literal_eval(r["facts"])
                        lines.append({"input": "", "prediction": target, "gold": gold,
                                      "triple_element": r["triple_element"], "facts": facts,
                                      "question": _question_from_prompt(str(r["question"])) or str(r["question"])})
                    else:
                        gold = [str(r["answer"])]
                        lines.append({"input": "", "prediction": target, "gold": gold[0],
                                      "question": r["question"], "passage": r["passages"],
                                      "query_type": r["query_type"], "reasoning": r["answer_passage"]})
                    j = next((i for i, t in enumerate(texts) if str(gold[0]) in t), None)
                    other += j is not None and j != k
                path = base / ds / (cat or "all") / "gold_targets.jsonl"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("".join(json.dumps(x) + "\n" for x in lines))
                s, _ = rescore(ds, path, category=cat, mode="compat", gold_csv=csv, condition="correct")
                s_own, _ = rescore(ds, path, category=cat, mode="compat", compat_join="id", condition="correct")
                rows.append({"dataset": ds, "category": cat or "all", "n": s["n"],
                             "n_evaluated": s["compat"]["n_evaluated"], "other_row": other,
                             "carried_over": s["join"]["carried_over"],
                             "cls_compat": s["compat"]["cls_acc"], "ir_compat": s["compat"]["ir_acc"],
                             "trace_compat": s["compat"]["trace_acc"],
                             "cls_own_row": s_own["compat"]["cls_acc"], "ir_own_row": s_own["compat"]["ir_acc"],
                             "trace_own_row": s_own["compat"]["trace_acc"], "answer_em": s["answer"]["em"]})
    return pd.DataFrame(rows)


def committed_step_accuracy() -> pd.DataFrame:
    """Step accuracies of the committed tables (:data:`COMMITTED_TABLES`): the share of
    items whose classification / IR / trace the original's script counted correct."""
    rows = []
    for (ds, m, c), steps in COMMITTED_TABLES.items():
        row = {"dataset": ds, "model": m, "condition": c}
        for step, t in steps.items():
            row["n"] = int(np.sum(t))
            row[step] = (t[0][0] + t[1][0]) / np.sum(t)
        rows.append(row)
    return pd.DataFrame(rows)


def load_original_tables(out: Path = ORIGINAL_OUT) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, str] | None:
    """(tables, ems, joins, original_dir) written by :func:`write_original_tables`, or None
    when ``out`` holds none (no checkout was re-scored yet)."""
    out = Path(out)
    if not (out / "tables.json").exists():
        return None
    obj = json.loads((out / "tables.json").read_text())
    tables = pd.DataFrame(obj["rows"])[["dataset", "model", "condition", "source", "step", "n", "table"]]
    ems = pd.read_csv(out / "ems.csv") if (out / "ems.csv").exists() else pd.DataFrame()
    joins = pd.read_csv(out / "joins.csv") if (out / "joins.csv").exists() else pd.DataFrame()
    return tables, ems, joins, str(obj.get("original_dir", ""))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.original_dir is not None:
        try:
            written = write_original_tables(args.original_dir, args.out or ORIGINAL_OUT)
        except RescoreError as e:
            print(f"rescore: error: {e}", file=sys.stderr)
            return 2
        for k, pth in written.items():
            print(f"{k}: {pth}")
        return 0
    if args.dataset is None or args.predictions is None:
        parser.error("--dataset and --predictions are required (or --original-dir DIR)")
    try:
        summary, items = rescore(args.dataset, args.predictions, category=args.category,
                                 gold=args.gold, mode=args.mode, compat_join=args.compat_join,
                                 condition=args.condition, gold_csv=args.gold_csv,
                                 cotemp_rule=args.cotemp_rule)
    except RescoreError as e:
        print(f"rescore: error: {e}", file=sys.stderr)
        return 2
    if args.items_out is not None:
        out = Path(args.items_out)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix == ".csv":
            items.to_csv(out, index=False)
        else:
            items.to_parquet(out, index=False)
    json.dump(summary, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
