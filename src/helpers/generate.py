"""Batched greedy generation that resumes where it stopped.

Prompts are sorted by length and generated in batches, greedily, with a fixed
``max_new_tokens``. Within a batch the prompts' shared token prefix (system prompt and
instruction: a third of a quick-profile prompt) is computed once, and each prompt's own
tokens are left-padded after it, so every prompt ends right where generation starts. On a
CPU with native bf16 the batches run on a bf16 copy of the model: decoding reads half the
bytes, and the few greedy outputs that bf16 numerics change are counted by `make bench`.
Each finished
item is appended to a JSON-lines file at once, keyed by item id: an interrupted evaluation
restarts with the items it has not done yet, and nothing already generated is lost. A line
records the prompt's hash and the generation budget, so a changed prompt or budget is
regenerated instead of silently reused.
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


def _prefix_cache(model, prefix: Sequence[int], batch: int):
    """KV cache of ``prefix`` computed once and repeated for ``batch`` rows."""
    import inspect

    import torch

    device = next(model.parameters()).device
    kw = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    out = model(input_ids=torch.tensor([list(prefix)], device=device), use_cache=True, **kw)
    cache = out.past_key_values
    cache.batch_repeat_interleave(batch)
    return cache


def generate_batch(model, tok, prompts: Sequence[str], *, max_new_tokens: int,
                   share_prefix: bool = True, min_prefix: int = 8) -> list[dict[str, Any]]:
    """Greedy continuations of ``prompts`` as one batch.

    The token prefix all prompts share (system prompt, instruction) is run once and its KV
    cache repeated for every row; the rest of each prompt is left-padded after it, so the
    batch's input is ``[shared prefix | padding | own tokens]`` with the padding masked out
    (positions come from the attention mask: every row sees the positions it would see
    alone). ``share_prefix=False`` (or a shared prefix under ``min_prefix`` tokens) gives a
    plain left-padded batch.
    """
    return generate_rows(model, tok, [tok(p, add_special_tokens=False)["input_ids"] for p in prompts],
                         max_new_tokens=max_new_tokens, share_prefix=share_prefix, min_prefix=min_prefix)


def generate_rows(model, tok, rows: Sequence[Sequence[int]], *, max_new_tokens: int,
                  share_prefix: bool = True, min_prefix: int = 8) -> list[dict[str, Any]]:
    """:func:`generate_batch` for prompts already tokenised (``rows``: token ids)."""
    import torch

    device = next(model.parameters()).device
    rows = [list(r) for r in rows]
    k = shared_prefix_len(rows) if share_prefix and len(rows) > 1 else 0
    if k < min_prefix:
        k = 0
    L = max(len(r) - k for r in rows)
    pad = tok.pad_token_id
    ids = torch.tensor([r[:k] + [pad] * (L - len(r) + k) + r[k:] for r in rows], device=device)
    mask = torch.tensor([[1] * k + [0] * (L - len(r) + k) + [1] * (len(r) - k) for r in rows], device=device)
    with torch.inference_mode():
        extra = {"past_key_values": _prefix_cache(model, rows[0][:k], len(rows))} if k else {}
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=pad, eos_token_id=tok.eos_token_id, **extra)
    new = out[:, ids.shape[1]:]
    results = []
    for row in new.tolist():
        n = len(row)
        finished = tok.eos_token_id in row
        if finished:
            n = row.index(tok.eos_token_id) + 1
        else:
            while n and row[n - 1] == pad:
                n -= 1
        results.append({"prediction": tok.decode(row[:n], skip_special_tokens=True),
                        "n_new_tokens": n, "finished": finished})
    return results


def generate_predictions(model, tok, items: Iterable[Mapping[str, str]], out_path: str | Path, *,
                         max_new_tokens: int, batch_size: int = 8, progress: bool = True,
                         desc: str = "generate", bf16: bool = True,
                         share_prefix: bool = True) -> list[dict[str, Any]]:
    """Generate for every ``{"id", "prompt"}`` item not yet in ``out_path`` and return the
    records of all items, in the order given.

    Items are batched longest-first (similar lengths share a batch: little padding, and
    the memory peak comes first). ``bf16``: generate with :func:`low_precision` (a bf16
    copy on CPUs with native bf16); ``share_prefix``: see :func:`generate_batch`. Records:
    id, prediction, prompt_hash, max_new_tokens, n_new_tokens, finished (EOS reached),
    seconds (the batch's wall time / batch size).
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
            for s in range(0, len(order), batch_size):
                idx = order[s:s + batch_size]
                batch = [todo[i] for i in idx]
                t0 = time.perf_counter()
                res = generate_rows(gen_model, tok, [rows[i] for i in idx],
                                    max_new_tokens=max_new_tokens, share_prefix=share_prefix)
                dt = (time.perf_counter() - t0) / len(batch)
                for it, r in zip(batch, res):
                    rec = {"id": it["id"], **r, "prompt_hash": prompt_hash(it["prompt"]),
                           "max_new_tokens": max_new_tokens, "seconds": round(dt, 4)}
                    f.write(json.dumps(rec) + "\n")
                    have[it["id"]] = rec
                f.flush()
                bar.update(len(batch))
        bar.close()
    return [have[i] for i in ids]
