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

Latency is measured three ways: one charger calling alone (the relay's own hop cost), every charger
calling back to back (saturated: mostly queueing) and, the figure for the product target, paced runs
at a fixed offered rate (--rate calls/s, well under what either path can carry), direct and relayed.
Paced runs are paired by default: one load generator runs --chargers direct and --chargers relayed
chargers, dealt alternately, each path at --rate in the same seconds, so a stall of the host, the
load generator or the CSMS lands on both paths and cancels in the difference (--paced sequential:
a direct run, then a relayed one, which also measures how the host changed between the two).
Rounds alternate which path runs first (saturated runs, and sequential paced runs).

--service puts the relay in a `baywarden run` process (API and relay parts on, every decoded event
stored by the writer thread in SQLite, or --database-url): the product's whole path, not just the
relay's. Its CPU, memory and counters are read from /proc and its /metrics.

--rss-only skips the direct runs and the latency probes: one relayed run at --chargers, for the
memory figure at a large connection count (the file limit is raised for it when allowed).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from baywarden.demo import free_port  # noqa: E402
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


CS_TO_CSMS = '"cs_to_csms"'  # the direction label of the relay's frame counter, as /metrics writes it
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
    endpoint: str | list[str],
    args: argparse.Namespace,
    tag: str,
    chargers: int | None = None,
    messages: int | None = None,
    interval_ms: float = 0,
) -> dict[str, Any]:
    """One load-generator run; a list of endpoints deals the chargers over them (figures per endpoint
    in the result's "groups")."""
    proc = await node(
        "cp.js",
        {
            "endpoints": [endpoint] if isinstance(endpoint, str) else endpoint,
            "ids": [f"{tag}-{i:05d}" for i in range(args.chargers if chargers is None else chargers)],
            "mode": "bench",
            "protocol": args.protocol,
            "messages": args.messages if messages is None else messages,
            "log": False,
            "strict": args.strict,
            "intervalMs": interval_ms,
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


def proc_cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a running process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def proc_rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


class InProcessRelay:
    """The relay in this process, its decoder's events counted and dropped: the relay's own cost."""

    label = "in-process relay, events counted and dropped"
    sample_every = 0.02

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.events = 0
        self.relay: OcppRelay | None = None

    async def start(self, csms_port: int) -> int:
        def sink(batch: Any) -> None:
            self.events += len(batch)

        config = RelayConfig(upstreams=[Upstream("*", f"ws://127.0.0.1:{csms_port}/ocpp")], port=0)
        self.relay = OcppRelay(config, None if self.args.no_decoder else OcppDecoder(), sink)
        await self.relay.start()
        gc.collect()  # as the service and its relay process do after start-up
        gc.freeze()
        return self.relay.port

    def cpu(self) -> tuple[float, float]:
        return self_cpu()

    def rss(self) -> int:
        return rss_bytes()

    async def frames(self) -> int:
        assert self.relay is not None
        return self.relay.counters.frames_cs_to_csms

    async def summary(self) -> str:
        assert self.relay is not None
        c = self.relay.counters
        return (
            f"relay counters: frames cs->csms {c.frames_cs_to_csms}, csms->cs {c.frames_csms_to_cs}, tapped "
            f"{c.frames_tapped}, undecoded {c.undecoded} (queue full {c.dropped_queue_full}), events {self.events}"
        )

    async def stop(self) -> None:
        if self.relay is not None:
            await self.relay.stop()


class ServiceRelay:
    """`baywarden run` with the API and the relay on: the product's whole path (the relay process it
    starts, the decoder, the pipe and the thread storing every charger event in the database). CPU and
    memory are the service's and its child processes'; counters come from its /metrics."""

    label = "`baywarden run` (service + relay process), events stored in the database"
    sample_every = 0.25  # each sample is a /metrics request to the service

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.proc: asyncio.subprocess.Process | None = None
        self.tmp = tempfile.TemporaryDirectory(prefix="baywarden-bench-")
        self.api = 0

    async def start(self, csms_port: int) -> int:
        relay_port, self.api = free_port(), free_port()
        cfg = Path(self.tmp.name) / "baywarden.yaml"
        cfg.write_text(
            json.dumps(
                {
                    "data_dir": str(Path(self.tmp.name) / "data"),
                    "port": self.api,
                    "database_url": self.args.database_url,
                    "components": {"api": True, "relay": True, "cameras": False, "enforcement": False,
                                   "scheduler": False},
                    "relay": {"port": relay_port, "upstreams": [{"pattern": "*", "url": f"ws://127.0.0.1:{csms_port}/ocpp"}]},
                }
            )
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("BAYWARDEN_")}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "baywarden.cli", "run", "--config", str(cfg),
            cwd=self.tmp.name, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                await self._get("/readyz")
                return relay_port
            except OSError:
                if time.monotonic() > deadline or self.proc.returncode is not None:
                    raise RuntimeError("`baywarden run` did not come up") from None
                await asyncio.sleep(0.3)

    async def _get(self, path: str) -> str:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.api)
        try:
            writer.write(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
            raw = await reader.read()
        finally:
            writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        if b" 200 " not in head.split(b"\r\n", 1)[0]:
            raise OSError(head[:80])
        return body.decode()

    async def metrics(self) -> dict[str, float]:
        out = {}
        for line in (await self._get("/metrics")).splitlines():
            if line.startswith("baywarden_"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def _pids(self) -> list[int]:
        """The service and its child processes (the relay runs in one of them)."""
        assert self.proc is not None
        pids = [self.proc.pid]
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            pids += [int(x) for x in (task / "children").read_text().split()]
        return pids

    def cpu(self) -> tuple[float, float]:
        user = system = 0.0
        for pid in self._pids():
            try:
                u, s = proc_cpu_split(pid)
            except OSError:  # ended between the listing and the read
                continue
            user, system = user + u, system + s
        return user, system

    def rss(self) -> int:
        total = 0
        for pid in self._pids():
            try:
                total += proc_rss(pid)
            except OSError:
                continue
        return total

    async def frames(self) -> int:
        m = await self.metrics()
        return int(m.get("baywarden_ocpp_relay_frames_forwarded_total{direction=" + CS_TO_CSMS + "}", 0))

    async def summary(self) -> str:
        await asyncio.sleep(1)  # let the writer thread catch up
        m = await self.metrics()
        relay = {k.removeprefix("baywarden_ocpp_relay_"): int(v) for k, v in m.items()}
        ocpp = {k.removeprefix("baywarden_ocpp_"): int(v) for k, v in m.items()}
        db = (self.args.database_url or "sqlite").split(":", 1)[0].split("+")[0]
        return (
            f"relay counters: frames cs->csms {relay.get('frames_forwarded_total{direction=' + CS_TO_CSMS + '}', 0)}, "
            f"tapped {relay.get('frames_tapped_total', 0)}, undecoded {relay.get('undecoded_total', 0)}, events "
            f"{relay.get('events_emitted_total', 0)}: stored {ocpp.get('events_stored_total', 0)}, dropped by the "
            f"relay {relay.get('events_dropped_total', 0)}, lost {ocpp.get('events_lost_total', 0)} ({db})"
        )

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()
        self.tmp.cleanup()


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
    host = ServiceRelay(args) if args.service else InProcessRelay(args)
    relay_port = await host.start(port)
    await asyncio.sleep(0.2)
    rss_idle, rss_peak = host.rss(), 0
    # (relay user CPU, system CPU, frames charger->CSMS) every few ms, for the message phase alone
    samples: list[tuple[float, float, int]] = []

    async def sample() -> None:
        nonlocal rss_peak
        while True:
            rss_peak = max(rss_peak, host.rss())
            samples.append((*host.cpu(), await host.frames()))
            await asyncio.sleep(host.sample_every)

    async def measured(kind: str, endpoint: str, tag: str) -> Run:
        cpu0 = (sum(host.cpu()), children_cpu(), proc_cpu(csms.pid))
        result = await load(endpoint, args, tag)
        cpu1 = (sum(host.cpu()), children_cpu(), proc_cpu(csms.pid))
        cpu = {"load": cpu1[1] - cpu0[1], "csms": cpu1[2] - cpu0[2]}
        if kind == "relay":
            cpu["relay"] = cpu1[0] - cpu0[0]
        return Run(kind, result, cpu)

    message_phase: list[tuple[float, float]] = []  # relay (user, system) us per call
    probe_direct = probe_relay = None
    paced: list[tuple[dict[str, Any], dict[str, Any]]] = []  # (direct, relay) at the offered rate
    interval_ms = args.chargers / args.rate * 1000 if args.rate else 0
    paced_messages = max(2, round(args.paced_seconds * 1000 / interval_ms)) if interval_ms else 0

    async def relayed(n: int) -> None:
        samples.clear()
        base = await host.frames()
        sampler = asyncio.create_task(sample())
        runs["relay"].append(await measured("relay", f"ws://127.0.0.1:{relay_port}/ocpp", f"R{n}"))
        sampler.cancel()
        print(runs["relay"][-1].line(n), flush=True)
        # Message phase: after every charger's BootNotification went through, before the last call.
        phase = [s for s in samples if base + args.chargers < s[2] < base + args.chargers * (1 + args.messages)]
        if len(phase) >= 2 and phase[-1][2] > phase[0][2]:
            calls = phase[-1][2] - phase[0][2]
            user, system = phase[-1][0] - phase[0][0], phase[-1][1] - phase[0][1]
            message_phase.append((user / calls * 1e6, system / calls * 1e6))

    async def direct(n: int) -> None:
        runs["direct"].append(await measured("direct", f"ws://127.0.0.1:{port}/ocpp", f"D{n}"))
        print(runs["direct"][-1].line(n), flush=True)

    async def paced_pair(n: int, relay_first: bool) -> None:
        direct_url, relay_url = f"ws://127.0.0.1:{port}/ocpp", f"ws://127.0.0.1:{relay_port}/ocpp"
        if args.paced == "paired":
            # Both paths in the same seconds from one load generator, chargers dealt alternately: the
            # host's stalls (load generator, CSMS, scheduler) hit both alike and cancel in the difference.
            both = await load(
                [direct_url, relay_url], args, f"P{n}", args.chargers * 2, paced_messages, interval_ms
            )
            d, r = both["groups"]
        else:
            got: dict[str, dict[str, Any]] = {}
            for kind in ("relay", "direct") if relay_first else ("direct", "relay"):
                url = relay_url if kind == "relay" else direct_url
                got[kind] = await load(url, args, f"P{kind[0]}{n}", messages=paced_messages, interval_ms=interval_ms)
            d, r = got["direct"], got["relay"]
        paced.append((d, r))
        print(
            f"  round {n} paced : {r['rate']:6.0f} calls/s offered  direct p50 {d['p50_ms']:.2f} p99 {d['p99_ms']:.2f}"
            f" ms, relay p50 {r['p50_ms']:.2f} p99 {r['p99_ms']:.2f} ms -> added p50 {r['p50_ms'] - d['p50_ms']:+.2f},"
            f" p99 {r['p99_ms'] - d['p99_ms']:+.2f} ms",
            flush=True,
        )

    try:
        if not args.rss_only:
            # Unloaded latency first: one charger, calls one after another, so the difference is the
            # relay's own hop cost rather than queueing behind all the other chargers.
            probe = {"chargers": 1, "messages": args.probe_calls}
            probe_direct = await load(f"ws://127.0.0.1:{port}/ocpp", args, "PD", **probe)
            probe_relay = await load(f"ws://127.0.0.1:{relay_port}/ocpp", args, "PR", **probe)
        for n in range(args.rounds):
            if args.rss_only:
                await relayed(n)
                continue
            # Odd rounds run the relay first, so neither side always gets the warmer CSMS.
            relay_first = n % 2 == 1
            for step in (relayed, direct) if relay_first else (direct, relayed):
                await step(n)
            if interval_ms:
                await paced_pair(n, relay_first)
        counters = await host.summary()
    finally:
        await host.stop()
        csms.terminate()
        await csms.wait()

    print(
        f"chargers={args.chargers} messages={args.messages} protocol={args.protocol} strict={args.strict} "
        f"decoder={'off' if args.no_decoder else 'on'} loop={type(asyncio.get_running_loop()).__module__} "
        f"rounds={args.rounds}{' pinned: peers on CPU ' + str(sorted(PEER_CPUS)) if PEER_CPUS else ''}; {host.label}"
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
            f"ratio  : {ratio:.2f}x of direct (best/best; per round {', '.join(f'{x:.2f}' for x in ratios)}, "
            f"median {statistics.median(ratios):.2f}; target >= 0.95)"
        )
        print(
            f"saturated: added latency p50 {add50:+.2f} ms, p99 {add99:+.2f} ms (every process busy: queueing, "
            "not the relay's hop cost)"
        )
        if paced:
            a50 = [r["p50_ms"] - d["p50_ms"] for d, r in paced]
            a99 = [r["p99_ms"] - d["p99_ms"] for d, r in paced]
            print(
                f"paced  : {args.rate:.0f} calls/s offered ({args.chargers} chargers, one call each every "
                f"{interval_ms:.0f} ms, {paced_messages} each): added p50 median {statistics.median(a50):+.2f} ms, "
                f"p99 median {statistics.median(a99):+.2f} ms (per round {', '.join(f'{x:+.2f}' for x in a99)}; "
                "target p99 <= 2 ms)"
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
    print(counters)


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
        "--rate",
        type=float,
        default=1000,
        help="calls/s offered in the paced latency runs, spread over --chargers (0: no paced runs)",
    )
    p.add_argument("--paced-seconds", type=float, default=10, help="length of each paced run")
    p.add_argument(
        "--paced",
        choices=["paired", "sequential"],
        default="paired",
        help="paired: direct and relayed chargers (--chargers each, --rate each) call in the same seconds from "
        "one load generator; sequential: a direct run, then a relayed one",
    )
    p.add_argument(
        "--service",
        action="store_true",
        help="relay through a `baywarden run` process (API + relay, events stored) instead of in this process",
    )
    p.add_argument("--database-url", help="--service: its database (default: SQLite in a temporary folder)")
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
