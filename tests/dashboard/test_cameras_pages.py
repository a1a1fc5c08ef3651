"""Camera pages over HTTP (no browser): edit, delete, zones, config cameras read-only, roles, CSRF, escaping;
pictures from a real GStreamer RTSP server (test connection, snapshots, the running worker's newest frame)."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from api.routes.dash_cameras import parse_points
from models.db import make_engine
from models.tables import AuditLog, Camera, Role
from tests.camera.helpers import RtspServer, ensure_clip, need_gstreamer
from tests.foundation.helpers import add_user, client_for, free_port, login, make_settings

XSS = '<script>alert("x")</script>'
SECRET = "s3cret-pw"
ZONE = {"bay_id": "B1", "polygon": [[100, 300], [620, 300], [620, 700], [100, 700]]}


@pytest.fixture
def env(tmp_path: Path, sqlite_url: str) -> Iterator[tuple[TestClient, Any]]:
    settings = make_settings(tmp_path, sqlite_url, cameras=[
        {"name": "north", "url": f"rtsp://admin:{SECRET}@127.0.0.1:1/x", "enabled": False, "zones": [ZONE]}])
    client = client_for(settings)
    add_user(settings, "op", Role.operator)
    add_user(settings, "view", Role.viewer)
    with client:
        yield client, settings


def op(env: tuple[TestClient, Any]) -> tuple[TestClient, str]:
    client, _ = env
    return client, login(client, "op")


def add(client: TestClient, csrf: str, name: str = "gate", url: str = f"rtsp://admin:{SECRET}@10.0.0.5/s1",
        **kw: Any) -> None:
    r = client.post("/api/v1/cameras", json={"name": name, "url": url, "enabled": False, **kw},
                    headers={"X-CSRF-Token": csrf})
    assert r.status_code == 201, r.text


def errors_of(html: str) -> dict[str, str]:
    """input id -> the error shown under it."""
    return dict(re.findall(r'id="((?:cam|zone)-[a-z0-9_-]+?)-err">([^<]*)<', html))


def stored(settings: Any, name: str) -> Camera:
    engine = make_engine(settings.db_url)
    with Session(engine) as db:
        cam = db.exec(select(Camera).where(Camera.name == name)).one()
    engine.dispose()
    return cam


# --- pages, edit, delete ---------------------------------------------------------------------------


def test_camera_page_full_and_fragment_with_zones_drawn(env) -> None:
    client, csrf = op(env)
    add(client, csrf, zones=[ZONE])
    full = client.get("/dash/cameras/gate")
    assert full.status_code == 200 and "<html" in full.text and "<h1>Camera gate</h1>" in full.text
    assert '<polygon points="100,300 620,300 620,700 100,700">' in full.text  # the SVG overlay
    assert 'src="/api/v1/cameras/gate/snapshot?max_age=10"' in full.text and "zones.js" in full.text
    assert SECRET not in full.text and "admin:***@10.0.0.5" in full.text  # the password never reaches the page
    assert 'name="zone-0-points"' in full.text and 'name="zone-1-points"' in full.text  # one empty row to add
    frag = client.get("/dash/cameras/gate", headers={"HX-Request": "true"})
    assert frag.status_code == 200 and "<html" not in frag.text and "<h1>" in frag.text
    assert client.get("/dash/cameras/nope").status_code == 404
    listing = client.get("/dash/cameras").text
    assert 'href="/dash/cameras/gate"' in listing and "/api/v1/cameras/gate/snapshot" not in listing  # disabled
    add(client, csrf, name="east", url="rtsp://10.0.0.6/s1", enabled=True)
    for path in ("/dash", "/dash/cameras"):  # the overview's camera rows too: a lazy, cached thumbnail
        html = client.get(path).text
        assert '<img class="thumb" src="/api/v1/cameras/east/snapshot?width=160&amp;max_age=30"' in html, path
        assert 'loading="lazy"' in html, path
    add(client, csrf, name="status")  # a name that once collided with the polled rows fragment
    assert "<h1>" in client.get("/dash/cameras/status", headers={"HX-Request": "true"}).text
    assert "/dash/cameras/status" in client.get("/dash/camera-rows").text


def test_edit_camera_keeps_the_masked_password_and_shows_errors_next_to_fields(env) -> None:
    client, csrf = op(env)
    _, settings = env
    add(client, csrf)
    form = {"csrf_token": csrf, "url": "rtsp://admin:***@10.0.0.5/s1", "sub_url": "rtsp://admin:***@10.0.0.5/s2",
            "fps": "8", "enabled": "on"}
    r = client.post("/dash/cameras/gate", data=form)
    assert r.status_code == 303 and r.headers["location"] == "/dash/cameras/gate?msg=Camera+saved"
    cam = stored(settings, "gate")
    # The masked password is the stored one again, also for a sub-stream on the same host.
    assert (cam.url, cam.sub_url) == (f"rtsp://admin:{SECRET}@10.0.0.5/s1", f"rtsp://admin:{SECRET}@10.0.0.5/s2")
    assert cam.fps == 8 and cam.enabled is True
    # Another host with the mask: the stored password must not travel there.
    r = client.post("/dash/cameras/gate", data={**form, "url": "rtsp://admin:***@evil.example/s1"})
    assert r.status_code == 422 and "type the password again" in errors_of(r.text)["cam-url"]
    assert 'value="rtsp://admin:***@evil.example/s1"' in r.text  # the operator's input is kept
    assert stored(settings, "gate").url == f"rtsp://admin:{SECRET}@10.0.0.5/s1"
    r = client.post("/dash/cameras/gate", data={**form, "url": "ftp://x/y", "fps": "99"})
    errs = errors_of(r.text)
    assert r.status_code == 422 and "cam-url" in errs and "less than or equal to 30" in errs["cam-fps"]
    engine = make_engine(settings.db_url)
    with Session(engine) as db:
        actions = [a.action for a in db.exec(select(AuditLog).where(AuditLog.entity == "camera"))]
    engine.dispose()
    assert actions == ["create", "update"]


def test_delete_camera(env) -> None:
    client, csrf = op(env)
    add(client, csrf)
    page = client.get("/dash/cameras/gate").text
    assert 'hx-confirm="Delete camera gate?"' in page
    r = client.post("/dash/cameras/gate/delete", data={"csrf_token": csrf})
    assert r.status_code == 303 and r.headers["location"] == "/dash/cameras?msg=Camera+gate+deleted"
    assert client.get("/api/v1/cameras/gate").status_code == 404
    assert client.post("/dash/cameras/gate/delete", data={"csrf_token": csrf}).status_code == 404


def test_config_camera_is_read_only_with_the_reason(env) -> None:
    client, csrf = op(env)
    page = client.get("/dash/cameras/north").text
    assert "defined in the configuration file" in page and "change it there" in page
    assert "Save camera" not in page and "Save zones" not in page and "Delete camera" not in page
    assert "Test connection" in page and SECRET not in page  # testing the stored URL is still offered
    assert '<polygon points="100,300 620,300 620,700 100,700">' in page  # its zones are drawn
    r = client.post("/dash/cameras/north", data={"csrf_token": csrf, "url": "rtsp://10.0.0.9/x", "fps": "5"})
    assert r.status_code == 422 and "camera &#39;north&#39; is defined in the config file" in r.text
    r = client.post("/dash/cameras/north/zones", data={"csrf_token": csrf, "zone-0-bay_id": "B9",
                                                       "zone-0-points": "0,0 10,0 10,10"})
    assert r.status_code == 422 and "camera &#39;north&#39; is defined in the config file" in r.text
    r = client.post("/dash/cameras/north/delete", data={"csrf_token": csrf})
    assert r.status_code == 422 and "remove it there" in r.text
    assert stored(env[1], "north").zones == [ZONE]


# --- zones ---------------------------------------------------------------------------------------


def test_zone_errors_are_shown_next_to_their_fields(env) -> None:
    client, csrf = op(env)
    _, settings = env
    add(client, csrf, zones=[ZONE])
    bad = {"csrf_token": csrf,
           "zone-0-bay_id": "B1", "zone-0-points": "1,2 3;4 5,6",
           "zone-1-bay_id": "", "zone-1-points": "0,0 10,0 10,10",
           "zone-2-bay_id": "B2", "zone-2-points": "0,0 10,10",
           "zone-3-bay_id": "B3", "zone-3-points": "0,0 5,5 10,10",
           "zone-4-bay_id": "B1", "zone-4-points": "-5,0 10,0 10,10",
           "zone-5-bay_id": XSS[:40], "zone-5-points": "",
           "zone-6-bay_id": "", "zone-6-points": ""}
    r = client.post("/dash/cameras/gate/zones", data=bad)
    assert r.status_code == 422
    errs = errors_of(r.text)
    assert "point 2 ('3;4') is not x,y" in errs["zone-0-points"].replace("&#39;", "'")
    assert "name the bay" in errs["zone-1-bay_id"]
    assert "at least 3 points (got 2)" in errs["zone-2-points"]
    assert "no area" in errs["zone-3-points"]
    assert "already has a zone" in errs["zone-4-bay_id"] and "outside the picture" in errs["zone-4-points"]
    assert "add at least 3 points" in errs["zone-5-points"]
    assert "zone-6-bay_id" not in errs and "zone-6-points" not in errs  # an empty row is no zone
    assert "1,2 3;4 5,6</textarea>" in r.text  # input kept
    assert XSS[:40] not in r.text and "&lt;script&gt;" in r.text
    assert 'aria-invalid="true" aria-describedby="zone-0-points-err"' in r.text
    assert stored(settings, "gate").zones == [ZONE]  # nothing half-saved
    good = {"csrf_token": csrf, "zone-0-bay_id": "B1", "zone-0-points": "100, 300  620,300\n620,700 100,700",
            "zone-1-bay_id": "B2", "zone-1-points": "700,300 900,300 900,700.5",
            "zone-2-bay_id": "", "zone-2-points": ""}
    r = client.post("/dash/cameras/gate/zones", data=good)
    assert r.status_code == 303 and r.headers["location"] == "/dash/cameras/gate?msg=2+zones+saved"
    assert client.get("/api/v1/cameras/gate").json()["zones"] == [
        ZONE, {"bay_id": "B2", "polygon": [[700, 300], [900, 300], [900, 700.5]]}]
    r = client.post("/dash/cameras/gate/zones", data={"csrf_token": csrf, "zone-0-bay_id": "", "zone-0-points": ""})
    assert r.status_code == 303 and client.get("/api/v1/cameras/gate").json()["zones"] == []


def test_points_outside_a_known_picture_size() -> None:
    assert parse_points("0,0 960,0 960,720", (960, 720))[1] == ""
    assert "outside the 960 x 720 picture" in parse_points("0,0 961,0 960,720", (960, 720))[1]


# --- roles, CSRF, escaping -------------------------------------------------------------------------


def test_viewer_sees_but_cannot_change(env) -> None:
    client, csrf = op(env)
    add(client, csrf)
    client.cookies.clear()
    csrf = login(client, "view")
    page = client.get("/dash/cameras/gate").text
    assert "<h1>Camera gate</h1>" in page
    assert "Save camera" not in page and "Save zones" not in page and "Delete camera" not in page
    assert "Test connection" not in page and "Start this camera" not in page
    for path, data in [("/dash/cameras/gate", {"url": "rtsp://10.0.0.9/x", "fps": "5"}),
                       ("/dash/cameras/gate/zones", {"zone-0-bay_id": "B1", "zone-0-points": "0,0 9,0 9,9"}),
                       ("/dash/cameras/gate/delete", {}), ("/dash/cameras/gate/stop", {}),
                       ("/dash/camera-test", {"url": "rtsp://10.0.0.9/x"})]:
        assert client.post(path, data={"csrf_token": csrf, **data}).status_code == 403, path
    r = client.post("/api/v1/cameras/test", json={"url": "rtsp://10.0.0.9/x"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 403
    assert client.get("/api/v1/cameras/gate").status_code == 200


def test_changes_need_the_csrf_token(env) -> None:
    client, csrf = op(env)
    add(client, csrf)
    for path, data in [("/dash/cameras/gate", {"url": "rtsp://10.0.0.9/x", "fps": "5"}),
                       ("/dash/cameras/gate/zones", {"zone-0-bay_id": "B1", "zone-0-points": "0,0 9,0 9,9"}),
                       ("/dash/cameras/gate/delete", {}), ("/dash/camera-test", {"url": "rtsp://10.0.0.9/x"})]:
        assert client.post(path, data=data).status_code == 403, path
        assert client.post(path, data={"csrf_token": "wrong", **data}).status_code == 403, path
    assert client.post("/api/v1/cameras/test", json={"url": "rtsp://10.0.0.9/x"}).status_code == 403
    assert client.get("/api/v1/cameras/gate").json()["url"] == "rtsp://admin:***@10.0.0.5/s1"


def test_urls_and_bay_ids_are_escaped(env) -> None:
    client, csrf = op(env)
    add(client, csrf, url=f'rtsp://10.0.0.5/"><img src=x onerror=alert(1)>{XSS}',
        zones=[{"bay_id": XSS, "polygon": [[0, 0], [10, 0], [10, 10]]}])
    for path in ("/dash/cameras/gate", "/dash/cameras", "/dash"):
        html = client.get(path).text
        assert XSS not in html and "<img src=x" not in html, path
    page = client.get("/dash/cameras/gate").text
    assert "&lt;script&gt;" in page and "&#34;&gt;&lt;img src=x" in page


# --- pictures: test connection and snapshots --------------------------------------------------------


@pytest.fixture(scope="module")
def clip() -> Path:
    return ensure_clip()


@pytest.fixture(scope="module")
def rtsp(clip: Path) -> Iterator[RtspServer]:
    need_gstreamer()
    srv = RtspServer(clip, auth=f"admin:{SECRET}").start()
    yield srv
    srv.stop()


def jpeg_shape(data: bytes) -> tuple[int, ...]:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a JPEG"
    return image.shape


@pytest.mark.slow
def test_test_connection_and_snapshot_from_a_real_rtsp_stream(env, rtsp: RtspServer) -> None:
    client, csrf = op(env)
    h = {"X-CSRF-Token": csrf}
    t0 = time.monotonic()
    r = client.post("/api/v1/cameras/test", json={"url": rtsp.url}, headers=h)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/jpeg" and r.headers["cache-control"] == "no-store"
    assert jpeg_shape(r.content) == (720, 960, 3) and time.monotonic() - t0 < 9
    add(client, csrf, name="bay", url=rtsp.url)
    r = client.get("/api/v1/cameras/bay/snapshot")
    assert r.status_code == 200 and jpeg_shape(r.content) == (720, 960, 3)
    assert r.headers["x-snapshot-source"] == "stream" and r.headers["x-frame-width"] == "960"
    again = client.get("/api/v1/cameras/bay/snapshot?max_age=60")  # kept: no second connection
    assert again.content == r.content
    thumb = client.get("/api/v1/cameras/bay/snapshot?width=160&max_age=60")
    assert jpeg_shape(thumb.content) == (120, 160, 3) and thumb.headers["x-frame-height"] == "720"
    # Now the size is known: the camera page sizes the overlay and checks points against it.
    page = client.get("/dash/cameras/bay").text
    assert 'viewBox="0 0 960 720"' in page and "960 \u00d7 720 px" in page
    r = client.post("/dash/cameras/bay/zones", data={"csrf_token": csrf, "zone-0-bay_id": "B1",
                                                     "zone-0-points": "0,0 961,0 961,720"})
    assert r.status_code == 422 and "outside the 960 x 720 picture" in r.text
    # The dashboard's button: the form shows the URL masked; the stored password is used for the same host.
    masked = rtsp.url.replace(SECRET, "***")
    r = client.post("/dash/camera-test", data={"csrf_token": csrf, "url": masked, "test_camera": "bay"})
    assert r.status_code == 200 and "<html" not in r.text
    assert 'src="data:image/jpeg;base64,' in r.text and "960 \u00d7 720 px" in r.text and SECRET not in r.text
    # A wrong password: said plainly, and the password is not in the message.
    wrong = rtsp.url.replace(SECRET, "not-the-password")
    r = client.post("/api/v1/cameras/test", json={"url": wrong}, headers=h)
    assert r.status_code == 502 and r.json()["detail"]["error"] == "auth"
    assert "refused the user name or password" in r.json()["detail"]["message"]
    assert "not-the-password" not in r.text
    r = client.post("/api/v1/cameras/test", json={"url": rtsp.url.replace("admin:" + SECRET + "@", "")}, headers=h)
    assert r.json()["detail"]["error"] == "auth" and "needs a user name and password" in r.text
    # A viewer may look at configured cameras, not test URLs.
    client.cookies.clear()
    login(client, "view")
    assert jpeg_shape(client.get("/api/v1/cameras/bay/snapshot").content) == (720, 960, 3)


def test_closed_port_gives_a_clear_error_within_the_timeout(env) -> None:
    client, csrf = op(env)
    url = f"rtsp://admin:{SECRET}@127.0.0.1:{free_port()}/cam"
    t0 = time.monotonic()
    r = client.post("/api/v1/cameras/test", json={"url": url}, headers={"X-CSRF-Token": csrf})
    took = time.monotonic() - t0
    assert r.status_code == 502 and took < 8.5
    detail = r.json()["detail"]
    assert detail["error"] == "unreachable" and "refused the connection" in detail["message"]
    assert SECRET not in r.text
    r = client.post("/dash/camera-test", data={"csrf_token": csrf, "url": url})
    assert r.status_code == 200 and 'role="alert"' in r.text and "cannot reach the camera" in r.text
    assert SECRET not in r.text
    add(client, csrf, name="dead", url=url)  # a snapshot of a configured camera says the same
    r = client.get("/api/v1/cameras/dead/snapshot")
    assert r.status_code == 502 and r.json()["detail"]["error"] == "unreachable"
    engine = make_engine(env[1].db_url)
    with Session(engine) as db:
        tests = list(db.exec(select(AuditLog).where(AuditLog.action == "test_connection")))
    engine.dispose()
    assert len(tests) == 2 and tests[0].actor == "op" and SECRET not in str(tests[0].after)


def test_a_silent_server_times_out_without_blocking_the_server(env, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that takes the connection and never answers: a timeout at the hard limit, and meanwhile
    the event loop keeps answering other requests (the grab runs on a thread of its own)."""
    from api.routes import cameras as cameras_api

    monkeypatch.setattr(cameras_api, "SNAPSHOT_TIMEOUT_S", 2.0)
    client, csrf = op(env)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # connections complete in the kernel; nobody ever reads or answers
        url = f"rtsp://127.0.0.1:{silent.getsockname()[1]}/cam"
        result: dict[str, Any] = {}

        def run() -> None:
            t0 = time.monotonic()
            result["r"] = client.post("/api/v1/cameras/test", json={"url": url}, headers={"X-CSRF-Token": csrf})
            result["took"] = time.monotonic() - t0

        worker = threading.Thread(target=run)
        worker.start()
        time.sleep(0.3)
        t0 = time.monotonic()
        assert client.get("/healthz").status_code == 200
        assert time.monotonic() - t0 < 1.0  # not stuck behind the grab
        worker.join(10)
    r = result["r"]
    assert r.status_code == 504 and r.json()["detail"]["error"] == "timeout", r.text
    assert result["took"] < 3.5


