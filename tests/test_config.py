"""Parameters: one defaults file, small profiles, and per-notebook parameters cells."""
import ast
import json
import re
import subprocess

import pytest
import yaml

from helpers import config, paths

NOTEBOOKS = ["01_data", "02_decompose", "03_traces", "04_sft", "05_eval", "06_correlation"]
# The commit whose profiles were still full files (every key repeated in each): the loaded
# config of every profile must equal what those files said.
FULL_PROFILES_COMMIT = "52edcec"
# keys added to every profile since then (and what they were then: absent)
ADDED_SINCE = {"engine": "fast"}


def _old_profile(name: str) -> dict:
    try:
        out = subprocess.run(["git", "show", f"{FULL_PROFILES_COMMIT}:profiles/{name}.yaml"],
                             cwd=paths.ROOT, capture_output=True, text=True, timeout=30)
    except OSError:
        pytest.skip("git is not installed")
    if out.returncode != 0:
        pytest.skip(f"commit {FULL_PROFILES_COMMIT} is not in this checkout (a shallow clone?)")
    return yaml.safe_load(out.stdout)


@pytest.mark.parametrize("name", ["smoke", "quick", "colab", "paper"])
def test_loaded_profile_equals_the_old_full_file(name):
    old = _old_profile(name)
    new = config.load(name)
    assert {k: new[k] for k in new if k not in ADDED_SINCE} == old
    assert [k for k in new if k not in ADDED_SINCE] == list(old)  # the same order
    assert {k: new[k] for k in ADDED_SINCE} == ADDED_SINCE
    # and the stamps hash them the same way (same keys, same values)
    assert config.config_hash(old) == config.config_hash({k: new[k] for k in old})


def test_profiles_hold_only_what_differs_from_the_defaults():
    base = config.defaults()
    assert set(config.profile_names()) >= {"smoke", "quick", "colab", "paper"}
    assert config.DEFAULTS not in config.profile_names()
    for name in config.profile_names():
        own = config.profile_overrides(name)
        assert own, f"{name}: an empty profile"
        same = [k for k, v in own.items() if k in base and v == base[k]
                and not (name == "smoke" and k in ())]
        assert not same, f"profiles/{name}.yaml repeats defaults: {same}"
        assert list(config.load(name)) == list(base)


def test_every_default_has_a_comment():
    lines = (paths.PROFILES / f"{config.DEFAULTS}.yaml").read_text().splitlines()
    for key in config.defaults():
        line = next(x for x in lines if re.match(rf"{key}:", x))
        assert "#" in line.split(":", 1)[1], f"defaults.yaml: {key} has no comment"


def test_unknown_keys_and_profiles_are_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="available"):
        config.load("nope")
    with pytest.raises(FileNotFoundError):
        config.load(config.DEFAULTS)
    with pytest.raises(KeyError, match="lrr"):
        config.load("smoke", {"lrr": 1})
    with pytest.raises(ValueError, match="profile"):
        config.load("smoke", {"profile": "quick"})
    prof = tmp_path / "profiles"
    prof.mkdir()
    (prof / "defaults.yaml").write_text((paths.PROFILES / "defaults.yaml").read_text())
    (prof / "typo.yaml").write_text("n_trian: 3\n")
    monkeypatch.setattr(paths, "PROFILES", prof)
    with pytest.raises(KeyError, match="n_trian"):
        config.load("typo")


def test_overrides_apply_in_order():
    cfg = config.load("smoke", {"data_source": "local", "data_dir": "/x"})
    assert cfg["data_source"] == "local" and cfg["data_dir"] == "/x"
    assert cfg["lr"] == config.profile_overrides("smoke")["lr"]           # the profile's
    assert cfg["lr_scheduler"] == config.defaults()["lr_scheduler"]        # the default


def test_from_params_loads_the_profile_under_the_notebooks_keys():
    ns = {"profile": "smoke", "overrides": {}, "lr": 0.5}
    cfg = config.from_params(ns)
    assert cfg == dict(config.load("smoke"), lr=0.5)
    ns = {"profile": "smoke", "overrides": {"data_source": "local"}}
    with pytest.raises(ValueError, match="data_dir"):
        config.from_params(ns)
    with pytest.raises(KeyError, match="profile"):
        config.from_params({"lr": 1})


