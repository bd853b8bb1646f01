"""`make bench`: the study's speed, measured against the straightforward way of doing the same work.

Every figure is a pair measured in the same run on the same machine, and every target is a
ratio of such a pair (or a wall-clock budget), so the report means the same on a laptop and
on a workstation. Four parts (``--parts``):

``gen``        Evaluation generation. The project's evaluation (:func:`helpers.generate.
               generate_predictions`: prompts longest-first into batch slots that are refilled
               as answers end, the prompts' shared prefix computed once, a bf16 copy of the
               model where the CPU has native bf16) vs. the original
               study's way (one item at a time, one ``generate`` call per item, the model's own
               dtype), on the same student, the same test prompts and the same
               ``max_new_tokens``; for two students: the untrained base model (short answers)
               and a trace student (fine-tuned on correct traces: long outputs, what most
               evaluation runs generate). Also the project's batching in fp32, to tell how
               many greedy outputs differ because of batching and how many because of bf16.
               Target: >= 5x in items/s and tokens/s, for both students.
``sft``        Fine-tuning. Non-padding training tokens/s of the project's SFT
               (:func:`helpers.sft.build_trainer`) vs. a plain ``transformers.Trainer`` with
               default arguments (fp32, random order, every batch padded to its longest
               sequence), on the same examples, model, LoRA config and number of steps; both
               loss curves and their agreement. Target: >= 1.5x.
``reproduce``  ``make reproduce`` from a clean profile, stage by stage: wall time and peak
               memory per stage, then the answer accuracy of the untrained student vs. every
               fine-tuned condition per dataset. Target (quick): <= 30 min with the lift.
               Runs only by default on the quick profile or when named in ``--parts``: it
               starts with ``make clean PROFILE=<profile>``.
``gpu``        On a CUDA machine: SFT tokens/s, MFU and peak GPU memory of Llama-3.2-1B- and
               Qwen3-1.7B-sized models built from their shipped hub configs (random weights: no
               network needed), bf16 LoRA vs. QLoRA; generation tokens/s; and from those the
               estimated wall time of the paper profile's grid. Target: <= 90 min on one H100.
               Without CUDA the part records that it was skipped and prints the estimates'
               arithmetic (:func:`estimate_time`: the paper grid on one H100 with the original's
               and the profile's settings, the colab profile on a T4), as ``--estimate`` does.

Writes ``results/bench/bench.{json,md}`` for the quick profile and
``results/bench/<profile>/bench.{json,md}`` for any other, so the quick figures the README
quotes are never overwritten by a smoke run.

    python benchmarks/bench.py --profile quick [--parts gen,sft] [--out DIR]   (or `make bench`)

It lives outside the study package: editing it changes no stage's code hash and re-runs no
notebook. It times the fast engine (:mod:`helpers.engine`, the default ``engine: fast``)
against the straightforward way.
"""
from __future__ import annotations

import argparse
import json
import gc
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Mapping, Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:  # the checkout's helpers, also when run without installing
    sys.path.insert(0, str(ROOT / "src"))

from helpers import config, paths  # noqa: E402

PARTS = ("gen", "sft", "reproduce", "gpu")
# The report's layout version: parts kept from an earlier bench.json must have this one.
SCHEMA = 2

# Sizes per profile. quick: the 64 test prompts and 12 optimizer steps the README quotes;
# smoke: seconds overall (the tests run it).
SIZES: dict[str, dict[str, Any]] = {
    "smoke": {"gen_prompts": 6, "sft_steps": 4, "sft_eval_examples": 4,
              "gpu_seq_len": 128, "gpu_steps": 2, "gpu_gen_prompt_len": 64, "gpu_gen_new_tokens": 16},
    "quick": {"gen_prompts": 64, "sft_steps": 12, "sft_eval_examples": 16,
              "gpu_seq_len": 512, "gpu_steps": 10, "gpu_gen_prompt_len": 512, "gpu_gen_new_tokens": 128},
}
SIZES["paper"] = dict(SIZES["quick"])

# The condition whose traces the SFT part trains on: a trace condition, so the examples have
# the study's full length spread (the vanilla targets are only the answer).
SFT_CONDITION = "correct"

TARGETS = {
    "gen_ratio": 5.0,                   # project / one-at-a-time, items/s and generated tokens/s
    "sft_tokens_per_s_ratio": 1.5,      # project / default Trainer, non-padding tokens per second
    "reproduce_wall_s": 30 * 60,        # quick profile, environment installed, this machine
    "reproduce_min_em_lift": 0.10,      # every main fine-tuned condition >= untrained + 10 points
    "paper_grid_wall_s_h100": 90 * 60,  # estimated, paper grid on one H100
}
# The conditions the accuracy-lift criterion covers (the paper's grid); the others are reported.
LIFT_CONDITIONS = ("vanilla", "correct", "incorrect")

NO_CUDA = "no CUDA device on this machine"


