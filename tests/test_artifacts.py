"""DVC + S3 round trips against a real local SeaweedFS, in a small throwaway repo, and the
`medcast.artifacts` helper that reads an artifact at a git revision and verifies its md5."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

pytest.register_assert_rewrite("tests.support.s3_fixtures")  # imported here before the plugin loads

from devtools import s3server  # noqa: E402
from devtools.ports import free_port  # noqa: E402
from devtools.s3server import Credentials  # noqa: E402
from medcast.artifacts import (  # noqa: E402
    ArtifactError,
    locked_md5,
    locked_out,
    read_bytes,
    read_verified,
)
from medcast.artifacts import main as artifacts_main  # noqa: E402
from tests.support.s3_fixtures import (  # noqa: E402
    OUT_FILES,
    ThrowawayRepo,
    cache_object,
    copy_repo,
    dir_listing,
    lock_outs,
    md5_file,
    remote_objects,
    run,
    write_local_remote,
)

pytest_plugins = ["tests.support.s3_fixtures"]

PULL_DEADLINE_S = 60


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _workspace_state(repo: Path) -> dict[str, tuple[int, int]]:
    """Every file except DVC's own scratch space (.dvc/tmp), with size and mtime."""
    return {
        p.relative_to(repo).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in repo.rglob("*")
        if p.is_file()
        and ".git" not in p.relative_to(repo).parts[:1]
        and not p.relative_to(repo).as_posix().startswith(".dvc/tmp/")
    }


def _push_all_revisions(repo: ThrowawayRepo) -> None:
    out = repo.dvc("push", "--all-tags")
    assert "pushed" in out.stdout, out.stdout


def _remote_config(repo: ThrowawayRepo) -> dict[str, str]:
    s = repo.server
    return {
        "endpointurl": s.endpoint,
        "access_key_id": s.credentials.access_key,
        "secret_access_key": s.credentials.secret_key,
    }


