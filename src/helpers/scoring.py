"""Answer and trace scoring (STUDY_SPEC §5).

Every model output is parsed into three parts: the classification step (C), the facts cited
in the retrieval step (R) and the answer (A). The text the students are trained to produce
is built by :func:`helpers.templates.render_trace`; this module parses it back with the same
constants, so renderer and parser cannot drift apart.

Answers
    * CoTempQA: the benchmark's official matching (:func:`cotempqa_official`): candidate
      entities are pulled out of the context facts with the relation templates, the
      prediction is searched for them longest first, and the found set is compared with the
      gold set (EM and F1 over answer strings).
    * bAbI / MS MARCO: exact match and token F1 after normalisation (lower case, punctuation
      removed, whitespace collapsed); MS MARCO also ROUGE-L F (LCS over tokens).

Traces, two rule sets
    * ``strict`` (project default): the label parsed from C must equal the gold category;
      the cited facts (a Python list literal in R) are mapped to context indices and compared
      with the ``relevant`` indices (precision, recall, exact set). Outputs whose trace cannot
      be parsed are a counted failure class (``parse_status``), never dropped.
    * ``compat`` (the original study's confusion-matrix script, line for line): an output is
      evaluated when it contains "think" and the text before its first ``</think>`` is not the
      empty string (whitespace counts as text); C is correct when the gold label is a
      substring of the first "."-separated sentence of that text (CoTempQA) or of the second
      one, lower-cased (bAbI / MS MARCO; the first when there is no second); R is correct when
      ANY fact of the gold row appears verbatim in the text. The gold row is found the
      original's way (``mode_compat_join="original"``, the default): scan the category's test
      rows in order and take the FIRST whose answer text contains the item's first gold
      answer (a substring test: it can be another problem's row); when no row contains it,
      the previous evaluated item's row is used again (the original's loop variable kept its
      last value). ``id`` joins each item to its own row instead.

CoTempQA subject/object rule (``cotemp_rule``)
    ``official``: the benchmark's current code (entities are the subjects X unless the
    question is ``S2_R1_O1``; needed to reproduce the published EMs); ``answer_type``: the
    reverse (subjects only for ``S2_R1_O1``), what the question types and the benchmark's GPT
    scorer imply. The answer EM of items.parquet uses ``official``;
    :func:`cotemp_rule_table` re-scores the same answers under both.

Parse status
    ``ok`` or one or more failure classes joined by ``+`` (in this order):
    ``empty`` (blank output), ``no_tags`` (plain text: no think block, no answer tag; the
    expected shape for conditions without a trace target), ``no_think`` (answer tag but no
    think block), ``unclosed_think`` (``<think>`` never closed, e.g. cut by the token limit);
    for a closed think block: ``no_answer_tag`` (no complete ``<answer>…</answer>``),
    ``no_cls`` (no classification sentence), ``no_facts`` (no retrieval sentence),
    ``facts_unparsed`` (the cited list did not parse as a literal: the cited facts are then
    the context facts that appear verbatim in the retrieval text).
"""
from __future__ import annotations

import ast
import functools
import json
import math
import re
import string
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from . import conditions
from . import qa
from .templates import (ANSWER_CLOSE, ANSWER_OPEN, CLASSIFICATION, RETRIEVAL, THINK_CLOSE,
                        THINK_OPEN, render_answer)

# Which conditions have a trace target (``has_trace``) and which of those have steps to
# check (``steps_scored``) is read from the table of conditions (helpers.conditions). The
# reasoning-teacher conditions train a free-prose think text (the teacher's trace, its
# summary, a post-hoc explanation, another problem's trace): they have a trace target, but
# the think text has no classification or retrieval step to check, so only their answers are
# scored (``trace_scored`` False, steps not scored, the step failure classes not counted).


def has_trace_target(condition: str) -> bool:
    """The condition trains a ``<think>`` trace (False for ``vanilla``, ``untrained`` and
    names outside the table, e.g. a re-scored file's ``unknown``)."""
    spec = conditions.find(condition)
    return bool(spec is not None and spec.has_trace)


def answer_only(condition: str) -> bool:
    """The condition has a trace target whose steps are not scored (the teacher family)."""
    spec = conditions.find(condition)
    return bool(spec is not None and spec.has_trace and not spec.steps_scored)


# items.parquet columns produced here; the caller adds dataset, model, condition, seed in front.
ITEM_COLUMNS = [
    "id", "category", "prediction", "parse_status", "answer_pred", "answer_em", "answer_f1",
    "rouge_l", "has_trace_target", "cls_pred", "cls_correct", "ir_pred", "ir_precision",
    "ir_recall", "ir_exact", "trace_correct", "compat_evaluated", "cls_correct_compat",
    "ir_correct_compat", "trace_correct_compat", "trace_scored",
]
RUN_COLUMNS = ["dataset", "model", "condition", "seed"]
ALL_ITEM_COLUMNS = RUN_COLUMNS + ITEM_COLUMNS
# Added by helpers.evaluate: which test file the run answered (``full`` | ``teacher``).
OPTIONAL_ITEM_COLUMNS = ["test_set"]

STATUS_OK = "ok"
# Every failure class, in the order they are joined in ``parse_status``.
FAILURE_CLASSES = ("empty", "no_tags", "no_think", "unclosed_think", "no_answer_tag", "no_cls",
                   "no_facts", "facts_unparsed")
# Failure classes that leave no trace to score (classification / IR / trace all False).
NO_TRACE = frozenset({"empty", "no_tags", "no_think", "unclosed_think"})
# Failure classes of the trace's steps (not failures for answer_only conditions: their think
# text is free prose).
STEP_FAILURES = frozenset({"no_cls", "no_facts", "facts_unparsed"})
# The step columns of an answer-only condition: not scored.
_NOT_SCORED = {"cls_pred": None, "cls_correct": False, "ir_pred": [], "ir_precision": float("nan"),
               "ir_recall": float("nan"), "ir_exact": False, "trace_correct": False}

ANSWER_RULES = ("strict", "compat")
# "answer" is the former name of "original" (kept so old calls keep working)
COMPAT_JOINS = ("id", "original", "answer")
COTEMP_RULES = ("official", "answer_type")
# A new user turn the model started by itself (both rules cut the answer there).
_NEW_TURN = "answer the question based on"


def _check_dataset(dataset: str) -> qa.DatasetSpec:
    """The dataset's spec (its scorer hooks); an unknown dataset is an error."""
    return qa.get(dataset)