# =============================================================================== machine
def machine_info() -> dict[str, Any]:
    """CPU model, cores, RAM, torch threads and GPU of this machine."""
    info: dict[str, Any] = {"cpu_model": platform.processor() or platform.machine(),
                            "cpu_count": os.cpu_count()}
    try:
        info["cpu_affinity"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        info["cpu_affinity"] = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["ram_gb"] = round(int(line.split()[1]) / 1024 ** 2, 1)
                break
    except OSError:
        info["ram_gb"] = None
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        from helpers.models import device_settings

        ac = device_settings()["autocast_dtype"]
        info["autocast_dtype"] = str(ac).replace("torch.", "") if ac is not None else None
    except Exception:  # torch missing or broken: the rest of the record still stands
        info.setdefault("cuda", None)
    info["omp_num_threads"] = os.environ.get("OMP_NUM_THREADS")
    return info


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def _r(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(float(x), nd)


def _sizes(profile: str) -> dict[str, Any]:
    return dict(SIZES.get(profile, SIZES["quick"]))


def _cpu_busy_s() -> float | None:
    """Busy CPU seconds of the whole machine so far (all cores; /proc/stat, including time
    stolen by the hypervisor), None where there is no /proc/stat."""
    try:
        v = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    except (OSError, ValueError, IndexError):
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = (v + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class Stopwatch:
    """Wall time of a block, this process's CPU time, and how much of the machine other
    processes used meanwhile (``others_cpu_frac``: their busy CPU seconds over wall time x
    cores). On a shared machine a side measured while others were busy is slowed down by
    them, so each figure carries this."""

    def __enter__(self):
        self._b = _cpu_busy_s()
        self._c = time.process_time()
        self._t = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self._t
        self.cpu = time.process_time() - self._c
        b = _cpu_busy_s()
        n = os.cpu_count() or 1
        self.others = (None if b is None or self._b is None or self.wall <= 0
                       else min(1.0, max(0.0, (b - self._b - self.cpu) / (self.wall * n))))  # clock-tick rounding
        return False

    def record(self) -> dict[str, Any]:
        return {"seconds": _r(self.wall), "cpu_s": _r(self.cpu), "others_cpu_frac": _r(self.others, 3)}


CONTENDED = 0.10  # others used more than 10% of the machine during a measurement: flagged


def contention_note(*sides: Mapping[str, Any]) -> str | None:
    """A warning when other processes used the machine during any of ``sides``."""
    fr = [x.get("others_cpu_frac") for x in sides if x.get("others_cpu_frac") is not None]
    if fr and max(fr) > CONTENDED:
        return (f"other processes used up to {max(fr):.0%} of this machine's CPU during these measurements "
                "(see others_cpu_frac): the sides were slowed unevenly and the ratios are less reliable")
    return None


# =============================================================================== prompts
def problems(cfg: Mapping[str, Any], split: str) -> dict[str, Any]:
    """The profile's ``split`` problems per dataset, exactly as the data stage builds them
    (same source, seed and caps). Built in memory: the benchmark needs no ``make data`` and
    leaves ``data/`` alone."""
    from helpers import data, decompose

    out = {}
    for ds in cfg["datasets"]:
        full, _report = data.load_dataset_source(ds, cfg)
        rows = data.validate(data.apply_caps(full, cfg, ds))
        rows = decompose.problems_frame(rows, ds, cfg.get("decomposition") or "default")  # 02
        out[ds] = rows[rows["split"] == split].reset_index(drop=True)
    return out


def round_robin(per: Mapping[str, Sequence[Any]], n: int) -> list[Any]:
    """``n`` elements taken in turn from each list (first of each, second of each, ...)."""
    lists = [list(v) for v in per.values()]
    out: list[Any] = []
    k = 0
    while len(out) < n and any(k < len(p) for p in lists):
        for p in lists:
            if k < len(p) and len(out) < n:
                out.append(p[k])
        k += 1
    if len(out) < n:
        raise ValueError(f"only {len(out)} rows available; the benchmark needs {n}")
    return out


def gen_items(cfg: Mapping[str, Any], model_name: str, tok, n: int) -> list[dict[str, str]]:
    """``n`` test problems (round-robin over the datasets) rendered as generation prompts for
    ``model_name``, as the evaluation renders them (system + user, generation prompt)."""
    from helpers import chat, traces
    from helpers.models import model_family

    fam = model_family(model_name)
    per = {ds: traces.build_test(df, ds).to_dict("records") for ds, df in problems(cfg, "test").items()}
    return [{"id": str(r["id"]), "prompt": chat.render_prompt(tok, traces.messages(r, model_name, with_assistant=False), fam)}
            for r in round_robin(per, n)]


# =============================================================================== part 1: generation
# The students the generation part measures. ``untrained``: the base model (its answers are
# a sentence or two); ``trace``: the base model fine-tuned on correct traces by the project's
# SFT, merged: it writes a trace and an answer, as 9 of the quick evaluation's 15 runs do.
GEN_STUDENTS = ("untrained", "trace")


def one_at_a_time(model, tok, prompts: Sequence[str], max_new_tokens: int) -> list[dict[str, Any]]:
    """The original study's evaluation loop: one prompt, one ``generate`` call, no batching,
    the model's own dtype. Continuations are cut after the first EOS (counted as a generated
    token), as the project's generation does."""
    import torch

    device = next(model.parameters()).device
    out = []
    for p in prompts:
        enc = tok(p, return_tensors="pt", add_special_tokens=False).to(device)
        with torch.inference_mode():
            ids = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        row = ids[0, enc["input_ids"].shape[1]:].tolist()
        finished = tok.eos_token_id in row
        n = row.index(tok.eos_token_id) + 1 if finished else len(row)
        out.append({"prediction": tok.decode(row[:n], skip_special_tokens=True), "n_new_tokens": n,
                    "finished": finished})
    return out


def _throughput(n_items: int, n_tokens: int, sw: Stopwatch) -> dict[str, Any]:
    return {"items": n_items, "generated_tokens": n_tokens, **sw.record(),
            "items_per_s": _r(n_items / sw.wall, 4), "tokens_per_s": _r(n_tokens / sw.wall, 3)}


def _agreement(a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]], ids: Sequence[str]) -> dict[str, Any]:
    """How many greedy outputs differ as text, and how many of those in the answer itself
    (the original's answer extraction: what answer scoring reads)."""
    from helpers.scoring import extract_answer_compat

    diff = [i for i, x, y in zip(ids, a, b) if x["prediction"] != y["prediction"]]
    ans = [i for i, x, y in zip(ids, a, b)
           if extract_answer_compat(x["prediction"]) != extract_answer_compat(y["prediction"])]
    return {"n": len(ids), "identical": len(ids) - len(diff), "differ": len(diff), "differ_ids": diff,
            "answer_differs": len(ans)}


def trace_student(cfg: Mapping[str, Any], sizes: Mapping[str, Any], name: str, work: Path):
    """The ``trace`` student: ``sizes["sft_steps"]`` steps of the project's SFT on correct
    traces (the fine-tuning part's examples and settings), the adapter merged into the base
    weights as the evaluation loads a run. Returns ``(model, tok, info)``."""
    from helpers import models, sft

    seed = int(cfg["seeds"][0])
    steps = int(sizes["sft_steps"])
    n = steps * int(cfg["batch_size"]) * int(cfg["grad_accum"])
    tok = models.load_tokenizer(name)
    train, _ = sft_examples(cfg, name, tok, "train", n)
    run_cfg = dict(cfg, max_steps=steps)
    config.seed_everything(seed)
    model, tok = sft.load_for_training(run_cfg, name)
    trainer = sft.build_trainer(run_cfg, model, tok, [dict(e) for e in train], work / "gen_student",
                                seed=seed, max_steps=steps, progress=False, save_strategy="no")
    with Stopwatch() as sw:
        trainer.train()
    losses = loss_curve(trainer.state.log_history)
    model = model.merge_and_unload()
    models.align_special_tokens(model, tok)
    model.config.use_cache = True
    model.eval()
    del trainer
    gc.collect()
    return model, tok, {"condition": SFT_CONDITION, "steps": steps, "examples": len(train),
                        "train_seconds": sw.record()["seconds"],
                        "loss_first": _r(losses[0], 4) if losses else None,
                        "loss_last": _r(losses[-1], 4) if losses else None}


def gen_one_student(model, tok, items: Sequence[Mapping[str, str]], *, max_new_tokens: int, batch_size: int,
                    work: Path, key: str, progress: bool = False) -> dict[str, Any]:
    """One student, three ways, same prompts and budget: one ``generate`` per item (the
    baseline), the project's evaluation (:func:`helpers.generate.generate_predictions`:
    longest-first into batch slots refilled as answers end, shared prompt prefix computed once,
    bf16 copy where the CPU has native bf16), and the project's batching in the model's own dtype (``project_fp32``: what
    batching alone changes in the greedy outputs)."""
    from helpers.engine.generation import generate_batch, low_precision
    from helpers.generate import generate_predictions

    ids = [it["id"] for it in items]
    prompts = [it["prompt"] for it in items]
    # warm-up: first calls allocate and pick kernels; no side should pay for it
    lp_model = low_precision(model)
    lp = str(next(lp_model.parameters()).dtype).replace("torch.", "")
    one_at_a_time(model, tok, prompts[:1], 2)
    generate_batch(model, tok, prompts[:2], max_new_tokens=2)
    generate_batch(lp_model, tok, prompts[:2], max_new_tokens=2)
    del lp_model
    gc.collect()

    with Stopwatch() as sw_b:
        base = one_at_a_time(model, tok, prompts, max_new_tokens)
    recs, sws = {}, {}
    for side, bf16 in (("project", True), ("project_fp32", False)):
        out = work / f"gen_{key}_{side}.jsonl"
        out.unlink(missing_ok=True)
        with Stopwatch() as sws[side]:
            recs[side] = generate_predictions(model, tok, items, out, max_new_tokens=max_new_tokens,
                                              batch_size=batch_size, progress=progress,
                                              desc=f"bench {key} {side}", bf16=bf16)
    n = len(items)
    b = _throughput(n, sum(r["n_new_tokens"] for r in base), sw_b)
    b.update(batch_size=1, dtype=str(next(model.parameters()).dtype).replace("torch.", ""), shared_prefix=False)
    res: dict[str, Any] = {"baseline": b}
    for side in ("project", "project_fp32"):
        r = _throughput(n, sum(x["n_new_tokens"] for x in recs[side]), sws[side])
        r.update(batch_size=batch_size, dtype=lp if side == "project" else b["dtype"], shared_prefix=True)
        res[side] = r
    p, q = res["project"], res["project_fp32"]
    res["ratios"] = {"items_per_s": _r(_ratio(p["items_per_s"], b["items_per_s"]), 3),
                     "tokens_per_s": _r(_ratio(p["tokens_per_s"], b["tokens_per_s"]), 3),
                     "fp32_items_per_s": _r(_ratio(q["items_per_s"], b["items_per_s"]), 3)}
    res["generated_tokens_mean"] = _r(b["generated_tokens"] / n, 1)
    res["finished_share"] = _r(sum(x["finished"] for x in base) / n, 3)
    res["contention"] = contention_note(b, p, q)
    res["agreement"] = {"project_vs_one_at_a_time": _agreement(recs["project"], base, ids),
                        "project_fp32_vs_one_at_a_time": _agreement(recs["project_fp32"], base, ids)}
    return res


def bench_gen(cfg: Mapping[str, Any], sizes: Mapping[str, Any], work: Path, progress: bool = False) -> dict[str, Any]:
    """Part 1: the project's batched evaluation vs. one ``generate`` per item, for each of
    :data:`GEN_STUDENTS`."""
    import torch

    from helpers import models
    from helpers.engine.generation import shared_prefix_len

    name = cfg["models"][0]
    n = int(sizes["gen_prompts"])
    mnt = int(cfg["max_new_tokens"])
    bs = int(cfg["eval_batch_size"])
    tok = models.load_tokenizer(name)
    items = gen_items(cfg, name, tok, n)
    rows = [tok(it["prompt"], add_special_tokens=False)["input_ids"] for it in items]
    n_prompt_tokens = [len(r) for r in rows]
    shared = shared_prefix_len(rows)
    students: dict[str, Any] = {}
    for key in GEN_STUDENTS:
        if key == "untrained":
            model = models.load_model(name, method="full" if cfg["method"] == "full" else "lora", tokenizer=tok)
            model.config.use_cache = True
            model.eval()
            info: dict[str, Any] = {"condition": "untrained"}
            stok = tok
        else:
            model, stok, info = trace_student(cfg, sizes, name, work)
        students[key] = {"student": info, **gen_one_student(model, stok, items, max_new_tokens=mnt, batch_size=bs,
                                                            work=work, key=key, progress=progress)}
        device, dtype = str(next(model.parameters()).device), str(next(model.parameters()).dtype)
        del model
        gc.collect()
    vals = [v for s in students.values() for v in (s["ratios"]["items_per_s"], s["ratios"]["tokens_per_s"])]
    worst = None if not vals or None in vals else min(vals)
    return {
        "settings": {"model": name, "n_prompts": n, "max_new_tokens": mnt, "eval_batch_size": bs,
                     "prompts": "test split, round-robin over the datasets, helpers.traces.build_test + "
                                "helpers.chat.render_prompt (as the evaluation renders them)",
                     "datasets": list(cfg["datasets"]),
                     "prompt_tokens_mean": _r(sum(n_prompt_tokens) / n, 1),
                     "prompt_tokens_max": max(n_prompt_tokens), "shared_prefix_tokens": shared,
                     "torch_threads": torch.get_num_threads(), "device": device,
                     "model_dtype": dtype.replace("torch.", "")},
        "students": students,
        "agreement_note": "greedy outputs compared as decoded strings with one-at-a-time greedy in the model's own "
                          "dtype; 'project' generates with a bf16 copy where the CPU has native bf16, so differences "
                          "there come from bf16 numerics; 'project_fp32' is the same batching and shared prefix in "
                          "the model's own dtype",
        "target": {"metric": "items/s and generated tokens/s, project / one-at-a-time (the smallest over students)",
                   "min_ratio": TARGETS["gen_ratio"], "value": worst,
                   "met": worst is not None and worst >= TARGETS["gen_ratio"]},
    }


# =============================================================================== part 2: fine-tuning
class TokenCounter:
    """Counts the non-padding tokens the model's decoder is fed during training.

    A forward pre-hook on the decoder body (called once per micro-batch, also under gradient
    checkpointing): the sum of a 2-D attention mask when there is one, else the input ids
    that are not the pad token (padding-free / packed batches carry no padding)."""

    def __init__(self, model, pad_token_id: int):
        self.pad = pad_token_id
        self.tokens = 0
        self.calls = 0
        self.padded_tokens = 0
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        body = base.get_decoder() if hasattr(base, "get_decoder") else getattr(base, "model", base)
        self._h = body.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        if not module.training:
            return None
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        if ids is None:
            return None
        self.calls += 1
        self.padded_tokens += int(ids.numel())
        if mask is not None and getattr(mask, "dim", lambda: 0)() == 2 and mask.shape == ids.shape:
            self.tokens += int(mask.sum())
        else:
            self.tokens += int((ids != self.pad).sum())
        return None

    def remove(self) -> None:
        self._h.remove()


def loss_curve(log_history: Sequence[Mapping[str, Any]]) -> list[float]:
    """Per-step training loss from a Trainer's ``log_history`` (logging every step)."""
    return [float(e["loss"]) for e in log_history if "loss" in e and "step" in e]


def curve_agreement(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """How close two loss curves are: mean |a_t - b_t| over the common steps, the same
    relative to b's mean, and the mean of each over the last third of the steps."""
    n = min(len(a), len(b))
    if n == 0:
        return {"steps": 0, "mean_abs_diff": None, "rel_mean_abs_diff": None}
    mad = sum(abs(x - y) for x, y in zip(a[:n], b[:n])) / n
    tail = max(1, n // 3)
    mean_b = sum(b[:n]) / n
    return {"steps": n, "mean_abs_diff": _r(mad, 4), "rel_mean_abs_diff": _r(mad / mean_b if mean_b else None, 4),
            "mean_a": _r(sum(a[:n]) / n, 4), "mean_b": _r(mean_b, 4),
            "last_third_mean_a": _r(sum(a[n - tail:n]) / tail, 4),
            "last_third_mean_b": _r(sum(b[n - tail:n]) / tail, 4)}


def eval_loss(model, examples: Sequence[Mapping[str, Any]], pad_token_id: int, batch_size: int = 4) -> float:
    """Mean per-token cross-entropy of ``model`` on ``examples`` (``input_ids`` + ``labels``,
    -100 = not scored), in the model's own dtype, no autocast: the same yardstick for both
    trainers' adapters."""
    import torch

    device = next(model.parameters()).device
    was = model.training
    model.eval()
    tot, cnt = 0.0, 0
    with torch.inference_mode():
        for s in range(0, len(examples), batch_size):
            chunk = examples[s:s + batch_size]
            L = max(len(e["input_ids"]) for e in chunk)
            ids = torch.full((len(chunk), L), pad_token_id, dtype=torch.long)
            lab = torch.full((len(chunk), L), -100, dtype=torch.long)
            att = torch.zeros((len(chunk), L), dtype=torch.long)
            for i, e in enumerate(chunk):
                k = len(e["input_ids"])
                ids[i, :k] = torch.tensor(e["input_ids"])
                lab[i, :k] = torch.tensor(e["labels"])
                att[i, :k] = 1
            ids, lab, att = ids.to(device), lab.to(device), att.to(device)
            logits = model(input_ids=ids, attention_mask=att).logits.float()
            sl, tl = logits[:, :-1].reshape(-1, logits.shape[-1]), lab[:, 1:].reshape(-1)
            tot += float(torch.nn.functional.cross_entropy(sl, tl, ignore_index=-100, reduction="sum"))
            cnt += int((tl != -100).sum())
    model.train(was)
    return tot / max(cnt, 1)


def _plain_examples(ds) -> list[dict[str, list[int]]]:
    """``input_ids`` / ``attention_mask`` / ``labels`` of each tokenised example, as lists."""
    out = []
    for e in ds:
        ids = list(e["input_ids"])
        labels = list(e["labels"]) if "labels" in e and e["labels"] is not None else list(ids)
        out.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels})
    return out


def sft_examples(cfg: Mapping[str, Any], model_name: str, tok, split: str, n: int) -> tuple[list[dict], dict]:
    """``n`` tokenised training examples of condition :data:`SFT_CONDITION` from ``split``
    (round-robin over the datasets, so the length spread of all three is in every run), as
    :func:`helpers.sft.tokenize_examples` makes them for the profile."""
    from helpers import sft, traces
    from helpers.models import model_family

    seed = int(cfg["trace_seed"])
    per = {ds: traces.build_condition(df, ds, SFT_CONDITION, seed).to_dict("records")
           for ds, df in problems(cfg, split).items()}
    rows = round_robin(per, n)
    return sft.tokenize_examples(tok, model_family(model_name), rows, model_name, int(cfg["max_length"]),
                                 cfg["loss_mask"])


def _lora_A(model) -> dict[str, Any]:
    return {k: v.detach().clone() for k, v in model.named_parameters() if "lora_A" in k}


def checkpoint_timer():
    """A Trainer callback that adds up the wall time of checkpoint saving (from the end of a
    step to the save event that follows it), so it can be reported apart from training."""
    from transformers import TrainerCallback

    class CheckpointTimer(TrainerCallback):
        def __init__(self):
            self.seconds, self.saves, self._t = 0.0, 0, None

        def on_step_end(self, args, state, control, **kw):
            self._t = time.perf_counter()

        def on_save(self, args, state, control, **kw):
            if self._t is not None:
                self.seconds += time.perf_counter() - self._t
                self.saves += 1

    return CheckpointTimer()


def padding_at_run_size(cfg: Mapping[str, Any], model_name: str, tok, seed: int = 0) -> dict[str, Any]:
    """Padding of a whole fine-tuning run of each dataset (its full train split, condition
    :data:`SFT_CONDITION`, one epoch, the profile's batch size), with the project's
    length-grouped order vs. a seeded random order: real / fed tokens of each, and how many
    more tokens the random order feeds. No training: token counts only."""
    import torch

    from helpers import sft, traces
    from helpers.engine.training import LengthGroupedSampler
    from helpers.models import model_family

    bs = int(cfg["batch_size"])
    out = {}
    for ds, df in problems(cfg, "train").items():
        rows = traces.build_condition(df, ds, SFT_CONDITION, int(cfg["trace_seed"]))
        lengths = [min(n, int(cfg["max_length"])) for n in traces.example_lengths(tok, model_family(model_name), rows, model_name)]
        grouped = list(iter(LengthGroupedSampler(lengths, bs, seed)))
        rand = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(seed)).tolist()
        g, r = sft.padding_stats(lengths, grouped, bs), sft.padding_stats(lengths, rand, bs)
        out[ds] = {"examples": len(lengths), "grouped_efficiency": _r(g["efficiency"], 4),
                   "random_efficiency": _r(r["efficiency"], 4),
                   "random_over_grouped_fed_tokens": _r(r["padded_tokens"] / g["padded_tokens"], 4)}
    return out


