"""EDIT's key-step learning (KRSL) from dual traces: the study condition ``krsl``.

The ``correct`` and ``incorrect`` traces of one problem are *dual traces* (EDIT, arXiv
2405.19737; STUDY_SPEC §8): the same template and the same answer, different reasoning steps
(the classification label and the cited facts). KRSL trains on exactly the tokens where the
two differ.

Key steps
    Both assistant targets are tokenised and aligned with a token-level minimum edit distance
    (Levenshtein, unit costs, with a backtrace: :func:`align`). Tokens of the correct trace
    that the alignment substitutes or deletes are its key tokens; tokens of the incorrect
    trace that it substitutes or inserts are the incorrect trace's key tokens
    (:func:`key_masks`). Everything the alignment matches is shared template or shared
    content and is not key.

Loss (:func:`krsl_loss`)
    For one sequence with target tokens ``y`` and per-token weights ``w``::

        L(seq) = sum_t w_t * CE_t / |y|

    and the loss of a batch is the mean of ``L`` over its sequences. Correct trace: ``w = α``
    on key tokens and ``γ`` on its other target tokens; incorrect trace: ``w = β`` (< 0, it
    lowers the likelihood of the wrong step) on key tokens and 0 elsewhere. A negative weight
    is set to 0 where the token's NLL exceeds ``nll_threshold`` (the likelihood of that token
    is already low; pushing it further only destabilises training). As in EDIT, the training
    loss of a batch of pairs is the mean over the correct sequences plus the mean over the
    incorrect ones (:class:`KRSLTrainer`). EDIT's values: α = 1.0, β = −0.025, γ = 0.0,
    threshold 20 (profile keys ``krsl_alpha``, ``krsl_beta``, ``krsl_gamma``,
    ``krsl_nll_threshold``).

Training (:func:`train_krsl_run`)
    Two steps, as in EDIT: step 1 is the ``correct`` run (plain correct-trace SFT,
    :func:`helpers.sft.train_run`); step 2 continues its adapter with the KRSL loss at
    ``krsl_lr`` for ``krsl_max_steps`` steps, written as the run of condition ``krsl``.

Where the key tokens sit (the tokenisation caveat)
    The assistant text tokenised on its own need not give the tokens the model sees in the
    rendered conversation (chat templates add markup around it, and some rewrite it: Qwen3
    re-emits the ``<think>`` block). So the key steps are located on the training tokens
    themselves: each conversation is rendered with the family's chat template and split into
    ``prompt | completion | tail`` (:func:`helpers.chat.split_conversation`), the parts are
    tokenised exactly as for SFT (:func:`helpers.chat.encode_conversation`; checked to be
    identical for every pair), and the completion tokens, i.e. the assistant's rendered text
    through its end-of-turn token, are the target that is aligned. Every key token is thus a
    position of the training sequence, and the prompt tokens are the ones generation is fed.
    The completion's character offsets give the text of each token for display
    (:func:`highlight`). The end-of-turn token is identical in both traces (never key) and
    counts in ``|y|``.
"""
from __future__ import annotations

import html
import math
import warnings
from pathlib import Path
from typing import Any, Hashable, Iterable, Mapping, Sequence

import numpy as np

from . import conditions

EQUAL, SUB, DEL, INS = "equal", "sub", "del", "ins"
KRSL = "krsl"  # the condition (helpers.conditions): derives from its (correct, incorrect) trace sets
IGNORE_INDEX = -100

# The profile keys this stage adds to the keys of the SFT stage.
KRSL_KEYS = ["krsl_alpha", "krsl_beta", "krsl_gamma", "krsl_nll_threshold", "krsl_lr", "krsl_max_steps"]


# --------------------------------------------------------------------------------------
# alignment
# --------------------------------------------------------------------------------------
def _distance_matrix(a: Sequence[Hashable], b: Sequence[Hashable]) -> np.ndarray:
    """The Levenshtein DP table ``D[i, j]`` = edit distance of ``a[:i]`` and ``b[:j]``.

    Rows are computed vectorised: with ``t[j] = min(D[i-1, j] + 1, D[i-1, j-1] + cost)``,
    the insertion chain ``D[i, j] = min(t[j], D[i, j-1] + 1)`` equals
    ``j + cummin_k<=j (t[k] - k)`` (``t[0] = i``).
    """
    n, m = len(a), len(b)
    # map the symbols to integers so the comparison is one numpy operation per row
    codes: dict[Hashable, int] = {}
    ca = np.fromiter((codes.setdefault(x, len(codes)) for x in a), dtype=np.int64, count=n)
    cb = np.fromiter((codes.setdefault(x, len(codes)) for x in b), dtype=np.int64, count=m)
    D = np.empty((n + 1, m + 1), dtype=np.int32)
    D[0] = np.arange(m + 1)
    jj = np.arange(m + 1)
    for i in range(1, n + 1):
        prev = D[i - 1]
        t = np.empty(m + 1, dtype=np.int64)
        t[0] = i
        t[1:] = np.minimum(prev[1:] + 1, prev[:-1] + (cb != ca[i - 1]))
        D[i] = jj + np.minimum.accumulate(t - jj)
    return D


