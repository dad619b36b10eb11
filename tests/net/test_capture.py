"""A tcpdump capture on the peer side (in the namespace, where the kernel sees the
frames) of a short-lived and a bulk run, checked by tshark: no malformed packets, no
bad checksums, and the options the stack negotiated (MSS, window scale, SACK-permitted,
timestamps) on its SYN-ACK (stack as server) and its SYN (stack as client).

With offloads on, what a capture at the TAP sees carries partial TCP checksums in both
directions (the kernel's frames are captured before its checksum offload runs, ours
before the kernel completes them): tshark's TCP checksum check is then meaningless,
so that run checks the IP checksums with tshark and the stack's partial TCP checksums
with scapy as an independent oracle (the field must be the pseudo-header sum).
"""

import re
import shutil
import signal
import subprocess
import time

import pytest

from .conftest import MiB, PEER, PEER_IP, STACK_IP

NEEDS_ROOT = True

OFFLOAD = pytest.mark.parametrize("offload", [True, False], ids=["offload", "no-offload"])
ERROR_SEVERITY = 0x800000          # Wireshark expert "error" (malformed, bad checksum)


def _tshark():
    path = shutil.which("tshark")
    assert path, "tshark missing: `make system-deps` installs it"
    return path


def _capture(bed, path):
    """tcpdump on every interface of the namespace (also a TAP created later)."""
    assert shutil.which("tcpdump"), "tcpdump missing: `make system-deps` installs it"
    td = bed.popen(["tcpdump", "-i", "any", "-n", "-s", "0", "-U", "-B", "65536", "-w",
                    str(path), "tcp"])
    td.wait_line(td.p.stderr, lambda line: "listening on" in line)
    return td


def _stop_capture(td):
    time.sleep(1.2)              # TPACKET_V3 hands a block over after its 1 s timeout
    rc, out, err = td.stop(signal.SIGINT)
    assert re.search(r"^0 packets dropped by kernel", err, re.M), err
    m = re.search(r"^(\d+) packets captured", err, re.M)
    assert m and int(m.group(1)) > 0, err


def _rows(pcap, check_tcp_checksum):
    args = [_tshark(), "-n", "-r", str(pcap), "-o", "ip.check_checksum:TRUE",
            "-o", "tcp.check_checksum:%s" % ("TRUE" if check_tcp_checksum else "FALSE"),
            "-T", "fields", "-E", "separator=|", "-e", "frame.number", "-e", "_ws.malformed",
            "-e", "_ws.expert.severity", "-e", "tcp.checksum.status", "-e",
            "ip.checksum.status", "-e", "ip.src", "-e", "tcp.flags", "-e",
            "tcp.options.mss_val", "-e", "tcp.options.wscale.shift", "-e",
            "tcp.options.sack_perm", "-e", "tcp.options.timestamp.tsval", "-e", "tcp.len",
            "-e", "tcp.checksum", "-e", "tcp.checksum_calculated"]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=120)
    keys = ("n", "malformed", "severity", "tcp_ck", "ip_ck", "src", "flags", "mss", "ws",
            "sack_perm", "tsval", "len", "tcp_csum", "tcp_csum_calc")
    return [dict(zip(keys, line.split("|"))) for line in out.stdout.splitlines()]


def _check_capture(rows, offload, what, min_rows=50):
    assert len(rows) > min_rows, what
    for r in rows:
        assert not r["malformed"], "%s frame %s malformed" % (what, r["n"])
        sev = [int(x) for x in r["severity"].split(",") if x]
        assert all(s < ERROR_SEVERITY for s in sev), "%s frame %s: %s" % (what, r["n"], r)
        assert r["ip_ck"] == "1", "%s frame %s: IP checksum %s" % (what, r["n"], r["ip_ck"])
        if not offload:
            # 0xFFFF is one's-complement zero as much as 0x0000 (RFC 1071): Linux writes
            # it for a sum that folds to zero (skb_checksum_help: CSUM_MANGLED_0), and
            # every receiver accepts it; tshark compares the field with 0x0000
            negative_zero = r["tcp_csum"] == "0xffff" and r["tcp_csum_calc"] == "0x0000"
            assert r["tcp_ck"] == "1" or negative_zero, \
                "%s frame %s: TCP checksum %s" % (what, r["n"], r)
    ours = [r for r in rows if r["src"] == STACK_IP]
    assert ours, what
    # every segment of ours after the handshake carries a timestamp (negotiated)
    assert all(r["tsval"] for r in ours), what