def ws(text: str) -> str:
    """Whitespace-normalised text (runs of whitespace -> one space, stripped)."""
    return " ".join(str(text).split())


# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------

@dataclass
class ParsedOutput:
    """One model output split into its steps.

    ``cited_facts`` is the parsed list literal of the retrieval step, or None when there is no
    retrieval step or its literal did not parse (``retrieval_text`` then holds the raw text,
    and :func:`cite_indices` falls back to verbatim context facts)."""

    answer: str
    cls_text: str | None
    cls_label: str | None
    cited_facts: list[str] | None
    status: str
    think_text: str | None = None
    retrieval_text: str | None = None
    issues: tuple[str, ...] = field(default_factory=tuple)

    @property
    def has_trace(self) -> bool:
        """True when a closed think block was found (the steps can be scored)."""
        return not (set(self.issues) & NO_TRACE)


def _template_parts(template: str, slot: str) -> tuple[str, str]:
    head, _, tail = template.partition("{" + slot + "}")
    return head, tail


def _find_ci(text: str, needle: str, start: int = 0) -> int:
    return text.lower().find(needle.lower(), start)


_ROLE_HEADER = re.compile(r"^\s*assistant\b:?", re.IGNORECASE)


def _strip_role_header(text: str) -> str:
    """Drop a leading chat-role word ("assistant") left by decoding without the prompt."""
    return _ROLE_HEADER.sub("", text, count=1)


def extract_answer_compat(text: str) -> str:
    """The original study's answer extraction (STUDY_SPEC §5): the text inside
    ``<answer>…</answer>`` if present; else the text before "answer the question based on";
    else the text after " answer "; else after "answer:"; then every "assistant" and "think"
    is deleted. The keyword tests ignore case (the original's scorer lower-cased first).

    An ``<answer>`` without its closing tag takes the fallbacks: in a trace-shaped output the
    retrieval sentence's "to answer the question" makes it the text between the first and the
    second " answer " (``str.split(...)[1]``); with none of the three keywords, the text after
    the first ``<answer>`` (the last fallback of the original's scorer)."""
    text = "" if text is None else str(text)
    i = text.find(ANSWER_OPEN)
    j = text.find(ANSWER_CLOSE, i + len(ANSWER_OPEN)) if i >= 0 else -1
    if i >= 0 and j >= 0:
        ans = text[i + len(ANSWER_OPEN):j]
    else:
        low = text.lower()
        if _NEW_TURN in low:
            ans = text[:low.find(_NEW_TURN)]
        elif " answer " in low:
            parts = _split_ci(text, " answer ")
            ans = parts[1]
        elif "answer:" in low:
            parts = _split_ci(text, "answer:")
            ans = parts[1]
        elif ANSWER_OPEN in low:
            ans = _split_ci(text, ANSWER_OPEN)[1]
        else:
            ans = text
    ans = re.sub("assistant", "", ans, flags=re.IGNORECASE)
    ans = re.sub("think", "", ans, flags=re.IGNORECASE)
    return ans.strip()


def _split_ci(text: str, sep: str) -> list[str]:
    """``str.split`` with a case-insensitive separator (keeps the original casing)."""
    return re.split(re.escape(sep), text, flags=re.IGNORECASE)


def _extract_answer_strict(text: str, think_end: int | None, think_unclosed: bool) -> tuple[str, bool]:
    """(answer, complete answer tag found). The answer tag after the think block; else the text
    after ``</think>``; else nothing when the think block never closed; else the whole text.
    A new user turn the model started by itself and a leading role word are cut."""
    start = think_end if think_end is not None else 0
    i = text.find(ANSWER_OPEN, start)
    tagged = False
    if i >= 0:
        j = text.find(ANSWER_CLOSE, i + len(ANSWER_OPEN))
        if j >= 0:
            ans, tagged = text[i + len(ANSWER_OPEN):j], True
        else:  # truncated inside the answer
            ans = text[i + len(ANSWER_OPEN):]
    elif think_end is not None:
        ans = text[think_end:]
    elif think_unclosed:
        ans = ""
    else:
        ans = text
    k = _find_ci(ans, _NEW_TURN)
    if k >= 0:
        ans = ans[:k]
    ans = _strip_role_header(ans)
    return ans.strip(), tagged


def _parse_classification(think: str, dataset: str) -> tuple[str | None, str | None]:
    """(cls_text, cls_label) from the think text. The label is read after the template's
    prefix (the whole prefix, or its last sentence when the model garbled the first one) up
    to the end of the line or the start of the retrieval sentence."""
    head, tail = _template_parts(CLASSIFICATION[dataset], "label")
    r_head, _ = _template_parts(RETRIEVAL[dataset], "facts")
    anchors = [head]
    last = head.rstrip()
    if ". " in last:
        anchors.append(last.rsplit(". ", 1)[1] + " ")
    for anchor in anchors:
        i = think.find(anchor)
        if i < 0:
            continue
        start = i + len(anchor)
        end = len(think)
        for stop in ("\n", r_head):
            k = think.find(stop, start)
            if 0 <= k < end:
                end = k
        raw = think[start:end].strip()
        label = raw[:-len(tail)] if tail and raw.endswith(tail) else raw
        label = label.strip()
        cls_text = think[i:end].strip()
        return cls_text, (label if label else None)
    first_line = think.strip().split("\n", 1)[0].strip()
    return (first_line or None), None


def _parse_literal(text: str) -> list[str] | None:
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    if isinstance(value, str):  # a bare string: one cited fact
        return [value]
    if isinstance(value, (list, tuple)):
        return [v if isinstance(v, str) else repr(v) for v in value]
    return None


