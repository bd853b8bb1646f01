"""The speed engine (helpers.engine): each trick gives the same outputs as the plain way, and
the fast and plain engines agree (greedy outputs, training loss) on the tiny model."""
import pytest
import torch

from helpers import config, generate, models, sft
from helpers.engine import generation, training
from test_generate import _items, tiny  # noqa: F401  (tiny: a fixture)
from test_sft import examples, smoke_cfg, study  # noqa: F401  (study: a fixture)


# --------------------------------------------------------------------------------------
# generation
# --------------------------------------------------------------------------------------
def _greedy_ids(m, tok, rows, n):
    import torch

    with torch.inference_mode():
        return [m.generate(input_ids=torch.tensor([r]), max_new_tokens=n, do_sample=False,
                           eos_token_id=None, pad_token_id=tok.pad_token_id)[0, len(r):].tolist() for r in rows]


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


def test_shared_prefix_is_computed_once_and_changes_nothing(tiny):
    m, tok = tiny
    prompts = [it["prompt"].replace("<|im_start|>user\n", "<|im_start|>user\n" + HEAD) for it in _items(tok)]
    rows = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    k = generation.shared_prefix_len(rows)
    assert k >= len(tok(HEAD, add_special_tokens=False)["input_ids"])
    assert all(r[:k] == rows[0][:k] for r in rows) and len({r[k] for r in rows if len(r) > k}) > 1
    shared, calls = _with_input_shapes(
        m, lambda: generation.generate_batch(m, tok, prompts, max_new_tokens=10, share_prefix=True))
    assert calls[0] == (1, k)  # the prefix, once, for the whole batch
    assert calls[1] == (len(prompts), max(len(r) for r in rows) - k)  # then only each prompt's own tokens
    plain = generation.generate_batch(m, tok, prompts, max_new_tokens=10, share_prefix=False)
    single = [generation.generate_batch(m, tok, [p], max_new_tokens=10)[0] for p in prompts]
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
    single = [generation.generate_rows(m, tok, [r], max_new_tokens=12, eos_token_id=stop)[0] for r in rows]
    assert len({s["n_new_tokens"] for s in single}) >= 3 and any(s["finished"] for s in single)
    got, calls = _with_input_shapes(m, lambda: list(generation.generate_stream(
        m, tok, rows, max_new_tokens=12, batch_size=3, refill_at=1, eos_token_id=stop)))
    assert sorted(i for i, _ in got) == list(range(len(rows)))
    assert [dict(got)[i] for i in range(len(rows))] == single
    k = generation.shared_prefix_len(rows)
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
    single = [generation.generate_rows(m, tok, [r], max_new_tokens=12, eos_token_id=stop)[0] for r in rows]
    # a call costs nothing: every distinct prompt length is a group of its own
    got, calls = _with_input_shapes(m, lambda: dict(generation.generate_stream(
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
            got = generation.length_groups(lengths, per_call)
            n = len(lengths)
            assert got[0][0] == 0 and got[-1][1] == n and all(a[1] == b[0] for a, b in zip(got, got[1:]))
            best = min(cost(lengths, [(a, b) for a, b in zip((0,) + cuts, cuts + (n,))], per_call)
                       for r in range(n) for cuts in itertools.combinations(range(1, n), r))
            assert cost(lengths, got, per_call) == best
    assert generation.length_groups([40, 12, 11, 10], 8) == [(0, 1), (1, 4)]  # the long one alone
    assert generation.length_groups([40, 12, 11, 10], 1000) == [(0, 4)]
    with pytest.raises(ValueError, match="longest-first"):
        generation.length_groups([3, 5])


def test_roomy_layer_grows_in_place_and_moves_rows():
    import torch
    from transformers.cache_utils import DynamicLayer

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 2, 5, 4, generator=g), torch.randn(1, 2, 3, 4, generator=g)
    layer = generation._roomy_layer_class()([a, b], [a + 1, b + 1], 5, room=4)
    plain = DynamicLayer()
    plain.update(torch.cat([a, generation._left_pad(b, 5, -2)]), torch.cat([a, generation._left_pad(b, 5, -2)]) + 1)
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
    mm.set_attn_implementation(generation._decode_attention())
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
    a = list(generation.generate_stream(m, tok, rows, max_new_tokens=8, batch_size=4))
    b = list(generation.generate_stream(mm, tok, rows, max_new_tokens=8, batch_size=4))
    assert a == b


def test_stream_without_shared_prefix_and_fallback(tiny, monkeypatch):
    m, tok = tiny
    rows = [tok(it["prompt"], add_special_tokens=False)["input_ids"] for it in _items(tok)]
    stop = _stop_token(m, tok, rows, 10)
    single = [generation.generate_rows(m, tok, [r], max_new_tokens=10, eos_token_id=stop)[0] for r in rows]
    plain = dict(generation.generate_stream(m, tok, rows, max_new_tokens=10, batch_size=2, share_prefix=False,
                                          eos_token_id=stop))
    assert [plain[i] for i in range(len(rows))] == single
    # the caller's code between two results does not run in inference mode
    import torch

    g = generation.generate_stream(m, tok, rows, max_new_tokens=10, batch_size=2, eos_token_id=stop)
    next(g)
    assert not torch.is_inference_mode_enabled()
    g.close()
    # a cache whose rows cannot be joined (e.g. sliding windows): one plain batch at a time
    monkeypatch.setattr(generation, "_plain_layers", lambda cache: None)
    fb = dict(generation.generate_stream(m, tok, rows, max_new_tokens=10, batch_size=4, eos_token_id=stop))
    assert [fb[i] for i in range(len(rows))] == single
    with pytest.raises(ValueError, match="max_new_tokens"):
        list(generation.generate_stream(m, tok, rows, max_new_tokens=0))


def test_shared_prefix_len_leaves_every_row_a_token():
    assert generation.shared_prefix_len([[1, 2, 3], [1, 2, 3]]) == 2
    assert generation.shared_prefix_len([[1, 2, 3, 4], [1, 2, 5]]) == 2
    assert generation.shared_prefix_len([[7], [7, 8]]) == 0
    assert generation.shared_prefix_len([]) == 0


def test_low_precision_copy_leaves_the_model_alone(tiny):
    import torch

    m, _ = tiny
    lp = generation.low_precision(m)
    assert next(m.parameters()).dtype == torch.float32
    want = models.device_settings("cpu")["autocast_dtype"]
    assert next(lp.parameters()).dtype == (want or torch.float32)
    assert (lp is m) == (want is None)
    assert m.config._attn_implementation == "sdpa"
    if want is not None:  # the copy decodes with the two-product attention
        assert lp.config._attn_implementation == generation.DECODE_ATTENTION


# --------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------
def test_length_grouped_sampler_is_seeded_and_saves_padding():
    import random

    rnd = random.Random(0)
    lengths = [rnd.randint(20, 400) for _ in range(400)]
    s = training.LengthGroupedSampler(lengths, batch_size=4, seed=3)
    a = list(s)
    assert sorted(a) == list(range(400)) and a == list(training.LengthGroupedSampler(lengths, 4, seed=3))
    s.set_epoch(1)
    assert list(s) != a
    rand = torch.randperm(400, generator=torch.Generator().manual_seed(3)).tolist()
    grouped, shuffled = sft.padding_stats(lengths, a, 4), sft.padding_stats(lengths, rand, 4)
    assert grouped["real_tokens"] == shuffled["real_tokens"]
    assert grouped["efficiency"] > 0.95 > shuffled["efficiency"]


def test_loss_hook_replaces_the_loss(tmp_path):
    cfg = smoke_cfg(max_steps=2)
    first = {}
    for name, hook in (("plain", None), ("half", lambda model, inputs, n: 0.5 * model(**inputs).loss)):
        config.seed_everything(0)
        model, tok = sft.load_for_training(cfg, "tiny")
        exs, _ = sft.tokenize_examples(tok, "chatml", examples(), "tiny", 1024, "completion")
        trainer = sft.build_trainer(cfg, model, tok, exs, tmp_path / name, loss_fn=hook, progress=False,
                                    save_strategy="no")
        assert isinstance(trainer, training.trainer_class())
        trainer.train()
        first[name] = [h["loss"] for h in trainer.state.log_history if "loss" in h][0]
    assert first["half"] == pytest.approx(0.5 * first["plain"], rel=1e-3)


def test_fast_dropout_matches_dropout_in_distribution():
    d = training.FastDropout(0.05)
    x = torch.ones(1000, 1000)
    torch.manual_seed(1)
    y = d(x)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 0.05) < 0.002
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / 0.95))
    assert abs(y.mean().item() - 1.0) < 0.005
    torch.manual_seed(1)
    assert torch.equal(d(x), y), "seeded by torch's generator"
    d.eval()
    assert d(x) is x
    cfg = smoke_cfg(lora_dropout=0.1)
    model, _ = sft.load_for_training(cfg, "tiny")
    fast = [m for m in model.modules() if type(m).__name__ == "_FastDropout"]
    assert len(fast) == 2 * 7 and all(m.p == 0.1 for m in fast)  # 2 layers x 7 adapted projections


