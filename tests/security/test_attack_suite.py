"""Schemathesis over the whole API as anonymous, viewer, operator, admin and a device token: no
request a stranger can make gives a 5xx or escapes the app. A few examples per operation here;
`python bench/attack.py --examples 200` is the long run."""

from __future__ import annotations

import pytest

from tests.security.attack import run_attack

pytestmark = pytest.mark.slow


def test_no_operation_gives_5xx_for_any_role(tmp_path):
    found = run_attack(examples=4, workdir=tmp_path)
    assert not found, "\n".join(f"{k}: {v[0]} (x{len(v)})" for k, v in found.items())