def align(a: Sequence[Hashable], b: Sequence[Hashable]) -> list[tuple[str, int | None, int | None]]:
    """A minimum-edit-distance alignment of ``a`` to ``b`` (unit costs), in order.

    Returns ``(op, i, j)`` triples: ``("equal", i, j)`` (``a[i] == b[j]``), ``("sub", i, j)``
    (``a[i]`` replaced by ``b[j]``), ``("del", i, None)`` (``a[i]`` has no counterpart in
    ``b``), ``("ins", None, j)`` (``b[j]`` has no counterpart in ``a``). Every index of ``a``
    and of ``b`` occurs exactly once; the number of non-equal ops is the edit distance.

    Deterministic tie-breaking: a common prefix and a common suffix are matched as equal
    first (an optimal alignment always exists that does so); in between, the backtrace runs
    from the end and at each cell prefers, among the optimal moves, equal, then substitution,
    then deletion, then insertion.

    The alignment is computed here rather than taken from rapidfuzz's ``Levenshtein.editops``:
    that one is optimal too (same distance, see :func:`edit_distance`) but breaks ties the other
    way (``"ab"`` vs ``"c"``: it substitutes ``a`` and deletes ``b``), and ties decide which
    tokens are key: on the quick profile's dual pairs its masks differ from these on 38 of 128
    CoTempQA pairs (which ``19`` of two years is matched), 10 of 48 bAbI and 3 of 48 MS MARCO
    pairs, so the KRSL weights, and the runs, would change.
    """
    a, b = list(a), list(b)
    n, m = len(a), len(b)
    p = 0
    while p < n and p < m and a[p] == b[p]:
        p += 1
    s = 0
    while s < n - p and s < m - p and a[n - 1 - s] == b[m - 1 - s]:
        s += 1
    core_a, core_b = a[p:n - s], b[p:m - s]
    D = _distance_matrix(core_a, core_b)
    ops: list[tuple[str, int | None, int | None]] = []
    i, j = len(core_a), len(core_b)
    while i > 0 or j > 0:
        d = D[i, j]
        if i > 0 and j > 0:
            same = core_a[i - 1] == core_b[j - 1]
            if same and d == D[i - 1, j - 1]:
                ops.append((EQUAL, p + i - 1, p + j - 1)); i -= 1; j -= 1; continue
            if not same and d == D[i - 1, j - 1] + 1:
                ops.append((SUB, p + i - 1, p + j - 1)); i -= 1; j -= 1; continue
        if i > 0 and d == D[i - 1, j] + 1:
            ops.append((DEL, p + i - 1, None)); i -= 1; continue
        if j > 0 and d == D[i, j - 1] + 1:
            ops.append((INS, None, p + j - 1)); j -= 1; continue
        raise AssertionError(f"edit-distance backtrace stuck at ({i}, {j})")  # cannot happen
    ops.reverse()
    return ([(EQUAL, k, k) for k in range(p)] + ops
            + [(EQUAL, n - s + k, m - s + k) for k in range(s)])


