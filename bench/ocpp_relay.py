"""Relay throughput and latency: N ocpp-rpc chargers x K MeterValues, direct and through the relay.

    python bench/ocpp_relay.py --chargers 1000 --messages 20 [--rounds 3]
    python bench/ocpp_relay.py --chargers 10000 --messages 2 --rss-only

Needs `npm ci` in tests/node. Starts an ocpp-rpc CSMS (tests/node/csms.js), runs the load
(tests/node/cp.js, bench mode) straight at it, then through an in-process relay (uvloop when
installed, decoder on), and prints calls/s both ways for every round, the best of each and their
ratio, the added p50/p99 latency, the relay's memory per charger connection (RSS growth from idle to
all connected, / N) and where the CPU went: relay, load generator and CSMS, per call. On a machine
whose cores the load generator and CSMS already fill, the ratio is about (their CPU per call) /
(their CPU per call + the relay's), so the CPU lines say what limits it.

--rss-only skips the direct runs and the latency probes: one relayed run at --chargers, for the
memory figure at a large connection count (the file limit is raised for it when allowed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a running process (a live child, so not in RUSAGE_CHILDREN yet)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    """CPU of children already waited for: the load generator, once a run has ended."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def self_cpu() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


PEER_CPUS: set[int] | None = None  # --pin: the Node peers' CPUs (the relay gets the others)


