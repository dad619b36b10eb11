"""Fuzz runs through the NIC placements (tests/nic/test_fuzz_dataplane.py,
tests/net/test_fuzz_net.py, benchmarks/robust_fuzz.py). The frames: `testbed.fuzz`.

Simulator (`sim_fuzz`): stack b behind a `SimNicDevice` (setup, teardown and splice
offloads on) serves echo on port 7 (setup offload), echo-and-close on port 9 (setup +
teardown offload: its flows sit in the NIC's teardown table, the clients never closing)
and a splicing proxy on 8080 whose backend is an echo server on stack a. Stack a holds
*victim* connections (port 7, port 9 after the NIC took them, one splice), whose
4-tuples and sequence numbers the fuzzer aims at, and *sentinel* connections (port 7,
one splice) that no fuzz frame may carry (``avoid_keys``) and that must echo
byte-exact afterwards. The frames enter the NIC's wire port as if from the link.

Accounting, frame by frame (derived from nic/dataplane.py and host/stack.py):

* NIC, wire port: every frame in ends in exactly one of passthrough_host (including
  syn_to_host and malformed_*), syn_cookies_sent, cookie_ack_ok, cookie_ack_deferred
  (a bare handshake ACK the NIC absorbed: defer accept), teardown_frames, the
  wire share of splice_frames (splice_frames - splice_flushed), or one drop_<reason>
  of ``WIRE_DROPS`` (cookie_ack_bad is also drop_cookie_bad).
* Host: frames_in == frames_delivered + the inbound drops (every reason but
  ``OUTBOUND_DROP_REASONS``), internal_error among them and required to be 0.
* Host input == what the NIC gave it: frames_in == passthrough_host + cookie_ack_ok +
  the NIC's own frames for the host (reports, answers to control frames).

`drop_table(nic_counters, host_drops)` names where the dropped frames went.
"""

import asyncio
import collections
import hashlib
import random
import time
import traceback

from ..apps.echo import EchoServer
from ..apps.proxy import SpliceProxy
from ..host.aio import open_connection
from .simnet import IP_A, IP_B, make_pair
from ..host.stack import OUTBOUND_DROP_REASONS
from ..io.sim import SimLoop
from ..nic.dataplane import HOST, WIRE
from ..tcp.config import TcpConfig
from ..tcp.connection import TS_MASK
from .fuzz import Flow, FrameFuzzer
from .procs import fetch_stats, wait_line

__all__ = ["sim_fuzz", "nic_wire_outcomes", "drop_table", "WIRE_DROPS", "host_inbound_drops"]

#: NIC drop reasons of frames that came from the wire.
WIRE_DROPS = ("offload_ethertype", "cookie_bad", "splice_untranslatable")

PORT_ECHO = 7
PORT_CLOSE = 9
PORT_PROXY = 8080
PORT_BACKEND = 80
CLOSED_PORTS = (9999, 22, 1)


def _wire_drop(key):
    r = key[5:]
    return key.startswith("drop_") and (r in WIRE_DROPS or r.startswith("teardown_"))


def nic_wire_outcomes(c):
    """The frames from the wire that the NIC counted, by outcome (module docstring)."""
    out = {k: c.get(k, 0) for k in ("passthrough_host", "syn_cookies_sent", "cookie_ack_ok",
                                    "cookie_ack_deferred", "teardown_frames")}
    out["splice_frames_wire"] = c.get("splice_frames", 0) - c.get("splice_flushed", 0)
    for k, v in c.items():
        if _wire_drop(k):
            out[k] = v
    return out


def host_inbound_drops(drops):
    return {k: v for k, v in drops.items() if k not in OUTBOUND_DROP_REASONS and v}


def drop_table(nic_counters, host_drops):
    """counter -> frames: the NIC's drops of wire frames, what it passed up malformed,
    and the host's inbound drops by reason."""
    t = {}
    for k, v in sorted(nic_counters.items()):
        if v and (_wire_drop(k) or k.startswith("malformed_")):
            t["nic." + k] = v
    for k, v in sorted(host_inbound_drops(host_drops).items()):
        t["host." + k] = v
    return t


class _Echo:
    """A client connection that checks echoes byte-exact."""

    def __init__(self, reader, writer):
        self.r = reader
        self.w = writer

    async def roundtrip(self, data):
        self.w.write(data)
        got = await self.r.readexactly(len(data))
        return hashlib.sha256(got).digest() == hashlib.sha256(data).digest()


