"""Chat templates per family (helpers.chat): golden renders, the fixed Llama date, Qwen3's think
block, and the prompt / completion split the loss mask and generation rely on."""
import datetime as _dt

import pytest

from helpers import chat, conditions, models, paths, traces
from test_traces import BABI, GOLDEN, USERS

SYS = ("You are {}, an AI assistant created to be helpful and honest. Your knowledge spans a wide range of "
       "topics, allowing you to engage in substantive conversations and provide analysis on complex subjects.")
MODEL = {"chatml": "tiny", "llama3": "llama-3.2-1b", "qwen3": "qwen3-1.7b"}
NAME = {"chatml": "Tiny", "llama3": "Llama", "qwen3": "Qwen"}


@pytest.fixture(scope="module")
def toks():
    base = models.load_tokenizer("tiny")
    return {"chatml": base, "llama3": chat.with_family_template(base, "llama3"),
            "qwen3": chat.with_family_template(base, "qwen3")}


def expected(family, target):
    """The family's rendering of (system, the bAbI user message, target), written out."""
    sys, user = SYS.format(NAME[family]), USERS["babi"]
    if family == "chatml":
        return (f"<|im_start|>system\n{sys}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
                f"<|im_start|>assistant\n{target}<|im_end|>\n")
    if family == "llama3":  # the template trims every message
        return ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December "
                f"2023\nToday Date: 26 Jul 2024\n\n{sys}<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
                f"{user.strip()}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n{target}<|eot_id|>")
    if "</think>" in target:  # qwen3 re-emits the think block with its own newlines
        think, rest = target.split("</think>")
        body = f"<think>\n{think[len('<think>'):]}\n</think>\n\n{rest}"
    else:
        body = f"<think>\n\n</think>\n\n{target}"
    return (f"<|im_start|>system\n{sys}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
            f"<|im_start|>assistant\n{body}<|im_end|>\n")


def test_golden_tiny_correct_written_out(toks):
    ex = traces.build_condition(BABI, "babi", "correct", 0).iloc[0]
    text = chat.render(toks["chatml"], traces.messages(ex, "tiny"), "chatml")
    assert text == (
        "<|im_start|>system\nYou are Tiny, an AI assistant created to be helpful and honest. Your knowledge spans a "
        "wide range of topics, allowing you to engage in substantive conversations and provide analysis on complex "
        "subjects.<|im_end|>\n<|im_start|>user\nAnswer the question based on the context:\nMary went to the kitchen."
        "\nJohn moved to the garden.\nQuestion: Where is Mary?\nOnly return the answer.\n<|im_end|>\n"
        "<|im_start|>assistant\n<think>The category of the question represents what is being asked in that "
        "question. The category of the question asked is: single-supporting-fact.\nI need to use the following "
        "text to answer the question: ['Mary went to the kitchen.']</think> <answer>kitchen</answer><|im_end|>\n")


def test_golden_qwen3_and_llama3_written_out(toks):
    ex = traces.build_condition(BABI, "babi", "vanilla", 0).iloc[0]
    q = chat.render(toks["qwen3"], traces.messages(ex, "qwen3-1.7b"), "qwen3")
    assert q.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\nkitchen<|im_end|>\n")
    ex = traces.build_condition(BABI, "babi", "correct", 0).iloc[0]
    q = chat.render(toks["qwen3"], traces.messages(ex, "qwen3-1.7b"), "qwen3")
    assert q.endswith(
        "<|im_start|>assistant\n<think>\nThe category of the question represents what is being asked in that "
        "question. The category of the question asked is: single-supporting-fact.\nI need to use the following "
        "text to answer the question: ['Mary went to the kitchen.']\n</think>\n\n <answer>kitchen</answer>"
        "<|im_end|>\n")
    l3 = chat.render(toks["llama3"], traces.messages(ex, "llama-3.2-1b"), "llama3")
    assert l3.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: "
                         "December 2023\nToday Date: 26 Jul 2024\n\nYou are Llama, an AI assistant")
    assert "Only return the answer.<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n<think>" in l3
    assert l3.endswith("<answer>kitchen</answer><|eot_id|>")


@pytest.mark.parametrize("family", chat.FAMILIES)
@pytest.mark.parametrize("condition", conditions.names("base"))
def test_golden_render_per_condition_and_family(toks, family, condition):
    ex = traces.build_condition(BABI, "babi", condition, 0,
                                labels=["single-supporting-fact", "two-supporting-facts"]).iloc[0]
    assert ex["assistant"] == GOLDEN[("babi", condition)]
    text = chat.render(toks[family], traces.messages(ex, MODEL[family]), family)
    assert text == expected(family, GOLDEN[("babi", condition)])
    if condition != "vanilla":  # the trace appears exactly once
        c, r = GOLDEN[("babi", condition)][len("<think>"):].split("</think>")[0].split("\n")
        assert text.count(c) == 1 and text.count(r) == 1 and text.count("<think>") == 1


