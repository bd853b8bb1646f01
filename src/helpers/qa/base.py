"""The schema every dataset module fills in (:class:`DatasetSpec`), and the row builders the
loaders and generators share.

A dataset is one module of this package that builds one :class:`DatasetSpec` and registers
it (:func:`helpers.qa.register`). Everything the stages need to know about a dataset is a
field of the spec (a hook): the generic modules (data, decompose, templates, traces,
scoring, rescore, ...) call ``qa.get(dataset).<hook>`` and never branch on a dataset's name.

Stage order: this package sits below data (01); it imports only paths/config/hub, and the
dataset modules import only this one. The row builders here make *interim* rows (what 01
writes: loaded, validated, split, sampled); the decomposition (label, relevant facts, quality
flags) is applied by 02 (:mod:`helpers.decompose`) through the spec's rules.
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from .. import hub

# The interim schema (01's output): one row per problem, before the decomposition.
COLUMNS = ["id", "dataset", "split", "question", "context", "answers", "category", "source",
           "synthetic", "meta"]
LIST_COLUMNS = ("context", "answers")
SPLITS = ("train", "test")


# =============================================================================== the schema

@dataclass(frozen=True)
class DatasetSpec:
    """Every hook a dataset provides. Rows are dicts of the data schema (``id, question,
    context, answers, category, meta, ...``); ``p`` in the corruption hooks is a checked
    problem (``helpers.traces``: lists of str, ``relevant`` a sorted index list)."""

    # --- identity
    name: str
    display_name: str
    # --- classification (step C): labels(babi_tasks) -> the label set; classify(row) -> label
    labels: Callable[[str], tuple[str, ...]]
    classify: Callable[[Mapping[str, Any]], str]
    # --- relevance (step R): relevant(row, variant) -> indices into row["context"]
    variants: tuple[str, ...]
    relevant: Callable[[Mapping[str, Any], str], list[int]]
    ambiguity: Callable[[Mapping[str, Any]], str]        # unique | none | several (default rule)
    quality_flags: Callable[[Mapping[str, Any]], list[str]]
    # the original rendering's relevant facts (None: the default rule); e.g. MS MARCO's nltk rule
    original_relevant: Callable[[Mapping[str, Any]], list[int]] | None = None
    original_relevant_source: Callable[[], str] | None = None   # where its tables come from
    # --- trace text (byte for byte: STUDY_SPEC §2)
    classification: str = ""     # "... {label}."
    retrieval: str = ""          # "... {facts}"
    render_context: Callable[[Sequence[str]], str] = repr
    render_answer: Callable[[Sequence[str]], str] = lambda answers: answers[0]
    # the original's separator between question and "Only return the answer." per stage
    original_separators: Mapping[str, str] = field(default_factory=lambda: {"train": "\n", "test": "\n"})
    # the original's cited facts (str() of what it cited): a list literal, or a bare string
    # when exactly one fact is cited (correct / corrupted trace)
    original_facts_as_list: Mapping[str, bool] = field(
        default_factory=lambda: {"correct": False, "corrupted": False})
    # --- corruption (helpers.traces)
    # corruption_labels(categories present, babi_tasks or None) -> labels a wrong label is drawn from
    corruption_labels: Callable[[Iterable[str], str | None], tuple[str, ...]] | None = None
    # project rule: a wrong fact shares fewer than this many words with the gold facts (None: any)
    wrong_fact_max_shared_words: int | None = None
    # original rendering: what its correct trace cites -> (indices, texts)
    original_correct_facts: Callable[[Mapping[str, Any]], tuple[list[int], list[str]]] | None = None
    # original rendering: its wrong facts, drawn from rng -> (indices, texts, note)
    original_wrong_facts: Callable[[Mapping[str, Any], np.random.Generator], tuple[list[int], list[str], str]] | None = None
    original_warmup_trace: float = 0.03   # the original's warm-up of this dataset's trace runs
    # --- scoring (helpers.scoring / helpers.rescore)
    answer_scorer: str = "normalized"     # normalized (EM/F1 after normalisation) | cotempqa_official
    rouge_l: bool = False                 # report ROUGE-L F of the answer
    original_em_first_gold: bool = False  # the original's EM compared the first gold only
    compat_label_sentence: int = 1        # which "."-sentence of the trace the compat C check reads
    compat_label_casefold: bool = True    # ... lower-cased
    original_label_scan: tuple[str, ...] = ()   # the order the original scanned labels in
    original_files_per_category: bool = False   # the original kept one test file per category
    original_draw_order: bool = False     # the original's test order is a reproducible draw
    original_test_frac: float | None = None
    # the original's output format (helpers.rescore): where the context and cited facts are
    original_context_field: str = "passage"
    original_relevant_fields: tuple[str, ...] = ("answer_passage", "reasoning")
    original_relevant_by_answer: bool = False   # relevant = facts containing a gold answer
    original_relevant_lines: bool = False       # a cited text holds one fact per line
    original_needs_triple: bool = False
    # --- teacher comparison (helpers.teacher_stage)
    citation_checkable: bool = True       # a verbatim quote of the relevant facts is a fair check
    # the original study's reference figures shown beside this dataset's (percent, per category)
    reference_teacher_em: Mapping[str, float] = field(default_factory=dict)
    reference_student_em: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    # --- data (01): loaders, generator, hub
    load_local: Callable[[Path, Mapping[str, Any]], tuple[pd.DataFrame, dict]] | None = None
    local_files: Callable[[Path, Mapping[str, Any]], list[Path]] | None = None
    # True when the local files exist; else the generator stands in, with a warning
    local_available: Callable[[Path], bool] = lambda d: True
    load_hub: Callable[[Mapping[str, Any]], tuple[pd.DataFrame, dict]] | None = None
    hub: Mapping[str, str] = field(default_factory=dict)    # {"repo", "revision"}
    hub_data_files: Callable[..., dict[str, str]] | None = None
    # synthetic generator: generate(n, seed, split) -> interim frame; check_synthetic(cfg) raises
    # when the generator cannot stand for the configured data
    generate: Callable[[int, int, str], pd.DataFrame] | None = None
    check_synthetic: Callable[[Mapping[str, Any]], None] = lambda cfg: None

    def label_set(self, babi_tasks: str | None = None) -> tuple[str, ...]:
        return self.labels(babi_tasks or "all20")


# =============================================================================== rows

def is_listlike(x: Any) -> bool:
    return isinstance(x, (list, tuple, np.ndarray))


def as_list(x: Any) -> list:
    if x is None:
        return []
    if isinstance(x, str):
        return [x]
    return list(x)


def meta(row: Mapping[str, Any]) -> dict[str, Any]:
    """The row's ``meta`` as a dict (it is stored as a JSON string)."""
    m = row.get("meta") if hasattr(row, "get") else row["meta"]
    if m is None:
        return {}
    if isinstance(m, str):
        return json.loads(m) if m else {}
    return dict(m)


