"""Supervised fine-tuning of one student per (dataset, model, condition, seed).

Methods (profile key ``method``)
    ``lora`` (the CPU default: LoRA adapters on q, k, v, o, gate, up, down), ``qlora`` (the
    paper profile: the base in 4-bit NF4 with double quantisation, paged 8-bit AdamW as in the
    original; on a CUDA GPU, or on the CPU with bitsandbytes' CPU kernels, where the paged
    optimiser falls back to an ordinary 8-bit one), ``full`` (every weight trained).

Precision (:func:`helpers.models.device_settings`, :func:`precision_args`)
    bf16 mixed precision on GPUs that compute in bf16 natively (compute capability >= 8.0),
    fp16 mixed precision with dynamic loss scaling on older ones (T4, V100): fp16 base
    weights, fp32 LoRA weights (the ones the optimiser updates and the loss scaler
    unscales). QLoRA's 4-bit compute dtype follows the same rule. The choice is recorded in
    the run's ``config.json`` (``precision``) and ``metrics.json``.

Progress
    Every run prints its progress (:mod:`helpers.progress`): a line when it starts, then
    about every 30 s or tenth of its steps, and at its end, each with the step, the training
    loss, tokens per second, elapsed time and ETA; in a notebook a widget bar as well.

Loss mask (``loss_mask``)
    ``full`` is the original's choice: every token of the templated conversation (system,
    user, assistant) carries loss. ``completion``: only the assistant's completion, from the
    end of the generation prompt through the end-of-turn token (:func:`helpers.chat.split_conversation`).
    Padding never carries loss; the pad token is distinct from EOS (``helpers.models``), so the
    end-of-turn token is always learned and trained students stop.

Engine (profile key ``engine``)
    ``plain``: a stock ``transformers.Trainer`` on the completion-masked batches (labels
    ``-100`` outside the target), the model's own loss, the Trainer's seeded random order.
    ``fast`` (the default): the same loss with the CPU speed work of
    :mod:`helpers.engine.training`: seeded length-grouped batches (little padding), the
    language-model head only where a token carries loss, the opening every row of a batch
    shares run once per batch, and LoRA dropout masks cut four at a time from 64-bit random
    draws. Either way: batches padded to their own longest example, on CPU bf16 autocast
    where the CPU has native bf16, no gradient checkpointing, one torch thread per available
    core. Non-padding tokens per second are recorded in ``metrics.json``.

Runs (``runs/<profile>/<dataset>/<model>/<condition>/seed<k>/``)
    ``config.json`` (the config and the environment), ``adapter/`` (or ``model/`` for full
    fine-tuning), ``tokenizer/``, ``metrics.json``, ``log_history.json`` (the loss per step),
    ``checkpoints/`` (a run that was interrupted resumes from the newest complete checkpoint made
    with the same config) and ``stamp.json`` (written last: a run without it is unfinished).

Other objectives (KRSL) reuse the same loop (:func:`build_trainer`, :func:`load_for_training`)
with their own collator and trainer class.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from . import config, paths
from .engine import choice as engine_choice
from .engine.training import IGNORE_INDEX  # -100: no loss at this position

METHODS = ("lora", "qlora", "full")
LOSS_MASKS = ("full", "completion")
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
CHECKPOINTS_PER_RUN = 5  # a checkpoint every ceil(steps / 5) optimizer steps

# Hyper-parameters a run depends on (its stamp), on top of the trace-set keys.
HPARAM_KEYS = ["method", "loss_mask", "max_length", "epochs", "max_steps", "batch_size", "grad_accum",
               "lr", "lr_scheduler", "warmup_ratio", "lora_r", "lora_alpha", "lora_dropout",
               "gradient_checkpointing", "engine"]


def run_keys(condition: str | None = None) -> list[str]:
    """The config keys a run's stamp covers: its data, its trace set, its hyper-parameters,
    and for a teacher-family ``condition`` the teacher's settings
    (:data:`helpers.teacher_stage.TEACHER_KEYS`). (Which models / seeds / conditions are
    listed is not one of them: adding a condition does not retrain the others.)"""
    from . import conditions
    from .traces import TRACE_KEYS

    keys = [k for k in TRACE_KEYS if k != "conditions"] + HPARAM_KEYS
    if condition is not None and conditions.get(condition).written_by == "teacher":
        from .teacher_stage import TEACHER_KEYS

        keys += TEACHER_KEYS
    return keys


# --------------------------------------------------------------------------------------
# tokenisation
# --------------------------------------------------------------------------------------
def _rows(rows) -> list[Mapping[str, Any]]:
    if hasattr(rows, "to_dict"):
        return rows.to_dict("records")
    return list(rows)


def tokenize_examples(tok, family: str, rows, model_name: str, max_length: int | None,
                      loss_mask: str) -> tuple[list[dict[str, list[int]]], dict[str, Any]]:
    """Training examples: ``input_ids`` and ``labels`` (``-100`` where no loss: the prompt and
    the template's tail under ``completion``; nothing under ``full``), cut to ``max_length``.

    ``stats``: ``n`` examples, ``truncated`` (longer than ``max_length``), ``no_loss`` (nothing
    left to learn after truncation: not trained on, listed in ``no_loss_ids``), ``tokens``
    (total), ``loss_tokens``, ``max_len``, ``mean_len`` (before truncation).
    """
    from . import chat, traces

    if loss_mask not in LOSS_MASKS:
        raise ValueError(f"loss_mask must be one of {LOSS_MASKS}, not {loss_mask!r}")
    out, lengths, truncated, no_loss = [], [], 0, []
    for r in _rows(rows):
        enc = chat.encode_conversation(tok, traces.messages(r, model_name), family)
        ids, mask = enc["input_ids"], enc["assistant_mask"]
        lengths.append(len(ids))
        labels = list(ids) if loss_mask == "full" else [t if m else IGNORE_INDEX for t, m in zip(ids, mask)]
        if max_length is not None and len(ids) > max_length:
            truncated += 1
            ids, labels = ids[:max_length], labels[:max_length]
        if all(l == IGNORE_INDEX for l in labels[1:]):  # labels are shifted: position 0 predicts nothing
            no_loss.append(r.get("id"))
            continue
        out.append({"input_ids": list(ids), "labels": labels})
    if no_loss:
        warnings.warn(f"{len(no_loss)} examples have no target token left after truncation to "
                      f"{max_length} and are not trained on (ids: {no_loss[:5]}...)", stacklevel=2)
    stats = {"n": len(lengths), "trained": len(out), "truncated": truncated, "no_loss": len(no_loss),
             "no_loss_ids": no_loss, "tokens": int(sum(len(e["input_ids"]) for e in out)),
             "loss_tokens": int(sum(sum(l != IGNORE_INDEX for l in e["labels"][1:]) for e in out)),
             "max_len": int(max(lengths)) if lengths else 0,
             "mean_len": float(sum(lengths) / len(lengths)) if lengths else 0.0,
             "max_length": max_length, "loss_mask": loss_mask}
    return out, stats


class ListDataset:
    """A list of feature dicts as a map-style dataset."""

    def __init__(self, items: Sequence[Mapping[str, Any]]):
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int):
        return self.items[k]


class PaddingCollator:
    """Pads a batch to its longest example (right padding: pad id, label -100, attention 0)."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None):
        if pad_token_id is None:
            raise ValueError("the tokenizer has no pad token")
        self.pad_token_id = int(pad_token_id)
        self.multiple = pad_to_multiple_of

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        import torch

        n = max(len(f["input_ids"]) for f in features)
        if self.multiple:
            n = int(math.ceil(n / self.multiple) * self.multiple)
        ids, att, lab = [], [], []
        for f in features:
            k = len(f["input_ids"])
            ids.append(list(f["input_ids"]) + [self.pad_token_id] * (n - k))
            att.append([1] * k + [0] * (n - k))
            lab.append(list(f.get("labels", f["input_ids"])) + [IGNORE_INDEX] * (n - k))
        return {"input_ids": torch.tensor(ids, dtype=torch.long),
                "attention_mask": torch.tensor(att, dtype=torch.long),
                "labels": torch.tensor(lab, dtype=torch.long)}


def padding_stats(lengths: Sequence[int], order: Sequence[int], batch_size: int) -> dict[str, float]:
    """Real vs padded tokens when batches of ``batch_size`` are taken in ``order`` and padded to
    their longest example."""
    real = padded = 0
    for i in range(0, len(order), batch_size):
        b = [lengths[j] for j in order[i:i + batch_size]]
        real += sum(b)
        padded += max(b) * len(b)
    return {"real_tokens": real, "padded_tokens": padded, "efficiency": real / padded if padded else 1.0}


# --------------------------------------------------------------------------------------
# model and trainer
# --------------------------------------------------------------------------------------
def set_threads(n_params: int | None = None) -> int:
    """A sensible torch thread count: ``OMP_NUM_THREADS`` when set, else one thread per core
    this process may use; a single thread for models under 10M parameters (the tiny smoke
    model), whose small matrix products only lose time to thread synchronisation."""
    import torch

    env = os.environ.get("OMP_NUM_THREADS")
    if env and env.isdigit() and int(env) > 0:
        n = int(env)
    elif n_params is not None and n_params < 10_000_000:
        n = 1
    else:
        try:
            n = len(os.sched_getaffinity(0))
        except AttributeError:
            n = os.cpu_count() or 1
    if torch.get_num_threads() != n:
        torch.set_num_threads(max(1, n))
    return torch.get_num_threads()


def load_for_training(cfg: Mapping[str, Any], model_name: str, init_adapter: str | Path | None = None):
    """``(model, tok)`` ready to train with ``cfg["method"]``: LoRA / QLoRA adapters (fresh, or
    continued from ``init_adapter``), or every weight (``full``; ``init_adapter`` is then a
    full model folder to start from). The model's EOS / pad agree with the tokenizer's."""
    from . import models

    method = cfg["method"]
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    tok = models.load_tokenizer(model_name)
    ds = models.device_settings()
    gc = bool(cfg.get("gradient_checkpointing")) and ds["device"] != "cpu"
    if method == "full":
        src = str(init_adapter) if init_adapter is not None else model_name
        model = models.load_model(src, method="full", tokenizer=tok, training=True)
        models.align_special_tokens(model, tok)
    else:
        from peft import LoraConfig, PeftModel, get_peft_model

        model = models.load_model(model_name, method=method, tokenizer=tok, training=True)
        if method == "qlora":
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gc)
        with warnings.catch_warnings():  # peft reads a renamed transformers attribute
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            if init_adapter is not None:
                model = PeftModel.from_pretrained(model, str(init_adapter), is_trainable=True)
            else:
                names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
                targets = [t for t in LORA_TARGETS if t in names]
                if not targets:
                    raise ValueError(f"{model_name}: none of the LoRA target modules {LORA_TARGETS} exist")
                model = get_peft_model(model, LoraConfig(
                    r=int(cfg["lora_r"]), lora_alpha=int(cfg["lora_alpha"]),
                    lora_dropout=float(cfg["lora_dropout"]), target_modules=targets, bias="none",
                    task_type="CAUSAL_LM"), autocast_adapter_dtype=True)  # fp32 adapters on a bf16/fp16 base
    if method != "full" and ds["device"] == "cpu" and engine_choice(cfg) == "fast":
        from .engine.training import use_fast_dropout

        use_fast_dropout(model)
    if precision_args(ds).get("fp16"):
        _check_fp32_trainable(model)
    model.config.use_cache = False  # activation checkpointing is switched on by the trainer
    return model, tok