async def node(script: str, opts: dict[str, Any]) -> asyncio.subprocess.Process:
    # Pinned where asked; sched_setaffinity in the child, before node starts, covers all its threads.
    pin = PEER_CPUS
    return await asyncio.create_subprocess_exec(
        "node",
        str(NODE_DIR / script),
        json.dumps(opts),
        cwd=NODE_DIR,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        limit=1 << 20,
        preexec_fn=(lambda: os.sched_setaffinity(0, pin)) if pin else None,
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


class Run:
    """One load run and the CPU each process spent on it."""

    def __init__(self, kind: str, result: dict[str, Any], cpu: dict[str, float]) -> None:
        self.kind, self.result, self.cpu = kind, result, cpu

    def line(self, n: int) -> str:
        r, calls = self.result, self.result["calls"]
        per = "  ".join(f"{k} {v / calls * 1e6:.0f}" for k, v in self.cpu.items())
        return (
            f"  round {n} {self.kind:6}: {r['rate']:8.0f} calls/s  p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:7.2f} ms"
            f"  | CPU us/call: {per}"
        )


async def main(args: argparse.Namespace) -> None:
    csms = await node("csms.js", {"log": False, "strict": args.strict, "protocols": [args.protocol]})
    assert csms.stdout is not None
    port = json.loads(await csms.stdout.readline())["port"]
    runs: dict[str, list[Run]] = {"direct": [], "relay": []}
    events = 0

    def sink(batch: Any) -> None:
        nonlocal events
        events += len(batch)

    config = RelayConfig(upstreams=[Upstream("*", f"ws://127.0.0.1:{port}/ocpp")], port=0)
    relay = OcppRelay(config, None if args.no_decoder else OcppDecoder(), sink)
    await relay.start()
    await asyncio.sleep(0.2)
    rss_idle, rss_peak = rss_bytes(), 0
    c = relay.counters
    # (relay user CPU, system CPU, frames charger->CSMS) every 20 ms, for the message phase alone
    samples: list[tuple[float, float, int]] = []

    async def sample() -> None:
        nonlocal rss_peak
        while True:
            rss_peak = max(rss_peak, rss_bytes())
            samples.append((*self_cpu(), c.frames_cs_to_csms))
            await asyncio.sleep(0.02)

    async def measured(kind: str, endpoint: str, tag: str) -> Run:
        cpu0 = (time.process_time(), children_cpu(), proc_cpu(csms.pid))
        result = await load(endpoint, args, tag)
        cpu1 = (time.process_time(), children_cpu(), proc_cpu(csms.pid))
        cpu = {"load": cpu1[1] - cpu0[1], "csms": cpu1[2] - cpu0[2]}
        if kind == "relay":
            cpu["relay"] = cpu1[0] - cpu0[0]
        return Run(kind, result, cpu)

    message_phase: list[tuple[float, float]] = []  # relay (user, system) us per call
    probe_direct = probe_relay = None
    try:
        if not args.rss_only:
            # Unloaded latency first: one charger, calls one after another, so the difference is the
            # relay's own hop cost rather than queueing behind all the other chargers.
            probe = {"chargers": 1, "messages": args.probe_calls}
            probe_direct = await load(f"ws://127.0.0.1:{port}/ocpp", args, "PD", **probe)
            probe_relay = await load(f"ws://127.0.0.1:{relay.port}/ocpp", args, "PR", **probe)
        for n in range(args.rounds):
            if not args.rss_only:
                runs["direct"].append(await measured("direct", f"ws://127.0.0.1:{port}/ocpp", f"D{n}"))
                print(runs["direct"][-1].line(n), flush=True)
            samples.clear()
            base = c.frames_cs_to_csms
            sampler = asyncio.create_task(sample())
            runs["relay"].append(await measured("relay", f"ws://127.0.0.1:{relay.port}/ocpp", f"R{n}"))
            sampler.cancel()
            print(runs["relay"][-1].line(n), flush=True)
            # Message phase: after every charger's BootNotification went through, before the last call.
            phase = [s for s in samples if base + args.chargers < s[2] < base + args.chargers * (1 + args.messages)]
            if len(phase) >= 2 and phase[-1][2] > phase[0][2]:
                calls = phase[-1][2] - phase[0][2]
                user, system = phase[-1][0] - phase[0][0], phase[-1][1] - phase[0][1]
                message_phase.append((user / calls * 1e6, system / calls * 1e6))
    finally:
        await relay.stop()
        csms.terminate()
        await csms.wait()

    print(
        f"chargers={args.chargers} messages={args.messages} protocol={args.protocol} strict={args.strict} "
        f"decoder={'off' if args.no_decoder else 'on'} loop={type(asyncio.get_running_loop()).__module__} "
        f"rounds={args.rounds}{' pinned: peers on CPU ' + str(sorted(PEER_CPUS)) if PEER_CPUS else ''}"
    )
    r = max(runs["relay"], key=lambda x: x.result["rate"]).result
    if not args.rss_only:
        d = max(runs["direct"], key=lambda x: x.result["rate"]).result
        print(f"direct : {d['rate']:8.0f} calls/s  p50 {d['p50_ms']:.2f} ms  p99 {d['p99_ms']:.2f} ms  (best round)")
        print(f"relay  : {r['rate']:8.0f} calls/s  p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  (best round)")
        ratio = r["rate"] / d["rate"]
        ratios = sorted(x.result["rate"] / y.result["rate"] for x, y in zip(runs["relay"], runs["direct"], strict=True))
        add50, add99 = r["p50_ms"] - d["p50_ms"], r["p99_ms"] - d["p99_ms"]
        print(
            f"ratio  : {ratio:.2f}x of direct (best/best; per round {', '.join(f'{x:.2f}' for x in ratios)}); "
            f"added latency under load p50 {add50:+.2f} ms, p99 {add99:+.2f} ms"
        )
        assert probe_direct is not None and probe_relay is not None
        pd, pr = probe_direct, probe_relay
        print(
            f"unloaded (1 charger x {args.probe_calls} calls): "
            f"direct p50 {pd['p50_ms']:.2f} / p99 {pd['p99_ms']:.2f} ms, "
            f"relay p50 {pr['p50_ms']:.2f} / p99 {pr['p99_ms']:.2f} ms -> added p50 "
            f"{pr['p50_ms'] - pd['p50_ms']:+.2f} ms, p99 {pr['p99_ms'] - pd['p99_ms']:+.2f} ms"
        )
    else:
        print(f"relay  : {r['rate']:8.0f} calls/s  p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms")
    relay_calls = sum(x.result["calls"] for x in runs["relay"])
    relay_cpu = sum(x.cpu["relay"] for x in runs["relay"])
    phase_text = ""
    if message_phase:
        user, system = min(message_phase, key=sum)
        phase_text = f", {user + system:.0f} in the message phase alone (user {user:.0f}, system {system:.0f})"
    print(
        f"relay  : RSS {(rss_peak - rss_idle) / args.chargers / 1024:.1f} KiB per charger connection "
        f"(idle {rss_idle / 2**20:.0f} MiB, peak {rss_peak / 2**20:.0f} MiB); "
        f"CPU {relay_cpu / relay_calls * 1e6:.0f} us per call incl. connection set-up{phase_text}"
    )
    if not args.rss_only:

        def per_call(kind: str) -> float:
            xs = runs[kind]
            return sum(x.cpu["load"] + x.cpu["csms"] for x in xs) / sum(x.result["calls"] for x in xs) * 1e6

        peers_d, peers_r = per_call("direct"), per_call("relay")
        print(
            f"cpu    : load generator + CSMS {peers_d:.0f} us/call direct, {peers_r:.0f} relayed; relay "
            f"{relay_cpu / relay_calls * 1e6:.0f} -> CPU-bound ratio estimate "
            f"{peers_d / (peers_r + relay_cpu / relay_calls * 1e6):.2f}x"
        )
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
    p.add_argument("--rss-only", action="store_true", help="relayed runs only, for RSS at a large --chargers")
    p.add_argument("--probe-calls", type=int, default=300, help="calls in the unloaded latency probe")
    p.add_argument(
        "--pin",
        action="store_true",
        help="Node peers on CPU 0, the relay on the other CPUs, in direct and relayed runs alike: the relay's "
        "own cost without it taking CPU from the load generator (as on a host of its own)",
    )
    args = p.parse_args()
    if args.pin:
        global PEER_CPUS
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            sys.exit("--pin needs two CPUs")
        PEER_CPUS = {cpus[0]}
        os.sched_setaffinity(0, set(cpus[1:]))
    if not (NODE_DIR / "node_modules" / "ocpp-rpc").is_dir():
        sys.exit(f"run `npm ci` in {NODE_DIR} first")
    # The relay holds two sockets per charger; the Node children inherit the limit.
    want = 4 * args.chargers + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), max(hard, want)))
    except (ValueError, OSError):  # not allowed to raise the hard limit
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, want)), hard))
        if hard < 2 * args.chargers + 128:
            sys.exit(f"the open-file limit ({hard}) allows about {(hard - 128) // 2} chargers through the relay")
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
