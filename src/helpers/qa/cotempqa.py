"""CoTempQA (Su et al. 2024): co-temporal questions over a list of dated facts.

Labels: the four scenarios (``equal``, ``overlap``, ``during``, ``mix``). Default relevance
rule: the facts that contain a gold answer string as a *case-sensitive* substring (the
original matched with Python's ``in``; on the real files a case-insensitive match adds only
spurious facts, e.g. the answer ``president`` in ``President of Peru``); variant ``casefold``
is the case-insensitive match, variant ``condition`` adds the fact that states the question's
own event ("While X was working for Y, ..." -> "X works for Y from ... to ...").

Answers are scored with the benchmark's official matching (helpers.scoring.cotempqa_official)
and rendered as a list literal (several gold answers). Split: per scenario
``sample(frac=0.2, random_state=data_seed)`` is test (the original's).

Synthetic generator: facts ``(subject, relation, object, interval)`` rendered as "X works for
Y from 1990 to 1996."; a question conditions on one fact's interval ("While X was working for
Y, which position did X hold at the same time?"); the answers are the facts whose interval is
``equal`` to, ``overlap``s or lies ``during`` (contains / is contained in) the condition's, and
``mix`` questions have 2-3 answers of different relations; distractors are facts of the same
kind outside the interval and facts of another relation.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from . import base

NAME = "cotempqa"
SCENARIOS = ("equal", "overlap", "during", "mix")
TEST_FRAC = 0.2
# The hub repo; the revision is the commit that uploaded the four scenario files, known here
# only by its prefix 9f49aba: resolved to the full commit id at run time (helpers.hub) and
# recorded in the data stamp and every row's source; replace it with the full id once known.
HUB = {"repo": "Warrieryes/CotempQA", "revision": "9f49aba"}
VARIANTS = ("default", "condition", "casefold")
# The original study's figures (Qwen3-1.7B students, DeepSeek-R1 teacher, in percent).
ORIGINAL_TEACHER_EM = {"equal": 94.5, "overlap": 86.4, "during": 80.8, "mix": 41.0}
ORIGINAL_STUDENT_EM = {
    "teacher": {"equal": 81.7, "mix": 56.5, "overlap": 62.8, "during": 60.3},
    "teacher_summary": {"equal": 89.0, "mix": 37.0, "overlap": 61.1, "during": 54.3},
    "teacher_posthoc": {"equal": 84.1, "mix": 39.1, "overlap": 52.2, "during": 53.7},
    "tset_correct": {"equal": 42.7, "mix": 0.0, "overlap": 47.8, "during": 44.3},
    "tset_vanilla": {"equal": 81.7, "mix": 45.7, "overlap": 58.4, "during": 60.3},
}
CLASSIFICATION = "The temporal relation between the event in question and the event in context is: {label}."
RETRIEVAL = "I need to use the following facts to answer the question: {facts}"


# =============================================================================== rules

def labels(babi_tasks: str = "all20") -> tuple[str, ...]:
    return SCENARIOS


def classify(row: Mapping[str, Any]) -> str:
    """The scenario: ``meta.scenario`` when present, else the ``category`` column."""
    return base.meta(row).get("scenario", row["category"])



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
    for i, f in enumerate(base.context(row)):
        p = parse_fact(f)
        if not p or not p["x"] or not p["y"]:
            continue
        if clause.startswith(p["x"] + " ") and clause.endswith(" " + p["y"]):
            middle = clause[len(p["x"]): len(clause) - len(p["y"])].strip()
            if _CLAUSE_MIDDLES.get(middle) == p["rel"]:
                out.append(i)
    return out



def relevant(row: Mapping[str, Any], variant: str = "default") -> list[int]:
    context, answers = base.context(row), base.answers(row)
    if variant == "casefold":
        return _answer_facts(context, answers, casefold=True)
    idx = _answer_facts(context, answers)
    if variant == "condition":
        idx = sorted(set(idx) | set(condition_facts(row)))
    return idx


def ambiguity(row: Mapping[str, Any]) -> str:
    """``none`` when a gold answer occurs in no fact, ``several`` when one occurs in more
    than one fact, else ``unique``."""
    context, answers = base.context(row), base.answers(row)
    if not context:
        return "none"
    counts = answer_fact_counts(context, answers)
    if not counts or min(counts) == 0:
        return "none"
    return "several" if max(counts) > 1 else "unique"


def quality_flags(row: Mapping[str, Any]) -> list[str]:
    return base.default_quality_flags(row, ambiguity(row))


# =============================================================================== rendering

def render_context(context: Sequence[str]) -> str:
    return repr(list(context))


def render_answer(answers: Sequence[str]) -> str:
    """A list literal: CoTempQA questions have several gold answers."""
    return repr(list(answers))


# =============================================================================== corruption

def original_wrong_facts(p: Mapping[str, Any], rng: np.random.Generator) -> tuple[list[int], list[str], str]:
    """The original's incorrect-trace fact: one random fact that is not an answer fact."""
    ctx, rel = p["context"], list(p["relevant"])
    gold = {ctx[i] for i in rel}
    cand = [i for i in range(len(ctx)) if ctx[i] not in gold]
    if not cand:
        return [], [], "nothing_cited"
    j = cand[int(rng.integers(len(cand)))]
    return [j], [ctx[j]], ""