def parse_output(text: str, dataset: str, *, answer_rule: str = "strict") -> ParsedOutput:
    """Split one generated text into classification, cited facts and answer.

    ``answer_rule``: ``strict`` (answer tag; else the text after ``</think>``; else the whole
    text) or ``compat`` (the original's extraction with its fallbacks,
    :func:`extract_answer_compat`). The trace parse is the same under both rules."""
    _check_dataset(dataset)
    if answer_rule not in ANSWER_RULES:
        raise ValueError(f"answer_rule must be one of {ANSWER_RULES}, got {answer_rule!r}")
    text = "" if text is None or (isinstance(text, float) and math.isnan(text)) else str(text)

    if not text.strip():
        return ParsedOutput("", None, None, None, "empty", issues=("empty",))

    # The think block: from <think> (or the start, if the prompt already opened it) to </think>.
    o = text.find(THINK_OPEN)
    c = text.find(THINK_CLOSE, o + len(THINK_OPEN) if o >= 0 else 0)
    think: str | None = None
    think_end: int | None = None
    unclosed = False
    if c >= 0:
        # o < 0: the prompt opened the think block, the output starts inside it
        think = text[o + len(THINK_OPEN):c] if o >= 0 else _strip_role_header(text[:c])
        think_end = c + len(THINK_CLOSE)
    elif o >= 0:
        unclosed = True

    answer, tagged = _extract_answer_strict(text, think_end, unclosed)
    if answer_rule == "compat":
        answer = extract_answer_compat(text)

    issues: list[str] = []
    if think is None:
        if unclosed:
            issues.append("unclosed_think")
        elif ANSWER_OPEN in text:
            issues.append("no_think")
        else:
            issues.append("no_tags")
        return ParsedOutput(answer, None, None, None, "+".join(issues), issues=tuple(issues))

    if not tagged:
        issues.append("no_answer_tag")
    cls_text, cls_label = _parse_classification(think, dataset)
    if cls_label is None:
        issues.append("no_cls")
    r_head, _ = _template_parts(RETRIEVAL[dataset], "facts")
    k = think.find(r_head)
    cited: list[str] | None = None
    retrieval_text: str | None = None
    if k < 0:
        issues.append("no_facts")
    else:
        retrieval_text = think[k + len(r_head):]
        cited = _parse_literal(retrieval_text)
        if cited is None:
            issues.append("facts_unparsed")
    status = "+".join(issues) if issues else STATUS_OK
    return ParsedOutput(answer, cls_text, cls_label, cited, status, think_text=think,
                        retrieval_text=retrieval_text, issues=tuple(issues))


def cite_indices(parsed: ParsedOutput, context: Sequence[str],
                 relevant: Iterable[int] = ()) -> tuple[list[int], int]:
    """Map the cited facts to context indices: (indices, number of cited strings that are in
    no context fact). Strings are compared after whitespace normalisation; a repeated
    citation counts once; when the context holds the same text several times, a relevant copy
    is preferred. When the list literal did not parse, the cited facts are the context facts
    that appear verbatim (whitespace-normalised) in the retrieval text."""
    context = [str(c) for c in context]
    norm = [ws(c) for c in context]
    relevant = set(int(r) for r in relevant)
    if parsed.cited_facts is None:
        if parsed.retrieval_text is None:
            return [], 0
        hay = ws(parsed.retrieval_text)
        return [i for i, n in enumerate(norm) if n and n in hay], 0
    free: dict[str, list[int]] = {}
    for i, n in enumerate(norm):
        free.setdefault(n, []).append(i)
    out: list[int] = []
    unmatched = 0
    seen: set[str] = set()
    for s in parsed.cited_facts:
        n = ws(s)
        if n in seen:
            continue
        seen.add(n)
        slots = free.get(n)
        if not slots:
            unmatched += 1
            continue
        pick = next((i for i in slots if i in relevant), slots[0])
        slots.remove(pick)
        out.append(pick)
    return out, unmatched


# --------------------------------------------------------------------------------------------
# Answer scoring
# --------------------------------------------------------------------------------------------

_PUNCT = set(string.punctuation)


def normalize_answer(s: str) -> str:
    """Lower case, ASCII punctuation removed, whitespace collapsed (the CoTempQA
    benchmark's normalisation; used for every dataset)."""
    s = str(s).lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    return " ".join(s.split())


def token_f1(pred: str, gold: str) -> float:
    """Token-level F1 of the normalised strings (1.0 when both are empty)."""
    p, g = normalize_answer(pred).split(), normalize_answer(gold).split()
    if not p or not g:
        return float(p == g)
    same = sum((Counter(p) & Counter(g)).values())
    if same == 0:
        return 0.0
    prec, rec = same / len(p), same / len(g)
    return 2 * prec * rec / (prec + rec)


class _NormalizedTokens:
    """A rouge-score tokenizer: the project's answer normalisation (:func:`normalize_answer`)
    split on whitespace, so ROUGE-L sees the same tokens as EM and F1."""

    def tokenize(self, text: str) -> list[str]:
        return normalize_answer(text).split()


@functools.lru_cache(maxsize=1)
def _rouge_l_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], tokenizer=_NormalizedTokens())


def rouge_l(pred: str, gold: str, beta: float = 1.0) -> float:
    """ROUGE-L F over normalised tokens: P = LCS/|pred|, R = LCS/|gold|,
    F = (1+beta²)PR / (R + beta²P) (beta = 1: the harmonic mean).

    The LCS, P, R and F (beta = 1) are rouge-score's ``rougeL`` scorer, fed the tokens of
    :func:`normalize_answer` instead of its own tokenizer (which splits at every
    non-alphanumeric character and drops non-ASCII letters: "don't" -> "don t", "été" -> "t").
    One convention differs from the library and is kept here: two empty answers score 1.0
    (rouge-score gives 0), as in :func:`token_f1`; one empty side scores 0."""
    p, g = normalize_answer(pred).split(), normalize_answer(gold).split()
    if not p or not g:
        return float(p == g)
    score = _rouge_l_scorer().score(gold, pred)["rougeL"]   # score(target, prediction)
    if beta == 1.0 or score.fmeasure == 0:
        return float(score.fmeasure)
    b2 = beta * beta
    return (1 + b2) * score.precision * score.recall / (score.recall + b2 * score.precision)


# The official CoTempQA relation templates. Order = the order relations are tried; a fact's
# first keyword that is present selects the relation, its first matching template wins (if
# none matches, the next present keyword is tried).
_COTEMP_RELATIONS = [
    (" the position of ", "holds the position of"),
    (" a member of ", "is a member of the"),
    (" the chair of ", "is the chair of"),
    (" the head of ", "is the head of"),
    (" owned by ", "is owned by"),
    ("attend", "attended"),
    ("work", "works for"),
    ("play", "plays for"),
]
_COTEMP_TENSE = [(" was ", " is "), (" held ", " holds "), (" worked ", " works "),
                 (" played ", " plays ")]


def _relation_patterns(phrase: str) -> list[re.Pattern]:
    p = re.escape(phrase)
    return [re.compile(rf"(.+?) {p} (.+?) from (.+?) to (.+?)\."),   # from ... to ...
            re.compile(rf"(.+?) {p} (.+?) in (.+?)\."),              # in <date>
            re.compile(rf"(.+?) {p} (.+?) from (.+?)"),              # from <date> (open)
            re.compile(rf"(.+?) {p} (.+?)\.")]                       # no date


