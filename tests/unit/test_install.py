"""A plain (non-editable) install carries the shipped model, and finds it without the working copy."""

import shutil
import subprocess
import sys
import venv
from pathlib import Path

from facelandmarks.inference.shipped import INSTALLED_WEIGHTS, default_model_dir

ROOT = Path(__file__).resolve().parents[2]


def test_a_wheel_installs_the_shipped_model_where_the_package_finds_it(tmp_path):
    shipped = default_model_dir()  # the working copy's weights/<model>
    assert shipped.parent == ROOT / "weights"
    tracked = subprocess.run(["git", "ls-files", str(shipped.relative_to(ROOT))], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    assert len(tracked) == 3  # weights, config, model card
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
    code = ("import facelandmarks; from facelandmarks.inference.shipped import default_model_dir; "
            "print(facelandmarks.__file__); print(default_model_dir())")
    result = subprocess.run([str(env / "bin" / "python"), "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    package, found = map(Path, result.stdout.split())
    assert package.is_relative_to(site)  # the installed copy, not the working copy
    assert found == env / INSTALLED_WEIGHTS / shipped.name
    for name in tracked:
        assert (found / Path(name).name).read_bytes() == (ROOT / name).read_bytes(), name