def test_wrong_scheme_and_file_urls_are_refused(env, clip: Path) -> None:
    client, csrf = op(env)
    h = {"X-CSRF-Token": csrf}
    r = client.post("/api/v1/cameras/test", json={"url": "ftp://10.0.0.5/stream"}, headers=h)
    assert r.status_code == 422
    r = client.post("/api/v1/cameras/test", json={"url": f"file://{clip}"}, headers=h)
    assert r.status_code == 422 and "file://" in r.json()["detail"]
    r = client.post("/dash/camera-test", data={"csrf_token": csrf, "url": "ftp://10.0.0.5/stream"})
    assert r.status_code == 422 and "not a stream URL" in r.text
    # A camera already configured with that file may be tested (and its file is its picture).
    add(client, csrf, name="recorded", url=f"file://{clip}")
    r = client.post("/api/v1/cameras/test", json={"url": f"file://{clip}", "camera": "recorded"}, headers=h)
    assert r.status_code == 200 and jpeg_shape(r.content) == (720, 960, 3)
    r = client.post("/api/v1/cameras/test", json={"url": "file:///etc/passwd", "camera": "recorded"}, headers=h)
    assert r.status_code == 422


@pytest.mark.slow
def test_snapshot_prefers_the_running_worker(tmp_path: Path, sqlite_url: str, rtsp: RtspServer) -> None:
    """A real supervisor and worker process: the snapshot is the worker's newest frame, over its pipe."""
    from service.camera_control import CameraComponent
    from tests.camera.recognizers import make_null_recognizer

    settings = make_settings(tmp_path, sqlite_url, components={"api": True, "scheduler": False, "cameras": True,
                                                               "relay": False, "enforcement": False},
                             cameras=[{"name": "live", "url": rtsp.url, "fps": 2}])
    client = client_for(settings)
    ctx = client.app.state.ctx
    ctx.components = [CameraComponent(ctx, make_null_recognizer)]  # only the camera part, recognising nothing
    add_user(settings, "view", Role.viewer)
    with client:
        login(client, "view")
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            st = client.get("/api/v1/cameras/live").json()["status"] or {}
            if st.get("state") == "running" and st.get("last_read"):
                break
            time.sleep(0.3)
        else:
            pytest.fail(f"the worker did not start reading: {st}")
        r = client.get("/api/v1/cameras/live/snapshot?max_age=0")
        assert r.status_code == 200 and r.headers["x-snapshot-source"] == "worker"
        assert jpeg_shape(r.content) == (720, 960, 3) and r.headers["x-frame-width"] == "960"


@pytest.mark.parametrize("field", ["url", "enabled", "fps", "zones"])
def test_patch_with_null_is_422_not_500(env, field) -> None:
    """Finding 7: a null url/enabled/fps/zones reached the NOT NULL columns and gave 500."""
    client, csrf = op(env)
    add(client, csrf)
    r = client.patch("/api/v1/cameras/gate", json={field: None}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 422 and "may not be null" in r.text
    r = client.patch("/api/v1/cameras/gate", json={"sub_url": None}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200  # removing the sub-stream is allowed


@pytest.mark.parametrize("url", ["rtsp://", "rtsp:///stream1", "http://:80/x", "rtsp://host:99999/x"])
def test_stream_urls_need_a_host_422_not_502(env, url) -> None:
    client, csrf = op(env)
    h = {"X-CSRF-Token": csrf}
    assert client.post("/api/v1/cameras", json={"name": "x1", "url": url}, headers=h).status_code == 422
    assert client.post("/api/v1/cameras/test", json={"url": url}, headers=h).status_code == 422
