import pytest

from models.tables import Role
from tests.foundation.helpers import add_user, client_for, login, make_settings

JPEG = b"\xff\xd8\xff\xe0" + b"\x01" * 50 + b"\xff\xd9"


@pytest.fixture
def env(tmp_path, sqlite_url):
    settings = make_settings(tmp_path, sqlite_url)
    client = client_for(settings)
    add_user(settings, "root", Role.admin)
    add_user(settings, "vic", Role.viewer)
    with client:
        csrf = login(client, "root")
        token = client.post("/api/v1/tokens", json={"name": "edge"}, headers={"X-CSRF-Token": csrf}).json()["token"]
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