def precision_args(ds: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The Trainer's mixed-precision arguments for a device (:func:`helpers.models.device_settings`).

    CPU: ``use_cpu`` and bf16 autocast where the CPU has native bf16. GPU with native bf16
    (capability >= 8.0): ``bf16``. Older GPUs (T4, V100): ``fp16``, i.e. fp16 autocast with
    a dynamic loss scaler (accelerate's GradScaler); the scaler needs fp32 trainable
    weights, which LoRA / QLoRA adapters are (peft keeps adapters in fp32 on a half-precision
    base; QLoRA's preparation casts the remaining weights to fp32) and which
    :func:`helpers.models.load_model` gives full fine-tuning (fp32 master weights)."""
    import torch

    from . import models

    ds = models.device_settings() if ds is None else ds
    if ds["device"] == "cpu":
        return {"use_cpu": True, "bf16": ds["autocast_dtype"] is not None, "fp16": False}
    if ds["dtype"] == torch.bfloat16:
        return {"bf16": True, "fp16": False}
    return {"bf16": False, "fp16": True}


def _check_fp32_trainable(model) -> None:
    """fp16 loss scaling unscales fp32 gradients only: fail early, not at the first step."""
    import torch

    bad = [n for n, p in model.named_parameters() if p.requires_grad and p.dtype != torch.float32]
    if bad:
        raise RuntimeError(f"fp16 mixed precision needs fp32 trainable weights; {len(bad)} are not "
                           f"(e.g. {bad[0]}, {dict(model.named_parameters())[bad[0]].dtype})")


class _StopAfter:
    """Stop (and checkpoint) after ``k`` optimizer steps: simulates an interruption."""

    def __new__(cls, k: int):
        from transformers import TrainerCallback

        class StopAfter(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                if state.global_step >= k:
                    control.should_save = True
                    control.should_training_stop = True
                return control

        return StopAfter()


def total_steps(cfg: Mapping[str, Any], n_examples: int, max_steps: int | None = None) -> int:
    ms = max_steps if max_steps is not None else cfg.get("max_steps")
    if ms:
        return int(ms)
    per_epoch = math.ceil(n_examples / (int(cfg["batch_size"]) * int(cfg["grad_accum"])))
    return max(1, int(math.ceil(per_epoch * float(cfg["epochs"]))))


def build_trainer(cfg: Mapping[str, Any], model, tok, train_dataset, run_dir: str | Path, *,
                  seed: int = 0, collator=None, trainer_cls=None, lr: float | None = None,
                  max_steps: int | None = None, loss_fn: Callable | None = None,
                  loss_is_scaled_for_ga: bool | None = None, lengths: Sequence[int] | None = None,
                  callbacks: Iterable[Any] = (), progress: bool = True, desc: str = "train",
                  **args_overrides):
    """A Trainer for ``model`` on ``train_dataset`` (a list of feature dicts or a map-style
    dataset) with the profile's hyper-parameters, writing checkpoints to
    ``run_dir/checkpoints``.

    The trainer class is a stock ``transformers.Trainer`` under ``engine: plain`` and the fast
    engine's (:func:`helpers.engine.training.trainer_class`) under ``engine: fast``; with the
    latter (or a ``trainer_cls`` derived from it), ``lengths`` (default: the ``input_ids``
    lengths when the items have them) turns on the seeded length-grouped sampler and
    ``loss_fn(model, inputs, num_items_in_batch) -> loss`` (or ``(loss, outputs)``) replaces
    the model's loss (``loss_is_scaled_for_ga``: whether it is already normalised over the
    accumulated batch; default False: the trainer divides by ``grad_accum``).
    ``collator`` defaults to dynamic padding;
    ``lr`` / ``max_steps`` override the profile's (KRSL's second step). ``progress``: report
    the run's steps (:func:`helpers.progress.trainer_callback`, lines headed ``desc``) in
    place of the Trainer's own bar and per-step log printing, which are always off.
    Mixed precision: :func:`precision_args`.
    """
    from transformers import Trainer, TrainingArguments

    from . import models
    from .engine.training import trainer_class
    from .progress import trainer_callback

    set_threads(sum(p.numel() for p in model.parameters()))
    if not isinstance(train_dataset, ListDataset) and isinstance(train_dataset, list):
        train_dataset = ListDataset(train_dataset)
    n = len(train_dataset)
    if n == 0:
        raise ValueError("no training examples")
    if lengths is None:
        first = train_dataset[0]
        if isinstance(first, Mapping) and "input_ids" in first:
            lengths = [len(train_dataset[i]["input_ids"]) for i in range(n)]
    ds = models.device_settings()
    on_cpu = ds["device"] == "cpu"
    steps = total_steps(cfg, n, max_steps)
    save_steps = max(1, math.ceil(steps / CHECKPOINTS_PER_RUN))
    method = cfg.get("method", "lora")
    warm = float(cfg.get("warmup_ratio") or 0.0)
    kw: dict[str, Any] = dict(
        output_dir=str(Path(run_dir) / "checkpoints"),
        per_device_train_batch_size=int(cfg["batch_size"]),
        gradient_accumulation_steps=int(cfg["grad_accum"]),
        learning_rate=float(lr if lr is not None else cfg["lr"]),
        lr_scheduler_type=cfg.get("lr_scheduler", "cosine"),
        warmup_steps=warm if warm < 1 else int(warm),
        max_steps=steps,
        logging_steps=1, logging_first_step=True,
        save_strategy="steps", save_steps=save_steps, save_total_limit=2,
        seed=int(seed), data_seed=int(seed),
        report_to="none", disable_tqdm=True,
        remove_unused_columns=False, dataloader_num_workers=0,
        include_num_input_tokens_seen="non_padding",
        optim="paged_adamw_8bit" if method == "qlora" else "adamw_torch",
    )
    if bool(cfg.get("gradient_checkpointing")) and not on_cpu:  # never on CPU: it only costs time there
        kw["activation_checkpointing"] = True
        kw["activation_checkpointing_kwargs"] = {"use_reentrant": False}
    kw.update(precision_args(ds))
    kw.update(args_overrides)
    args = TrainingArguments(**kw)
    cls = trainer_cls or (trainer_class() if engine_choice(cfg) == "fast" else Trainer)
    extra = {}
    if issubclass(cls, trainer_class()):
        extra = {"lengths": lengths, "loss_fn": loss_fn, "sampler_seed": int(seed)}
    elif loss_fn is not None:
        raise ValueError("loss_fn needs the fast engine's trainer (helpers.engine.training.trainer_class)")
    trainer = cls(model=model, args=args, train_dataset=train_dataset, processing_class=tok,
                  data_collator=collator or PaddingCollator(tok.pad_token_id, None if on_cpu else 8),
                  callbacks=list(callbacks) + ([trainer_callback(desc)] if progress else []), **extra)
    if loss_fn is not None:
        trainer.loss_is_scaled_for_ga = bool(loss_is_scaled_for_ga)
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # a dict per logged step: the progress lines replace it
    return trainer


def build_run_trainer(cfg: Mapping[str, Any], model, tok, examples, run_dir: str | Path, **kw):
    """The trainer of an SFT run (:func:`build_trainer`) with ``cfg``'s engine's loss: the
    model's own loss on the completion-masked labels under ``engine: plain``; under ``fast``
    the same loss computed only at labelled positions
    (:func:`helpers.engine.training.target_positions_loss`)."""
    if engine_choice(cfg) == "plain":
        return build_trainer(cfg, model, tok, examples, run_dir, **kw)
    from .engine.training import target_positions_loss

    trainer = build_trainer(cfg, model, tok, examples, run_dir, loss_fn=target_positions_loss, **kw)
    # the Trainer counts labelled tokens over the accumulated batch exactly when the model
    # accepts loss kwargs; target_positions_loss then divides by that count itself
    trainer.loss_is_scaled_for_ga = bool(trainer.model_accepts_loss_kwargs)
    return trainer


# --------------------------------------------------------------------------------------
# one run
# --------------------------------------------------------------------------------------
def _checkpoint_step(p: Path) -> int:
    try:
        return int(p.name.rsplit("-", 1)[-1])
    except ValueError:
        return -1


def prepare_checkpoints(run_dir: str | Path, run_hash: str) -> Path | None:
    """The newest complete checkpoint of ``run_dir`` made with config hash ``run_hash``, or None.

    Checkpoints of another config are deleted (a changed parameter starts afresh), and so are
    incomplete ones (the process was killed while writing: no ``trainer_state.json``)."""
    ck = Path(run_dir) / "checkpoints"
    marker = ck / "run_hash.txt"
    if ck.exists() and (not marker.exists() or marker.read_text().strip() != run_hash):
        shutil.rmtree(ck)
    ck.mkdir(parents=True, exist_ok=True)
    marker.write_text(run_hash + "\n")
    done = []
    for p in ck.glob("checkpoint-*"):
        if p.is_dir() and (p / "trainer_state.json").exists() and _checkpoint_step(p) >= 0:
            done.append(p)
        elif p.is_dir():
            shutil.rmtree(p)
    return max(done, key=_checkpoint_step) if done else None


def _trainable(model) -> tuple[int, int]:
    t = a = 0
    for p in model.parameters():
        a += p.numel()
        t += p.numel() if p.requires_grad else 0
    return t, a


def train_run(cfg: Mapping[str, Any], dataset: str, model_name: str, condition: str, seed: int, *,
              progress: bool = True, force: bool = False, stop_after: int | None = None) -> Path:
    """Fine-tune ``model_name`` on the ``condition`` trace set of ``dataset`` with ``seed``;
    returns the run folder (see the module docstring for its files).

    Skipped when the run's stamp matches (``run_keys()``) unless ``force``. A run that was
    interrupted resumes from its newest checkpoint. ``stop_after=k`` stops after ``k``
    optimizer steps with a checkpoint and without finishing the run (an interruption, for
    tests and demonstrations).
    """
    import torch

    from . import conditions, models, traces

    spec = conditions.get(condition)
    if spec.family == "derived":
        raise ValueError(f"{condition!r} is trained by helpers.krsl.train_krsl_run, not sft.train_run")
    if not spec.has_trace_file:
        raise ValueError(f"condition {condition!r} has no trace set to train on; expected one of "
                         f"{conditions.names(written_by=('traces', 'teacher'))}")
    if cfg.get("loss_mask") not in LOSS_MASKS:
        raise ValueError(f"loss_mask must be one of {LOSS_MASKS}, not {cfg.get('loss_mask')!r}")
    rd = paths.run_dir(cfg["profile"], dataset, model_name, condition, seed)
    keys = run_keys(condition)
    out_name = "model" if cfg["method"] == "full" else "adapter"
    # the trace set 03 wrote (04 never runs 03: a missing file names `make traces`)
    frame = traces.load_condition(cfg["profile"], dataset, condition)
    inputs = traces.run_inputs(cfg, dataset, condition)
    fp = config.fingerprint(cfg, keys, stage="sft", inputs=inputs)
    if not force and config.stamp_hash(rd) == fp["hash"] and (rd / out_name).exists():
        return rd
    rd.mkdir(parents=True, exist_ok=True)
    (rd / config.STAMP).unlink(missing_ok=True)
    if force and (rd / "checkpoints").exists():
        shutil.rmtree(rd / "checkpoints")
    run_hash = fp["hash"]  # config, code and trace set: a checkpoint of other work is not resumed
    resume = prepare_checkpoints(rd, run_hash)

    config.seed_everything(seed)
    model, tok = load_for_training(cfg, model_name)
    family = models.model_family(model_name)
    examples, tstats = tokenize_examples(tok, family, frame, model_name, cfg["max_length"], cfg["loss_mask"])
    ds = models.device_settings()
    run_info = {"dataset": dataset, "model": model_name, "family": family, "condition": condition,
                "seed": int(seed), "method": cfg["method"], "out": out_name, "run_hash": run_hash}
    precision = models.precision_record(ds)
    config.write_json(rd / "config.json", {**dict(cfg), "run": run_info, "precision": precision,
                                           "environment": config.environment_info()})
    trainer = build_run_trainer(cfg, model, tok, examples, rd, seed=seed, progress=progress,
                                warmup_steps=traces.warmup_for_run(cfg, dataset, condition),
                                desc=f"sft {dataset}/{model_name}/{condition}/seed{seed}",
                                callbacks=[_StopAfter(stop_after)] if stop_after else [])
    start_step, start_tokens = 0, 0
    if resume is not None:
        st = config.read_json(resume / "trainer_state.json")
        start_step, start_tokens = int(st.get("global_step", 0)), int(st.get("num_input_tokens_seen", 0))
    t0 = time.perf_counter()
    out = trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    wall = time.perf_counter() - t0
    state = trainer.state
    if state.global_step < state.max_steps:
        return rd  # stopped early (stop_after): unfinished, no stamp; the next call resumes

    hist = [dict(h) for h in state.log_history]
    losses = [(h["step"], h["loss"]) for h in hist if "loss" in h]
    session_tokens = int(state.num_input_tokens_seen) - start_tokens
    trainable, total = _trainable(model)
    metrics = {
        **run_info,
        "device": ds["device"], "autocast": str(ds["autocast_dtype"]) if ds["device"] == "cpu" else str(ds["dtype"]),
        "precision": precision["precision"], "gpu": precision["gpu"],
        "torch_threads": torch.get_num_threads(),
        "train_loss_first": losses[0][1] if losses else None,
        "train_loss_last": losses[-1][1] if losses else None,
        "train_loss_mean_session": float(out.training_loss) if state.global_step > start_step else None,
        "global_step": int(state.global_step), "resumed_from_step": start_step,
        "examples": tstats["n"], "trained_examples": tstats["trained"], "truncated": tstats["truncated"],
        "no_loss": tstats["no_loss"], "max_len": tstats["max_len"], "mean_len": tstats["mean_len"],
        "max_length": cfg["max_length"], "loss_tokens_per_epoch": tstats["loss_tokens"],
        "tokens_seen": int(state.num_input_tokens_seen), "session_tokens": session_tokens,
        "wall_time_s": wall, "tokens_per_s": session_tokens / wall if wall > 0 else None,
        "trainable_params": trainable, "total_params": total,
    }
    return save_run(rd, model, tok, out_name, hist, metrics, cfg, keys, stage="sft", inputs=inputs,
                    run=run_info)


def save_run(rd: Path, model, tok, out_name: str, hist, metrics: Mapping[str, Any],
             cfg: Mapping[str, Any], keys, *, stage: str, inputs, **stamp_extra: Any) -> Path:
    """Write a finished run: the adapter (or full model) in ``rd/out_name``, the tokenizer,
    the loss curve, the metrics, and last the stamp (:func:`helpers.config.write_stamp` of
    ``stage`` with the ``inputs`` it read) that marks the run complete."""
    out_dir = rd / out_name
    if out_dir.exists():
        shutil.rmtree(out_dir)
    model.save_pretrained(out_dir)
    sort_adapter_config(out_dir)
    if out_name == "model":
        tok.save_pretrained(out_dir)
    tok.save_pretrained(rd / "tokenizer")
    config.write_json(rd / "log_history.json", hist)
    config.write_json(rd / "metrics.json", metrics)
    config.write_stamp(rd, cfg, keys, stage=stage, inputs=inputs, **stamp_extra)
    return rd


def sort_adapter_config(out_dir: str | Path) -> None:
    """Rewrite a saved ``adapter_config.json`` with ``target_modules`` sorted: peft keeps
    them in a set, whose order changes from one process to the next, so two identical runs
    would write different bytes. (No-op for a full model.)"""
    p = Path(out_dir) / "adapter_config.json"
    if not p.exists():
        return
    with open(p) as f:
        ac = json.load(f)
    if isinstance(ac.get("target_modules"), list):
        ac["target_modules"] = sorted(ac["target_modules"])
    with open(p, "w") as f:
        json.dump(ac, f, indent=2, sort_keys=True)
        f.write("\n")


def load_trained(run_dir: str | Path, device: str | None = None, model_name: str | None = None):
    """``(model, tok)`` of a run for inference: the adapter merged into the base weights (a
    QLoRA adapter into the unquantised base, as the original did), or the fully fine-tuned
    model; for condition ``untrained`` (or a folder without weights) the base model. The
    tokenizer pads on the left (batched generation) and the generation config stops at the
    family's end of turn."""
    from . import models

    rd = Path(run_dir)
    info = config.read_json(rd / "config.json").get("run", {}) if (rd / "config.json").exists() else {}
    name = model_name or info.get("model") or rd.parent.parent.name
    if (rd / "tokenizer").exists():
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(rd / "tokenizer")
    else:
        tok = models.load_tokenizer(name)
    from .conditions import UNTRAINED

    untrained = rd.parent.name == UNTRAINED
    if not untrained and (rd / "model").exists():
        model = models.load_model(str(rd / "model"), method="full", device=device, tokenizer=tok)
    else:
        model = models.load_model(name, method="lora", device=device, tokenizer=tok)
        if not untrained and (rd / "adapter").exists():
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(rd / "adapter")).merge_and_unload()
        elif not untrained:
            raise FileNotFoundError(f"{rd} holds neither adapter/ nor model/: the run has not finished "
                                    "(condition 'untrained' is the base model)")
    models.align_special_tokens(model, tok)
    model.config.use_cache = True
    model.eval()
    tok.padding_side = "left"
    return model, tok


