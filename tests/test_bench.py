"""`make bench`: runs on the smoke profile and writes a well-formed report. No speed is
asserted anywhere (the targets live in the benchmark's report, not in tests)."""
import json
import math
import os
import subprocess
import sys
import time

import pandas as pd
import pytest

from helpers import config, paths

sys.path.insert(0, str(paths.ROOT / "benchmarks"))  # the benchmark lives outside the study package
import bench  # noqa: E402

SCRIPT = paths.ROOT / "benchmarks" / "bench.py"


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--profile", "smoke", "--parts", "gen,sft,gpu",
                           "--out", str(out)], cwd=paths.ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "bench.json").read_text()), (out / "bench.md").read_text()


def _close(a, b, rel=1e-3):
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-3)


def test_report_header_and_machine(smoke_report):
    rep, _ = smoke_report
    assert rep["profile"] == "smoke"
    assert set(rep["parts"]) == {"gen", "sft", "gpu"}
    m = rep["machine"]
    assert m["cpu_count"] >= 1 and m["ram_gb"] > 0 and m["torch_threads"] >= 1
    assert rep["environment"]["versions"]["torch"] and rep["environment"]["versions"]["transformers"]
    assert all("error" not in p for p in rep["parts"].values())


def test_generation_part_is_consistent(smoke_report):
    rep, _ = smoke_report
    g = rep["parts"]["gen"]
    n = g["settings"]["n_prompts"]
    assert list(g["students"]) == list(bench.GEN_STUDENTS)
    assert g["settings"]["shared_prefix_tokens"] > 0  # the system prompt and instruction
    ratios = []
    for key, st in g["students"].items():
        for k in ("baseline", "project", "project_fp32"):
            r = st[k]
            assert r["items"] == n and r["seconds"] > 0
            assert 0 < r["generated_tokens"] <= n * g["settings"]["max_new_tokens"]
            assert _close(r["tokens_per_s"], r["generated_tokens"] / r["seconds"], rel=0.01)
            assert _close(r["items_per_s"], r["items"] / r["seconds"], rel=0.01)
            assert r["cpu_s"] > 0 and 0 <= r["others_cpu_frac"] <= 1
        assert _close(st["ratios"]["tokens_per_s"], st["project"]["tokens_per_s"] / st["baseline"]["tokens_per_s"])
        assert _close(st["ratios"]["items_per_s"], st["project"]["items_per_s"] / st["baseline"]["items_per_s"])
        for a in st["agreement"].values():
            assert a["n"] == n and a["identical"] + a["differ"] == n and len(a["differ_ids"]) == a["differ"]
            assert 0 <= a["answer_differs"] <= a["differ"]
        # batching with the shared prefix, in the model's own dtype, must not change greedy outputs
        assert st["agreement"]["project_fp32_vs_one_at_a_time"]["differ"] == 0, key
        ratios += [st["ratios"]["items_per_s"], st["ratios"]["tokens_per_s"]]
    trace = g["students"]["trace"]["student"]
    assert trace["steps"] == bench.SIZES["smoke"]["sft_steps"] and trace["loss_last"] < trace["loss_first"]
    t = g["target"]
    assert t["value"] == min(ratios)
    assert t["min_ratio"] == 5.0 and t["met"] == (t["value"] >= 5.0)


