"""QLoRA on the CPU, end to end, with the paper students' architectures and chat templates.

Tiny random-initialised models with the Llama-3.2 architecture (llama3 rope scaling, tied
embeddings, grouped key/value heads) and the Qwen3 architecture (q/k norms, tied
embeddings), saved in bf16 as local folders the way hub repos are laid out, with a
tokenizer that carries the family's special tokens and renders the package's real chat
template (``helpers/chat_templates/<family>.jinja``). Each is trained with ``method: qlora``
(4-bit NF4 base through bitsandbytes' CPU kernels, 8-bit AdamW: the paper profile's
optimiser, not paged on a CPU), its adapter saved, merged into the unquantised bf16 base and
evaluated, through the same functions the paper profile calls (``sft.train_run``,
``sft.load_trained``, ``evaluate.evaluate_run``). Seconds per model.
"""
import re

import pandas as pd
import pytest
import torch

from helpers import chat, config, evaluate, generate, models, paths, sft, traces
from helpers import decompose
from test_traces import SCHEMA, random_problems

bnb = pytest.importorskip("bitsandbytes")

STUDENTS = {"llama3": "llama32-tiny", "qwen3": "qwen3-tiny"}


def build_student(family: str, folder) -> None:
    """A tiny random model of the family's architecture plus its tokenizer, in ``folder``."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

    tok = chat.with_family_template(models.load_tokenizer("tiny"), family)
    shape = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True,
                 bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(1)
    if family == "llama3":  # Llama-3.2-1B-Instruct's position encoding
        cfg = LlamaConfig(**shape, max_position_embeddings=131072, rms_norm_eps=1e-5, rope_parameters={
            "rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "high_freq_factor": 4.0,
            "low_freq_factor": 1.0, "original_max_position_embeddings": 8192})
        model = LlamaForCausalLM(cfg)
    else:                   # Qwen3-1.7B's
        cfg = Qwen3Config(**shape, max_position_embeddings=40960, rms_norm_eps=1e-6,
                          rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})
        model = Qwen3ForCausalLM(cfg)
    model.to(torch.bfloat16).save_pretrained(folder)  # the hub checkpoints are bf16
    tok.save_pretrained(folder)


@pytest.fixture
def study(tmp_path, monkeypatch):
    """A babi study in tmp_path with the students as local folders (relative names: a run's
    folder is runs/<profile>/<dataset>/<model>/...)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(paths, "DATA", tmp_path / "data")
    monkeypatch.setattr(paths, "RUNS", tmp_path / "runs")
    for family, name in STUDENTS.items():
        build_student(family, tmp_path / name)
    cfg = config.load_profile("smoke")
    cfg.update(datasets=["babi"], conditions=["correct"], models=list(STUDENTS.values()), method="qlora",
               loss_mask="full", max_steps=4, batch_size=2, grad_accum=1, lr=2e-2, lora_r=64, lora_alpha=64,
               max_length=1024, max_new_tokens=6, eval_batch_size=4)
    df = random_problems("babi", 8, seed=5)
    d = paths.data_dir(cfg["profile"], "babi")
    d.mkdir(parents=True)
    decompose.write_problems(cfg, "babi", {"train": df[SCHEMA], "test": df[SCHEMA].head(4).assign(split="test")})
    traces.prepare_traces(cfg)
    return cfg


