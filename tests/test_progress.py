"""Progress lines (helpers.progress): when they are printed (a fake clock, no sleeping), what
they carry, and that training and generation report through them."""
import io
import re

import pytest

from helpers import progress
from helpers.progress import Cadence, Progress, format_duration


class Clock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


def test_format_duration():
    assert [format_duration(s) for s in (0, 45.4, 185, 3599, 6240, None, -1)] == \
        ["0s", "45s", "3m05s", "59m59s", "1h44m", "?", "?"]


def due_steps(cadence, clock, n, seconds_per_step):
    """The steps (1..n) after which ``cadence`` prints, one step every ``seconds_per_step``."""
    hits = []
    for step in range(1, n + 1):
        clock.t += seconds_per_step
        if cadence.due(step):
            hits.append(step)
    return hits


def test_cadence_every_interval_for_a_long_run():
    """A slow run (13 s a step, 60 steps = 13 min): a line at least every 30 s and at every
    tenth, never more often than every 5 s."""
    clock = Clock()
    printed = due_steps(Cadence(60, clock=clock), clock, 60, 13)
    gaps = [b - a for a, b in zip([0] + printed, printed)]
    assert max(gaps) <= 3, "39 s >= 30 s: every third step at the latest"
    assert all(s in printed for s in range(6, 61, 6)), "every tenth of the run"
    assert printed[-1] == 60 and len(printed) <= 30


def test_cadence_tenths_for_a_short_run_and_no_flood_for_a_fast_one():
    clock = Clock()
    assert due_steps(Cadence(100, clock=clock), clock, 100, 1) == [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    clock = Clock()
    fast = Cadence(1000, clock=clock)
    assert due_steps(fast, clock, 1000, 0.001) == [1000], \
        "a one-second loop prints only its end (the start line is the caller's)"
    assert [fast.due(1000), fast.due(1000)] == [False, False], "the end once"


def test_cadence_resumed_run_counts_tenths_from_its_start():
    clock = Clock()
    c = Cadence(100, start=35, clock=clock)
    clock.t += 10
    assert not c.due(36) and not c.due(39)
    assert c.due(40), "the next tenth after the checkpoint"


def test_lines_carry_step_loss_rate_and_eta():
    clock, out = Clock(), io.StringIO()
    p = Progress(10, "sft babi/tiny/correct/seed0", clock=clock, stream=out, bar=False)
    for step in range(1, 11):
        clock.t += 10                      # 10 s and 500 tokens a step
        p.update(step, tokens=500 * step, loss=2.0 - 0.1 * step)
    lines = out.getvalue().splitlines()
    assert lines[0] == "[sft babi/tiny/correct/seed0] 10 steps"
    assert lines[1] == "[sft babi/tiny/correct/seed0] step 1/10 (10%) | loss 1.900 | 50.0 tok/s | 10s elapsed | ETA 1m30s"
    assert lines[3] == "[sft babi/tiny/correct/seed0] step 3/10 (30%) | loss 1.700 | 50.0 tok/s | 30s elapsed | ETA 1m10s"
    assert lines[-1] == "[sft babi/tiny/correct/seed0] step 10/10 (100%) | loss 1.000 | 50.0 tok/s | 1m40s elapsed | done"
    assert len(lines) == 11
    p.close()
    assert len(out.getvalue().splitlines()) == 11, "closing twice adds nothing"


def test_stopped_run_and_resumed_eta():
    clock, out = Clock(), io.StringIO()
    p = Progress(100, "x", start=50, tokens=1000, clock=clock, stream=out, bar=False, rate_label="new tok/s",
                 unit="item")
    clock.t += 60
    p.update(60, tokens=7000)              # 10 items in 60 s: 40 left -> 4 min; 6000 tokens / 60 s
    assert p.line() == "[x] item 60/100 (60%) | 100 new tok/s | 1m00s elapsed | ETA 4m00s"
    p.close()
    assert out.getvalue().splitlines()[0] == "[x] 100 items, resuming after 50"
    assert out.getvalue().splitlines()[-1].endswith("| stopped before the end")


def test_disabled_prints_nothing(capsys):
    p = Progress(3, "quiet", enabled=False)
    p.update(1)
    p.close()
    assert capsys.readouterr().out == ""


def test_no_widget_outside_a_kernel():
    assert progress.widget_bar(10, "x") is None


# --------------------------------------------------------------------------------------
# the trainer and generation report through it
# --------------------------------------------------------------------------------------
def test_trainer_reports_steps(tmp_path, capsys):
    from helpers import config, sft

    cfg = config.load_profile("smoke")
    cfg.update(max_steps=5, batch_size=2, grad_accum=1)
    config.seed_everything(0)
    model, tok = sft.load_for_training(cfg, "tiny")
    exs = [{"input_ids": list(range(5, 25)), "labels": list(range(5, 25))}] * 4
    trainer = sft.build_trainer(cfg, model, tok, exs, tmp_path, save_strategy="no", desc="sft probe")
    trainer.train()
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "[sft probe] 5 steps"
    assert re.fullmatch(r"\[sft probe\] step 5/5 \(100%\) \| loss \d+\.\d{3} \| [\d,.]+ tok/s \| \d+s elapsed \| done",
                        out[-1]), out
    assert not any(l.startswith("{") for l in out), "no per-step log dicts"
    # each line's loss is the mean of the losses logged since the previous line
    logged = {h["step"]: h["loss"] for h in trainer.state.log_history if "loss" in h}
    prev = 0
    for line in out[1:]:
        step, loss = re.search(r"step (\d+)/5 .*loss (\d+\.\d+)", line).groups()
        window = [logged[k] for k in range(prev + 1, int(step) + 1)]
        assert float(loss) == pytest.approx(sum(window) / len(window), abs=1e-3)
        prev = int(step)


def test_generation_reports_items(tmp_path, capsys):
    from helpers import generate, models

    tok = models.load_tokenizer("tiny", padding_side="left")
    model = models.load_model("tiny", tokenizer=tok)
    items = [{"id": f"q{i}", "prompt": f"Where is Mary {i}?"} for i in range(3)]
    generate.generate_predictions(model, tok, items, tmp_path / "p.jsonl", max_new_tokens=4, bf16=False,
                                  desc="babi/tiny/correct/seed0")
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "[generate babi/tiny/correct/seed0] 3 items"
    assert re.fullmatch(r"\[generate babi/tiny/correct/seed0\] item 3/3 \(100%\) \| [\d,.]+ new tok/s \| "
                        r"\d+s elapsed \| done", out[-1]), out


def test_skipped_units_do_not_set_the_pace():
    """Runs that were fresh (skipped in no time) count as done, not toward the ETA."""
    clock, out = Clock(), io.StringIO()
    p = Progress(4, "SFT runs", unit="run", rate_label="", clock=clock, stream=out, bar=False,
                 interval_s=0, min_gap_s=0)
    p.skip(1, last="a (fresh: skipped)")
    p.skip(2, last="b (fresh: skipped)")
    clock.t += 600
    p.update(3, last="c")                  # one trained run took 10 min: one left -> 10 min
    lines = out.getvalue().splitlines()
    assert lines[1] == "[SFT runs] run 1/4 (25%) | last a (fresh: skipped) | 0s elapsed | ETA ?"
    assert lines[3] == "[SFT runs] run 3/4 (75%) | last c | 10m00s elapsed | ETA 10m00s"


def test_an_empty_loop_says_nothing():
    out = io.StringIO()
    p = Progress(0, "KRSL runs", unit="run", stream=out, bar=False)
    p.close()
    assert out.getvalue() == ""