# =============================================================================== loaders

_COTEMPQA_REQUIRED = ("question", "facts", "answer")


def cotempqa_rows(records: Sequence[tuple[int, Mapping]], scenario: str, source: str,
                  where: str) -> tuple[list[dict], list[dict]]:
    """CoTempQA records (``index, triple_element, question, facts, answer``) -> schema rows
    (split unset) and the excluded rows. ``where`` names the file for messages."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown CoTempQA scenario {scenario!r}; expected {SCENARIOS}")
    rows, excluded = [], []
    for pos, (ln, r) in enumerate(records):
        idx = r.get("index", pos)
        rid = f"cotempqa/{scenario}/{idx}"
        missing = [k for k in _COTEMPQA_REQUIRED if r.get(k) is None]
        if missing:
            excluded.append(base.excluded(rid, f"missing field {', '.join(missing)}", f"{where}:{ln}"))
            continue
        facts, answers = r["facts"], r["answer"]
        if isinstance(answers, str):
            answers = [answers]
        if not base.is_listlike(facts) or not base.is_listlike(answers):
            excluded.append(base.excluded(rid, "facts/answer not a list", f"{where}:{ln}"))
            continue
        answers = [str(a) for a in answers if str(a).strip()]
        if not answers:
            excluded.append(base.excluded(rid, "no gold answer", f"{where}:{ln}"))
            continue
        if not str(r["question"]).strip():
            excluded.append(base.excluded(rid, "empty question", f"{where}:{ln}"))
            continue
        meta = {"index": idx, "triple_element": r.get("triple_element"), "scenario": scenario,
                "file": where, "line": ln}
        rows.append(base.make_row(id=rid, dataset="cotempqa", split="", question=r["question"],
                                  context=list(facts), answers=answers, category=scenario,
                                  source=source, meta=meta))
    return rows, excluded


def split_cotempqa(df: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The original split: per scenario ``sample(frac=0.2, random_state=seed)`` is test."""
    df = df.copy()
    df["split"] = "train"
    for cat in SCENARIOS:
        g = df[df["category"] == cat].reset_index()
        if g.empty:
            continue
        test = g.sample(frac=TEST_FRAC, random_state=seed)["index"]
        df.loc[test.values, "split"] = "test"
    return df


def load_local(data_dir: str | Path, seed: int = 42) -> tuple[pd.DataFrame, dict]:
    """CoTempQA from ``<data_dir>/cotempqa/{equal,overlap,during,mix}.json`` (JSON lines)."""
    d = Path(data_dir) / "cotempqa"
    rows, excluded = [], []
    for s in SCENARIOS:
        p = d / f"{s}.json"
        if not p.exists():
            raise FileNotFoundError(f"CoTempQA scenario file missing: {p} (expected "
                                    f"{', '.join(x + '.json' for x in SCENARIOS)} in {d})")
        r, e = cotempqa_rows(base.read_jsonl(p), s, f"local:cotempqa/{s}.json", f"cotempqa/{s}.json")
        rows += r
        excluded += e
    df = split_cotempqa(base.frame(rows), seed)
    return df, {"source": f"local:{d}", "excluded": excluded, "warnings": []}



def local_files(data_dir: Path, cfg: Mapping[str, Any]) -> list[Path]:
    return [Path(data_dir) / "cotempqa" / f"{s}.json" for s in SCENARIOS]


def data_files() -> dict[str, str]:
    """The hub repo: the four scenario files (JSON lines) at its root."""
    return {s: f"{s}.json" for s in SCENARIOS}


def load_hub(seed: int = 42, revision: str | None = None,
                      location: str | Path | None = None) -> tuple[pd.DataFrame, dict]:
    """CoTempQA from the hub (or a folder in its layout): one data file per scenario."""
    what = f"CoTempQA ({HUB['repo']})"
    path, rev, src = base.hub_location(HUB, location, revision, what)
    ds = base.load_hf_dataset(path, data_files=data_files(), revision=rev)
    rows, excluded = [], []
    for s in SCENARIOS:
        recs = [(i + 1, r) for i, r in enumerate(ds[s].to_list())]
        r, e = cotempqa_rows(recs, s, src, f"{src}/{s}.json")
        rows += r
        excluded += e
    return split_cotempqa(base.frame(rows), seed), base.hub_report(src, rev, HUB, excluded, [])