def test_batch_prefix_len_rules():
    """Leading columns equal and unpadded in every row, cut before the first wanted position."""
    model = torch.nn.Module()
    ids = torch.arange(40).repeat(3, 1)
    ids[1, 25:] += 100                                  # rows agree on columns 0..24
    att = torch.ones_like(ids)
    keep_all = torch.arange(30, 39)
    assert training.batch_prefix_len(model, ids, att, keep_all) == 25
    assert training.batch_prefix_len(model, ids, att, torch.arange(20, 39)) == 20   # a wanted position at 20
    assert training.batch_prefix_len(model, ids, att, torch.arange(10, 39)) == 0    # 10 < MIN_SHARED_PREFIX
    pad = att.clone()
    pad[2, 18:] = 0                                     # row 2 ends at 18: padding is not shared
    assert training.batch_prefix_len(model, ids, pad, keep_all) == 18
    assert training.batch_prefix_len(model, ids[:1], att[:1], keep_all) == 0       # nothing to share with
    assert training.batch_prefix_len(model, ids[:, :20], att[:, :20], torch.arange(0)) == 19  # one token left per row
    model.is_activation_checkpointing = True
    assert training.batch_prefix_len(model, ids, att, keep_all) == 0


def test_shared_prefix_pass_gives_the_same_loss_and_gradients(monkeypatch):
    """Running the common opening once and repeating its cache is the same computation as the
    whole batch: same loss, same LoRA gradients (fp32), with right padding in the batch."""
    cfg = smoke_cfg(lora_dropout=0.0)
    model, tok = sft.load_for_training(cfg, "tiny")
    torch.manual_seed(0)
    for name, p in model.named_parameters():
        if "lora_B" in name:                            # B starts at zero: give the A's gradients
            p.data.normal_(0.0, 0.05)
    ex, _ = sft.tokenize_examples(tok, "chatml", examples("correct").head(4), "tiny", 1024, "completion")
    batch = sft.PaddingCollator(tok.pad_token_id)(ex)
    assert (batch["attention_mask"] == 0).any(), "the batch should hold padding"
    keep = (batch["labels"][:, 1:] != -100).any(dim=0).nonzero().squeeze(-1)
    p = training.batch_prefix_len(model, batch["input_ids"], batch["attention_mask"], keep)
    assert p >= training.MIN_SHARED_PREFIX
    model.train()

    def loss_and_grads():
        model.zero_grad()
        loss = training.target_positions_loss(model, batch)
        loss.backward()
        return loss.detach(), {n: q.grad.clone() for n, q in model.named_parameters() if q.requires_grad}

    shared_loss, shared_grads = loss_and_grads()
    monkeypatch.setattr(training, "MIN_SHARED_PREFIX", 10 ** 9)   # every batch in one plain pass
    assert training.batch_prefix_len(model, batch["input_ids"], batch["attention_mask"], keep) == 0
    plain_loss, plain_grads = loss_and_grads()
    assert torch.allclose(shared_loss, plain_loss, atol=1e-6), (shared_loss, plain_loss)
    assert shared_grads.keys() == plain_grads.keys() and len(plain_grads) > 0
    for n in plain_grads:
        assert plain_grads[n].abs().max() > 0, n
        assert torch.allclose(shared_grads[n], plain_grads[n], rtol=1e-4, atol=1e-7), n


