"""The Jinja2 templates: every one renders from its declared context, and HTML escapes what users typed."""

from __future__ import annotations

import pytest

from enforcement.channels import TEMPLATE_DIR, TEMPLATES, Renderer, check_context
from enforcement.wording import LANGUAGES

HOSTILE = "<script>alert(\"x\")</script> & 'quotes'"
SAMPLES: dict[str, dict[str, object]] = {
    "penalty_warning": {
        "plate": "AB123CD",
        "bay": "B-04",
        "site": "Depot",
        "grace_ends_at": "09:30",
        "minutes_left": 15,
        "fee_per_minute": "0.50",
        "fee_cap": "30.00",
        "currency": "EUR",
    },
    "penalty_notice": {
        "plate": "AB123CD",
        "bay": "B-04",
        "site": "Depot",
        "amount": "12.50",
        "currency": "EUR",
        "rule": "0.50 EUR/min",
        "started_at": "09:15",
        "ended_at": "09:40",
        "driver_url": "https://baywarden.example/d/abc",
    },
    "blacklist_alert": {"plate": "XY999ZZ", "bay": "B-01", "site": "Depot", "seen_at": "09:00"},
    "test_email": {"site": "Depot", "requested_by": "admin", "sent_at": "09:00"},
}


def test_every_template_has_a_spec_text_and_html() -> None:
    assert set(SAMPLES) == set(TEMPLATES)
    files = {p.name for p in TEMPLATE_DIR.iterdir() if p.is_file()}
    for name in TEMPLATES:
        assert {f"{name}.txt", f"{name}.html"} <= files
    unknown = {f.split(".")[0] for f in files if not f.startswith("_")} - set(TEMPLATES)
    assert not unknown, f"templates without a spec: {unknown}"
    # A language folder translates the driver notices: each of its files has an English original.
    for folder in (p for p in TEMPLATE_DIR.iterdir() if p.is_dir() and not p.name.startswith("_")):
        assert folder.name in LANGUAGES, folder
        translated = {p.name for p in folder.iterdir()}
        assert translated and translated <= files, translated - files
        for name in ("penalty_warning", "penalty_notice"):
            assert {f"{name}.txt", f"{name}.html"} <= translated


def test_driver_notices_render_in_every_language() -> None:
    r = Renderer()
    for lang in LANGUAGES:
        for name in ("penalty_warning", "penalty_notice"):
            ctx = {**SAMPLES[name], "lang": lang}
            text, html, push = r.text(name, ctx), r.html(name, ctx), r.push(name, ctx)
            assert SAMPLES[name]["plate"] in text and SAMPLES[name]["plate"] in html and push
            assert f'<html lang="{lang}">' in html
    de = r.text("penalty_notice", {**SAMPLES["penalty_notice"], "lang": "de"})
    assert "Standgebühr" in de and "Einzelheiten" in de


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_renders_from_required_keys_only(name: str) -> None:
    r = Renderer()
    ctx = SAMPLES[name]
    check_context(name, ctx)
    text, html = r.text(name, ctx), r.html(name, ctx)
    assert "Depot" in text and "Depot" in html
    assert html.lstrip().startswith("<!DOCTYPE html>")
    assert "None" not in text and "None" not in html  # an absent optional key leaves no trace


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_html_escapes_every_user_supplied_value(name: str) -> None:
    r = Renderer()
    spec = TEMPLATES[name]
    ctx = {
        k: (HOSTILE if k not in spec.urls else "https://x.example/?a=1&b=<2>") for k in spec.required | spec.optional
    }
    html = r.html(name, ctx)
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &#39;quotes&#39;" in html
    assert "<2>" not in html
    assert HOSTILE in r.text(name, ctx)  # plain text is not HTML: shown as typed


def test_warning_says_what_happens_next() -> None:
    text = Renderer().text("penalty_warning", SAMPLES["penalty_warning"] | {"driver_url": "https://b.example/d/1"})
    assert "AB123CD" in text and "B-04" in text and "15 minutes" in text
    assert "0.50 EUR per minute" in text and "up to 30.00 EUR" in text
    assert "https://b.example/d/1" in text


def test_notice_lists_amount_rule_times_and_link() -> None:
    html = Renderer().html("penalty_notice", SAMPLES["penalty_notice"] | {"minutes_billed": 25})
    for part in ("12.50 EUR", "0.50 EUR/min", "09:15", "09:40", "25 minutes", 'href="https://baywarden.example/d/abc"'):
        assert part in html


def test_push_bodies_are_one_line() -> None:
    r = Renderer()
    assert r.push("penalty_notice", SAMPLES["penalty_notice"]) == "Idle fee 12.50 EUR charged for AB123CD (bay B-04)."
    assert "\n" not in r.push("penalty_warning", SAMPLES["penalty_warning"])
    assert r.push("test_email", SAMPLES["test_email"]) == ""