def test_sft_part_counts_the_same_tokens_for_both(smoke_report):
    rep, _ = smoke_report
    s = rep["parts"]["sft"]
    steps = s["settings"]["steps"]
    for k in ("baseline", "project"):
        r = s[k]
        # exactly one epoch over the same examples: every non-padding token counted once
        assert r["non_padding_tokens"] == s["settings"]["tokens_in_examples"]
        assert r["fed_tokens"] >= r["non_padding_tokens"] and r["seconds"] > 0
        assert r["cpu_s"] > 0 and 0 <= r["others_cpu_frac"] <= 1
        assert _close(r["tokens_per_s"], r["non_padding_tokens"] / r["seconds"], rel=0.01)
        assert len(r["loss_curve"]) == steps and all(x > 0 for x in r["loss_curve"])
        assert r["eval_loss"] > 0
    assert s["baseline"]["bf16_autocast"] is False
    p = s["project"]
    assert 0 <= p["checkpoint_seconds"] < p["seconds"] and p["checkpoints_saved"] >= 1
    assert p["tokens_per_s_without_checkpoints"] >= p["tokens_per_s"]
    for ds, r in s["padding_at_run_size"].items():
        assert r["examples"] == config.load_profile("smoke")["n_train"]
        assert 0 < r["random_efficiency"] <= 1 and 0 < r["grouped_efficiency"] <= 1
        assert _close(r["random_over_grouped_fed_tokens"], r["grouped_efficiency"] / r["random_efficiency"], rel=0.01)
    assert _close(s["ratios"]["tokens_per_s"], s["project"]["tokens_per_s"] / s["baseline"]["tokens_per_s"])
    a = s["loss_agreement"]
    assert a["same_initial_adapter"] is True and a["steps"] == steps
    mad = sum(abs(x - y) for x, y in zip(s["project"]["loss_curve"], s["baseline"]["loss_curve"])) / steps
    assert _close(a["mean_abs_diff"], mad, rel=0.01)
    assert s["target"]["met"] == (s["target"]["value"] >= 1.5)


def test_gpu_part_skipped_on_cpu_and_markdown_mentions_every_part(smoke_report):
    import torch

    rep, md = smoke_report
    if not torch.cuda.is_available():
        assert rep["parts"]["gpu"]["skipped"] == bench.NO_CUDA
        assert bench.NO_CUDA in md
    for title in ("Evaluation generation", "Fine-tuning", "GPU", "## Targets"):
        assert title in md
    for st in rep["parts"]["gen"]["students"].values():
        assert f"{st['ratios']['tokens_per_s']:,.2f}x" in md
    assert [t["part"] for t in rep["targets"]] == ["gen", "sft"]


# --------------------------------------------------------------------------------- part 3
def _items(em):
    """items.parquet rows: em[(dataset, condition)] = list of answer_em."""
    rows = []
    for (ds, cond), vals in em.items():
        for k, v in enumerate(vals):
            rows.append({"dataset": ds, "model": "m", "condition": cond, "seed": 0, "id": f"{ds}/{k}",
                         "answer_em": bool(v)})
    return pd.DataFrame(rows)


def test_accuracy_lift_per_dataset():
    items = _items({("babi", "untrained"): [0, 0, 0, 1], ("babi", "vanilla"): [1, 1, 1, 0],
                    ("babi", "correct"): [1, 1, 0, 0], ("babi", "krsl"): [0, 0, 0, 0],
                    ("marco", "untrained"): [0, 0], ("marco", "vanilla"): [1, 0], ("marco", "correct"): [1, 1]})
    res = bench.accuracy_lift(items, lift_conditions=("vanilla", "correct"), min_lift=0.25)
    t = {(r["dataset"], r["condition"]): r for r in res["table"]}
    assert t[("babi", "vanilla")]["answer_em"] == 0.75 and t[("babi", "vanilla")]["lift"] == 0.5
    assert t[("babi", "correct")]["lift"] == 0.25 and t[("babi", "untrained")]["lift"] is None
    assert t[("babi", "krsl")]["lift"] == -0.25  # reported, not part of the criterion
    # paired with the untrained student item by item: 3 gained, 1 lost, exact McNemar p = 2 * 5/16
    v = t[("babi", "vanilla")]
    assert (v["gained"], v["lost"]) == (3, 1) and v["p_mcnemar"] == 0.625
    assert (t[("babi", "krsl")]["gained"], t[("babi", "krsl")]["lost"]) == (0, 1)
    assert t[("babi", "untrained")]["p_mcnemar"] is None
    assert (bench._p(0.00012), bench._p(0.0051), bench._p(None)) == ("<0.001", "0.0051", "")
    assert res["min_lift"] == 0.25 and res["met"] is True
    res = bench.accuracy_lift(items, lift_conditions=("vanilla", "correct", "krsl"), min_lift=0.25)
    assert res["met"] is False and any("krsl" in s for s in res["short_of_target"])
    with pytest.raises(ValueError, match="answer_em"):
        bench.accuracy_lift(items.drop(columns="answer_em"))