def _prompt_logits(model, tok, prompt: str):
    ids = tok(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


@pytest.mark.parametrize("family,cpu_bf16", [("llama3", True), ("qwen3", False)],
                         ids=["llama3-bf16-compute", "qwen3-fp32-compute"])
def test_qlora_trains_merges_and_generates_on_cpu(study, family, cpu_bf16, capsys, monkeypatch):
    """Both compute paths of a CPU: bf16 (CPUs with native bf16) and fp32 (the others)."""
    monkeypatch.setattr(models, "cpu_has_bf16", lambda: cpu_bf16)
    cfg, name = study, STUDENTS[family]
    assert models.model_family(name) == family
    ds = models.device_settings()
    assert ds["device"] == "cpu"
    assert ds["qlora_compute_dtype"] == (torch.bfloat16 if cpu_bf16 else torch.float32)

    # the quantised student the run trains: NF4 weights, the device's compute dtype, fp32 adapters
    model, tok = sft.load_for_training(cfg, name)
    q4 = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(q4) == 2 * 7, "q, k, v, o, gate, up, down of both layers are 4-bit"
    assert all(m.weight.quant_type == "nf4" and m.compute_dtype == ds["qlora_compute_dtype"] for m in q4)
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
    trainer = sft.build_trainer(cfg, model, tok, [{"input_ids": [1, 2, 3], "labels": [1, 2, 3]}],
                                paths.RUNS / "probe", progress=False)
    assert trainer.args.optim == "paged_adamw_8bit"
    opt = trainer.create_optimizer()
    assert isinstance(opt, bnb.optim.optimizer.Optimizer8bit) and opt.args.optim_bits == 8 and opt.is_paged
    del model, trainer

    # the paper profile's path: train, save the adapter
    rd = sft.train_run(cfg, "babi", name, "correct", 0)
    assert (rd / "adapter" / "adapter_model.safetensors").exists() and (rd / "stamp.json").exists()
    run_cfg = config.read_json(rd / "config.json")
    assert run_cfg["method"] == "qlora" and run_cfg["precision"]["precision"] == ds["precision"]
    assert run_cfg["precision"]["qlora_compute_dtype"] == str(ds["qlora_compute_dtype"]).replace("torch.", "")
    # the optimiser kept 8-bit states (LoRA A of 64 x 64 reaches bitsandbytes' 4096-element minimum)
    ck = max((rd / "checkpoints").glob("checkpoint-*"), key=lambda q: int(q.name.rsplit("-", 1)[1]))
    states = torch.load(ck / "optimizer.pt", weights_only=False)["state"].values()
    packed = [st.get("__bnb_optimizer_quant_state__", st) for st in states]  # bnb's checkpoint layout
    assert any(getattr(st.get("state1"), "dtype", None) == torch.uint8 for st in packed)
    losses = [h["loss"] for h in config.read_json(rd / "log_history.json") if "loss" in h]
    assert len(losses) == 4 and all(map(pd.notna, losses))
    out = capsys.readouterr().out
    assert f"[sft babi/{name}/correct/seed0] 4 steps" in out
    assert re.search(rf"\[sft babi/{name}/correct/seed0\] step 4/4 \(100%\) \| loss \d+\.\d{{3}} \| "
                     r"[\d,.]+ tok/s \| \S+ elapsed \| done", out), out

    # merged into the unquantised bf16 base: a plain model that differs from the base
    merged, mtok = sft.load_trained(rd)
    base, _ = sft.load_trained(paths.run_dir(cfg["profile"], "babi", name, evaluate.UNTRAINED, 0))
    assert not hasattr(merged, "peft_config")
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in merged.modules())
    assert mtok.eos_token == chat.END_OF_TURN[family] == mtok.convert_ids_to_tokens(merged.generation_config.eos_token_id)
    prompts = evaluate.test_prompts(cfg, "babi", name, mtok)
    marker = "<|start_header_id|>assistant<|end_header_id|>\n\n" if family == "llama3" else "<|im_start|>assistant\n"
    assert all(p["prompt"].endswith(marker) for p in prompts), "rendered with the family's real template"
    gap = (_prompt_logits(merged, mtok, prompts[0]["prompt"]) - _prompt_logits(base, mtok, prompts[0]["prompt"]))
    assert gap.abs().max() > 1e-2, "the adapter changed the model"
    del merged, base

    # evaluation generates with the merged student and with the base, and scores both
    trained = evaluate.evaluate_run(cfg, "babi", name, "correct", 0, progress=False)
    untrained = evaluate.evaluate_run(cfg, "babi", name, evaluate.UNTRAINED, 0, progress=False)
    assert len(trained) == len(untrained) == 4
    preds = generate.read_predictions(rd / "predictions.jsonl")
    assert len(preds) == 4 and all(0 < r["n_new_tokens"] <= cfg["max_new_tokens"] for r in preds.values())
