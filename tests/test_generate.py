"""Batched greedy generation: same outputs as one at a time, resumes, keeps what it has."""
import json

import pytest

from helpers import generate, models


@pytest.fixture(scope="module")
def tiny():
    tok = models.load_tokenizer("tiny")
    return models.load_model("tiny", tokenizer=tok), tok


def _items(tok, n=6):
    qs = ["Where is Mary?", "Who holds the position of mayor in 2005?", "How many apples?",
          "Is John in the garden?", "What did Sandra pick up after she went to the office?", "Why?"]
    return [{"id": f"q{i}", "prompt": tok.apply_chat_template(
        [{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)} for i, q in enumerate(qs[:n])]


def test_batched_equals_one_at_a_time(tiny, tmp_path):
    m, tok = tiny
    items = _items(tok)
    batched = generate.generate_predictions(m, tok, items, tmp_path / "p.jsonl", max_new_tokens=12,
                                            batch_size=4, progress=False, autocast=False)
    single = [generate.generate_batch(m, tok, [it["prompt"]], max_new_tokens=12)[0] for it in items]
    assert [b["prediction"] for b in batched] == [s["prediction"] for s in single]
    assert [b["id"] for b in batched] == [it["id"] for it in items]


def test_resumes_and_regenerates_changed_prompts(tiny, tmp_path):
    m, tok = tiny
    items = _items(tok)
    out = tmp_path / "p.jsonl"
    generate.generate_predictions(m, tok, items[:3], out, max_new_tokens=8, progress=False, autocast=False)
    first = out.read_text().splitlines()
    # a torn last line (killed mid-write) is regenerated, not fatal
    out.write_text("\n".join(first) + '\n{"id": "q9", "predic')
    res = generate.generate_predictions(m, tok, items, out, max_new_tokens=8, progress=False, autocast=False)
    assert len(res) == 6
    lines = [json.loads(x) for x in out.read_text().splitlines()[:3]]
    assert lines == [json.loads(x) for x in first]  # kept, not recomputed
    changed = [dict(items[0], prompt=items[0]["prompt"] + "x")] + items[1:]
    generate.generate_predictions(m, tok, changed, out, max_new_tokens=8, progress=False, autocast=False)
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