# =============================================================================== generator


FIRST = ["Anna", "Mark", "Lena", "Paul", "Nina", "Omar", "Ruth", "Ivan", "Sara", "Tom", "Eva",
         "Leo", "Ida", "Max", "Zoe", "Ben", "Kate", "Hugo", "Alma", "Otto"]
LAST = ["Holt", "Dale", "Reed", "Moss", "Frost", "Vance", "Lowe", "Park", "Shaw", "Cole", "Hart",
        "Finch", "Wren", "Stone"]
STEMS = ["Redfield", "Ashford", "Northgate", "Greenhill", "Westbrook", "Oakmont", "Fairport",
         "Silverton", "Brookside", "Kingsley", "Millbank", "Clearwater", "Stonebridge", "Riverton"]
# relation -> (fact verb, condition-clause verb, question asking for it, object maker)
RELS = {
    "work": ("works for", "was working for", "which employer did {x} work for",
             lambda rng: f"{rng.choice(STEMS)} {rng.choice(['Labs', 'Bank', 'Museum', 'Press', 'Foundry'])}"),
    "position": ("holds the position of", "was holding the position of", "which position did {x} hold",
                 lambda rng: rng.choice(["treasurer", "mayor", "chief judge", "provost", "harbour master",
                                         "senator", "envoy", "city clerk", "chancellor", "magistrate"])),
    "member": ("is a member of the", "was a member of", "which political party did {x} belong to",
               lambda rng: f"{rng.choice(STEMS)} {rng.choice(['Party', 'League', 'Alliance'])}"),
    "attend": ("attended", "attended", "which school did {x} attend",
               lambda rng: f"{rng.choice(STEMS)} {rng.choice(['College', 'University', 'Academy'])}"),
    "play": ("plays for", "was playing for", "which team did {x} play for",
             lambda rng: f"{rng.choice(STEMS)} {rng.choice(['Rovers', 'United', 'Athletic'])}"),
}
PHRASES = ["at the same time", "concurrently", "simultaneously", "during the same time period",
           "within the same time interval", "during the same time span", "during the identical time period"]


def interval_relation(a: tuple[int, int], b: tuple[int, int]) -> str | None:
    """How interval ``b`` relates to ``a`` (inclusive years): equal, during (one contains the
    other), overlap (they share years, neither contains the other), or None (disjoint)."""
    if a == b:
        return "equal"
    if b[1] < a[0] or b[0] > a[1]:
        return None
    if (a[0] <= b[0] and b[1] <= a[1]) or (b[0] <= a[0] and a[1] <= b[1]):
        return "during"
    return "overlap"


def _interval_for(rng, cond, rel):
    s, e = cond
    for _ in range(50):
        if rel == "equal":
            iv = (s, e)
        elif rel == "during":
            if rng.random() < 0.5:
                a = rng.randint(s, e - 1)
                iv = (a, rng.randint(a + 1, e))
            else:
                iv = (rng.randint(s - 6, s), rng.randint(e, e + 6))
        elif rel == "overlap":
            if rng.random() < 0.5:
                iv = (rng.randint(s + 1, e), rng.randint(e + 1, e + 8))
            else:
                iv = (rng.randint(s - 8, s - 1), rng.randint(s, e - 1))
        else:  # disjoint
            single = rng.random() < 0.5  # half of them a single year ("in 1987")
            if rng.random() < 0.5:
                b = rng.randint(s - 12, s - 1)
                iv = (b, b) if single else (rng.randint(b - 8, b - 1), b)
            else:
                a = rng.randint(e + 1, e + 12)
                iv = (a, a) if single else (a, rng.randint(a + 1, a + 8))
        if iv[0] <= iv[1] and interval_relation(cond, iv) == (None if rel == "disjoint" else rel):
            return iv
    return None


def _when(iv):
    return f"in {iv[0]}" if iv[0] == iv[1] else f"from {iv[0]} to {iv[1]}"


def _fact(x, rel, y, iv):
    return f"{x} {RELS[rel][0]} {y} {_when(iv)}."


