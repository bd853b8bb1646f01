"""Batched greedy generation: same outputs as one at a time, resumes, keeps what it has."""
import json

import pytest

from helpers import generate, models


@pytest.fixture(scope="module")
def tiny():
    """The tiny model with larger random weights (seeded): its greedy outputs vary from
    prompt to prompt (the stock init repeats one token), so a mix-up between rows shows."""
    import torch

    tok = models.load_tokenizer("tiny")
    m = models.load_model("tiny", tokenizer=tok).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return m, tok


def _greedy_ids(m, tok, rows, n):
    import torch

    with torch.inference_mode():
        return [m.generate(input_ids=torch.tensor([r]), max_new_tokens=n, do_sample=False,
                           eos_token_id=None, pad_token_id=tok.pad_token_id)[0, len(r):].tolist() for r in rows]


def _items(tok, n=6):
    qs = ["Where is Mary?", "Who holds the position of mayor in 2005?", "How many apples?",
          "Is John in the garden?", "What did Sandra pick up after she went to the office?", "Why?"]
    return [{"id": f"q{i}", "prompt": tok.apply_chat_template(
        [{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)} for i, q in enumerate(qs[:n])]


HEAD = "Answer the question based on the context below, and only return the answer.\n"


def _headed_rows(tok):
    """Twelve tokenised prompts that open with the same instruction, each then numbered."""
    prompts = [it["prompt"].replace("<|im_start|>user\n", "<|im_start|>user\n" + HEAD + "Q%d: " % i)
               for i, it in enumerate(_items(tok) + _items(tok))]
    return [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]


def _with_input_shapes(m, run):
    """``run()``'s result and the input shape of every forward call ``m`` made during it."""
    calls = []
    hook = m.register_forward_pre_hook(lambda mod, args, kw: calls.append(kw["input_ids"].shape), with_kwargs=True)
    try:
        return run(), calls
    finally:
        hook.remove()


def test_batched_equals_one_at_a_time(tiny, tmp_path):
    m, tok = tiny
    items = _items(tok)
    batched = generate.generate_predictions(m, tok, items, tmp_path / "p.jsonl", max_new_tokens=12,
                                            batch_size=4, progress=False, bf16=False)
    single = [generate.generate_batch(m, tok, [it["prompt"]], max_new_tokens=12)[0] for it in items]
    assert [b["prediction"] for b in batched] == [s["prediction"] for s in single]
    assert [b["id"] for b in batched] == [it["id"] for it in items]


def test_shared_prefix_is_computed_once_and_changes_nothing(tiny):
    m, tok = tiny
    prompts = [it["prompt"].replace("<|im_start|>user\n", "<|im_start|>user\n" + HEAD) for it in _items(tok)]
    rows = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    k = generate.shared_prefix_len(rows)
    assert k >= len(tok(HEAD, add_special_tokens=False)["input_ids"])
    assert all(r[:k] == rows[0][:k] for r in rows) and len({r[k] for r in rows if len(r) > k}) > 1
    shared, calls = _with_input_shapes(
        m, lambda: generate.generate_batch(m, tok, prompts, max_new_tokens=10, share_prefix=True))
    assert calls[0] == (1, k)  # the prefix, once, for the whole batch
    assert calls[1] == (len(prompts), max(len(r) for r in rows) - k)  # then only each prompt's own tokens
    plain = generate.generate_batch(m, tok, prompts, max_new_tokens=10, share_prefix=False)
    single = [generate.generate_batch(m, tok, [p], max_new_tokens=10)[0] for p in prompts]
    assert shared == plain == single


def _stop_token(m, tok, rows, n):
    """A token the greedy outputs reach at different steps: used as the stop token, rows
    then finish at different times and the decoder must refill their slots."""
    from collections import Counter

    outs = _greedy_ids(m, tok, rows, n)
    first = Counter()
    for o in outs:
        for t in set(o):
            first[t] += 1
    return max(first, key=lambda t: (len({o.index(t) for o in outs if t in o}), first[t], -t))


def test_stream_refills_slots_and_equals_one_at_a_time(tiny):
    m, tok = tiny
    rows = _headed_rows(tok)
    stop = _stop_token(m, tok, rows, 12)
    single = [generate.generate_rows(m, tok, [r], max_new_tokens=12, eos_token_id=stop)[0] for r in rows]
    assert len({s["n_new_tokens"] for s in single}) >= 3 and any(s["finished"] for s in single)
    got, calls = _with_input_shapes(m, lambda: list(generate.generate_stream(
        m, tok, rows, max_new_tokens=12, batch_size=3, refill_at=1, eos_token_id=stop)))
    assert sorted(i for i, _ in got) == list(range(len(rows)))
    assert [dict(got)[i] for i in range(len(rows))] == single
    k = generate.shared_prefix_len(rows)
    assert calls[0] == (1, k)  # the shared prefix once
    prefills = [c for c in calls[1:] if c[1] > 1]
    assert len(prefills) > 2 and sum(c[0] for c in prefills) == len(rows)  # every row prefilled once, in groups
    assert all(c[0] <= 3 for c in calls)  # never more rows than slots
    # results come out as rows end, not in batch order: the first out is the shortest of the first three
    first_three = [single[i]["n_new_tokens"] for i in range(3)]
    assert single[got[0][0]]["n_new_tokens"] == min(first_three)


def test_stream_prefills_in_length_groups_and_joins_them_at_once(tiny):
    m, tok = tiny
    rows = sorted(_headed_rows(tok), key=len, reverse=True)
    stop = _stop_token(m, tok, rows, 12)
    single = [generate.generate_rows(m, tok, [r], max_new_tokens=12, eos_token_id=stop)[0] for r in rows]
    # a call costs nothing: every distinct prompt length is a group of its own
    got, calls = _with_input_shapes(m, lambda: dict(generate.generate_stream(
        m, tok, rows, max_new_tokens=12, batch_size=6, refill_at=2, eos_token_id=stop, prefill_call=0)))
    assert [got[i] for i in range(len(rows))] == single
    runs, streak = [], 0  # consecutive prefill calls: groups of one refill
    for c in calls[1:]:
        if c[1] > 1:
            streak += 1
        elif streak:
            runs.append(streak)
            streak = 0
    assert max(runs) > 1  # a refill was split into groups, and the groups joined together
    assert sum(c[0] for c in calls[1:] if c[1] > 1) == len(rows)


def test_length_groups_are_the_cheapest_split():
    import itertools

    def cost(lengths, groups, per_call):
        return sum((b - a) * lengths[a] + per_call for a, b in groups)

    for lengths in ([9], [9, 9, 9], [40, 12, 11, 10, 10, 3], [30, 29, 20, 19, 5, 5, 4]):
        for per_call in (0, 8, 100):
            got = generate.length_groups(lengths, per_call)
            n = len(lengths)
            assert got[0][0] == 0 and got[-1][1] == n and all(a[1] == b[0] for a, b in zip(got, got[1:]))
            best = min(cost(lengths, [(a, b) for a, b in zip((0,) + cuts, cuts + (n,))], per_call)
                       for r in range(n) for cuts in itertools.combinations(range(1, n), r))
            assert cost(lengths, got, per_call) == best
    assert generate.length_groups([40, 12, 11, 10], 8) == [(0, 1), (1, 4)]  # the long one alone
    assert generate.length_groups([40, 12, 11, 10], 1000) == [(0, 4)]
    with pytest.raises(ValueError, match="longest-first"):
        generate.length_groups([3, 5])


def test_roomy_layer_grows_in_place_and_moves_rows():
    import torch
    from transformers.cache_utils import DynamicLayer

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 2, 5, 4, generator=g), torch.randn(1, 2, 3, 4, generator=g)
    layer = generate._roomy_layer_class()([a, b], [a + 1, b + 1], 5, room=4)
    plain = DynamicLayer()
    plain.update(torch.cat([a, generate._left_pad(b, 5, -2)]), torch.cat([a, generate._left_pad(b, 5, -2)]) + 1)
    plain.values[2, :, :2] = 0  # the padding is zeros, not ones
    assert torch.equal(layer.keys, plain.keys) and torch.equal(layer.values, plain.values)
    buf = layer._k.data_ptr()
    for _ in range(4):  # within its room a step writes one column in place
        new = torch.randn(3, 2, 1, 4, generator=g)
        got, exp = layer.update(new, -new), plain.update(new, -new)
        assert torch.equal(got[0], exp[0]) and torch.equal(got[1], exp[1]) and layer._k.data_ptr() == buf
    new = torch.randn(3, 2, 1, 4, generator=g)
    layer.update(new, new)
    plain.update(new, new)
    assert layer._k.data_ptr() != buf and torch.equal(layer.keys, plain.keys)  # out of room: a new buffer
    layer.move_rows([0], [2], 2)  # drop row 0: the last row moves into its slot
    assert torch.equal(layer.keys, plain.keys[[2, 1]]) and torch.equal(layer.values, plain.values[[2, 1]])
    cols = torch.ones(layer.keys.shape[-2], dtype=torch.bool)
    cols[:2] = False
    layer.move_rows([], [], 1, cols)  # keep one row, cut two columns
    assert torch.equal(layer.keys, plain.keys[[2], :, 2:]) and torch.equal(layer.values, plain.values[[2], :, 2:])
    layer.keys, layer.values = layer.keys[:, :, 1:], layer.values[:, :, 1:]  # assigned from outside
    out = layer.update(new[:1], new[:1])
    assert torch.equal(out[0], torch.cat([plain.keys[[2], :, 3:], new[:1]], -2))


def test_decode_attention_matches_sdpa(tiny):
    """One-token queries run as two matrix products over grouped heads (the tiny model has 4
    query heads on 2 key/value heads): same logits as SDPA on a padded batch, same greedy."""
    import copy

    import torch

    m, tok = tiny
    assert m.config.num_attention_heads > m.config.num_key_value_heads
    mm = copy.deepcopy(m)
    mm.set_attn_implementation(generate._decode_attention())
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(5, len(tok) - 5, (3, 9), generator=g)
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[0, :4] = mask[2, :1] = 0
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode():
        logits = []
        for model in (m, mm):
            out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
            nxt = out.logits[:, -1:].argmax(-1)
            step = model(input_ids=nxt, attention_mask=torch.cat([mask, mask[:, :1] * 0 + 1], 1),
                         position_ids=pos[:, -1:] + 1, past_key_values=out.past_key_values, use_cache=True)
            logits.append(step.logits)
    assert torch.allclose(logits[0], logits[1], atol=1e-5, rtol=1e-4)
    rows = [tok(it["prompt"], add_special_tokens=False)["input_ids"] for it in _items(tok)]
    a = list(generate.generate_stream(m, tok, rows, max_new_tokens=8, batch_size=4))
    b = list(generate.generate_stream(mm, tok, rows, max_new_tokens=8, batch_size=4))
    assert a == b


def test_stream_without_shared_prefix_and_fallback(tiny, monkeypatch):
    m, tok = tiny
    rows = [tok(it["prompt"], add_special_tokens=False)["input_ids"] for it in _items(tok)]
    stop = _stop_token(m, tok, rows, 10)
    single = [generate.generate_rows(m, tok, [r], max_new_tokens=10, eos_token_id=stop)[0] for r in rows]
    plain = dict(generate.generate_stream(m, tok, rows, max_new_tokens=10, batch_size=2, share_prefix=False,
                                          eos_token_id=stop))
    assert [plain[i] for i in range(len(rows))] == single
    # the caller's code between two results does not run in inference mode
    import torch

    g = generate.generate_stream(m, tok, rows, max_new_tokens=10, batch_size=2, eos_token_id=stop)
    next(g)
    assert not torch.is_inference_mode_enabled()
    g.close()
    # a cache whose rows cannot be joined (e.g. sliding windows): one plain batch at a time
    monkeypatch.setattr(generate, "_plain_layers", lambda cache: None)
    fb = dict(generate.generate_stream(m, tok, rows, max_new_tokens=10, batch_size=4, eos_token_id=stop))
    assert [fb[i] for i in range(len(rows))] == single
    with pytest.raises(ValueError, match="max_new_tokens"):
        list(generate.generate_stream(m, tok, rows, max_new_tokens=0))


def test_shared_prefix_len_leaves_every_row_a_token():
    assert generate.shared_prefix_len([[1, 2, 3], [1, 2, 3]]) == 2
    assert generate.shared_prefix_len([[1, 2, 3, 4], [1, 2, 5]]) == 2
    assert generate.shared_prefix_len([[7], [7, 8]]) == 0
    assert generate.shared_prefix_len([]) == 0


def test_low_precision_copy_leaves_the_model_alone(tiny):
    import torch

    m, _ = tiny
    lp = generate.low_precision(m)
    assert next(m.parameters()).dtype == torch.float32
    want = models.device_settings("cpu")["autocast_dtype"]
    assert next(lp.parameters()).dtype == (want or torch.float32)
    assert (lp is m) == (want is None)
    assert m.config._attn_implementation == "sdpa"
    if want is not None:  # the copy decodes with the two-product attention
        assert lp.config._attn_implementation == generate.DECODE_ATTENTION


def test_resumes_and_regenerates_changed_prompts(tiny, tmp_path):
    m, tok = tiny
    items = _items(tok)
    out = tmp_path / "p.jsonl"
    generate.generate_predictions(m, tok, items[:3], out, max_new_tokens=8, progress=False, bf16=False)
    first = out.read_text().splitlines()
    # a torn last line (killed mid-write) is regenerated, not fatal
    out.write_text("\n".join(first) + '\n{"id": "q9", "predic')
    res = generate.generate_predictions(m, tok, items, out, max_new_tokens=8, progress=False, bf16=False)
    assert len(res) == 6
    lines = [json.loads(x) for x in out.read_text().splitlines()[:3]]
    assert lines == [json.loads(x) for x in first]  # kept, not recomputed
    changed = [dict(items[0], prompt=items[0]["prompt"] + "x")] + items[1:]
    generate.generate_predictions(m, tok, changed, out, max_new_tokens=8, progress=False, bf16=False)
    recs = generate.read_predictions(out)
    assert recs["q0"]["prompt_hash"] == generate.prompt_hash(changed[0]["prompt"])


def test_corrupt_middle_line_is_an_error(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text('{"id": "a"}\nnot json\n{"id": "b"}\n')
    with pytest.raises(ValueError, match=r"p.jsonl:2"):
        generate.read_predictions(p)


def test_duplicate_ids_rejected(tiny, tmp_path):
    m, tok = tiny
    it = _items(tok, 1)
    with pytest.raises(ValueError, match="unique"):
        generate.generate_predictions(m, tok, it + it, tmp_path / "p.jsonl", max_new_tokens=2, progress=False)