_COTEMP_PATTERNS = [(kw, _relation_patterns(phrase)) for kw, phrase in _COTEMP_RELATIONS]


def _check_cotemp_rule(rule: str) -> None:
    if rule not in COTEMP_RULES:
        raise ValueError(f"cotemp_rule must be one of {COTEMP_RULES}, got {rule!r}")


def cotempqa_entities(facts: Sequence[str], triple_element: str, rule: str = "official") -> list[str]:
    """Entities the official scorer extracts from the context facts (lower-cased). A fact
    ``X <relation> Y <date>`` yields, under ``rule="official"``, Y for ``S2_R1_O1`` questions
    and X otherwise: the official code's choice, which looks inverted but is reproduced as is
    (the published EMs need it). ``rule="answer_type"`` takes the subject X only for
    ``S2_R1_O1`` and Y otherwise."""
    _check_cotemp_rule(rule)
    take_x = ("S2_R1_O1" not in str(triple_element)) == (rule == "official")
    out = []
    for fact in facts:
        fact = str(fact)
        done = False
        for kw, patterns in _COTEMP_PATTERNS:
            if done:
                break
            if kw not in fact:
                continue
            for old, new in _COTEMP_TENSE:
                fact = fact.replace(old, new)
            for pat in patterns:
                m = pat.match(fact)
                if m:
                    out.append((m.group(1) if take_x else m.group(2)).lower())
                    done = True
                    break
    return out


def _official_prefilter(prediction: str) -> str:
    """The official scorer's own cut of the (lower-cased) prediction."""
    if _NEW_TURN in prediction:
        return prediction.split(_NEW_TURN)[0]
    if " answer " in prediction:
        return prediction.split(" answer ")[1]
    return prediction


def cotempqa_official(prediction: str, gold: list[str], question: str, facts: list[str],
                      triple_element: str, rule: str = "official") -> tuple[list[str], bool, float]:
    """CoTempQA scoring with the benchmark's official semantics (STUDY_SPEC §5).

    Returns (predicted answers, EM, F1). Candidates = gold answers and the entities of the
    context facts (:func:`cotempqa_entities`), lower-cased, longest first (ties
    alphabetically, for determinism). Walking them, the first candidate found in both the
    prediction and the question is removed from the prediction (every occurrence, as
    ``str.replace`` does) and skipped; every other candidate found in the prediction is a
    predicted answer and is removed from it. If none was found, what is left of the
    prediction is the single predicted answer. Predicted and gold lists are de-duplicated,
    normalised (:func:`normalize_answer`) and sorted (in the official order: de-duplication
    before normalisation); EM = the lists are equal; F1 over answer strings. ``rule``: the
    subject/object rule of :func:`cotempqa_entities`."""
    pred = _official_prefilter(str(prediction).lower())
    golds = [str(g).lower() for g in gold]
    q = str(question).lower()
    cands = sorted(set(cotempqa_entities(facts, triple_element, rule)) | set(golds),
                   key=lambda s: (-len(s), s))
    found: list[str] = []
    skipped = False
    for cand in cands:
        if cand not in pred:
            continue
        if not skipped and cand in q:
            pred = pred.replace(cand, "")
            skipped = True
            continue
        found.append(cand)
        pred = pred.replace(cand, "")
    if not found:
        found = [pred]
    predicted = sorted(normalize_answer(p) for p in set(found))
    gold_norm = sorted(normalize_answer(g) for g in set(golds))
    em = predicted == gold_norm
    same = sum((Counter(predicted) & Counter(gold_norm)).values())
    if same == 0:
        f1 = 0.0
    else:
        prec, rec = same / len(predicted), same / len(gold_norm)
        f1 = 2 * prec * rec / (prec + rec)
    return predicted, em, f1


def as_list(value: Any) -> list:
    """A list from a list-like cell: None / NaN -> [], a string -> [it], arrays -> list."""
    if value is None:
        return []
    if isinstance(value, float) and math.isnan(value):
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


def _meta(row: Mapping) -> dict:
    m = row.get("meta") if hasattr(row, "get") else None
    if m is None or (isinstance(m, float) and math.isnan(m)):
        return {}
    if isinstance(m, str):
        try:
            m = json.loads(m) if m.strip() else {}
        except json.JSONDecodeError as e:
            raise ValueError(f"row {row.get('id')!r}: meta is not JSON ({e})") from None
    if not isinstance(m, Mapping):
        raise ValueError(f"row {row.get('id')!r}: meta must be a JSON object, got {type(m).__name__}")
    return dict(m)


def _unescape_list_literal(answer: str) -> str:
    """A CoTempQA answer rendered as a list literal, with Python's escapes undone (repr writes
    e.g. a no-break space as the four characters backslash-x-a-0, which the official matching
    would never find in the context). Anything that is not a list of strings is unchanged."""
    items = _parse_literal(answer) if answer.strip().startswith(("[", "(")) else None
    if not items:
        return answer
    return "[" + ", ".join(f"'{s}'" for s in items) + "]"


def original_em(pred_answer: str, golds: Sequence[str], dataset: str) -> bool:
    """bAbI / MS MARCO answer EM exactly as the original scored it: both sides lower-cased; the
    raw gold must be a substring of the extracted prediction (``shot``), and then the list
    [normalised prediction] must equal the sorted list of the normalised, de-duplicated golds.
    bAbI has one gold string; MS MARCO compared the whole gold list, so an item with two or
    more distinct answers can never be correct."""
    p = "" if pred_answer is None else str(pred_answer).lower()
    uniq = list(dict.fromkeys(str(g).lower() for g in golds))  # the original's list(set(golds))
    if qa.get(dataset).original_em_first_gold:  # bAbI: one gold string
        uniq = uniq[:1]
    shot = any(g in p for g in uniq)
    predict = [normalize_answer(p)] if shot else []
    return predict == sorted(normalize_answer(g) for g in uniq)


