"""Request body limits per route class. FastAPI counts the bytes as they arrive and answers 413 as soon
as a body passes its route's limit, so nothing larger is ever held in memory."""

from __future__ import annotations

DEFAULT_BODY = 256 * 1024  # JSON and forms: events, settings, bays, lists, CSMS intake
LOGIN_BODY = 16 * 1024  # anonymous: login and driver notice pages
IMAGE_BODY = 9 * 1024 * 1024  # evidence upload (8 MiB image + slack; the route checks 8 MiB itself)
CSV_BODY = 2 * 1024 * 1024  # list import: a 1 MiB CSV in a multipart form