def _sft_record(sw, counter, trainer, model, held, pad_id: int, sampler: str) -> dict[str, Any]:
    """What one side of the fine-tuning comparison measured (same fields for both sides)."""
    return {**sw.record(), "non_padding_tokens": counter.tokens, "fed_tokens": counter.padded_tokens,
            "micro_batches": counter.calls, "tokens_per_s": _r(counter.tokens / sw.wall, 2),
            "padding_fraction": _r(1 - counter.tokens / counter.padded_tokens, 4) if counter.padded_tokens else None,
            "bf16_autocast": bool(trainer.args.bf16), "optimizer": str(trainer.args.optim),
            "sampler": sampler, "loss_curve": loss_curve(trainer.state.log_history),
            "eval_loss": _r(eval_loss(model, held, pad_id), 4)}


def bench_sft(cfg: Mapping[str, Any], sizes: Mapping[str, Any], work: Path) -> dict[str, Any]:
    """Part 2: the project's trainer vs. a default ``transformers.Trainer``, same examples
    (exactly one epoch each), same model, same LoRA config and initial adapter, same steps."""
    import copy

    import torch
    from datasets import Dataset
    from peft import get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from helpers import models, sft

    name = cfg["models"][0]
    seed = int(cfg["seeds"][0])
    steps = int(sizes["sft_steps"])
    bs, ga = int(cfg["batch_size"]), int(cfg["grad_accum"])
    n_train = steps * bs * ga
    sft.set_threads()
    tok = models.load_tokenizer(name)
    train, tstats = sft_examples(cfg, name, tok, "train", n_train)
    held, _ = sft_examples(cfg, name, tok, "test", int(sizes["sft_eval_examples"]))
    train_plain = _plain_examples(train)
    held_plain = _plain_examples(held)
    lengths = [len(e["input_ids"]) for e in train]
    expected_tokens = sum(lengths)
    run_cfg = dict(cfg, max_steps=steps)

    # --- the project's SFT
    config.seed_everything(seed)
    model, tok = sft.load_for_training(run_cfg, name)
    lora_cfg = copy.deepcopy(model.peft_config["default"])
    init_a = _lora_A(model)
    eval_untrained = eval_loss(model, held_plain, tok.pad_token_id)
    counter = TokenCounter(model, tok.pad_token_id)
    ckpt = checkpoint_timer()
    trainer = sft.build_trainer(run_cfg, model, tok, [dict(e) for e in train], work / "sft_project",
                                seed=seed, max_steps=steps, progress=False, callbacks=[ckpt])
    with Stopwatch() as sw:
        trainer.train()
    t_proj = sw.wall
    counter.remove()
    proj = {**_sft_record(sw, counter, trainer, model, held_plain, tok.pad_token_id,
                          "seeded length-grouped mega-batches (helpers.engine.training.LengthGroupedSampler)"),
            "checkpoints_saved": ckpt.saves, "checkpoint_seconds": _r(ckpt.seconds),
            "tokens_per_s_without_checkpoints": _r(counter.tokens / (t_proj - ckpt.seconds), 2)}
    del trainer, model
    gc.collect()

    # --- the straightforward baseline: default Trainer, fp32, random order, pad to longest
    config.seed_everything(seed)
    base_tok = models.load_tokenizer(name)
    base_model = models.load_model(name, method="full" if cfg["method"] == "full" else "lora", tokenizer=base_tok)
    base_model = get_peft_model(base_model, copy.deepcopy(lora_cfg))
    same_init = all(torch.equal(init_a[k], v) for k, v in _lora_A(base_model).items()) and bool(init_a)
    counter = TokenCounter(base_model, base_tok.pad_token_id)
    args = TrainingArguments(
        output_dir=str(work / "sft_baseline"), per_device_train_batch_size=bs, gradient_accumulation_steps=ga,
        learning_rate=float(cfg["lr"]), lr_scheduler_type=cfg["lr_scheduler"],
        warmup_steps=float(cfg["warmup_ratio"] or 0.0), max_steps=steps, seed=seed,
        logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True,
        use_cpu=not torch.cuda.is_available())
    trainer = Trainer(model=base_model, args=args, train_dataset=Dataset.from_list(train_plain),
                      data_collator=DataCollatorForSeq2Seq(base_tok, padding="longest", label_pad_token_id=-100),
                      processing_class=base_tok)
    with Stopwatch() as sw:
        trainer.train()
    counter.remove()
    base = _sft_record(sw, counter, trainer, base_model, held_plain, base_tok.pad_token_id,
                       "transformers default (seeded random order)")
    del trainer, base_model
    gc.collect()

    pad_full = padding_at_run_size(cfg, name, base_tok, seed)
    ratio = _ratio(proj["tokens_per_s"], base["tokens_per_s"])
    agree = curve_agreement(proj["loss_curve"], base["loss_curve"])
    agree.update({
        "same_initial_adapter": same_init,
        "eval_loss_untrained": _r(eval_untrained, 4),
        "eval_loss_project": proj["eval_loss"], "eval_loss_baseline": base["eval_loss"],
        "eval_loss_rel_diff": _r(abs(proj["eval_loss"] - base["eval_loss"]) / base["eval_loss"], 4),
        "how": "both train on the same examples for exactly one epoch from the same initial adapter; the "
               "order differs (project: seeded length-grouped batches; baseline: the Trainer's seeded random "
               "order), so per-step losses are of different batches: compare the per-step curves' mean "
               "absolute difference, the last-third means, and the loss of both final adapters on the same "
               f"{len(held_plain)} held-out test examples (fp32, no autocast)",
    })
    return {
        "settings": {"model": name, "condition": SFT_CONDITION, "steps": steps, "batch_size": bs, "grad_accum": ga,
                     "examples": len(train), "lr": cfg["lr"], "lr_scheduler": cfg["lr_scheduler"],
                     "warmup_ratio": cfg["warmup_ratio"], "max_length": cfg["max_length"],
                     "loss_mask": cfg["loss_mask"], "lora": {"r": lora_cfg.r, "alpha": lora_cfg.lora_alpha,
                                                             "dropout": lora_cfg.lora_dropout,
                                                             "targets": sorted(lora_cfg.target_modules)},
                     "tokens_in_examples": expected_tokens, "example_tokens_mean": _r(expected_tokens / len(train), 1),
                     "example_tokens_max": max(lengths), "truncated": tstats.get("truncated"),
                     "torch_threads": torch.get_num_threads()},
        "baseline": base, "project": proj,
        "ratios": {"tokens_per_s": _r(ratio, 3),
                   "tokens_per_s_project_without_checkpoints": _r(_ratio(proj["tokens_per_s_without_checkpoints"],
                                                                         base["tokens_per_s"]), 3)},
        "padding_at_run_size": pad_full,
        "contention": contention_note(base, proj),
        "loss_agreement": agree,
        "target": {"metric": "non-padding training tokens/s, project / default Trainer",
                   "min_ratio": TARGETS["sft_tokens_per_s_ratio"], "value": _r(ratio, 3),
                   "met": ratio is not None and ratio >= TARGETS["sft_tokens_per_s_ratio"]},
    }


# =============================================================================== part 3: make reproduce
REPRO_STAGES = ("env", "data", "decompose", "traces", "sft", "eval", "correlation")
TIME_BIN = "/usr/bin/time"

# Runs a command and prints the peak RSS (kB) of its largest process: the fallback when
# /usr/bin/time is missing. A fresh interpreter, so no earlier child is counted.
_RUSAGE_WRAPPER = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.call(sys.argv[2:])\n"
    "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
    "sys.exit(rc)\n"
)


class TreeSampler:
    """Samples the summed RSS of a process and all its descendants (papermill and its
    kernel run side by side: the sum is what the machine must hold). Needs psutil; without
    it the peak stays None."""

    def __init__(self, pid: int, interval: float = 0.25):
        self.pid, self.interval, self.peak = pid, interval, None
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            import psutil
        except ImportError:
            return
        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self._stop.is_set():
            try:
                procs = [root] + root.children(recursive=True)
                tot = 0
                for p in procs:
                    try:
                        tot += p.memory_info().rss
                    except psutil.Error:
                        pass
                self.peak = max(self.peak or 0, tot)
            except psutil.Error:
                break
            self._stop.wait(self.interval)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(timeout=5)