@pytest.mark.parametrize("loss_mask", ["full", "completion"])
def test_target_positions_loss_equals_the_models_own_loss(loss_mask):
    """The loss computed only at labelled positions is the model's full causal-LM loss."""
    import torch

    from helpers import models, sft

    tok = models.load_tokenizer("tiny")
    model = models.load_model("tiny", tokenizer=tok)
    rows = [{"id": f"x{i}", "user": f"Where is Mary? Context {i}",
             "assistant": "<think>a\nb</think> <answer>" + "garden" * (i + 1) + "</answer>"} for i in range(3)]
    ex, _ = sft.tokenize_examples(tok, "chatml", rows, "tiny", 256, loss_mask)
    batch = sft.PaddingCollator(tok.pad_token_id, None)(ex)
    with torch.no_grad():
        ref = model(**batch).loss
        n = batch["labels"][:, 1:].ne(-100).sum()
        ours = training.target_positions_loss(model, batch, n)
        ours_local = training.target_positions_loss(model, batch, None)
    assert torch.allclose(ours, ref, atol=1e-5), (ours, ref)
    assert torch.allclose(ours_local, ref, atol=1e-5)


# --------------------------------------------------------------------------------------
# the fast engine against the plain path
# --------------------------------------------------------------------------------------
def test_plain_and_fast_generation_give_identical_greedy_outputs(tiny, tmp_path):
    """The evaluation's predictions under engine: plain (batched model.generate) and engine:
    fast (shared prefix, refilled slots, length groups, roomy cache; in the model's own dtype)
    are the same records; and with a stop token that ends rows at different steps, the two
    generators agree row by row."""
    m, tok = tiny
    items = [{"id": f"h{i}", "prompt": tok.decode(r)} for i, r in enumerate(_headed_rows(tok))] + _items(tok)
    recs = {}
    for engine in ("plain", "fast"):
        out = tmp_path / engine / "predictions.jsonl"
        recs[engine] = generate.generate_predictions(m, tok, items, out, max_new_tokens=10, batch_size=4,
                                                     progress=False, bf16=False, engine=engine)
        assert sorted(out.read_text().splitlines()) == sorted(__import__("json").dumps(r) for r in recs[engine])
    assert recs["plain"] == recs["fast"]
    assert len({r["prediction"] for r in recs["fast"]}) > 1
    rows = sorted(_headed_rows(tok), key=len, reverse=True)
    stop = _stop_token(m, tok, rows, 12)
    plain = dict(generate.generate_plain(m, tok, rows, max_new_tokens=12, batch_size=4, eos_token_id=stop))
    fast = dict(generation.generate_stream(m, tok, rows, max_new_tokens=12, batch_size=4, refill_at=1,
                                           eos_token_id=stop))
    assert plain == fast
    assert len({r["n_new_tokens"] for r in plain.values()}) >= 3 and any(r["finished"] for r in plain.values())
    with pytest.raises(ValueError, match="engine"):
        generate.generate_predictions(m, tok, items, tmp_path / "x.jsonl", max_new_tokens=2, engine="turbo")


