"""The three datasets in one schema: real files, the Hugging Face hub, offline generators.

One row is one problem (docs/architecture.md, "Data schema")::

    id, dataset, split, question, context, answers, category, relevant, source, synthetic,
    flags, meta

``context`` / ``answers`` / ``flags`` are lists of str, ``relevant`` a list of indices into
``context`` (the default decomposition rule of :mod:`helpers.decompose`), ``meta`` a JSON
object string with the source metadata. :func:`validate` checks all of it.

Sources (``data_source``):

* ``synthetic``: the seeded generators of :mod:`helpers.synthetic` (offline, exact ground
  truth, labelled synthetic wherever shown);
* ``local``: real files under ``data_dir`` in the ``../shared/data`` layout:
  ``babi/en/qaN_<task>_{train,test}.txt``, ``cotempqa/{equal,overlap,during,mix}.json`` and,
  when present, ``marco/*.jsonl|*.parquet`` in the hub's MS MARCO schema (a file whose name
  contains ``train`` is the train pool, one with ``valid``/``dev``/``test`` the test pool).
  Without local MARCO files the synthetic MARCO generator stands in, with a warning;
* ``hub``: ``datasets.load_dataset`` at pinned revisions (:data:`HUB`).

Splits follow the original study (STUDY_SPEC §1):

* CoTempQA: per scenario ``sample(frac=0.2, random_state=data_seed)`` is test, the rest train;
* MS MARCO: per ``query_type`` 1,000 rows of train and 200 of validation (the test split),
  ``sample(n, random_state=data_seed)``;
* bAbI: one problem per story (its first question, the lines before it, its supporting
  lines); train = every train story; test = per task ``floor(10%)`` of the test stories,
  ``sample(n, random_state=data_seed)``. With the 11 original tasks that is 3,773 / 376.

``n_train`` / ``n_test`` then cap each split (seeded, stratified by category; None = all; a
``{dataset: n}`` mapping gives each dataset its own size).

Bad input: a malformed file raises ``ValueError`` naming the file, line and reason. A row
without a required field (question, answers, context) or with no gold answer is excluded by
that documented rule and reported by id; a row with an empty context, or whose answer is in
no fact (or in several), is kept with a flag (:func:`helpers.decompose.quality_flags`). Both
are counted in ``data/<profile>/data_card.json``.
"""
from __future__ import annotations

import json
import math
import os
import re
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from . import config, hub, paths
from . import decompose as dec
from .decompose import (BABI_TASKS, COTEMPQA_SCENARIOS, DATASETS, MARCO_QUERY_TYPES,
                        babi_task_numbers)

COLUMNS = ["id", "dataset", "split", "question", "context", "answers", "category", "relevant",
           "source", "synthetic", "flags", "meta"]
LIST_COLUMNS = ("context", "answers", "relevant", "flags")
SPLITS = ("train", "test")

# The parameters the data stage depends on (the stamp hashes these).
STAGE_KEYS = ["data_source", "data_dir", "n_train", "n_test", "babi_tasks", "data_seed"]

# Hub sources and their pinned revisions. MS MARCO: a full commit id. CoTempQA: the commit
# that uploaded the four scenario files, known here only by its prefix 9f49aba; bAbI: the
# hub's parquet conversion branch (the repo itself is a script dataset). Those two are
# resolved to full commit ids at run time, within a bounded wait (helpers.hub), and the full
# id is recorded in the data stamp and every row's source; replace them with the full ids
# once known (every other revision must be a full 40-hex id).
HUB = {
    "cotempqa": {"repo": "Warrieryes/CotempQA", "revision": "9f49aba"},
    "marco": {"repo": "microsoft/ms_marco", "revision": "a47ee7aae8d7d466ba15f9f0bfac3b3681087b3a"},
    "babi": {"repo": "facebook/babi_qa", "revision": "refs/convert/parquet"},
}
MARCO_PER_TYPE = {"train": 1000, "test": 200}   # the original's sample sizes
COTEMPQA_TEST_FRAC = 0.2
BABI_TEST_FRAC = 0.1
SYNTHETIC_DEFAULT_N = {"train": 1000, "test": 200}  # synthetic with n_train/n_test = None


# The one hub error (helpers.hub); kept under this name for callers of helpers.data.
HubUnavailable = hub.HubUnavailable


# =============================================================================== schema

def _is_listlike(x: Any) -> bool:
    return isinstance(x, (list, tuple, np.ndarray))