def answer_scores(pred_answer: str, row: Mapping, dataset: str, *,
                  decode_literal: bool = True, cotemp_rule: str = "official",
                  original_em_rule: bool = False) -> dict:
    """Answer EM / F1 (and ROUGE-L F for MS MARCO, else NaN) of an extracted answer against
    a data row (``answers``; CoTempQA also ``question``, ``context`` and ``meta``'s
    ``triple_element``). With several gold answers (bAbI / MS MARCO), the best one counts.
    ``decode_literal`` (CoTempQA): undo the escapes of a list-literal answer first (see
    :func:`_unescape_list_literal`; off under the original's rules). ``cotemp_rule``: the
    CoTempQA subject/object rule (:data:`COTEMP_RULES`). ``original_em_rule`` (bAbI / MS
    MARCO): the EM is :func:`original_em` (the original's substring-and-equal test)."""
    spec = _check_dataset(dataset)
    _check_cotemp_rule(cotemp_rule)
    pred_answer = "" if pred_answer is None else str(pred_answer)
    golds = [str(a) for a in as_list(row["answers"])]
    if not golds:
        raise ValueError(f"row {row.get('id')!r}: no gold answers")
    if spec.answer_scorer == "cotempqa_official":
        if decode_literal:
            pred_answer = _unescape_list_literal(pred_answer)
        meta = _meta(row)
        if "triple_element" not in meta:
            raise ValueError(f"row {row.get('id')!r}: CoTempQA scoring needs meta.triple_element")
        _, em, f1 = cotempqa_official(pred_answer, golds, str(row["question"]),
                                      [str(c) for c in as_list(row["context"])],
                                      meta["triple_element"], cotemp_rule)
        return {"em": bool(em), "f1": float(f1), "rouge_l": float("nan")}
    p = normalize_answer(pred_answer)
    if original_em_rule:
        em = original_em(pred_answer, golds, dataset)
    else:
        em = any(p == normalize_answer(g) for g in golds)
    f1 = max(token_f1(pred_answer, g) for g in golds)
    rl = max(rouge_l(pred_answer, g) for g in golds) if spec.rouge_l else float("nan")
    return {"em": bool(em), "f1": float(f1), "rouge_l": float(rl)}


# --------------------------------------------------------------------------------------------
# Trace scoring
# --------------------------------------------------------------------------------------------

def labels_equal(pred: str | None, gold: str | None) -> bool:
    if pred is None or gold is None:
        return False
    return str(pred).strip().casefold() == str(gold).strip().casefold()


def strict_trace(parsed: ParsedOutput, row: Mapping) -> dict:
    """Strict step scores of one parsed output against its gold row."""
    relevant = sorted(set(int(r) for r in as_list(row["relevant"])))
    context = [str(c) for c in as_list(row["context"])]
    if not parsed.has_trace:
        return {"cls_pred": None, "cls_correct": False, "ir_pred": [], "ir_precision": 0.0,
                "ir_recall": 0.0, "ir_exact": False, "trace_correct": False}
    cls_ok = labels_equal(parsed.cls_label, row["category"])
    if "no_facts" in parsed.issues:
        ir_pred, unmatched = [], 0
        prec = rec = 0.0
        exact = False
    else:
        ir_pred, unmatched = cite_indices(parsed, context, relevant)
        hits = len(set(ir_pred) & set(relevant))
        n_cited = len(ir_pred) + unmatched
        prec = hits / n_cited if n_cited else (1.0 if not relevant else 0.0)
        rec = hits / len(relevant) if relevant else (1.0 if not n_cited else 0.0)
        exact = unmatched == 0 and set(ir_pred) == set(relevant)
    return {"cls_pred": parsed.cls_label, "cls_correct": bool(cls_ok),
            "ir_pred": [int(i) for i in ir_pred], "ir_precision": float(prec),
            "ir_recall": float(rec), "ir_exact": bool(exact),
            "trace_correct": bool(cls_ok and exact)}


def compat_trace_text(text: str) -> str | None:
    """The trace the original evaluated: the text before the first ``</think>``, or None when
    the output is not evaluated. Exactly the original's two tests: the output does not
    contain "think" (case-sensitive), or the text before the first ``</think>`` is the empty
    string. Anything else is evaluated: whitespace only, a bare ``<think>`` tag or a role
    word before ``</think>`` all count as text."""
    text = "" if text is None else str(text)
    if "think" not in text:
        return None
    trace = text.split(THINK_CLOSE)[0]
    return None if trace == "" else trace


_UNEVALUATED = {"compat_evaluated": False, "cls_correct_compat": pd.NA,
                "ir_correct_compat": pd.NA, "trace_correct_compat": pd.NA}


def compat_trace(text: str, row: Mapping, dataset: str) -> dict:
    """The original's trace checks (``compat``) against gold row ``row`` (``category``, and
    ``context`` = every fact of the row): evaluated or not (:func:`compat_trace_text`);
    C = the gold label is a substring of sentence 1 of the trace split on "." (CoTempQA, case
    as is) or of sentence 2, lower-cased, against the lower-cased label (bAbI, MS MARCO; the
    only sentence when there is no second); R = any fact of the row verbatim in the trace."""
    spec = _check_dataset(dataset)
    trace = compat_trace_text(text)
    if trace is None:
        return dict(_UNEVALUATED)
    label = "" if row["category"] is None else str(row["category"])
    sentences = trace.split(".")
    k = spec.compat_label_sentence
    sentence = sentences[k] if len(sentences) > k else sentences[0]
    if spec.compat_label_casefold:
        cls_ok = bool(label) and label.lower() in sentence.lower()
    else:
        cls_ok = bool(label) and label in sentence
    ir_ok = any(str(f) in trace for f in as_list(row["context"]))
    return {"compat_evaluated": True, "cls_correct_compat": bool(cls_ok),
            "ir_correct_compat": bool(ir_ok), "trace_correct_compat": bool(cls_ok and ir_ok)}


def label_from_reasoning(text: str, dataset: str) -> str | None:
    """The gold label the original read from a test row's classification sentence: the first
    label of its fixed scan order (the dataset's ``original_label_scan``) contained in the lower-cased
    text; None when none is."""
    spec = _check_dataset(dataset)
    low = "" if text is None else str(text).lower()
    return next((lab for lab in spec.original_label_scan if lab in low), None)


@dataclass
class JoinRow:
    """One row the original's join can pick: its answer text (searched), label and facts."""

    answer_text: str
    category: str | None
    context: list[str]
    key: str | None = None


class OriginalJoin:
    """The original's gold-row join, with its state.

    For each evaluated output, in file order: scan ``rows`` (one category's test rows, in
    the test file's order) and take the first whose answer text contains ``first_answer``;
    when none does, the row found for the previous evaluated output is used again (the
    original's loop variable kept its last value); before any row was found there is none
    (the original crashed there; here the output counts as ``no_row``). ``counts`` tallies
    ``joined``, ``other_row`` (a row with another key than the item's own; rows without a key,
    as from the original's CSV, are not counted), ``carried_over`` and ``no_row``."""

    def __init__(self, rows: Sequence[JoinRow]):
        self.rows = list(rows)
        self.last: JoinRow | None = None
        self.counts = {"joined": 0, "other_row": 0, "carried_over": 0, "no_row": 0}

    def find(self, first_answer: str, own_key: str | None = None) -> JoinRow | None:
        first = str(first_answer)
        hit = next((r for r in self.rows if first in r.answer_text), None)
        if hit is None:
            if self.last is None:
                self.counts["no_row"] += 1
                return None
            self.counts["carried_over"] += 1
            hit = self.last
        else:
            self.counts["joined"] += 1
        if own_key is not None and hit.key is not None and hit.key != own_key:
            self.counts["other_row"] += 1
        self.last = hit
        return hit


