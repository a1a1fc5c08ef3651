"""Relay throughput and latency: N ocpp-rpc chargers x K MeterValues, direct and through the relay.

    python bench/ocpp_relay.py --chargers 1000 --messages 20

Needs `npm ci` in tests/node. Starts an ocpp-rpc CSMS (tests/node/csms.js), runs the load
(tests/node/cp.js, bench mode) straight at it, then through an in-process relay (uvloop when
installed, decoder on), and prints calls/s both ways, their ratio, the added p50/p99 latency and the
relay's memory per charger connection (RSS growth from idle to all connected, / N).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ocpp_link.decoder import OcppDecoder  # noqa: E402
from ocpp_link.relay import OcppRelay, RelayConfig, Upstream  # noqa: E402

NODE_DIR = ROOT / "tests" / "node"


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


async def node(script: str, opts: dict[str, Any]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        "node",
        str(NODE_DIR / script),
        json.dumps(opts),
        cwd=NODE_DIR,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        limit=1 << 20,
    )


async def load(
    endpoint: str, args: argparse.Namespace, tag: str, chargers: int | None = None, messages: int | None = None
) -> dict[str, Any]:
    proc = await node(
        "cp.js",
        {
            "endpoint": endpoint,
            "ids": [f"{tag}-{i:05d}" for i in range(args.chargers if chargers is None else chargers)],
            "mode": "bench",
            "protocol": args.protocol,
            "messages": args.messages if messages is None else messages,
            "log": False,
            "strict": args.strict,
        },
    )
    result: dict[str, Any] | None = None
    assert proc.stdout is not None
    async for raw in proc.stdout:
        line = json.loads(raw)
        if line.get("ev") == "bench":
            result = line
        elif line.get("ev") == "error":
            raise RuntimeError(f"load generator failed: {line}")
    await proc.wait()
    if result is None:
        raise RuntimeError("load generator printed no result")
    return result


async def main(args: argparse.Namespace) -> None:
    csms = await node("csms.js", {"log": False, "strict": args.strict, "protocols": [args.protocol]})
    assert csms.stdout is not None
    port = json.loads(await csms.stdout.readline())["port"]
    results: dict[str, list[dict[str, Any]]] = {"direct": [], "relay": []}
    events = 0

    def sink(batch: Any) -> None:
        nonlocal events
        events += len(batch)

    config = RelayConfig(upstreams=[Upstream("*", f"ws://127.0.0.1:{port}/ocpp")], port=0)
    relay = OcppRelay(config, None if args.no_decoder else OcppDecoder(), sink)
    await relay.start()
    await asyncio.sleep(0.2)
    rss_idle, rss_peak = rss_bytes(), 0

    async def sample_rss() -> None:
        nonlocal rss_peak
        while True:
            rss_peak = max(rss_peak, rss_bytes())
            await asyncio.sleep(0.1)

    cpu_relay = 0.0
    try:
        # Unloaded latency first: one charger, calls one after another, so the difference is the
        # relay's own hop cost rather than queueing behind all the other chargers.
        probe_direct = await load(f"ws://127.0.0.1:{port}/ocpp", args, "PD", chargers=1, messages=300)
        probe_relay = await load(f"ws://127.0.0.1:{relay.port}/ocpp", args, "PR", chargers=1, messages=300)
        for n in range(args.rounds):
            results["direct"].append(await load(f"ws://127.0.0.1:{port}/ocpp", args, f"D{n}"))
            sampler = asyncio.create_task(sample_rss())
            cpu0 = time.process_time()
            results["relay"].append(await load(f"ws://127.0.0.1:{relay.port}/ocpp", args, f"R{n}"))
            cpu_relay += time.process_time() - cpu0
            sampler.cancel()
    finally:
        await relay.stop()
        csms.terminate()
        await csms.wait()

    def best(kind: str) -> dict[str, Any]:
        return max(results[kind], key=lambda r: r["rate"])

    d, r = best("direct"), best("relay")
    relay_calls = sum(x["calls"] for x in results["relay"])
    print(
        f"chargers={args.chargers} messages={args.messages} protocol={args.protocol} strict={args.strict} "
        f"decoder={'off' if args.no_decoder else 'on'} loop={type(asyncio.get_running_loop()).__module__}"
    )
    print(f"direct : {d['rate']:8.0f} calls/s  p50 {d['p50_ms']:.2f} ms  p99 {d['p99_ms']:.2f} ms")
    print(f"relay  : {r['rate']:8.0f} calls/s  p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms")
    ratio = r["rate"] / d["rate"]
    add50, add99 = r["p50_ms"] - d["p50_ms"], r["p99_ms"] - d["p99_ms"]
    print(f"ratio  : {ratio:.2f}x of direct; added latency under load p50 {add50:+.2f} ms, p99 {add99:+.2f} ms")
    pd, pr = probe_direct, probe_relay
    print(
        f"unloaded (1 charger x 300 calls): direct p50 {pd['p50_ms']:.2f} / p99 {pd['p99_ms']:.2f} ms, "
        f"relay p50 {pr['p50_ms']:.2f} / p99 {pr['p99_ms']:.2f} ms -> added p50 "
        f"{pr['p50_ms'] - pd['p50_ms']:+.2f} ms, p99 {pr['p99_ms'] - pd['p99_ms']:+.2f} ms"
    )
    print(
        f"relay  : RSS {(rss_peak - rss_idle) / args.chargers / 1024:.1f} KiB per charger connection "
        f"(idle {rss_idle / 2**20:.0f} MiB, peak {rss_peak / 2**20:.0f} MiB); "
        f"CPU {cpu_relay / relay_calls * 1e6:.0f} us per call (both directions)"
    )
    c = relay.counters
    print(
        f"relay counters: frames cs->csms {c.frames_cs_to_csms}, csms->cs {c.frames_csms_to_cs}, tapped "
        f"{c.frames_tapped}, undecoded {c.undecoded} (queue full {c.dropped_queue_full}), events {events}"
    )


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--chargers", type=int, default=1000)
    p.add_argument("--messages", type=int, default=20, help="MeterValues calls per charger")
    p.add_argument("--protocol", choices=["ocpp1.6", "ocpp2.0.1"], default="ocpp1.6")
    p.add_argument("--strict", action="store_true", help="ocpp-rpc strict mode on both Node ends")
    p.add_argument("--rounds", type=int, default=1, help="alternate direct/relay this many times, keep the best")
    p.add_argument("--no-decoder", action="store_true", help="relay without the tap's decoder")
    p.add_argument("--no-uvloop", action="store_true")
    args = p.parse_args()
    if not (NODE_DIR / "node_modules" / "ocpp-rpc").is_dir():
        sys.exit(f"run `npm ci` in {NODE_DIR} first")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4 * args.chargers + 256)), hard))
    if args.no_uvloop:
        asyncio.run(main(args))
        return
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(args))
    else:
        uvloop.run(main(args))


if __name__ == "__main__":
    cli()
