"""Batched greedy generation that resumes where it stopped.

Prompts are sorted longest-first and decoded greedily, ``batch_size`` rows at a time, with
a fixed ``max_new_tokens``; when rows finish, their slots are refilled with waiting prompts
(:func:`generate_stream`), so a short answer never waits for the longest one in its batch.
The prompts' shared token prefix (system prompt: a third of a quick-profile prompt) is
computed once, and each prompt's own tokens are left-padded after it, so every prompt ends
right where generation starts. On a CPU with native bf16 the rows run on a bf16 copy of the
model: prefill and decoding are about twice as fast, and the few greedy outputs that bf16
numerics change are counted by `make bench`. Each finished item is appended to a
JSON-lines file at once, keyed by item id: an interrupted evaluation restarts with the
items it has not done yet, and nothing already generated is lost. A line records the
prompt's hash and the generation budget, so a changed prompt or budget is regenerated
instead of silently reused.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .models import device_settings


def prompt_hash(prompt: str) -> str:
    return hashlib.sha256(prompt.encode()).hexdigest()[:16]


def read_predictions(path: str | Path) -> dict[str, dict[str, Any]]:
    """The predictions already in ``path`` (id -> record). A torn last line (the process was
    killed mid-write) is ignored and will be regenerated; any other bad line is an error."""
    path = Path(path)
    out: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return out
    lines = path.read_text().splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            if n == len(lines):
                break  # interrupted while writing the last record
            raise ValueError(f"{path}:{n}: not a JSON object ({e})") from e
        out[rec["id"]] = rec
    return out


def _drop_torn_tail(path: Path) -> None:
    """Cut a last line that lacks its newline (the process died mid-write), so new records
    are appended on a line of their own."""
    if not path.exists() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


def shared_prefix_len(rows: Sequence[Sequence[int]]) -> int:
    """Length of the longest token prefix that every row shares, leaving each row at least
    one token of its own (generation needs an input token after the cached prefix)."""
    if not rows:
        return 0
    k = 0
    limit = min(len(r) for r in rows) - 1
    first = rows[0]
    while k < limit and all(r[k] == first[k] for r in rows):
        k += 1
    return k


def _prefix_len(rows: Sequence[Sequence[int]], share_prefix: bool, min_prefix: int) -> int:
    """How many leading tokens to compute once for all ``rows``: their shared prefix, or 0
    when sharing is off, there is one row, or the prefix is under ``min_prefix`` tokens."""
    k = shared_prefix_len(rows) if share_prefix and len(rows) > 1 else 0
    return k if k >= min_prefix else 0


def low_precision(model):
    """The model to generate with: a bf16 copy of an fp32 model on CPUs with native bf16
    (half the bytes per decoding step), else the model itself (on CUDA the weights are
    already bf16/fp16). The caller's model is never changed."""
    import copy

    import torch

    p = next(model.parameters())
    dev = "cuda" if p.device.type == "cuda" else "cpu"
    want = device_settings(dev)["autocast_dtype"]
    if want is None or p.dtype != torch.float32:
        return model
    return copy.deepcopy(model).to(want)


def _prefix_cache(model, prefix, batch: int):
    """KV cache of ``prefix`` (token ids: a list or a 1-D tensor) computed once and repeated
    for ``batch`` rows. Not run under ``no_grad``: in training, gradients flow back through
    the cache (:func:`helpers.sft.logits_at`)."""
    import torch

    device = next(model.parameters()).device
    ids = torch.as_tensor(prefix, dtype=torch.long, device=device).reshape(1, -1)
    out = model(input_ids=ids, use_cache=True, **_forward_kwargs(model))
    cache = out.past_key_values
    cache.batch_repeat_interleave(batch)
    return cache


def _result(tok, tokens: list[int], eos: int) -> dict[str, Any]:
    """One row's record from its generated tokens (EOS, if reached, last)."""
    finished = bool(tokens) and tokens[-1] == eos
    return {"prediction": tok.decode(tokens, skip_special_tokens=True), "n_new_tokens": len(tokens),
            "finished": finished}