def answer_text(answers: Sequence[str], dataset: str) -> str:
    """A row's answer as one text (what the original's answer-substring join searched)."""
    return render_answer(dataset, [str(a) for a in answers])


# --------------------------------------------------------------------------------------------
# Items
# --------------------------------------------------------------------------------------------

_GOLD_COLUMNS = ("id", "question", "context", "answers", "category", "relevant")


def join_rows_from_gold(gold: pd.DataFrame, dataset: str) -> list[JoinRow]:
    """The rows of a gold frame (data schema) as the original's join sees them: answer text
    = the answers rendered as in the original's test files (CoTempQA: the list repr), label
    = ``category``, facts = every context fact, key = ``id``; in the frame's order."""
    return [JoinRow(answer_text(as_list(r["answers"]), dataset), str(r["category"]),
                    [str(c) for c in as_list(r["context"])], str(r["id"]))
            for r in gold.to_dict("records")]


def _source_position(row: Mapping) -> tuple:
    """A row's position in its source file: ``meta.line`` when recorded, else the number at
    the end of its id (``cotempqa/<scenario>/<index>``), else its id."""
    meta = _meta(row)
    if isinstance(meta.get("line"), (int, float)):
        return (0, float(meta["line"]), "")
    tail = str(row["id"]).rsplit("/", 1)[-1]
    return (1, float(tail), "") if tail.isdigit() else (2, 0.0, str(row["id"]))


def original_order(train: pd.DataFrame, test: pd.DataFrame, dataset: str,
                   seed: int = 42) -> tuple[list[str], str]:
    """The test ids in the order the original's test CSVs list them, and how it was found.

    The original wrote each CoTempQA category's test file in the order
    ``g.sample(frac=0.2, random_state=42)`` drew the rows of ``g`` (the category's rows in
    source order), and its join scanned that file top to bottom. The project's split makes
    the same draw (``qa.cotempqa.split_cotempqa``) but stores the test rows in source order. Here the
    draw is made again on train + test of each category in source order; when it yields
    exactly the test rows (an uncapped split of the full files) the draw order is returned
    (``"draw"``). Otherwise (capped splits, other datasets, generated data) the stored order
    is returned with the reason. On the real CoTempQA files the draw order equals the
    original's committed ``{equal,overlap,mix}_test.csv`` row for row (tests/)."""
    stored = [str(i) for i in test["id"]]
    spec = _check_dataset(dataset)
    if not spec.original_draw_order:
        return stored, "stored: the original's draw order is reproduced for CoTempQA only"
    full = pd.concat([train, test], ignore_index=True)
    out: list[str] = []
    for cat in dict.fromkeys(str(c) for c in test["category"]):
        g = full[full["category"].astype(str) == cat]
        rows = sorted(g.to_dict("records"), key=_source_position)
        g = pd.DataFrame({"id": [str(r["id"]) for r in rows]})
        drawn = g.sample(frac=spec.original_test_frac, random_state=seed)["id"].tolist()
        want = set(i for i, c in zip(stored, test["category"].astype(str)) if c == cat)
        if set(drawn) != want:
            return stored, (f"stored: the draw over {len(g)} {cat} rows does not give the "
                            f"{len(want)} test rows (a capped or re-split set)")
        out += drawn
    return out, "draw"