def _fake_make(tmp_path, fail_stage=None):
    """A Makefile whose stages each hold ~60 MB for a moment (and one can fail)."""
    rules = []
    for st in ("clean",) + bench.REPRO_STAGES:
        body = (f"\t{sys.executable} -c \"import time; x = bytearray(60_000_000); time.sleep(0.3); "
                f"print('$@ $(PROFILE)')\"")
        if st == fail_stage:
            body += "\n\texit 3"
        rules.append(f"{st}:\n{body}\n")
    mk = tmp_path / "Makefile"
    mk.write_text(".PHONY: " + " ".join(("clean",) + bench.REPRO_STAGES) + "\n" + "\n".join(rules))
    return ["make", "-f", str(mk)]


def test_reproduce_measures_every_stage(tmp_path):
    items = _items({("babi", "untrained"): [0, 0], ("babi", "vanilla"): [1, 1], ("babi", "correct"): [1, 1],
                    ("babi", "incorrect"): [1, 0]})
    ip = tmp_path / "items.parquet"
    items.to_parquet(ip)
    res = bench.bench_reproduce("smoke", tmp_path / "w", make=_fake_make(tmp_path), cwd=tmp_path, items_path=ip)
    assert list(res["stages"]) == list(bench.REPRO_STAGES)
    for st, r in res["stages"].items():
        assert r["returncode"] == 0 and r["wall_s"] >= 0.3
        assert r["peak_rss_mb"] >= 55, r  # the stage's 60 MB buffer is seen
        assert f"{st} smoke" in open(r["log"]).read()
    assert _close(res["total_wall_s"], sum(r["wall_s"] for r in res["stages"].values()), rel=0.01)
    assert res["accuracy"]["min_lift"] == 0.5 and res["accuracy"]["met"] is True
    assert res["target"]["wall_met"] is True and res["target"]["met"] is True
    md = bench.render_md({"profile": "smoke", "created": "now", "machine": bench.machine_info(),
                          "parts": {"reproduce": res}, "targets": bench.summary_targets({"reproduce": res})})
    assert "make reproduce" in md and "correlation" in md and "| babi | m | vanilla |" in md


def test_reproduce_stops_at_a_failed_stage(tmp_path):
    res = bench.bench_reproduce("smoke", tmp_path / "w", make=_fake_make(tmp_path, fail_stage="traces"),
                                cwd=tmp_path, items_path=tmp_path / "none.parquet")
    assert res["failed_stage"] == "traces" and res["stages"]["traces"]["returncode"] != 0
    assert "sft" not in res["stages"]
    assert res["target"]["met"] is False and "traces" in res["accuracy"]["skipped"]


# --------------------------------------------------------------------------------- part 4
def test_paper_model_configs_have_the_real_sizes():
    n_llama = bench.n_params(bench.gpu_model_config("llama-3.2-1b"))
    n_qwen = bench.n_params(bench.gpu_model_config("qwen3-1.7b"))
    assert 1.23e9 < n_llama < 1.24e9  # Llama-3.2-1B: 1.236 B with tied embeddings
    assert 1.71e9 < n_qwen < 1.73e9   # Qwen3-1.7B: 1.721 B with tied embeddings


def test_stopwatch_sees_other_processes_use_the_cpu():
    busy = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 2.5: pass"])
    try:
        time.sleep(0.5)  # the busy loop is running before the window opens and after it closes
        with bench.Stopwatch() as shared:
            time.sleep(1.0)
    finally:
        busy.wait()
    assert shared.cpu < 0.2  # sleeping costs this process nothing
    # the busy loop alone keeps (nearly) one of os.cpu_count() cores busy during the window
    assert 0.4 / (os.cpu_count() or 1) < shared.others <= 1
    assert abs(shared.wall - 1.0) < 0.2
    assert bench.contention_note({"others_cpu_frac": 0.05}) is None
    assert "40%" in bench.contention_note({"others_cpu_frac": 0.05}, {"others_cpu_frac": 0.4})


def test_gpu_peaks_and_mfu():
    assert bench.peak_bf16_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert bench.peak_bf16_flops("NVIDIA H100 PCIe") == 756e12
    assert bench.peak_bf16_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert bench.peak_bf16_flops("Some Future GPU") is None
    assert math.isclose(bench.mfu(10**9, 1000.0, 6e12), 1.0)
    assert bench.mfu(10**9, 1000.0, None) is None


def _cfg(**kw):
    """The paper profile with some keys replaced."""
    return {**config.load_profile("paper"), **kw}


