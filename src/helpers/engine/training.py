"""The fast training engine (``engine: fast``): the same loss as a stock ``transformers.Trainer``
on the completion-masked batch, with less work on a CPU.

- :func:`target_positions_loss` runs the language-model head only where a token carries
  loss (``logits_to_keep``), and :func:`logits_at` runs the opening that every row of a
  batch shares (system prompt, instruction: :func:`batch_prefix_len`) once per batch, its
  key/value cache repeated for every row (gradients flow back through it).
- :class:`FastDropout` cuts LoRA dropout masks four at a time from 64-bit random draws (same
  distribution; :func:`use_fast_dropout` swaps it in).
- :func:`trainer_class` is ``transformers.Trainer`` with a seeded length-grouped sampler
  (:class:`LengthGroupedSampler`, through the Trainer's private ``_get_train_sampler``) and a
  loss hook ``loss_fn(model, inputs, num_items_in_batch)`` (KRSL reuses it).

The study's plain path is :func:`helpers.sft.build_trainer` with ``engine: plain`` (a stock
``Trainer``, the model's own loss); ``tests/test_engine.py`` checks that both give the same
loss.
"""
from __future__ import annotations

import functools
from typing import Callable, Sequence

from .generation import prefix_cache

IGNORE_INDEX = -100  # transformers' label for "no loss here"


