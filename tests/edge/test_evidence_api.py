import struct

import cv2
import numpy as np
import pytest

from models.tables import Role
from tests.foundation.helpers import add_user, client_for, login, make_settings


def jpeg(value: int = 90, w: int = 32, h: int = 16) -> bytes:
    return cv2.imencode(".jpg", np.full((h, w, 3), value, np.uint8))[1].tobytes()


JPEG = jpeg()


@pytest.fixture
def env(tmp_path, sqlite_url):
    settings = make_settings(tmp_path, sqlite_url)
    client = client_for(settings)
    add_user(settings, "root", Role.admin)
    add_user(settings, "vic", Role.viewer)
    with client:
        csrf = login(client, "root")
        h = {"X-CSRF-Token": csrf}
        token = client.post("/api/v1/tokens", json={"name": "edge", "scopes": ["camera:g*"]}, headers=h).json()["token"]
        client.cookies.clear()
        yield settings, client, {"Authorization": f"Bearer {token}"}


def test_upload_then_only_logged_in_can_read(env):
    settings, client, auth = env
    assert client.put("/api/v1/evidence/gate/2026-11-02/a1-crop.jpg", content=JPEG, headers=auth).status_code == 204
    assert (settings.evidence_dir / "gate/2026-11-02/a1-crop.jpg").read_bytes() == JPEG
    assert client.get("/api/v1/evidence/gate/2026-11-02/a1-crop.jpg").status_code == 401
    assert client.get("/api/v1/evidence/gate/2026-11-02/a1-crop.jpg", headers=auth).status_code == 403  # device
    login(client, "vic")
    r = client.get("/api/v1/evidence/gate/2026-11-02/a1-crop.jpg")
    assert r.status_code == 200 and r.content == JPEG and r.headers["content-type"] == "image/jpeg"
    assert client.get("/api/v1/evidence/gate/2026-11-02/none.jpg").status_code == 404


@pytest.mark.parametrize(
    "path",
    ["../../etc/passwd.jpg", "gate/2026-11-02/../../x.jpg", "gate/x/a.jpg", "gate/2026-11-02/a.png", "%2e%2e/a.jpg"],
)
def test_bad_paths_refused(env, path):
    settings, client, auth = env
    r = client.put(f"/api/v1/evidence/{path}", content=JPEG, headers=auth)
    assert r.status_code in (400, 404)
    assert not any(settings.data_dir.parent.glob("**/a.png"))


def test_only_jpeg_and_size_limited(env):
    _, client, auth = env
    assert client.put("/api/v1/evidence/g/2026-11-02/x.jpg", content=b"GIF89a", headers=auth).status_code == 415
    big = JPEG + b"\x00" * (9 << 20)
    assert client.put("/api/v1/evidence/g/2026-11-02/x.jpg", content=big, headers=auth).status_code == 413
    # A JPEG header only (the old check was the first three bytes) and a truncated image are refused.
    assert client.put("/api/v1/evidence/g/2026-11-02/y.jpg", content=b"\xff\xd8\xff\xe0" + b"\x01" * 50,
                      headers=auth).status_code == 415
    assert client.put("/api/v1/evidence/g/2026-11-02/y.jpg", content=JPEG[: len(JPEG) // 2],
                      headers=auth).status_code == 422


def test_decompression_bomb_refused_before_decoding(env):
    settings, client, auth = env
    data = bytearray(jpeg())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 60000, 60000)  # claims 60000 x 60000 pixels
    r = client.put("/api/v1/evidence/g/2026-11-02/bomb.jpg", content=bytes(data), headers=auth)
    assert r.status_code == 422 and "60000x60000" in r.text
    assert not (settings.evidence_dir / "g/2026-11-02/bomb.jpg").exists()


def test_evidence_is_write_once(env):
    """Finding 1 of the security review: a second PUT silently replaced an evidence image."""
    settings, client, auth = env
    url = "/api/v1/evidence/gate/2026-11-02/w1-frame.jpg"
    assert client.put(url, content=JPEG, headers=auth).status_code == 204
    assert client.put(url, content=JPEG, headers=auth).status_code == 204  # a retried upload is idempotent
    r = client.put(url, content=jpeg(200), headers=auth)
    assert r.status_code == 409 and "write-once" in r.text
    stored = settings.evidence_dir / "gate/2026-11-02/w1-frame.jpg"
    assert stored.read_bytes() == JPEG
    assert stored.stat().st_mode & 0o077 == 0o040  # personal data: not world-readable
    assert not list(stored.parent.glob("*.part"))


def test_evidence_only_for_the_tokens_cameras_and_only_by_devices(env):
    settings, client, auth = env
    r = client.put("/api/v1/evidence/north/2026-11-02/a.jpg", content=JPEG, headers=auth)
    assert r.status_code == 403 and "camera:north" in r.text
    for who in ("root", "vic"):  # people read evidence; they never write it
        csrf = login(client, who)
        r = client.put("/api/v1/evidence/gate/2026-11-02/p.jpg", content=JPEG, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 403, who
        client.cookies.clear()
    assert not (settings.evidence_dir / "north").exists()
    assert not (settings.evidence_dir / "gate/2026-11-02/p.jpg").exists()
