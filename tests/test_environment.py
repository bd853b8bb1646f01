"""The frame of the study: one source of dependencies, profiles, notebooks, Makefile."""
import json
import re
import subprocess
import tomllib

import pytest
import yaml

from helpers import config, paths

NOTEBOOKS = ["01_data", "02_decompose", "03_traces", "04_sft", "05_eval", "06_correlation"]


def _pyproject():
    return tomllib.loads((paths.ROOT / "pyproject.toml").read_text())


def test_environment_yml_agrees_with_pyproject():
    env = yaml.safe_load((paths.ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    py = [d for d in deps if isinstance(d, str) and d.startswith("python")]
    assert py, "environment.yml pins no python"
    version = py[0].split("=")[-1]
    spec = _pyproject()["project"]["requires-python"]  # e.g. >=3.10,<3.13
    lo = re.search(r">=\s*([\d.]+)", spec).group(1)
    hi = re.search(r"<\s*([\d.]+)", spec).group(1)
    as_tuple = lambda v: tuple(int(x) for x in v.split("."))
    assert as_tuple(lo) <= as_tuple(version) < as_tuple(hi)
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    assert any(p.startswith("-e .") for p in pip), "environment.yml must install the project itself"
    pinned = {re.split(r"[=<>]", d)[0].lower(): d for d in _pyproject()["project"]["dependencies"]}
    for p in pip:
        if p.startswith("-e"):
            continue
        name = re.split(r"[=<>\[]", p)[0].lower()
        assert name in pinned, f"{p} in environment.yml but not in pyproject.toml"
        assert pinned[name] == p, f"environment.yml {p} != pyproject.toml {pinned[name]}"


def test_every_dependency_is_pinned():
    for d in _pyproject()["project"]["dependencies"]:
        assert "==" in d, f"{d} is not pinned"


def test_profiles_share_the_same_keys():
    keys = {p.stem: list(config.load_profile(p.stem)) for p in paths.PROFILES.glob("*.yaml")}
    assert {"smoke", "quick", "paper"} <= set(keys)
    for name, k in keys.items():
        assert k == keys["quick"], f"profile {name} keys differ from quick"


def test_unknown_profile_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="available"):
        config.load_profile("nope")


def test_from_params_checks_keys():
    ns = dict(config.load_profile("smoke"))
    assert config.from_params(ns)["profile"] == "smoke"
    del ns["lr"]
    with pytest.raises(KeyError, match="lr"):
        config.from_params(ns)
    ns = dict(config.load_profile("smoke"), data_source="local", data_dir="")
    with pytest.raises(ValueError, match="data_dir"):
        config.from_params(ns)


def test_config_hash_is_stable_and_sensitive(tmp_path):
    a = {"lr": 2e-4, "steps": 3.0, "ds": ["x"]}
    assert config.config_hash(a) == config.config_hash({"ds": ["x"], "steps": 3, "lr": 0.0002})
    assert config.config_hash(a) != config.config_hash(dict(a, lr=1e-4))
    config.write_stamp(tmp_path, a, keys=["lr"])
    assert config.is_fresh(tmp_path, dict(a, steps=9), keys=["lr"])
    assert not config.is_fresh(tmp_path, dict(a, lr=1e-3), keys=["lr"])
    stamp = json.loads((tmp_path / "stamp.json").read_text())
    assert stamp["environment"]["versions"]["torch"]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_clean_and_parametrised(name):
    nb = json.loads((paths.NOTEBOOKS / f"{name}.ipynb").read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code, f"{name} has no code"
    for c in code:
        assert not c.get("outputs") and c.get("execution_count") is None, f"{name}: committed with outputs"
    tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{name}: {len(tagged)} parameters cells (papermill wants one)"
    src = "".join(tagged[0]["source"])
    for key in config.param_keys():
        assert re.search(rf"^{key}\s*=", src, re.M), f"{name}: parameters cell lacks {key}"
    nxt = code[code.index(tagged[0]) + 1]
    assert "from_params" in "".join(nxt["source"]), f"{name}: no derived-config cell after parameters"


def test_make_help_lists_every_target():
    out = subprocess.run(["make", "-s", "help"], cwd=paths.ROOT, capture_output=True, text=True,
                         timeout=60).stdout
    for target in ["help", "env", "data", "decompose", "traces", "sft", "eval", "correlation",
                   "figures", "reproduce", "test", "smoke", "bench", "clean"]:
        assert re.search(rf"make {target}\s", out), f"make help does not list {target}"