def score_items(preds: pd.DataFrame, gold: pd.DataFrame, *, dataset: str, condition: str,
                mode_compat_join: str = "original", answer_rule: str = "strict",
                cotemp_rule: str = "official",
                join_rows: Sequence[JoinRow] | None = None,
                join_order: Sequence[str] | None = None) -> pd.DataFrame:
    """Score predictions (columns ``id``, ``prediction``) against gold rows (the data schema).

    Returns one row per prediction, in the prediction order, with exactly
    :data:`ITEM_COLUMNS` (the caller adds dataset, model, condition, seed).

    ``mode_compat_join``: how the compat trace checks find their gold row: ``original`` (the
    default; the original's join, :class:`OriginalJoin`) or ``id`` (the item's own row).
    The original scanned ``{category}_test.csv`` for CoTempQA (so only rows of the item's
    category) and the one ``test.csv`` for bAbI / MS MARCO (every row). Without
    ``join_rows`` the scanned rows are ``gold``'s, in ``gold``'s order (for the project's
    test split: the order of the source files; the original's CSVs list the
    same CoTempQA test rows in the order ``sample(frac=0.2, random_state=42)`` drew them, so
    where two rows of a category share an answer the two orders can pick different rows).
    ``join_order``: the gold ids in the order to scan them (:func:`original_order`: the
    original's order); ids not in it are scanned after, in ``gold``'s order.
    ``join_rows``: the rows of the original's own test file instead (``rescore
    --gold-csv``); all of them are scanned.

    ``answer_rule``: see :func:`parse_output`; ``compat`` also scores bAbI / MS MARCO answers
    with :func:`original_em`. ``cotemp_rule``: the CoTempQA subject/object rule.
    A prediction whose id is not in ``gold`` raises; ids must be unique on both sides.
    The join's counts are in ``result.attrs["compat_join"]``."""
    _check_dataset(dataset)
    _check_cotemp_rule(cotemp_rule)
    if mode_compat_join not in COMPAT_JOINS:
        raise ValueError(f"mode_compat_join must be one of {COMPAT_JOINS}, got {mode_compat_join!r}")
    if mode_compat_join == "answer":
        mode_compat_join = "original"
    for col in ("id", "prediction"):
        if col not in preds.columns:
            raise KeyError(f"predictions lack column {col!r} (have {list(preds.columns)})")
    missing_cols = [c for c in _GOLD_COLUMNS if c not in gold.columns]
    if missing_cols:
        raise KeyError(f"gold lacks columns {missing_cols} (have {list(gold.columns)})")
    gold = gold.reset_index(drop=True)
    gold_ids = gold["id"].astype(str)
    dup = gold_ids[gold_ids.duplicated()].unique().tolist()
    if dup:
        raise ValueError(f"gold has duplicate ids: {dup[:5]}{' ...' if len(dup) > 5 else ''}")
    pred_ids = preds["id"].astype(str)
    dup = pred_ids[pred_ids.duplicated()].unique().tolist()
    if dup:
        raise ValueError(f"predictions have duplicate ids: {dup[:5]}{' ...' if len(dup) > 5 else ''}")
    pos = {i: k for k, i in enumerate(gold_ids)}
    missing = [i for i in pred_ids if i not in pos]
    if missing:
        raise KeyError(f"{len(missing)} prediction ids are not in the gold data, e.g. {missing[:5]}")
    rows = gold.to_dict("records")
    joins: dict[str, OriginalJoin] = {}
    if mode_compat_join == "original":
        if join_rows is not None:
            joins[""] = OriginalJoin(join_rows)
        else:
            scan = rows
            if join_order is not None:
                rank = {str(i): k for k, i in enumerate(join_order)}
                scan = sorted(rows, key=lambda r: rank.get(str(r["id"]), len(rank)))
            all_rows = join_rows_from_gold(pd.DataFrame(scan, columns=gold.columns), dataset)
            if qa.get(dataset).original_files_per_category:  # CoTempQA: one test file per category
                for cat in dict.fromkeys(str(r["category"]) for r in scan):
                    joins[cat] = OriginalJoin([j for j, r in zip(all_rows, scan)
                                               if str(r["category"]) == cat])
            else:
                joins[""] = OriginalJoin(all_rows)

    def joined(row: Mapping) -> Mapping | None:
        if mode_compat_join == "id":
            return row
        answers = as_list(row["answers"])
        key = "" if "" in joins else str(row["category"])
        hit = joins[key].find(str(answers[0]), str(row["id"]))
        return None if hit is None else {"category": hit.category, "context": hit.context}

    has_target = has_trace_target(condition)
    not_scored = answer_only(condition)
    out = []
    for pid, text in zip(pred_ids, preds["prediction"].tolist()):
        row = rows[pos[pid]]
        text = "" if text is None or (isinstance(text, float) and math.isnan(text)) else str(text)
        parsed = parse_output(text, dataset, answer_rule=answer_rule)
        ans = answer_scores(parsed.answer, row, dataset, decode_literal=answer_rule == "strict",
                            cotemp_rule=cotemp_rule, original_em_rule=answer_rule == "compat")
        status = parsed.status
        if not_scored:
            # free-prose think text: only the shape (think block, answer tag) can fail
            issues = [i for i in parsed.issues if i not in STEP_FAILURES]
            status = "+".join(issues) if issues else STATUS_OK
            strict, compat = dict(_NOT_SCORED), dict(_UNEVALUATED)
        else:
            strict = strict_trace(parsed, row)
            # the original joined only the outputs it evaluated (its `continue` came first)
            jrow = joined(row) if compat_trace_text(text) is not None else None
            compat = compat_trace(text, jrow, dataset) if jrow is not None else dict(_UNEVALUATED)
        out.append({"id": pid, "category": str(row["category"]), "prediction": text,
                    "parse_status": status, "answer_pred": parsed.answer,
                    "answer_em": ans["em"], "answer_f1": ans["f1"], "rouge_l": ans["rouge_l"],
                    "has_trace_target": has_target, **strict, **compat,
                    "trace_scored": has_target and not not_scored})
    result = _typed(pd.DataFrame(out, columns=ITEM_COLUMNS))
    counts = {"joined": 0, "other_row": 0, "carried_over": 0, "no_row": 0}
    for j in joins.values():
        for k, v in j.counts.items():
            counts[k] += v
    result.attrs["compat_join"] = {"mode": mode_compat_join, **counts}
    return result


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    """Fixed dtypes, so items of different runs concatenate and round-trip through parquet."""
    df = df.copy()
    for col in ("id", "category", "prediction", "parse_status", "answer_pred"):
        df[col] = df[col].astype(str)
    for col in ("answer_em", "has_trace_target", "cls_correct", "ir_exact", "trace_correct",
                "compat_evaluated", "trace_scored"):
        df[col] = df[col].astype(bool)
    for col in ("answer_f1", "rouge_l", "ir_precision", "ir_recall"):
        df[col] = df[col].astype(float)
    for col in ("cls_correct_compat", "ir_correct_compat", "trace_correct_compat"):
        df[col] = pd.array(df[col].tolist(), dtype="boolean")
    df["cls_pred"] = pd.Series([None if v is None or (isinstance(v, float) and math.isnan(v))
                                else str(v) for v in df["cls_pred"]], dtype=object, index=df.index)
    df["ir_pred"] = pd.Series([[int(i) for i in v] for v in df["ir_pred"]], dtype=object,
                              index=df.index)
    return df


