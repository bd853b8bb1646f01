"""The study's prompt and trace text, in one place (STUDY_SPEC §2).

Both the renderer (:mod:`helpers.traces`) and the parser (:mod:`helpers.scoring`) use these
constants, so a change to a sentence here changes training targets and scoring together.

An assistant target with a trace looks like::

    <think>{classification sentence}\n{retrieval sentence}</think> <answer>{answer}</answer>

Two renderings (the ``rendering`` parameter):

``project`` (default)
    Facts cited in the retrieval sentence and the context in the user message are rendered the
    same way in every condition and dataset (the original rendered one condition differently:
    a confound), and the user turn ends ``...{question}\nOnly return the answer.\n``.
``original``
    What the original trained and tested on, byte for byte (STUDY_SPEC §2): the user turn
    separates the question from "Only return the answer." with a space for CoTempQA (train and
    test) and bAbI training, a newline for bAbI inference and MS MARCO
    (:func:`original_separator`); the MS MARCO passage and the CoTempQA incorrect fact are
    cited as bare strings (:func:`render_original_facts`). Which facts are cited is chosen in
    :mod:`helpers.traces`.
"""
from __future__ import annotations

from typing import Iterator, Mapping, Sequence

from . import qa

SYSTEM_PROMPT = (
    "You are {name}, an AI assistant created to be helpful and honest. Your knowledge spans a "
    "wide range of topics, allowing you to engage in substantive conversations and provide "
    "analysis on complex subjects."
)

USER_TEMPLATE = "Answer the question based on the context:\n{context}\nQuestion: {question}\nOnly return the answer.\n"

# The original's user turn: {sep} is " " or "\n" (original_separator).
ORIGINAL_USER_TEMPLATE = ("Answer the question based on the context:\n{context}\nQuestion: {question}{sep}"
                          "Only return the answer.\n")

RENDERINGS = ("project", "original")
STAGES = ("train", "test")

class _Sentences(Mapping):
    """``{dataset: sentence}`` over the registered datasets (each dataset module holds its two
    sentences: ``qa.get(dataset).classification`` / ``.retrieval``)."""

    def __init__(self, hook: str):
        self._hook = hook

    def __getitem__(self, dataset: str) -> str:
        return getattr(qa.get(dataset), self._hook)

    def __iter__(self) -> Iterator[str]:
        return iter(qa.names())

    def __len__(self) -> int:
        return len(qa.names())


# Classification step (C): what kind of question is this? ("... {label}.")
CLASSIFICATION: Mapping[str, str] = _Sentences("classification")
# Information-retrieval step (R): which facts answer it? ("... {facts}")
RETRIEVAL: Mapping[str, str] = _Sentences("retrieval")

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"

def system_prompt(name: str = "SmolLM") -> str:
    return SYSTEM_PROMPT.format(name=name)


def render_context(dataset: str, context: Sequence[str]) -> str:
    """The context as shown in the user message (the dataset's rendering: a Python list for
    CoTempQA / MS MARCO, as in the original; one line per sentence for bAbI)."""
    return qa.get(dataset).render_context(list(context))


def render_facts(facts: Sequence[str]) -> str:
    """Facts cited in the retrieval step: always a Python list literal (parseable back)."""
    return repr(list(facts))


def render_answer(dataset: str, answers: Sequence[str]) -> str:
    """The answer as the target states it (the dataset's rendering: CoTempQA a list literal
    of its several gold answers; the others a plain string)."""
    return qa.get(dataset).render_answer(list(answers))


def check_rendering(rendering: str | None) -> str:
    """The rendering name (``None`` = ``project``, for configs written before the parameter)."""
    r = rendering or "project"
    if r not in RENDERINGS:
        raise ValueError(f"rendering must be one of {RENDERINGS}, not {rendering!r}")
    return r


def original_separator(dataset: str, stage: str) -> str:
    """What the original put between the question and "Only return the answer." (the
    dataset's ``original_separators``: a space for CoTempQA (training and test prompts) and
    bAbI training, a newline for bAbI test prompts and for MS MARCO)."""
    spec = qa.get(dataset)
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, not {stage!r}")
    return spec.original_separators[stage]


def render_user(dataset: str, context: Sequence[str], question: str, rendering: str = "project",
                stage: str = "train") -> str:
    """The user turn: context and question. ``stage`` (``train`` | ``test``) matters only for
    the ``original`` rendering (:func:`original_separator`)."""
    ctx = render_context(dataset, context)
    if check_rendering(rendering) == "original":
        return ORIGINAL_USER_TEMPLATE.format(context=ctx, question=question,
                                             sep=original_separator(dataset, stage))
    return USER_TEMPLATE.format(context=ctx, question=question)


def render_original_facts(dataset: str, facts: Sequence[str], corrupted: bool = False) -> str:
    """The cited facts as the original wrote them (``str()`` of what it cited): a list literal
    where the dataset's ``original_facts_as_list`` says so for this trace (CoTempQA's correct
    trace, bAbI's both: its corrupted lines the caller lower-cases); else a bare string for one
    fact (CoTempQA's incorrect fact, the one MS MARCO passage); ``[]`` when there is nothing to
    cite. (Several facts, possible only under a non-default decomposition, stay a list
    literal.)"""
    facts = [str(f) for f in facts]
    if qa.get(dataset).original_facts_as_list["corrupted" if corrupted else "correct"]:
        return repr(facts)
    if len(facts) == 1:
        return facts[0]
    return repr(facts)


def render_trace_text(dataset: str, label: str, facts_text: str, answer: str) -> str:
    """A trace target whose retrieval step cites ``facts_text`` as given."""
    c = CLASSIFICATION[dataset].format(label=label)
    r = RETRIEVAL[dataset].format(facts=facts_text)
    return f"{THINK_OPEN}{c}\n{r}{THINK_CLOSE} {ANSWER_OPEN}{answer}{ANSWER_CLOSE}"


def render_trace(dataset: str, label: str, facts: Sequence[str], answer: str) -> str:
    """The full assistant target of a trace condition (the project's rendering: the facts as a
    list literal)."""
    return render_trace_text(dataset, label, render_facts(facts), answer)
