"""The deployment files say what the code accepts: every instance of deploy/compose.yaml and of the
systemd example loads its settings, they share the settings the fleet must agree on, and the balancer
points at the instances that serve HTTP."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest
import yaml

from models.settings import load_settings
from service.fleet import first_difference, shared_settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SECRETS = {"POSTGRES_PASSWORD": "pw-for-the-test", "BAYWARDEN_SECRET": "0123456789abcdef0123456789abcdef"}


def _expand(value: str) -> str:
    return re.sub(r"\$\{(\w+)(:\?[^}]*)?\}", lambda m: SECRETS[m.group(1)], str(value))


def _instance_settings(monkeypatch, env: dict[str, str]):
    for key in [k for k in __import__("os").environ if k.startswith("BAYWARDEN_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return load_settings(DEPLOY / "baywarden.yaml")


def test_compose_instances_load_and_agree(monkeypatch):
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    instances = {name: s for name, s in services.items() if "build" in s}
    assert set(instances) == {"engine-a", "engine-b", "edge"}
    settings = {}
    for name, service in instances.items():
        env = {k: _expand(v) for k, v in service["environment"].items()}
        settings[name] = _instance_settings(monkeypatch, env)
        assert settings[name].ha.node == name and settings[name].database_url.startswith("postgresql")
        assert "/etc/baywarden/baywarden.yaml" in " ".join(service["volumes"])
    roles = {n: {c for c, on in s.components.model_dump().items() if on} for n, s in settings.items()}
    assert roles["engine-a"] == roles["engine-b"] == {"api", "scheduler", "enforcement"}
    assert roles["edge"] == {"api", "cameras", "relay"}
    shared = [shared_settings(s) for s in settings.values()]
    assert all(first_difference(shared[0], other) is None for other in shared[1:])
    # The balancer sends HTTP to the engines only, and is the proxy whose X-Forwarded-For is believed.
    cfg = (DEPLOY / "haproxy.cfg").read_text()
    assert set(re.findall(r"^\s*server (\S+) (\S+):8080", cfg, re.M)) == {("engine-a", "engine-a"),
                                                                          ("engine-b", "engine-b")}
    lb_ip = services["balancer"]["networks"]["fleet"]["ipv4_address"]
    assert all(s.security.trusted_proxies == [lb_ip] for s in settings.values())
    assert settings["edge"].relay.port == int(services["edge"]["ports"][0].split(":")[1])


def test_systemd_unit_and_its_environment_file(monkeypatch):
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment, method-assign]
    unit.read_string((DEPLOY / "systemd" / "baywarden@.service").read_text())
    service = unit["Service"]
    assert service["ExecStart"].endswith("baywarden run")
    assert service["EnvironmentFile"] == "/etc/baywarden/%i.env"
    # A configuration refused at start exits 2 (StartupError code 2): systemd must not restart it in a loop.
    assert service["RestartPreventExitStatus"] == "2"
    env = {}
    for line in (DEPLOY / "systemd" / "instance.env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value
    env["BAYWARDEN_HA__NODE"] = "engine-a"
    s = _instance_settings(monkeypatch, env)
    assert s.components.enforcement and not s.components.cameras and s.ha.shards == 8


@pytest.mark.parametrize("name", ["Dockerfile"])
def test_image_runs_the_service_with_the_shared_config(name):
    text = (DEPLOY / name).read_text()
    assert "BAYWARDEN_CONFIG=/etc/baywarden/baywarden.yaml" in text and '"baywarden", "run"' in text
