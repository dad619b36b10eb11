"""100,000 malformed and mutated frames through the simulator's NIC placement (the
NicDataplane in a SimNicDevice in front of a HostStack, setup + teardown + splice
offloads on, live connections in every table): no exception anywhere, every frame
accounted for exactly once by named counters, and the connections the fuzz did not aim
at still echo byte-exact (acceltcp.testbed.fuzzbed has the setup and the identities)."""

import pytest

from acceltcp.testbed.fuzz import Flow, FrameFuzzer, fix_checksums
from acceltcp.testbed.fuzzbed import drop_table, host_inbound_drops, nic_wire_outcomes, sim_fuzz
from acceltcp.wire.errors import DROP_REASONS, WireError
from acceltcp.wire.ipv4 import ip_from_str, parse_ipv4_fields
from acceltcp.wire.tcp import parse_tcp

N = 100_000
STACK_IP = ip_from_str("198.18.0.2")
PEER_IP = ip_from_str("198.18.0.1")
STACK_MAC = bytes.fromhex("02a7cc000002")
PEER_MAC = bytes.fromhex("02a7cc000001")


def _fuzzer(seed, **kw):
    kw.setdefault("flows", [Flow(PEER_IP, STACK_IP, 40000, 7, 0xFFFFFF00, 12345, 99, 7)])
    return FrameFuzzer(seed, stack_mac=STACK_MAC, stack_ip=STACK_IP, peer_mac=PEER_MAC,
                       peer_ip=PEER_IP, ports=(7, 8080), **kw)


@pytest.fixture(scope="module")
def run():
    return sim_fuzz(N, seed=1)


def test_no_exception_anywhere(run):
    assert run["injected"] == N
    assert run["nic_exceptions"] == 0, run["exception"]
    assert run["host_last_exception"] is None
    assert run["host_drops"].get("internal_error", 0) == 0


def test_every_wire_frame_has_exactly_one_nic_outcome(run):
    out = nic_wire_outcomes(run["nic"])
    assert sum(out.values()) == run["wire_in"]
    assert run["wire_in"] >= N                 # the fuzz + what stack a sent meanwhile


def test_every_host_frame_is_delivered_or_a_named_drop(run):
    h = run["host"]
    drops = host_inbound_drops(run["host_drops"])
    assert h["frames_in"] == h["frames_delivered"] + sum(drops.values())
    # ... and the host got exactly what the NIC sent it
    assert h["frames_in"] - run["host_frames_in_0"] == run["nic_to_host"]
    c = run["nic"]
    ctl_from_wire = run["wire_to_host"] - c["passthrough_host"] - c["cookie_ack_ok"]
    assert 0 <= ctl_from_wire <= c["splices_closed"] + run["teardown"]["reports_sent"]


def test_every_table_was_exercised(run):
    c = run["nic"]
    assert run["teardown_frames_fuzz"] > 1000 and run["splice_frames_fuzz"] > 0
    assert c["syn_cookies_sent"] > 1000 and c["syn_to_host"] > 100
    assert c["cookie_ack_ok"] > 100 and c["cookie_ack_bad"] > 1000
    assert c["drop_offload_ethertype"] > 1000
    assert run["nic_tables"]["splices"] >= 2          # the sentinel splice is still there
    assert run["teardown"]["challenge_acks"] > 0


def test_drops_cover_every_layer(run):
    table = drop_table(run["nic"], run["host_drops"])
    host = {k[5:] for k in table if k.startswith("host.")}
    # every parser reason but the ones a NIC in front makes unreachable
    assert set(DROP_REASONS) <= host, set(DROP_REASONS) - host
    for k in ("not_for_us", "ethertype_unsupported", "ip_proto_unsupported", "bad_src_addr",
              "no_connection", "rst_no_connection"):
        assert k in host, k
    assert all(v > 0 for v in table.values())


def test_live_connections_survive_byte_exact(run):
    assert run["after_ok"] and all(run["after_ok"]), run["after_ok"]
    assert run["sentinels"] == 4 and run["victims"] >= 10


def test_connection_accounting(run):
    h = run["host"]
    created = h.get("syns_received", 0) + h["cookie_conns"] + h["conns_opened"]
    gone = h["conns_closed"] + h.get("conns_embryonic_closed", 0)
    assert created == gone + h["conns_live"] + run["host_pending_offers"] + \
        run["host_splicing"]


def test_generator_is_deterministic_and_varied():
    a = _fuzzer(5).frames(3000)
    b = _fuzzer(5).frames(3000)
    assert a == b and a != _fuzzer(6).frames(3000)
    fz = _fuzzer(7)
    fz.frames(5000)
    assert len(fz.bases) >= 10 and len(fz.mutations) >= 18
    assert 0.1 < fz.mutations["none"] / 5000 < 0.25


def test_generator_avoids_protected_tuples():
    keep = Flow(PEER_IP, STACK_IP, 40001, 7, 1, 2)
    fz = _fuzzer(3, avoid_keys=[keep.key], avoid_sports=[5555])
    for f in fz.frames(20000):
        if len(f) >= 38 and f[26:30] == PEER_IP:
            assert f[26:38] != keep.key and int.from_bytes(f[34:36], "big") != 5555


def test_fix_checksums_makes_a_mutated_frame_parse():
    fz = _fuzzer(1, mutate=0.0)
    ok = 0
    for f in fz.frames(500):
        if f[12:14] != b"\x08\x00" or f[23] != 6:
            continue
        g = bytearray(f)
        g[38] ^= 0x10                     # the sequence number
        fix_checksums(g)
        src, dst, _, _, _, _, _, total, _ = parse_ipv4_fields(memoryview(g)[14:])
        parse_tcp(bytes(g[34:14 + total]), src, dst)
        ok += 1
    assert ok > 200


def test_scapy_agrees_on_what_parses():
    """Oracle: where our parsers accept an IPv4/TCP frame, scapy reads the same fields
    and finds both checksums right; where they reject a checksum, scapy's differs."""
    scapy = pytest.importorskip("scapy.all")
    from scapy.layers.inet import in4_chksum
    from scapy.utils import checksum
    fz = _fuzzer(11)
    checked = rejected = 0
    for f in fz.frames(3000):
        if len(f) < 54 or f[12:14] != b"\x08\x00":
            continue
        try:
            src, dst, proto, _, _, _, _, total, _ = parse_ipv4_fields(memoryview(f)[14:])
            if proto != 6:
                continue
            seg = parse_tcp(f[34:14 + total], src, dst)
        except WireError as e:
            if e.reason in ("ip_bad_checksum", "tcp_bad_checksum"):
                p = scapy.Ether(f)
                ip = p[scapy.IP]
                if e.reason == "ip_bad_checksum":
                    assert checksum(f[14:34]) != 0
                else:
                    assert in4_chksum(6, ip, f[34:14 + total]) != 0
                rejected += 1
            continue
        p = scapy.Ether(f)
        t = p[scapy.TCP]
        assert (t.sport, t.dport, t.seq, t.ack, int(t.flags) & 0xFF) == \
            (seg.src_port, seg.dst_port, seg.seq, seg.ack, seg.flags)
        assert len(seg.payload) == p[scapy.IP].len - 20 - t.dataofs * 4
        # both checksums verify by scapy's own arithmetic, over the raw bytes
        assert checksum(f[14:34]) == 0
        assert in4_chksum(6, p[scapy.IP], f[34:14 + total]) == 0
        checked += 1
    assert checked > 300 and rejected > 20
