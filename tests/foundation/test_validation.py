"""Patterns on the model families are enforced (a user name or camera that breaks them is refused)."""

import pytest
from pydantic import ValidationError

from api.routes.cameras import CameraCreate
from models.tables import UserCreate


@pytest.mark.parametrize("name", ["bad name!", "a/b", "<script>"])
def test_user_names(name):
    with pytest.raises(ValidationError):
        UserCreate(username=name, password="long enough password")


@pytest.mark.parametrize(("name", "url"), [("bad name!", "rtsp://x/abc"), ("ok", "ftp://x/abcdef"), ("ok", "x")])
def test_cameras(name, url):
    with pytest.raises(ValidationError):
        CameraCreate(name=name, url=url)
    assert CameraCreate(name="gate-1", url="rtsp://user:pw@10.0.0.2/s1").name == "gate-1"