def test_shipped_configs_are_the_hub_configs_and_the_shape_arithmetic_counts_every_parameter():
    llama, qwen = bench.model_config_dict("llama-3.2-1b"), bench.model_config_dict("qwen3-1.7b")
    assert (llama["hidden_size"], llama["num_hidden_layers"], llama["num_attention_heads"], llama["num_key_value_heads"],
            llama["head_dim"], llama["intermediate_size"], llama["vocab_size"]) == (2048, 16, 32, 8, 64, 8192, 128256)
    assert llama["rope_scaling"]["rope_type"] == "llama3" and llama["tie_word_embeddings"] is True
    assert (qwen["hidden_size"], qwen["num_hidden_layers"], qwen["num_attention_heads"], qwen["num_key_value_heads"],
            qwen["head_dim"], qwen["intermediate_size"], qwen["vocab_size"]) == (2048, 28, 16, 8, 128, 6144, 151936)
    for m in bench.PAPER_STUDENTS:  # the estimate's count (no torch) = the model's own
        assert bench.model_shape(m)["n_params"] == bench.n_params(bench.gpu_model_config(m))
    assert bench.gpu_model_config("llama-3.2-1b").rope_parameters["factor"] == 32.0  # rope_scaling converted
    with pytest.raises(KeyError, match="no shipped config"):
        bench.model_config_dict("gpt-2")


def test_workload_uses_each_datasets_lengths_the_splits_and_krsl():
    cfg = _cfg(models=["llama-3.2-1b"], conditions=["vanilla", "correct", "krsl"])
    wl = bench.workload(cfg)
    tr = {(r["dataset"], r["condition"]): r["tokens"] for r in wl["runs"] if r["kind"] == "train"}
    for ds, t in bench.TOKENS_PER_EXAMPLE.items():
        n = bench.PAPER_SPLITS[ds]["train"]
        assert tr[(ds, "vanilla")] == n * t["vanilla"] * 3
        assert tr[(ds, "correct")] == n * t["trace"] * 3
        assert tr[(ds, "krsl")] == n * 2 * t["trace"] * 3  # a correct and an incorrect sequence per pair
    ev = [r for r in wl["runs"] if r["kind"] == "eval"]
    assert {r["condition"] for r in ev} == {"untrained", "vanilla", "correct", "krsl"}
    assert all(r["items"] == bench.PAPER_SPLITS[r["dataset"]]["test"] and r["new_tokens_max"] == 500 for r in ev)
    # KRSL's first step is the correct run: trained once even when only krsl is named
    only = bench.workload(_cfg(models=["llama-3.2-1b"], conditions=["krsl"]))
    assert sorted(r["condition"] for r in only["runs"] if r["kind"] == "train") == sorted(["correct", "krsl"] * 3)
    # a subsample caps the split; a larger number does not exceed it
    sub = bench.workload(_cfg(models=["llama-3.2-1b"], conditions=["vanilla"], n_train={"cotempqa": 100, "marco": 10**6, "babi": 5}))
    got = {r["dataset"]: r["tokens"] for r in sub["runs"] if r["kind"] == "train"}
    assert got == {"cotempqa": 100 * 520 * 3, "marco": 5000 * 900 * 3, "babi": 5 * 190 * 3}


def test_estimate_arithmetic_scales_as_it_should(monkeypatch):
    base = bench.estimate_time(_cfg(), "h100")
    # twice the epochs: twice the training tokens and time, the evaluation unchanged
    two = bench.estimate_time(_cfg(epochs=6), "h100")
    assert two["train_tokens"] == 2 * base["train_tokens"]
    assert _close(two["train_min"], 2 * base["train_min"], rel=2e-3)
    for m in base["per_model"]:
        assert two["per_model"][m]["decode_s"] == base["per_model"][m]["decode_s"]
    # checkpointing recomputes the forward: 8/6 of the training time
    gc_on = bench.estimate_time(_cfg(gradient_checkpointing=True), "h100")
    assert _close(gc_on["train_min"], base["train_min"] * 8 / 6, rel=2e-3)
    # without KRSL the grid loses exactly the KRSL runs' tokens
    no_krsl = bench.estimate_time(_cfg(conditions=["vanilla", "correct", "incorrect"]), "h100")
    krsl_tokens = sum(2 * bench.PAPER_SPLITS[d]["train"] * t["trace"] * 3 for d, t in bench.TOKENS_PER_EXAMPLE.items()) * 2
    assert base["train_tokens"] - no_krsl["train_tokens"] == krsl_tokens
    assert base["train_runs"] == 24 and no_krsl["train_runs"] == 18 and base["eval_runs"] == 30
    # one dataset's lengths move only that dataset's lines
    monkeypatch.setitem(bench.TOKENS_PER_EXAMPLE, "babi", {"vanilla": 380, "trace": 500, "answer": 4})
    longer = bench.estimate_time(_cfg(), "h100")
    changed = [a for a, b in zip(base["arithmetic"], longer["arithmetic"]) if a != b]
    assert changed and all(" babi/" in line for line in changed)
    assert longer["total_s"] > base["total_s"]


