"""Batched greedy generation that resumes where it stopped.

Prompts are sorted by length and generated in batches with left padding (so every prompt
ends right where generation starts), greedily, with a fixed ``max_new_tokens``. Each finished
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
from contextlib import nullcontext
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


def _autocast(device: str, dtype):
    import torch

    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=dtype)


def generate_batch(model, tok, prompts: Sequence[str], *, max_new_tokens: int,
                   autocast_dtype=None) -> list[dict[str, Any]]:
    """Greedy continuations of ``prompts`` (one padded batch, left padding)."""
    import torch

    device = str(next(model.parameters()).device)
    side = tok.padding_side
    tok.padding_side = "left"
    try:
        enc = tok(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    finally:
        tok.padding_side = side
    with torch.inference_mode(), _autocast(device, autocast_dtype):
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    new = out[:, enc["input_ids"].shape[1]:]
    results = []
    for row in new.tolist():
        n = len(row)
        finished = tok.eos_token_id in row
        if finished:
            n = row.index(tok.eos_token_id) + 1
        else:
            while n and row[n - 1] == tok.pad_token_id:
                n -= 1
        results.append({"prediction": tok.decode(row[:n], skip_special_tokens=True),
                        "n_new_tokens": n, "finished": finished})
    return results


def generate_predictions(model, tok, items: Iterable[Mapping[str, str]], out_path: str | Path, *,
                         max_new_tokens: int, batch_size: int = 8, progress: bool = True,
                         desc: str = "generate", autocast: bool = True) -> list[dict[str, Any]]:
    """Generate for every ``{"id", "prompt"}`` item not yet in ``out_path`` and return the
    records of all items, in the order given.

    Items are batched longest-first (similar lengths share a batch: little padding, and
    the memory peak comes first). Records: id, prediction, prompt_hash, max_new_tokens,
    n_new_tokens, finished (EOS reached), seconds (the batch's wall time / batch size).
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
        lengths = [len(tok(it["prompt"], add_special_tokens=False)["input_ids"]) for it in todo]
        order = sorted(range(len(todo)), key=lambda i: -lengths[i])
        device = str(next(model.parameters()).device)
        ac = device_settings("cuda" if device.startswith("cuda") else "cpu")["autocast_dtype"] if autocast else None
        model.eval()
        bar = tqdm(total=len(todo), desc=desc, disable=not progress)
        with open(out_path, "a") as f:
            for s in range(0, len(order), batch_size):
                batch = [todo[i] for i in order[s:s + batch_size]]
                t0 = time.perf_counter()
                res = generate_batch(model, tok, [b["prompt"] for b in batch],
                                     max_new_tokens=max_new_tokens, autocast_dtype=ac)
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