def update_items_file(path: str | Path, items: pd.DataFrame) -> pd.DataFrame:
    """Merge the items of some runs into ``results/<profile>/items.parquet``: rows of the same
    runs (dataset, model, condition, seed) are replaced, others kept. Returns the merged frame,
    sorted by run (dataset, model, condition, seed; a stable sort, so each run's items keep
    their order): the file's bytes do not depend on which runs were merged when."""
    missing = [c for c in ALL_ITEM_COLUMNS if c not in items.columns]
    extra = [c for c in items.columns if c not in ALL_ITEM_COLUMNS + OPTIONAL_ITEM_COLUMNS]
    if missing or extra:
        raise ValueError(f"items columns differ from docs/architecture.md: missing {missing}, "
                         f"unexpected {extra}")
    items = items[ALL_ITEM_COLUMNS + [c for c in OPTIONAL_ITEM_COLUMNS if c in items.columns]]
    path = Path(path)
    if path.exists():
        old = pd.read_parquet(path)
        runs = set(map(tuple, items[RUN_COLUMNS].astype(str).drop_duplicates().to_numpy()))
        keep = [tuple(r) not in runs for r in old[RUN_COLUMNS].astype(str).to_numpy()]
        merged = pd.concat([old[keep], items], ignore_index=True)
    else:
        merged = items.reset_index(drop=True)
    key = merged[RUN_COLUMNS].astype(str)
    key["seed"] = pd.to_numeric(merged["seed"])
    merged = merged.iloc[key.sort_values(RUN_COLUMNS, kind="mergesort").index].reset_index(drop=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.parquet")
    merged.to_parquet(tmp, index=False)
    tmp.replace(path)
    return merged


# --------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------

def table_2x2(answer_ok: Iterable[bool], step_ok: Iterable[bool]) -> list[list[int]]:
    """``[[A and T, A and not T], [not A and T, not A and not T]]``."""
    a = np.asarray(list(answer_ok), dtype=bool)
    t = np.asarray(list(step_ok), dtype=bool)
    return [[int((a & t).sum()), int((a & ~t).sum())], [int((~a & t).sum()), int((~a & ~t).sum())]]


def _mean(s: pd.Series) -> float | None:
    s = pd.to_numeric(s, errors="coerce").dropna()
    return float(s.mean()) if len(s) else None


def status_counts(statuses: Iterable[str]) -> dict:
    """Counts per full status and per failure class (a status can hold several classes)."""
    statuses = list(statuses)
    full = Counter(statuses)
    classes = Counter()
    for s in statuses:
        for part in str(s).split("+"):
            classes[part] += 1
    return {"by_status": dict(sorted(full.items())),
            "by_class": {k: int(classes.get(k, 0)) for k in (STATUS_OK,) + FAILURE_CLASSES}}


def summarize(items: pd.DataFrame) -> dict:
    """The JSON summary of scored items: n, answer EM / F1 (/ ROUGE-L), step accuracies, the
    three 2x2 tables (answer x classification, answer x IR, answer x trace) under the strict
    and the compat rules (compat tables over evaluated outputs only), failure-class counts,
    and the same key numbers per category."""
    n = int(len(items))
    em = items["answer_em"].astype(bool)

    def block(df: pd.DataFrame) -> dict:
        e = df["answer_em"].astype(bool)
        return {
            "n": int(len(df)),
            "answer": {"em": _mean(e), "f1": _mean(df["answer_f1"]), "rouge_l": _mean(df["rouge_l"])},
            "strict": {
                "cls_acc": _mean(df["cls_correct"].astype(float)),
                "ir_exact_acc": _mean(df["ir_exact"].astype(float)),
                "ir_precision": _mean(df["ir_precision"]),
                "ir_recall": _mean(df["ir_recall"]),
                "trace_acc": _mean(df["trace_correct"].astype(float)),
            },
        }

    out = block(items)
    ev = items[items["compat_evaluated"].astype(bool)]
    eve = ev["answer_em"].astype(bool)
    out["strict"]["tables"] = {
        "answer_x_cls": table_2x2(em, items["cls_correct"]),
        "answer_x_ir": table_2x2(em, items["ir_exact"]),
        "answer_x_trace": table_2x2(em, items["trace_correct"]),
    }
    out["compat"] = {
        "n_evaluated": int(len(ev)),
        "n_unevaluated": n - int(len(ev)),
        "cls_acc": _mean(ev["cls_correct_compat"].astype(float)),
        "ir_acc": _mean(ev["ir_correct_compat"].astype(float)),
        "trace_acc": _mean(ev["trace_correct_compat"].astype(float)),
        "tables": {
            "answer_x_cls": table_2x2(eve, ev["cls_correct_compat"].astype(bool)),
            "answer_x_ir": table_2x2(eve, ev["ir_correct_compat"].astype(bool)),
            "answer_x_trace": table_2x2(eve, ev["trace_correct_compat"].astype(bool)),
        },
    }
    out["parse_status"] = status_counts(items["parse_status"])
    out["by_category"] = {str(cat): block(df) for cat, df in items.groupby("category", sort=True)}
    return _jsonable(out)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    return obj


# --------------------------------------------------------------------------------------------
# The CoTempQA subject/object rule, side by side
# --------------------------------------------------------------------------------------------

def cotemp_rule_em(items: pd.DataFrame, gold: pd.DataFrame, *,
                   decode_literal: bool = True) -> pd.DataFrame:
    """CoTempQA items re-scored under both subject/object rules: ``items`` with the columns
    ``em_official`` and ``em_answer_type`` added (the same extracted answers, ``answer_pred``,
    scored against their gold rows found by ``id``). Items of other datasets are dropped.
    ``decode_literal`` as in :func:`answer_scores` (True for items scored with the strict
    answer rule, False for the original's)."""
    official = [d for d in qa.names() if qa.get(d).answer_scorer == "cotempqa_official"]
    if "dataset" in items.columns:
        items = items[items["dataset"].astype(str).isin(official)]
        names = items["dataset"].astype(str).tolist()
    else:  # items of one dataset scored by the official CoTempQA matching
        names = official[:1] * len(items)
    by_id = {str(r["id"]): r for r in gold.to_dict("records")}
    missing = [i for i in items["id"].astype(str) if i not in by_id]
    if missing:
        raise KeyError(f"{len(missing)} item ids are not in the gold data, e.g. {missing[:5]}")
    out = items.copy()
    for rule in COTEMP_RULES:
        out[f"em_{rule}"] = [
            answer_scores(p, by_id[str(i)], ds, decode_literal=decode_literal, cotemp_rule=rule)["em"]
            for i, p, ds in zip(items["id"].astype(str), items["answer_pred"].tolist(), names)]
    return out


def cotemp_rule_table(items: pd.DataFrame, gold: pd.DataFrame,
                      by: Sequence[str] = ("model", "condition", "category"), *,
                      decode_literal: bool = True) -> pd.DataFrame:
    """CoTempQA answer EM under the ``official`` and the ``answer_type`` rule, side by side:
    one row per ``by`` group (seeds pooled) with ``n``, ``em_official``, ``em_answer_type``,
    their difference (answer_type - official, in points of 100) and how many items each rule
    alone scores correct (``only_official``, ``only_answer_type``)."""
    scored = cotemp_rule_em(items, gold, decode_literal=decode_literal)
    by = [c for c in by if c in scored.columns]
    if scored.empty:
        return pd.DataFrame(columns=list(by) + ["n", "em_official", "em_answer_type",
                                                "diff_points", "only_official", "only_answer_type"])
    o = scored["em_official"].astype(bool)
    a = scored["em_answer_type"].astype(bool)
    scored = scored.assign(_o=o, _a=a, _oo=o & ~a, _aa=a & ~o)
    g = scored.groupby(list(by), sort=True)
    tab = pd.DataFrame({"n": g.size(), "em_official": g["_o"].mean(), "em_answer_type": g["_a"].mean(),
                        "only_official": g["_oo"].sum(), "only_answer_type": g["_aa"].sum()})
    tab["diff_points"] = 100 * (tab["em_answer_type"] - tab["em_official"])
    tab = tab.reset_index()
    return tab[list(by) + ["n", "em_official", "em_answer_type", "diff_points", "only_official",
                           "only_answer_type"]]