def context(row) -> list[str]:
    return [str(c) for c in as_list(row["context"])]


def answers(row) -> list[str]:
    return [str(a) for a in as_list(row["answers"])]


def make_row(*, id: str, dataset: str, split: str, question: str, context: Sequence[str],
             answers: Sequence[str], category: str, source: str, meta: Mapping[str, Any]) -> dict:
    """One interim row (:data:`COLUMNS`)."""
    return {"id": id, "dataset": dataset, "split": split, "question": str(question).strip(),
            "context": [str(c) for c in context], "answers": [str(a) for a in answers],
            "category": category, "source": source, "synthetic": source == "synthetic",
            "meta": json.dumps(dict(meta), ensure_ascii=False, sort_keys=True)}


def frame(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] = COLUMNS) -> pd.DataFrame:
    """Rows -> a DataFrame with exactly the schema's columns, in order."""
    df = pd.DataFrame(list(rows), columns=list(columns))
    if len(df):
        df["synthetic"] = df["synthetic"].astype(bool)
    return df


def excluded(rid: str, reason: str, where: str = "") -> dict:
    return {"id": rid, "reason": reason, **({"where": where} if where else {})}


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


# =============================================================================== synthetic

GENERATOR_VERSION = 1
MAX_ATTEMPTS = 400
# recorded in every generated row's meta (the generators' name when they were one module;
# kept so that the generated data stay byte-identical)
GENERATOR_NAME = "helpers.synthetic"


def _bucket(problem: dict) -> str:
    sig = problem["question"] + "\n" + "\n".join(problem["context"])
    h = int(hashlib.sha256(sig.encode()).hexdigest()[:8], 16)
    return "test" if h % 5 == 0 else "train"