def _cotempqa(rng, cat):
    names = [f"{f} {l}" for f, l in zip(rng.sample(FIRST, 4), rng.sample(LAST, 4))]
    x = names[0]
    te = rng.choice(["S1_R1_O2", "S1_R2_O2", "S2_R1_O1"])
    r1 = rng.choice(list(RELS))
    r2 = rng.choice([r for r in RELS if r != r1]) if te == "S1_R2_O2" else r1
    start = rng.randint(1950, 2005)
    cond = (start, start + rng.randint(4, 12))
    rels = [cat] if cat != "mix" else None
    if cat == "mix":
        k = 3 if rng.random() < 0.15 else 2
        while True:
            rels = [rng.choice(["equal", "overlap", "during"]) for _ in range(k)]
            if len(set(rels)) >= 2:
                break
    used: set[str] = set()

    def new_obj(rel):
        for _ in range(50):
            y = RELS[rel][3](rng)
            if y not in used:
                used.add(y)
                return y
        return None

    o1 = new_obj(r1)
    facts, answers, ans_idx = [], [], []
    cond_fact = _fact(x, r1, o1, cond)
    facts.append(cond_fact)
    phrase = rng.choice(PHRASES)
    if te == "S2_R1_O1":
        others = names[1:]
        verb_q = {"work": "worked for", "position": "held the position of", "member": "was a member of",
                  "attend": "attended", "play": "played for"}[r1]
        question = f"While {x} {RELS[r1][1]} {o1}, who also {verb_q} {o1} {phrase}?"
        for who, rel in zip(others, rels):
            iv = _interval_for(rng, cond, rel)
            if iv is None:
                return None
            ans_idx.append(len(facts))
            facts.append(_fact(who, r1, o1, iv))
            answers.append(who)
        # distractors: a remaining person outside the interval, the subject elsewhere
        spare = [n for n in others if n not in answers]
        for who in spare[:1]:
            iv = _interval_for(rng, cond, "disjoint")
            if iv is None:
                return None
            facts.append(_fact(who, r1, o1, iv))
    else:
        question = f"While {x} {RELS[r1][1]} {o1}, {RELS[r2][2].format(x=x)} {phrase}?"
        for rel in rels:
            y, iv = new_obj(r2), _interval_for(rng, cond, rel)
            if y is None or iv is None:
                return None
            ans_idx.append(len(facts))
            facts.append(_fact(x, r2, y, iv))
            answers.append(y)
        y, iv = new_obj(r2), _interval_for(rng, cond, "disjoint")  # same kind, outside the interval
        if y is None or iv is None:
            return None
        facts.append(_fact(x, r2, y, iv))
    # a fact of another relation (may overlap: it answers a different question)
    r3 = rng.choice([r for r in RELS if r not in (r1, r2)])
    y3, iv3 = new_obj(r3), _interval_for(rng, cond, rng.choice(["overlap", "disjoint"]))
    if y3 is None or iv3 is None:
        return None
    facts.append(_fact(x, r3, y3, iv3))
    facts, m = base.shuffle_lines(rng, facts, {"ans": ans_idx, "cond": [0]})
    # Ground truth must be exactly the facts that name an answer (no accidental substrings).
    if relevant({"context": facts, "answers": answers, "question": question, "meta": "{}"}) != m["ans"]:
        return None
    if any(sum(a in f for f in facts) != 1 for a in answers):
        return None
    return {"question": question, "context": facts, "answers": answers, "relevant": m["ans"],
            "meta": {"scenario": cat, "triple_element": te, "condition": m["cond"],
                     "relations": rels, "condition_interval": list(cond)}}



def generate(n: int, seed: int, split: str) -> pd.DataFrame:
    return base.synthetic_frame(NAME, SCENARIOS, _cotempqa, n, seed, split)


SPEC = base.DatasetSpec(
    name=NAME, display_name="CoTempQA",
    labels=labels, classify=classify,
    variants=VARIANTS, relevant=relevant, ambiguity=ambiguity, quality_flags=quality_flags,
    classification=CLASSIFICATION, retrieval=RETRIEVAL,
    render_context=render_context, render_answer=render_answer,
    original_separators={"train": " ", "test": " "},
    original_facts_as_list={"correct": True, "corrupted": False},
    corruption_labels=lambda categories, babi_tasks=None: SCENARIOS,
    original_wrong_facts=original_wrong_facts,
    original_warmup_trace=0.1,
    answer_scorer="cotempqa_official", rouge_l=False,
    compat_label_sentence=0, compat_label_casefold=False,
    original_label_scan=("during", "equal", "overlap", "mix"),
    original_files_per_category=True, original_draw_order=True, original_test_frac=TEST_FRAC,
    original_context_field="facts", original_relevant_fields=(), original_relevant_by_answer=True,
    original_needs_triple=True,
    citation_checkable=True,
    reference_teacher_em=ORIGINAL_TEACHER_EM, reference_student_em=ORIGINAL_STUDENT_EM,
    load_local=lambda d, cfg: load_local(d, int(cfg.get("data_seed", 42))),
    local_files=local_files,
    load_hub=lambda cfg: load_hub(int(cfg.get("data_seed", 42))),
    hub=HUB, hub_data_files=data_files,
    generate=generate,
)
