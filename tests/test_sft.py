"""Fine-tuning (helpers.sft): which tokens carry loss, batching, a smoke run on the tiny model
that lowers the loss, and resuming an interrupted run."""
import json

import pandas as pd
import pytest
import torch

from helpers import chat, config, models, paths, sft, traces
from helpers import decompose
from test_traces import BABI, SCHEMA, random_problems


@pytest.fixture(scope="module")
def tok():
    return models.load_tokenizer("tiny")


def examples(condition="correct", n=None):
    df = BABI if n is None else random_problems("babi", n, seed=11)
    return traces.build_condition(df, "babi", condition, 0)


# --------------------------------------------------------------------------------------
# the loss mask
# --------------------------------------------------------------------------------------
def test_which_tokens_carry_loss(tok):
    rows = examples()
    full, _ = sft.tokenize_examples(tok, "chatml", rows, "tiny", None, "full")
    comp, st = sft.tokenize_examples(tok, "chatml", rows, "tiny", None, "completion")
    for r, f, c in zip(rows.to_dict("records"), full, comp):
        assert f["input_ids"] == c["input_ids"]
        assert f["labels"] == f["input_ids"], "full: the whole templated conversation"
        on = [i for i, l in enumerate(c["labels"]) if l != sft.IGNORE_INDEX]
        assert on == list(range(on[0], on[-1] + 1)), "one contiguous span"
        prompt, completion, tail = chat.split_conversation(tok, traces.messages(r, "tiny"), "chatml")
        assert tok.decode([c["input_ids"][i] for i in on], skip_special_tokens=False) == completion
        assert tok.decode(c["input_ids"][:on[0]], skip_special_tokens=False) == prompt
        assert tok.decode(c["input_ids"][on[-1] + 1:], skip_special_tokens=False) == tail == "\n"
        assert c["input_ids"][on[-1]] == tok.eos_token_id, "the end of turn is learned: students stop"
        assert r["assistant"] in completion
    assert st["loss_tokens"] == sum(sum(l != -100 for l in c["labels"][1:]) for c in comp)


def test_model_loss_uses_exactly_the_masked_tokens(tok):
    torch.manual_seed(0)
    model = models.load_model("tiny", method="lora", tokenizer=tok)
    (ex,), _ = sft.tokenize_examples(tok, "chatml", examples().iloc[:1], "tiny", None, "completion")
    ids = torch.tensor([ex["input_ids"]])
    labels = torch.tensor([ex["labels"]])
    with torch.no_grad():
        out = model(input_ids=ids, labels=labels)
        logp = torch.log_softmax(out.logits[0, :-1].float(), -1)
        tgt = ids[0, 1:]
        keep = labels[0, 1:] != -100
        manual = -logp[keep].gather(1, tgt[keep, None]).mean()
        assert torch.allclose(out.loss, manual, atol=1e-5)
        # the prompt's predictions do not enter it: change the first prompt token, same loss
        other = model(input_ids=torch.cat([ids[:, :1], ids[:, 1:]], 1), labels=labels).loss
        assert torch.allclose(out.loss, other)
        full = model(input_ids=ids, labels=ids).loss
        assert not torch.allclose(out.loss, full)


def test_truncation_is_counted(tok):
    rows = examples()
    lengths = traces.example_lengths(tok, "chatml", rows, "tiny")
    cut = min(lengths) - 5
    exs, st = sft.tokenize_examples(tok, "chatml", rows, "tiny", cut, "full")
    assert st["truncated"] == len(rows) and all(len(e["input_ids"]) == cut for e in exs)
    with pytest.warns(UserWarning, match="no target token"):
        exs, st = sft.tokenize_examples(tok, "chatml", rows, "tiny", 40, "completion")
    assert st["no_loss"] == len(rows) and exs == [] and st["no_loss_ids"] == rows["id"].tolist()
    with pytest.raises(ValueError, match="loss_mask"):
        sft.tokenize_examples(tok, "chatml", rows, "tiny", 40, "assistant")


def test_collator_pads_per_batch_without_loss(tok):
    exs, _ = sft.tokenize_examples(tok, "chatml", examples(), "tiny", None, "completion")
    b = sft.PaddingCollator(tok.pad_token_id)(exs)
    n = max(len(e["input_ids"]) for e in exs)
    assert b["input_ids"].shape == (2, n)
    short = min(range(2), key=lambda i: len(exs[i]["input_ids"]))
    k = len(exs[short]["input_ids"])
    assert (b["input_ids"][short, k:] == tok.pad_token_id).all() and tok.pad_token_id != tok.eos_token_id
    assert (b["labels"][short, k:] == -100).all() and (b["attention_mask"][short, k:] == 0).all()
    assert b["attention_mask"][short, :k].all()


# --------------------------------------------------------------------------------------
# training on the tiny model
# --------------------------------------------------------------------------------------
def smoke_cfg(**kw):
    cfg = config.load_profile("smoke")
    cfg.update(datasets=["babi"], conditions=["correct"], max_steps=6, batch_size=2, grad_accum=1,
               max_length=1024, lr=5e-3)
    cfg.update(kw)
    return cfg


def _loss_on(model, exs, pad_id):
    model.eval()
    with torch.no_grad():
        loss = model(**sft.PaddingCollator(pad_id)(exs)).loss.item()
    model.train()
    return loss