def test_llama_date_never_depends_on_today(toks, monkeypatch):
    import transformers.utils.chat_template_utils as ctu

    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    before = chat.render_prompt(toks["llama3"], msgs, "llama3")

    class Y2K(_dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return cls(2000, 1, 1)

    monkeypatch.setattr(ctu, "datetime", Y2K)
    raw = toks["llama3"].apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert "Today Date: 01 Jan 2000" in raw, "the unpatched template follows the clock"
    assert chat.render_prompt(toks["llama3"], msgs, "llama3") == before
    assert "Today Date: 26 Jul 2024" in before


def test_qwen3_prompt_and_thinking(toks):
    ex = traces.build_condition(BABI, "babi", "correct", 0).iloc[0]
    msgs = traces.messages(ex, "qwen3-1.7b")
    prompt = chat.render_prompt(toks["qwen3"], msgs[:-1], "qwen3")
    assert prompt.endswith("<|im_start|>assistant\n") and "<think>" not in prompt
    assert chat.QWEN3_ENABLE_THINKING is True
    # enable_thinking=False would pre-fill an empty block: not what the students are trained to continue
    off = toks["qwen3"].apply_chat_template(msgs[:-1], tokenize=False, add_generation_prompt=True,
                                            enable_thinking=False)
    assert off == prompt + "<think>\n\n</think>\n\n"
    # ... which is the opening of the vanilla target: the vanilla student writes it itself
    van = traces.build_condition(BABI, "babi", "vanilla", 0).iloc[0]
    _, completion, _ = chat.split_conversation(toks["qwen3"], traces.messages(van, "qwen3-1.7b"), "qwen3")
    assert completion == "<think>\n\n</think>\n\nkitchen<|im_end|>"


@pytest.mark.parametrize("family", chat.FAMILIES)
def test_split_and_assistant_mask(toks, family):
    tok = toks[family]
    ex = traces.build_condition(BABI, "babi", "incorrect", 0).iloc[0]
    msgs = traces.messages(ex, MODEL[family])
    prompt, completion, tail = chat.split_conversation(tok, msgs, family)
    assert prompt + completion + tail == chat.render(tok, msgs, family)
    assert prompt == chat.render_prompt(tok, msgs[:-1], family)
    assert completion.endswith(chat.END_OF_TURN[family]) and "kitchen</answer>" in completion
    assert tail == ("" if family == "llama3" else "\n")
    start, end = chat.assistant_char_span(tok, msgs, family)
    assert chat.render(tok, msgs, family)[start:end] == completion
    enc = chat.encode_conversation(tok, msgs, family)
    ids, mask = enc["input_ids"], enc["assistant_mask"]
    on = [t for t, m in zip(ids, mask) if m]
    assert tok.decode(on, skip_special_tokens=False) == completion
    assert on[-1] == tok.convert_tokens_to_ids(chat.END_OF_TURN[family]) == tok.eos_token_id
    assert tok.pad_token_id != tok.eos_token_id
    first = mask.index(1)
    assert tok.decode(ids[:first], skip_special_tokens=False) == prompt


def test_bad_conversations(toks):
    with pytest.raises(ValueError, match="unknown chat family"):
        chat.render(toks["chatml"], [{"role": "user", "content": "x"}], "mistral")
    with pytest.raises(ValueError, match="end with the assistant"):
        chat.split_conversation(toks["chatml"], [{"role": "user", "content": "x"}], "chatml")
    with pytest.raises(ValueError, match="without its assistant"):
        chat.render_prompt(toks["chatml"], [{"role": "user", "content": "x"},
                                            {"role": "assistant", "content": "y"}], "chatml")
    with pytest.raises(ValueError, match="role"):
        chat.render(toks["chatml"], [{"role": "robot", "content": "x"}], "chatml")
    with pytest.raises(ValueError, match="fixed date"):  # a ChatML tokenizer is not a Llama-3 one
        chat.render(toks["chatml"], [{"role": "user", "content": "x"}], "llama3")


def test_smollm2_template_renders_like_the_tiny_one(toks):
    if not (paths.MODELS / "smollm2-135m-instruct" / "build_info.json").exists():
        pytest.skip("the embedded SmolLM2 student is not converted yet (make env)")
    tok = models.load_tokenizer("smollm2-135m")
    ex = traces.build_condition(BABI, "babi", "correct", 0).iloc[0]
    msgs = traces.messages(ex, "smollm2-135m")
    assert chat.render(tok, msgs, "chatml") == chat.render(toks["chatml"], msgs, "chatml")
    assert tok.pad_token != tok.eos_token == "<|im_end|>"
