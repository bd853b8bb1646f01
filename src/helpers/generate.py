"""Greedy generation for the evaluation, written to a predictions file that resumes.

The plain path (``engine: plain``) is :func:`generate_plain`: prompts sorted longest-first,
``batch_size`` at a time, left-padded, one ``model.generate`` call per batch (greedy, a fixed
``max_new_tokens``). The default ``engine: fast`` gives the same greedy outputs with the CPU
speed work of :mod:`helpers.engine.generation` (shared prefix computed once, slots of finished
rows refilled, a bf16 copy on CPUs with native bf16). Each finished item is appended to a
JSON-lines file at once, keyed by item id: an interrupted evaluation restarts with the items
it has not done yet, and nothing already generated is lost. A line records the prompt's hash
and the generation budget, so a changed prompt or budget is regenerated instead of silently
reused.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from .engine import DEFAULT as DEFAULT_ENGINE, choice as engine_choice
from .engine.generation import result_record


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


def generate_plain(model, tok, rows: Sequence[Sequence[int]], *, max_new_tokens: int, batch_size: int = 16,
                   eos_token_id: int | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """Greedy continuations of tokenised prompts, the straightforward way: ``batch_size`` rows
    at a time in the order given, left-padded to the batch's longest, one ``model.generate``
    call per batch. Yields ``(i, result)`` for row ``i``: prediction (decoded without special
    tokens), n_new_tokens (EOS included), finished (EOS reached). ``eos_token_id``: the
    token that ends a row (default the tokenizer's EOS)."""
    import torch

    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be >= 1")
    device = next(model.parameters()).device
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    eos = tok.eos_token_id if eos_token_id is None else eos_token_id
    for s in range(0, len(rows), batch_size):
        batch = [list(r) for r in rows[s:s + batch_size]]
        L = max(len(r) for r in batch)
        ids = torch.tensor([[pad] * (L - len(r)) + r for r in batch], device=device)
        mask = torch.tensor([[0] * (L - len(r)) + [1] * len(r) for r in batch], device=device)
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=pad, eos_token_id=eos)
        for j, row in enumerate(out[:, L:].tolist()):
            n = row.index(eos) + 1 if eos in row else len(row)  # after EOS: padding
            yield s + j, result_record(tok, row[:n], eos)


def generate_predictions(model, tok, items: Iterable[Mapping[str, str]], out_path: str | Path, *,
                         max_new_tokens: int, batch_size: int = 8, progress: bool = True,
                         desc: str = "generate", bf16: bool = True,
                         share_prefix: bool = True, engine: str = DEFAULT_ENGINE) -> list[dict[str, Any]]:
    """Generate for every ``{"id", "prompt"}`` item not yet in ``out_path`` and return the
    records of all items, in the order given.

    Items enter longest-first (similar lengths run together: little padding, and the memory
    peak comes first), ``batch_size`` at a time; each record is appended the moment its item
    ends. ``engine``: ``plain`` (:func:`generate_plain`, the model as it is) or ``fast``
    (:func:`helpers.engine.generation.generate_stream`, whose ``batch_size`` slots are
    refilled as items finish; ``bf16``: generate with
    :func:`~helpers.engine.generation.low_precision`, a bf16 copy on CPUs with native bf16;
    ``share_prefix``: compute the prompts' shared opening once). Records: id, prediction,
    prompt_hash, max_new_tokens, n_new_tokens, finished (EOS reached): the same bytes for the
    same work. Wall times live beside them, in ``timings.json`` of the same folder
    (:func:`timings_path`: ``seconds`` per id since the previous record, so a run's records
    sum to its generation time). ``progress``: lines headed ``desc`` with the items done, new
    tokens per second and ETA, about every 30 s or tenth of the items (:mod:`helpers.progress`),
    and a widget bar in a notebook.
    """
    import torch

    from .progress import Progress

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
        rows = [rows[i] for i in order]
        if engine_choice({"engine": engine}) == "fast":
            from .engine.generation import generate_stream, low_precision

            gen_model = low_precision(model) if bf16 else model
            gen_model.eval()
            stream = generate_stream(gen_model, tok, rows, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                     share_prefix=share_prefix)
        else:
            model.eval()
            stream = generate_plain(model, tok, rows, max_new_tokens=max_new_tokens, batch_size=batch_size)
        bar = Progress(len(todo), f"generate {desc}", unit="item", rate_label="new tok/s",
                       enabled=progress)
        new_tokens = 0
        seconds: dict[str, float] = {}
        with open(out_path, "a") as f:
            t0 = time.perf_counter()
            for j, r in stream:
                it = todo[order[j]]
                t1 = time.perf_counter()
                rec = {"id": it["id"], **r, "prompt_hash": prompt_hash(it["prompt"]),
                       "max_new_tokens": max_new_tokens}
                seconds[it["id"]] = round(t1 - t0, 4)
                t0 = t1
                f.write(json.dumps(rec) + "\n")
                f.flush()
                have[it["id"]] = rec
                new_tokens += int(r.get("n_new_tokens", 0))
                bar.update(bar.done + 1, tokens=new_tokens)
        bar.close()
        _add_timings(timings_path(out_path), seconds)
    return [have[i] for i in ids]


def timings_path(predictions_path: str | Path) -> Path:
    """Where the wall times of ``predictions_path``'s records go: ``timings.json`` beside it
    (kept out of the predictions, so identical work gives identical predictions)."""
    return Path(predictions_path).with_name("timings.json")


def _add_timings(path: Path, seconds: dict[str, float]) -> None:
    old = {}
    if path.exists():
        try:
            old = json.loads(path.read_text()).get("seconds", {})
        except (OSError, ValueError):
            old = {}
    allsec = {**old, **seconds}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"seconds": allsec, "total_s": round(sum(allsec.values()), 4)}, indent=2) + "\n")
    os.replace(tmp, path)