def validate(df: pd.DataFrame) -> pd.DataFrame:
    """Check ``df`` against the data schema; raise ``ValueError`` naming the offending row id
    and column. Returns ``df`` unchanged."""
    cols = list(df.columns)
    if cols != COLUMNS:
        missing = [c for c in COLUMNS if c not in cols]
        extra = [c for c in cols if c not in COLUMNS]
        raise ValueError(f"schema: columns must be exactly {COLUMNS}; missing {missing}, "
                         f"unexpected {extra}" + ("" if missing or extra else ", order differs"))
    dup = df["id"][df["id"].duplicated()]
    if len(dup):
        raise ValueError(f"row id={dup.iloc[0]!r}: column 'id': duplicated id")
    for row in df.to_dict("records"):
        rid = row["id"]

        def bad(col, why):
            raise ValueError(f"row id={rid!r}: column {col!r}: {why}")

        if not isinstance(rid, str) or not rid:
            bad("id", "must be a non-empty str")
        if row["dataset"] not in DATASETS:
            bad("dataset", f"{row['dataset']!r} not in {DATASETS}")
        if row["split"] not in SPLITS:
            bad("split", f"{row['split']!r} not in {SPLITS}")
        if not isinstance(row["question"], str) or not row["question"].strip():
            bad("question", "must be a non-empty str")
        for col in LIST_COLUMNS:
            if not _is_listlike(row[col]):
                bad(col, f"must be a list, got {type(row[col]).__name__}")
        if not all(isinstance(c, str) for c in row["context"]):
            bad("context", "every entry must be a str")
        if len(row["answers"]) == 0 or not all(isinstance(a, str) for a in row["answers"]):
            bad("answers", "must be a non-empty list of str")
        if not all(isinstance(f, str) for f in row["flags"]):
            bad("flags", "every flag must be a str")
        rel = list(row["relevant"])
        if not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in rel):
            bad("relevant", "must hold ints")
        if any(i < 0 or i >= len(row["context"]) for i in rel):
            bad("relevant", f"index out of range for a context of {len(row['context'])}: {rel}")
        if len(set(rel)) != len(rel):
            bad("relevant", f"duplicate indices {rel}")
        if not isinstance(row["category"], str) or not row["category"]:
            bad("category", "must be a non-empty str")
        if row["category"] not in dec.labels(row["dataset"]):
            bad("category", f"{row['category']!r} is not a {row['dataset']} label")
        if not isinstance(row["source"], str) or not row["source"]:
            bad("source", "must be a non-empty str")
        if not isinstance(row["synthetic"], (bool, np.bool_)):
            bad("synthetic", "must be a bool")
        if bool(row["synthetic"]) != (row["source"] == "synthetic"):
            bad("synthetic", f"synthetic={row['synthetic']} contradicts source {row['source']!r}")
        if not isinstance(row["meta"], str):
            bad("meta", "must be a JSON object string")
        try:
            m = json.loads(row["meta"])
        except json.JSONDecodeError as e:
            bad("meta", f"invalid JSON ({e})")
        if not isinstance(m, dict):
            bad("meta", "must decode to a JSON object")
    return df


def _to_lists(df: pd.DataFrame) -> pd.DataFrame:
    """Parquet returns list columns as numpy arrays: make them plain Python lists."""
    df = df.copy()
    for col in LIST_COLUMNS:
        if col in df:
            df[col] = [[x.item() if hasattr(x, "item") else x for x in v] if v is not None else []
                       for v in df[col]]
    if "relevant" in df:
        df["relevant"] = [[int(i) for i in v] for v in df["relevant"]]
    if "synthetic" in df:
        df["synthetic"] = df["synthetic"].astype(bool)
    return df


def make_row(*, id: str, dataset: str, split: str, question: str, context: Sequence[str],
             answers: Sequence[str], category: str, source: str, meta: Mapping[str, Any],
             relevant: Sequence[int] | None = None, extra_flags: Iterable[str] = ()) -> dict:
    """One schema row. ``relevant`` defaults to the default decomposition rule; the quality
    flags are derived from it."""
    row = {"id": id, "dataset": dataset, "split": split, "question": str(question).strip(),
           "context": [str(c) for c in context], "answers": [str(a) for a in answers],
           "category": category, "relevant": [], "source": source,
           "synthetic": source == "synthetic", "flags": [],
           "meta": json.dumps(dict(meta), ensure_ascii=False, sort_keys=True)}
    row["relevant"] = [int(i) for i in (relevant if relevant is not None
                                        else dec.relevant(dataset, row, "default"))]
    row["flags"] = list(extra_flags) + [f for f in dec.quality_flags(dataset, row)
                                        if f not in extra_flags]
    return row


def frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows -> a DataFrame with exactly the schema's columns, in order."""
    df = pd.DataFrame(list(rows), columns=COLUMNS)
    if len(df):
        df["synthetic"] = df["synthetic"].astype(bool)
    return df


def _excluded(rid: str, reason: str, where: str = "") -> dict:
    return {"id": rid, "reason": reason, **({"where": where} if where else {})}


# =============================================================================== sampling

def stratified_sample(df: pd.DataFrame, n: int | None, seed: int, by: str = "category") -> pd.DataFrame:
    """``n`` rows of ``df``, seeded, stratified by ``by`` (proportional allocation by largest
    remainder; each group at least one row when ``n`` allows); original order kept.
    ``n`` None or >= len(df): all rows."""
    if n is None or n >= len(df):
        return df
    if n <= 0:
        return df.iloc[0:0]
    sizes = df.groupby(by, sort=True).size()
    quota = sizes / sizes.sum() * n
    base = np.floor(quota).astype(int)
    left = n - int(base.sum())
    order = (quota - base).sort_values(ascending=False, kind="stable").index[:left]
    base.loc[order] += 1
    if n >= len(sizes):  # every group keeps at least one row, taken from the largest share
        for name in base.index[base == 0]:
            donor = base.idxmax()
            base[donor] -= 1
            base[name] = 1
    parts = [g.sample(n=int(base[name]), random_state=seed)
             for name, g in df.groupby(by, sort=True) if base[name] > 0]
    out = pd.concat(parts)
    return df.loc[df.index.isin(out.index)]


# =============================================================================== CoTempQA

_COTEMPQA_REQUIRED = ("question", "facts", "answer")


def read_jsonl(path: str | Path) -> list[tuple[int, dict]]:
    """(line number, object) for every non-blank line; a bad line raises with file:line."""
    path = Path(path)
    out = []
    with open(path, encoding="utf-8") as f:
        for ln, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{ln}: malformed JSON line ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{ln}: expected a JSON object, got {type(obj).__name__}")
            out.append((ln, obj))
    return out


