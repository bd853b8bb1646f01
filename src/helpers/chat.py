"""Chat templates per model family: the exact strings the students are trained on and prompted with.

Three families (``helpers.models.model_info(name)["family"]``):

``chatml``  (SmolLM2, the tiny smoke model)
    ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per message; the generation prompt is
    ``<|im_start|>assistant\\n``. The tokenizer's own template is used.

``llama3``  (Llama-3.2-1B-Instruct)
    The model's template writes ``Today Date: <date>`` into the system block, and takes the
    date from the clock (``strftime_now``) unless ``date_string`` is given. A rendered example
    would then depend on the day it was rendered. Every render here passes
    ``date_string=FIXED_DATE`` ("26 Jul 2024", the template's own fallback), so training and
    evaluation strings are identical on every day. The template also trims each message.

``qwen3``   (Qwen3-1.7B)
    The template takes an assistant message apart at ``</think>``: the text inside
    ``<think>…</think>`` becomes the reasoning block and is re-emitted as
    ``<think>\\n{reasoning}\\n</think>\\n\\n{rest}``. A trace target is therefore rendered with
    its trace exactly once (checked on every render), and an assistant message without a trace
    (``vanilla``) gets an empty block ``<think>\\n\\n</think>\\n\\n`` in front of its answer.
    ``enable_thinking``: the switch only changes the generation prompt. It is left on
    (``QWEN3_ENABLE_THINKING = True``) for every condition, so the prompt ends with
    ``<|im_start|>assistant\\n`` exactly where the training target begins, and the student
    writes the think block it was trained to write: the trace for trace conditions, the empty
    block for ``vanilla``. (``enable_thinking=False`` would pre-fill an empty block, which is
    the vanilla target's opening but would forbid the trace conditions their trace, and the
    prompt would differ between conditions.)

The Llama-3.2 and Qwen3 templates are stored verbatim in ``chat_templates/<family>.jinja``
(copied from the published ``chat_template`` of meta-llama/Llama-3.2-1B-Instruct and of the
Qwen3 hybrid-thinking models, which Qwen3-1.7B shares), so the renders can be checked offline
with any vocabulary (:func:`with_family_template`). With the real hub tokenizers the
tokenizer's own template is used; it is the same text.

Training splits a rendered conversation into ``prompt | completion | tail``
(:func:`split_conversation`): the prompt is exactly what generation is fed
(:func:`render_prompt`), the completion runs to and including the end-of-turn token, and the
tail is whatever the template writes after it (ChatML's newline). The completion loss
(``loss_mask: completion``) covers the completion tokens only (:func:`assistant_char_span`,
:func:`encode_conversation`).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping, Sequence

from . import templates as T

FAMILIES = ("chatml", "llama3", "qwen3")
TEMPLATE_DIR = Path(__file__).resolve().parent / "chat_templates"
FIXED_DATE = "26 Jul 2024"
QWEN3_ENABLE_THINKING = True

# The end-of-turn token each family's assistant turn ends with (= generation's EOS).
END_OF_TURN = {"chatml": "<|im_end|>", "llama3": "<|eot_id|>", "qwen3": "<|im_end|>"}
# Tokens a vocabulary needs to carry a family's template (see with_family_template).
FAMILY_SPECIAL_TOKENS = {
    "chatml": ["<|im_start|>", "<|im_end|>", "<|endoftext|>"],
    "llama3": ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
               "<|eot_id|>", "<|finetune_right_pad_id|>"],
    "qwen3": ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>"],
}


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown chat family {family!r}: one of {FAMILIES}")


def template_kwargs(family: str) -> dict[str, Any]:
    """Extra variables every render of ``family`` passes to its template."""
    _check_family(family)
    if family == "llama3":
        return {"date_string": FIXED_DATE}
    if family == "qwen3":
        return {"enable_thinking": QWEN3_ENABLE_THINKING}
    return {}


def load_template(family: str) -> str:
    """The stored template text of ``family`` (``chat_templates/<family>.jinja``); for
    ``chatml`` the template of the tiny model (SmolLM2 renders the same for a conversation
    that has a system message)."""
    _check_family(family)
    if family == "chatml":
        from .models import CHATML_TEMPLATE

        return CHATML_TEMPLATE
    p = TEMPLATE_DIR / f"{family}.jinja"
    if not p.exists():
        raise FileNotFoundError(f"chat template of family {family!r} missing: {p}")
    return p.read_text()


def with_family_template(tok, family: str):
    """A copy of ``tok`` that speaks ``family``'s chat format: its special tokens added to the
    vocabulary, its stored template, its end-of-turn token as EOS and a distinct pad token.

    Used to check the Llama-3.2 and Qwen3 renders offline with the tiny model's vocabulary;
    the strings are the family's, only the token ids differ from the real tokenizer's.
    """
    from .models import EOS_TOKENS, PAD_TOKENS

    _check_family(family)
    tok = copy.deepcopy(tok)
    vocab = tok.get_vocab()
    new = [t for t in FAMILY_SPECIAL_TOKENS[family] if t not in vocab]
    if new:
        tok.add_special_tokens({"additional_special_tokens": new}, replace_extra_special_tokens=False)
    tok.chat_template = load_template(family)
    tok.eos_token = EOS_TOKENS[family]
    tok.pad_token = PAD_TOKENS[family]
    if family == "llama3":
        tok.bos_token = "<|begin_of_text|>"
    return tok


def _check_messages(messages: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    msgs = []
    for k, m in enumerate(messages):
        if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
            raise ValueError(f"message {k} is not a {{'role', 'content'}} mapping: {m!r}")
        if m["role"] not in ("system", "user", "assistant"):
            raise ValueError(f"message {k} has role {m['role']!r}; expected system/user/assistant")
        if not isinstance(m["content"], str):
            raise ValueError(f"message {k} ({m['role']}) content is {type(m['content']).__name__}, not str")
        msgs.append({"role": m["role"], "content": m["content"]})
    if not msgs:
        raise ValueError("no messages to render")
    return msgs


def render(tok, messages: Sequence[Mapping[str, str]], family: str,
           add_generation_prompt: bool = False) -> str:
    """The conversation as the template renders it (a training text when the last message is
    the assistant's; a prompt with ``add_generation_prompt=True``).

    Llama-3 gets the fixed date; Qwen3 gets ``enable_thinking`` as documented above, and its
    render is checked to hold exactly one think block per assistant turn.
    """
    _check_family(family)
    msgs = _check_messages(messages)
    if getattr(tok, "chat_template", None) is None:
        raise ValueError(f"tokenizer {getattr(tok, 'name_or_path', tok)!r} has no chat template")
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=add_generation_prompt,
                                   **template_kwargs(family))
    if not isinstance(text, str):
        raise TypeError(f"apply_chat_template returned {type(text).__name__}, expected str")
    n_assistant = sum(m["role"] == "assistant" for m in msgs)
    if family == "qwen3" and n_assistant:
        for tag in (T.THINK_OPEN, T.THINK_CLOSE):
            if text.count(tag) != n_assistant:
                raise ValueError(f"qwen3 render holds {text.count(tag)} {tag} for {n_assistant} assistant "
                                 f"turn(s); the trace must appear exactly once")
    if family == "llama3" and FIXED_DATE not in text:
        raise ValueError("llama3 render lacks the fixed date: is this tokenizer's template Llama-3's?")
    return text


def render_prompt(tok, messages: Sequence[Mapping[str, str]], family: str) -> str:
    """What generation is fed: the conversation without the assistant turn, with the
    generation prompt (for Qwen3 with thinking left on, see the module docstring)."""
    msgs = _check_messages(messages)
    if msgs[-1]["role"] == "assistant":
        raise ValueError("render_prompt takes the conversation without its assistant turn")
    return render(tok, msgs, family, add_generation_prompt=True)


def split_conversation(tok, messages: Sequence[Mapping[str, str]], family: str) -> tuple[str, str, str]:
    """``(prompt, completion, tail)`` of a training conversation whose last message is the
    assistant's: ``prompt + completion + tail == render(...)``, ``prompt == render_prompt(...)``
    and the completion ends with the family's end-of-turn token."""
    msgs = _check_messages(messages)
    if msgs[-1]["role"] != "assistant":
        raise ValueError("the conversation must end with the assistant turn to be split for training")
    full = render(tok, msgs, family)
    prompt = render_prompt(tok, msgs[:-1], family)
    if not full.startswith(prompt):
        k = next((i for i, (a, b) in enumerate(zip(full, prompt)) if a != b), min(len(full), len(prompt)))
        raise ValueError(f"{family}: the prompt is not a prefix of the rendered conversation "
                         f"(they differ at char {k}: {full[k:k + 30]!r} vs {prompt[k:k + 30]!r})")
    eot = END_OF_TURN[family]
    end = full.find(eot, len(prompt))
    if end < 0:
        raise ValueError(f"{family}: no end-of-turn {eot!r} after the prompt in the rendered conversation")
    end += len(eot)
    return prompt, full[len(prompt):end], full[end:]


def assistant_char_span(tok, messages: Sequence[Mapping[str, str]], family: str) -> tuple[int, int]:
    """Character span ``[start, end)`` of the assistant's completion (through its end-of-turn
    token) inside ``render(tok, messages, family)``."""
    prompt, completion, _ = split_conversation(tok, messages, family)
    return len(prompt), len(prompt) + len(completion)


def encode_conversation(tok, messages: Sequence[Mapping[str, str]], family: str) -> dict[str, list[int]]:
    """Token ids of a training conversation and its assistant mask (1 = completion token).

    The prompt, the completion and the tail are tokenised separately and concatenated, so the
    prompt tokens are exactly the tokens generation is fed and the completion tokens are the
    ones the student must produce after them. No special tokens are added beyond the
    template's own (the Llama-3 template writes its BOS itself).
    """
    prompt, completion, tail = split_conversation(tok, messages, family)
    ids_p = tok(prompt, add_special_tokens=False)["input_ids"]
    ids_c = tok(completion, add_special_tokens=False)["input_ids"]
    ids_t = tok(tail, add_special_tokens=False)["input_ids"] if tail else []
    return {"input_ids": ids_p + ids_c + ids_t,
            "assistant_mask": [0] * len(ids_p) + [1] * len(ids_c) + [0] * len(ids_t)}
