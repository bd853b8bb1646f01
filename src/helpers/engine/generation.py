"""The fast generation engine (``engine: fast``): greedy decoding that gives the same tokens
as ``model.generate`` one prompt at a time, with less work on a CPU.

- The prompts' shared token prefix (the system prompt: a third of a quick-profile prompt) is
  computed once and its KV cache repeated for every row (:func:`prefix_cache`); each prompt's
  own tokens are left-padded after it (``[shared prefix | padding | own tokens]``), positions
  come from the attention mask, so every row sees the positions it would see alone.
- :func:`generate_stream` refills the slots of finished rows with waiting prompts, prefilled
  in groups of similar length (:func:`length_groups`, a dynamic programme over the cut
  points), so a short answer never waits for the longest one in its batch.
- The running cache's layers have spare room (:func:`_roomy_layer_class`, a subclass of
  transformers' ``DynamicLayer``): a decoding step writes one column in place instead of
  copying the cache.
- On a CPU with native bf16, :func:`low_precision` gives a bf16 copy of the model whose
  one-token decoding steps run a registered attention (:func:`_decode_attention`: two small
  matrix products instead of SDPA's kernel); the few greedy outputs bf16 numerics change are
  counted by `make bench`.

These pieces reach into transformers' cache and attention internals (``DynamicLayer``,
``AttentionInterface``, ``masking_utils``); the study's plain path is
:func:`helpers.generate.generate_plain` (batched ``model.generate``), and
``tests/test_engine.py`` checks that both give the same greedy outputs.
"""
from __future__ import annotations

from typing import Any, Sequence

from ..models import device_settings

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
    lp = copy.deepcopy(model).to(want)
    if dev == "cpu":
        base = lp.get_base_model() if hasattr(lp, "get_base_model") else lp
        if base.config._attn_implementation == "sdpa":
            base.set_attn_implementation(_decode_attention())
    return lp


DECODE_ATTENTION = "sdpa_matmul_decode"