def test_cli_params_is_what_papermill_gets(tmp_path):
    import sys

    out = subprocess.run([sys.executable, "-m", "helpers.config", "params", "smoke",
                          str(paths.NOTEBOOKS / "01_data.ipynb"), "--set", "data_source=local",
                          "--set", "data_dir=/data/yes"], capture_output=True, text=True, check=True)
    got = yaml.safe_load(out.stdout)
    assert list(got) == list(config.parameters_cell("01_data"))
    assert got["data_dir"] == "/data/yes" and got["data_source"] == "local"
    assert got["overrides"] == {"data_source": "local", "data_dir": "/data/yes"}
    assert got["n_train"] == config.load("smoke")["n_train"]


# ------------------------------------------------------------------ the notebooks' cells
def _code(name):
    nb = json.loads((paths.NOTEBOOKS / f"{name}.ipynb").read_text())
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def _params_source(name):
    return "".join(next(c for c in _code(name) if "parameters" in c["metadata"].get("tags", []))["source"])


def _cfg_reads(src: str) -> set[str]:
    """The keys a piece of notebook code reads from ``cfg`` (``cfg["k"]``, ``cfg.get("k")``)."""
    return set(re.findall(r"""\bcfg(?:\[|\.get\()\s*["'](\w+)["']""", src))


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_parameters_cell_shows_the_notebooks_keys(name):
    params = config.parameters_cell(name)
    base = config.defaults()
    assert list(params)[:2] == ["profile", "overrides"], name
    unknown = [k for k in params if k not in config.RUN_PARAMS and k not in base]
    assert not unknown, f"{name}: parameters not in defaults.yaml: {unknown}"
    # each line: one parameter and its comment
    for line in _params_source(name).splitlines():
        if re.match(r"\w+\s*=", line):
            assert "#" in line, f"{name}: no comment on {line!r}"
    # run by hand (no papermill), the cell's values are its profile's
    cfg = config.load(params["profile"])
    shown = {k: v for k, v in params.items() if k not in config.RUN_PARAMS}
    assert shown == {k: cfg[k] for k in shown}, f"{name}: the cell's values differ from {params['profile']}"
    assert params["overrides"] == {}
    # every key the notebook reads from cfg is shown, or its line says it comes from the profile
    code = [("".join(c["source"])) for c in _code(name)]
    from_profile = set()
    for src in code:
        for line in src.splitlines():
            if "from the profile" in line:
                from_profile |= _cfg_reads(line) | set(re.findall(r"`(\w+)`", line))
    reads = set().union(*map(_cfg_reads, code))
    hidden = sorted(reads - set(params) - from_profile)
    assert not hidden, f"{name} reads {hidden} from cfg: show them in its parameters cell"
    assert not (from_profile - set(base)), f"{name}: {from_profile - set(base)} are no parameters"


def test_the_check_catches_a_hidden_key():
    assert _cfg_reads('x = cfg["lr"] + cfg.get("epochs")') == {"lr", "epochs"}


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_papermill_reads_the_same_parameters(name):
    """papermill's own parser finds every parameter of the cell (it skips a line with a second
    `=`, e.g. in its comment, and then warns of an unknown parameter)."""
    translators = pytest.importorskip("papermill.translators")
    cell = {"source": _params_source(name)}
    found = [p.name for p in translators.PythonTranslator.inspect(cell)]
    assert found == list(config.parameters_cell(name))


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_papermill_gets_only_the_cells_keys(name):
    for profile in config.profile_names():
        got = config.notebook_params(name, profile)
        assert list(got) == list(config.parameters_cell(name))


def test_make_passes_each_notebook_its_own_parameters():
    import shutil
    import sys

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    out = subprocess.run(["make", "-n", "-s", "--no-print-directory", "PROFILE=smoke", "DATA_DIR=/data/x",
                          "PY=python", "outputs/smoke/03_traces.ipynb"], cwd=paths.ROOT, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    lines = out.splitlines()
    for name in ("01_data", "02_decompose", "03_traces"):
        gen = next(x for x in lines if f"helpers.config params smoke notebooks/{name}.ipynb" in x)
        assert "--set data_source=local --set data_dir=/data/x" in gen
        target = gen.split(">")[-1].strip()
        assert target == f"outputs/smoke/{name}.params.yaml"
        pm = next(x for x in lines if "papermill" in x and f"notebooks/{name}.ipynb" in x)
        assert f"-f {target}" in pm and " -p " not in pm and "profiles/" not in pm
        args = gen.split("helpers.config", 1)[1].split(">")[0].split()
        got = yaml.safe_load(subprocess.run([sys.executable, "-m", "helpers.config", *args],
                                            capture_output=True, text=True, check=True).stdout)
        assert list(got) == list(config.parameters_cell(name))
        assert got["overrides"] == {"data_source": "local", "data_dir": "/data/x"}