@pytest.mark.parametrize("loss_mask", ["completion", "full"])
def test_plain_and_fast_training_agree_for_one_step(tmp_path, loss_mask):
    """One optimizer step over the same batch: the plain engine (stock Trainer, the model's own
    loss) and the fast one (engine trainer, loss only at labelled positions, the shared
    opening run once) log the same loss and make the same update."""
    from transformers import Trainer

    res = {}
    for engine in ("plain", "fast"):
        cfg = smoke_cfg(engine=engine, max_steps=1, batch_size=4, grad_accum=1, lora_dropout=0.0,
                        warmup_ratio=0.0, lr_scheduler="constant", loss_mask=loss_mask)
        config.seed_everything(0)
        model, tok = sft.load_for_training(cfg, "tiny")
        exs, _ = sft.tokenize_examples(tok, "chatml", examples().head(4), "tiny", 1024, loss_mask)
        before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        trainer = sft.build_run_trainer(cfg, model, tok, exs, tmp_path / engine, seed=0, progress=False,
                                        save_strategy="no", optim="sgd")  # the update is the gradient
        if engine == "plain":
            assert type(trainer) is Trainer
        else:
            assert isinstance(trainer, training.trainer_class()) and trainer.loss_fn is training.target_positions_loss
        trainer.train()
        loss = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        res[engine] = (loss, {n: p.detach() - before[n] for n, p in model.named_parameters() if p.requires_grad})
    (lp, dp), (lf, df) = res["plain"], res["fast"]
    assert len(lp) == len(lf) == 1 and lp[0] > 0
    assert lf[0] == pytest.approx(lp[0], rel=1e-6), (lp, lf)  # measured: 1e-7 apart
    assert dp.keys() == df.keys() and dp
    scale = max(float(d.abs().max()) for d in dp.values())
    assert scale > 0
    for n in dp:
        assert torch.allclose(dp[n], df[n], rtol=1e-2, atol=1e-2 * scale), n  # measured: <= 3e-3 * scale