def cotempqa_rows(records: Sequence[tuple[int, Mapping]], scenario: str, source: str,
                  where: str) -> tuple[list[dict], list[dict]]:
    """CoTempQA records (``index, triple_element, question, facts, answer``) -> schema rows
    (split unset) and the excluded rows. ``where`` names the file for messages."""
    if scenario not in COTEMPQA_SCENARIOS:
        raise ValueError(f"unknown CoTempQA scenario {scenario!r}; expected {COTEMPQA_SCENARIOS}")
    rows, excluded = [], []
    for pos, (ln, r) in enumerate(records):
        idx = r.get("index", pos)
        rid = f"cotempqa/{scenario}/{idx}"
        missing = [k for k in _COTEMPQA_REQUIRED if r.get(k) is None]
        if missing:
            excluded.append(_excluded(rid, f"missing field {', '.join(missing)}", f"{where}:{ln}"))
            continue
        facts, answers = r["facts"], r["answer"]
        if isinstance(answers, str):
            answers = [answers]
        if not _is_listlike(facts) or not _is_listlike(answers):
            excluded.append(_excluded(rid, "facts/answer not a list", f"{where}:{ln}"))
            continue
        answers = [str(a) for a in answers if str(a).strip()]
        if not answers:
            excluded.append(_excluded(rid, "no gold answer", f"{where}:{ln}"))
            continue
        if not str(r["question"]).strip():
            excluded.append(_excluded(rid, "empty question", f"{where}:{ln}"))
            continue
        meta = {"index": idx, "triple_element": r.get("triple_element"), "scenario": scenario,
                "file": where, "line": ln}
        rows.append(make_row(id=rid, dataset="cotempqa", split="", question=r["question"],
                             context=list(facts), answers=answers, category=scenario,
                             source=source, meta=meta))
    return rows, excluded


