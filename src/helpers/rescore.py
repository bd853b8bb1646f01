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

Example::

    python -m helpers.rescore --dataset cotempqa --predictions outputs/equal/correct.jsonl \\
        --category equal --mode compat
"""
from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from . import scoring
from .templates import DATASETS

COTEMPQA_CATEGORIES = ("equal", "overlap", "during", "mix")
KNOWN_CONDITIONS = tuple(sorted(scoring.TRACE_CONDITIONS | {"vanilla", "untrained"}))


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
    if dataset == "cotempqa" and category is None:
        folder = path.parent.name
        if folder in COTEMPQA_CATEGORIES:
            category = folder
        else:
            raise RescoreError(f"{path}: CoTempQA needs --category (one of {COTEMPQA_CATEGORIES}); "
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
        if dataset == "cotempqa":
            context = _listish(obj.get("facts"))
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
            order = ("reasoning", "answer_passage") if dataset == "babi" else ("answer_passage", "reasoning")
            field = next((f for f in order if obj.get(f) not in (None, "", [])), None)
            if field is None:
                issues["no_relevant_field"] += 1
                relevant = []
            else:
                value = obj[field]
                wanted = _listish(value)
                if wanted is None:
                    value = str(value)
                    wanted = value.split("\n") if dataset == "babi" else [value]
                relevant, unmatched = _relevant_indices(context, wanted)
                issues["relevant_not_in_context"] += unmatched
        rid = f"{path.name}:{lineno}"
        preds.append({"id": rid, "prediction": obj["prediction"]})
        gold.append({"id": rid, "dataset": dataset, "question": str(question),
                     "context": [str(c) for c in context], "answers": answers,
                     "category": str(cat), "relevant": relevant, "meta": json.dumps(meta)})
    return pd.DataFrame(preds), pd.DataFrame(gold), issues


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
    hits = [p for p in list(path.parent.parts) + [path.stem] if p in KNOWN_CONDITIONS]
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
    p.add_argument("--dataset", required=True, choices=DATASETS, help="which dataset's scorer")
    p.add_argument("--predictions", required=True, type=Path, metavar="FILE",
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
    p.add_argument("--compat-join", default="id", choices=list(scoring.COMPAT_JOINS),
                   help="(default id) compat trace checks: gold row of the item itself (id), or the "
                        "original's join (answer): the first row whose answer text contains "
                        "the item's first gold answer")
    p.add_argument("--condition", default=None,
                   help="the run's condition (sets has_trace_target); default: a condition "
                        f"name in the file's path ({', '.join(KNOWN_CONDITIONS)}), else 'unknown'")
    p.add_argument("--items-out", default=None, type=Path, metavar="FILE",
                   help="also write the per-item scores (.parquet or .csv)")
    return p


def rescore(dataset: str, predictions: Path, *, category: str | None = None,
            gold: Path | None = None, mode: str = "strict", compat_join: str = "id",
            condition: str | None = None) -> tuple[dict, pd.DataFrame]:
    """(JSON summary, per-item scores) of one prediction file."""
    predictions = Path(predictions)
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
    try:
        items = scoring.score_items(preds, gold_df, dataset=dataset, condition=condition,
                                    mode_compat_join=compat_join,
                                    answer_rule="compat" if mode == "compat" else "strict")
    except (KeyError, ValueError) as e:
        raise RescoreError(f"{predictions}: {e}") from None
    summary = scoring.summarize(items)
    chosen = summary["strict"] if mode == "strict" else summary["compat"]
    head = {"predictions": str(predictions), "format": fmt, "dataset": dataset, "mode": mode,
            "compat_join": compat_join, "condition": condition,
            "n": summary["n"], "answer": summary["answer"],
            "steps": {k: v for k, v in chosen.items() if k != "tables"},
            "tables": chosen["tables"],
            "failure_classes": dict(summary["parse_status"]["by_class"],
                                    compat_unevaluated=summary["compat"]["n_unevaluated"]),
            "gold_issues": issues}
    head.update({k: v for k, v in summary.items() if k not in head})
    return head, items


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        summary, items = rescore(args.dataset, args.predictions, category=args.category,
                                 gold=args.gold, mode=args.mode, compat_join=args.compat_join,
                                 condition=args.condition)
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
