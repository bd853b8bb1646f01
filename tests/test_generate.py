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


def _items(tok, n=6):
    qs = ["Where is Mary?", "Who holds the position of mayor in 2005?", "How many apples?",
          "Is John in the garden?", "What did Sandra pick up after she went to the office?", "Why?"]
    return [{"id": f"q{i}", "prompt": tok.apply_chat_template(
        [{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)} for i, q in enumerate(qs[:n])]


def _one_at_a_time(m, tok, prompts, n):
    """Each prompt alone through ``model.generate`` (greedy): the reference."""
    return [dict(generate.generate_plain(m, tok, [tok(p, add_special_tokens=False)["input_ids"]],
                                         max_new_tokens=n))[0] for p in prompts]


@pytest.mark.parametrize("engine", ["plain", "fast"])
def test_batched_equals_one_at_a_time(tiny, tmp_path, engine):
    m, tok = tiny
    items = _items(tok)
    batched = generate.generate_predictions(m, tok, items, tmp_path / "p.jsonl", max_new_tokens=12,
                                            batch_size=4, progress=False, bf16=False, engine=engine)
    single = _one_at_a_time(m, tok, [it["prompt"] for it in items], 12)
    assert [b["prediction"] for b in batched] == [s["prediction"] for s in single]
    assert [b["n_new_tokens"] for b in batched] == [s["n_new_tokens"] for s in single] == [12] * len(items)
    assert [b["id"] for b in batched] == [it["id"] for it in items]


def test_plain_generation_stops_rows_at_their_end(tiny):
    """A row that reaches the stop token ends there (the padding generate adds after it is not
    part of the result), batched as alone."""
    import torch

    m, tok = tiny
    rows = [tok(it["prompt"], add_special_tokens=False)["input_ids"] for it in _items(tok)]
    with torch.inference_mode():
        ref = m.generate(input_ids=torch.tensor([rows[0]]), max_new_tokens=8, do_sample=False, eos_token_id=None,
                         pad_token_id=tok.pad_token_id)[0, len(rows[0]):].tolist()
    stop = ref[2]  # the third token row 0 generates
    got = dict(generate.generate_plain(m, tok, rows, max_new_tokens=8, batch_size=3, eos_token_id=stop))
    assert got[0]["finished"] and got[0]["n_new_tokens"] == ref.index(stop) + 1
    alone = [dict(generate.generate_plain(m, tok, [r], max_new_tokens=8, eos_token_id=stop))[0] for r in rows]
    assert [got[i] for i in range(len(rows))] == alone
    assert not all(r["finished"] for r in alone) or len({r["n_new_tokens"] for r in alone}) > 1
    with pytest.raises(ValueError, match="max_new_tokens"):
        list(generate.generate_plain(m, tok, rows, max_new_tokens=0))


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