def _decode_attention() -> str:
    """Register (once) and name an attention that is SDPA except for one-token queries
    (decoding), which run as two small matrix products over the grouped key/value heads:
    on a CPU, SDPA's flash kernel takes about 1 ms per layer for a 32-row decoding step that
    the two products do in a third of it. Scores are softmaxed in fp32; masks are SDPA's."""
    import torch
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    if DECODE_ATTENTION in AttentionInterface._global_mapping:
        return DECODE_ATTENTION

    def attend(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
        B, H, q_len, D = query.shape
        if q_len != 1 or dropout or kwargs.get("softcap") is not None or kwargs.get("position_bias") is not None \
                or kwargs.get("output_attentions") or key.shape[-1] != value.shape[-1] or H % key.shape[1]:
            return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                          scaling=scaling, **kwargs)
        kv = key.shape[1]
        q = query.reshape(B, kv, H // kv, D)  # head h uses key/value head h // (H // kv)
        # keys times queries, not queries times transposed keys: the keys are a view into a
        # buffer with spare room, and the transposed product would copy them first
        scores = torch.matmul(key, q.transpose(-1, -2)).transpose(-1, -2).float()
        scores = scores * (D ** -0.5 if scaling is None else scaling)
        if attention_mask is not None:  # (B, 1, 1, L): True / 0.0 where a row may attend
            scores = scores.masked_fill(~attention_mask, float("-inf")) if attention_mask.dtype == torch.bool \
                else scores + attention_mask.float()
        out = torch.matmul(scores.softmax(-1).to(value.dtype), value)  # (B, kv, H // kv, D)
        return out.reshape(B, 1, H, D), None

    AttentionInterface.register(DECODE_ATTENTION, attend)
    AttentionMaskInterface.register(DECODE_ATTENTION, sdpa_mask)
    return DECODE_ATTENTION



def prefix_cache(model, prefix, batch: int):
    """KV cache of ``prefix`` (token ids: a list or a 1-D tensor) computed once and repeated
    for ``batch`` rows. Not run under ``no_grad``: in training, gradients flow back through
    the cache (:func:`helpers.engine.training.logits_at`)."""
    import torch

    device = next(model.parameters()).device
    ids = torch.as_tensor(prefix, dtype=torch.long, device=device).reshape(1, -1)
    out = model(input_ids=ids, use_cache=True, **_forward_kwargs(model))
    cache = out.past_key_values
    cache.batch_repeat_interleave(batch)
    return cache


def result_record(tok, tokens: list[int], eos: int) -> dict[str, Any]:
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
        extra = {"past_key_values": prefix_cache(model, rows[0][:k], len(rows))} if k else {}
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
        results.append(result_record(tok, row[:n], eos))
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
    if not layers or any(type(layer) not in (DynamicLayer, _roomy_layer_class()) for layer in layers):
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


ROOM = 64  # spare cache columns a running batch keeps for the tokens still to come
TRIM = 0.125  # share of cache columns that are padding for every row at which they are cut out

_ROOMY = None


def _roomy_layer_class():
    """:class:`transformers.cache_utils.DynamicLayer` with spare room (defined on first use, so
    importing this module does not import transformers)."""
    global _ROOMY
    if _ROOMY is not None:
        return _ROOMY
    import torch
    from transformers.cache_utils import DynamicLayer

    class RoomyLayer(DynamicLayer):
        """A growing key/value layer whose ``keys`` and ``values`` are views into buffers with
        spare columns: a decoding step writes its new column in place, where the plain layer
        copies the whole cache (``torch.cat``) at every token; a finished row is dropped by
        moving one row into its slot (:meth:`move_rows`). Built from groups of rows, each
        left-padded with zeros to ``length`` columns. ``keys``/``values`` may still be
        assigned from outside: the next update then moves them into fresh buffers."""

        def __init__(self, keys: list, values: list, length: int, room: int = ROOM):
            super().__init__()
            self.dtype, self.device, self.is_initialized, self.room = keys[0].dtype, keys[0].device, True, room
            self._k, self._v = (self._stack(parts, length) for parts in (keys, values))
            self._show(self._k.shape[0], length)

        def _stack(self, parts: list, length: int):
            first = parts[0]
            buf = first.new_zeros(sum(p.shape[0] for p in parts), *first.shape[1:-2], length + self.room,
                                  first.shape[-1])
            r = 0
            for p in parts:
                buf[r:r + p.shape[0], ..., length - p.shape[-2]:length, :] = p
                r += p.shape[0]
            return buf

        def _show(self, rows: int, n: int) -> None:
            self.keys, self.values = self._view = (self._k[:rows, ..., :n, :], self._v[:rows, ..., :n, :])

        def update(self, key_states, value_states, *args, **kwargs):
            n, m = self.keys.shape[-2], key_states.shape[-2]
            if self._view[0] is not self.keys or self._view[1] is not self.values or n + m > self._k.shape[-2]:
                self.room = max(self.room, m)
                self._k, self._v = self._stack([self.keys], n), self._stack([self.values], n)
            rows = key_states.shape[0]
            self._k[:rows, ..., n:n + m, :], self._v[:rows, ..., n:n + m, :] = key_states, value_states
            self._show(rows, n + m)
            return self.keys, self.values

        def move_rows(self, dst: list[int], src: list[int], rows: int, cols=None) -> None:
            """Copy rows ``src`` into slots ``dst`` and keep the first ``rows``; with ``cols``
            (a boolean mask over the columns), keep only those columns (a full copy)."""
            n = self.keys.shape[-2]
            if dst:
                d, s_ = torch.tensor(dst, device=self.device), torch.tensor(src, device=self.device)
                self._k[d, ..., :n, :], self._v[d, ..., :n, :] = self._k[s_, ..., :n, :], self._v[s_, ..., :n, :]
            self._show(rows, n)
            if cols is not None:
                n = int(cols.sum())
                self._k = self._stack([self.keys[..., cols, :]], n)
                self._v = self._stack([self.values[..., cols, :]], n)
                self._show(rows, n)

    _ROOMY = RoomyLayer
    return _ROOMY


PREFILL_CALL = 64  # a separate prefill call is worth this many padded token slots


def length_groups(lengths: Sequence[int], per_call: int = PREFILL_CALL) -> list[tuple[int, int]]:
    """Split prompts sorted longest-first into consecutive groups ``[a, b)``, each prefilled as
    one left-padded batch, so that padded slots (a group's size times its longest prompt) plus
    ``per_call`` per group are fewest (dynamic programming over the cut points). One long
    prompt no longer pads every other row of its batch to its length."""
    n = len(lengths)
    if any(lengths[i] < lengths[i + 1] for i in range(n - 1)):
        raise ValueError("lengths must be sorted longest-first")
    best, cut = [0] + [None] * n, [0] * (n + 1)
    for b in range(1, n + 1):
        for a in range(b):
            cost = best[a] + (b - a) * lengths[a] + per_call
            if best[b] is None or cost < best[b]:
                best[b], cut[b] = cost, a
    groups, b = [], n
    while b:
        groups.append((cut[b], b))
        b = cut[b]
    return groups[::-1]


class _Running:
    """The rows being decoded: one KV cache (its layers have room to grow, so a step does not
    copy it), its attention mask, each row's next position and next input token, and what
    each row has generated so far."""

    def __init__(self):
        self.cache = None
        self.mask = None      # (rows, cache length), 1 = a real token
        self.pos = None       # (rows,) position of the next input token
        self.last = None      # (rows,) next input token
        self.index: list[int] = []
        self.tokens: list[list[int]] = []

    def __len__(self):
        return len(self.index)

    def join(self, parts) -> None:
        """Add freshly prefilled groups of rows (each: its cache, mask, first generated tokens
        and row numbers) in one copy; all caches are left-padded (masked zeros) to a common
        length: a row's keys carry their rotary positions, so where the padding sits does not
        matter."""
        import torch

        caches, masks, lasts = ([part[j] for part in parts] for j in range(3))
        pos = [m.sum(-1) for m in masks]
        if self.index:  # the running rows stay first
            caches, masks = [self.cache] + caches, [self.mask] + masks
            lasts, pos = [self.last] + lasts, [self.pos] + pos
        T = max(m.shape[1] for m in masks)
        Roomy = _roomy_layer_class()
        self.cache = caches[0]
        self.cache.layers = [Roomy([layer.keys for layer in group], [layer.values for layer in group], T)
                             for group in zip(*(_plain_layers(c) for c in caches))]
        self.mask = torch.cat([_left_pad(m, T, 1) for m in masks])
        self.pos, self.last = torch.cat(pos), torch.cat(lasts)
        for _, _, last, index in parts:
            self.index += list(index)
            self.tokens += [[t] for t in last.tolist()]

    def keep(self, rows: list[int]) -> None:
        """Keep only ``rows`` (positions in the batch): the last rows kept move into the
        slots of the rows dropped (row order does not matter), so only as many rows are
        copied as were dropped. Cache columns that are padding for every row kept are cut out
        once they are a ``TRIM`` share of the cache (that copies it whole)."""
        import torch

        if not rows:
            self.__init__()
            return
        n = len(rows)
        kept = set(rows)
        holes = [j for j in range(n) if j not in kept]
        movers = [j for j in rows if j >= n]
        order = list(range(n))
        for h, m in zip(holes, movers):
            order[h] = m
        sel = torch.tensor(order, device=self.mask.device, dtype=torch.long)
        self.mask = self.mask.index_select(0, sel)
        cols = self.mask.bool().any(0)
        trim = int((~cols).sum()) >= TRIM * cols.numel()
        for layer in _plain_layers(self.cache):
            layer.move_rows(holes, movers, n, cols if trim else None)
        if trim:
            self.mask = self.mask[:, cols]
        self.pos, self.last = self.pos.index_select(0, sel), self.last.index_select(0, sel)
        self.index = [self.index[i] for i in order]
        self.tokens = [self.tokens[i] for i in order]


def generate_stream(model, tok, rows: Sequence[Sequence[int]], *, max_new_tokens: int, batch_size: int = 16,
                    share_prefix: bool = True, min_prefix: int = 8, refill_at: int | None = None,
                    eos_token_id: int | None = None, prefill_call: int = PREFILL_CALL):
    """Greedy continuations of tokenised prompts, decoded ``batch_size`` at a time with the
    slots of finished rows refilled: yields ``(i, result)`` as soon as row ``i`` ends (EOS
    or ``max_new_tokens``), so a short answer never waits for the longest in its batch.

    Rows enter in the order given (callers sort them longest-first). The token prefix all
    rows share is run once. Whenever ``refill_at`` slots are free (default a quarter of the
    batch) or the batch has run dry, waiting rows fill them: they are prefilled after copies
    of the prefix's cache (``[prefix | padding | own tokens]``, positions from the mask) in
    groups of similar length (:func:`length_groups`, ``prefill_call``), and all groups join
    the running batch in one copy. The running cache has room to grow, so a decoding step
    writes one column instead of copying the cache. Each row sees exactly the tokens and
    positions it would see alone; padding is masked. Results: prediction, n_new_tokens (EOS
    included), finished (EOS reached);
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
            new = sorted((queue.pop() for _ in range(min(free, len(queue)))), key=lambda i: -len(rows[i]))
            parts = []
            for a, b in length_groups([len(rows[i]) - k for i in new], prefill_call):
                own = [rows[i][k:] for i in new[a:b]]
                L = max(len(o) for o in own)
                ids = torch.tensor([[pad] * (L - len(o)) + o for o in own], device=device)
                mask = torch.tensor([[1] * k + [0] * (L - len(o)) + [1] * len(o) for o in own], device=device)
                pos = (mask.cumsum(-1) - 1).clamp(min=0)[:, k:]
                cache = None
                if k:
                    cache = copy.deepcopy(prefix)
                    cache.batch_repeat_interleave(len(own))
                out = model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache,
                            use_cache=True, **kw)
                parts.append((out.past_key_values, mask, out.logits[:, -1].argmax(-1), new[a:b]))
            run.join(parts)
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
        ended = [(run.index[j], result_record(tok, run.tokens[j], eos)) for j in done]
        if done:
            gone = set(done)
            run.keep([j for j in range(len(run)) if j not in gone])
        return ended

    while queue or len(run):
        yield from step()