class LengthGroupedSampler:
    """Seeded length grouping: each epoch a fresh permutation (seeded by ``seed + epoch``) is cut
    into mega-batches of ``mega * batch_size`` examples, each sorted by length, so neighbouring
    batches hold examples of similar length. Deterministic per epoch, so a resumed run sees
    the same order as an uninterrupted one."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int, mega: int | None = None):
        self.lengths = [int(x) for x in lengths]
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.mega = mega if mega is not None else max(1, min(len(self.lengths) // (self.batch_size * 4), 50))
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        import torch

        g = torch.Generator().manual_seed(self.seed + self.epoch)
        perm = torch.randperm(len(self.lengths), generator=g).tolist()
        size = self.mega * self.batch_size
        out = []
        for i in range(0, len(perm), size):
            out += sorted(perm[i:i + size], key=lambda j: -self.lengths[j])
        return iter(out)


class FastDropout:
    """Inverted dropout with Bernoulli masks cut from 64-bit random integers, four 16-bit
    uniforms per draw (the drop probability is ``p`` rounded to 1/65536). On CPU it draws far
    fewer random numbers than ``torch.nn.Dropout``, whose per-element draws took about a fifth
    of a LoRA step of SmolLM2-135M (one mask per adapted module and micro-batch). Same
    distribution and scaling; it draws from torch's global generator, so it is seeded and
    restored with the run."""

    def __new__(cls, p: float):
        import torch

        class _FastDropout(torch.nn.Module):
            def __init__(self, p: float):
                super().__init__()
                if not 0.0 <= p < 1.0:
                    raise ValueError(f"dropout probability must be in [0, 1), not {p}")
                self.p = float(p)
                self.cut = int(round(self.p * 65536)) - 32768  # int16 draws below the cut are dropped

            def forward(self, x):
                if not self.training or self.p == 0.0:
                    return x
                n = x.numel()
                r = torch.randint(-2 ** 63, 2 ** 63 - 1, ((n + 3) // 4,), dtype=torch.int64, device=x.device)
                keep = r.view(torch.int16)[:n].view(x.shape) >= self.cut
                return x * (keep.to(x.dtype) * (1.0 / (1.0 - self.p)))

            def extra_repr(self) -> str:
                return f"p={self.p}"

        return _FastDropout(p)


def use_fast_dropout(model) -> int:
    """Replace the LoRA dropout modules of a PEFT model by :class:`FastDropout` (same ``p``);
    returns how many were replaced."""
    import torch

    k = 0
    for mod in model.modules():
        drops = getattr(mod, "lora_dropout", None)
        if isinstance(drops, torch.nn.ModuleDict):
            for name, d in list(drops.items()):
                if isinstance(d, torch.nn.Dropout) and d.p > 0:
                    drops[name] = FastDropout(d.p)
                    k += 1
    return k


@functools.lru_cache(maxsize=None)
def trainer_class():
    """:class:`StudyTrainer` (built on first use, so importing this module stays light)."""
    from transformers import Trainer

    class StudyTrainer(Trainer):
        """Trainer with the seeded length-grouped sampler and an optional loss hook."""

        def __init__(self, *a, lengths: Sequence[int] | None = None, loss_fn: Callable | None = None,
                     sampler_seed: int = 0, **kw):
            super().__init__(*a, **kw)
            self.lengths = lengths
            self.loss_fn = loss_fn
            self.sampler_seed = sampler_seed

        def _get_train_sampler(self, train_dataset=None):
            if self.lengths is None:
                return super()._get_train_sampler(train_dataset)
            return LengthGroupedSampler(self.lengths, self.args.per_device_train_batch_size, self.sampler_seed)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if self.loss_fn is None:
                return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                            num_items_in_batch=num_items_in_batch)
            res = self.loss_fn(model, inputs, num_items_in_batch)
            loss, outputs = res if isinstance(res, tuple) else (res, None)
            return (loss, outputs) if return_outputs else loss

    return StudyTrainer


def __getattr__(name: str):
    if name == "StudyTrainer":
        return trainer_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


MIN_SHARED_PREFIX = 16  # shorter common prefixes are not worth a second forward call


def _recomputes_activations(model) -> bool:
    flag = getattr(model, "is_activation_checkpointing", None)
    if flag is None:  # transformers before v5 names it differently
        flag = getattr(model, "is_gradient_checkpointing", False)
    return bool(flag)


def batch_prefix_len(model, input_ids, attention_mask, keep) -> int:
    """How many leading tokens every row of the batch shares and :func:`logits_at` may run once
    for the whole batch; 0 where sharing does not apply.

    The shared tokens are the columns from position 0 that are equal and unpadded in every
    row, cut so that no position in ``keep`` (whose logits are wanted) falls inside them. It
    applies to batches of two or more rows whose common run is at least
    ``MIN_SHARED_PREFIX`` tokens, on models that are not recomputing activations
    (activation checkpointing would run the cache update twice).
    """
    import torch

    b, n = input_ids.shape
    if b < 2 or n < 2 or _recomputes_activations(model):
        return 0
    same = (input_ids == input_ids[:1]).all(dim=0)
    if attention_mask is not None:
        same &= attention_mask.bool().all(dim=0)
    k = int(same.to(torch.int64).cumprod(dim=0).sum())
    if keep is not None and keep.numel():
        k = min(k, int(keep.min()))
    k = min(k, n - 1)  # at least one token per row goes through the batched pass
    return k if k >= MIN_SHARED_PREFIX else 0


def logits_at(model, input_ids, attention_mask, keep):
    """Logits ``[batch, len(keep), vocab]`` at the positions ``keep`` (a 1-D index tensor).

    The language-model head runs only at ``keep``. Where the rows share a leading run of
    tokens (the system prompt and the instruction that open every conversation:
    :func:`batch_prefix_len`), that run goes through the model once, as a batch of one, and
    its key/value cache is repeated for every row before the rest of the batch is run on
    top of it: the same computation as the whole batch at once (gradients flow back
    through the cache into the shared pass), with a quarter of the prefix's work at batch
    size 4. Otherwise one plain forward call.
    """
    p = batch_prefix_len(model, input_ids, attention_mask, keep)
    if p == 0:
        return model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=keep,
                     use_cache=False).logits
    cache = prefix_cache(model, input_ids[0, :p], input_ids.shape[0])  # the prefix is unpadded in every row
    return model(input_ids=input_ids[:, p:], attention_mask=attention_mask, past_key_values=cache,
                 use_cache=True, logits_to_keep=keep - p).logits


def loss_positions(labels):
    """The positions whose logits some row needs: ``t`` where ``labels[:, t + 1]`` carries
    loss (position t predicts token t + 1), as a 1-D index tensor."""
    return (labels[:, 1:] != IGNORE_INDEX).any(dim=0).nonzero().squeeze(-1)


def target_positions_loss(model, inputs, num_items_in_batch=None):
    """Token cross-entropy computed only where a label exists.

    The language-model head (576 x 49,152 for SmolLM2) and the softmax over the vocabulary
    are run only at the positions whose next token carries loss (``logits_to_keep``), not at
    every position of the batch. With ``loss_mask: completion`` that is the assistant target,
    a fraction of each sequence, which saves a large part of a CPU training step, and the
    prompt's opening tokens that all rows share run once per batch (:func:`logits_at`); with
    ``full`` it keeps every position and equals the model's own loss. The result is the same
    sum over labelled tokens divided by their count over the accumulated batch
    (``num_items_in_batch``), as transformers' default causal-LM loss.
    """
    import torch
    import torch.nn.functional as F

    labels = inputs["labels"]
    nxt = labels[:, 1:]                                     # position t predicts token t + 1
    keep = loss_positions(labels)
    logits = logits_at(model, inputs["input_ids"], inputs.get("attention_mask"), keep)  # [batch, len(keep), vocab]
    target = nxt[:, keep]
    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), target.reshape(-1),
                           ignore_index=-100, reduction="sum")
    denom = num_items_in_batch if num_items_in_batch is not None else (target != -100).sum()
    if torch.is_tensor(denom):
        denom = denom.to(loss.device)
    return loss / denom