def edit_distance(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """The Levenshtein distance of two token sequences (unit costs): rapidfuzz's
    ``Levenshtein.distance``, equal to the number of non-equal ops of :func:`align`. rapidfuzz
    compares the elements of a non-string sequence by their ``hash``: exact for token ids (ints
    below 2**61) and, up to 64-bit hash collisions, for token strings; :func:`align` uses ``==``."""
    from rapidfuzz.distance import Levenshtein

    return int(Levenshtein.distance(list(a), list(b)))


def key_masks(correct_ids: Sequence[Hashable], incorrect_ids: Sequence[Hashable]) -> tuple[list[bool], list[bool]]:
    """Key-token masks of a dual pair: ``mask_c[i]`` is True where the alignment substitutes
    or deletes token ``i`` of the correct trace; ``mask_i[j]`` is True where it substitutes or
    inserts token ``j`` of the incorrect trace."""
    return _masks(align(correct_ids, incorrect_ids), len(correct_ids), len(incorrect_ids))


def _masks(ops, n: int, m: int) -> tuple[list[bool], list[bool]]:
    mask_c, mask_i = [False] * n, [False] * m
    for op, i, j in ops:
        if op in (SUB, DEL):
            mask_c[i] = True
        if op in (SUB, INS):
            mask_i[j] = True
    return mask_c, mask_i


def token_weights(mask_c: Sequence[bool], mask_i: Sequence[bool], alpha: float = 1.0,
                  beta: float = -0.025, gamma: float = 0.0) -> tuple[list[float], list[float]]:
    """Per-token KRSL weights: correct trace ``alpha`` on key tokens and ``gamma`` elsewhere;
    incorrect trace ``beta`` on key tokens and 0 elsewhere. ``beta`` must be <= 0 (it pushes
    the wrong step's likelihood down; 0 switches that part off)."""
    if beta > 0:
        raise ValueError(f"krsl_beta={beta}: the weight on the incorrect trace's key tokens must be <= 0")
    alpha, beta, gamma = float(alpha), float(beta), float(gamma)
    return ([alpha if k else gamma for k in mask_c], [beta if k else 0.0 for k in mask_i])


def key_token_share(masks: Iterable[Sequence[bool]]) -> dict[str, float]:
    """How many of the target tokens are key tokens, pooled over ``masks`` (one mask per
    sequence): ``{"n_sequences", "n_tokens", "n_key", "share"}`` (``share`` NaN when empty)."""
    n_seq = n_tok = n_key = 0
    for m in masks:
        n_seq += 1
        n_tok += len(m)
        n_key += int(sum(bool(x) for x in m))
    return {"n_sequences": n_seq, "n_tokens": n_tok, "n_key": n_key,
            "share": n_key / n_tok if n_tok else float("nan")}


def pair_stats(pairs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Key-token shares of the pairs made by :func:`build_pairs`: of the correct traces
    (the number EDIT reports, ≈ 4.7% for free-form CoT), the incorrect traces and both, plus
    the mean token edit distance and how many pairs have no key token at all."""
    mc = [p["key_mask_c"] for p in pairs]
    mi = [p["key_mask_i"] for p in pairs]
    both = key_token_share(mc + mi)
    return {
        "n_pairs": len(pairs),
        "correct": key_token_share(mc),
        "incorrect": key_token_share(mi),
        "both": both,
        "key_share_correct": key_token_share(mc)["share"],
        "key_share_incorrect": key_token_share(mi)["share"],
        "key_share": both["share"],
        "mean_edit_distance": float(np.mean([p["edit_distance"] for p in pairs])) if pairs else float("nan"),
        "n_pairs_without_key_tokens": int(sum(not any(p["key_mask_c"]) and not any(p["key_mask_i"])
                                              for p in pairs)),
    }


# --------------------------------------------------------------------------------------
# showing key steps
# --------------------------------------------------------------------------------------
def highlight(tokens: Sequence[str], mask: Sequence[bool], fmt: str = "html",
              color: str = "#ffd54f") -> str:
    """The token pieces joined, key tokens marked: ``fmt="html"`` wraps each run of key tokens
    in ``<mark>`` (HTML-escaped, whitespace preserved; shows in a notebook via
    ``IPython.display.HTML`` and in Markdown cells); ``fmt="text"`` brackets them with
    ``⟦…⟧`` for plain printing."""
    if len(tokens) != len(mask):
        raise ValueError(f"highlight: {len(tokens)} tokens but a mask of {len(mask)}")
    if fmt not in ("html", "text"):
        raise ValueError(f"highlight: fmt must be 'html' or 'text', not {fmt!r}")
    out: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if not run:
            return
        text = "".join(run)
        if fmt == "html":
            out.append(f'<mark style="background:{color}">{html.escape(text)}</mark>')
        else:
            out.append(f"⟦{text}⟧")
        run.clear()

    for piece, key in zip(tokens, mask):
        if key:
            run.append(piece)
            continue
        flush()
        out.append(html.escape(piece) if fmt == "html" else piece)
    flush()
    body = "".join(out)
    if fmt == "html":
        return f'<span style="white-space:pre-wrap;font-family:monospace">{body}</span>'
    return body


def highlight_pair(pair: Mapping[str, Any], fmt: str = "html") -> str:
    """Both traces of one pair (from :func:`build_pairs`) with their key tokens marked."""
    c = highlight(pair["tokens_c"], pair["key_mask_c"], fmt=fmt)
    i = highlight(pair["tokens_i"], pair["key_mask_i"], fmt=fmt, color="#ef9a9a")
    if fmt == "html":
        return (f"<div><b>{html.escape(str(pair['id']))}</b> (edit distance {pair['edit_distance']})"
                f"<br><i>correct</i>: {c}<br><i>incorrect</i>: {i}</div>")
    return f"{pair['id']} (edit distance {pair['edit_distance']})\n  correct:   {c}\n  incorrect: {i}"


# --------------------------------------------------------------------------------------
# the loss
# --------------------------------------------------------------------------------------
def krsl_loss(logits, labels, weights, n_target, nll_threshold: float = 20.0, *,
              return_stats: bool = False):
    """The KRSL loss of a batch of sequences: ``mean_b sum_t w[b,t] * CE[b,t] / n_target[b]``.

    ``logits`` ``[B, T, V]``; ``labels`` ``[B, T]`` token ids with ``-100`` where no loss is
    taken; ``weights`` ``[B, T]`` the weight of each *label* position (the model predicts
    ``labels[:, t]`` from ``logits[:, t-1]``, so the shift happens here); ``n_target`` ``[B]``
    the number of target tokens ``|y|`` of each sequence. A negative weight is set to 0 where
    that token's NLL exceeds ``nll_threshold``. With ``return_stats`` also returns a dict
    (the per-sequence losses and how many negative weights the threshold switched off).
    """
    if logits.dim() != 3 or labels.shape != logits.shape[:2] or weights.shape != labels.shape:
        raise ValueError(f"krsl_loss: shapes logits {tuple(logits.shape)}, labels {tuple(labels.shape)}, "
                         f"weights {tuple(weights.shape)} do not fit [B, T, V] / [B, T] / [B, T]")
    return krsl_loss_at(logits[:, :-1, :], labels[:, 1:], weights[:, 1:], n_target, nll_threshold,
                        return_stats=return_stats)


def krsl_loss_at(logits, targets, weights, n_target, nll_threshold: float = 20.0, *,
                 return_stats: bool = False):
    """:func:`krsl_loss` with the shift already done: ``logits[:, j]`` predicts
    ``targets[:, j]``, whose weight is ``weights[:, j]``. The columns may be any subset of a
    sequence's positions that holds all its targets (the trainer passes only the positions
    where some row of the batch has a target)."""
    import torch
    import torch.nn.functional as F

    if logits.dim() != 3 or targets.shape != logits.shape[:2] or weights.shape != targets.shape:
        raise ValueError(f"krsl_loss: shapes logits {tuple(logits.shape)}, targets {tuple(targets.shape)}, "
                         f"weights {tuple(weights.shape)} do not fit [B, K, V] / [B, K] / [B, K]")
    n_target = torch.as_tensor(n_target, device=logits.device)
    if n_target.shape != (targets.shape[0],):
        raise ValueError(f"krsl_loss: n_target has shape {tuple(n_target.shape)}, expected ({targets.shape[0]},)")
    if bool((n_target <= 0).any()):
        raise ValueError("krsl_loss: a sequence has no target tokens (n_target <= 0)")
    y = targets
    valid = y != IGNORE_INDEX
    # cross-entropy only at the labelled positions, in fp32 (a [N, V] slice instead of the
    # whole [B, T, V] logits: most positions of a conversation are prompt)
    ce_at = F.cross_entropy(logits[valid].float(), y[valid], reduction="none")
    ce = torch.zeros(y.shape, dtype=torch.float32, device=logits.device).masked_scatter(valid, ce_at)
    w = torch.where(valid, weights.float(), torch.zeros((), device=logits.device))
    too_unlikely = (w < 0) & (ce.detach() > nll_threshold)
    w = torch.where(too_unlikely, torch.zeros((), device=logits.device), w)
    per_seq = (w * ce).sum(dim=1) / n_target.float()
    loss = per_seq.mean()
    if return_stats:
        return loss, {"per_sequence": per_seq.detach(), "n_zeroed": int(too_unlikely.sum()),
                      "n_negative": int(((weights < 0) & valid).sum())}
    return loss


# --------------------------------------------------------------------------------------
# pairs of dual traces
# --------------------------------------------------------------------------------------
def encode_conversation(tok, prompt: str, completion: str, tail: str = "") -> dict[str, Any]:
    """Token ids of one training conversation split as ``prompt | completion | tail``
    (:func:`helpers.chat.split_conversation`) and the positions of its target tokens.

    The three parts are tokenised separately and concatenated, without extra special tokens,
    exactly as :func:`helpers.chat.encode_conversation` does for SFT: the prompt tokens are
    the ones generation is fed and the completion tokens (through the end-of-turn token) are
    the ones the student produces after them. Those completion tokens are the target.
    Returns ``input_ids``, ``target_positions`` (indices of the completion tokens in
    ``input_ids``) and ``pieces`` (the text of each completion token, from the tokenizer's
    character offsets; consecutive pieces tile the completion).
    """
    if not completion:
        raise ValueError("the assistant completion is empty")
    ids_p = list(tok(prompt, add_special_tokens=False)["input_ids"])
    enc = tok(completion, add_special_tokens=False, return_offsets_mapping=True)
    ids_c = list(enc["input_ids"])
    ids_t = list(tok(tail, add_special_tokens=False)["input_ids"]) if tail else []
    pieces: list[str] = []
    prev = 0
    for s, e in enc["offset_mapping"]:
        s = max(s, prev)
        pieces.append(completion[s:e] if e > s else "")
        prev = max(prev, e)
    if prev < len(completion):  # trailing characters no offset covered
        pieces[-1] += completion[prev:]
    return {"input_ids": ids_p + ids_c + ids_t,
            "target_positions": list(range(len(ids_p), len(ids_p) + len(ids_c))),
            "pieces": pieces}


def make_pair(enc_c: Mapping[str, Any], enc_i: Mapping[str, Any], *, alpha: float, beta: float,
              gamma: float, max_length: int | None = None, id: str = "") -> dict[str, Any]:
    """One training pair from two encoded conversations (:func:`encode_conversation`): the
    key masks of the two target token sequences, their weights laid onto the positions of
    the full sequences, labels (the target tokens; ``-100`` elsewhere) and ``n_target``.

    Sequences longer than ``max_length`` are cut from the right after the key steps were
    found on the whole targets (``truncated`` says so; ``n_target`` counts the target tokens
    kept)."""
    tgt_c = [enc_c["input_ids"][k] for k in enc_c["target_positions"]]
    tgt_i = [enc_i["input_ids"][k] for k in enc_i["target_positions"]]
    ops = align(tgt_c, tgt_i)
    mask_c, mask_i = _masks(ops, len(tgt_c), len(tgt_i))
    w_c, w_i = token_weights(mask_c, mask_i, alpha, beta, gamma)
    out: dict[str, Any] = {"id": id, "edit_distance": sum(op != EQUAL for op, _, _ in ops),
                           "key_mask_c": mask_c, "key_mask_i": mask_i,
                           "tokens_c": list(enc_c["pieces"]), "tokens_i": list(enc_i["pieces"]),
                           "truncated": False}
    for side, enc, w in (("c", enc_c, w_c), ("i", enc_i, w_i)):
        ids = list(enc["input_ids"])
        labels = [IGNORE_INDEX] * len(ids)
        weights = [0.0] * len(ids)
        for k, wk in zip(enc["target_positions"], w):
            labels[k] = ids[k]
            weights[k] = wk
        if max_length is not None and len(ids) > max_length:
            ids, labels, weights = ids[:max_length], labels[:max_length], weights[:max_length]
            out["truncated"] = True
        out[f"input_ids_{side}"] = ids
        out[f"labels_{side}"] = labels
        out[f"weights_{side}"] = weights
        out[f"n_target_{side}"] = sum(lab != IGNORE_INDEX for lab in labels)
    return out


@conditions.builds("krsl_pairs")
def build_pairs(correct_df, incorrect_df, tok, family: str, model_name: str,
                max_length: int | None, *, alpha: float = 1.0, beta: float = -0.025,
                gamma: float = 0.0, return_stats: bool = False):
    """Pair the correct and incorrect trace of each problem (joined by ``id``) and encode
    both for KRSL (:func:`make_pair`), in the order of ``correct_df``.

    The two conversations of a pair must share every message but the assistant's (the same
    problem, the same prompt): a difference is an error naming the id. Problems present in
    only one of the two sets, and pairs with no target token left after truncation, are not
    trained on; they are counted (``return_stats=True`` returns ``(pairs, stats)``) and
    warned about, never dropped silently.
    """
    from . import chat, traces

    for name, df in (("correct", correct_df), ("incorrect", incorrect_df)):
        if "id" not in df.columns:
            raise ValueError(f"the {name} trace set has no 'id' column")
        dup = df["id"][df["id"].duplicated()].tolist()
        if dup:
            raise ValueError(f"the {name} trace set repeats ids {dup[:5]} ({len(dup)} repeats)")
    inc = {r["id"]: r for r in incorrect_df.to_dict("records")}
    cor_ids = set(correct_df["id"])
    stats: dict[str, Any] = {
        "n_correct_rows": len(correct_df), "n_incorrect_rows": len(incorrect_df),
        "unpaired_correct": [i for i in correct_df["id"] if i not in inc],
        "unpaired_incorrect": [i for i in incorrect_df["id"] if i not in cor_ids],
        "n_truncated": 0, "no_target_after_truncation": [],
    }
    pairs: list[dict[str, Any]] = []
    for row_c in correct_df.to_dict("records"):
        pid = row_c["id"]
        if pid not in inc:
            continue
        msgs_c = list(traces.messages(row_c, model_name))
        msgs_i = list(traces.messages(inc[pid], model_name))
        for msgs, name in ((msgs_c, "correct"), (msgs_i, "incorrect")):
            if not msgs or msgs[-1].get("role") != "assistant":
                raise ValueError(f"{pid}: the {name} conversation does not end with an assistant turn")
        if msgs_c[:-1] != msgs_i[:-1]:
            raise ValueError(f"{pid}: the correct and incorrect conversations differ before the "
                             "assistant turn; dual traces must share the prompt")
        try:
            enc_c = encode_conversation(tok, *chat.split_conversation(tok, msgs_c, family))
            enc_i = encode_conversation(tok, *chat.split_conversation(tok, msgs_i, family))
            for enc, msgs, name in ((enc_c, msgs_c, "correct"), (enc_i, msgs_i, "incorrect")):
                if enc["input_ids"] != list(chat.encode_conversation(tok, msgs, family)["input_ids"]):
                    raise ValueError(f"the {name} tokens differ from helpers.chat.encode_conversation's "
                                     "(KRSL would train on other tokens than SFT)")
        except ValueError as e:
            raise ValueError(f"{pid}: {e}") from e
        pair = make_pair(enc_c, enc_i, alpha=alpha, beta=beta, gamma=gamma, max_length=max_length, id=pid)
        stats["n_truncated"] += int(pair["truncated"])
        if pair["n_target_c"] == 0 or pair["n_target_i"] == 0:
            stats["no_target_after_truncation"].append(pid)
            continue
        pairs.append(pair)
    stats["n_pairs"] = len(pairs)
    problems = {k: len(stats[k]) for k in ("unpaired_correct", "unpaired_incorrect", "no_target_after_truncation")
                if stats[k]}
    if problems:
        warnings.warn(f"KRSL pairs: {len(pairs)} trained; not trained: {problems} "
                      "(ids in the stats of build_pairs)", stacklevel=2)
    return (pairs, stats) if return_stats else pairs


class PairDataset:
    """The pairs as a map-style dataset for the Trainer (only the tensors the collator needs)."""

    FIELDS = ("input_ids_c", "labels_c", "weights_c", "n_target_c",
              "input_ids_i", "labels_i", "weights_i", "n_target_i")

    def __init__(self, pairs: Sequence[Mapping[str, Any]]):
        self.items = [{k: p[k] for k in self.FIELDS} for p in pairs]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int) -> dict[str, Any]:
        return self.items[k]


class KRSLCollator:
    """Pads the correct and the incorrect sequences of a batch of pairs to one common length
    (right padding: pad id, label -100, weight 0, attention 0), so both go through the model
    in one forward pass."""

    def __init__(self, pad_token_id: int):
        if pad_token_id is None:
            raise ValueError("KRSLCollator needs the tokenizer's pad token id")
        self.pad_token_id = int(pad_token_id)

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        import torch

        L = max(max(len(f["input_ids_c"]), len(f["input_ids_i"])) for f in features)
        batch: dict[str, Any] = {}
        for side in ("c", "i"):
            ids, att, lab, w = [], [], [], []
            for f in features:
                n = len(f[f"input_ids_{side}"])
                pad = L - n
                ids.append(list(f[f"input_ids_{side}"]) + [self.pad_token_id] * pad)
                att.append([1] * n + [0] * pad)
                lab.append(list(f[f"labels_{side}"]) + [IGNORE_INDEX] * pad)
                w.append(list(f[f"weights_{side}"]) + [0.0] * pad)
            batch[f"input_ids_{side}"] = torch.tensor(ids, dtype=torch.long)
            batch[f"attention_mask_{side}"] = torch.tensor(att, dtype=torch.long)
            batch[f"labels_{side}"] = torch.tensor(lab, dtype=torch.long)
            batch[f"weights_{side}"] = torch.tensor(w, dtype=torch.float32)
            batch[f"n_target_{side}"] = torch.tensor([f[f"n_target_{side}"] for f in features], dtype=torch.long)
        return batch


# --------------------------------------------------------------------------------------
# the trainer
# --------------------------------------------------------------------------------------
def _trainer_class():
    """:class:`KRSLTrainer`, built on first use so importing this module needs no
    transformers."""
    if "KRSLTrainer" in globals():
        return globals()["KRSLTrainer"]
    from .engine import training

    class KRSLTrainer(training.trainer_class()):
        """The study's trainer (:func:`helpers.engine.training.trainer_class`: seeded length-grouped
        batches) with the KRSL loss over batches of dual pairs (:class:`KRSLCollator`).

        Correct and incorrect sequences go through the model in one forward pass; the loss is
        ``krsl_loss(correct) + krsl_loss(incorrect)`` (each the mean over its sequences, as in
        EDIT). It is not normalised over the accumulated batch, so the Trainer divides it by
        the gradient-accumulation steps (``loss_is_scaled_for_ga = False``). The two parts
        and the number of negative weights the NLL threshold switched off are added to the
        logged history (``krsl_loss_correct`` / ``krsl_loss_incorrect``: means since the
        previous log; ``krsl_zeroed``: the count since then), and the non-padding tokens of
        both sequences are counted in ``state.num_input_tokens_seen``.
        """

        loss_is_scaled_for_ga = False
        krsl_nll_threshold: float = 20.0

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            import torch

            b = inputs["input_ids_c"].shape[0]
            ids = torch.cat([inputs["input_ids_c"], inputs["input_ids_i"]], dim=0)
            att = torch.cat([inputs["attention_mask_c"], inputs["attention_mask_i"]], dim=0)
            # logits only where some sequence has a target (position t predicts token t + 1),
            # the opening every sequence shares run once (engine.training.logits_at; under
            # engine: plain, one forward pass over the whole batch)
            labels = torch.cat([inputs["labels_c"], inputs["labels_i"]], dim=0)
            w = torch.cat([inputs["weights_c"], inputs["weights_i"]], dim=0)
            keep = training.loss_positions(labels)
            if getattr(self, "engine", "fast") == "fast":
                logits = training.logits_at(model, ids, att, keep)
            else:
                logits = model(input_ids=ids, attention_mask=att, use_cache=False).logits[:, keep]
            y, w = labels[:, 1:][:, keep], w[:, 1:][:, keep]
            thr = float(self.krsl_nll_threshold)
            loss_c, st_c = krsl_loss_at(logits[:b], y[:b], w[:b], inputs["n_target_c"], thr, return_stats=True)
            loss_i, st_i = krsl_loss_at(logits[b:], y[b:], w[b:], inputs["n_target_i"], thr, return_stats=True)
            loss = loss_c + loss_i
            if model.training:
                acc = self.__dict__.setdefault("_krsl_acc", {"c": 0.0, "i": 0.0, "n": 0, "zeroed": 0})
                acc["c"] += float(loss_c.detach())
                acc["i"] += float(loss_i.detach())
                acc["n"] += 1
                acc["zeroed"] += st_c["n_zeroed"] + st_i["n_zeroed"]
                self.state.num_input_tokens_seen += int(att.sum())
            return (loss, {"logits": logits}) if return_outputs else loss

        def log(self, logs, *args, **kwargs):
            acc = self.__dict__.get("_krsl_acc")
            if acc and acc["n"] and "loss" in logs:
                logs = {**logs, "krsl_loss_correct": acc["c"] / acc["n"],
                        "krsl_loss_incorrect": acc["i"] / acc["n"], "krsl_zeroed": acc["zeroed"]}
                self._krsl_acc = {"c": 0.0, "i": 0.0, "n": 0, "zeroed": 0}
            return super().log(logs, *args, **kwargs)

    globals()["KRSLTrainer"] = KRSLTrainer
    return KRSLTrainer


def __getattr__(name: str):
    if name == "KRSLTrainer":
        return _trainer_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------------------
# one KRSL run
# --------------------------------------------------------------------------------------
def run_keys() -> list[str]:
    """The config keys a KRSL run's stamp covers: those of its step-1 ``correct`` run
    (:func:`helpers.sft.run_keys`) and the KRSL parameters."""
    from . import sft

    return sft.run_keys() + KRSL_KEYS


def _load_trace_set(cfg: Mapping[str, Any], dataset: str, condition: str):
    """A trace set KRSL derives from, as 03 wrote it (03 writes the sets ``krsl`` derives
    from whenever ``krsl`` is listed: :func:`helpers.traces.trained_conditions`); a missing
    file names ``make traces`` (:class:`helpers.paths.MissingInput`)."""
    from . import traces

    return traces.load_condition(cfg["profile"], dataset, condition)


def dataset_pairs(cfg: Mapping[str, Any], dataset: str, model_name: str, *, tok=None):
    """``(pairs, stats)`` of one dataset for ``model_name``'s tokenizer and chat template: the
    written ``correct`` and ``incorrect`` trace sets paired by :func:`build_pairs` with the
    profile's KRSL weights. ``stats`` holds the pairing counts and :func:`pair_stats`."""
    from . import models

    if tok is None:
        tok = models.load_tokenizer(model_name)
    cor_name, inc_name = conditions.get(KRSL).derives_from
    cor = _load_trace_set(cfg, dataset, cor_name)
    inc = _load_trace_set(cfg, dataset, inc_name)
    build = conditions.builder(KRSL)  # build_pairs
    pairs, stats = build(cor, inc, tok, models.model_family(model_name), model_name, cfg["max_length"],
                         alpha=cfg["krsl_alpha"], beta=cfg["krsl_beta"], gamma=cfg["krsl_gamma"],
                         return_stats=True)
    return pairs, {**stats, **pair_stats(pairs)}