# --------------------------------------------------------------------------------------
# the whole grid, for 04_sft
# --------------------------------------------------------------------------------------
def run_grid(cfg: Mapping[str, Any]) -> list[tuple[str, str, str, int]]:
    """Every (dataset, model, condition, seed) of the profile that this module trains
    (``krsl`` excluded: helpers.krsl)."""
    from . import conditions
    from .traces import all_conditions

    return [(d, m, c, int(s)) for d in cfg["datasets"] for m in cfg["models"]
            for c in all_conditions(cfg) if conditions.get(c).family != "derived" for s in cfg["seeds"]]


def train_all(cfg: Mapping[str, Any], *, progress: bool = True, inner_progress: bool = True):
    """Train (or skip when fresh) every run of :func:`run_grid`; returns their metrics table.
    ``progress``: a line (and a notebook bar) per finished run, with the ETA of the rest;
    ``inner_progress``: each run's steps (:mod:`helpers.progress`)."""
    from .progress import Progress, mtime

    grid = run_grid(cfg)
    bar = Progress(len(grid), "SFT runs", unit="run", rate_label="", enabled=progress,
                   interval_s=0, min_gap_s=0)
    for k, (d, m, c, s) in enumerate(grid, 1):
        stamp = paths.run_dir(cfg["profile"], d, m, c, s) / config.STAMP
        before = mtime(stamp)
        train_run(cfg, d, m, c, s, progress=inner_progress)
        fresh = before is not None and mtime(stamp) == before
        (bar.skip if fresh else bar.update)(k, last=f"{d}/{m}/{c}/seed{s}" + (" (fresh: skipped)" if fresh else ""))
    bar.close()
    return collect_metrics(cfg)


