"""`make gpu-check` (benchmarks/gpu_check.py): without CUDA it says so and exits 0; its CPU smoke
runs every stage's code path (the project's SFT, save, merge, generation engine vs generate,
the bench's GPU part) with tiny shapes. No speed is asserted."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from helpers import config, paths

SCRIPT = paths.ROOT / "benchmarks" / "gpu_check.py"
sys.path.insert(0, str(SCRIPT.parent))  # the benchmarks live outside the study package
import bench  # noqa: E402


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def gc_mod():
    return _module()


@pytest.fixture(scope="module")
def smoke(gc_mod, tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check") / "gpu_check.json"
    rep = gc_mod.run(out, cpu_smoke=True)
    return rep, json.loads(out.read_text())


def test_without_cuda_it_says_so_writes_json_and_exits_0(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "gpu_check.json"
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], cwd=paths.ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "no CUDA device" in proc.stdout
    rep = json.loads(out.read_text())
    assert "no CUDA device" in rep["skipped"] and rep["checks"] == {}
    assert rep["environment"]["versions"]["torch"] and "git_commit" in rep["environment"]
    assert rep["config"]["paper_profile"]["models"] == list(bench.PAPER_STUDENTS)


def test_cpu_smoke_runs_every_stage_and_records_it(smoke, gc_mod):
    rep, saved = smoke
    assert rep["failed"] == [], {k: v.get("error", "")[-1500:] for k, v in rep["checks"].items()}
    assert list(saved["checks"]) == ["student", "shape:llama-3.2-1b", "shape:qwen3-1.7b", "bench_gpu"]
    assert saved["mode"] == "cpu-smoke" and saved["config"]["method"] == "qlora"
    assert saved["environment"]["versions"]["transformers"] and saved["table"] == rep["table"]
    sz = gc_mod.SIZES["cpu-smoke"]
    for key in ("student", "shape:llama-3.2-1b", "shape:qwen3-1.7b"):
        r = saved["checks"][key]
        tr = r["train"]
        assert tr["steps"] == sz["student_steps" if key == "student" else "shape_steps"] and tr["finite"]
        assert tr["batch_size"] == config.load_profile("paper")["batch_size"] and tr["tokens_per_s"] > 0
        if key != "student":  # random-id sequences of one length, no padding: every timed step trains batch x seq tokens
            assert tr["timed_tokens"] == tr["timed_steps"] * tr["batch_size"] * tr["seq_len"]
        g = r["generation"]
        assert g["identical"] + g["differ"] == g["items"] > 0
        assert g["project"]["new_tokens"] > 0 and g["plain_generate"]["new_tokens"] > 0 and g["speed_ratio"] > 0
        assert key in rep["table"]
    st = saved["checks"]["student"]
    assert st["model"] == "tiny" and "adapter_model.safetensors" in st["adapter_files"]
    assert st["merge"]["peft_layers_left"] == 0  # merged, not an adapter on top
    # fp32 on the CPU: the engine and plain generate agree on every greedy output
    assert st["generation"]["identical"] == st["generation"]["items"]
    for m in bench.PAPER_STUDENTS:
        r = saved["checks"][f"shape:{m}"]
        assert r["shape"] == "tiny" and r["train"]["seq_len"] == 32 and r["train_krsl_batch"]["finite"]
        assert r["train_krsl_batch"]["batch_size"] == 2 * r["train"]["batch_size"]
        assert r["merge"]["adapter_changed_logits"] and r["merge"]["relative_diff"] < 1e-4
    b = saved["checks"]["bench_gpu"]
    assert b["models"]["llama-3.2-1b (tiny)"]["lora"]["tokens_per_s"] > 0


def test_shaped_configs_are_the_paper_students(gc_mod):
    for m in bench.PAPER_STUDENTS:
        real, ids = gc_mod.shaped_config(m, tiny=False)
        hub = bench.model_config_dict(m)
        assert (real.model_type, real.hidden_size, real.num_hidden_layers, real.vocab_size) == \
               (hub["model_type"], hub["hidden_size"], hub["num_hidden_layers"], hub["vocab_size"])
        assert (real.pad_token_id, real.eos_token_id) == (ids["pad"], ids["eos"]) == tuple(gc_mod.SPECIAL_IDS[m].values())
        tiny, tids = gc_mod.shaped_config(m, tiny=True)
        assert tiny.model_type == hub["model_type"] and tiny.vocab_size == gc_mod.TINY_SHAPE["vocab_size"]
        assert tids["pad"] != tids["eos"] and max(tids.values()) < tiny.vocab_size
    assert gc_mod.shaped_config("llama-3.2-1b", tiny=True)[0].rope_parameters["rope_type"] == "llama3"


def test_table_names_a_failed_or_skipped_stage(gc_mod):
    rep = {"mode": "gpu", "device": {"device": "cuda", "name": "NVIDIA H100 80GB HBM3"}, "wall_s": 1.0,
           "checks": {"student": {"error": "Traceback ...\nRuntimeError: CUDA out of memory"},
                      "shape:qwen3-1.7b": {"skipped": "time budget: 20 s left of 480 s"},
                      "bench_gpu": {"error": "Traceback\nImportError: no bitsandbytes"}}}
    md = gc_mod.table(rep)
    assert "FAILED: RuntimeError: CUDA out of memory" in md and "time budget" in md
    assert "bench GPU part FAILED: ImportError: no bitsandbytes" in md
    assert "no CUDA device" in gc_mod.table({"mode": "gpu", "device": {"device": "cpu"}, "skipped": gc_mod.NO_CUDA})
