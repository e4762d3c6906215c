"""A plain (non-editable) install carries the shipped model, and finds it without the working copy."""

import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from facelandmarks.inference.shipped import INSTALLED_WEIGHTS, default_model_dir

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``(python, site-packages, shipped model, its tracked files)`` of a fresh venv where a wheel built from the working
    copy is installed (the dependencies from this environment)."""
    tmp_path = tmp_path_factory.mktemp("install")
    shipped = default_model_dir()  # the working copy's weights/<model>
    assert shipped.parent == ROOT / "weights"
    tracked = subprocess.run(["git", "ls-files", str(shipped.relative_to(ROOT))], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    always = {"best.weights.h5", "config.json", "MODEL_CARD.md"}  # and its run's history.csv when the run kept one
    assert always <= {Path(t).name for t in tracked} <= always | {"history.csv"}, tracked
    # build from a copy of what a build reads (setuptools writes build/ and egg-info into the source folder)
    source = tmp_path / "source"
    shutil.copytree(ROOT / "facelandmarks", source / "facelandmarks", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "setup.py", "README.md", *tracked):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, source / name)
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source)],
                   check=True, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    env = tmp_path / "env"
    venv.create(env, with_pip=False)
    site = next(env.glob("lib/python*/site-packages"))
    # the dependencies come from this interpreter's environment; the package itself only from the wheel
    deps = [p for p in map(Path, sys.path) if p.name == "site-packages"]
    (site / "deps.pth").write_text("\n".join(map(str, deps)) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(env / "bin" / "python"), "install", "-q", "--no-deps",
                    *map(str, wheels.glob("*.whl"))], check=True, capture_output=True, text=True, timeout=300)
    return env / "bin" / "python", site, shipped, tracked


def test_a_wheel_installs_the_shipped_model_where_the_package_finds_it(installed, tmp_path):
    python, site, shipped, tracked = installed
    env = python.parents[1]
    code = ("import facelandmarks; from facelandmarks.inference.shipped import default_model_dir; "
            "print(facelandmarks.__file__); print(default_model_dir())")
    result = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    package, found = map(Path, result.stdout.split())
    assert package.is_relative_to(site)  # the installed copy, not the working copy
    assert found == env / INSTALLED_WEIGHTS / shipped.name
    for name in tracked:
        assert (found / Path(name).name).read_bytes() == (ROOT / name).read_bytes(), name


def test_an_installed_copy_names_its_console_scripts_in_hints(installed, tmp_path):
    # a plain install has no export.py or train.py: its hints said "python export.py RUN", which fails there
    python = installed[0]
    code = ("from pathlib import Path; from facelandmarks.inference.shipped import default_model_dir; "
            "from facelandmarks.inference import runtimes; from facelandmarks.runtime import script_command; "
            "model = default_model_dir(); print(runtimes.stale_export(model, Path('/nowhere'))); "
            "print(script_command('train'))")
    result = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                            env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    model = installed[1].parents[2] / INSTALLED_WEIGHTS / default_model_dir().name
    assert result.stdout.splitlines() == [f"{model}: not exported (facelandmarks-export {model})", "facelandmarks-train"]
    # a working copy's scripts sit beside the package
    from facelandmarks.runtime import script_command

    assert script_command("export") == "python export.py" and (ROOT / "export.py").is_file()