def _check_syn_options(rows, flags, what):
    syns = [r for r in rows if r["src"] == STACK_IP and int(r["flags"], 16) & 0x12 == flags]
    assert syns, "no SYN%s from the stack in %s" % ("-ACK" if flags & 0x10 else "", what)
    for r in syns:
        assert r["mss"] == "1460", r
        assert r["ws"] == "7", r
        assert r["sack_perm"], r
        assert r["tsval"], r


def _check_partial_checksums(pcap):
    """scapy oracle: each TCP segment of ours is either fully checksummed (no payload)
    or carries the pseudo-header sum (payload: the kernel completes it)."""
    from scapy.all import IP, TCP, rdpcap
    partial = full = 0
    for p in rdpcap(str(pcap)):
        if IP not in p or TCP not in p or p[IP].src != STACK_IP:
            continue
        ip = p[IP]
        tcp_len = ip.len - 4 * ip.ihl
        a = int.from_bytes(bytes(map(int, ip.src.split("."))), "big")
        b = int.from_bytes(bytes(map(int, ip.dst.split("."))), "big")
        pseudo = (a + b + 6 + tcp_len) % 0xFFFF or 0xFFFF
        fresh = IP(bytes(ip))
        del fresh[TCP].chksum
        good = IP(bytes(fresh))[TCP].chksum
        if len(p[TCP].payload):
            assert p[TCP].chksum == pseudo, "partial checksum of %r" % p.summary()
            partial += 1
        else:
            assert p[TCP].chksum == good, "checksum of %r" % p.summary()
            full += 1
    assert partial > 0 and full > 0


@OFFLOAD
def test_peer_side_capture_short_lived_and_bulk(bed, tmp_path, offload):
    stack_pcap = tmp_path / "stack.pcap"
    srv = bed.serve("echo", 7, offload=offload, stats=tmp_path / "serve.json",
                    extra=["--pcap", str(stack_pcap)])
    runs = {}
    for kind in ("short", "bulk"):
        pcap = tmp_path / ("peer-%s.pcap" % kind)
        td = _capture(bed, pcap)
        if kind == "short":
            r = bed.peer("short", STACK_IP, 7, "--count", 50, "--concurrency", 8)
            assert r["ok"] == 50
        else:
            r = bed.peer("echo-client", STACK_IP, 7, "--bytes", 2 * MiB, "--seed", 2)
            assert r["sha256_sent"] == r["sha256_received"]
        _stop_capture(td)
        runs[kind] = pcap
    st = srv.stop()
    for kind, pcap in runs.items():
        rows = _rows(pcap, check_tcp_checksum=not offload)
        _check_capture(rows, offload, kind)
        _check_syn_options(rows, 0x12, kind)
        if offload:
            _check_partial_checksums(pcap)
    # the stack's own --pcap: every frame it saw, readable, nothing malformed
    rows = _rows(stack_pcap, check_tcp_checksum=not offload)
    assert len(rows) == st["pcap"]["frames"] == st["frames_in"] + st["frames_out"]
    assert not any(r["malformed"] for r in rows)
    # the kernel accepted every checksum it verified
    nstat = bed.run(["nstat", "-az", "TcpInCsumErrors"]).stdout
    assert " 0 " in nstat.split("TcpInCsumErrors")[1][:40], nstat


@OFFLOAD
def test_capture_of_stack_as_client(bed, tmp_path, offload):
    server = bed.popen(PEER + ["serve-bytes", "--port", "5002", "--bytes", str(MiB)])
    server.wait_line(server.p.stdout, lambda line: "ready" in line)
    pcap = tmp_path / "client.pcap"
    td = _capture(bed, pcap)
    rc, out, err = bed.connect(PEER_IP, 5002, "-n", offload=offload,
                               stats=tmp_path / "c.json")
    assert rc == 0, err
    _stop_capture(td)
    rows = _rows(pcap, check_tcp_checksum=not offload)
    _check_capture(rows, offload, "client", min_rows=10)
    _check_syn_options(rows, 0x02, "client")