def test_measured_speeds_replace_the_assumed_ones():
    cfg = _cfg(models=["llama-3.2-1b"])
    dev = bench.DEVICES["h100"]
    sh = bench.model_shape("llama-3.2-1b")
    seq, b = 1024, 8  # a saturated micro-batch: the measured MFU applies as it is
    u = 0.5
    tps = u * dev["peak_flops"] / bench.train_flops_per_token(sh, seq)
    meas = {"llama-3.2-1b": {"tokens_per_s": tps, "seq_len": seq, "batch_size": b, "gradient_checkpointing": False,
                             "peak_flops": dev["peak_flops"]}}
    assert _close(bench.measured_mfu(dev, sh, meas["llama-3.2-1b"]), u)
    fast = bench.estimate_time(cfg, "h100", measured_train=meas)
    slow = bench.estimate_time(cfg, "h100", measured_train={k: dict(v, tokens_per_s=tps / 2) for k, v in meas.items()})
    assert _close(slow["train_min"], 2 * fast["train_min"], rel=2e-3)
    step = bench.estimate_time(cfg, "h100", measured_decode_step_s={"llama-3.2-1b": 0.05})
    step2 = bench.estimate_time(cfg, "h100", measured_decode_step_s={"llama-3.2-1b": 0.10})
    assert _close(step2["per_model"]["llama-3.2-1b"]["decode_s"], 2 * step["per_model"]["llama-3.2-1b"]["decode_s"], rel=2e-3)
    # twice the evaluation slots: half the decoding steps (each step a little dearer: more KV cache)
    wide = bench.estimate_time(_cfg(models=["llama-3.2-1b"], eval_batch_size=256), "h100", measured_decode_step_s={"llama-3.2-1b": 0.05})
    assert _close(wide["per_model"]["llama-3.2-1b"]["decode_s"], step["per_model"]["llama-3.2-1b"]["decode_s"] / 2, rel=2e-3)


def test_profiles_keep_the_original_hyperparameters_and_colab_fits_a_t4():
    paper, colab = config.load_profile("paper"), config.load_profile("colab")
    assert list(paper) == list(colab)  # the same keys, in the same order
    for cfg in (paper, colab):
        assert cfg["method"] == "qlora" and cfg["loss_mask"] == "full" and cfg["data_source"] == "hub"
        assert (cfg["lr"], cfg["epochs"], cfg["lora_r"], cfg["lora_alpha"], cfg["lora_dropout"]) == (2e-4, 3, 16, 32, 0.05)
        assert cfg["batch_size"] * cfg["grad_accum"] == 16 and cfg["max_length"] == 1024 and cfg["max_new_tokens"] == 500
        assert cfg["lr_scheduler"] == "cosine" and cfg["warmup_ratio"] == 0.1 and cfg["seeds"] == [0]
    assert paper["conditions"] == ["vanilla", "correct", "incorrect", "krsl"] and paper["n_train"] is None
    assert len(colab["models"]) == 1 and colab["models"][0] in bench.PAPER_STUDENTS
    assert colab["conditions"] == ["vanilla", "correct", "incorrect"] and colab["eval_untrained"]
    assert colab["gradient_checkpointing"]  # a T4's memory needs it
    est = bench.estimate_time(colab, "t4")
    assert est["per_model"][colab["models"][0]]["peak_train_memory_gb"] < bench.DEVICES["t4"]["memory_gb"]
    assert est["total_min_max"] + 15 <= 120  # setup (install, downloads) included: the profile's design


