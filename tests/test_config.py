"""Configuration: config.toml, the environment, .env, and refusals that name the key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from actors.config import ConfigError, build_settings, load_settings

ROOT = Path(__file__).resolve().parent.parent


def test_the_shipped_config_toml_holds_the_defaults() -> None:
    shipped = load_settings(ROOT / "config.toml", environ={})
    assert shipped == build_settings({}, environ={})


def test_every_setting_in_config_toml_has_a_comment() -> None:
    for line in (ROOT / "config.toml").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            assert "#" in line, line


def test_an_unknown_key_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match=r"actors\.mailbox_sise"):
        build_settings({"actors": {"mailbox_sise": 3}}, environ={})
    with pytest.raises(ConfigError, match=r"nonsense"):
        build_settings({"nonsense": {}}, environ={})


def test_a_bad_value_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match=r"chat\.default_temperature"):
        build_settings({"chat": {"default_temperature": 3}}, environ={})
    with pytest.raises(ConfigError, match=r"upstream\.provider"):
        build_settings({}, environ={"ACTORCHAT_UPSTREAM__PROVIDER": "azure"})


def test_the_environment_wins_over_the_file() -> None:
    settings = build_settings(
        {"actors": {"idle_timeout_s": 10}, "upstream": {"base_url": "http://file/v1"}},
        environ={
            "ACTORCHAT_ACTORS__IDLE_TIMEOUT_S": "60",
            "OPENAI_BASE_URL": "http://env/v1",
            "OPENAI_API_KEY": "sk-from-env",
            "SESSION_SECRET": "s3cret",
            "DEBUG_TOKEN": "t0ken",
        },
    )
    assert settings.actors.idle_timeout_s == 60
    assert settings.upstream.base_url == "http://env/v1"
    assert settings.upstream.api_key.get_secret_value() == "sk-from-env"
    assert "sk-from-env" not in repr(settings)
    assert settings.sessions.secret.get_secret_value() == "s3cret"
    assert settings.debug.token.get_secret_value() == "t0ken"


def test_a_broken_toml_file_is_refused_with_its_name(tmp_path: Path) -> None:
    broken = tmp_path / "config.toml"
    broken.write_text("[server\nbind = 1\n")
    with pytest.raises(ConfigError, match="config.toml"):
        load_settings(broken, environ={})


def test_the_command_reads_dot_env_and_refuses_a_bad_config(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("ACTORCHAT_ACTORS__MAILBOX_SIZE=0\n")
    (tmp_path / "config.toml").write_text("")
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith("ACTORCHAT_")}
    result = subprocess.run(
        [sys.executable, "-m", "web.cli", "serve", "--config", "config.toml"],
        cwd=tmp_path, env={**environment, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert result.returncode == 2
    assert "actors.mailbox_size" in result.stderr


def test_sessions_must_outlive_their_actors() -> None:
    with pytest.raises(ConfigError, match=r"sessions\.ttl_s must be 0 or longer"):
        build_settings({"sessions": {"ttl_s": 60}, "actors": {"idle_timeout_s": 300}},
                       environ={})
    assert build_settings({"sessions": {"ttl_s": 0}}, environ={}).sessions.ttl_s == 0
