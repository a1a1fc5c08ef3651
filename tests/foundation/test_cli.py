"""The console script as a user runs it: real processes, real ports."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from baywarden.demo import free_port
from models.db import head_revision

BAYWARDEN = [sys.executable, "-m", "baywarden.cli"]


def run(args, cwd, env=None, input=None, timeout=60):
    full_env = {**os.environ, **(env or {})}
    full_env.pop("BAYWARDEN_CONFIG", None)
    return subprocess.run(
        BAYWARDEN + args, cwd=cwd, env=full_env, input=input, capture_output=True, text=True, timeout=timeout
    )


def test_help_lists_every_command(tmp_path):
    out = run(["--help"], tmp_path).stdout
    for word in ("run", "db", "config", "user"):
        assert word in out
    assert "upgrade" in run(["db", "--help"], tmp_path).stdout
    assert "--role" in run(["user", "create", "--help"], tmp_path).stdout


def test_config_validate(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("port: 8099\ncameras:\n  - name: bay-cam\n    url: rtsp://127.0.0.1:8554/a\n")
    r = run(["config", "validate", str(good)], tmp_path)
    assert r.returncode == 0 and "OK (1 cameras" in r.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("port: 8099\ncameras:\n  - name: bay cam\n    url: rtsp://x/a\n")
    r = run(["config", "validate", str(bad)], tmp_path)
    assert r.returncode == 2
    assert "bad.yaml:3: cameras.0.name" in r.stderr


def test_user_create_and_db_upgrade(tmp_path):
    r = run(["db", "upgrade"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert run(["db", "current"], tmp_path).stdout.strip() == head_revision()
    pw = "a good long password\n"
    r = run(["user", "create", "ops", "--role", "operator", "--password-stdin"], tmp_path, input=pw)
    assert r.returncode == 0 and "created operator ops" in r.stdout
    r = run(["user", "create", "ops", "--password-stdin"], tmp_path, input="a good long password\n")
    assert r.returncode == 1 and "already taken" in r.stderr
    r = run(["user", "create", "x2", "--password-stdin"], tmp_path, input="short\n")
    assert r.returncode == 2 and "password" in r.stderr
    r = run(["user", "create", "x3", "--role", "god", "--password-stdin"], tmp_path, input="a good long password\n")
    assert r.returncode == 2 and "--role" in r.stderr


def test_broken_config_creates_nothing(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data_dir: ./state\nport: nope\n")
    r = run(["run", "--config", str(cfg)], tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"error: {cfg}:2: port: Input should be a valid integer, unable to parse string as an integer"
    ]
    assert not (tmp_path / "state").exists()


def test_wrong_database_url_is_one_clear_line(tmp_path):
    env = {
        "BAYWARDEN_DATABASE_URL": "postgresql+psycopg://app:s3cret@127.0.0.1:1/nope",
        "BAYWARDEN_PORT": str(free_port()),
    }
    r = run(["run"], tmp_path, env=env)
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot reach the database postgresql+psycopg://app:***@127.0.0.1:1/nope")
    assert "s3cret" not in r.stderr


def test_port_in_use(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = run(["run"], tmp_path, env={"BAYWARDEN_PORT": str(port)})
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == f"error: cannot listen on 127.0.0.1:{port}: Address already in use"
    assert not (tmp_path / "data").exists()


def test_relay_port_in_use_is_one_line_and_creates_nothing(tmp_path):
    """Finding 13: a taken relay port gave a 170-line traceback and exit 3 after the data folder,
    database and admin user were created."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        env = {"BAYWARDEN_PORT": str(free_port()), "BAYWARDEN_COMPONENTS__RELAY": "true",
               "BAYWARDEN_RELAY__PORT": str(port)}
        r = run(["run"], tmp_path, env=env)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [f"error: cannot listen on 127.0.0.1:{port}: Address already in use"]
    assert not (tmp_path / "data").exists()


def test_rule_errors_exit_2_in_run_as_in_config_validate(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data_dir: ./state\nenforcement:\n  rules: {idle_grace_min: -5}\n")
    validate = run(["config", "validate", str(cfg)], tmp_path)
    r = run(["run", "--config", str(cfg)], tmp_path, env={"BAYWARDEN_PORT": str(free_port())})
    assert validate.returncode == 2 and r.returncode == 2, (validate.stderr, r.stderr)
    assert r.stderr.strip().splitlines()[-1].startswith("error: ")
    assert not (tmp_path / "state").exists()


def test_run_serves_and_stops_cleanly(tmp_path):
    port = free_port()
    env = {**os.environ, "BAYWARDEN_PORT": str(port)}
    env.pop("BAYWARDEN_CONFIG", None)
    proc = subprocess.Popen([*BAYWARDEN, "run"], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("service did not come up")
                time.sleep(0.3)
        assert r.json() == {"status": "ok"}
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").json()["database"] == "ok"
        # Started up, the long-lived heap is frozen so full collections do not stall the event loop.
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        frozen = [line for line in metrics.splitlines() if line.startswith("baywarden_gc_frozen_objects ")]
        assert frozen and float(frozen[0].split()[1]) > 50_000, frozen
        password = (tmp_path / "data" / "initial-admin-password.txt").read_text().strip()
        assert oct((tmp_path / "data" / "initial-admin-password.txt").stat().st_mode)[-3:] == "600"
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:
            assert c.post("/api/v1/auth/login", json={"username": "admin", "password": password}).status_code == 200
            assert c.get("/api/v1/users").status_code == 200
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    # uvicorn re-raises SIGTERM after its graceful shutdown, so -15 is a clean stop too.
    assert proc.returncode in (0, -15), err
    assert "Application shutdown complete" in err
    # Parts stop in reverse order and the log never shows the admin password.
    assert "stopping scheduler" in err and password not in err
    assert (Path(tmp_path) / "data" / "baywarden.db").exists()


def test_demo_names_what_it_is_missing_in_one_line(tmp_path, monkeypatch):
    """Issue 18 row 1: `baywarden demo` after the README's install crashed with ModuleNotFoundError."""
    import importlib.util
    import shutil as _shutil

    import baywarden.demo as demo

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "aiosmtpd" else real(name, *a))
    monkeypatch.setattr(_shutil, "which", lambda name: None)
    monkeypatch.setattr(demo, "REPO", tmp_path / "repo")  # a checkout that lost fixtures/bay_car.jpg
    missing = demo.missing_prerequisites(tmp_path / "demo-data")
    assert any('pip install -e ".[demo]"' in m for m in missing)
    assert any("apt-get install ffmpeg" in m for m in missing)
    assert any("fixtures/bay_car.jpg" in m and "git" in m for m in missing)
    assert not any("shared" in m for m in missing)  # the demo needs no ../shared (its photo is committed)