def generate_batch(model, tok, prompts: Sequence[str], *, max_new_tokens: int,
                   share_prefix: bool = True, min_prefix: int = 8,
                   eos_token_id: int | None = None) -> list[dict[str, Any]]:
    """Greedy continuations of ``prompts`` as one batch.

    The token prefix all prompts share (system prompt, instruction) is run once and its KV
    cache repeated for every row; the rest of each prompt is left-padded after it, so the
    batch's input is ``[shared prefix | padding | own tokens]`` with the padding masked out
    (positions come from the attention mask: every row sees the positions it would see
    alone). ``share_prefix=False`` (or a shared prefix under ``min_prefix`` tokens) gives a
    plain left-padded batch.
    """
    return generate_rows(model, tok, [tok(p, add_special_tokens=False)["input_ids"] for p in prompts],
                         max_new_tokens=max_new_tokens, share_prefix=share_prefix, min_prefix=min_prefix,
                         eos_token_id=eos_token_id)


def generate_rows(model, tok, rows: Sequence[Sequence[int]], *, max_new_tokens: int,
                  share_prefix: bool = True, min_prefix: int = 8,
                  eos_token_id: int | None = None) -> list[dict[str, Any]]:
    """:func:`generate_batch` for prompts already tokenised (``rows``: token ids).
    ``eos_token_id``: the token that ends a row (default the tokenizer's EOS)."""
    import torch

    device = next(model.parameters()).device
    rows = [list(r) for r in rows]
    k = _prefix_len(rows, share_prefix, min_prefix)
    L = max(len(r) - k for r in rows)
    pad = tok.pad_token_id
    eos = tok.eos_token_id if eos_token_id is None else eos_token_id
    ids = torch.tensor([r[:k] + [pad] * (L - len(r) + k) + r[k:] for r in rows], device=device)
    mask = torch.tensor([[1] * k + [0] * (L - len(r) + k) + [1] * (len(r) - k) for r in rows], device=device)
    with torch.inference_mode():
        extra = {"past_key_values": _prefix_cache(model, rows[0][:k], len(rows))} if k else {}
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=pad, eos_token_id=eos, **extra)
    new = out[:, ids.shape[1]:]
    results = []
    for row in new.tolist():
        if eos in row:
            n = row.index(eos) + 1
        else:
            n = len(row)
            while n and row[n - 1] == pad:
                n -= 1
        results.append(_result(tok, row[:n], eos))
    return results


