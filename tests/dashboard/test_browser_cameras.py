"""The camera pages in a real headless Chromium, against a real GStreamer RTSP stream: test the connection
from the add form, open the camera, draw a zone by clicking on its picture, save it, edit the settings.
Screenshot: camera-edit.png."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from models.tables import Role
from tests.camera.helpers import RtspServer, ensure_clip, need_gstreamer
from tests.dashboard.browser import dashboard_server, htmx_ready, shot
from tests.foundation.helpers import LiveServer, free_port

SECRET = "pw-in-browser"


@pytest.fixture(scope="module")
def rtsp() -> Iterator[RtspServer]:
    need_gstreamer()
    srv = RtspServer(ensure_clip(), auth=f"admin:{SECRET}").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with dashboard_server(tmp_path_factory.mktemp("dash-cameras"), "op", Role.operator,
                          enforcement={"bays": [{"bay_id": "B1", "charge_point_id": "CP1", "connector_id": 1}]},
                          ) as live:
        yield live


@pytest.fixture
def start_path() -> str:
    return "/dash/cameras"


def test_test_connection_then_draw_a_zone_and_edit_the_camera(page: Any, rtsp: RtspServer) -> None:
    from playwright.sync_api import expect

    htmx_ready(page)
    # Add form: test first, the picture shows inline.
    page.get_by_label("Name").fill("bay-cam")
    page.get_by_label("Stream URL", exact=True).fill(rtsp.url)
    page.get_by_role("button", name="Test connection").click()
    result = page.locator("#cam-test-result .cam-test-ok")
    expect(result).to_contain_text("960 \u00d7 720 px", timeout=15_000)
    expect(result.locator("img")).to_be_visible()
    page.get_by_role("button", name="Add camera").click()
    expect(page.get_by_role("status")).to_contain_text("Camera bay-cam added")
    assert SECRET not in page.content()

    # The camera page (htmx navigation: zones.js runs from the swapped content).
    page.locator("tr[data-camera='bay-cam'] th a").click()
    expect(page.get_by_role("heading", name="Camera bay-cam", level=1)).to_be_visible()
    img = page.locator("#cam-snapshot")
    page.wait_for_function("() => { const i = document.getElementById('cam-snapshot');"
                           " return i && i.complete && i.naturalWidth === 960; }", timeout=15_000)
    expect(page.locator("#snapshot-status")).to_contain_text("960 \u00d7 720 px")
    assert page.locator("#zone-overlay").get_attribute("viewBox") == "0 0 960 720"

    # Zone 1: bay id, then four clicks on the picture; each adds a point in the picture's pixels.
    page.get_by_label("Bay id").first.fill("B1")
    draw = page.get_by_role("button", name="Add points by clicking the picture").first
    draw.click()
    expect(draw).to_have_attribute("aria-pressed", "true")
    box = img.bounding_box()
    assert box is not None
    scale = 960 / box["width"]
    clicks = [(0.2, 0.3), (0.8, 0.3), (0.8, 0.9), (0.2, 0.9)]
    for fx, fy in clicks:
        page.locator("#zone-overlay").click(position={"x": box["width"] * fx, "y": box["height"] * fy})
    points = page.locator("#zone-0-points").input_value().split()
    assert len(points) == 4
    x0, y0 = (int(v) for v in points[0].split(","))
    assert abs(x0 - 0.2 * box["width"] * scale) <= 2 and abs(y0 - 0.3 * box["height"] * scale) <= 2
    expect(page.locator("#zone-overlay polygon")).to_have_count(1)
    page.get_by_role("button", name="Remove last point").first.click()  # and put it back by keyboard
    page.locator("#zone-0-points").press("End")
    page.locator("#zone-0-points").type(" " + points[3])
    page.keyboard.press("Escape")  # leave drawing mode
    expect(draw).to_have_attribute("aria-pressed", "false")
    page.get_by_role("button", name="Save zones").click()
    expect(page.get_by_role("status").first).to_contain_text("1 zone saved")
    expect(page.locator(".zone-list")).to_contain_text("B1")
    expect(page.locator("#zone-overlay polygon")).to_have_count(1)

    # A zone error comes back next to its field.
    page.locator("#zone-1-bay_id").fill("B2")
    page.locator("#zone-1-points").fill("10,10 20,20")
    page.get_by_role("button", name="Save zones").click()
    expect(page.locator("#zone-1-points-err")).to_contain_text("at least 3 points")
    expect(page.locator("#zone-1-points")).to_have_attribute("aria-invalid", "true")
    page.locator("#zone-1-points").fill("780,200 940,200 940,700 780,700")  # typed: no mouse needed
    expect(page.locator("#zone-overlay polygon")).to_have_count(2)  # drawn as it is typed
    page.get_by_role("button", name="Save zones").click()
    expect(page.get_by_role("status").first).to_contain_text("2 zones saved")
    expect(page.locator(".zone-list")).to_contain_text("B2")

    # Settings: the password stays masked and stays stored; test the stored URL from the edit form.
    url_box = page.get_by_label("Stream URL", exact=True)
    expect(url_box).to_have_value(rtsp.url.replace(SECRET, "***"))
    page.get_by_label("Frames per second to analyse").fill("3")
    page.get_by_role("button", name="Test connection").click()
    expect(page.locator("#cam-test-result .cam-test-ok")).to_contain_text("960 \u00d7 720 px", timeout=15_000)
    shot(page, "camera-edit")
    page.get_by_role("button", name="Save camera").click()
    expect(page.get_by_role("status").first).to_contain_text("Camera saved")
    expect(page.get_by_label("Frames per second to analyse")).to_have_value("3")
    assert SECRET not in page.content()


def test_a_camera_without_picture_says_why(page: Any) -> None:
    from playwright.sync_api import expect


    htmx_ready(page)
    page.get_by_label("Name").fill("dark-cam")
    page.get_by_label("Stream URL", exact=True).fill(f"rtsp://admin:{SECRET}@127.0.0.1:{free_port()}/cam")
    page.get_by_role("button", name="Add camera").click()
    expect(page.get_by_role("status")).to_contain_text("Camera dark-cam added")
    page.goto("/dash/cameras/dark-cam")
    expect(page.locator("#snapshot-status")).to_contain_text("No picture", timeout=15_000)
    expect(page.locator("#snapshot-status")).to_contain_text("refused the connection")
    assert SECRET not in page.content()
