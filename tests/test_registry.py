"""medcast.registry: `champion` moves only to a better model on the same training data, or by
hand; each decision says why."""

from __future__ import annotations

import pytest

from medcast.registry import CHAMPION, decide, main, verdict

MD5 = "a" * 32


def tags(cv_rmse: float, md5: str = MD5, signal: str = "true") -> dict[str, str]:
    return {"dataset": "trial", "training_data_md5": md5, "cv_rmse": repr(cv_rmse),
            "signal": signal}


def test_the_first_version_becomes_champion():
    assert verdict(None, "1", tags(55.0)) == (True, "no champion yet")


def test_a_better_cv_rmse_on_the_same_data_moves_the_alias_and_a_worse_one_does_not():
    moved, why = verdict(("3", tags(55.0)), "4", tags(54.9))
    assert moved and why == "CV RMSE 54.9 beats champion version 3's 55"
    kept, why = verdict(("3", tags(55.0)), "4", tags(55.0))  # a tie keeps the champion
    assert not kept and "does not beat champion version 3's 55" in why
    assert "python -m medcast.registry promote 4" in why


def test_other_training_data_or_no_signal_never_moves_it_by_itself():
    kept, why = verdict(("3", tags(55.0)), "4", tags(40.0, md5="b" * 32))
    assert not kept and "trained on other data" in why and "promote 4" in why
    kept, why = verdict(None, "1", tags(40.0, signal="false"))
    assert not kept and why.startswith("no candidate beats the mean")


def test_a_champion_from_before_the_rule_gives_way():
    moved, why = verdict(("2", {"validated": "true"}), "5", tags(55.0))
    assert moved and "registered before this rule" in why


@pytest.fixture
def client(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    c = MlflowClient(uri)
    c.create_registered_model("medcast-trial")
    c.source = (tmp_path / "model").as_uri()  # where a version's files would be
    return c


def add(client, cv_rmse: float, **kw: str) -> str:
    version = client.create_model_version("medcast-trial", source=client.source).version
    for k, v in tags(cv_rmse, **kw).items():
        client.set_model_version_tag("medcast-trial", version, k, v)
    return str(version)


def test_decide_reads_and_moves_the_real_registry(client, capsys):
    first = add(client, 55.0)
    assert decide(client, "medcast-trial", first) == (True, "no champion yet")
    worse = add(client, 56.0)
    assert not decide(client, "medcast-trial", worse)[0]
    assert str(client.get_model_version_by_alias("medcast-trial", CHAMPION).version) == first
    better = add(client, 54.0)
    assert decide(client, "medcast-trial", better)[0]
    assert str(client.get_model_version_by_alias("medcast-trial", CHAMPION).version) == better
    main(["promote", worse, "--name", "medcast-trial"])
    assert str(client.get_model_version_by_alias("medcast-trial", CHAMPION).version) == worse
    main(["list", "--name", "medcast-trial"])
    out = capsys.readouterr().out
    assert f"version {worse} is now the champion" in out
    assert f"   {worse} @champion" in out and "cv_rmse=56.0" in out


def test_promoting_an_unknown_version_is_one_message(client, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["promote", "99", "--name", "medcast-trial"])
    assert exit_.value.code == 2
    assert "error: medcast-trial:" in capsys.readouterr().err


def test_the_pyfunc_states_its_requirements_pinned_and_keras_only_for_a_keras_model(tmp_path):
    from importlib.metadata import version

    from medcast.registry import pip_requirements

    (tmp_path / "pipeline.skops").write_bytes(b"")
    plain = pip_requirements(tmp_path)
    assert plain == [f"{n}=={version(n)}" for n in ("mlflow", "numpy", "pandas", "scikit-learn",
                                                     "skops")]
    (tmp_path / "mlp.keras").write_bytes(b"")
    assert pip_requirements(tmp_path) == [*plain, f"tensorflow-cpu=={version('tensorflow-cpu')}",
                                          f"keras=={version('keras')}"]