def test_estimates_render_and_name_their_basis():
    est = bench.estimates()
    assert set(est) >= {"paper_h100", "paper_h100_original_settings", "colab_t4", "target"}
    assert est["paper_h100_original_settings"]["settings"]["gradient_checkpointing"] is True
    assert est["paper_h100"]["total_s"] < est["paper_h100_original_settings"]["total_s"]
    md = "\n".join(bench._estimates_md(est))
    assert "paper_h100_original_settings" in md and "6·N" in md and "colab_t4" in md
    gap = bench.target_gap(est["paper_h100"], 90 * 60)
    if not gap["met"]:
        assert gap["train_speedup_needed"] > 1 and "not met" in md
    assert bench.target_gap({**est["paper_h100"], "total_s": 60.0}, 90 * 60)["met"] is True


def test_gpu_code_path_runs_on_cpu_with_a_small_config(tmp_path):
    """The CUDA part's training and generation loops, on CPU with a small Llama config (no
    QLoRA, no MFU: those need a GPU)."""
    from transformers import LlamaConfig

    small = LlamaConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                        tie_word_embeddings=True, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    sizes = {"gpu_seq_len": 32, "gpu_steps": 2, "gpu_gen_prompt_len": 8, "gpu_gen_new_tokens": 4}
    res = bench.bench_gpu(config.load_profile("smoke"), sizes, tmp_path, device="cpu", model_configs={"small": small})
    e = res["models"]["small"]
    assert e["n_params"] == sum(p.numel() for p in __import__("transformers").LlamaForCausalLM(small).parameters())
    assert set(e) == {"n_params", "lora", "generation"}
    assert e["lora"]["tokens_per_s"] > 0 and e["lora"]["steps"] == 2 and e["lora"]["mfu"] is None
    assert e["lora"]["batch_size"] == config.load_profile("paper")["batch_size"]
    assert e["generation"]["tokens_per_s"] > 0
    assert "paper_grid_estimate" not in res  # only with both paper models on CUDA


def test_gpu_section_renders(tmp_path):
    res = {"device": "NVIDIA H100 80GB HBM3", "peak_bf16_flops": 989e12,
           "models": {"llama-3.2-1b": {"n_params": 1235814400,
                                       "lora": {"seq_len": 512, "batch_size": 4, "tokens_per_s": 20000.0, "mfu": 0.15,
                                                "peak_gpu_mem_gb": 12.0},
                                       "qlora": {"error": "ImportError: no bitsandbytes"},
                                       "generation": {"batch_size": 32, "prompt_len": 512, "new_tokens": 128,
                                                      "tokens_per_s": 3000.0, "peak_gpu_mem_gb": 5.0}}},
           "target": {"max_s": 5400, "value_s": 3600.0, "met": True},
           "paper_grid_estimate": {"runs": 18, "method": "lora", "total_min": 60.0, "assumptions": {"note": "assumed"}}}
    md = bench.render_md({"profile": "quick", "created": "now", "machine": bench.machine_info(),
                          "parts": {"gpu": res}, "targets": bench.summary_targets({"gpu": res})})
    assert "| llama-3.2-1b | 1,235,814,400 | lora | 512 | 4 | 20,000.00 | 0.15 | 12.00 |" in md
    assert "failed: ImportError" in md and "**60.0 min**" in md
    assert bench.summary_targets({"gpu": res})[0]["value"] == 60.0