def _forward_kwargs(model) -> dict[str, Any]:
    """``logits_to_keep=1`` where the model takes it (only the last position's logits)."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(base.forward).parameters else {}


def _plain_layers(cache) -> list | None:
    """The cache's per-layer key/value holders when all are plain growing layers (the only
    kind whose rows can be dropped and joined here); None otherwise."""
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None)
    if not layers or any(type(layer) is not DynamicLayer for layer in layers):
        return None
    return list(layers)


def _left_pad(t, length: int, dim: int):
    """``t`` with zeros prepended along ``dim`` up to ``length``."""
    import torch

    short = length - t.shape[dim]
    if short <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = short
    return torch.cat([t.new_zeros(shape), t], dim=dim)


class _Running:
    """The rows being decoded: one KV cache, its attention mask, each row's next position
    and next input token, and what each row has generated so far."""

    def __init__(self):
        self.cache = None
        self.mask = None      # (rows, cache length), 1 = a real token
        self.pos = None       # (rows,) position of the next input token
        self.last = None      # (rows,) next input token
        self.index: list[int] = []
        self.tokens: list[list[int]] = []

    def __len__(self):
        return len(self.index)

    def join(self, cache, mask, last, index) -> None:
        """Add freshly prefilled rows (their cache, mask, first generated token and row
        numbers); both caches are left-padded (masked zeros) to a common length: a row's keys
        carry their rotary positions, so where the padding sits does not matter."""
        import torch

        pos, tokens = mask.sum(-1), [[t] for t in last.tolist()]
        if not self.index:
            self.cache, self.mask, self.pos, self.last = cache, mask, pos, last
            self.index, self.tokens = list(index), tokens
            return
        T = max(self.mask.shape[1], mask.shape[1])
        for mine, theirs in zip(_plain_layers(self.cache), _plain_layers(cache)):
            mine.keys = torch.cat([_left_pad(mine.keys, T, -2), _left_pad(theirs.keys, T, -2)])
            mine.values = torch.cat([_left_pad(mine.values, T, -2), _left_pad(theirs.values, T, -2)])
        self.mask = torch.cat([_left_pad(self.mask, T, 1), _left_pad(mask, T, 1)])
        self.pos = torch.cat([self.pos, pos])
        self.last = torch.cat([self.last, last])
        self.index += list(index)
        self.tokens += tokens

    def keep(self, rows: list[int]) -> None:
        """Keep only ``rows`` (positions in the batch), and drop cache columns that are
        padding for every row kept."""
        import torch

        if not rows:
            self.__init__()
            return
        sel = torch.tensor(rows, device=self.mask.device, dtype=torch.long)
        cols = self.mask.index_select(0, sel).bool().any(0)
        trim = not bool(cols.all())
        for layer in _plain_layers(self.cache):
            k, v = layer.keys.index_select(0, sel), layer.values.index_select(0, sel)
            layer.keys, layer.values = (k[:, :, cols], v[:, :, cols]) if trim else (k, v)
        self.mask = self.mask.index_select(0, sel)
        if trim:
            self.mask = self.mask[:, cols]
        self.pos, self.last = self.pos.index_select(0, sel), self.last.index_select(0, sel)
        self.index = [self.index[i] for i in rows]
        self.tokens = [self.tokens[i] for i in rows]


def generate_stream(model, tok, rows: Sequence[Sequence[int]], *, max_new_tokens: int, batch_size: int = 16,
                    share_prefix: bool = True, min_prefix: int = 8, refill_at: int | None = None,
                    eos_token_id: int | None = None):
    """Greedy continuations of tokenised prompts, decoded ``batch_size`` at a time with the
    slots of finished rows refilled: yields ``(i, result)`` as soon as row ``i`` ends (EOS
    or ``max_new_tokens``), so a short answer never waits for the longest in its batch.

    Rows enter in the order given (callers sort them longest-first). The token prefix all
    rows share is run once; a group of waiting rows is prefilled after a copy of its cache
    (``[prefix | padding | own tokens]``, positions from the mask) and joins the running
    batch whenever ``refill_at`` slots are free (default a quarter of the batch) or the batch
    has run dry. Each row sees exactly the tokens and positions it would see alone; padding
    is masked. Results: prediction, n_new_tokens (EOS included), finished (EOS reached);
    ``eos_token_id``: the token that ends a row (default the tokenizer's EOS).
    Models whose cache is not a plain growing one (sliding windows) fall back to one
    :func:`generate_rows` batch at a time.
    """
    import copy

    import torch

    rows = [list(r) for r in rows]
    if not rows:
        return
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be >= 1")
    device = next(model.parameters()).device
    kw = _forward_kwargs(model)
    k = _prefix_len(rows, share_prefix, min_prefix)
    refill_at = max(1, batch_size // 4) if refill_at is None else max(1, refill_at)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    eos = tok.eos_token_id if eos_token_id is None else eos_token_id
    # the model runs in inference mode, but the caller's code between two results does not
    with torch.inference_mode():  # the shared prefix once (or, without one, a probe of the cache's kind)
        probe = model(input_ids=torch.tensor([rows[0][:max(k, 1)]], device=device), use_cache=True, **kw)
    prefix = probe.past_key_values if k else None
    if _plain_layers(probe.past_key_values) is None:
        for s in range(0, len(rows), batch_size):
            batch = list(range(s, min(s + batch_size, len(rows))))
            res = generate_rows(model, tok, [rows[i] for i in batch], max_new_tokens=max_new_tokens,
                                share_prefix=share_prefix, min_prefix=min_prefix, eos_token_id=eos)
            yield from zip(batch, res)
        return
    run = _Running()
    queue = list(range(len(rows)))[::-1]  # pop() takes the next row

    @torch.inference_mode()
    def step() -> list[tuple[int, dict[str, Any]]]:
        """Refill free slots (one prefill) or decode one token for every running row; the
        rows that ended, with their results, leave the batch."""
        free = batch_size - len(run)
        if queue and (free >= refill_at or not len(run)):
            new = [queue.pop() for _ in range(min(free, len(queue)))]
            own = [rows[i][k:] for i in new]
            L = max(len(o) for o in own)
            ids = torch.tensor([[pad] * (L - len(o)) + o for o in own], device=device)
            mask = torch.tensor([[1] * k + [0] * (L - len(o)) + [1] * len(o) for o in own], device=device)
            pos = (mask.cumsum(-1) - 1).clamp(min=0)[:, k:]
            cache = None
            if k:
                cache = copy.deepcopy(prefix)
                cache.batch_repeat_interleave(len(new))
            out = model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache,
                        use_cache=True, **kw)
            run.join(out.past_key_values, mask, out.logits[:, -1].argmax(-1), new)
        else:
            run.mask = torch.cat([run.mask, run.mask.new_ones(len(run), 1)], 1)
            out = model(input_ids=run.last[:, None], attention_mask=run.mask, position_ids=run.pos[:, None],
                        past_key_values=run.cache, use_cache=True, **kw)
            run.cache = out.past_key_values
            run.last = out.logits[:, -1].argmax(-1)
            run.pos = run.pos + 1
            for toks, t in zip(run.tokens, run.last.tolist()):
                toks.append(t)
        done = [j for j, toks in enumerate(run.tokens) if toks[-1] == eos or len(toks) >= max_new_tokens]
        ended = [(run.index[j], _result(tok, run.tokens[j], eos)) for j in done]
        if done:
            gone = set(done)
            run.keep([j for j in range(len(run)) if j not in gone])
        return ended

    while queue or len(run):
        yield from step()


def generate_predictions(model, tok, items: Iterable[Mapping[str, str]], out_path: str | Path, *,
                         max_new_tokens: int, batch_size: int = 8, progress: bool = True,
                         desc: str = "generate", bf16: bool = True,
                         share_prefix: bool = True) -> list[dict[str, Any]]:
    """Generate for every ``{"id", "prompt"}`` item not yet in ``out_path`` and return the
    records of all items, in the order given.

    Items enter longest-first (similar lengths run together: little padding, and the memory
    peak comes first) into :func:`generate_stream`'s ``batch_size`` slots, which are refilled
    as items finish; each record is appended the moment its item ends. ``bf16``: generate
    with :func:`low_precision` (a bf16 copy on CPUs with native bf16); ``share_prefix``: see
    :func:`generate_stream`. Records: id, prediction, prompt_hash, max_new_tokens,
    n_new_tokens, finished (EOS reached), seconds (wall time since the previous record, so
    a run's records sum to its generation time).
    """
    import torch
    from tqdm.auto import tqdm

    items = list(items)
    ids = [it["id"] for it in items]
    if len(set(ids)) != len(ids):
        raise ValueError("item ids must be unique")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    _drop_torn_tail(out_path)
    have = read_predictions(out_path)
    todo = [it for it in items
            if not (it["id"] in have and have[it["id"]].get("prompt_hash") == prompt_hash(it["prompt"])
                    and have[it["id"]].get("max_new_tokens") == max_new_tokens)]
    if todo:
        if os.environ.get("OMP_NUM_THREADS") is None and not torch.cuda.is_available():
            torch.set_num_threads(os.cpu_count() or 1)
        rows = [tok(it["prompt"], add_special_tokens=False)["input_ids"] for it in todo]
        order = sorted(range(len(todo)), key=lambda i: -len(rows[i]))
        gen_model = low_precision(model) if bf16 else model
        gen_model.eval()
        bar = tqdm(total=len(todo), desc=desc, disable=not progress)
        with open(out_path, "a") as f:
            t0 = time.perf_counter()
            for j, r in generate_stream(gen_model, tok, [rows[i] for i in order], max_new_tokens=max_new_tokens,
                                        batch_size=batch_size, share_prefix=share_prefix):
                it = todo[order[j]]
                t1 = time.perf_counter()
                rec = {"id": it["id"], **r, "prompt_hash": prompt_hash(it["prompt"]),
                       "max_new_tokens": max_new_tokens, "seconds": round(t1 - t0, 4)}
                t0 = t1
                f.write(json.dumps(rec) + "\n")
                f.flush()
                have[it["id"]] = rec
                bar.update(1)
        bar.close()
    return [have[i] for i in ids]