def _corrupt_on_remote(repo: ThrowawayRepo, md5: str) -> str:
    """Replace the remote object of `md5` by its first half (an interrupted upload)."""
    key = f"{repo.bucket}/dvcstore/files/md5/{md5[:2]}/{md5[2:]}"
    fs = s3server.filesystem(repo.server)
    body = fs.cat(key)
    fs.pipe(key, body[: len(body) // 2])
    return key


@pytest.mark.e2e
def test_push_clone_pull_restores_locked_outputs_and_repro_runs_nothing(
    dvc_repo: ThrowawayRepo, tmp_path: Path
) -> None:
    _push_all_revisions(dvc_repo)
    clone = dvc_repo.clone(tmp_path / "clone")
    # The documented flow: endpoint and keys into the git-ignored .dvc/config.local.
    s = dvc_repo.server
    for key, value in [
        ("url", dvc_repo.url),
        ("endpointurl", s.endpoint),
        ("access_key_id", s.credentials.access_key),
        ("secret_access_key", s.credentials.secret_key),
    ]:
        dvc_repo.dvc(
            "remote", "modify", "--local", "storage", key, value, cwd=clone, env=dvc_repo.env
        )
    assert s.credentials.secret_key not in (clone / ".dvc" / "config").read_text()

    dvc_repo.dvc("pull", cwd=clone, env=dvc_repo.env)

    status = dvc_repo.dvc("status", cwd=clone, env=dvc_repo.env)
    assert "up to date" in status.stdout, status.stdout
    cloud = dvc_repo.dvc("status", "--cloud", cwd=clone, env=dvc_repo.env)
    assert "in sync" in cloud.stdout, cloud.stdout
    for path, md5 in lock_outs(clone).items():
        if md5.endswith(".dir"):
            for rel, file_md5 in dir_listing(clone, md5).items():
                assert md5_file(clone / path / rel) == file_md5, f"{path}/{rel}"
        else:
            assert md5_file(clone / path) == md5, path
    for rel in OUT_FILES:
        assert (clone / rel).read_bytes() == dvc_repo.template.v2[rel], rel
    repro = dvc_repo.dvc("repro", cwd=clone, env=dvc_repo.env)
    assert "Running stage" not in repro.stdout, repro.stdout
    assert "didn't change, skipping" in repro.stdout, repro.stdout


def test_read_verified_returns_the_bytes_locked_at_an_older_revision(
    dvc_repo: ThrowawayRepo, tmp_path: Path
) -> None:
    _push_all_revisions(dvc_repo)
    # A fresh clone: no DVC cache, so every byte comes from the remote.
    clone = dvc_repo.clone(tmp_path / "clone")
    write_local_remote(clone, dvc_repo.url)
    repo, remote_config = str(clone), _remote_config(dvc_repo)
    v1, v2 = dvc_repo.template.v1, dvc_repo.template.v2

    for rel in ["models/model.bin", "models/parts/part1.bin", "data/extra.bin"]:
        md5_v1 = locked_md5(rel, rev="v1", repo=repo, remote_config=remote_config)
        assert md5_v1 == _md5(v1[rel]) != _md5(v2[rel]), rel
        data = read_verified(rel, rev="v1", repo=repo, remote_config=remote_config)
        assert data == v1[rel], rel
    assert locked_out("models/parts/part1.bin", rev="v1", repo=repo).out_path == "models/parts"
    assert locked_out("data/extra.bin", rev="v1", repo=repo).source == "data/extra.bin.dvc"
    assert (
        read_bytes("models/model.bin", rev="v2", repo=repo, remote_config=remote_config)
        == v2["models/model.bin"]
    )
    assert not (clone / ".dvc" / "cache" / "files").exists() or not any(
        (clone / ".dvc" / "cache" / "files").rglob("*")
    ), "reading by revision must not need a checkout or pull"


def test_read_helpers_explain_common_failures(
    dvc_repo: ThrowawayRepo,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = str(dvc_repo.path)
    assert locked_md5("models/model.bin", repo=repo) == _md5(
        dvc_repo.template.v2["models/model.bin"]
    )
    with pytest.raises(ArtifactError, match="unknown git revision 'no-such-rev'"):
        locked_md5("models/model.bin", rev="no-such-rev", repo=repo)
    with pytest.raises(ArtifactError, match="unknown git revision"):
        read_bytes("models/model.bin", rev="no-such-rev", repo=repo)
    with pytest.raises(ArtifactError, match="not an output recorded"):
        locked_md5("generate.py", rev="v1", repo=repo)
    with pytest.raises(ArtifactError, match="not tracked by DVC or git"):
        read_bytes("models/nothing.bin", rev="v1", repo=repo)
    with pytest.raises(ArtifactError, match="not a path inside"):
        locked_md5("../outside", repo=repo)

    # The CLI prints one line, no traceback.
    assert artifacts_main(["md5", "models/model.bin", "--rev", "v1", "--repo", repo]) == 0
    assert capsys.readouterr().out.strip() == _md5(dvc_repo.template.v1["models/model.bin"])
    assert artifacts_main(["get", "models/model.bin", "--rev", "nope", "--repo", repo]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: unknown git revision 'nope'") and "Traceback" not in err

    # Nothing pushed and no cache in a fresh clone; the endpoint is a closed port.
    clone = dvc_repo.clone(tmp_path / "clone")
    closed = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # fail in seconds, not after retries
    config = {**_remote_config(dvc_repo), "url": dvc_repo.url, "endpointurl": closed}
    with pytest.raises(ArtifactError, match="unreachable"):
        read_bytes("models/model.bin", rev="v1", repo=str(clone), remote_config=config)


def test_a_version_in_neither_cache_nor_remote_names_revision_remote_and_the_fix(
    dvc_repo: ThrowawayRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only the workspace (v2) is pushed: v1's outputs are tracked at v1 but no copy exists
    here or on the remote. The message says so (not "not tracked"), for a file out and for a
    file inside a directory out, and the CLI prints it as one line."""
    dvc_repo.dvc("push")
    clone = dvc_repo.clone(tmp_path / "clone")
    write_local_remote(clone, dvc_repo.url, dvc_repo.server)
    repo = str(clone)
    remote = f"DVC remote 'storage' ({dvc_repo.url} at {dvc_repo.server.endpoint})"
    for rel, out in [("models/model.bin", "models/model.bin"), ("models/parts/part1.bin",
                                                                  "models/parts")]:
        for read in (read_bytes, read_verified):
            with pytest.raises(ArtifactError) as err:
                read(rel, rev="v1", repo=repo)
            message = str(err.value)
            assert message.startswith(f"{rel!r} at revision 'v1' of {repo!r}: tracked (dvc.lock "
                                      f"records {out!r} as md5 "), message
            assert f"neither the local cache nor the {remote} holds that version" in message
            assert "`dvc push` at that revision on a machine that has it" in message
            assert "not tracked" not in message
            assert dvc_repo.server.credentials.secret_key not in message
    assert read_bytes("models/model.bin", rev="v2", repo=repo) == dvc_repo.template.v2[
        "models/model.bin"]  # the pushed version reads fine
    assert artifacts_main(["get", "models/model.bin", "--rev", "v1", "--repo", repo]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds that version" in err and "Traceback" not in err


def test_a_remote_without_credentials_says_where_to_put_them(
    dvc_repo: ThrowawayRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clone = dvc_repo.clone(tmp_path / "clone")
    write_local_remote(clone, dvc_repo.url)  # the url, but neither endpoint nor keys
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata lookup
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(ArtifactError, match=rf"no credentials for the DVC remote 'storage' "
                                            rf"\({dvc_repo.url}\): `make s3` writes them"):
        read_bytes("models/model.bin", rev="v2", repo=str(clone))


@pytest.mark.e2e
def test_push_with_wrong_credentials_fails_clearly_and_changes_nothing(
    dvc_repo: ThrowawayRepo,
) -> None:
    before = _workspace_state(dvc_repo.path)
    wrong = Credentials(dvc_repo.server.credentials.access_key, "wrong-secret-key")
    env = {
        **dvc_repo.env,
        "AWS_ACCESS_KEY_ID": wrong.access_key,
        "AWS_SECRET_ACCESS_KEY": wrong.secret_key,
        "AWS_ENDPOINT_URL": dvc_repo.server.endpoint,
    }

    started = time.monotonic()
    out = dvc_repo.dvc("push", env=env, check=False)
    assert out.returncode != 0
    assert time.monotonic() - started < PULL_DEADLINE_S
    assert "403" in out.stderr and "Forbidden" in out.stderr, out.stderr
    assert _workspace_state(dvc_repo.path) == before
    assert remote_objects(dvc_repo.server, dvc_repo.bucket) == []


@pytest.mark.e2e
def test_pull_fails_fast_while_server_is_down_then_succeeds_after_restart(
    dvc_template, s3_servers, tmp_path: Path
) -> None:
    server = s3_servers.start()
    s3server.ensure_bucket(server, "down")
    repo = copy_repo(dvc_template, tmp_path / "repo", server, "down")
    repo.dvc("push")
    clone = repo.clone(tmp_path / "clone")
    # What `make s3` writes: endpoint, keys and the fail-fast AWS config; no AWS_* variables.
    write_local_remote(clone, repo.url, server)

    s3_servers.stop(server)
    started = time.monotonic()
    out = repo.dvc("pull", cwd=clone, check=False, env=repo.env)
    elapsed = time.monotonic() - started
    print(f"dvc pull against a stopped server failed after {elapsed:.1f} s")
    assert out.returncode != 0
    assert elapsed < PULL_DEADLINE_S, f"dvc pull took {elapsed:.1f} s against a stopped server"
    assert "failed to connect to s3" in out.stderr or "Could not connect" in out.stderr, out.stderr
    for rel in OUT_FILES:
        assert not (clone / rel).exists(), f"partial output {rel} left behind"
    assert not [p for p in (clone / ".dvc").rglob("*") if "cache" in p.parts and p.is_file()]

    s3_servers.restart(server)
    repo.dvc("pull", cwd=clone, env=repo.env)
    for rel in OUT_FILES:
        assert (clone / rel).read_bytes() == repo.template.v2[rel], rel
    assert "up to date" in repo.dvc("status", cwd=clone, env=repo.env).stdout


@pytest.mark.e2e
def test_push_during_an_outage_fails_clearly_and_a_later_push_completes_the_remote(
    dvc_template, s3_servers, tmp_path: Path
) -> None:
    """v1 is on the remote when the server goes down; pushing every revision then fails with a
    clear error in bounded time, and after the restart the same push uploads what is missing:
    the remote is complete (`dvc status -c` clean) and a fresh clone restores v2 exactly."""
    server = s3_servers.start()
    s3server.ensure_bucket(server, "outage")
    repo = copy_repo(dvc_template, tmp_path / "repo", server, "outage")
    run(["git", "checkout", "-q", "v1"], repo.path, repo.env)
    repo.dvc("push")
    partial = set(remote_objects(server, "outage"))
    run(["git", "checkout", "-q", "v2"], repo.path, repo.env)

    s3_servers.stop(server)
    started = time.monotonic()
    out = repo.dvc("push", "--all-tags", check=False)
    elapsed = time.monotonic() - started
    print(f"dvc push against a stopped server failed after {elapsed:.1f} s")
    assert out.returncode != 0
    assert elapsed < PULL_DEADLINE_S, f"dvc push took {elapsed:.1f} s against a stopped server"
    assert "failed to connect to s3" in out.stderr or "Could not connect" in out.stderr, out.stderr

    s3_servers.restart(server)
    assert set(remote_objects(server, "outage")) == partial  # nothing half-written appeared
    repo.dvc("push", "--all-tags")
    assert set(remote_objects(server, "outage")) > partial
    assert "in sync" in repo.dvc("status", "-c").stdout
    clone = repo.clone(tmp_path / "clone")
    write_local_remote(clone, repo.url, server)
    repo.dvc("pull", cwd=clone, env=repo.env)
    for rel in OUT_FILES:
        assert (clone / rel).read_bytes() == repo.template.v2[rel], rel


@pytest.mark.e2e
def test_pull_refuses_an_object_corrupted_on_the_remote(
    dvc_repo: ThrowawayRepo, tmp_path: Path
) -> None:
    dvc_repo.dvc("push")
    md5 = lock_outs(dvc_repo.path)["models/model.bin"]
    _corrupt_on_remote(dvc_repo, md5)
    clone = dvc_repo.clone(tmp_path / "clone")
    write_local_remote(clone, dvc_repo.url)

    out = dvc_repo.dvc("pull", cwd=clone, check=False)
    assert out.returncode != 0, out.stdout + out.stderr
    assert "failed to pull" in out.stderr or "failed to download" in out.stderr, out.stderr
    assert not (clone / "models" / "model.bin").exists()
    assert not cache_object(clone, md5).exists(), "corrupted object entered the cache"
    # The other outputs are intact and restored.
    assert (clone / "data" / "raw.bin").read_bytes() == dvc_repo.template.v2["data/raw.bin"]

    # Streaming reads do not re-hash; read_verified does.
    config = _remote_config(dvc_repo)
    raw = read_bytes("models/model.bin", rev="v2", repo=str(clone), remote_config=config)
    assert _md5(raw) != md5
    with pytest.raises(ArtifactError, match="corrupted"):
        read_verified("models/model.bin", rev="v2", repo=str(clone), remote_config=config)