def _run_dirs(cfg: Mapping[str, Any]) -> Iterable[tuple[str, str, str, int, Path]]:
    from .traces import all_conditions

    for d in cfg["datasets"]:
        for m in cfg["models"]:
            for c in all_conditions(cfg):
                for s in cfg["seeds"]:
                    rd = paths.run_dir(cfg["profile"], d, m, c, int(s))
                    if (rd / "metrics.json").exists() and (rd / config.STAMP).exists():
                        yield d, m, c, int(s), rd


def collect_metrics(cfg: Mapping[str, Any]):
    """``metrics.json`` of every finished run of the profile, one row each."""
    import pandas as pd

    rows = [{**config.read_json(rd / "metrics.json"), "dataset": d, "model": m, "condition": c, "seed": s}
            for d, m, c, s, rd in _run_dirs(cfg)]
    return pd.DataFrame(rows)


def loss_curves(cfg: Mapping[str, Any]):
    """The logged training loss of every finished run: columns dataset, model, condition,
    seed, step, loss, learning_rate."""
    import pandas as pd

    rows = []
    for d, m, c, s, rd in _run_dirs(cfg):
        for h in config.read_json(rd / "log_history.json"):
            if "loss" in h:
                rows.append({"dataset": d, "model": m, "condition": c, "seed": s, "step": h["step"],
                             "loss": h["loss"], "learning_rate": h.get("learning_rate")})
    return pd.DataFrame(rows, columns=["dataset", "model", "condition", "seed", "step", "loss", "learning_rate"])