def synthetic_frame(dataset: str, categories: Sequence[str],
                    maker: Callable[[random.Random, str], dict | None],
                    n: int, seed: int, split: str) -> pd.DataFrame:
    """``n`` generated problems of ``dataset`` for ``split`` (interim rows); categories in
    turn (problem ``i`` has category ``i mod k``). Problem ``i`` is drawn from its own random
    stream (``dataset/seed/split/i/attempt``); a problem's text is hashed into one of five
    buckets, bucket 0 being the test split's, so train and test never share a problem; within
    a split duplicates are redrawn. Same arguments, same problems."""
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    cats = list(categories)
    rows, seen = [], set()
    for i in range(n):
        cat = cats[i % len(cats)]
        for attempt in range(MAX_ATTEMPTS):
            rng = random.Random(f"{dataset}/{seed}/{split}/{i}/{attempt}")
            p = maker(rng, cat)
            if p is None or _bucket(p) != split:
                continue
            key = p["question"] + "\n" + "\n".join(p["context"])
            if key in seen:
                continue
            seen.add(key)
            break
        else:
            raise RuntimeError(f"synthetic {dataset}/{cat}: no new {split} problem after "
                               f"{MAX_ATTEMPTS} attempts (problem {i}, seed {seed})")
        m = {"generator": GENERATOR_NAME, "generator_version": GENERATOR_VERSION,
             "seed": seed, "index": i, **p.get("meta", {})}
        rows.append(make_row(id=f"{dataset}/synthetic/{split}/{i}", dataset=dataset, split=split,
                             question=p["question"], context=p["context"], answers=p["answers"],
                             category=cat, source="synthetic", meta=m))
    return frame(rows)


def shuffle_lines(rng: random.Random, lines: list[str],
                  marks: dict[str, list[int]]) -> tuple[list[str], dict[str, list[int]]]:
    """Shuffle ``lines``; remap every index list in ``marks``."""
    order = list(range(len(lines)))
    rng.shuffle(order)
    pos = {old: new for new, old in enumerate(order)}
    return [lines[o] for o in order], {k: sorted(pos[i] for i in v) for k, v in marks.items()}


# =============================================================================== the hub
#
# Each hub loader takes its location: None = the hub repo of the spec's ``hub`` at its pinned
# revision (after a bounded reachability and access check, :mod:`helpers.hub`), or a local
# folder laid out exactly as that repo is. Both go through the same
# ``datasets.load_dataset(location, data_files=..., revision=...)`` call (only the location
# differs), with explicit ``data_files``.

DATA_ALTERNATIVES = ("use data_source='synthetic' (offline generators) or data_source='local' with "
                     "data_dir=<folder with babi/en/*.txt and cotempqa/*.json> (make data DATA_DIR=<dir>).")

HubUnavailable = hub.HubUnavailable


def hub_location(pin: Mapping[str, str], location: str | Path | None, revision: str | None,
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
    repo = pin["repo"]
    want = revision or pin["revision"]
    try:
        hub.require_online(what)
        if hub.FULL_SHA.fullmatch(want):
            rev = hub.check_repo(repo, "dataset", want, what)
        else:  # a commit prefix or a branch: resolved now, recorded in the stamp
            rev = hub.pinned_revision(repo, want, "dataset", what)
    except hub.HubUnavailable as e:
        raise HubUnavailable(f"{e} For the data alone: {DATA_ALTERNATIVES}") from e.__cause__
    if not hub.FULL_SHA.fullmatch(rev):
        raise HubUnavailable(f"{what}: {repo}@{want} did not resolve to a full commit id ({rev!r})")
    return repo, rev, f"hub:{repo}@{rev}"


def load_hf_dataset(*args, **kwargs):
    """``datasets.load_dataset`` (imported on use)."""
    import datasets as hf_datasets

    return hf_datasets.load_dataset(*args, **kwargs)


def hub_report(src: str, rev: str | None, pin: Mapping[str, str], excluded: list, warns: list) -> dict:
    if rev and pin["revision"] != rev:
        warns = warns + [f"{pin['repo']}: pinned {pin['revision']!r} resolved to commit {rev} "
                         "(recorded here; pin this full id in the dataset module's HUB to freeze it)"]
    return {"source": src, "revision": rev, "excluded": excluded, "warnings": warns}


# =============================================================================== quality flags

AMBIGUITY_FLAGS = {"none": "answer_in_no_fact", "several": "several_facts_contain_answer"}


def default_quality_flags(row: Mapping[str, Any], amb: str, extra: Sequence[str] = ()) -> list[str]:
    """Data-quality flags of a row (kept, never dropped): ``empty_context``, then ``extra``
    (the dataset's own), else the default rule's ambiguity (``answer_in_no_fact`` /
    ``several_facts_contain_answer``)."""
    flags = [] if context(row) else ["empty_context"]
    flags += list(extra)
    if amb in AMBIGUITY_FLAGS and not flags:
        flags.append(AMBIGUITY_FLAGS[amb])
    return flags