def train_krsl_run(cfg: Mapping[str, Any], dataset: str, model_name: str, seed: int, *,
                   progress: bool = True, force: bool = False) -> Path:
    """KRSL for one (dataset, model, seed), in EDIT's two steps; returns the run folder
    ``runs/<profile>/<dataset>/<model>/krsl/seed<k>/``.

    Step 1 is the ``correct`` run (:func:`helpers.sft.train_run`, skipped when fresh). Step 2
    loads its adapter (or full model) and trains it on the dual pairs with the KRSL loss at
    ``krsl_lr`` for ``krsl_max_steps`` optimizer steps (null: the profile's ``max_steps`` /
    ``epochs`` over the pairs), with the profile's batch size, accumulation, scheduler and
    warm-up. The folder has the layout of an SFT run (``config.json``, ``adapter/`` or
    ``model/``, ``tokenizer/``, ``metrics.json`` with the key-token shares,
    ``log_history.json``, ``checkpoints/``, ``stamp.json`` last), so
    :func:`helpers.sft.load_trained` and 05_eval read it like any other run. Skipped when its
    stamp matches (:func:`run_keys`, the code, and the content of the step-1 weights and of
    both trace sets), unless
    ``force``; an interrupted run resumes from its newest checkpoint.
    """
    import time

    from . import config, models, paths, sft

    if cfg.get("krsl_lr") is None:
        raise ValueError("krsl_lr is not set in the profile")
    cor_name, inc_name = conditions.get(KRSL).derives_from
    init_rd = sft.train_run(cfg, dataset, model_name, cor_name, seed, progress=progress)
    out_name = "model" if cfg["method"] == "full" else "adapter"
    init = init_rd / out_name
    if not init.exists():
        raise FileNotFoundError(f"step 1 of KRSL (the correct run) has no {out_name}/ in {init_rd}")
    from . import traces

    rd = paths.run_dir(cfg["profile"], dataset, model_name, KRSL, seed)
    keys = run_keys()
    # what step 2 reads: the step-1 weights and both trace sets (their content is hashed)
    inputs = {f"runs/{dataset}/{model_name}/{cor_name}/seed{seed}/{out_name}": init,
              **traces.run_inputs(cfg, dataset, cor_name), **traces.run_inputs(cfg, dataset, inc_name)}
    fp = config.fingerprint(cfg, keys, stage="krsl", inputs=inputs)
    if not force and config.stamp_hash(rd) == fp["hash"] and (rd / out_name).exists():
        return rd
    rd.mkdir(parents=True, exist_ok=True)
    (rd / config.STAMP).unlink(missing_ok=True)
    run_hash = fp["hash"]
    if force and (rd / "checkpoints").exists():
        import shutil

        shutil.rmtree(rd / "checkpoints")
    resume = sft.prepare_checkpoints(rd, run_hash)

    config.seed_everything(seed)
    model, tok = sft.load_for_training(cfg, model_name, init_adapter=init)
    family = models.model_family(model_name)
    pairs, pstats = dataset_pairs(cfg, dataset, model_name, tok=tok)
    if not pairs:
        raise ValueError(f"{dataset}: no (correct, incorrect) pair to train KRSL on")
    run_info = {"dataset": dataset, "model": model_name, "family": family, "condition": KRSL,
                "seed": int(seed), "method": cfg["method"], "out": out_name, "run_hash": run_hash,
                "init_run": str(init_rd)}
    precision = models.precision_record()
    config.write_json(rd / "config.json", {**dict(cfg), "run": run_info, "precision": precision,
                                           "environment": config.environment_info()})
    lengths = [max(len(p["input_ids_c"]), len(p["input_ids_i"])) for p in pairs]
    trainer = sft.build_trainer(cfg, model, tok, PairDataset(pairs), rd, seed=seed,
                                collator=KRSLCollator(tok.pad_token_id), trainer_cls=_trainer_class(),
                                lr=float(cfg["krsl_lr"]), max_steps=cfg.get("krsl_max_steps"),
                                lengths=lengths, progress=progress, include_num_input_tokens_seen="no",
                                desc=f"krsl {dataset}/{model_name}/seed{seed}")
    trainer.krsl_nll_threshold = float(cfg["krsl_nll_threshold"])
    from .engine import choice

    trainer.engine = choice(cfg)
    start_step = 0
    if resume is not None:
        start_step = int(config.read_json(resume / "trainer_state.json").get("global_step", 0))
    t0 = time.perf_counter()
    out = trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    wall = time.perf_counter() - t0
    state = trainer.state

    hist = [dict(h) for h in state.log_history]
    logged = [h for h in hist if "loss" in h]
    last = logged[-1] if logged else {}
    share_keys = ("n_pairs", "key_share_correct", "key_share_incorrect", "key_share",
                  "mean_edit_distance", "n_pairs_without_key_tokens", "n_truncated",
                  "n_correct_rows", "n_incorrect_rows")
    metrics = {
        **run_info,
        "krsl_alpha": cfg["krsl_alpha"], "krsl_beta": cfg["krsl_beta"], "krsl_gamma": cfg["krsl_gamma"],
        "krsl_nll_threshold": cfg["krsl_nll_threshold"], "krsl_lr": cfg["krsl_lr"],
        **{k: pstats[k] for k in share_keys},
        "key_tokens_correct": pstats["correct"], "key_tokens_incorrect": pstats["incorrect"],
        "unpaired_correct": len(pstats["unpaired_correct"]),
        "unpaired_incorrect": len(pstats["unpaired_incorrect"]),
        "no_target_after_truncation": len(pstats["no_target_after_truncation"]),
        "train_loss_first": logged[0]["loss"] if logged else None,
        "train_loss_last": last.get("loss"),
        "krsl_loss_correct_last": last.get("krsl_loss_correct"),
        "krsl_loss_incorrect_last": last.get("krsl_loss_incorrect"),
        "krsl_zeroed_total": int(sum(h.get("krsl_zeroed", 0) for h in logged)),
        "train_loss_mean_session": float(out.training_loss),
        "global_step": int(state.global_step), "resumed_from_step": start_step,
        "examples": pstats["n_correct_rows"], "trained_examples": pstats["n_pairs"],
        "truncated": pstats["n_truncated"], "max_length": cfg["max_length"],
        "tokens_seen": int(state.num_input_tokens_seen), "wall_time_s": wall,
        "tokens_per_s": int(state.num_input_tokens_seen) / wall if wall > 0 else None,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "total_params": sum(p.numel() for p in model.parameters()),
        "device": precision["device"], "precision": precision["precision"], "gpu": precision["gpu"],
    }
    if not all(math.isfinite(float(h["loss"])) for h in logged):
        raise FloatingPointError(f"KRSL loss became non-finite in {rd} (log_history: {logged[-3:]})")
    return sft.save_run(rd, model, tok, out_name, hist, metrics, cfg, keys, stage="krsl",
                        inputs=inputs, run=run_info)


