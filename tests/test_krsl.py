"""EDIT key-step learning: alignment, key tokens, weights, loss, pairs and a smoke run."""
import math
import random

import pytest
import torch
from rapidfuzz.distance import Levenshtein

from helpers import krsl
from helpers.krsl import DEL, EQUAL, INS, SUB


# --------------------------------------------------------------------------------------
# alignment
# --------------------------------------------------------------------------------------
def _naive_distance(a, b):
    """Textbook O(nm) Levenshtein table, written independently of helpers.krsl."""
    D = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        D[i][0] = i
    for j in range(len(b) + 1):
        D[0][j] = j
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            D[i][j] = min(D[i - 1][j] + 1, D[i][j - 1] + 1, D[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
    return D


def test_align_substitution():
    assert krsl.align([5, 6, 7], [5, 9, 7]) == [(EQUAL, 0, 0), (SUB, 1, 1), (EQUAL, 2, 2)]


def test_align_insertion():
    assert krsl.align([5, 7], [5, 6, 7]) == [(EQUAL, 0, 0), (INS, None, 1), (EQUAL, 1, 2)]


def test_align_deletion():
    assert krsl.align([5, 6, 7], [5, 7]) == [(EQUAL, 0, 0), (DEL, 1, None), (EQUAL, 2, 1)]


def test_align_identical_and_empty():
    assert krsl.align([3, 1, 4, 1], [3, 1, 4, 1]) == [(EQUAL, k, k) for k in range(4)]
    assert krsl.align([], []) == []
    assert krsl.align([], [1, 2]) == [(INS, None, 0), (INS, None, 1)]
    assert krsl.align([1, 2], []) == [(DEL, 0, None), (DEL, 1, None)]


def test_align_mixed_and_tie_breaking():
    # kitten -> sitting: k->s, e->i, +g  (distance 3)
    ops = krsl.align("kitten", "sitting")
    assert [o for o, _, _ in ops] == [SUB, EQUAL, EQUAL, EQUAL, SUB, EQUAL, INS]
    assert krsl.edit_distance("kitten", "sitting") == 3
    # tie: "ab" vs "c" can be (del a, sub b->c) or (sub a->c, del b); the backtrace runs from
    # the end preferring substitution over deletion, so b is substituted
    assert krsl.align("ab", "c") == [(DEL, 0, None), (SUB, 1, 0)]
    # the common prefix is matched first: "x y x" vs "x" matches the first x
    assert krsl.align("xyx", "x") == [(EQUAL, 0, 0), (DEL, 1, None), (DEL, 2, None)]


def test_align_is_optimal_and_consistent_on_random_pairs():
    rng = random.Random(0)
    for _ in range(300):
        a = [rng.randrange(4) for _ in range(rng.randrange(0, 10))]
        b = [rng.randrange(4) for _ in range(rng.randrange(0, 10))]
        ops = krsl.align(a, b)
        assert sum(o != EQUAL for o, _, _ in ops) == _naive_distance(a, b)[-1][-1]
        # every index used once, in order; equal means equal, sub means different
        ia = [i for _, i, _ in ops if i is not None]
        jb = [j for _, _, j in ops if j is not None]
        assert ia == list(range(len(a))) and jb == list(range(len(b)))
        for o, i, j in ops:
            if o == EQUAL:
                assert a[i] == b[j]
            if o == SUB:
                assert a[i] != b[j]
        assert krsl.align(a, b) == ops  # deterministic
        assert krsl.edit_distance(a, b) == len(Levenshtein.editops(a, b)) == _naive_distance(a, b)[-1][-1]


def test_rapidfuzz_editops_differ_from_align_only_in_ties():
    """rapidfuzz's alignment is as short as align's, but breaks ties the other way, and the
    ties decide which tokens are key: why align keeps its own backtrace."""
    assert Levenshtein.editops("ab", "c").as_list() == [("replace", 0, 0), ("delete", 1, 1)]
    assert krsl.key_masks("ab", "c") == ([True, True], [True])
    # "from 1977 to 1992." vs "in 1980." (years in two tokens, as the quick profile's tokenizer
    # splits them): which "19" is matched decides the key tokens
    c, i = ["from", "19", "77", "to", "19", "92", "."], ["in", "19", "80", "."]
    rf_c = [False] * len(c)
    for op, k, _ in Levenshtein.editops(c, i).as_list():
        if op in ("replace", "delete"):
            rf_c[k] = True
    assert krsl.key_masks(c, i)[0] == [True, True, True, True, False, True, False]  # keeps the later "19"
    assert rf_c == [True, False, True, True, True, True, False]                      # rapidfuzz: the first
    assert krsl.edit_distance(c, i) == Levenshtein.distance(c, i) == 5


# --------------------------------------------------------------------------------------
# key tokens and weights
# --------------------------------------------------------------------------------------
# a hand-made dual pair: "<t> label equal . facts A B </t> ans" vs "<t> label overlap . facts C </t> ans"
CORRECT = ["<t>", "label", "equal", ".", "facts", "A", "B", "</t>", "ans"]
INCORRECT = ["<t>", "label", "overlap", ".", "facts", "C", "</t>", "ans"]


def test_key_masks_of_a_known_pair():
    mask_c, mask_i = krsl.key_masks(CORRECT, INCORRECT)
    # equal->overlap substituted; A,B vs C: one substitution and one deletion
    assert mask_c == [False, False, True, False, False, True, True, False, False]
    assert mask_i == [False, False, True, False, False, True, False, False]
    assert krsl.key_masks(CORRECT, CORRECT) == ([False] * 9, [False] * 9)
    # an insertion in the incorrect trace is key there, and nothing in the correct one
    mc, mi = krsl.key_masks(["a", "b"], ["a", "x", "b"])
    assert mc == [False, False] and mi == [False, True, False]


def test_token_weights_of_a_known_pair():
    mask_c, mask_i = krsl.key_masks(CORRECT, INCORRECT)
    w_c, w_i = krsl.token_weights(mask_c, mask_i, alpha=1.0, beta=-0.025, gamma=0.1)
    assert w_c == [0.1, 0.1, 1.0, 0.1, 0.1, 1.0, 1.0, 0.1, 0.1]
    assert w_i == [0.0, 0.0, -0.025, 0.0, 0.0, -0.025, 0.0, 0.0]
    with pytest.raises(ValueError, match="<= 0"):
        krsl.token_weights(mask_c, mask_i, beta=0.5)


def test_key_token_share_and_highlight():
    mask_c, mask_i = krsl.key_masks(CORRECT, INCORRECT)
    s = krsl.key_token_share([mask_c, mask_i])
    assert (s["n_tokens"], s["n_key"]) == (17, 5)
    assert s["share"] == pytest.approx(5 / 17)
    assert math.isnan(krsl.key_token_share([])["share"])
    pieces = ["The ", "label", " is", " <b>"]
    txt = krsl.highlight(pieces, [False, True, True, False], fmt="text")
    assert txt == "The ⟦label is⟧ <b>"
    h = krsl.highlight(pieces, [False, True, True, False])
    assert h.count("<mark") == 1 and "&lt;b&gt;" in h and ">label is</mark>" in h
    with pytest.raises(ValueError):
        krsl.highlight(pieces, [True])


# --------------------------------------------------------------------------------------
# the loss
# --------------------------------------------------------------------------------------
def _tiny_batch():
    """Two sequences of length 3 over a vocabulary of 3, logits chosen so every CE is known:
    row [0, 0, 0] gives CE = ln 3; row [0, ln 2, 0] gives CE(label 1) = ln 2;
    row [-10, 0, 0] gives CE(label 0) = 10 + ln(2 + e^-10)."""
    logits = torch.tensor([
        [[0.0, math.log(2.0), 0.0], [0.0, 0.0, 0.0], [50.0, -50.0, 7.0]],   # last row never used
        [[-10.0, 0.0, 0.0], [0.0, 0.0, 0.0], [-50.0, 50.0, 3.0]],
    ])
    labels = torch.tensor([[-100, 1, 2], [-100, 0, 1]])
    # correct trace: key token at position 1 (alpha = 1), other target token at 2 (gamma = 0.5)
    # incorrect trace: both target tokens key (beta = -0.025)
    weights = torch.tensor([[0.0, 1.0, 0.5], [0.0, -0.025, -0.025]])
    n_target = torch.tensor([2, 2])
    return logits, labels, weights, n_target


def test_krsl_loss_equals_hand_computed_value():
    logits, labels, weights, n_target = _tiny_batch()
    ln2, ln3 = math.log(2.0), math.log(3.0)
    ce_unlikely = 10.0 + math.log(2.0 + math.exp(-10.0))
    seq_c = (1.0 * ln2 + 0.5 * ln3) / 2
    # threshold 20: no negative weight is switched off
    seq_i = (-0.025 * ce_unlikely - 0.025 * ln3) / 2
    loss = krsl.krsl_loss(logits, labels, weights, n_target, nll_threshold=20.0)
    assert loss.item() == pytest.approx((seq_c + seq_i) / 2, rel=1e-6)
    # threshold 5: the first incorrect token's NLL (~10.7) exceeds it, its weight becomes 0
    seq_i5 = (-0.025 * ln3) / 2
    loss5, st = krsl.krsl_loss(logits, labels, weights, n_target, nll_threshold=5.0, return_stats=True)
    assert loss5.item() == pytest.approx((seq_c + seq_i5) / 2, rel=1e-6)
    assert st["n_zeroed"] == 1 and st["n_negative"] == 2
    assert st["per_sequence"].tolist() == pytest.approx([seq_c, seq_i5], rel=1e-6)
    # |y| divides: a longer target (more prompt-free tokens counted) lowers the loss
    loss_long = krsl.krsl_loss(logits, labels, weights, torch.tensor([4, 4]), nll_threshold=20.0)
    assert loss_long.item() == pytest.approx((seq_c + seq_i) / 4, rel=1e-6)


def test_krsl_loss_gradient_lowers_the_wrong_step_and_raises_the_right_one():
    logits, labels, weights, n_target = _tiny_batch()
    logits = logits.clone().requires_grad_(True)
    krsl.krsl_loss(logits, labels, weights, n_target, nll_threshold=20.0).backward()
    g = logits.grad
    # descent moves logits along -g: the correct key label's logit goes up ...
    assert g[0, 0, 1] < 0
    # ... the incorrect key label's logit goes down (negative weight)
    assert g[1, 1, 1] > 0
    # positions whose prediction is not a target, and the last position, get no gradient
    assert torch.all(g[:, 2] == 0)


def test_krsl_loss_rejects_bad_input():
    logits, labels, weights, _ = _tiny_batch()
    with pytest.raises(ValueError, match="no target"):
        krsl.krsl_loss(logits, labels, weights, torch.tensor([2, 0]))
    with pytest.raises(ValueError, match="shapes"):
        krsl.krsl_loss(logits, labels, weights[:, :2], torch.tensor([2, 2]))


# --------------------------------------------------------------------------------------
# pairs on real rendered conversations (tiny tokenizer; Qwen3 / Llama-3 templates offline)
# --------------------------------------------------------------------------------------
FACT_OK = "Mary holds the position of mayor from 2001 to 2005."
FACT_BAD = "John is a member of the Liberals from 2001 to 2010."


def _dual_messages():
    from helpers import templates as T

    base = [{"role": "system", "content": T.system_prompt("Tiny")},
            {"role": "user", "content": T.render_user("cotempqa", [FACT_OK, FACT_BAD], "Who was mayor in 2003?")}]
    ac = T.render_trace("cotempqa", "during", [FACT_OK], "['Mary']")
    ai = T.render_trace("cotempqa", "overlap", [FACT_BAD], "['Mary']")
    return base + [{"role": "assistant", "content": ac}], base + [{"role": "assistant", "content": ai}]


@pytest.fixture(scope="module")
def tiny_tok():
    from helpers import models

    return models.load_tokenizer("tiny")


@pytest.mark.parametrize("family", ["chatml", "qwen3", "llama3"])
def test_pair_key_tokens_sit_on_the_training_tokens(tiny_tok, family):
    from helpers import chat

    tok = tiny_tok if family == "chatml" else chat.with_family_template(tiny_tok, family)
    mc, mi = _dual_messages()
    enc_c = krsl.encode_conversation(tok, *chat.split_conversation(tok, mc, family))
    enc_i = krsl.encode_conversation(tok, *chat.split_conversation(tok, mi, family))
    # the very token ids SFT trains on, and the target is the assistant-masked part
    ref = chat.encode_conversation(tok, mc, family)
    assert enc_c["input_ids"] == ref["input_ids"]
    assert enc_c["target_positions"] == [k for k, m in enumerate(ref["assistant_mask"]) if m]
    _, completion, _ = chat.split_conversation(tok, mc, family)
    assert "".join(enc_c["pieces"]) == completion

    pair = krsl.make_pair(enc_c, enc_i, alpha=1.0, beta=-0.025, gamma=0.0, max_length=None, id="p")
    key_c = "".join(t for t, k in zip(pair["tokens_c"], pair["key_mask_c"]) if k)
    key_i = "".join(t for t, k in zip(pair["tokens_i"], pair["key_mask_i"]) if k)
    # the differing steps are key: the label and the cited fact's words; the shared answer,
    # the tags and the end-of-turn token are not
    assert "during" in key_c and "2005" in key_c and "Mary" in key_c
    assert "overlap" in key_i and "Liberals" in key_i and "2010" in key_i
    for shared in ("answer", "think", chat.END_OF_TURN[family], "temporal"):
        assert shared not in key_c and shared not in key_i
    # weights and labels laid onto the full sequence: alpha on key positions, 0 on the prompt
    pos_c = enc_c["target_positions"]
    assert all(pair["labels_c"][k] == -100 and pair["weights_c"][k] == 0 for k in range(pos_c[0]))
    for k, key in zip(pos_c, pair["key_mask_c"]):
        assert pair["labels_c"][k] == pair["input_ids_c"][k]
        assert pair["weights_c"][k] == (1.0 if key else 0.0)
    for k, key in zip(enc_i["target_positions"], pair["key_mask_i"]):
        assert pair["weights_i"][k] == (-0.025 if key else 0.0)
    assert pair["n_target_c"] == len(pos_c) and pair["n_target_i"] == len(enc_i["target_positions"])
    share = krsl.pair_stats([pair])
    assert 0 < share["key_share_correct"] < 0.5


def test_truncation_keeps_key_steps_found_on_the_whole_target_and_collator_pads(tiny_tok):
    from helpers import chat

    mc, mi = _dual_messages()
    enc_c = krsl.encode_conversation(tiny_tok, *chat.split_conversation(tiny_tok, mc, "chatml"))
    enc_i = krsl.encode_conversation(tiny_tok, *chat.split_conversation(tiny_tok, mi, "chatml"))
    full = krsl.make_pair(enc_c, enc_i, alpha=1.0, beta=-0.025, gamma=0.0, max_length=None)
    cut_at = enc_c["target_positions"][0] + 20
    cut = krsl.make_pair(enc_c, enc_i, alpha=1.0, beta=-0.025, gamma=0.0, max_length=cut_at)
    assert cut["truncated"] and not full["truncated"]
    assert cut["key_mask_c"] == full["key_mask_c"]
    assert cut["weights_c"] == full["weights_c"][:cut_at] and len(cut["input_ids_i"]) == cut_at
    assert cut["n_target_c"] == 20

    batch = krsl.KRSLCollator(tiny_tok.pad_token_id)(krsl.PairDataset([full, cut]).items)
    L = max(len(full["input_ids_c"]), len(full["input_ids_i"]))
    for side in "ci":
        assert batch[f"input_ids_{side}"].shape == (2, L)
        assert batch[f"attention_mask_{side}"][1].sum() == cut_at
        assert torch.all(batch[f"labels_{side}"][1, cut_at:] == -100)
        assert torch.all(batch[f"weights_{side}"][1, cut_at:] == 0)
    assert batch["n_target_c"].tolist() == [full["n_target_c"], 20]


# --------------------------------------------------------------------------------------
# a smoke KRSL run on the tiny model
# --------------------------------------------------------------------------------------
def _problems(n=6):
    """Hand-made CoTempQA-style problems: two facts each, the first one relevant."""
    import pandas as pd

    rows = []
    for k in range(n):
        ctx = [f"Mary holds the position of mayor from {2000 + k} to {2005 + k}.",
               f"John is a member of the Liberals from {2001 + k} to {2010 + k}."]
        rows.append({"id": f"hand/{k}", "dataset": "cotempqa", "split": "train",
                     "question": f"Who was mayor in {2003 + k}?", "context": ctx, "answers": ["Mary"],
                     "category": ["equal", "overlap", "during", "mix"][k % 4], "relevant": [0],
                     "source": "synthetic", "synthetic": True, "flags": [], "meta": "{}"})
    return pd.DataFrame(rows)


def test_build_pairs_from_trace_sets(tiny_tok):
    from helpers import traces

    df = _problems()
    cor = traces.build_condition(df, "cotempqa", "correct", 0)
    inc = traces.build_condition(df, "cotempqa", "incorrect", 0)
    with pytest.warns(UserWarning, match="unpaired_incorrect"):
        pairs, st = krsl.build_pairs(cor.iloc[1:], inc, tiny_tok, "chatml", "tiny", 384, return_stats=True)
    assert [p["id"] for p in pairs] == list(cor["id"][1:])
    assert st["unpaired_incorrect"] == ["hand/0"] and st["n_pairs"] == 5
    for p, (_, rc), (_, ri) in zip(pairs, cor.iloc[1:].iterrows(), inc.iloc[1:].iterrows()):
        key_c = "".join(t for t, k in zip(p["tokens_c"], p["key_mask_c"]) if k)
        key_i = "".join(t for t, k in zip(p["tokens_i"], p["key_mask_i"]) if k)
        assert rc["trace_label"] in key_c and ri["trace_label"] in key_i
        assert "Liberals" in key_i and "Liberals" not in key_c
    html_ = krsl.examples_html(pairs, n=2, seed=0)
    assert html_ == krsl.examples_html(pairs, n=2, seed=0) and html_.count("<hr>") == 1
    assert html_.count("<mark") >= 4
    bad = inc.copy()
    bad.loc[2, "user"] = bad.loc[2, "user"] + " "
    with pytest.raises(ValueError, match="hand/2.*share the prompt"):
        krsl.build_pairs(cor, bad, tiny_tok, "chatml", "tiny", 384)


def test_smoke_krsl_run_on_the_tiny_model(tmp_path, monkeypatch):
    import json

    from helpers import config, paths, sft, traces

    monkeypatch.setattr(paths, "DATA", tmp_path / "data")
    monkeypatch.setattr(paths, "RUNS", tmp_path / "runs")
    cfg = dict(config.load_profile("smoke"), profile="krsltest", datasets=["cotempqa"], models=["tiny"],
               seeds=[0], conditions=["correct", "incorrect", "krsl"], max_steps=2, krsl_max_steps=3,
               batch_size=2, grad_accum=1, krsl_lr=1e-3, max_length=256)
    df = _problems()
    for cond in ("correct", "incorrect"):
        p = traces.train_path("krsltest", "cotempqa", cond)
        p.parent.mkdir(parents=True, exist_ok=True)
        traces.build_condition(df, "cotempqa", cond, 0).to_parquet(p, index=False)

    rd = krsl.train_krsl_run(cfg, "cotempqa", "tiny", 0, progress=False)
    assert rd == paths.run_dir("krsltest", "cotempqa", "tiny", "krsl", 0)
    for f in ("config.json", "adapter/adapter_config.json", "metrics.json", "log_history.json", "stamp.json"):
        assert (rd / f).exists(), f
    assert (paths.run_dir("krsltest", "cotempqa", "tiny", "correct", 0) / "adapter").exists()  # step 1
    m = json.loads((rd / "metrics.json").read_text())
    assert m["global_step"] == 3 and m["n_pairs"] == 6 and m["condition"] == "krsl"
    assert m["init_run"] == str(paths.run_dir("krsltest", "cotempqa", "tiny", "correct", 0))
    assert 0 < m["trainable_params"] < m["total_params"] and m["tokens_seen"] > 0
    assert 0 < m["key_share_correct"] < 1 and math.isfinite(m["train_loss_last"])
    hist = json.loads((rd / "log_history.json").read_text())
    logged = [h for h in hist if "loss" in h]
    assert len(logged) == 3 and all(math.isfinite(h["loss"]) for h in logged)
    # the logged loss is the sum of its two parts; the incorrect part is <= 0 (beta < 0)
    for h in logged:
        assert h["loss"] == pytest.approx(h["krsl_loss_correct"] + h["krsl_loss_incorrect"], rel=1e-4, abs=1e-6)
        assert h["krsl_loss_incorrect"] <= 0 < h["krsl_loss_correct"]
    assert [h["learning_rate"] for h in logged][0] <= 1e-3
    # step 2 started from step 1's adapter and changed it
    from safetensors.torch import load_file

    w1 = load_file(paths.run_dir("krsltest", "cotempqa", "tiny", "correct", 0) / "adapter" / "adapter_model.safetensors")
    w2 = load_file(rd / "adapter" / "adapter_model.safetensors")
    assert w1.keys() == w2.keys() and any(not torch.equal(w1[k], w2[k]) for k in w1)
    # fresh: a second call returns at once; loadable like any run
    assert config.stamp_hash(rd) == config.read_json(rd / "metrics.json")["run_hash"]
    stamp = (rd / "stamp.json").read_text()
    assert krsl.train_krsl_run(cfg, "cotempqa", "tiny", 0, progress=False) == rd
    assert (rd / "stamp.json").read_text() == stamp
    tab = krsl.key_share_table(cfg)
    assert tab.loc[0, "pairs"] == 6 and tab.loc[0, "key_share_correct"] == pytest.approx(m["key_share_correct"])
    model, tok = sft.load_trained(rd)
    assert tok.padding_side == "left" and not model.training


def test_krsl_vs_correct_is_mcnemar_on_the_same_items():
    import pandas as pd

    from helpers import stats

    rows = []
    # 30 items: correct gets answers right on items 0-19, krsl on 0-9 and 20-29 -> 10 / 10 discordant
    for cond, right in (("correct", set(range(20))), ("krsl", set(range(10)) | set(range(20, 30)))):
        for k in range(30):
            ok = k in right
            rows.append({"dataset": "cotempqa", "model": "tiny", "condition": cond, "seed": 0, "id": f"q{k}",
                         "category": "equal", "answer_em": ok, "answer_f1": float(ok), "has_trace_target": True,
                         "cls_correct": ok, "ir_exact": k < 15, "trace_correct": ok and k < 15})
    out = stats.krsl_vs_correct(pd.DataFrame(rows))
    assert set(out["metric"]) == {"answer_em", "trace_correct"}
    r = out[out["metric"] == "answer_em"].iloc[0]
    assert (r["cond_x"], r["cond_y"], r["n"]) == ("correct", "krsl", 30)
    assert r["discordant"] == 20 and r["p"] == pytest.approx(1.0)


def test_trainer_loss_on_wanted_positions_equals_the_loss_on_whole_logits(tiny_tok):
    """The trainer's loss (logits only where a target is, the shared opening run once) is
    krsl_loss on the model's logits for every position of the whole batch."""
    from types import SimpleNamespace

    from helpers import models, traces
    from helpers.engine import training

    df = _problems(4)
    cor = traces.build_condition(df, "cotempqa", "correct", 0)
    inc = traces.build_condition(df, "cotempqa", "incorrect", 0)
    pairs = krsl.build_pairs(cor, inc, tiny_tok, "chatml", "tiny", 384)
    batch = krsl.KRSLCollator(tiny_tok.pad_token_id)(krsl.PairDataset(pairs).items)
    model = models.load_model("tiny", tokenizer=tiny_tok).eval()
    ids = torch.cat([batch["input_ids_c"], batch["input_ids_i"]])
    att = torch.cat([batch["attention_mask_c"], batch["attention_mask_i"]])
    keep = (torch.cat([batch["labels_c"], batch["labels_i"]])[:, 1:] != -100).any(0).nonzero().squeeze(-1)
    assert training.batch_prefix_len(model, ids, att, keep) >= training.MIN_SHARED_PREFIX
    fake = SimpleNamespace(krsl_nll_threshold=20.0)
    with torch.no_grad():
        ours, out = krsl._trainer_class().compute_loss(fake, model, batch, return_outputs=True)
        logits = model(input_ids=ids, attention_mask=att).logits
        b = batch["input_ids_c"].shape[0]
        ref = (krsl.krsl_loss(logits[:b], batch["labels_c"], batch["weights_c"], batch["n_target_c"])
               + krsl.krsl_loss(logits[b:], batch["labels_i"], batch["weights_i"], batch["n_target_i"]))
    assert out["logits"].shape == (2 * b, keep.numel(), logits.shape[-1])
    assert torch.allclose(ours, ref, atol=1e-5), (ours, ref)
    with torch.no_grad():  # engine: plain, the logits of one plain forward pass: the same loss
        plain = krsl._trainer_class().compute_loss(SimpleNamespace(krsl_nll_threshold=20.0, engine="plain"), model, batch)
    assert torch.allclose(plain, ours, atol=1e-5), (plain, ours)