def _flow_of(stack, conn, now):
    """The Flow a's connection `conn` sends (its seq/ack/TSval as of `now`)."""
    rec = conn.owner
    ts = (int(now * conn.config.ts_hz) + conn.ts_offset) & TS_MASK if conn.ts_ok else None
    return Flow(stack.ip, rec.remote_ip, rec.local_port, rec.remote_port, conn.snd_nxt,
                conn.rcv_nxt, ts, conn.ts_recent)


def _conn_of(stack, writer):
    return writer._s.conn


def _run_for(loop, seconds, deadline):
    """loop.run_for in 10 ms steps; TimeoutError once the wall-clock `deadline` passed
    (an ACK loop between two ends keeps a simulation busy without ending it)."""
    end = loop.time() + seconds
    while loop.time() < end:
        if time.monotonic() > deadline:
            raise TimeoutError("simulation over its wall-clock budget at t=%.3f"
                               % loop.time())
        loop.run_for(min(0.01, end - loop.time()))


def sim_fuzz(count=100_000, seed=1, *, batch=200, step=0.0005, n_live=4, n_sentinel=2,
             n_teardown=8, n_splice=3, wall_budget=300.0, progress=None):
    """Fuzz `count` frames into the simulated NIC's wire port (module docstring).
    -> dict with the counters, the identities' two sides, the live-connection checks
    and any exception (as text). TimeoutError after `wall_budget` seconds."""
    deadline = time.monotonic() + wall_budget
    cfg = TcpConfig(rcv_buf=1 << 20, snd_buf=1 << 20, time_wait=1.0)
    res = {"count": count, "seed": seed, "nic_exceptions": 0, "exception": None}
    rnd = random.Random(seed)
    with SimLoop(seed) as loop:
        net = make_pair(loop, config_a=cfg, config_b=cfg, nic_b=True, seed=seed,
                        bandwidth_bps=10e9, delay=20e-6, queue_limit=100000,
                        stack_b={"strict": False, "max_syn_backlog": 1024},
                        nic_kwargs={"splice_idle": 3600.0})
        a, b = net
        dev = net.nic_b
        dp = dev.dataplane
        calls = collections.Counter()        # frames in per port; "to_host": out to HOST
        real_process, real_on_timer = dp.process, dp.on_timer

        def _to_host(outs):
            for port, _ in outs:
                if port == HOST:
                    calls["to_host"] += 1
            return outs

        def process(frame, port, now, csum_ok=False):
            calls[port] += 1
            outs = real_process(frame, port, now, csum_ok)
            if port == WIRE:
                for p, _ in outs:
                    if p == HOST:
                        calls["wire_to_host"] += 1
            return _to_host(outs)

        def on_timer(now):
            return _to_host(real_on_timer(now))
        loop.run_for(0.001)                  # what the stacks' start sent is delivered
        res["host_frames_in_0"] = b.counters["frames_in"]
        dp.process = process                 # counts every frame through the NIC
        dp.on_timer = on_timer
        EchoServer(b, PORT_ECHO, config=cfg, offload_setup=True)
        EchoServer(b, PORT_CLOSE, config=cfg, close_after=64, offload_setup=True,
                   offload_teardown=True)
        EchoServer(a, PORT_BACKEND, config=cfg)
        proxy = SpliceProxy(b, PORT_PROXY, [(IP_A, PORT_BACKEND)], config=cfg,
                            offload_setup=True)

        async def setup():
            live, sentinel, td, splice = [], [], [], []
            for i in range(n_live + n_sentinel):
                r, w = await open_connection(a, IP_B, PORT_ECHO, config=cfg)
                e = _Echo(r, w)
                assert await e.roundtrip(b"hello %d\n" % i)
                (live if i < n_live else sentinel).append(e)
            for i in range(n_teardown):
                r, w = await open_connection(a, IP_B, PORT_CLOSE, config=cfg)
                w.write(bytes([i]) * 64)
                assert await r.readexactly(64) == bytes([i]) * 64
                assert await r.read() == b""        # the NIC's FIN; a never closes
                td.append(_Echo(r, w))
            for i in range(n_splice + 1):
                r, w = await open_connection(a, IP_B, PORT_PROXY, config=cfg)
                e = _Echo(r, w)
                assert await e.roundtrip(b"HEAD %d\n" % i)
                while dp.counters["splices_installed"] <= i:
                    await asyncio.sleep(0.001)
                assert await e.roundtrip(rnd.randbytes(3000))    # through the NIC
                splice.append(e)
            return live, sentinel, td, splice

        live, sentinel, td, splice = loop.run(setup(), timeout=60)
        assert len(dp.splices) == 2 * (n_splice + 1) and dp.teardown.active == n_teardown
        now = loop.time()
        victims = [_flow_of(a, _conn_of(a, e.w), now) for e in live + td + splice[:-1]]
        # each splice's server side: the proxy's connection to the backend, seen from a
        by_port = {c.owner.remote_port: c for c in a.connections.values()
                   if c.owner.local_port == PORT_BACKEND}
        srv = {}
        for p in proxy._pairs.values():
            srv[p.client.owner.remote_port] = by_port[p.backend.owner.local_port]
        victims += [_flow_of(a, srv[_conn_of(a, e.w).owner.local_port], now)
                    for e in splice[:-1]]
        keep = [_flow_of(a, _conn_of(a, e.w), now) for e in sentinel + splice[-1:]]
        keep.append(_flow_of(a, srv[_conn_of(a, splice[-1].w).owner.local_port], now))
        res["victims"] = len(victims)
        res["sentinels"] = len(keep)

        def cookie(src, sport, dst, dport, cisn):
            return dp.jar.make(dst, dport, src, sport, cisn, 1460, 7, True, loop.time())

        fz = FrameFuzzer(seed, stack_mac=b.mac, stack_ip=b.ip, peer_mac=a.mac, peer_ip=a.ip,
                         ports=(PORT_ECHO, PORT_CLOSE, PORT_PROXY), closed_ports=CLOSED_PORTS,
                         flows=victims, avoid_keys=[f.key for f in keep],
                         avoid_ips=[a.ip], cookie=cookie)
        t0 = time.process_time()
        frames = fz.frames(count)
        res["generate_s"] = time.process_time() - t0
        res["bytes"] = sum(map(len, frames))
        before = dict(dp.counters)
        td_frames0 = dp.counters["teardown_frames"]
        sp_frames0 = dp.counters["splice_frames"]
        wire0 = calls[WIRE]
        t0 = time.process_time()
        injected = 0
        for i in range(0, count, batch):
            for f in frames[i:i + batch]:
                injected += 1
                try:
                    dev._from_wire(f)
                except Exception:               # the NIC must never raise on a frame
                    res["nic_exceptions"] += 1
                    if res["exception"] is None:
                        res["exception"] = traceback.format_exc()
            _run_for(loop, step, deadline)
            if progress is not None and (i // batch) % 100 == 0:
                progress(i)
        res["inject_s"] = time.process_time() - t0
        res["injected"] = injected
        res["wire_in_fuzz"] = calls[WIRE] - wire0
        res["teardown_frames_fuzz"] = dp.counters["teardown_frames"] - td_frames0
        res["splice_frames_fuzz"] = dp.counters["splice_frames"] - sp_frames0
        res["bases"] = dict(fz.bases)
        res["mutations"] = dict(fz.mutations)
        res["nic_before"] = before
        _run_for(loop, 2.0, deadline)

        async def after():
            ok = []
            for e in sentinel + splice[-1:]:
                ok.append(await e.roundtrip(rnd.randbytes(rnd.randint(1, 20000))))
            # new connections: cookie handshake, and one more flow for the teardown engine
            r, w = await open_connection(a, IP_B, PORT_ECHO, config=cfg)
            ok.append(await _Echo(r, w).roundtrip(b"after\n" * 100))
            w.close()
            r, w = await open_connection(a, IP_B, PORT_CLOSE, config=cfg)
            w.write(b"z" * 64)
            ok.append(await r.readexactly(64) == b"z" * 64 and await r.read() == b"")
            w.close()
            return ok

        res["after_ok"] = loop.run(after(), timeout=60)
        _run_for(loop, 5.0, deadline)
        res["nic"] = dict(dp.counters)
        res["teardown"] = dict(dp.teardown.counters)
        res["nic_tables"] = {"listeners": len(dp.listeners), "splices": len(dp.splices),
                             "teardown_active": dp.teardown.active}
        res["wire_in"] = calls[WIRE]
        res["from_host"] = calls[HOST]
        res["nic_to_host"] = calls["to_host"]
        res["wire_to_host"] = calls["wire_to_host"]
        res["host"] = b.counters
        res["host_drops"] = dict(b.drops)
        res["host_last_exception"] = (repr(b.last_exception)
                                      if b.last_exception is not None else None)
        res["host_pending_offers"] = len(b.offload._pending)
        res["host_splicing"] = len(b._splicing)
        res["app_a_drops"] = dict(a.drops)
        res["proxy"] = dict(proxy.counters)
        net.close()
    return res


# ---------------------------------------------------------------------- real TAP
#: Peer-side helpers, run inside the namespace with ``python -c``. HOLD: a kernel echo
#: connection from a fixed port, opened before the fuzz and checked byte-exact after
#: it (stdin "go"); VICTIM: a connection the fuzz aims at, only kept open.
_HOLD = r"""
import json, os, socket, sys
from acceltcp.testbed.peer import echoed
host, port, lport, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("", lport))
s.settimeout(20)
s.connect((host, port))
ok1 = echoed(s, b"hello\n")
print("ready", flush=True)
sys.stdin.readline()
ok2 = echoed(s, os.urandom(200000) if seed < 0 else bytes(range(256)) * 800)
s.close()
print(json.dumps({"before": ok1, "after": ok2}), flush=True)
"""

_ECHO_ONCE = r"""
import json, socket, sys
from acceltcp.testbed.peer import echoed
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)
ok = echoed(s, bytes(range(256)) * 400)
s.shutdown(socket.SHUT_WR)
rest = s.recv(10)
s.close()
print(json.dumps({"ok": ok, "eof": rest == b""}))
"""

STACK_MAC = "02:a7:cc:00:00:02"
STACK_IP = "198.18.0.2"
PEER_IP = "198.18.0.1"
TAP_IF = "atcp0"
HOLD_PORT = 5555
VICTIM_PORT = 5556


def _ns(netns, argv):
    return ["ip", "netns", "exec", netns] + list(argv)




def tap_wire_in(st):
    """Frames the NIC read from the TAP (in the process that runs the dataplane)."""
    return st["device"]["rx_frames"]


def _stop(proc, sig=None):
    import signal
    import subprocess
    if proc.poll() is None:
        proc.send_signal(sig or signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    for f in (proc.stdin, proc.stdout, proc.stderr):
        if f is not None:
            try:
                f.close()
            except OSError:
                pass
    return proc.returncode


def tap_fuzz(netns, placement, count=100_000, seed=1, *, stats_file, port=7, mtu=9000,
             python=None, procs=None):
    """Fuzz `count` frames into `acceltcp serve echo --nic <placement> --offload
    setup,teardown` from the TAP's peer end in `netns` (which must be up: `acceltcp
    testbed up --netns ...`). Every process started here is ended here, also on
    failure; `procs` (a list) also gets them, for a caller's own cleanup. -> dict."""
    import json
    import subprocess
    import sys

    py = python or sys.executable
    procs = procs if procs is not None else []
    res = {"placement": placement, "count": count, "seed": seed}
    started = []

    def popen(argv, **kw):
        p = subprocess.Popen(argv, **kw)
        started.append(p)
        procs.append(p)
        return p

    try:
        srv = popen([py, "-m", "acceltcp.cli", "serve", "echo", "--port", str(port),
                     "--netns", netns, "--nic", placement, "--offload", "setup,teardown",
                     "--stats-file", str(stats_file)],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wait_line(srv, srv.stderr, lambda line: '"event": "ready"' in line, 30)
        # Frames larger than the MTU; a TAP queue that holds the whole fuzz (the
        # interface's counters do not show the reader's progress here, so the sender
        # cannot pace itself by them: the queue is made big enough instead).
        subprocess.run(_ns(netns, ["ip", "link", "set", TAP_IF, "txqueuelen",
                                   str(count + 10000)] + (["mtu", str(mtu)] if mtu else [])),
                       check=True)
        hold = popen(_ns(netns, [py, "-c", _HOLD, STACK_IP, str(port), str(HOLD_PORT), "1"]),
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wait_line(hold, hold.stdout, lambda line: line == "ready", 20)
        victim = popen(_ns(netns, [py, "-c", _HOLD, STACK_IP, str(port), str(VICTIM_PORT),
                                   "1"]),
                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wait_line(victim, victim.stdout, lambda line: line == "ready", 20)
        before = fetch_stats(srv, stats_file)
        t0 = time.monotonic()
        r = subprocess.run(_ns(netns, [
            py, "-m", "acceltcp.testbed.fuzz", "send", "--ifname", TAP_IF, "--count",
            str(count), "--seed", str(seed), "--stack-mac", STACK_MAC, "--stack-ip", STACK_IP,
            "--peer-ip", PEER_IP, "--port", str(port), "--closed-port", "9999",
            "--closed-port", "22", "--avoid-port", str(HOLD_PORT), "--victim-port",
            str(VICTIM_PORT), "--max-len", str((mtu or 1500) + 14),
            "--window", str(count + 10000)]),
            capture_output=True, text=True, timeout=180)
        if r.returncode != 0:
            raise AssertionError("fuzz sender failed: %s" % r.stderr[-2000:])
        res["sender"] = json.loads(r.stdout.strip().splitlines()[-1])
        # settled: the TAP reader saw everything and nothing moves any more
        last, stable, st = None, 0, before
        end = time.monotonic() + 30
        while time.monotonic() < end and stable < 3:
            st = fetch_stats(srv, stats_file)
            cur = (tap_wire_in(st), st["frames_in"])
            stable = stable + 1 if cur == last else 0
            last = cur
            time.sleep(0.2)
        res["fuzz_s"] = round(time.monotonic() - t0, 3)
        res["alive"] = srv.poll() is None
        hold.stdin.write(b"go\n")
        hold.stdin.flush()
        line = wait_line(hold, hold.stdout, lambda line: line.startswith("{"), 30)
        res["held"] = json.loads(line)
        r = subprocess.run(_ns(netns, [py, "-c", _ECHO_ONCE, STACK_IP, str(port)]),
                           capture_output=True, text=True, timeout=60)
        res["echo_after"] = json.loads(r.stdout.strip().splitlines()[-1]) \
            if r.returncode == 0 else {"ok": False, "error": r.stderr[-500:]}
        _stop(victim)
        time.sleep(0.5)
        res["before"] = before
        res["during"] = st
        res["after"] = fetch_stats(srv, stats_file)
        res["alive"] = res["alive"] and srv.poll() is None
        rc = _stop(srv)
        res["serve_rc"] = rc
        with open(stats_file) as f:
            res["final"] = json.load(f)
    finally:
        for p in started:
            _stop(p)
            if p in procs:
                procs.remove(p)
    return res


def tap_checks(res):
    """The figures a TAP fuzz run is judged by: -> dict (the test asserts on them)."""
    b, d, fin = res["before"], res["during"], res["final"]
    nic_b, nic_d = b["nic"]["counters"], d["nic"]["counters"]
    out = {
        "sent": res["sender"]["sent"],
        "queue_drops": res["sender"]["tx_dropped"],
        "send_errors": res["sender"]["errors"],
        "tap_rx": tap_wire_in(d) - tap_wire_in(b),
        "nic_outcomes": sum(nic_wire_outcomes(nic_d).values())
        - sum(nic_wire_outcomes(nic_b).values()),
        "nic_outcomes_total": sum(nic_wire_outcomes(fin["nic"]["counters"]).values()),
        "tap_rx_total": tap_wire_in(fin),
        "internal_error": fin["drops"].get("internal_error", 0),
        "alive": res["alive"] and res["serve_rc"] == 0,
        "nic_alive": fin["nic"]["alive"] and fin.get("nic_lost", 0) == 0,
        "held": res["held"],
        "echo_after": res["echo_after"],
    }
    c = fin["counters"]
    out["host_frames_in"] = c["frames_in"]
    out["host_accounted"] = c["frames_delivered"] + sum(host_inbound_drops(fin["drops"]).values())
    out["conns_created"] = c.get("syns_received", 0) + c["cookie_conns"] + c["conns_opened"]
    out["conns_gone_or_live"] = (c["conns_closed"] + c.get("conns_embryonic_closed", 0)
                                 + c["conns_live"])
    out["drop_table"] = drop_table(
        {k: v - nic_b.get(k, 0) for k, v in nic_d.items()},
        {k: v - b["drops"].get(k, 0) for k, v in d["drops"].items()})
    return out
