"""A wheel built from this checkout, installed into a fresh venv, works on its own: the
package (and its grammar) come from the venv, not the source tree. No network: the
wheel is built without build isolation (hatchling must be installed) and installed
with --no-deps; the venv borrows torch and lark from the current environment through a
.pth file."""

import os
import site
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

CHECK = """
import importlib.resources, pathlib, sys
import patternc
root = pathlib.Path(sys.argv[1]).resolve()
here = pathlib.Path(patternc.__file__).resolve()
assert root in here.parents, (str(here), str(root))
grammar = importlib.resources.files("patternc") / "grammar" / "patternc.lark"
assert grammar.is_file(), str(grammar)
p = patternc.parse("global(first, eos) + window(3) + random(2)")
assert str(p) == "global(0, -1) + random(2, block=64, seed=0) + window(3)", str(p)
print("ok", here)
"""


def _run(cmd, cwd, env):
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{cmd}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PIP_NO_INPUT"] = "1"
    dist = tmp / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", dist, REPO], tmp, env)
    (wheel,) = dist.glob("patternc-*.whl")

    root = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", root], tmp, env)
    python = root / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", wheel], tmp, env)

    # dependencies only: the current environment's site-packages, after the venv's own
    purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp, env)
    deps = [d for d in site.getsitepackages() if Path(d).is_dir()]
    (Path(purelib.stdout.strip()) / "_patternc_test_deps.pth").write_text("\n".join(deps) + "\n")
    return root, python, env, tmp


def test_installed_wheel_imports_and_parses(venv):
    root, python, env, tmp = venv
    result = _run([python, "-c", CHECK, root], tmp, env)  # cwd outside the repository
    assert result.stdout.startswith("ok")
    assert str(REPO) not in result.stdout


def test_installed_console_script(venv):
    root, python, env, tmp = venv
    script = root / ("Scripts/patternc.exe" if os.name == "nt" else "bin/patternc")
    assert script.exists()
    result = _run([script, "compile", "-e", "window(3)", "-n", 16], tmp, env)
    assert "window(3)" in result.stdout
    bad = subprocess.run([str(script), "compile", "-e", "windw(3)", "-n", "16"], cwd=tmp, env=env,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("<expr>:1:1: error:") and "Traceback" not in bad.stderr
