"""`python -m medcast.workspace rollback` (`make rollback`) after a failed run, on a two-stage
DVC repository: the first stage finished (dvc.lock changed, a new output), the second failed
half-way through writing its output; afterwards `dvc status` and `git status` are clean and
the outputs are HEAD's again. The real pipeline's flow is in tests/test_own_data_e2e.py."""

from __future__ import annotations

import sys

import pytest

from tests.support.repo_copy import run

FIRST = "import yaml; n = yaml.safe_load(open('params.yaml'))['n']; open('a.txt', 'w').write(str(n))"
# Writes 'b of ', then fails when n is 2 (a half-written output), else writes n.
SECOND = ("import sys; n = open('a.txt').read(); f = open('b.txt', 'w'); f.write('b of '); "
          "f.flush(); n == '2' and sys.exit(1); f.write(n)")


@pytest.fixture
def repo(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    (root / "params.yaml").write_text("n: 1\n")
    (root / "dvc.yaml").write_text(
        "stages:\n"
        f"  first:\n    cmd: {sys.executable} -c \"{FIRST}\"\n    params: [n]\n    outs: [a.txt]\n"
        f"  second:\n    cmd: {sys.executable} -c \"{SECOND}\"\n    deps: [a.txt]\n"
        "    outs: [b.txt]\n")
    run(["git", "init", "-q", "-b", "main"], root)
    run(["dvc", "init", "-q"], root)
    run(["dvc", "repro", "-q"], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-q", "-m", "run"], root)
    return root


def test_rollback_after_a_half_run_restores_params_lock_and_outputs(repo):
    failed = run(["dvc", "exp", "run", "-S", "n=2"], repo, check=False)
    assert "failed to reproduce 'second'" in failed.stderr
    assert (repo / "a.txt").read_text() == "2" and (repo / "b.txt").read_text() == "b of "
    assert run(["git", "status", "--porcelain"], repo).stdout.split() == ["M", "dvc.lock", "M",
                                                                          "params.yaml"]
    out = run([sys.executable, "-m", "medcast.workspace", "rollback"], repo)
    assert out.stdout.splitlines() == [
        "restored from HEAD: params.yaml, dvc.lock",
        "2 DVC-tracked output(s) restored",
        "dvc status: up to date; git status: clean",
    ]
    assert (repo / "a.txt").read_text() == "1" and (repo / "b.txt").read_text() == "b of 1"
    assert "up to date" in run(["dvc", "status"], repo).stdout
    assert run(["git", "status", "--porcelain"], repo).stdout == ""


def test_rollback_names_what_it_leaves_alone(repo):
    (repo / "notes.md").write_text("my edit\n")
    run(["dvc", "exp", "run", "-S", "n=2"], repo, check=False)
    out = run([sys.executable, "-m", "medcast.workspace", "rollback"], repo)
    assert out.stdout.splitlines()[-1] == "git status: not rolled back (your changes): notes.md"
    assert (repo / "notes.md").read_text() == "my edit\n"