def split_cotempqa(df: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The original split: per scenario ``sample(frac=0.2, random_state=seed)`` is test."""
    df = df.copy()
    df["split"] = "train"
    for cat in COTEMPQA_SCENARIOS:
        g = df[df["category"] == cat].reset_index()
        if g.empty:
            continue
        test = g.sample(frac=COTEMPQA_TEST_FRAC, random_state=seed)["index"]
        df.loc[test.values, "split"] = "test"
    return df


def load_cotempqa_local(data_dir: str | Path, seed: int = 42) -> tuple[pd.DataFrame, dict]:
    """CoTempQA from ``<data_dir>/cotempqa/{equal,overlap,during,mix}.json`` (JSON lines)."""
    d = Path(data_dir) / "cotempqa"
    rows, excluded = [], []
    for s in COTEMPQA_SCENARIOS:
        p = d / f"{s}.json"
        if not p.exists():
            raise FileNotFoundError(f"CoTempQA scenario file missing: {p} (expected "
                                    f"{', '.join(x + '.json' for x in COTEMPQA_SCENARIOS)} in {d})")
        r, e = cotempqa_rows(read_jsonl(p), s, f"local:cotempqa/{s}.json", f"cotempqa/{s}.json")
        rows += r
        excluded += e
    df = split_cotempqa(frame(rows), seed)
    return df, {"source": f"local:{d}", "excluded": excluded, "warnings": []}


# =============================================================================== MS MARCO

def marco_rows(records: Sequence[tuple[int, Mapping]], split: str, version: str, pool: str,
               source: str, where: str) -> tuple[list[dict], list[dict]]:
    """MS MARCO records in the hub schema (``query, query_id, query_type, passages
    {is_selected, passage_text, url}, answers, wellFormedAnswers``) -> schema rows."""
    rows, excluded = [], []
    for pos, (ln, r) in enumerate(records):
        qid = r.get("query_id", pos)
        rid = f"marco/{version}/{pool}/{qid}"
        missing = [k for k in ("query", "query_type", "passages", "answers") if r.get(k) is None]
        if missing:
            excluded.append(_excluded(rid, f"missing field {', '.join(missing)}", f"{where}:{ln}"))
            continue
        p = r["passages"]
        if isinstance(p, Mapping):   # the hub's struct of lists
            texts, sel, urls = (list(p.get("passage_text") or []), list(p.get("is_selected") or []),
                                list(p.get("url") or []))
        elif _is_listlike(p):          # a list of passage objects
            texts = [x.get("passage_text", "") for x in p]
            sel = [x.get("is_selected", 0) for x in p]
            urls = [x.get("url", "") for x in p]
        else:
            excluded.append(_excluded(rid, "passages not a struct or list", f"{where}:{ln}"))
            continue
        answers = [str(a) for a in (r["answers"] if _is_listlike(r["answers"]) else [r["answers"]])
                   if str(a).strip()]
        if not answers:
            excluded.append(_excluded(rid, "no gold answer", f"{where}:{ln}"))
            continue
        qtype = str(r["query_type"]).upper()
        if qtype not in MARCO_QUERY_TYPES:
            excluded.append(_excluded(rid, f"unknown query_type {r['query_type']!r}", f"{where}:{ln}"))
            continue
        meta = {"query_id": qid, "query_type": qtype, "version": version, "pool": pool,
                "is_selected": [int(s) for s in sel], "urls": urls,
                "wellFormedAnswers": list(r.get("wellFormedAnswers") or []),
                "file": where, "line": ln}
        row = make_row(id=rid, dataset="marco", split=split, question=r["query"], context=texts,
                       answers=answers, category=qtype, source=source, meta=meta)
        # What the original cited as the answer passage ("No Answer Present." cites itself).
        m = json.loads(row["meta"])
        m["answer_passage"] = (texts[row["relevant"][0]] if row["relevant"]
                               else answers[0] if answers[0].strip() == dec.NO_ANSWER else None)
        row["meta"] = json.dumps(m, ensure_ascii=False, sort_keys=True)
        rows.append(row)
    return rows, excluded


def _sample_per_type(types: pd.Series, n: int | None, seed: int) -> list[int]:
    """Positions of ``n`` rows per query type, ``sample(n, random_state=seed)`` (all when
    fewer), in original order."""
    s = types.astype(str).str.upper().reset_index(drop=True)
    picked = []
    for t in MARCO_QUERY_TYPES:
        g = s[s == t]
        if n is None or len(g) <= n:
            picked += list(g.index)
        else:
            picked += list(g.sample(n=n, random_state=seed).index)
    return sorted(picked)


def _read_marco_file(p: Path) -> list[tuple[int, dict]]:
    if p.suffix == ".parquet":
        t = pd.read_parquet(p)
        recs = t.to_dict("records")
        return [(i + 1, _plain(r)) for i, r in enumerate(recs)]
    return read_jsonl(p)


def _plain(x):
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, np.ndarray):
        return [_plain(v) for v in x.tolist()]
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def marco_local_files(data_dir: str | Path) -> dict[str, list[Path]]:
    """Local MS MARCO files by pool: ``train`` (name contains 'train') and ``test`` (name
    contains 'valid', 'dev' or 'test')."""
    d = Path(data_dir) / "marco"
    files = sorted(list(d.glob("*.jsonl")) + list(d.glob("*.parquet"))) if d.is_dir() else []
    out: dict[str, list[Path]] = {"train": [], "test": []}
    for p in files:
        name = p.name.lower()
        if "train" in name:
            out["train"].append(p)
        elif any(k in name for k in ("valid", "dev", "test")):
            out["test"].append(p)
    return out


def load_marco_local(data_dir: str | Path, seed: int = 42, version: str = "v2.1",
                     per_type: Mapping[str, int | None] = MARCO_PER_TYPE) -> tuple[pd.DataFrame, dict]:
    """MS MARCO from local files in the hub schema (see :func:`marco_local_files`)."""
    files = marco_local_files(data_dir)
    if not files["train"] or not files["test"]:
        raise FileNotFoundError(f"no local MS MARCO train and test files under {Path(data_dir) / 'marco'} "
                                "(expected *train*.jsonl|parquet and *validation*.jsonl|parquet)")
    rows, excluded = [], []
    for split, pool in (("train", "train"), ("test", "validation")):
        recs, wheres = [], []
        for p in files[split]:
            for ln, r in _read_marco_file(p):
                recs.append((ln, r))
                wheres.append(f"marco/{p.name}")
        types = pd.Series([r.get("query_type", "") for _, r in recs])
        for i in _sample_per_type(types, per_type[split], seed):
            r, e = marco_rows([recs[i]], split, version, pool, f"local:{wheres[i]}", wheres[i])
            rows += r
            excluded += e
    return frame(rows), {"source": f"local:{Path(data_dir) / 'marco'}", "excluded": excluded,
                         "warnings": []}


# =============================================================================== bAbI

_BABI_FILE = re.compile(r"^qa(\d+)_(.+)_(train|test|valid)\.txt$")


def parse_babi(path: str | Path) -> list[list[dict]]:
    """A bAbI text file -> stories, each a list of lines ``{id, text, question, answer,
    supporting, line}``. A malformed line raises ``ValueError`` with file:line and reason."""
    path = Path(path)
    stories: list[list[dict]] = []
    prev = 0
    with open(path, encoding="utf-8") as f:
        for ln, raw in enumerate(f, 1):
            line = raw.rstrip("\n").rstrip("\r")
            if not line.strip():
                continue
            head, _, rest = line.partition(" ")
            if not head.isdigit() or not rest.strip():
                raise ValueError(f"{path}:{ln}: expected 'ID text' with a numeric line id, got {line[:60]!r}")
            lid = int(head)
            if lid == 1:
                stories.append([])
            elif not stories or lid != prev + 1:
                raise ValueError(f"{path}:{ln}: line id {lid} does not follow {prev} (a story starts at 1)")
            prev = lid
            parts = rest.split("\t")
            if len(parts) == 1:
                stories[-1].append({"id": head, "text": parts[0].strip(), "question": False,
                                    "answer": None, "supporting": [], "line": ln})
            elif len(parts) == 3:
                sup = parts[2].split()
                if not all(s.isdigit() for s in sup):
                    raise ValueError(f"{path}:{ln}: supporting ids must be numbers, got {parts[2]!r}")
                if not parts[1].strip():
                    raise ValueError(f"{path}:{ln}: question without an answer")
                stories[-1].append({"id": head, "text": parts[0].strip(), "question": True,
                                    "answer": parts[1].strip(), "supporting": sup, "line": ln})
            else:
                raise ValueError(f"{path}:{ln}: a question line needs 'question<TAB>answer<TAB>ids', "
                                 f"got {len(parts)} tab-separated fields")
    return stories


def babi_story_row(story: Sequence[Mapping], task: int, pool: str, k: int, source: str,
                   where: str) -> tuple[dict | None, dict | None]:
    """One problem per story: its first question, the context lines before it, the lines at
    its supporting ids, its answer. Returns (row, None) or (None, excluded)."""
    rid = f"babi/qa{task}/{pool}/{k}"
    qi = next((i for i, l in enumerate(story) if l["question"]), None)
    if qi is None:
        return None, _excluded(rid, "story without a question", where)
    q = story[qi]
    ctx = [l for l in story[:qi] if not l["question"]]
    meta = {"task": task, "task_name": BABI_TASKS[task], "pool": pool, "story": k,
            "line_ids": [l["id"] for l in ctx], "supporting_ids": list(q["supporting"]),
            "question_line_id": q["id"], "file": where, "line": q.get("line")}
    row = make_row(id=rid, dataset="babi", split="train" if pool == "train" else "test",
                   question=q["text"], context=[l["text"] for l in ctx], answers=[q["answer"]],
                   category=BABI_TASKS[task], source=source, meta=meta)
    return row, None


def _babi_test_pick(n_stories: int, seed: int) -> list[int]:
    """The test stories of one task: floor(10%) of them, ``sample(n, random_state=seed)``."""
    n = int(math.floor(n_stories * BABI_TEST_FRAC + 1e-9))
    return sorted(pd.Series(range(n_stories)).sample(n=n, random_state=seed).tolist())


def babi_task_file(data_dir: str | Path, task: int, pool: str) -> Path:
    d = Path(data_dir) / "babi" / "en"
    p = d / f"qa{task}_{BABI_TASKS[task]}_{pool}.txt"
    if not p.exists():
        hits = sorted(d.glob(f"qa{task}_*_{pool}.txt"))
        if not hits:
            raise FileNotFoundError(f"bAbI file missing: {p}")
        p = hits[0]
    return p


def load_babi_local(data_dir: str | Path, babi_tasks: str = "paper11", seed: int = 42) -> tuple[pd.DataFrame, dict]:
    """bAbI (en, 1k) from ``<data_dir>/babi/en/qaN_<task>_{train,test}.txt``."""
    rows, excluded = [], []
    for t in babi_task_numbers(babi_tasks):
        for pool in ("train", "test"):
            p = babi_task_file(data_dir, t, pool)
            where = f"babi/en/{p.name}"
            stories = parse_babi(p)
            keep = range(len(stories)) if pool == "train" else _babi_test_pick(len(stories), seed)
            for k in keep:
                row, exc = babi_story_row(stories[k], t, pool, k, f"local:{where}", where)
                (rows.append(row) if row else excluded.append(exc))
    return frame(rows), {"source": f"local:{Path(data_dir) / 'babi' / 'en'}", "excluded": excluded,
                         "warnings": []}


# =============================================================================== hub
#
# Each hub loader takes its location: None = the hub repo of :data:`HUB` at its pinned
# revision (after a bounded reachability and access check, :mod:`helpers.hub`), or a local
# folder laid out exactly as that repo is. Both go through the same
# ``datasets.load_dataset(location, data_files=..., revision=...)`` call (only the
# location differs), with explicit ``data_files``: the bAbI parquet-conversion branch keeps
# each config in a folder (``en-qa1/train/0000.parquet``), from which datasets would infer a
# single ``default`` config, so config names are not used for any of the three.

def cotempqa_data_files() -> dict[str, str]:
    """CoTempQA: the four scenario files (JSON lines) at the repo root."""
    return {s: f"{s}.json" for s in COTEMPQA_SCENARIOS}


def marco_data_files(version: str, pool: str) -> dict[str, str]:
    """MS MARCO: ``<version>/<pool>-NNNNN-of-NNNNN.parquet`` (config folders v1.1/, v2.1/)."""
    return {pool: f"{version}/{pool}-*.parquet"}


def babi_data_files(task: int) -> dict[str, str]:
    """bAbI parquet conversion: ``en-qa<N>/{train,test}/NNNN.parquet``."""
    return {pool: f"en-qa{task}/{pool}/*.parquet" for pool in ("train", "test")}


def _hub_location(dataset: str, location: str | Path | None, revision: str | None,
                  what: str) -> tuple[str, str | None, str]:
    """(path for load_dataset, revision, source label). Hub: the pinned revision as a full
    commit id, checked reachable and readable first (fails within the wall-clock limit).
    Folder: the given revision passed through unchanged."""
    if location is not None:
        d = Path(location)
        if not d.is_dir():
            raise FileNotFoundError(f"{what}: {d} is not a folder")
        if revision is not None and not hub.FULL_SHA.fullmatch(revision):
            raise ValueError(f"{what}: revision must be a full 40-hex commit id, not {revision!r}")
        return str(d), revision, f"hub-layout:{d}" + (f"@{revision}" if revision else "")
    repo = HUB[dataset]["repo"]
    pin = revision or HUB[dataset]["revision"]
    try:
        hub.require_online(what)
        if hub.FULL_SHA.fullmatch(pin):
            rev = hub.check_repo(repo, "dataset", pin, what)
        else:  # a commit prefix or a branch: resolved now, recorded in the stamp
            rev = hub.pinned_revision(repo, pin, "dataset", what)
    except hub.HubUnavailable as e:
        raise HubUnavailable(f"{e} For the data alone: {DATA_ALTERNATIVES}") from e.__cause__
    if not hub.FULL_SHA.fullmatch(rev):
        raise HubUnavailable(f"{what}: {repo}@{pin} did not resolve to a full commit id ({rev!r})")
    return repo, rev, f"hub:{repo}@{rev}"


DATA_ALTERNATIVES = ("use data_source='synthetic' (offline generators) or data_source='local' with "
                     "data_dir=<folder with babi/en/*.txt and cotempqa/*.json> (make data DATA_DIR=<dir>).")


def _load_dataset(*args, **kwargs):
    import datasets as hf_datasets

    return hf_datasets.load_dataset(*args, **kwargs)


def _hub_report(src: str, rev: str | None, dataset: str, excluded: list, warns: list) -> dict:
    pin = HUB[dataset]["revision"]
    if rev and pin != rev:
        warns = warns + [f"{HUB[dataset]['repo']}: pinned {pin!r} resolved to commit {rev} "
                         "(recorded here; pin this full id in data.HUB to freeze it)"]
    return {"source": src, "revision": rev, "excluded": excluded, "warnings": warns}


def load_cotempqa_hub(seed: int = 42, revision: str | None = None,
                      location: str | Path | None = None) -> tuple[pd.DataFrame, dict]:
    """CoTempQA from the hub (or a folder in its layout): one data file per scenario."""
    what = f"CoTempQA ({HUB['cotempqa']['repo']})"
    path, rev, src = _hub_location("cotempqa", location, revision, what)
    ds = _load_dataset(path, data_files=cotempqa_data_files(), revision=rev)
    rows, excluded = [], []
    for s in COTEMPQA_SCENARIOS:
        recs = [(i + 1, r) for i, r in enumerate(ds[s].to_list())]
        r, e = cotempqa_rows(recs, s, src, f"{src}/{s}.json")
        rows += r
        excluded += e
    return split_cotempqa(frame(rows), seed), _hub_report(src, rev, "cotempqa", excluded, [])


def load_marco_hub(seed: int = 42, version: str = "v2.1", revision: str | None = None,
                   per_type: Mapping[str, int | None] = MARCO_PER_TYPE,
                   location: str | Path | None = None) -> tuple[pd.DataFrame, dict]:
    """MS MARCO QA (config folder ``v2.1`` or ``v1.1``): per query type ``per_type['train']``
    rows of train and ``per_type['test']`` of validation (the test split), seeded."""
    if version not in ("v1.1", "v2.1"):
        raise ValueError(f"MS MARCO version must be 'v1.1' or 'v2.1', not {version!r}")
    what = f"MS MARCO ({HUB['marco']['repo']}, {version})"
    path, rev, src = _hub_location("marco", location, revision, what)
    rows, excluded = [], []
    for split, pool in (("train", "train"), ("test", "validation")):
        ds = _load_dataset(path, data_files=marco_data_files(version, pool), split=pool, revision=rev)
        types = ds.select_columns(["query_type"]).to_pandas()["query_type"]
        idx = _sample_per_type(types, per_type[split], seed)
        sub = ds.select(idx).to_list()
        r, e = marco_rows([(i + 1, x) for i, x in zip(idx, sub)], split, version, pool, src,
                          f"{src}/{version}/{pool}")
        rows += r
        excluded += e
    return frame(rows), _hub_report(src, rev, "marco", excluded, [])


def _babi_hub_story(rec: Mapping) -> list[dict]:
    """A hub ``story`` (struct of lists, or list of structs) -> the parser's line dicts."""
    st = rec["story"]
    if isinstance(st, Mapping):
        n = len(st["id"])
        items = [{k: st[k][i] for k in st} for i in range(n)]
    else:
        items = list(st)
    lines = []
    for it in items:
        is_q = it["type"] in (1, "question")
        lines.append({"id": str(it["id"]), "text": str(it["text"]).strip(), "question": is_q,
                      "answer": str(it.get("answer") or "").strip() if is_q else None,
                      "supporting": [str(s) for s in (it.get("supporting_ids") or [])],
                      "line": None})
    return lines


def load_babi_hub(babi_tasks: str = "paper11", seed: int = 42, revision: str | None = None,
                  location: str | Path | None = None) -> tuple[pd.DataFrame, dict]:
    """bAbI (en, 1k) from the hub's parquet conversion (or a folder in its layout):
    ``en-qa<N>/{train,test}/*.parquet`` per task."""
    what = f"bAbI ({HUB['babi']['repo']})"
    path, rev, src = _hub_location("babi", location, revision, what)
    rows, excluded = [], []
    for t in tqdm(babi_task_numbers(babi_tasks), desc="bAbI tasks (hub)"):
        cfg_name = f"en-qa{t}"
        ds = _load_dataset(path, data_files=babi_data_files(t), revision=rev)
        for pool in ("train", "test"):
            recs = ds[pool].to_list()
            keep = range(len(recs)) if pool == "train" else _babi_test_pick(len(recs), seed)
            where = f"{src}/{cfg_name}/{pool}"
            for k in keep:
                row, exc = babi_story_row(_babi_hub_story(recs[k]), t, pool, k,
                                          f"{src}:{cfg_name}", where)
                (rows.append(row) if row else excluded.append(exc))
    return frame(rows), _hub_report(src, rev, "babi", excluded, [])


# =============================================================================== prepare

def _synthetic(dataset: str, cfg: Mapping[str, Any], note: str | None = None) -> tuple[pd.DataFrame, dict]:
    from . import synthetic

    if dataset == "babi" and cfg.get("babi_tasks", "paper11") != "paper11":
        raise ValueError("the synthetic bAbI generator covers the original 11 tasks only; "
                         "babi_tasks='all20' needs data_source='local' or 'hub'")
    seed = int(cfg["data_seed"])
    parts = []
    for split in SPLITS:
        n = config.for_dataset(cfg, f"n_{split}", dataset)
        parts.append(synthetic.generate(dataset, SYNTHETIC_DEFAULT_N[split] if n is None else int(n),
                                        seed, split))
    return pd.concat(parts, ignore_index=True), {"source": "synthetic", "excluded": [],
                                                 "warnings": [note] if note else []}


def load_dataset_source(dataset: str, cfg: Mapping[str, Any]) -> tuple[pd.DataFrame, dict]:
    """The full (uncapped) dataset from ``cfg['data_source']`` and a report
    ``{source, excluded, warnings}``."""
    src = cfg.get("data_source", "synthetic")
    seed = int(cfg.get("data_seed", 42))
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {DATASETS}")
    if src == "synthetic":
        return _synthetic(dataset, cfg)
    if src == "local":
        d = cfg.get("data_dir")
        if not d:
            raise ValueError("data_source='local' needs data_dir (make data DATA_DIR=<dir>)")
        if not Path(d).is_dir():
            raise FileNotFoundError(f"data_dir {d!r} is not a folder")
        if dataset == "cotempqa":
            return load_cotempqa_local(d, seed)
        if dataset == "babi":
            return load_babi_local(d, cfg.get("babi_tasks", "paper11"), seed)
        files = marco_local_files(d)
        if files["train"] and files["test"]:
            return load_marco_local(d, seed)
        msg = (f"no local MS MARCO files under {Path(d) / 'marco'} (*.jsonl|*.parquet in the hub "
               "schema): using the SYNTHETIC MS MARCO generator instead; its rows are labelled "
               "synthetic")
        warnings.warn(msg, stacklevel=2)
        return _synthetic("marco", cfg, note=msg)
    if src == "hub":
        if dataset == "cotempqa":
            return load_cotempqa_hub(seed)
        if dataset == "marco":
            return load_marco_hub(seed)
        return load_babi_hub(cfg.get("babi_tasks", "paper11"), seed)
    raise ValueError(f"data_source must be 'synthetic', 'local' or 'hub', not {src!r}")


def apply_caps(df: pd.DataFrame, cfg: Mapping[str, Any], dataset: str) -> pd.DataFrame:
    """Cap each split at ``n_train`` / ``n_test`` (seeded, stratified by category; a
    ``{dataset: n}`` mapping caps each dataset at its own size)."""
    seed = int(cfg.get("data_seed", 42))
    parts = []
    for split in SPLITS:
        part = df[df["split"] == split]
        if not (part["synthetic"].all() and len(part)):  # generators already made exactly n
            part = stratified_sample(part, config.for_dataset(cfg, f"n_{split}", dataset), seed)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def _stage_cfg(cfg: Mapping[str, Any]) -> dict:
    c = {k: cfg.get(k) for k in STAGE_KEYS}
    if c["data_source"] != "local":
        c["data_dir"] = ""
    if c["data_source"] == "hub":  # a new pin makes the data stale
        c["hub"] = {ds: dict(HUB[ds]) for ds in sorted(HUB)}
    return c


def local_input_files(dataset: str, cfg: Mapping[str, Any]) -> dict[str, Path]:
    """The files under ``data_dir`` the local loader of ``dataset`` reads, named relative to
    ``data_dir`` (what the data stage's stamp hashes; empty unless ``data_source`` is local).
    A file the loader needs but that is missing is listed too: it hashes as missing, and the
    loader then stops with its own message."""
    d = cfg.get("data_dir")
    if cfg.get("data_source") != "local" or not d or not Path(d).is_dir():
        return {}
    d = Path(d)
    if dataset == "cotempqa":
        files = [d / "cotempqa" / f"{s}.json" for s in COTEMPQA_SCENARIOS]
    elif dataset == "babi":
        files = []
        for t in babi_task_numbers(cfg.get("babi_tasks", "paper11")):
            for pool in ("train", "test"):
                try:
                    files.append(babi_task_file(d, t, pool))
                except FileNotFoundError:
                    files.append(d / "babi" / "en" / f"qa{t}_{BABI_TASKS[t]}_{pool}.txt")
    else:
        m = marco_local_files(d)
        files = m["train"] + m["test"]
    return {p.relative_to(d).as_posix(): p for p in files}


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_suffix(".parquet.tmp")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def _length_stats(values: Sequence[float]) -> dict:
    s = pd.Series(list(values), dtype=float)
    if s.empty:
        return {"mean": None, "median": None, "min": None, "max": None}
    return {"mean": round(float(s.mean()), 2), "median": float(s.median()),
            "min": float(s.min()), "max": float(s.max())}


def card_entry(splits: Mapping[str, pd.DataFrame], report: Mapping[str, Any]) -> dict:
    """The data card of one dataset: counts per split and category, flagged rows by reason
    with ids, excluded rows by reason with ids, context-length statistics."""
    counts, totals, lengths, flagged = {}, {}, {}, {}
    for split, df in splits.items():
        counts[split] = {str(k): int(v) for k, v in df["category"].value_counts().sort_index().items()}
        totals[split] = int(len(df))
        lengths[split] = {
            "facts": _length_stats([len(c) for c in df["context"]]),
            "words": _length_stats([sum(len(str(x).split()) for x in c) for c in df["context"]]),
            "relevant": _length_stats([len(r) for r in df["relevant"]]),
        }
        for rid, flags in zip(df["id"], df["flags"]):
            for f in flags:
                e = flagged.setdefault(str(f), {"count": 0, "ids": []})
                e["count"] += 1
                e["ids"].append(str(rid))
    excluded: dict[str, dict] = {}
    for x in report.get("excluded", []):
        e = excluded.setdefault(x["reason"], {"count": 0, "ids": [], "where": []})
        e["count"] += 1
        e["ids"].append(x["id"])
        e["where"].append(x.get("where", ""))
    any_df = next(iter(splits.values()))
    synth = bool(len(any_df) and any_df["synthetic"].all())
    return {"source": report.get("source"), "synthetic": synth,
            "warnings": list(report.get("warnings", [])), "counts": counts, "totals": totals,
            "context_length": lengths, "flagged": flagged, "excluded": excluded}


def prepare(cfg: Mapping[str, Any], force: bool = False) -> dict[str, dict[str, pd.DataFrame]]:
    """Build every dataset of ``cfg['datasets']`` from ``cfg['data_source']``, cap the splits,
    write ``data/<profile>/<dataset>/{train,test}.parquet`` + ``stamp.json`` (skipped when the
    stamp is fresh, unless ``force``) and ``data/<profile>/data_card.json``.

    Returns ``{dataset: {"train": df, "test": df}}``."""
    profile = cfg["profile"]
    stage = _stage_cfg(cfg)
    out: dict[str, dict[str, pd.DataFrame]] = {}
    card = {"profile": profile, "data_source": cfg.get("data_source"),
            "config": stage, "config_hash": config.config_hash(stage), "datasets": {}}
    for ds in tqdm(cfg["datasets"], desc=f"data ({cfg.get('data_source')})"):
        folder = paths.data_dir(profile, ds)
        files = {s: folder / f"{s}.parquet" for s in SPLITS}
        inputs = local_input_files(ds, cfg)
        if (not force and config.is_fresh(folder, stage, stage="data", inputs=inputs)
                and all(p.exists() for p in files.values())):
            report = config.read_json(folder / config.STAMP).get("report", {})
            splits = {s: load_split(profile, ds, s) for s in SPLITS}
            for msg in report.get("warnings", []):
                warnings.warn(msg, stacklevel=2)
        else:
            full, report = load_dataset_source(ds, cfg)
            capped = validate(apply_caps(full, cfg, ds))
            folder.mkdir(parents=True, exist_ok=True)
            splits = {}
            for s in SPLITS:
                part = capped[capped["split"] == s].reset_index(drop=True)
                _write_parquet(part, files[s])
                splits[s] = part
            report = dict(report, uncapped={s: int((full["split"] == s).sum()) for s in SPLITS})
            config.write_stamp(folder, stage, stage="data", inputs=inputs, report=report)
        out[ds] = splits
        entry = card_entry(splits, report)
        entry["uncapped"] = report.get("uncapped")
        card["datasets"][ds] = entry
    config.write_json(paths.data_dir(profile) / "data_card.json", card)
    return out


def load_split(profile: str, dataset: str, split: str) -> pd.DataFrame:
    """``data/<profile>/<dataset>/<split>.parquet`` as a DataFrame (list columns as lists)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    p = paths.data_dir(profile, dataset) / f"{split}.parquet"
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist: run the data stage first "
                                f"(`make data PROFILE={profile}` or notebooks/01_data.ipynb)")
    return _to_lists(pd.read_parquet(p))[COLUMNS]


def read_card(profile: str) -> dict:
    p = paths.data_dir(profile) / "data_card.json"
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist: run the data stage first "
                                f"(`make data PROFILE={profile}` or notebooks/01_data.ipynb)")
    return config.read_json(p)


def card_tables(card: Mapping[str, Any]) -> dict[str, pd.DataFrame]:
    """The data card as tables: ``counts`` (dataset, category, train, test), ``lengths``
    (dataset, split, facts/words per problem), ``flags`` (dataset, flag, count, example ids),
    ``excluded`` (dataset, reason, count, example ids), ``sources``."""
    counts, lengths, flags, excl, srcs = [], [], [], [], []
    for ds, e in card["datasets"].items():
        cats = sorted(set().union(*[set(v) for v in e["counts"].values()]))
        for c in cats:
            counts.append({"dataset": ds, "category": c,
                           **{s: e["counts"].get(s, {}).get(c, 0) for s in SPLITS}})
        for s, L in e["context_length"].items():
            lengths.append({"dataset": ds, "split": s,
                            **{f"{k}_{m}": L[k][m] for k in ("facts", "words") for m in ("mean", "min", "max")}})
        for f, v in e["flagged"].items():
            flags.append({"dataset": ds, "flag": f, "count": v["count"], "ids": ", ".join(v["ids"][:5])
                          + (" ..." if v["count"] > 5 else "")})
        for r, v in e["excluded"].items():
            excl.append({"dataset": ds, "reason": r, "count": v["count"], "ids": ", ".join(v["ids"][:5])})
        srcs.append({"dataset": ds, "source": e["source"], "synthetic": e["synthetic"],
                     "train": e["totals"].get("train"), "test": e["totals"].get("test"),
                     "warnings": " | ".join(e["warnings"])})
    return {"sources": pd.DataFrame(srcs), "counts": pd.DataFrame(counts),
            "lengths": pd.DataFrame(lengths),
            "flags": pd.DataFrame(flags, columns=["dataset", "flag", "count", "ids"]),
            "excluded": pd.DataFrame(excl, columns=["dataset", "reason", "count", "ids"])}
