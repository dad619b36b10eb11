r"""A SYN flood with spoofed sources, forged cookie ACKs, and the legitimate clients that
must get through meanwhile; run inside the peer namespace.

    ip netns exec atcp-peer python -m acceltcp.testbed.synflood flood 198.18.0.2 7 \
        --rate 1000 --duration 20
    ip netns exec atcp-peer python -m acceltcp.testbed.synflood clients 198.18.0.2 7 \
        --count 300 --rate 20
    ip netns exec atcp-peer python -m acceltcp.testbed.synflood forge 198.18.0.2 7 --count 500

Each prints one JSON line with its result on stdout (``flood`` first prints
``{"event": "start"}``) and stops by itself.

``flood`` and ``forge`` write whole Ethernet frames to an AF_PACKET socket on the
namespace's end of the TAP (``atcp0``): the peer kernel's routing never sees them, so the
sources can be anything. Frames are built once (``--distinct`` of them, checksums
included) and then only sent, paced to ``--rate`` in 1 ms steps: a Python loop does
~10^5 such sends a second, far above what the tests ask. Every frame carries the peer
interface's MAC, as a flood arriving through a router carries the router's.

Sources: ``--src`` (default 198.18.128.0/17, part of RFC 2544's benchmarking range that
no one in the testbed uses, 32768 addresses). That is the worst case a flood can
realistically be: no host answers the SYN-ACKs (the peer kernel drops frames for
addresses it does not have; forwarding is off), so no RST ever frees a SYN-RECEIVED
child; and the addresses are new on every SYN and outside the stack's /24 with no
gateway, so a stack that resolved its reply's next hop would broadcast an ARP request
per SYN (nobody answers those either). SYNs look like Linux's (MSS, SACK-permitted,
timestamps, window scale) unless ``--no-ts``: then MSS only, as hping3 sends, the kind a
NIC cannot answer itself and hands to the host.

``forge`` sends ACKs with random seq, ack and a TSecr with the cookie MARK bit (bit 0)
set (``--no-ts``: no timestamps, for the host's TS-less cookies) from the same spoofed
range: a blind attacker's guesses at a cookie.

``clients`` are real kernel sockets: connect, send ``--size`` bytes, read them back,
close; ``--rate`` new connections a second over ``--concurrency`` threads. Result:
ok/errors and the connect latency (SYN sent to connect() returning) p50/p99.
"""

import argparse
import ipaddress
import json
import random
import socket
import threading
import time

from ..wire.ethernet import mac_from_str
from ..wire.ipv4 import ip_from_str
from ..wire.tcp import ACK, SYN, build_tcp_frame, tcp_options
from .peer import recv_upto

DEFAULT_SRC = "198.18.128.0/17"
STACK_MAC = "02:a7:cc:00:00:02"
IFACE = "atcp0"
ETH_P_ALL = 0x0003


def _iface_mac(iface):
    with open("/sys/class/net/%s/address" % iface) as f:
        return mac_from_str(f.read().strip())


def _sources(net, rng, n):
    net = ipaddress.ip_network(net)
    base = int(net.network_address)
    size = net.num_addresses
    out = []
    for _ in range(n):
        a = base + rng.randrange(1, size - 1) if size > 2 else base
        out.append(a.to_bytes(4, "big"))
    return out


def syn_frames(dst, dport, src_net, n, seed, ts=True, dst_mac=STACK_MAC, src_mac=None):
    """`n` distinct SYN frames from random sources of `src_net` (addresses, ports, ISNs)."""
    rng = random.Random(seed)
    dmac = mac_from_str(dst_mac)
    smac = src_mac if src_mac is not None else bytes(6)
    dip = ip_from_str(dst)
    out = []
    for src in _sources(src_net, rng, n):
        if ts:
            opts = tcp_options(mss=1460, wscale=7, sack_permitted=True,
                               timestamps=(rng.randrange(1 << 32), 0))
        else:
            opts = tcp_options(mss=1460)
        out.append(build_tcp_frame(dmac, smac, src, dip, rng.randrange(65536),
                                   rng.randrange(1024, 65536), dport, rng.randrange(1 << 32),
                                   0, SYN, 64240, opts, b""))
    return out


def forged_ack_frames(dst, dport, src_net, n, seed, ts=True, dst_mac=STACK_MAC,
                      src_mac=None):
    """`n` ACKs guessing at a cookie: random seq and ack, TSecr with the MARK bit."""
    rng = random.Random(seed)
    dmac = mac_from_str(dst_mac)
    smac = src_mac if src_mac is not None else bytes(6)
    dip = ip_from_str(dst)
    out = []
    for src in _sources(src_net, rng, n):
        opts = (tcp_options(timestamps=(rng.randrange(1 << 32), rng.randrange(1 << 32) | 1))
                if ts else b"")
        out.append(build_tcp_frame(dmac, smac, src, dip, rng.randrange(65536),
                                   rng.randrange(1024, 65536), dport, rng.randrange(1 << 32),
                                   rng.randrange(1 << 32), ACK, 502, opts, b""))
    return out


