"""The Colab launcher (notebooks/colab.ipynb): three cells or fewer, the README's Colab section."""
import json
import os
import re
import subprocess
import sys
import types

import pytest

from helpers import paths

LAUNCHER = paths.NOTEBOOKS / "colab.ipynb"
BADGE = re.compile(r"\(https://colab\.research\.google\.com/github/([^/\s]+)/([^/\s]+)/blob/main/"
                   r"(notebooks/colab\.ipynb)\)")


def _cells():
    nb = json.loads(LAUNCHER.read_text())
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def _sources():
    return ["".join(c["source"]) for c in _cells()]


def _readme_section(title):
    """The README from `title` to the next heading (a `#` line outside code fences)."""
    lines = (paths.ROOT / "README.md").read_text().splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.rstrip() == title)
    fenced, out = False, [lines[start]]
    for line in lines[start + 1:]:
        fenced ^= line.startswith("```")
        if not fenced and line.startswith("#"):
            break
        out.append(line)
    return "".join(out)


def test_launcher_is_three_cells_or_fewer_and_clean():
    cells = _cells()
    assert 1 <= len(cells) <= 3
    for c in cells:
        assert not c.get("outputs") and c.get("execution_count") is None
    assert not re.match(r"\d", LAUNCHER.name), "a numbered notebook would join the pipeline"
    meta = json.loads(LAUNCHER.read_text())["metadata"]
    assert meta.get("accelerator") == "GPU"  # Colab opens it on a GPU runtime


def test_launcher_commands_are_makefile_targets():
    make = (paths.ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-zA-Z][\w-]*):", make, re.M))
    used = re.findall(r"!make ([\w-]+)((?: \w+=\w+)*)", "\n".join(_sources()))
    assert [t for t, _ in used] == ["env", "reproduce"]
    for target, assigns in used:
        assert target in targets, f"the launcher runs `make {target}`, not a Makefile target"
        for var, value in re.findall(r"(\w+)=(\w+)", assigns):
            assert re.search(rf"^{var}\s*\?=", make, re.M), f"{var} is no Makefile variable"


def test_launcher_profile_exists():
    profiles = re.findall(r"PROFILE=(\w+)", "\n".join(_sources()))
    assert profiles == ["colab"]
    if not (paths.PROFILES / "colab.yaml").exists():
        pytest.skip("profiles/colab.yaml (written in the colab-profile work) is not in this checkout")


def test_readme_colab_section_is_exactly_the_cells():
    section = _readme_section("### In Colab")
    blocks = re.findall(r"```python\n(.*?)\n```", section, re.S)
    assert blocks == _sources()


def test_badge_and_clone_url_name_the_same_repository():
    section = _readme_section("### In Colab")
    owner, repo, path = BADGE.search(section).groups()
    assert (paths.ROOT / path).exists()
    first = _sources()[0]
    assert f'REPO = "https://github.com/{owner}/{repo}"' in first
    lab = _readme_section("### On a lab GPU")
    assert f"git clone https://github.com/{owner}/{repo} " in lab


def _run_token_cell(tmp_path, secret):
    """Run the launcher's token cell with a stand-in for google.colab.userdata; returns what a
    child process (as `!make` and its papermill kernels are) sees as HF_TOKEN."""
    cell = next(s for s in _sources() if "userdata" in s)
    userdata = types.ModuleType("google.colab.userdata")

    class SecretNotFoundError(Exception):
        pass

    def get(key):
        if secret is None:
            raise SecretNotFoundError(f"Secret {key} does not exist.")
        return secret

    userdata.get, userdata.SecretNotFoundError = get, SecretNotFoundError
    colab = types.ModuleType("google.colab")
    colab.userdata = userdata
    google = types.ModuleType("google")
    google.colab = colab
    saved = {k: sys.modules.get(k) for k in ("google", "google.colab", "google.colab.userdata")}
    old = os.environ.pop("HF_TOKEN", None)
    try:
        sys.modules.update({"google": google, "google.colab": colab, "google.colab.userdata": userdata})
        exec(compile(cell, "colab-cell-2", "exec"), {})
        child = subprocess.run([sys.executable, "-c", "import os; print(os.environ.get('HF_TOKEN'))"],
                               capture_output=True, text=True, check=True).stdout.strip()
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
        os.environ.pop("HF_TOKEN", None)
        if old is not None:
            os.environ["HF_TOKEN"] = old
    return child


def test_token_cell_hands_the_secret_to_child_processes(tmp_path, capsys):
    assert _run_token_cell(tmp_path, "hf_secret123") == "hf_secret123"
    assert "HF_TOKEN is set" in capsys.readouterr().out


def test_token_cell_explains_a_missing_secret(tmp_path, capsys):
    assert _run_token_cell(tmp_path, None) == "None"
    out = capsys.readouterr().out
    assert "No HF_TOKEN (SecretNotFoundError" in out and "key icon" in out and "licence" in out


def test_every_notebook_has_exactly_one_parameters_cell():
    """papermill injects parameters after the one cell tagged `parameters`; the launcher's is
    its first code cell (REPO), the numbered notebooks' the profile keys."""
    for nb_path in sorted(paths.NOTEBOOKS.glob("*.ipynb")):
        cells = json.loads(nb_path.read_text())["cells"]
        tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, f"{nb_path.name}: {len(tagged)} cells tagged 'parameters'"
    first = _cells()[0]
    assert "parameters" in first["metadata"].get("tags", []) and "REPO = " in "".join(first["source"])