def run_measured(cmd: Sequence[str], log_path: Path, cwd: Path | None = None,
                 env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Run ``cmd``; its wall time, exit status, the peak RSS of its largest process
    (``/usr/bin/time -v``, else ``getrusage`` in a fresh wrapper) and the peak of the summed
    RSS of its process tree (sampled). Output goes to ``log_path``."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    rss_file = log_path.with_suffix(".rss")
    rss_file.unlink(missing_ok=True)
    if Path(TIME_BIN).exists():
        full = [TIME_BIN, "-v", "-o", str(rss_file), *cmd]
        how = "/usr/bin/time -v"
    else:
        full = [sys.executable, "-c", _RUSAGE_WRAPPER, str(rss_file), *cmd]
        how = "getrusage(RUSAGE_CHILDREN)"
    t = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(full, cwd=cwd, env=dict(env) if env is not None else None,
                                stdout=log, stderr=subprocess.STDOUT)
        with TreeSampler(proc.pid) as sampler:
            rc = proc.wait()
    wall = time.perf_counter() - t
    peak_kb = None
    if rss_file.exists():
        txt = rss_file.read_text()
        m = re.search(r"Maximum resident set size \(kbytes\):\s*(\d+)", txt)
        if m:
            peak_kb = int(m.group(1))
        elif txt.strip().isdigit():
            peak_kb = int(txt.strip())
        rss_file.unlink(missing_ok=True)
    return {"command": " ".join(cmd), "returncode": rc, "wall_s": _r(wall, 2),
            "peak_rss_mb": _r(peak_kb / 1024, 1) if peak_kb is not None else None,
            "peak_tree_rss_mb": _r(sampler.peak / 1024 ** 2, 1) if sampler.peak else None,
            "rss_measured_by": how, "log": str(log_path)}


def accuracy_lift(items, lift_conditions: Sequence[str] = LIFT_CONDITIONS,
                  min_lift: float = TARGETS["reproduce_min_em_lift"]) -> dict[str, Any]:
    """Answer EM per dataset (and model, seed) of the untrained student and of every
    fine-tuned condition in ``items`` (``results/<profile>/items.parquet``), the lift of each
    condition over the untrained student, and whether every condition of ``lift_conditions``
    that was run lifts EM by at least ``min_lift`` on every dataset.

    Where ``items`` has an ``id`` column each condition is also paired with the untrained
    student item by item: ``gained`` (items it gets right and the untrained student does
    not), ``lost`` (the reverse) and McNemar's p for the difference (``helpers.stats``). With
    a few dozen test items a lift of 10 points is a handful of items, and the p-value tells
    whether that is more than chance."""
    from helpers import stats

    need = {"dataset", "model", "condition", "seed", "answer_em"}
    missing = need - set(items.columns)
    if missing:
        raise ValueError(f"items lack columns {sorted(missing)} (docs/architecture.md)")
    df = items.copy()
    df["answer_em"] = df["answer_em"].astype(float)
    g = df.groupby(["dataset", "model", "condition"], sort=True)["answer_em"].agg(["mean", "size"])
    table, lifts, problems_ = [], [], []
    for (ds, model), sub in g.groupby(level=[0, 1]):
        sub = sub.droplevel([0, 1])
        if "untrained" not in sub.index:
            problems_.append(f"{ds}/{model}: no untrained run")
            continue
        base = float(sub.loc["untrained", "mean"])
        paired = None
        if "id" in df.columns:
            one = df[(df["dataset"] == ds) & (df["model"] == model)]
            paired = one.pivot_table(index=["seed", "id"], columns="condition", values="answer_em", aggfunc="first")
        for cond, r in sub.iterrows():
            lift = None if cond == "untrained" else float(r["mean"]) - base
            row = {"dataset": ds, "model": model, "condition": cond, "n": int(r["size"]),
                   "answer_em": _r(float(r["mean"]), 4), "untrained_em": _r(base, 4), "lift": _r(lift, 4),
                   "gained": None, "lost": None, "p_mcnemar": None}
            if paired is not None and cond != "untrained":
                both = paired[[cond, "untrained"]].dropna()
                m = stats.mcnemar(both[cond].astype(bool), both["untrained"].astype(bool))
                row.update(gained=m["x_only"], lost=m["y_only"], p_mcnemar=_r(m["p"], 4))
            table.append(row)
            if cond in lift_conditions:
                lifts.append(lift)
                if lift < min_lift:
                    problems_.append(f"{ds}/{model}/{cond}: EM {r['mean']:.3f} vs untrained {base:.3f}")
    return {"table": table, "min_lift_required": min_lift, "lift_conditions": list(lift_conditions),
            "min_lift": _r(min(lifts), 4) if lifts else None,
            "met": bool(lifts) and not problems_, "short_of_target": problems_}


def bench_reproduce(profile: str, work: Path, *, stages: Sequence[str] = REPRO_STAGES,
                    make: Sequence[str] = ("make",), clean: bool = True, cwd: Path | None = None,
                    items_path: Path | None = None) -> dict[str, Any]:
    """Part 3: ``make clean`` then each stage of ``make reproduce`` as its own process (the
    ``env`` stage first: a no-op when the environment is installed), timed and measured."""
    import pandas as pd

    cwd = Path(cwd or paths.ROOT)
    logs = Path(work) / "reproduce_logs"
    res: dict[str, Any] = {"profile": profile, "stages": {}, "clean": clean}
    if clean:
        c = run_measured([*make, "clean", f"PROFILE={profile}"], logs / "clean.log", cwd=cwd)
        if c["returncode"] != 0:
            raise RuntimeError(f"make clean failed (exit {c['returncode']}): see {c['log']}")
    total = 0.0
    for st in stages:
        r = run_measured([*make, st, f"PROFILE={profile}"], logs / f"{st}.log", cwd=cwd)
        res["stages"][st] = r
        total += r["wall_s"]
        if r["returncode"] != 0:
            res["failed_stage"] = st
            break
    res["total_wall_s"] = _r(total, 2)
    peaks = [s["peak_rss_mb"] for s in res["stages"].values() if s["peak_rss_mb"] is not None]
    tpeaks = [s["peak_tree_rss_mb"] for s in res["stages"].values() if s["peak_tree_rss_mb"] is not None]
    res["peak_rss_mb"] = max(peaks) if peaks else None
    res["peak_tree_rss_mb"] = max(tpeaks) if tpeaks else None
    items_path = Path(items_path or paths.results_dir(profile) / "items.parquet")
    if "failed_stage" not in res and items_path.exists():
        res["accuracy"] = accuracy_lift(pd.read_parquet(items_path))
    else:
        res["accuracy"] = {"skipped": f"{items_path} not written" if "failed_stage" not in res
                           else f"stage {res['failed_stage']} failed"}
    wall_ok = "failed_stage" not in res and total <= TARGETS["reproduce_wall_s"]
    lift_ok = bool(res["accuracy"].get("met"))
    res["target"] = {"metric": "wall time of make reproduce (environment installed) and EM lift over untrained",
                     "max_wall_s": TARGETS["reproduce_wall_s"], "value_wall_s": res["total_wall_s"],
                     "min_em_lift": TARGETS["reproduce_min_em_lift"], "value_min_em_lift": res["accuracy"].get("min_lift"),
                     "wall_met": wall_ok, "lift_met": lift_ok, "met": wall_ok and lift_ok}
    return res


# =============================================================================== part 4: GPU
# The two paper students' architectures: their hub config.json files, shipped in the package
# (helpers/model_configs/), so a model of the same size and shape can be built without the
# network (random weights).
MODEL_CONFIG_DIR = ROOT / "src" / "helpers" / "model_configs"
PAPER_STUDENTS = ("llama-3.2-1b", "qwen3-1.7b")


def model_config_dict(name: str) -> dict[str, Any]:
    """The published ``config.json`` of paper student ``name`` (``helpers/model_configs``)."""
    p = MODEL_CONFIG_DIR / f"{name}.json"
    if not p.exists():
        have = sorted(x.stem for x in MODEL_CONFIG_DIR.glob("*.json"))
        raise KeyError(f"no shipped config for {name!r}; have {have}")
    return json.loads(p.read_text())


GPU_MODEL_CONFIGS: dict[str, dict[str, Any]] = {m: model_config_dict(m) for m in PAPER_STUDENTS}

# Dense bf16 tensor-core peak, FLOP/s (vendor datasheets, no sparsity). Matched in order
# against the device name, so the more specific names come first.
GPU_PEAK_BF16 = [
    ("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12), ("H200", 989e12), ("H800", 989e12),
    ("GH200", 989e12), ("B200", 2250e12), ("A100", 312e12), ("A800", 312e12), ("L40S", 362e12),
    ("L40", 181e12), ("L4", 121e12), ("A10G", 70e12), ("A10", 125e12), ("A6000", 155e12),
    ("RTX 4090", 165e12), ("RTX 3090", 71e12), ("T4", 65e12), ("V100", 125e12),
]


def gpu_model_config(name: str):
    """A transformers config of paper student ``name`` from its shipped hub ``config.json``
    (:func:`model_config_dict`; the same conversion as loading the hub model, e.g. Llama's
    ``rope_scaling``)."""
    from transformers import AutoConfig

    spec = model_config_dict(name)
    for k in ("architectures", "transformers_version", "torch_dtype"):
        spec.pop(k, None)
    return AutoConfig.for_model(spec.pop("model_type"), **spec)


def n_params(cfg) -> int:
    """Parameters of a model built from ``cfg`` (tied embeddings counted once), on the meta
    device: nothing is allocated."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        m = AutoModelForCausalLM.from_config(cfg)
    return sum(p.numel() for p in m.parameters())


def peak_bf16_flops(device_name: str | None) -> float | None:
    """Dense bf16 peak of a GPU by name (:data:`GPU_PEAK_BF16`), None when unknown."""
    if not device_name:
        return None
    for key, flops in GPU_PEAK_BF16:
        if key.lower() in device_name.lower():
            return flops
    return None


def mfu(n: int, tokens_per_s: float, peak: float | None) -> float | None:
    """Model FLOP utilisation: 6·N·tokens/s over the peak (the usual training estimate,
    forward + backward; LoRA's frozen weights skip their weight gradients and gradient
    checkpointing adds a forward, so it is an estimate, not a count)."""
    return None if not peak else 6.0 * n * tokens_per_s / peak


def _lora_config(cfg: Mapping[str, Any]):
    from peft import LoraConfig

    return LoraConfig(r=int(cfg["lora_r"]), lora_alpha=int(cfg["lora_alpha"]), lora_dropout=float(cfg["lora_dropout"]),
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                      bias="none", task_type="CAUSAL_LM")


def _cuda_dtype():
    """The CUDA dtype the project trains and generates in (helpers.models.device_settings:
    bf16 where the GPU has it, else fp16)."""
    from helpers.models import device_settings

    return device_settings("cuda")["dtype"]


def _load_random(model_dir: Path, method: str, device: str):
    """The saved random-weight model: bf16 for LoRA, 4-bit NF4 (double quantisation, bf16
    compute, as :func:`helpers.models.load_model` sets it) for QLoRA."""
    import torch
    from transformers import AutoModelForCausalLM

    dt = _cuda_dtype() if device.startswith("cuda") else torch.float32
    kw: dict[str, Any] = {"dtype": dt, "attn_implementation": "sdpa"}
    if method == "qlora":
        from transformers import BitsAndBytesConfig

        kw["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                       bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dt)
        kw["device_map"] = {"": 0}
    m = AutoModelForCausalLM.from_pretrained(model_dir, **kw)
    if method != "qlora":
        m.to(device)
    return m


def sft_throughput(model_dir: Path, method: str, cfg: Mapping[str, Any], *, seq_len: int, steps: int,
                   batch_size: int, device: str = "cuda", warmup: int = 2, seed: int = 0) -> dict[str, Any]:
    """Training tokens/s of LoRA (or QLoRA) on the model in ``model_dir``: full batches of
    ``batch_size`` random sequences of ``seq_len`` tokens (no padding), the profile's LoRA
    config and gradient checkpointing, AdamW (paged 8-bit for QLoRA on CUDA, as the project's
    SFT and the original); ``warmup`` untimed steps first. Peak GPU memory from the allocator."""
    import torch
    from peft import get_peft_model, prepare_model_for_kbit_training

    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    config.seed_everything(seed)
    model = _load_random(model_dir, method, device)
    if method == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=bool(cfg["gradient_checkpointing"]))
    elif cfg["gradient_checkpointing"]:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model = get_peft_model(model, _lora_config(cfg))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt_name = "torch.optim.AdamW"
    try:
        import bitsandbytes as bnb  # noqa: F401

        paged = cuda and method == "qlora"  # as the project's SFT: paged 8-bit AdamW for QLoRA, AdamW else
        opt = bnb.optim.PagedAdamW8bit(params, lr=float(cfg["lr"])) if paged else None
        opt_name = "bitsandbytes PagedAdamW8bit" if paged else opt_name
    except ImportError:
        opt = None
    if opt is None:
        opt = torch.optim.AdamW(params, lr=float(cfg["lr"]))
    vocab = model.get_input_embeddings().weight.shape[0]
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch_size, seq_len), generator=g).to(device)
    ac = torch.autocast("cuda", dtype=_cuda_dtype()) if cuda else torch.autocast("cpu", enabled=False)

    def step():
        with ac:
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
    t = time.perf_counter()
    losses = [step() for _ in range(steps)]
    if cuda:
        torch.cuda.synchronize()
    dt = time.perf_counter() - t
    tokens = batch_size * seq_len * steps
    out = {"method": method, "seq_len": seq_len, "batch_size": batch_size, "steps": steps, "seconds": _r(dt),
           "tokens_per_s": _r(tokens / dt, 1), "optimizer": opt_name, "final_loss": _r(losses[-1], 4),
           "gradient_checkpointing": bool(cfg["gradient_checkpointing"]),
           "peak_gpu_mem_gb": _r(torch.cuda.max_memory_allocated() / 1024 ** 3, 2) if cuda else None}
    del model, opt
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return out


def gen_throughput(model_dir: Path, *, batch_size: int, prompt_len: int, new_tokens: int,
                   device: str = "cuda", seed: int = 0) -> dict[str, Any]:
    """Greedy generation tokens/s of the bf16 model: ``batch_size`` random prompts of
    ``prompt_len`` tokens, exactly ``new_tokens`` new tokens each (random weights never stop
    on their own: ``min_new_tokens`` makes every row the same length)."""
    import torch

    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    model = _load_random(model_dir, "lora", device)
    model.eval()
    vocab = model.get_input_embeddings().weight.shape[0]
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch_size, prompt_len), generator=g).to(device)
    att = torch.ones_like(ids)
    kw = dict(do_sample=False, pad_token_id=model.config.pad_token_id, eos_token_id=None)
    with torch.inference_mode():
        model.generate(input_ids=ids[:, :8], attention_mask=att[:, :8], max_new_tokens=4, min_new_tokens=4, **kw)
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = model.generate(input_ids=ids, attention_mask=att, max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, **kw)
        if cuda:
            torch.cuda.synchronize()
        dt = time.perf_counter() - t
    n_new = int(out.shape[0] * (out.shape[1] - prompt_len))
    res = {"batch_size": batch_size, "prompt_len": prompt_len, "new_tokens": new_tokens, "seconds": _r(dt),
           "tokens_per_s": _r(n_new / dt, 1),
           "peak_gpu_mem_gb": _r(torch.cuda.max_memory_allocated() / 1024 ** 3, 2) if cuda else None}
    del model
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return res


# ------------------------------------------------------------------ wall-time estimate
# What one fine-tuning or evaluation run of a profile processes, and what a GPU needs for it:
# arithmetic, no GPU needed (`make bench` prints it; `make gpu-check` measures the inputs
# marked "assumed" on a real GPU).
#
# Mean tokens per chat-templated example with the paper students' tokenizers (vanilla: the
# answer only; trace: the <think> block too) and mean tokens of the answer alone.
TOKENS_PER_EXAMPLE = {
    "cotempqa": {"vanilla": 520, "trace": 620, "answer": 15},
    "marco": {"vanilla": 900, "trace": 1000, "answer": 25},
    "babi": {"vanilla": 190, "trace": 250, "answer": 4},
}
# The paper splits (STUDY_SPEC §1): used where a profile's n_train / n_test is null.
PAPER_SPLITS = {"cotempqa": {"train": 3798, "test": 950}, "marco": {"train": 5000, "test": 1000},
                "babi": {"train": 3773, "test": 376}}
# Mean new tokens per answer (ASSUMED): a vanilla student writes the answer, a trace student
# the trace's <think> block and the answer; the untrained student's length is unknown before
# a run, and the upper bound lets every answer run to max_new_tokens.
UNTRAINED_NEW_TOKENS = 250

# Per device: the datasheet figures and the efficiencies ASSUMED for this workload.
#   train_mfu_max      model FLOP utilisation of QLoRA training (6·N·tokens basis) once a
#                      micro-batch holds `saturation_tokens` tokens; below, it falls with the
#                      square root of the micro-batch (small matrix products, kernel launches
#                      and the NF4 dequantisation of every weight are then a larger share)
#   prefill_mfu        utilisation of a prompt's forward pass (generation, bf16/fp16 weights)
#   layer_step_s       fixed cost of one decoding step per decoder layer (eager PyTorch:
#                      ~30 kernel launches per layer; the host CPU sets it)
#   bandwidth_eff      share of the memory bandwidth a decoding step reaches
#   run_overhead_s     per run: loading (and quantising) the model, checkpoints, merging
DEVICES: dict[str, dict[str, Any]] = {
    "h100": {"name": "NVIDIA H100 SXM 80GB", "dtype": "bf16", "peak_flops": 989e12, "bandwidth": 3.35e12,
             "memory_gb": 80, "train_mfu_max": 0.30, "saturation_tokens": 8192, "prefill_mfu": 0.40,
             "layer_step_s": 0.6e-3, "bandwidth_eff": 0.7, "run_overhead_s": 15},
    "t4": {"name": "NVIDIA T4 16GB (free Colab)", "dtype": "fp16", "peak_flops": 65e12, "bandwidth": 320e9,
           "memory_gb": 15, "train_mfu_max": 0.20, "saturation_tokens": 2048, "prefill_mfu": 0.30,
           "layer_step_s": 1.0e-3, "bandwidth_eff": 0.7, "run_overhead_s": 30},
}
GRADIENT_CHECKPOINTING_FACTOR = 8 / 6  # recomputing the forward adds 2·N of the 6·N per token
LORA_OVER_QLORA = 1.15                 # bf16 LoRA skips the NF4 dequantisation (assumed)
# The paper profile as the original ran it (STUDY_SPEC §3), before this project's GPU settings.
ORIGINAL_PAPER_SETTINGS = {"gradient_checkpointing": True, "batch_size": 4, "grad_accum": 4, "eval_batch_size": 32}


def model_shape(name: str) -> dict[str, Any]:
    """Parameters (tied embeddings once, norms included) and the sizes the estimate needs,
    from the shipped config alone (no torch)."""
    c = model_config_dict(name)
    d, L, V, ff = c["hidden_size"], c["num_hidden_layers"], c["vocab_size"], c["intermediate_size"]
    H, KV = c["num_attention_heads"], c.get("num_key_value_heads") or c["num_attention_heads"]
    hd = c.get("head_dim") or d // H
    layer = d * H * hd + 2 * d * KV * hd + H * hd * d + 3 * d * ff + 2 * d
    if c["model_type"] == "qwen3":
        layer += 2 * hd  # q_norm, k_norm
    n = V * d + L * layer + d + (0 if c.get("tie_word_embeddings") else V * d)
    return {"n_params": n, "layers": L, "hidden": d, "vocab": V, "attn_dim": H * hd,
            "kv_bytes_per_token": 2 * L * KV * hd * 2}  # keys and values, 2 bytes each


def _split_size(cfg: Mapping[str, Any], key: str, dataset: str) -> int:
    full = PAPER_SPLITS[dataset]["train" if key == "n_train" else "test"]
    n = config.for_dataset(cfg, key, dataset)
    return full if n is None else min(int(n), full)


def workload(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The runs of profile ``cfg`` on hub data and the tokens each processes.

    Training tokens per run = examples x mean example length x epochs (vanilla, correct,
    incorrect); KRSL = its pairs (a correct and an incorrect sequence each) x epochs, or
    ``krsl_max_steps`` optimizer steps of ``batch_size x grad_accum`` pairs; its first step is
    the ``correct`` run, counted once. Evaluation: every test item of the untrained student
    (``eval_untrained``) and of each condition, its prompt prefilled once and its answer
    decoded token by token."""
    mnt = int(cfg["max_new_tokens"])
    conds = list(cfg["conditions"])
    trained = conds + (["correct"] if "krsl" in conds and "correct" not in conds else [])
    epochs = float(cfg["epochs"])
    micro = int(cfg["batch_size"])
    runs: list[dict[str, Any]] = []
    for ds in cfg["datasets"]:
        t = TOKENS_PER_EXAMPLE[ds]
        n_tr, n_te = _split_size(cfg, "n_train", ds), _split_size(cfg, "n_test", ds)
        prompt = t["vanilla"] - t["answer"]
        for m in cfg["models"]:
            for c in trained:
                if c == "krsl":
                    ms = cfg.get("krsl_max_steps")
                    pairs = ms * micro * int(cfg["grad_accum"]) if ms else n_tr * epochs
                    runs.append({"kind": "train", "dataset": ds, "model": m, "condition": c,
                                 "tokens": pairs * 2 * t["trace"], "seq_len": t["trace"], "rows_per_micro": 2 * micro,
                                 "logit_positions": t["trace"] - prompt + 1})  # KRSL's loss: the completion only
                elif cfg.get("max_steps") is None:
                    L = t["vanilla"] if c == "vanilla" else t["trace"]
                    runs.append({"kind": "train", "dataset": ds, "model": m, "condition": c,
                                 "tokens": n_tr * L * epochs, "seq_len": L, "rows_per_micro": micro})
                else:
                    L = t["vanilla"] if c == "vanilla" else t["trace"]
                    runs.append({"kind": "train", "dataset": ds, "model": m, "condition": c,
                                 "tokens": int(cfg["max_steps"]) * micro * int(cfg["grad_accum"]) * L,
                                 "seq_len": L, "rows_per_micro": micro})
            evals = (["untrained"] if cfg.get("eval_untrained", True) else []) + conds
            for c in evals:
                new = (min(UNTRAINED_NEW_TOKENS, mnt) if c == "untrained" else
                       min(t["answer"] + 1, mnt) if c == "vanilla" else min(t["trace"] - prompt + 1, mnt))
                runs.append({"kind": "eval", "dataset": ds, "model": m, "condition": c, "items": n_te,
                             "prompt_tokens": prompt, "new_tokens": new, "new_tokens_max": mnt})
    return {"runs": runs, "n_train_runs": sum(r["kind"] == "train" for r in runs),
            "n_eval_runs": sum(r["kind"] == "eval" for r in runs),
            "train_tokens": sum(r["tokens"] for r in runs if r["kind"] == "train"),
            "eval_items": sum(r["items"] for r in runs if r["kind"] == "eval")}


def train_mfu(dev: Mapping[str, Any], micro_tokens: float, method: str = "qlora") -> float:
    """The assumed MFU of a training micro-batch of ``micro_tokens`` tokens (see :data:`DEVICES`)."""
    m = dev["train_mfu_max"] * min(1.0, micro_tokens / dev["saturation_tokens"]) ** 0.5
    return m * (LORA_OVER_QLORA if method == "lora" else 1.0)


def train_flops_per_token(shape: Mapping[str, Any], seq_len: float) -> float:
    """6·N plus the attention scores and values, 12·layers·attention width·sequence length
    (the usual training count: forward 2, backward 4 per weight and token)."""
    return 6.0 * shape["n_params"] + 12.0 * shape["layers"] * shape["attn_dim"] * seq_len


def train_memory_gb(shape: Mapping[str, Any], micro_tokens: float, method: str, checkpointing: bool,
                    logit_tokens: float | None = None) -> float:
    """Rough peak memory of a training micro-batch: weights (NF4 ~0.55 byte per parameter, or
    2), activations (34·hidden bytes per token and layer, plus the LoRA dropout copies, 14·hidden;
    with checkpointing only each layer's input and one layer's full set) and the logits at the
    ``logit_tokens`` positions that carry loss (default every token; bf16, their fp32 copy and
    its gradient: 10 bytes per position and vocabulary entry)."""
    w = shape["n_params"] * (0.55 if method == "qlora" else 2.0)
    per_layer = 48.0 * shape["hidden"] * micro_tokens
    act = (2.0 * shape["hidden"] * micro_tokens * shape["layers"] + per_layer) if checkpointing \
        else per_layer * shape["layers"]
    logits = 10.0 * shape["vocab"] * (micro_tokens if logit_tokens is None else logit_tokens)
    return (w + act + logits) / 1024 ** 3


def _mfu_scale(dev: Mapping[str, Any], micro_tokens: float) -> float:
    return min(1.0, micro_tokens / dev["saturation_tokens"]) ** 0.5


def measured_mfu(dev: Mapping[str, Any], shape: Mapping[str, Any], m: Mapping[str, Any]) -> float:
    """The utilisation a measured training speed implies, on the estimate's basis (FLOPs of
    :func:`train_flops_per_token`, the recomputed forward counted as work), extrapolated to
    the saturated micro-batch: ``m`` holds tokens_per_s, seq_len, batch_size,
    gradient_checkpointing and peak_flops (of the GPU that measured it)."""
    work = train_flops_per_token(shape, m["seq_len"]) * (GRADIENT_CHECKPOINTING_FACTOR if m["gradient_checkpointing"] else 1.0)
    return m["tokens_per_s"] * work / m["peak_flops"] / _mfu_scale(dev, m["batch_size"] * m["seq_len"])


def estimate_time(cfg: Mapping[str, Any], device: str = "h100",
                  measured_train: Mapping[str, Mapping[str, Any]] | None = None,
                  measured_decode_step_s: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Wall time of profile ``cfg`` on ``device`` (a key of :data:`DEVICES`), from arithmetic.

    Basis: training FLOPs = (6·N + 12·layers·width·seq) x tokens (x 8/6 with gradient
    checkpointing) at the assumed MFU of the micro-batch's size; generation = prefill
    (2·N per prompt token at ``prefill_mfu``) + decoding steps (items x new tokens / slots:
    the engine refills a finished row's slot), each step the larger of reading the weights
    and the rows' KV cache at ``bandwidth_eff`` of the bandwidth and 2·N·rows FLOPs, plus a
    fixed launch cost per layer; plus a fixed cost per run. ``measured_*`` (per model:
    training speed (:func:`measured_mfu`), seconds per decoding step at the profile's
    evaluation batch) replace the assumed ones where a GPU measured them. The expected figure uses the assumed mean
    answer lengths; the upper bound lets every answer run to ``max_new_tokens``."""
    dev = DEVICES[device]
    wl = workload(cfg)
    method = cfg.get("method", "qlora")
    gc_on = bool(cfg.get("gradient_checkpointing"))
    slots = int(cfg["eval_batch_size"])
    shapes = {m: model_shape(m) for m in cfg["models"]}
    per_model = {m: {"train_s": 0.0, "prefill_s": 0.0, "decode_s": 0.0, "decode_s_max": 0.0, "overhead_s": 0.0,
                     "train_tokens": 0.0, "train_flops": 0.0, "peak_train_memory_gb": 0.0} for m in cfg["models"]}
    lines = []
    for r in wl["runs"]:
        sh, pm = shapes[r["model"]], per_model[r["model"]]
        pm["overhead_s"] += dev["run_overhead_s"]
        if r["kind"] == "train":
            micro_tokens = r["rows_per_micro"] * r["seq_len"]
            fl = train_flops_per_token(sh, r["seq_len"]) * r["tokens"] * (GRADIENT_CHECKPOINTING_FACTOR if gc_on else 1.0)
            if measured_train and r["model"] in measured_train:
                u = measured_mfu(dev, sh, measured_train[r["model"]]) * _mfu_scale(dev, micro_tokens)
                basis = f"measured MFU scaled to {micro_tokens:,.0f} tokens per micro-batch: {u:.2f}"
            else:
                u = train_mfu(dev, micro_tokens, method)
                basis = f"assumed MFU {u:.2f} at {micro_tokens:,.0f} tokens per micro-batch"
            s = fl / (dev["peak_flops"] * u)
            pm["train_s"] += s
            pm["train_tokens"] += r["tokens"]
            pm["train_flops"] += fl
            longest = r["rows_per_micro"] * int(cfg["max_length"])  # the longest batches
            mem = train_memory_gb(sh, longest, method, gc_on,
                                  r["rows_per_micro"] * r["logit_positions"] if "logit_positions" in r else None)
            pm["peak_train_memory_gb"] = max(pm["peak_train_memory_gb"], mem)
            lines.append(f"train {r['dataset']}/{r['model']}/{r['condition']}: {r['tokens'] / 1e6:.2f} M tokens x "
                         f"{train_flops_per_token(sh, r['seq_len']) / 1e9:.2f} GFLOP"
                         f"{' x 8/6 (checkpointing)' if gc_on else ''} = {fl / 1e15:,.1f} PFLOP; {basis} -> {s / 60:.1f} min")
        else:
            pre = 2.0 * sh["n_params"] * r["prompt_tokens"] * r["items"] / (dev["peak_flops"] * dev["prefill_mfu"])
            ctx = r["prompt_tokens"] + r["new_tokens"] / 2
            step_bytes = 2.0 * sh["n_params"] + slots * ctx * sh["kv_bytes_per_token"]
            step = max(step_bytes / (dev["bandwidth"] * dev["bandwidth_eff"]),
                       2.0 * sh["n_params"] * slots / (dev["peak_flops"] * dev["prefill_mfu"])) \
                + sh["layers"] * dev["layer_step_s"]
            if measured_decode_step_s and r["model"] in measured_decode_step_s:
                step = measured_decode_step_s[r["model"]]
            steps, steps_max = r["items"] * r["new_tokens"] / slots, r["items"] * r["new_tokens_max"] / slots
            pm["prefill_s"] += pre
            pm["decode_s"] += steps * step
            pm["decode_s_max"] += steps_max * step
            lines.append(f"eval {r['dataset']}/{r['model']}/{r['condition']}: {r['items']} items, prefill "
                         f"{r['items'] * r['prompt_tokens'] / 1e3:,.0f} k tokens ({pre:.0f} s); "
                         f"{r['new_tokens']} new tokens each (max {r['new_tokens_max']}) in {slots} slots = "
                         f"{steps:,.0f} steps x {step * 1e3:.1f} ms = {steps * step / 60:.1f} min "
                         f"(max {steps_max * step / 60:.1f} min)")
    out_models = {}
    total = total_max = 0.0
    for m, pm in per_model.items():
        t = pm["train_s"] + pm["prefill_s"] + pm["decode_s"] + pm["overhead_s"]
        tmax = t - pm["decode_s"] + pm["decode_s_max"]
        total, total_max = total + t, total_max + tmax
        out_models[m] = {**{k: _r(v, 1) for k, v in pm.items()}, "n_params": shapes[m]["n_params"],
                         "total_s": _r(t, 1), "total_s_max": _r(tmax, 1)}
    train_s = sum(pm["train_s"] for pm in per_model.values())
    return {"device": device, "device_name": dev["name"], "profile": cfg.get("profile"),
            "total_s": _r(total, 1), "total_min": _r(total / 60, 1), "total_min_max": _r(total_max / 60, 1),
            "train_min": _r(train_s / 60, 1), "per_model": out_models,
            "train_runs": wl["n_train_runs"], "eval_runs": wl["n_eval_runs"],
            "train_tokens": wl["train_tokens"], "eval_items": wl["eval_items"],
            "settings": {k: cfg.get(k) for k in ("method", "gradient_checkpointing", "batch_size", "grad_accum",
                                                  "eval_batch_size", "epochs", "max_new_tokens", "max_length")},
            "measured": {"train": {k: dict(v) for k, v in (measured_train or {}).items()},
                         "decode_step_s": dict(measured_decode_step_s or {})},
            "device_assumptions": dev, "arithmetic": lines,
            "basis": ("training FLOPs = (6·N + 12·layers·width·seq) per token x tokens (x 8/6 with gradient "
                      "checkpointing) at an assumed MFU; generation = prefill at 2·N per prompt token + decoding "
                      "steps (items x mean new tokens / evaluation slots), each the larger of weight+KV bytes over "
                      "bandwidth and 2·N·slots FLOPs, plus a launch cost per layer; plus a fixed cost per run. "
                      "Token lengths: benchmarks/bench.py TOKENS_PER_EXAMPLE; efficiencies: DEVICES "
                      "(assumed until make gpu-check measures them)")}


def paper_grid_estimate(measured_train: Mapping[str, Mapping[str, Any]] | None = None,
                        decode_step_s: Mapping[str, float] | None = None,
                        cfg: Mapping[str, Any] | None = None, device: str = "h100") -> dict[str, Any]:
    """The paper profile's grid on ``device`` (:func:`estimate_time`), with the speeds a GPU
    measured where given; ``runs`` counts the fine-tuning runs (KRSL included)."""
    cfg = cfg if cfg is not None else config.load_profile("paper")
    est = estimate_time(cfg, device, measured_train, decode_step_s)
    est["runs"] = est["train_runs"]
    est["method"] = cfg.get("method")
    est["assumptions"] = {"note": est["basis"]}
    return est


def estimates() -> dict[str, Any]:
    """The two estimates `make bench` prints without a GPU: the paper grid on one H100 (the
    original's settings and the profile's) and the colab profile on a free T4."""
    paper = config.load_profile("paper")
    res = {"paper_h100": estimate_time(paper, "h100"),
           "paper_h100_original_settings": estimate_time({**paper, **ORIGINAL_PAPER_SETTINGS}, "h100")}
    try:
        res["colab_t4"] = estimate_time(config.load_profile("colab"), "t4")
    except FileNotFoundError:
        pass
    res["target"] = {"paper_grid_max_min": TARGETS["paper_grid_wall_s_h100"] / 60, "colab_max_min": 120,
                     **target_gap(res["paper_h100"], TARGETS["paper_grid_wall_s_h100"])}
    return res


def target_gap(est: Mapping[str, Any], max_s: float) -> dict[str, Any]:
    """How much faster training would have to run for ``est`` to fit ``max_s`` (the rest of
    the time as estimated), and the saturated MFU that would mean; None where it fits."""
    train_s = est["train_min"] * 60
    rest = est["total_s"] - train_s
    if est["total_s"] <= max_s:
        return {"met": True, "train_speedup_needed": None, "train_mfu_needed": None}
    if rest >= max_s:
        return {"met": False, "train_speedup_needed": float("inf"), "train_mfu_needed": None}
    k = train_s / (max_s - rest)
    return {"met": False, "train_speedup_needed": _r(k, 2),
            "train_mfu_needed": _r(DEVICES[est["device"]]["train_mfu_max"] * k, 2)}


def print_estimates(est: Mapping[str, Any], file=None) -> None:
    """The arithmetic behind each estimate, line by line, then the totals."""
    file = file or sys.stdout
    for key, e in est.items():
        if key == "target":
            continue
        print(f"[bench] estimate {key}: {e['profile']} profile on {e['device_name']} "
              f"({e['train_runs']} fine-tuning runs, {e['eval_runs']} evaluation runs, "
              f"{e['train_tokens'] / 1e6:,.1f} M training tokens, {e['eval_items']:,} test items)", file=file)
        for line in e["arithmetic"]:
            print(f"[bench]   {line}", file=file)
        for m, pm in e["per_model"].items():
            print(f"[bench]   {m} ({pm['n_params'] / 1e9:.3f} B params): train {pm['train_s'] / 60:.1f} min, "
                  f"prefill {pm['prefill_s'] / 60:.1f} min, decode {pm['decode_s'] / 60:.1f} min "
                  f"(max {pm['decode_s_max'] / 60:.1f}), per-run overhead {pm['overhead_s'] / 60:.1f} min; "
                  f"peak training memory ~{pm['peak_train_memory_gb']:.0f} GB", file=file)
        print(f"[bench]   total {e['total_min']:.0f} min (upper bound {e['total_min_max']:.0f} min), "
              f"training {e['train_min']:.0f} min", file=file)
    t = est.get("target", {})
    if "paper_h100" in est and "met" in t:
        print(f"[bench] paper grid on one H100: {est['paper_h100']['total_min']:.0f} min estimated, target "
              f"<= {t['paper_grid_max_min']:.0f} min: " + ("met" if t["met"] else
              f"NOT met; training would have to run {t['train_speedup_needed']}x faster "
              f"(MFU ~{t['train_mfu_needed']} at saturated micro-batches)"), file=file)


def bench_gpu(cfg: Mapping[str, Any], sizes: Mapping[str, Any], work: Path,
              device: str | None = None, model_configs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Part 4 (CUDA only): per paper-sized model, bf16 LoRA vs. QLoRA training and bf16
    generation, MFU, and the paper grid's estimated wall time on this GPU.

    ``device`` / ``model_configs`` (name -> transformers config) exist for checking the code
    path on CPU with a small config; by default the part needs CUDA and the paper models."""
    import torch
    from transformers import AutoModelForCausalLM

    if device is None:
        if not torch.cuda.is_available():
            est = estimates()
            print_estimates(est)
            return {"skipped": NO_CUDA, "estimates": est}
        device = "cuda"
    cuda = device.startswith("cuda")
    name = torch.cuda.get_device_name(0) if cuda else "cpu"
    peak = peak_bf16_flops(name) if cuda else None
    paper = config.load_profile("paper")
    train_cfg = {k: paper[k] for k in ("lora_r", "lora_alpha", "lora_dropout", "lr", "gradient_checkpointing")}
    methods = ("lora", "qlora") if cuda else ("lora",)
    res: dict[str, Any] = {"device": name, "peak_bf16_flops": peak, "models": {},
                           "settings": {"seq_len": sizes["gpu_seq_len"], "batch_size": int(paper["batch_size"]),
                                        "steps": sizes["gpu_steps"], **train_cfg,
                                        "gen_batch_size": int(paper["eval_batch_size"]),
                                        "gen_prompt_len": sizes["gpu_gen_prompt_len"],
                                        "gen_new_tokens": sizes["gpu_gen_new_tokens"],
                                        "weights": "random (built from the published configs)"}}
    if model_configs is None:
        model_configs = {m: gpu_model_config(m) for m in PAPER_STUDENTS}
    Path(work).mkdir(parents=True, exist_ok=True)
    for key, mcfg in model_configs.items():
        n = n_params(mcfg)
        d = Path(tempfile.mkdtemp(dir=work, prefix="gpu-model-"))
        try:
            config.seed_everything(0)
            with torch.device(device):
                mdl = AutoModelForCausalLM.from_config(mcfg, dtype=_cuda_dtype() if cuda else torch.float32)
            mdl.save_pretrained(d)
            del mdl
            gc.collect()
            entry: dict[str, Any] = {"n_params": n}
            for meth in methods:
                try:  # QLoRA needs bitsandbytes: a missing package is reported, LoRA still measured
                    r = sft_throughput(d, meth, train_cfg, seq_len=int(sizes["gpu_seq_len"]),
                                       steps=int(sizes["gpu_steps"]), batch_size=int(paper["batch_size"]), device=device)
                    r["mfu"] = _r(mfu(n, r["tokens_per_s"], peak), 4)
                except Exception as e:
                    if not cuda:
                        raise
                    r = {"error": f"{type(e).__name__}: {e}"}
                    gc.collect()
                    torch.cuda.empty_cache()
                entry[meth] = r
            entry["generation"] = gen_throughput(d, batch_size=int(paper["eval_batch_size"]),
                                                 prompt_len=int(sizes["gpu_gen_prompt_len"]),
                                                 new_tokens=int(sizes["gpu_gen_new_tokens"]), device=device)
            res["models"][key] = entry
        finally:
            shutil.rmtree(d, ignore_errors=True)
    if cuda:
        res["estimates"] = estimates()
    if cuda and set(PAPER_STUDENTS) <= set(res["models"]):
        meth = paper["method"] if paper["method"] in methods else "lora"
        if any("error" in res["models"][m].get(meth, {"error": ""}) for m in PAPER_STUDENTS):
            meth = "lora"  # e.g. no bitsandbytes: estimate at the bf16 LoRA speed, and say so
        measured = {m: {**{k: res["models"][m][meth][k] for k in ("tokens_per_s", "seq_len", "batch_size",
                                                                  "gradient_checkpointing")},
                        "peak_flops": peak or DEVICES["h100"]["peak_flops"]} for m in PAPER_STUDENTS}
        same_class = any(k in name.lower() for k in ("h100", "h200", "gh200", "h800"))
        steps = {m: res["models"][m]["generation"]["batch_size"] / res["models"][m]["generation"]["tokens_per_s"]
                 for m in PAPER_STUDENTS} if same_class else None
        est = paper_grid_estimate(measured, steps)
        est["method"] = meth
        est["calibrated_on"] = name
        res["paper_grid_estimate"] = est
        is_h100 = "h100" in name.lower()
        res["target"] = {"metric": "estimated wall time of the paper grid on this GPU",
                         "max_s": TARGETS["paper_grid_wall_s_h100"], "value_s": est["total_s"],
                         "applies": is_h100,
                         "met": est["total_s"] <= TARGETS["paper_grid_wall_s_h100"] if is_h100 else None}
    return res


# =============================================================================== report
def _fmt(x: Any, nd: int = 2) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:,.{nd}f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def _p(p: float | None) -> str:
    """A p-value for a table: two significant digits, ``<0.001`` below that."""
    if p is None:
        return ""
    return "<0.001" if p < 0.001 else f"{p:.2g}"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(_fmt(c) for c in r) + " |" for r in rows]
    return out + [""]


def summary_targets(parts: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One line per target: part, what, target, measured, met."""
    out = []
    for name, p in parts.items():
        if not isinstance(p, Mapping) or "target" not in p:
            continue
        t = p["target"]
        if name in ("gen", "sft"):
            out.append({"part": name, "metric": t["metric"], "target": f">= {t['min_ratio']}x",
                        "value": t["value"], "met": t["met"]})
        elif name == "reproduce":
            out.append({"part": name, "metric": "wall time, make reproduce", "target": f"<= {t['max_wall_s'] / 60:.0f} min",
                        "value": _r(t["value_wall_s"] / 60, 1) if t["value_wall_s"] is not None else None,
                        "met": t["wall_met"]})
            out.append({"part": name, "metric": "smallest EM lift over untrained (vanilla/correct/incorrect, every dataset)",
                        "target": f">= {t['min_em_lift']:.2f}", "value": t["value_min_em_lift"], "met": t["lift_met"]})
        elif name == "gpu":
            out.append({"part": name, "metric": "estimated paper-grid wall time (min)",
                        "target": f"<= {t['max_s'] / 60:.0f} min on one H100",
                        "value": _r(t["value_s"] / 60, 1), "met": t["met"]})
    return out


def _estimates_md(est: Mapping[str, Any]) -> list[str]:
    """The wall-time estimates (:func:`estimates`) as a table and their basis."""
    rows = []
    for key, e in est.items():
        if key == "target":
            continue
        st = e["settings"]
        rows.append([key, e["device_name"], e["train_runs"], e["eval_runs"], _r(e["train_tokens"] / 1e6, 1),
                     f"{st['batch_size']} x {st['grad_accum']}", st["gradient_checkpointing"], st["eval_batch_size"],
                     e["train_min"], e["total_min"], e["total_min_max"]])
    if not rows:
        return []
    L = ["### Wall-time estimates (arithmetic, not measured)", ""]
    L += _table(["estimate", "device", "train runs", "eval runs", "train tokens (M)", "batch x accum",
                 "grad. checkpointing", "eval batch", "train min", "total min", "upper bound min"], rows)
    first = next(e for k, e in est.items() if k != "target")
    t = est["target"]
    L += [f"Basis: {first['basis']}. Targets: paper grid <= {t['paper_grid_max_min']:.0f} min on one "
          f"H100; colab <= {t['colab_max_min']:.0f} min on a T4."
          + ("" if t.get("met") in (None, True) else
             f" The paper-grid target is not met by this estimate: training would have to run "
             f"{t['train_speedup_needed']}x faster (MFU ~{t['train_mfu_needed']} at saturated micro-batches)."), ""]
    return L


def render_md(rep: Mapping[str, Any]) -> str:
    """The report as Markdown: machine, targets, then one section per part."""
    m = rep["machine"]
    env = rep.get("environment", {})
    v = env.get("versions", {})
    L = [f"# `make bench` ({rep['profile']} profile)", "",
         f"Run {rep['created']} on {m.get('cpu_model')} ({m.get('cpu_count')} cores, {m.get('ram_gb')} GB RAM, "
         f"torch threads {m.get('torch_threads')}, CPU autocast {m.get('autocast_dtype') or 'none'}, "
         f"CUDA: {m.get('cuda') or 'none'}); python {env.get('python')}, torch {v.get('torch')}, "
         f"transformers {v.get('transformers')}, peft {v.get('peft')}; commit {env.get('git_commit')}. "
         f"Bench wall time {_fmt(rep.get('wall_s'), 1)} s.", "",
         "Every ratio is project / straightforward way, both measured in this run on this machine, one after "
         "the other. \"others' CPU\" is the share of the machine's CPU that other processes used while a side was "
         "measured (a shared machine slows the sides unevenly).", "",
         "## Targets", ""]
    L += _table(["part", "metric", "target", "measured", "met"],
                [[t["part"], t["metric"], t["target"], t["value"], t["met"]] for t in rep.get("targets", [])])
    parts = rep["parts"]
    for name in PARTS:
        if name not in parts:
            continue
        p = parts[name]
        title = {"gen": "1. Evaluation generation", "sft": "2. Fine-tuning (SFT)",
                 "reproduce": "3. `make reproduce` (whole profile)", "gpu": "4. GPU (paper-sized models)"}[name]
        L += [f"## {title}", ""]
        if "skipped" in p:
            L += [f"Skipped: {p['skipped']}.", ""]
            if p.get("estimates"):
                L += _estimates_md(p["estimates"])
            continue
        if "error" in p:
            L += ["Failed:", "", "```", p["error"].strip()[-2000:], "```", ""]
            continue
        if p.get("contention"):
            L += [f"**Shared machine**: {p['contention']}.", ""]
        if name == "gen":
            s = p["settings"]
            L += [f"{s['n_prompts']} test prompts ({', '.join(s['datasets'])}; mean {s['prompt_tokens_mean']} / max "
                  f"{s['prompt_tokens_max']} prompt tokens, of which {s['shared_prefix_tokens']} are shared by all), "
                  f"student `{s['model']}` ({s['model_dtype']} on {s['device']}), greedy, max_new_tokens "
                  f"{s['max_new_tokens']}, evaluation batch {s['eval_batch_size']}.", ""]
            for key, st in p["students"].items():
                info = st["student"]
                what = ("the base model" if key == "untrained" else
                        f"fine-tuned on `{info['condition']}` traces, {info['steps']} steps of the project's SFT "
                        f"({info['train_seconds']} s, loss {info['loss_first']} -> {info['loss_last']}), merged")
                L += [f"### Student `{key}`: {what}", "",
                      f"Mean {st['generated_tokens_mean']} generated tokens per item (one-at-a-time), "
                      f"{st['finished_share']:.0%} stopped at EOS.", ""]
                if st.get("contention"):
                    L += [f"**Shared machine**: {st['contention']}.", ""]
                L += _table(["way", "batch", "dtype", "shared prefix", "items", "gen. tokens", "seconds", "items/s",
                             "tokens/s", "others' CPU"],
                            [[k, st[k]["batch_size"], st[k]["dtype"], st[k]["shared_prefix"], st[k]["items"],
                              st[k]["generated_tokens"], st[k]["seconds"], st[k]["items_per_s"], st[k]["tokens_per_s"],
                              st[k].get("others_cpu_frac")] for k in ("baseline", "project", "project_fp32")])
                r, a = st["ratios"], st["agreement"]
                L += [f"Ratios: items/s **{_fmt(r['items_per_s'])}x**, generated tokens/s **{_fmt(r['tokens_per_s'])}x** "
                      f"(fp32 batches: items/s {_fmt(r['fp32_items_per_s'])}x).", "",
                      "Greedy agreement with one-at-a-time: " + "; ".join(
                          f"{side} {x['identical']}/{x['n']} identical ({x.get('answer_differs', 'n/a')} with a "
                          f"different answer)" for side, x in (("project", a["project_vs_one_at_a_time"]),
                                                               ("project_fp32", a["project_fp32_vs_one_at_a_time"])))
                      + ".", ""]
            L += [f"Agreement: {p['agreement_note']}.", ""]
        elif name == "sft":
            s = p["settings"]
            L += [f"`{s['model']}`, condition `{s['condition']}`, {s['examples']} examples (mean {s['example_tokens_mean']}, "
                  f"max {s['example_tokens_max']} tokens), {s['steps']} steps of batch {s['batch_size']} x accum "
                  f"{s['grad_accum']}, LoRA r={s['lora']['r']} alpha={s['lora']['alpha']}, lr {s['lr']} "
                  f"{s['lr_scheduler']}.", ""]
            L += _table(["way", "sampler", "bf16 autocast", "non-pad tokens", "fed tokens", "padding", "seconds",
                         "tokens/s", "eval loss", "others' CPU"],
                        [[k, p[k]["sampler"], p[k]["bf16_autocast"], p[k]["non_padding_tokens"], p[k]["fed_tokens"],
                          p[k]["padding_fraction"], p[k]["seconds"], p[k]["tokens_per_s"], p[k]["eval_loss"],
                          p[k].get("others_cpu_frac")]
                         for k in ("baseline", "project")])
            a = p["loss_agreement"]
            L += [f"Ratio: non-padding tokens/s **{_fmt(p['ratios']['tokens_per_s'])}x** (the project's time includes "
                  f"{p['project']['checkpoints_saved']} checkpoint saves, {_fmt(p['project']['checkpoint_seconds'])} s; "
                  f"without them {_fmt(p['ratios']['tokens_per_s_project_without_checkpoints'])}x).", "",
                  f"Loss curves: mean |project - baseline| per step {_fmt(a['mean_abs_diff'], 4)} "
                  f"({_fmt(a['rel_mean_abs_diff'], 4)} of the baseline's mean {_fmt(a['mean_b'], 4)}); last-third means "
                  f"{_fmt(a['last_third_mean_a'], 4)} vs {_fmt(a['last_third_mean_b'], 4)}; held-out loss untrained "
                  f"{_fmt(a['eval_loss_untrained'], 4)}, project {_fmt(a['eval_loss_project'], 4)}, baseline "
                  f"{_fmt(a['eval_loss_baseline'], 4)}; same initial adapter: {_fmt(a['same_initial_adapter'])}. "
                  f"{a['how']}.", ""]
            pr = p.get("padding_at_run_size") or {}
            if pr:
                L += ["Padding over a whole fine-tuning run of each dataset (its full train split, one epoch, "
                      "batch " + str(s["batch_size"]) + "): real / fed tokens with the project's length-grouped order vs. "
                      f"a random order (the benchmark's {s['examples']}-example pool groups only a few batches at a "
                      "time, so it understates this):", ""]
                L += _table(["dataset", "examples", "grouped efficiency", "random efficiency", "random / grouped fed tokens"],
                            [[ds, r["examples"], r["grouped_efficiency"], r["random_efficiency"],
                              r["random_over_grouped_fed_tokens"]] for ds, r in pr.items()])
            L += _table(["step", "project loss", "baseline loss"],
                        [[i + 1, x, y] for i, (x, y) in enumerate(zip(p["project"]["loss_curve"], p["baseline"]["loss_curve"]))])
        elif name == "reproduce":
            L += _table(["stage", "exit", "wall s", "peak RSS MB (largest process)", "peak RSS MB (process tree)"],
                        [[st, r["returncode"], r["wall_s"], r["peak_rss_mb"], r["peak_tree_rss_mb"]]
                         for st, r in p["stages"].items()]
                        + [["total", "", p["total_wall_s"], p["peak_rss_mb"], p["peak_tree_rss_mb"]]])
            acc = p.get("accuracy", {})
            if "table" in acc:
                L += ["Answer EM, untrained student vs. each fine-tuned condition:", ""]
                L += _table(["dataset", "model", "condition", "n", "answer EM", "untrained EM", "lift",
                             "items gained / lost", "McNemar p"],
                            [[r["dataset"], r["model"], r["condition"], r["n"], r["answer_em"], r["untrained_em"], r["lift"],
                              "" if r.get("gained") is None else f"{r['gained']} / {r['lost']}", _p(r.get("p_mcnemar"))]
                             for r in acc["table"]])
                L += ["Items gained / lost: test items the condition answers right and the untrained student "
                      "does not, and the reverse; McNemar's p of that paired difference (with a few dozen "
                      "items per dataset, one item moves EM by several points).", ""]
                if acc.get("short_of_target"):
                    L += ["Short of the lift target: " + "; ".join(acc["short_of_target"]) + ".", ""]
            else:
                L += [f"Accuracy not read: {acc.get('skipped')}.", ""]
        elif name == "gpu":
            L += [f"{p['device']}, dense bf16 peak {_fmt((p['peak_bf16_flops'] or 0) / 1e12, 0)} TFLOP/s "
                  f"(0 = unknown GPU). Random weights, models built from their published configs.", ""]
            rows = []
            for mname, e in p["models"].items():
                for meth in ("lora", "qlora"):
                    if meth in e:
                        r = e[meth]
                        if "error" in r:
                            rows.append([mname, e["n_params"], meth, "failed: " + r["error"][:120], "", "", "", ""])
                            continue
                        rows.append([mname, e["n_params"], meth, r["seq_len"], r["batch_size"], r["tokens_per_s"],
                                     r["mfu"], r["peak_gpu_mem_gb"]])
            L += _table(["model", "params", "method", "seq len", "batch", "train tokens/s", "MFU", "peak GPU GB"], rows)
            L += _table(["model", "batch", "prompt len", "new tokens", "gen tokens/s", "peak GPU GB"],
                        [[mname, e["generation"]["batch_size"], e["generation"]["prompt_len"], e["generation"]["new_tokens"],
                          e["generation"]["tokens_per_s"], e["generation"]["peak_gpu_mem_gb"]] for mname, e in p["models"].items()])
            est = p.get("paper_grid_estimate")
            if est:
                L += [f"Estimated paper grid ({est['runs']} fine-tuning runs + evaluations, {est['method']}): "
                      f"**{_fmt(est['total_min'], 1)} min**. {est['assumptions']['note']}.", ""]
            if p.get("estimates"):
                L += _estimates_md(p["estimates"])
    return "\n".join(L) + "\n"


def default_out(profile: str) -> Path:
    """``results/bench`` for the quick profile (the README's figures), ``results/bench/<profile>`` else."""
    base = paths.RESULTS / "bench"
    return base if profile == "quick" else base / profile


def default_parts(profile: str) -> list[str]:
    """Every part on the quick profile; elsewhere all but ``reproduce`` (it starts with
    ``make clean``: only when asked for)."""
    return list(PARTS) if profile == "quick" else [p for p in PARTS if p != "reproduce"]


def write_report(rep: Mapping[str, Any], out: Path) -> tuple[Path, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    j = config.write_json(out / "bench.json", rep)
    md = out / "bench.md"
    tmp = md.with_suffix(".md.tmp")
    tmp.write_text(render_md(rep))
    os.replace(tmp, md)
    return j, md


def run(profile: str, parts: Sequence[str] | None = None, out: Path | None = None,
        progress: bool = False) -> dict[str, Any]:
    """Run the chosen parts and write the report after each (a failed part is recorded with
    its traceback and the others still run)."""
    cfg = config.load_profile(profile)
    parts = list(parts) if parts else default_parts(profile)
    bad = [p for p in parts if p not in PARTS]
    if bad:
        raise ValueError(f"unknown parts {bad}; choose from {PARTS}")
    out = Path(out) if out else default_out(profile)
    sizes = _sizes(profile)
    t0 = time.perf_counter()
    try:
        from helpers.sft import set_threads

        set_threads()
    except ImportError:
        pass
    rep: dict[str, Any] = {"schema": SCHEMA, "profile": profile, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                           "command": " ".join([Path(sys.executable).name, "benchmarks/bench.py", *sys.argv[1:]]),
                           "parts_requested": parts, "sizes": sizes, "targets_definition": TARGETS,
                           "machine": machine_info(), "environment": config.environment_info(),
                           "parts": {}, "targets": []}
    earlier = out / "bench.json"
    if earlier.exists():  # parts measured by an earlier run and not re-run now are kept
        try:
            prev = json.loads(earlier.read_text())
        except (OSError, json.JSONDecodeError):
            prev = {}
        kept = prev.get("parts", {}) if prev.get("schema") == SCHEMA else {}
        for name, res in kept.items():
            if name in PARTS and name not in parts:
                rep["parts"][name] = dict(res, measured_in_earlier_run=res.get("measured_in_earlier_run")
                                          or prev.get("created"))
        rep["targets"] = summary_targets(rep["parts"])
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        work = Path(tmp)
        for name in PARTS:
            if name not in parts:
                continue
            t = time.perf_counter()
            print(f"[bench] {name} ...", flush=True)
            try:
                if name == "gen":
                    res = bench_gen(cfg, sizes, work, progress=progress)
                elif name == "sft":
                    res = bench_sft(cfg, sizes, work)
                elif name == "reproduce":
                    res = bench_reproduce(profile, out)
                else:
                    res = bench_gpu(cfg, sizes, work)
            except Exception:  # recorded in the report; the other parts still run
                res = {"error": traceback.format_exc()}
            res["part_wall_s"] = _r(time.perf_counter() - t, 2)
            rep["parts"][name] = res
            rep["targets"] = summary_targets(rep["parts"])
            rep["wall_s"] = _r(time.perf_counter() - t0, 2)
            write_report(rep, out)
            print(f"[bench] {name} done in {res['part_wall_s']} s", flush=True)
    return rep


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python benchmarks/bench.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="quick", help="smoke | quick | paper (default quick)")
    ap.add_argument("--parts", default=None,
                    help=f"comma-separated subset of {','.join(PARTS)} (default: all on quick, all but reproduce elsewhere)")
    ap.add_argument("--out", default=None, help="report folder (default results/bench, or results/bench/<profile>)")
    ap.add_argument("--progress", action="store_true", help="progress bars for the generation runs")
    ap.add_argument("--estimate", action="store_true",
                    help="only print the wall-time estimates (paper grid on one H100, colab on a T4) and their "
                         "arithmetic; nothing is measured (the gpu part prints them too)")
    a = ap.parse_args(argv)
    if a.estimate:
        print_estimates(estimates())
        return 0
    parts = [p.strip() for p in a.parts.split(",") if p.strip()] if a.parts else None
    rep = run(a.profile, parts, Path(a.out) if a.out else None, progress=a.progress)
    out = Path(a.out) if a.out else default_out(a.profile)
    print(f"[bench] report: {out / 'bench.md'}")
    for t in rep["targets"]:
        print(f"[bench] {t['part']}: {t['metric']}: {_fmt(t['value'])} (target {t['target']}) "
              f"{'met' if t['met'] else 'NOT met' if t['met'] is not None else ''}")
    failed = [k for k, v in rep["parts"].items() if "error" in v]
    if failed:
        print(f"[bench] parts that failed: {failed} (tracebacks in bench.json)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