def test_a_plain_run_trains_with_a_stock_trainer_and_is_stamped_apart(study, tmp_path):
    """train_run under engine: plain (stock Trainer, the model's own loss) writes a complete
    run; the engine is a stamp key, so switching to fast trains again; the plain run's student
    generates through generate_plain."""
    cfg = dict(study, engine="plain")
    rd = sft.train_run(cfg, "babi", "tiny", "correct", 0, progress=False)
    m = config.read_json(rd / "metrics.json")
    assert m["global_step"] == 6 and m["tokens_per_s"] > 0 and (rd / "adapter").exists()
    assert config.read_json(rd / "stamp.json")["config"]["engine"] == "plain"
    assert "engine" in sft.run_keys() and sft.hyperparameters(cfg).set_index("parameter").loc["engine", "value"] == "plain"
    mtime = (rd / "metrics.json").stat().st_mtime_ns
    assert sft.train_run(cfg, "babi", "tiny", "correct", 0, progress=False) == rd
    assert (rd / "metrics.json").stat().st_mtime_ns == mtime  # fresh: skipped
    sft.train_run(study, "babi", "tiny", "correct", 0, progress=False)  # the profile's engine: fast
    assert config.read_json(rd / "stamp.json")["config"]["engine"] == "fast"
    model, tok = sft.load_trained(rd)
    items = [{"id": "a", "prompt": "<|im_start|>user\nWhere is Mary?<|im_end|>\n<|im_start|>assistant\n"}]
    recs = generate.generate_predictions(model, tok, items, tmp_path / "p.jsonl", max_new_tokens=4, progress=False,
                                         engine="plain")
    assert recs[0]["id"] == "a" and 1 <= recs[0]["n_new_tokens"] <= 4
    with pytest.raises(ValueError, match="engine"):
        sft.train_run(dict(study, engine="turbo"), "babi", "tiny", "correct", 1, progress=False)

