"""tools/gpu_session.sh: what a lent GPU's one call depends on is in the repository.

The script restores the distillation configs' teachers from git history (a fresh machine has no runs/),
so every teacher a GPU config names must be one the script restores, from a commit that holds it.
"""

import json
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "gpu_session.sh"


def _setting(name: str) -> str:
    match = re.search(rf'^{name}="([^"]*)"', SCRIPT.read_text(), re.M)
    assert match, f"{SCRIPT}: no {name}=\"...\" line"
    return match.group(1)


def test_help_lists_the_three_steps_and_a_wrong_step_fails():
    shown = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0, shown.stderr
    for step in ("bundle", "train", "score DIR"):
        assert f"tools/gpu_session.sh {step}" in shown.stdout
    wrong = subprocess.run(["bash", str(SCRIPT), "trian"], capture_output=True, text=True, timeout=30)
    assert wrong.returncode != 0
    # one line naming the step, not the help page on stdout with nothing said
    assert (wrong.returncode, wrong.stdout) == (2, "")
    assert wrong.stderr == "tools/gpu_session.sh: no step 'trian' (bundle, train or score DIR; --help shows them)\n"
    bare = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=30)
    assert bare.returncode == 1 and "tools/gpu_session.sh score DIR" in bare.stdout


def test_every_teacher_of_the_gpu_configs_is_restored_from_a_commit_that_holds_it():
    restored = dict(pair.split(":", 1) for pair in _setting("TEACHERS").split())
    # the configs the script trains with: a glob for their names would find none once they were renamed, and check nothing
    configs = re.findall(r"--config (configs/[\w.-]+\.json)", SCRIPT.read_text())
    teachers = [(config, teacher) for config in configs for teacher in json.loads((ROOT / config).read_text()).get("teachers", [])]
    assert teachers, f"{SCRIPT}: no --config naming teachers"
    for config, teacher in teachers:
        assert teacher.startswith("runs/") and teacher[len("runs/"):] in restored, (config, teacher)
    for run, commit in restored.items():
        for member in ("best.weights.h5", "config.json"):
            found = subprocess.run(["git", "cat-file", "-e", f"{commit}:weights/mobilenetv2-pip-128/{member}"],
                                   cwd=ROOT, capture_output=True, text=True)
            assert found.returncode == 0, (run, commit, member, found.stderr)


def test_the_trainings_it_starts_have_their_configs():
    text = SCRIPT.read_text()
    for config in re.findall(r"--config (configs/[\w.-]+\.json)", text):
        assert (ROOT / config).is_file(), config
    assert len(re.findall(r"--config configs/", text)) == len(_setting("RUNS").split())


def test_score_without_archives_says_so_before_preparing_any_faces(tmp_path):
    # it prepared the whole 300-W and YouTube68 test set (minutes), then tar failed on a literal '*.tgz'
    done = subprocess.run(["bash", str(SCRIPT), "score", str(tmp_path)], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "PY": "false"})  # any Python run would fail the call
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == f"tools/gpu_session.sh score: {tmp_path}: no .tgz archives (the folder the GPU call's OUT brought back)\n"
