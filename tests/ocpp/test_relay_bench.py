"""The relay benchmark still runs end to end (tiny load; no timing is asserted, figures are only printed),
and its paired latency runs put exactly --chargers chargers on each path."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def test_bench_runs_and_pairs_the_paced_chargers(node_peers: Any) -> None:
    chargers, messages, probe_calls = 4, 3, 20
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "ocpp_relay.py"),
            f"--chargers={chargers}",
            f"--messages={messages}",
            f"--probe-calls={probe_calls}",
            "--rate=8",  # 4 chargers: one call each every 500 ms
            "--paced-seconds=1",  # -> 2 paced calls per charger
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    for line in ("ratio  :", "paced  :", "unloaded (1 charger", "relay  : RSS", "cpu    :"):
        assert line in out, out
    paced = re.search(r"round 0 paced : +(\d+) calls/s offered .* -> added p50 [-+][\d.]+, p99 [-+][\d.]+ ms", out)
    assert paced, out
    # Through the relay: the saturated run (boot + messages each), the paced relayed half (boot + 2 each)
    # and the unloaded probe (boot + probe_calls). A direct charger dealt to the relay would show here.
    expected = chargers * (1 + messages) + chargers * (1 + 2) + 1 + probe_calls
    counters = re.search(r"frames cs->csms (\d+), csms->cs (\d+), tapped \d+, undecoded (\d+)", out)
    assert counters, out
    assert (int(counters[1]), int(counters[2]), int(counters[3])) == (expected, expected, 0)