def run_grid(cfg: Mapping[str, Any]) -> list[tuple[str, str, int]]:
    """Every (dataset, model, seed) of the profile with a KRSL run (none unless ``krsl`` is
    one of ``conditions``)."""
    if KRSL not in cfg["conditions"]:
        return []
    return [(d, m, int(s)) for d in cfg["datasets"] for m in cfg["models"] for s in cfg["seeds"]]


def train_all(cfg: Mapping[str, Any], *, progress: bool = True, inner_progress: bool = True):
    """Train (or skip when fresh) every KRSL run of the profile; returns their metrics table.
    ``progress``: a line (and a notebook bar) per finished run; ``inner_progress``: each
    run's steps (:mod:`helpers.progress`)."""
    import pandas as pd

    from . import config, paths
    from .progress import Progress, mtime

    rows = []
    grid = run_grid(cfg)
    bar = Progress(len(grid), "KRSL runs", unit="run", rate_label="", enabled=progress,
                   interval_s=0, min_gap_s=0)
    for k, (d, m, s) in enumerate(grid, 1):
        stamp = paths.run_dir(cfg["profile"], d, m, KRSL, s) / config.STAMP
        before = mtime(stamp)
        rd = train_krsl_run(cfg, d, m, s, progress=inner_progress)
        rows.append(config.read_json(rd / "metrics.json"))
        fresh = before is not None and mtime(stamp) == before
        (bar.skip if fresh else bar.update)(k, last=f"{d}/{m}/seed{s}" + (" (fresh: skipped)" if fresh else ""))
    bar.close()
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------
# views for the notebooks
# --------------------------------------------------------------------------------------
def key_share_table(cfg: Mapping[str, Any], model_name: str | None = None):
    """Key-token shares per dataset (for the first model of the profile unless given): pairs,
    target tokens and key tokens of the correct / incorrect traces, their shares, the mean
    token edit distance. EDIT reports ≈ 4.7% of free-form CoT tokens as key."""
    import pandas as pd

    from . import models

    model_name = model_name or cfg["models"][0]
    tok = models.load_tokenizer(model_name)
    rows = []
    for d in cfg["datasets"]:
        _, st = dataset_pairs(cfg, d, model_name, tok=tok)
        rows.append({"dataset": d, "model": model_name, "pairs": st["n_pairs"],
                     "tokens_correct": st["correct"]["n_tokens"], "key_correct": st["correct"]["n_key"],
                     "key_share_correct": st["key_share_correct"],
                     "tokens_incorrect": st["incorrect"]["n_tokens"], "key_incorrect": st["incorrect"]["n_key"],
                     "key_share_incorrect": st["key_share_incorrect"], "key_share_both": st["key_share"],
                     "mean_edit_distance": st["mean_edit_distance"], "truncated": st["n_truncated"],
                     "unpaired": len(st["unpaired_correct"]) + len(st["unpaired_incorrect"])})
    return pd.DataFrame(rows)


def examples_html(pairs: Sequence[Mapping[str, Any]], n: int = 3, seed: int = 0) -> str:
    """``n`` pairs drawn with ``seed``, both traces with their key tokens marked (HTML)."""
    rng = np.random.default_rng(seed)
    pick = sorted(rng.choice(len(pairs), size=min(n, len(pairs)), replace=False).tolist()) if pairs else []
    return "<hr>".join(highlight_pair(pairs[k]) for k in pick)
