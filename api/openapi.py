"""The OpenAPI document says every status and content type a route can answer with: the error answers
every route may give (our `{"detail": ...}` body, a string or FastAPI's validation list), and the media
types of what is not JSON (CSV, JPEG, HTML pages, the metrics text, the alert stream). The standing
attack suite (tests/security) holds every response to it."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

ERRORS = {
    "400": "The request cannot be understood (e.g. a malformed body)",
    "401": "Not signed in, or the credentials or signature are wrong",
    "403": "Signed in, but this role or token may not do this",
    "404": "No such thing",
    "405": "Not allowed on this path",
    "409": "In conflict with the current state (a replay, a write-once file, a duplicate)",
    "413": "The body is larger than this route accepts",
    "415": "The body's media type is not accepted",
    "422": "The input is invalid: a message, or FastAPI's list of field errors",
    "429": "Too many attempts; wait and retry",
    "503": "Busy or unavailable for a moment; retry later (Retry-After)",
}
ERROR_SCHEMA = {
    "title": "ErrorMessage",
    "type": "object",
    "properties": {"detail": {"anyOf": [{"type": "string"}, {"type": "array", "items": {}}, {"type": "object"}]}},
    "required": ["detail"],
}
BINARY = {"schema": {"type": "string", "format": "binary"}}
TEXT = {"schema": {"type": "string"}}
# (method, path) -> the 200 answer's media types, for what is not JSON
MEDIA = {
    ("GET", "/api/v1/lists/{name}/export"): {"text/csv": TEXT},
    ("GET", "/metrics"): {"text/plain": TEXT},
    ("GET", "/api/v1/alerts/stream"): {"text/event-stream": TEXT},
    ("GET", "/api/v1/cameras/{name}/snapshot"): {"image/jpeg": BINARY},
    ("GET", "/api/v1/evidence/{rel}"): {"image/jpeg": BINARY},
    ("GET", "/notice/{token}/evidence"): {"image/jpeg": BINARY},
}


def document_errors(app: FastAPI) -> None:
    """Replace `app.openapi` by one that adds the error answers and media types to every operation."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        schema.setdefault("components", {}).setdefault("schemas", {})["ErrorMessage"] = ERROR_SCHEMA
        error_body = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorMessage"}}}
        for path, operations in schema.get("paths", {}).items():
            for method, op in operations.items():
                responses = op.setdefault("responses", {})
                for code, text in ERRORS.items():
                    if code == "422" and "422" in responses:
                        responses["422"]["content"] = {"application/json": {"schema": {"anyOf": [
                            {"$ref": "#/components/schemas/HTTPValidationError"},
                            {"$ref": "#/components/schemas/ErrorMessage"}]}}}
                        continue
                    responses.setdefault(code, {"description": text, "content": error_body})
                media = MEDIA.get((method.upper(), path))
                if media is not None:
                    ok = next((c for c in ("200", "204", "201") if c in responses), "200")
                    responses.setdefault(ok, {"description": "OK"})["content"] = media
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