def hyperparameters(cfg: Mapping[str, Any]):
    """The training choices of the profile (and what this machine makes of them)."""
    import pandas as pd

    from . import models

    ds = models.device_settings()
    rows = [(k, cfg.get(k)) for k in HPARAM_KEYS]
    rows += [("lora targets", ", ".join(LORA_TARGETS) if cfg.get("method") != "full" else "-"),
             ("optimizer", ("paged AdamW 8-bit" + (" (not paged on CPU)" if ds["device"] == "cpu" else ""))
              if cfg.get("method") == "qlora" else "AdamW"),
             ("device", ds["device"] if ds["gpu"] is None else f"{ds['device']} ({ds['gpu']}, capability {ds['capability']})"),
             ("precision", ds["precision"]),
             ("QLoRA compute dtype", str(ds["qlora_compute_dtype"]).replace("torch.", "")
              if cfg.get("method") == "qlora" else "-"),
             ("gradient checkpointing used", bool(cfg.get("gradient_checkpointing")) and ds["device"] != "cpu"),
             ("batching", "dynamic padding, " + ("seeded length-grouped batches" if engine_choice(cfg) == "fast"
                                                  else "the Trainer's seeded random order")),
             ("checkpoints", f"every ceil(steps/{CHECKPOINTS_PER_RUN}) steps, last 2 kept")]
    return pd.DataFrame(rows, columns=["parameter", "value"]).astype({"value": str})
