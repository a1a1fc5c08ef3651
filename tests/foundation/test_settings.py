from pathlib import Path

import pytest

from models.settings import DEFAULT_SECRET, ConfigError, load_settings


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    return p


def test_defaults_are_embedded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = load_settings()
    assert (s.host, s.port) == ("127.0.0.1", 8080)
    assert s.db_url == f"sqlite:///{tmp_path / 'data' / 'baywarden.db'}"
    assert s.evidence_dir == Path("data") / "evidence"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("port: 99999\n", "cfg.yaml:1: port: Input should be less than or equal to 65535"),
        ("relay:\n  port: 9000\n  bogus: 1\n", "cfg.yaml:3: relay.bogus: Extra inputs are not permitted"),
        (
            "cameras:\n  - name: gate\n    url: rtsp://cam/1\n    fps: 0\n",
            "cfg.yaml:4: cameras.0.fps: Input should be greater than 0",
        ),
        ("cameras:\n  - name: gate\n    url: ftp://cam/1\n", "cfg.yaml:3: cameras.0.url: String should match pattern"),
        ("database_url: mysql://x/y\n", "database_url must be a sqlite:// or postgresql:// URL"),
    ],
)
def test_errors_name_field_and_line(tmp_path, text, expected):
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, text))
    assert any(expected in line for line in err.value.lines), err.value.lines


def test_invalid_yaml_names_line(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, "port: 8080\nhost: [unclosed\n"))
    assert "invalid YAML" in str(err.value) and "cfg.yaml:" in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "nope.yaml")


def test_env_overrides_file(tmp_path, monkeypatch):
    path = write(tmp_path, "port: 8081\nsecurity:\n  login_max_failures: 3\n")
    monkeypatch.setenv("BAYWARDEN_PORT", "9090")
    monkeypatch.setenv("BAYWARDEN_SECURITY__LOGIN_MAX_FAILURES", "7")
    monkeypatch.setenv("BAYWARDEN_DATABASE_URL", "postgresql+psycopg://u:p@127.0.0.1/db")
    s = load_settings(path)
    assert s.port == 9090
    assert s.security.login_max_failures == 7
    assert s.db_url == "postgresql+psycopg://u:p@127.0.0.1/db"


def test_production_refuses_default_secret(tmp_path):
    with pytest.raises(ConfigError, match="secret_key is still the default"):
        load_settings(write(tmp_path, "env: production\n"))
    ok = load_settings(write(tmp_path, "env: production\nsecurity:\n  secret_key: a-long-random-secret-value\n"))
    assert ok.security.secret_key.get_secret_value() != DEFAULT_SECRET


def test_duplicate_camera_names(tmp_path):
    text = "cameras:\n  - {name: a, url: 'rtsp://x/1'}\n  - {name: a, url: 'rtsp://x/2'}\n"
    with pytest.raises(ConfigError, match="camera names must be unique"):
        load_settings(write(tmp_path, text))