def test_smoke_training_lowers_the_loss(tmp_path):
    cfg = smoke_cfg(max_steps=8, lr=2e-2, warmup_ratio=0.0, lr_scheduler="constant")
    config.seed_everything(0)
    model, tok = sft.load_for_training(cfg, "tiny")
    exs, _ = sft.tokenize_examples(tok, "chatml", examples(), "tiny", 256, "full")
    before = _loss_on(model, exs, tok.pad_token_id)
    trainer = sft.build_trainer(cfg, model, tok, exs * 2, tmp_path, seed=0, progress=False, save_strategy="no")
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 8 and losses[-1] < losses[0]
    after = _loss_on(model, exs, tok.pad_token_id)
    assert after < before - 0.15, (before, after)  # a random 2-layer model: LoRA moves it slowly


@pytest.fixture
def study(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "DATA", tmp_path / "data")
    monkeypatch.setattr(paths, "RUNS", tmp_path / "runs")
    cfg = smoke_cfg()
    df = random_problems("babi", 12, seed=5)
    d = paths.data_dir(cfg["profile"], "babi")
    d.mkdir(parents=True)
    decompose.write_problems(cfg, "babi", {"train": df[SCHEMA], "test": df[SCHEMA].assign(split="test")})
    traces.prepare_traces(cfg)
    return cfg


def _adapter(rd):
    from safetensors.torch import load_file

    return load_file(str(rd / "adapter" / "adapter_model.safetensors"))


def test_run_resumes_after_an_interruption(study, tmp_path, monkeypatch):
    cfg = study
    rd = sft.train_run(cfg, "babi", "tiny", "correct", 0, progress=False, stop_after=3)
    assert not (rd / "stamp.json").exists() and not (rd / "adapter").exists()
    assert [p.name for p in sorted((rd / "checkpoints").glob("checkpoint-*"))] == ["checkpoint-2", "checkpoint-3"]
    rd = sft.train_run(cfg, "babi", "tiny", "correct", 0, progress=False)
    m = config.read_json(rd / "metrics.json")
    assert m["resumed_from_step"] == 3 and m["global_step"] == 6
    hist = config.read_json(rd / "log_history.json")
    steps = [h["step"] for h in hist if "loss" in h]
    assert steps == [1, 2, 3, 4, 5, 6], "each step once: steps 1-3 from the checkpoint, 4-6 after it"
    for f in ("config.json", "adapter", "tokenizer", "metrics.json", "log_history.json", "stamp.json"):
        assert (rd / f).exists(), f
    assert config.read_json(rd / "config.json")["run"]["condition"] == "correct"
    assert m["tokens_per_s"] > 0 and m["truncated"] == 0 and m["examples"] == 12
    interrupted = _adapter(rd)
    # skipped when fresh
    mtime = (rd / "metrics.json").stat().st_mtime_ns
    assert sft.train_run(cfg, "babi", "tiny", "correct", 0, progress=False) == rd
    assert (rd / "metrics.json").stat().st_mtime_ns == mtime
    # the same run without interruption ends with the same weights and the same curve
    monkeypatch.setattr(paths, "RUNS", tmp_path / "runs2")
    rd2 = sft.train_run(cfg, "babi", "tiny", "correct", 0, progress=False)
    straight = _adapter(rd2)
    assert straight.keys() == interrupted.keys()
    for k in straight:
        assert torch.allclose(straight[k], interrupted[k], atol=1e-6), k
    loss2 = [h["loss"] for h in config.read_json(rd2 / "log_history.json") if "loss" in h]
    assert loss2 == pytest.approx([h["loss"] for h in hist if "loss" in h], rel=1e-4)


def test_changed_config_discards_old_checkpoints(tmp_path):
    (tmp_path / "checkpoints" / "checkpoint-4").mkdir(parents=True)
    (tmp_path / "checkpoints" / "checkpoint-4" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoints" / "run_hash.txt").write_text("aaa\n")
    assert sft.prepare_checkpoints(tmp_path, "aaa").name == "checkpoint-4"
    (tmp_path / "checkpoints" / "checkpoint-6").mkdir()  # killed while writing: no trainer_state.json
    assert sft.prepare_checkpoints(tmp_path, "aaa").name == "checkpoint-4"
    assert not (tmp_path / "checkpoints" / "checkpoint-6").exists()
    assert sft.prepare_checkpoints(tmp_path, "bbb") is None
    assert not (tmp_path / "checkpoints" / "checkpoint-4").exists()


def test_load_trained_merges_and_stops(study):
    cfg = study
    rd = sft.train_run(cfg, "babi", "tiny", "correct", 0, progress=False)
    model, tok = sft.load_trained(rd)
    assert not hasattr(model, "peft_config"), "adapter merged"
    assert tok.padding_side == "left"
    assert model.generation_config.eos_token_id == tok.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    assert model.generation_config.pad_token_id == tok.pad_token_id != tok.eos_token_id
    ds = models.device_settings()
    assert model.config._attn_implementation == ds["attn_implementation"]  # generation: SDPA
    trainable, _ = sft.load_for_training(cfg, "tiny")
    assert trainable.get_base_model().config._attn_implementation == ds["train_attn_implementation"]
    base, _ = sft.load_trained(paths.run_dir(cfg["profile"], "babi", "tiny", "untrained", 0))
    diff = [not torch.equal(a, b) for a, b in zip(model.state_dict().values(), base.state_dict().values())]
    assert any(diff), "the merged model differs from the base"
    with pytest.raises(ValueError, match="krsl"):
        sft.train_run(cfg, "babi", "tiny", "krsl", 0)
    table = sft.collect_metrics(cfg)
    assert table[["dataset", "condition", "seed"]].values.tolist() == [["babi", "correct", 0]]
    curves = sft.loss_curves(cfg)
    assert curves["step"].tolist() == list(range(1, 7))
