"""The study's prompt and trace text, in one place (STUDY_SPEC §2).

Both the renderer (:mod:`helpers.traces`) and the parser (:mod:`helpers.scoring`) use these
constants, so a change to a sentence here changes training targets and scoring together.

An assistant target with a trace looks like::

    <think>{classification sentence}\n{retrieval sentence}</think> <answer>{answer}</answer>

Facts cited in the retrieval sentence and the context in the user message are rendered the
same way in every condition (the original rendered one condition differently: a confound).
"""
from __future__ import annotations

from typing import Sequence

SYSTEM_PROMPT = (
    "You are {name}, an AI assistant created to be helpful and honest. Your knowledge spans a "
    "wide range of topics, allowing you to engage in substantive conversations and provide "
    "analysis on complex subjects."
)

USER_TEMPLATE = "Answer the question based on the context:\n{context}\nQuestion: {question}\nOnly return the answer.\n"

# Classification step (C): what kind of question is this?
CLASSIFICATION = {
    "cotempqa": "The temporal relation between the event in question and the event in context is: {label}.",
    "marco": "The category of the question represents what is being asked in that question. "
             "The category of the question asked is: {label}.",
    "babi": "The category of the question represents what is being asked in that question. "
            "The category of the question asked is: {label}.",
}

# Information-retrieval step (R): which facts answer it?
RETRIEVAL = {
    "cotempqa": "I need to use the following facts to answer the question: {facts}",
    "marco": "I need to use the following text to answer the question: {facts}",
    "babi": "I need to use the following text to answer the question: {facts}",
}

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"

DATASETS = ("cotempqa", "marco", "babi")


def system_prompt(name: str = "SmolLM") -> str:
    return SYSTEM_PROMPT.format(name=name)


def render_context(dataset: str, context: Sequence[str]) -> str:
    """The context as shown in the user message: a Python list for CoTempQA / MS MARCO (as in
    the original), one line per sentence for bAbI."""
    if dataset == "babi":
        return "\n".join(context)
    return repr(list(context))


def render_facts(facts: Sequence[str]) -> str:
    """Facts cited in the retrieval step: always a Python list literal (parseable back)."""
    return repr(list(facts))


def render_answer(dataset: str, answers: Sequence[str]) -> str:
    """CoTempQA answers are a list literal (several gold answers); the others a plain string."""
    if dataset == "cotempqa":
        return repr(list(answers))
    return answers[0]


def render_user(dataset: str, context: Sequence[str], question: str) -> str:
    return USER_TEMPLATE.format(context=render_context(dataset, context), question=question)


def render_trace(dataset: str, label: str, facts: Sequence[str], answer: str) -> str:
    """The full assistant target of a trace condition."""
    c = CLASSIFICATION[dataset].format(label=label)
    r = RETRIEVAL[dataset].format(facts=render_facts(facts))
    return f"{THINK_OPEN}{c}\n{r}{THINK_CLOSE} {ANSWER_OPEN}{answer}{ANSWER_CLOSE}"