def test_a_failing_part_is_recorded_and_the_report_still_written(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("simulated failure in part 4")

    monkeypatch.setattr(bench, "bench_gpu", boom)
    rep = bench.run("smoke", ["gpu"], out=tmp_path)
    assert "simulated failure in part 4" in rep["parts"]["gpu"]["error"]
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["parts"]["gpu"]["error"] == rep["parts"]["gpu"]["error"]
    assert "Failed" in (tmp_path / "bench.md").read_text()
    with pytest.raises(ValueError, match="unknown parts"):
        bench.run("smoke", ["gpu", "nonsense"], out=tmp_path)
    assert bench.default_out("quick") == paths.RESULTS / "bench"
    assert bench.default_out("smoke") == paths.RESULTS / "bench" / "smoke"
    assert "reproduce" not in bench.default_parts("smoke") and "reproduce" in bench.default_parts("quick")


def test_parts_of_an_earlier_run_are_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "bench_gpu", lambda *a, **k: {"skipped": "first run"})
    first = bench.run("smoke", ["gpu"], out=tmp_path)
    monkeypatch.setattr(bench, "bench_reproduce", lambda *a, **k: {
        "profile": "smoke", "stages": {}, "total_wall_s": 1.0, "peak_rss_mb": None, "peak_tree_rss_mb": None})
    second = bench.run("smoke", ["reproduce"], out=tmp_path)
    assert second["parts"]["gpu"]["skipped"] == "first run"
    assert second["parts"]["gpu"]["measured_in_earlier_run"] == first["created"]
    assert "measured_in_earlier_run" not in second["parts"]["reproduce"]
    # re-running a part replaces it
    monkeypatch.setattr(bench, "bench_gpu", lambda *a, **k: {"skipped": "second run"})
    third = bench.run("smoke", ["gpu"], out=tmp_path)
    assert third["parts"]["gpu"]["skipped"] == "second run" and "reproduce" in third["parts"]


def test_parts_of_an_older_report_layout_are_not_kept(tmp_path, monkeypatch):
    (tmp_path / "bench.json").write_text(json.dumps({"schema": bench.SCHEMA - 1, "created": "old",
                                                     "parts": {"gen": {"ratios": {}}}}))
    monkeypatch.setattr(bench, "bench_gpu", lambda *a, **k: {"skipped": "now"})
    rep = bench.run("smoke", ["gpu"], out=tmp_path)
    assert "gen" not in rep["parts"] and rep["schema"] == bench.SCHEMA


def test_training_memory_estimate():
    sh = bench.model_shape("qwen3-1.7b")
    w = sh["n_params"] * 0.55 / 1024 ** 3
    one = bench.train_memory_gb(sh, 8192, "qlora", False)
    assert _close(bench.train_memory_gb(sh, 16384, "qlora", False) - w, 2 * (one - w))  # linear in tokens
    assert bench.train_memory_gb(sh, 8192, "qlora", True) < one / 2  # checkpointing (the logits stay)
    assert bench.train_memory_gb(sh, 8192, "qlora", False, logit_tokens=1024) < one        # loss on fewer positions
    assert bench.train_memory_gb(sh, 8192, "lora", False) > one                            # bf16 weights
    # the paper grid's peak is a KRSL micro-batch (twice the rows, the loss on the completion only)
    est = bench.estimate_time(_cfg(), "h100")
    no_krsl = bench.estimate_time(_cfg(conditions=["vanilla", "correct", "incorrect"]), "h100")
    for m in bench.PAPER_STUDENTS:
        assert est["per_model"][m]["peak_train_memory_gb"] > no_krsl["per_model"][m]["peak_train_memory_gb"]
        assert est["per_model"][m]["peak_train_memory_gb"] < bench.DEVICES["h100"]["memory_gb"]


def test_the_benchmark_is_outside_the_study_package_and_reruns_no_stage():
    """benchmarks/bench.py is no stage's code (stamps) and no notebook's prerequisite (the
    Makefile's SRC), while the engine subpackage is both; `--estimate` runs as a script."""
    assert not (paths.ROOT / "src" / "helpers" / "bench.py").exists()
    hashed = {f for stage in config.STAGE_MODULES for f in config.code_hashes(stage)}
    assert not any("bench" in f for f in hashed)
    for stage in ("sft", "krsl", "eval", "teacher"):
        assert {"engine/generation.py", "engine/training.py"} <= set(config.code_hashes(stage)), stage
    db = subprocess.run(["make", "-pn", "help"], cwd=paths.ROOT, capture_output=True, text=True, timeout=60).stdout
    src = next(line for line in db.splitlines() if line.startswith("SRC :=")).split()[2:]
    assert "src/helpers/engine/generation.py" in src and "src/helpers/sft.py" in src
    assert not any(f.startswith("benchmarks/") for f in src)
    est = subprocess.run([sys.executable, str(SCRIPT), "--estimate"], cwd=paths.ROOT, capture_output=True, text=True,
                         timeout=120)
    assert est.returncode == 0 and "paper_h100" in est.stdout, est.stderr[-2000:]

