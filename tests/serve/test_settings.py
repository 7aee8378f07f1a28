"""Service settings (serve/settings.py): the `MEDCAST_*` variables and their `*_FILE`
forms, the defaults, the flush window of each durability mode, and a malformed value refused
with the variable's name.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from serve.settings import Settings, SettingsError

pytestmark = pytest.mark.timeout(120)


def test_settings_read_env_and_file_variants(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("from-a-file\n")
    url_file = tmp_path / "url"
    url_file.write_text("postgresql+psycopg://u:p%40ss@db/x")
    s = Settings.from_env({
        "MEDCAST_REPO": str(tmp_path), "MEDCAST_MODEL_REV": "v1.0",
        "MEDCAST_API_KEY_FILE": str(key_file), "MEDCAST_DATABASE_URL_FILE": str(url_file),
        "MEDCAST_MAX_BATCH": "50", "MEDCAST_RATE_LIMIT": "20/minute",
        "MEDCAST_LOG_BUFFER_MAX": "10_000",
    })
    assert s.repo == tmp_path.resolve() and s.model_rev == "v1.0"
    assert s.api_key == "from-a-file" and s.db_url == "postgresql+psycopg://u:p%40ss@db/x"
    assert (s.max_batch, s.rate_limit, s.log_buffer_max) == (50, ("minute", 20), 10_000)
    d = Settings.from_env({"MEDCAST_REPO": str(tmp_path)})
    assert d.model_rev is None and d.api_key is None and d.max_batch == 1000
    assert d.db_url == f"sqlite:///{tmp_path.resolve() / 'serve.db'}"
    assert Settings.from_env({"MEDCAST_RATE_LIMIT": "off"}).rate_limit is None


def test_workers_default_to_the_usable_cores_and_take_a_number() -> None:
    import os

    from serve.settings import usable_cores

    assert usable_cores() == len(os.sched_getaffinity(0))
    assert Settings.from_env({}).workers == usable_cores()
    assert Settings.from_env({"MEDCAST_WORKERS": "1"}).workers == 1
    assert Settings.from_env({"MEDCAST_WORKERS": "3"}).workers == 3
    for bad in ("0", "-1", "all"):
        with pytest.raises(SettingsError, match="MEDCAST_WORKERS"):
            Settings.from_env({"MEDCAST_WORKERS": bad})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MEDCAST_MAX_BATCH": "many"}, "MEDCAST_MAX_BATCH"),
        ({"MEDCAST_MAX_BATCH": "0"}, "≥ 1"),
        ({"MEDCAST_RATE_LIMIT": "5 per minute"}, "MEDCAST_RATE_LIMIT"),
        ({"MEDCAST_API_KEY": "a", "MEDCAST_API_KEY_FILE": "/x"}, "not both"),
        ({"MEDCAST_API_KEY_FILE": "/nonexistent/key"}, "cannot read"),
        ({"MEDCAST_LOG_FLUSH_MS": "nan"}, "MEDCAST_LOG_FLUSH_MS"),
        ({"MEDCAST_LOG_FLUSH_MS": "-1"}, "between 0 and 60000"),
        ({"MEDCAST_LOG_DURABILITY": "eventually"}, "expected one of ack, buffered"),
        ({"MEDCAST_LOG_ACK_TIMEOUT_MS": "0"}, "MEDCAST_LOG_ACK_TIMEOUT_MS='0': must be"),
        ({"MEDCAST_SQLITE_SYNCHRONOUS": "off"}, "expected one of normal, full, extra"),
        ({"MEDCAST_LOG_EXPLANATIONS": "sometimes"}, "MEDCAST_LOG_EXPLANATIONS='sometimes': "
                                                    "expected on or off"),
    ],
)
def test_settings_reject_malformed_values(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_settings_durability_defaults_and_the_window_per_mode() -> None:
    d = Settings.from_env({})
    assert (d.log_durability, d.flush_window_ms, d.log_ack_timeout_ms) == ("ack", 2.0, 2000.0)
    assert d.sqlite_synchronous == "full"
    b = Settings.from_env({"MEDCAST_LOG_DURABILITY": "Buffered",
                           "MEDCAST_SQLITE_SYNCHRONOUS": "NORMAL"})
    assert (b.log_durability, b.flush_window_ms, b.sqlite_synchronous) == (
        "buffered", 20.0, "normal")
    w = Settings.from_env({"MEDCAST_LOG_FLUSH_MS": "2.5", "MEDCAST_LOG_ACK_TIMEOUT_MS": "500"})
    assert (w.flush_window_ms, w.log_ack_timeout_ms) == (2.5, 500.0)


def test_log_explanations_is_off_unless_switched_on() -> None:
    assert Settings.from_env({}).log_explanations is False
    for on in ("on", "1", "true", "YES"):
        assert Settings.from_env({"MEDCAST_LOG_EXPLANATIONS": on}).log_explanations is True
    for off in ("off", "0", "False", "no", ""):
        assert Settings.from_env({"MEDCAST_LOG_EXPLANATIONS": off}).log_explanations is False