def send_paced(iface, frames, rate, duration, count=None):
    """Send `frames` round robin at `rate` per second for `duration` s (or `count`
    frames). -> (sent, elapsed)."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:
        s.bind((iface, 0))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        total = count if count is not None else int(rate * duration)
        n = len(frames)
        sent = 0
        i = 0
        t0 = time.monotonic()
        send = s.send
        while sent < total:
            due = min(total, int((time.monotonic() - t0) * rate) + 1)
            while sent < due:
                try:
                    send(frames[i])
                except BlockingIOError:
                    break
                except OSError:             # ENOBUFS: the TAP queue is full; pace on
                    break
                sent += 1
                i = i + 1 if i + 1 < n else 0
            time.sleep(0.001)
        return sent, time.monotonic() - t0
    finally:
        s.close()


def _print(obj):
    print(json.dumps(obj), flush=True)


def cmd_flood(a):
    smac = _iface_mac(a.iface)
    frames = syn_frames(a.host, a.port, a.src, a.distinct, a.seed, not a.no_ts,
                        a.dst_mac, smac)
    _print({"event": "start", "rate": a.rate, "duration": a.duration})
    sent, el = send_paced(a.iface, frames, a.rate, a.duration)
    _print({"sent": sent, "elapsed_s": el, "rate": sent / max(el, 1e-9), "ts": not a.no_ts})
    return 0


def cmd_forge(a):
    smac = _iface_mac(a.iface)
    frames = forged_ack_frames(a.host, a.port, a.src, a.count, a.seed + 1, not a.no_ts,
                               a.dst_mac, smac)
    sent, el = send_paced(a.iface, frames, a.rate, 0, count=a.count)
    _print({"sent": sent, "elapsed_s": el, "ts": not a.no_ts})
    return 0


def _pct(xs, q):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def cmd_clients(a):
    msg = bytes(range(256)) * (a.size // 256) + bytes(range(a.size % 256))
    lock = threading.Lock()
    state = {"next": 0, "ok": 0, "errors": [], "lat": []}
    t0 = time.monotonic()

    def worker():
        while True:
            with lock:
                k = state["next"]
                if k >= a.count:
                    return
                state["next"] += 1
            start = t0 + k / a.rate if a.rate else 0.0
            d = start - time.monotonic()
            if d > 0:
                time.sleep(d)
            try:
                c0 = time.monotonic()
                s = socket.create_connection((a.host, a.port), timeout=a.timeout)
                lat = time.monotonic() - c0
                s.sendall(msg)
                got = recv_upto(s, len(msg))
                s.close()
                with lock:
                    if got == msg:
                        state["ok"] += 1
                        state["lat"].append(lat)
                    else:
                        state["errors"].append("short reply %d" % len(got))
            except OSError as e:
                with lock:
                    state["errors"].append(repr(e))

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(a.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lat = state["lat"]
    errs = state["errors"]
    _print({"count": a.count, "ok": state["ok"], "errors": len(errs), "first_errors": errs[:5],
            "elapsed_s": time.monotonic() - t0,
            "connect_ms_p50": None if not lat else 1e3 * _pct(lat, 0.50),
            "connect_ms_p99": None if not lat else 1e3 * _pct(lat, 0.99),
            "connect_ms_max": None if not lat else 1e3 * max(lat)})
    return 0 if state["ok"] == a.count else 1


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m acceltcp.testbed.synflood",
                                description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("flood", "forge", "clients"):
        q = sub.add_parser(name)
        q.add_argument("host")
        q.add_argument("port", type=int)
        if name != "clients":
            q.add_argument("--iface", default=IFACE)
            q.add_argument("--dst-mac", default=STACK_MAC)
            q.add_argument("--src", default=DEFAULT_SRC, help="spoofed sources (CIDR)")
            q.add_argument("--seed", type=int, default=1)
            q.add_argument("--no-ts", action="store_true", help="no timestamps option")
        if name == "flood":
            q.add_argument("--rate", type=float, default=1000.0, help="SYNs per second")
            q.add_argument("--duration", type=float, default=20.0, help="seconds")
            q.add_argument("--distinct", type=int, default=16384,
                           help="distinct frames, sent round robin")
        elif name == "forge":
            q.add_argument("--count", type=int, default=500)
            q.add_argument("--rate", type=float, default=1000.0)
        else:
            q.add_argument("--count", type=int, default=200)
            q.add_argument("--rate", type=float, default=20.0, help="new connections/s")
            q.add_argument("--concurrency", type=int, default=8)
            q.add_argument("--size", type=int, default=64)
            q.add_argument("--timeout", type=float, default=20.0)
    a = p.parse_args(argv)
    return {"flood": cmd_flood, "forge": cmd_forge, "clients": cmd_clients}[a.cmd](a)


if __name__ == "__main__":
    raise SystemExit(main())
