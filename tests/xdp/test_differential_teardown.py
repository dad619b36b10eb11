"""Differential, teardown: a corpus of teardown exchanges through nic/dataplane.py +
nic/teardown.py (the specification) and through nic.bpf.c (atcp_td_wire under
BPF_PROG_TEST_RUN) + TeardownControl.  Every output frame byte for byte, and after every
frame the dataplane and engine counters, the IPv4 idents, the flow entries, the timer
wheel, the handed-over table and the moderation deadlines (tdiff.TdPair)."""

import pytest

from acceltcp.nic.dataplane import HOST, WIRE
from acceltcp.wire.control import (
    STATE_CLOSE_WAIT, TEARDOWN_END_RESET, Listen, TeardownDone, decode,
)
from acceltcp.wire.tcp import tcp_options

from .diff import HOST_MAC, NIC_MAC, ack, fix_checksums, syn
from .tdiff import CPORT, TdPair, handover, peer

T0 = 1000.25
ACK_, FIN_, SYN_, RST_, PSH_ = 0x10, 0x01, 0x02, 0x04, 0x08

MODES = [pytest.param(0, id="per-flow-reports"), pytest.param(0.001, id="moderated")]


@pytest.fixture
def tpair(open_xdp):
    def make(capacity=4, report_interval=0, **kw):
        return TdPair(open_xdp, capacity=capacity, report_interval=report_interval, **kw)
    return make


def wire_kinds(out):
    return [(port, f[12:14].hex()) for port, f in out]


# -- handover and the normal close ---------------------------------------------------------

@pytest.mark.parametrize("ri", MODES)
@pytest.mark.parametrize("ts", [False, True])
def test_established_data_acks_fin_time_wait(tpair, ri, ts):
    p = tpair(report_interval=ri)
    tsopt = dict(timestamps=True, ts_recent=700, ts_offset=12345, ts_last=1000) if ts else {}
    out = p.host(handover(bytes(range(256)) * 12, mss=1000, time_wait_ms=500, **tsopt), T0)
    assert [port for port, _ in out] == ([HOST] if not ri else []) + [WIRE] * 4
    t = (lambda v: (v, 1)) if ts else (lambda v: None)
    now = T0
    for i, a in enumerate((2000, 3000, 4072, 4073)):      # in order, FIN acknowledged last
        now += 0.01
        assert p.wire(peer(5000, a, ts=t(701 + i)), now) == []
    assert p.nic.teardown.entry(0)["state_name"] == "FIN-WAIT-2"
    now += 0.01
    (port, f), = p.wire(peer(5000, 4073, ACK_ | FIN_, payload=b"bye", ts=t(710)), now)
    assert port == WIRE and f[47] == ACK_
    assert p.nic.teardown.entry(0)["state_name"] == "TIME-WAIT"
    p.wire(peer(5003, 4073, ACK_ | FIN_, ts=t(711)), now + 0.1)      # the FIN again
    p.run_timers(now + 1)
    assert p.nic.teardown.active == 0
    p.timer(now + 2)
    p.status(now + 2)


@pytest.mark.parametrize("ri", MODES)
def test_close_wait_last_ack(tpair, ri):
    p = tpair(report_interval=ri)
    p.host(handover(b"last words" * 20, state=STATE_CLOSE_WAIT, mss=64), T0)
    assert p.nic.teardown.entry(0)["state_name"] == "LAST-ACK"
    p.wire(peer(5000, 1064), T0 + 0.01)
    p.wire(peer(5000, 1100, payload=b"ignored"), T0 + 0.02)     # text after its FIN: ACK
    p.wire(peer(5000, 1201, ACK_ | FIN_), T0 + 0.03)            # FIN again + our FIN acked
    assert p.nic.teardown.active == 0
    p.run_timers(T0 + 1)


@pytest.mark.parametrize("ri", MODES)
def test_fin_alone_and_zero_time_wait(tpair, ri):
    p = tpair(report_interval=ri)
    out = p.host(handover(b"", time_wait_ms=0), T0)
    assert out[-1][1][47] == ACK_ | FIN_
    p.wire(peer(5000, 1001, ACK_ | FIN_), T0 + 0.01)            # both at once
    assert p.nic.teardown.active == 0
    p.run_timers(T0 + 1)


# -- loss ------------------------------------------------------------------------------------

@pytest.mark.parametrize("ri", MODES)
def test_duplicate_acks_fast_retransmit_partial_acks(tpair, ri):
    p = tpair(report_interval=ri)
    p.host(handover(b"a" * 5000, mss=1000, timestamps=True, ts_recent=5), T0)
    now = T0
    for i in range(6):                                          # 3rd: fast retransmit
        now += 0.001
        p.wire(peer(5000, 2000, ts=(10 + i, 1)), now)
    p.wire(peer(5000, 2000, window=501, ts=(20, 1)), now)       # window changed: no dupack
    p.wire(peer(5000, 2000, payload=b"x", ts=(21, 1)), now)     # data: no dupack
    for a in (3000, 4000, 5000, 6001):                          # partial ACKs, then all
        now += 0.002
        p.wire(peer(5001, a, payload=b"yz" if a == 4000 else b"", ts=(30, 1)), now)
    assert p.nic.teardown.counters["retransmits_partial"] == 2
    p.run_timers(now + 100)


@pytest.mark.parametrize("ri", MODES)
def test_rto_backoff_max_retries_rst(tpair, ri):
    p = tpair(report_interval=ri)
    p.host(handover(b"z" * 2500, mss=1000, rto_us=1000, max_retries=4, timestamps=True), T0)
    p.run_timers(T0 + 0.0035)
    p.wire(peer(5000, 2000, ts=(3, 1)), T0 + 0.004)             # progress resets the backoff
    out = p.run_timers(T0 + 120)
    assert [f[47] for _, f in out if f[12:14] == b"\x08\x00"][-1] == RST_ | ACK_
    assert p.nic.teardown.counters["done_retries"] == 1


def test_rto_in_closing_and_last_ack(tpair):
    p = tpair()
    p.host(handover(b"q" * 100, rto_us=2000, max_retries=2), T0)
    p.wire(peer(5000, 1000, ACK_ | FIN_), T0 + 0.001)           # simultaneous close
    assert p.nic.teardown.entry(0)["state_name"] == "CLOSING"
    p.run_timers(T0 + 0.01)
    p.wire(peer(5001, 1101), T0 + 0.011)                        # -> TIME-WAIT
    p.host(handover(b"r", state=STATE_CLOSE_WAIT, cport=CPORT + 1, rto_us=3000), T0 + 0.02)
    p.run_timers(T0 + 100)


def test_fin_wait_2_timeout(tpair):
    p = tpair(teardown_kwargs={"fin_timeout": 0.5})
    p.host(handover(b"abc"), T0)
    p.wire(peer(5000, 1004), T0 + 0.001)
    p.wire(peer(5000, 1004, payload=b"more"), T0 + 0.2)         # data does not restart it
    p.run_timers(T0 + 1)
    assert p.nic.teardown.counters["fin_wait2_timeouts"] == 1
    p.wire(peer(5004, 1004), T0 + 1.1)                          # gone: to the host


# -- RST, SYN, PAWS, acceptability --------------------------------------------------------

@pytest.mark.parametrize("ri", MODES)
def test_rsts_in_and_out_of_window(tpair, ri):
    p = tpair(report_interval=ri)
    p.host(handover(b"d" * 10, window=100, rcv_wscale=2), T0)
    p.wire(peer(5001, 0, RST_), T0 + 0.01)                      # in window: challenge
    p.wire(peer(5000 + 400, 0, RST_), T0 + 0.01)                # edge (100 << 2): outside
    p.wire(peer(4999, 0, RST_ | ACK_), T0 + 0.01)               # before: outside
    p.wire(peer(5000, 0, RST_), T0 + 0.02)                      # at RCV.NXT: ends the flow
    assert p.nic.teardown.counters["done_reset"] == 1
    # in TIME-WAIT
    p.host(handover(b"", cport=CPORT + 1, time_wait_ms=1000), T0 + 1)
    p.wire(peer(5000, 1001, ACK_ | FIN_, cport=CPORT + 1), T0 + 1.01)
    for seq in (5002, 6000, 5000, 1 << 31):
        p.wire(peer(seq, 0, RST_, cport=CPORT + 1), T0 + 1.02)
    p.wire(peer(5001, 0, RST_, cport=CPORT + 1), T0 + 1.03)     # at RCV.NXT: REMOVE
    c = p.nic.teardown.counters
    assert c["done_reset"] == 2 and c["challenge_acks"] == 3 and c["drops"] == 4
    p.run_timers(T0 + 10)


@pytest.mark.parametrize("ri", MODES)
def test_time_wait_challenge_acks_are_rate_limited(tpair, ri):
    """RFC 5961 §7 in TIME-WAIT: a flood of in-window RSTs and old SYNs draws 10 challenge
    ACKs a second per flow (the entry's challenge field, the clock's second); the rest
    are counted drops; the next second has a fresh budget."""
    p = tpair(report_interval=ri)
    p.host(handover(b"", time_wait_ms=60000), T0)
    p.wire(peer(5000, 1001, ACK_ | FIN_), T0 + 0.01)
    assert p.nic.teardown.entry(0)["state_name"] == "TIME-WAIT"
    for k in range(14):                                         # T0 + 0.02 .. 0.67: 1 second
        p.wire(peer(5002 + k, 0, RST_) if k % 2 else peer(4000 - k, 0, SYN_),  # old SYN
               T0 + 0.02 + k * 0.05)
    c = p.nic.teardown.counters
    assert c["challenge_acks"] == 10 and c["drop_teardown_challenge_limited"] == 4
    p.wire(peer(5002, 0, RST_), T0 + 1.0)                       # the next second
    p.wire(peer(5000, 1001, ACK_ | FIN_), T0 + 1.0)             # the FIN again: not limited
    assert c["challenge_acks"] == 11 and c["time_wait_restarts"] == 1
    p.run_timers(T0 + 100)


@pytest.mark.parametrize("ri", MODES)
@pytest.mark.parametrize("ts", [False, True])
def test_syn_in_fin_wait_and_time_wait(tpair, ri, ts):
    p = tpair(report_interval=ri)
    kw = dict(timestamps=True, ts_recent=1000) if ts else {}
    t = (lambda v: (v, 0)) if ts else (lambda v: None)
    p.host(handover(b"s", time_wait_ms=5000, **kw), T0)
    p.wire(peer(7777, 0, SYN_, ts=t(1001)), T0 + 0.01)          # challenge ACK
    p.wire(peer(5000, 1002, ACK_ | FIN_, ts=t(1002)), T0 + 0.02)
    assert p.nic.teardown.entry(0)["state_name"] == "TIME-WAIT"
    p.wire(peer(100, 0, SYN_ | ACK_, ts=t(2000)), T0 + 0.03)    # SYN-ACK: challenge
    p.wire(peer(4000, 0, SYN_, ts=t(999)), T0 + 0.03)           # old: challenge
    p.wire(peer(5001, 0, SYN_, ts=t(1002)), T0 + 0.03)          # equal TSval, seq == RCV.NXT
    p.wire(peer(9000, 0, SYN_, ts=t(1003),                      # a new incarnation: reopens
                payload=b"syn data" * 3), T0 + 0.04)
    assert p.nic.teardown.active == 0 and p.nic.teardown.counters["syn_reopen"] == 1
    p.run_timers(T0 + 10)


REOPENING_SYNS = {
    # the listener offers cookies: a cookie SYN-ACK
    "cookie": (True, tcp_options(mss=1460, sack_permitted=True, wscale=7,
                                 timestamps=(1003, 0))),
    # no timestamps: the listener's verdict is the host (behind the flow's end)
    "no-timestamps": (True, tcp_options(mss=1460, wscale=7)),
    # no listener on the NIC: the host
    "no-listener": (False, tcp_options(mss=1460, timestamps=(1003, 0))),
}


@pytest.mark.parametrize("ri", MODES)
@pytest.mark.parametrize("kind", sorted(REOPENING_SYNS))
def test_time_wait_syn_that_reopens_meets_the_listener(tpair, ri, kind):
    """RFC 6191: the new incarnation's SYN ends the TIME-WAIT and goes on to the
    listener, in atcp_td_wire itself: the cookie SYN-ACK by XDP_TX, a verdict for the
    host as a FRAME event behind the flow's end (its TeardownDone first on the host
    port, as from the specification)."""
    listens, opts = REOPENING_SYNS[kind]
    p = tpair(report_interval=ri)
    if listens:
        p.listen(port=80)
    p.host(handover(b"s", time_wait_ms=5000, timestamps=True, ts_recent=1000), T0)
    p.wire(peer(5000, 1002, ACK_ | FIN_, ts=(1002, 0)), T0 + 0.02)
    assert p.nic.teardown.entry(0)["state_name"] == "TIME-WAIT"
    out = p.wire(peer(9000, 0, SYN_, opts=opts), T0 + 0.04)
    assert p.nic.teardown.counters["syn_reopen"] == 1 and p.nic.teardown.active == 0
    if kind == "cookie":
        assert out[-1][0] == WIRE and out[-1][1][47] == SYN_ | ACK_
        assert p.nic.counters["syn_cookies_sent"] == 1
    else:
        assert out[-1] == (HOST, peer(9000, 0, SYN_, opts=opts))
        assert p.nic.counters["syn_cookies_sent"] == 0
    p.run_timers(T0 + 10)


def test_paws_and_ts_recent(tpair):
    p = tpair()
    p.host(handover(b"p" * 20, timestamps=True, ts_recent=0x7FFFFFF0, time_wait_ms=100), T0)
    p.wire(peer(5000, 1010, ts=(0x7FFFFFEF, 1)), T0 + 0.01)     # PAWS: ACK, dropped
    p.wire(peer(5000, 1010, ts=(0x80000005, 1)), T0 + 0.01)     # wraps forward: taken
    p.wire(peer(5000, 1010), T0 + 0.01)                         # no TS: no PAWS
    p.wire(peer(5010, 1021, ts=(0x80000006, 1)), T0 + 0.02)     # ahead: unacceptable
    p.wire(peer(5000, 1021, ACK_ | FIN_, ts=(0x80000007, 1)), T0 + 0.03)
    for tv in (0x80000000, 0x80000007, 0x90000000):             # PAWS, equal, newer in TW
        p.wire(peer(5001, 1021, ts=(tv, 1)), T0 + 0.04)
    p.wire(peer(5001, 1030, ts=(0x90000001, 1)), T0 + 0.04)     # ACK > SND.NXT in TW
    p.wire(peer(5001, 1021, 0, ts=(0x90000002, 1)), T0 + 0.04)  # no ACK bit in TW
    p.run_timers(T0 + 1)


@pytest.mark.parametrize("wnd,ws", [(1000, 0), (0, 0), (3, 0), (64, 3)])
def test_peer_data_and_acceptability(tpair, wnd, ws):
    p = tpair()
    p.host(handover(b"x" * 50, window=wnd, rcv_wscale=ws, timestamps=True), T0)
    segs = [
        peer(5000, 1000, payload=b"hello", ts=(1, 1)),          # in order
        peer(4990, 1000, payload=b"0123456789abcdef", ts=(1, 1)),   # overlaps RCV.NXT
        peer(4000, 1000, payload=b"old", ts=(1, 1)),            # old: dup ACK
        peer(5100, 1000, payload=b"ahead", ts=(1, 1)),          # out of order
        peer(5000 + 10 ** 6, 1000, payload=b"far", ts=(1, 1)),  # outside
        peer(5000, 1000, payload=b"w" * 600, ts=(2, 1)),        # more than the window
        peer(5000, 1000, 0, payload=b"noack", ts=(2, 1)),       # no ACK bit
        peer(5000, 2000, ts=(2, 1)),                            # ACK > SND.MAX
        peer(5000, 900, ts=(2, 1)),                             # old ACK
        peer(5000, 1051, ts=(3, 1)),                            # FIN acknowledged
        peer(5000, 1051, payload=b"fw2", ts=(3, 1)),
        peer(5000, 1051, ACK_ | FIN_, payload=b"tail", ts=(4, 1)),
    ]
    for i, s in enumerate(segs):
        p.wire(fix_checksums(s), T0 + 0.001 * (i + 1))
    p.run_timers(T0 + 100)


# -- refusals, the handed-over table, several flows ----------------------------------------

@pytest.mark.parametrize("ri", MODES)
def test_refusals(tpair, ri):
    p = tpair(capacity=2, report_interval=ri)
    p.host(handover(b"1", cport=1), T0)
    p.host(handover(b"1", cport=1, flow_id=9), T0)                  # DUPLICATE
    p.host(handover(b"2", cport=2, flow_id=0xFFFFFFFF), T0)
    p.host(handover(b"3", cport=3, flow_id=3), T0)                  # TABLE_FULL
    bad = [handover(b"x", cport=4, flags=ACK_ | FIN_), handover(b"x", cport=4, flags=ACK_ | SYN_),
           handover(b"x", cport=4, flags=0), handover(b"x", cport=4, mss=63),
           handover(b"x", cport=4, state=3), handover(b"x", cport=4, snd_wscale=15),
           handover(b"x", cport=1, flags=RST_ | ACK_)]                  # BAD before DUPLICATE
    for f in bad:
        p.host(f, T0 + 0.001)
    trunc = handover(b"x", cport=4)
    p.host(trunc[:14 + 40 + 20], T0 + 0.002)                        # segment cut short
    p.wire(peer(5000, 1002, ACK_ | FIN_, cport=1), T0 + 0.01)       # a slot frees (LIFO)
    p.host(handover(b"4", cport=4), T0 + 0.02)
    p.run_timers(T0 + 200)
    p.status(T0 + 200)


def test_no_teardown_table(open_xdp):
    p = TdPair(open_xdp, capacity=0)
    p.host(handover(b"x"), T0)
    p.wire(peer(5000, 1002), T0)


@pytest.mark.parametrize("ri", MODES)
def test_handed_over_flow_leaves_the_handed_table(tpair, ri):
    p = tpair(report_interval=ri)
    p.run(Listen(b"\x0a\x00\x00\x01", 80, 1460, 7, True, True).frame(NIC_MAC, HOST_MAC),
          HOST, T0)
    (_, sa), = p.wire(syn(sport=CPORT), T0)
    p.wire(ack(sa, sport=CPORT), T0 + 0.01)                         # cookie: handed
    assert len(p.nic.handed) == 1
    p.host(handover(b"resp", una=int.from_bytes(sa[38:42], "big") + 1, rnxt=0xFFFFFFF1,
                    timestamps=True), T0 + 0.02)
    assert len(p.nic.handed) == 0
    p.wire(syn(sport=CPORT + 7), T0 + 0.03)                         # cookies go on (ident)
    p.wire(peer(0xFFFFFFF1, 0, SYN_, ts=(1, 0)), T0 + 0.04)         # on the teardown flow


def test_sequence_wrap(tpair):
    p = tpair()
    una = 0xFFFFFF00
    p.host(handover(b"w" * 1000, una=una, rnxt=0xFFFFFFFE, mss=300, window=65535,
                    rcv_wscale=1, timestamps=True, ts_recent=0xFFFFFFF0, ts_last=0xFFFFFFFE),
           T0)
    now = T0
    for a in (una + 300, una + 300, una + 300, una + 300, una + 900, una + 1001):
        now += 0.001
        p.wire(peer(0xFFFFFFFE, a, payload=b"ab", ts=(0xFFFFFFF8, 1)), now)
    p.wire(peer(0, una + 1001, ACK_ | FIN_, payload=b"c", ts=(3, 1)), now + 0.01)
    p.run_timers(now + 100)


def test_many_flows_slot_reuse_and_status(tpair):
    p = tpair(capacity=3, report_interval=0.001)
    now = T0
    for round_ in range(3):
        for c in range(3):
            now += 0.0003
            p.host(handover(b"m" * (c * 700), cport=100 + c + 10 * round_, mss=500,
                            time_wait_ms=c), now)
        for c in (2, 0, 1):
            now += 0.0004
            p.wire(peer(5000, 1000 + c * 700 + 1, ACK_ | FIN_, cport=100 + c + 10 * round_),
                   now)
        p.status(now)
        p.run_timers(now + 0.05)
        now += 0.05


# -- malformed frames on a teardown tuple --------------------------------------------------

@pytest.mark.parametrize("csum_ok", [False, True])
def test_malformed_segments(tpair, csum_ok):
    p = tpair()
    p.host(handover(b"m" * 10), T0)
    good = peer(5000, 1005, payload=b"hi")
    cases = [good[:-1] + bytes([good[-1] ^ 1])]                     # bad checksum
    f = bytearray(good)
    f[46] = 0x40                                                    # doff 16
    cases.append(fix_checksums(f))
    f = bytearray(good)
    f[46] = 0xF0                                                    # doff 60 > length
    cases.append(fix_checksums(f))
    short = bytearray(good[:14 + 20 + 10])                          # 10-byte TCP header
    short[16:18] = (30).to_bytes(2, "big")
    cases.append(fix_checksums(short))
    for opts in (b"\x08\x0a" + bytes(6) + b"\x01\x01", b"\x01\x01\x01\x05",
                 b"\x02\x05\x05\xb4\x00\x00\x00\x00", b"\x03\x03\x07\x00",
                 b"\x01\x01\x08\x0a" + bytes(8), b"\x08\x0a" + bytes(8) + b"\x08\x0a"):
        cases.append(fix_checksums(peer(5000, 1005, opts=opts.ljust((len(opts) + 3) & ~3,
                                                                       b"\0"))))
    for c in cases:
        p.wire(c, T0 + 0.01, csum_ok=csum_ok)
    p.wire(good, T0 + 0.02, csum_ok=csum_ok)


def test_large_segment_checksum(tpair):
    p = tpair()
    p.host(handover(b"L" * 3000, mss=1460), T0)
    for n in (1, 511, 512, 513, 1460, 2900):
        s = peer(5000, 1000, payload=bytes(range(256)) * 12)[:54 + n]
        s = fix_checksums(s[:16] + (40 + n).to_bytes(2, "big") + s[18:])
        p.wire(s, T0 + 0.01)
        p.wire(s[:-1] + bytes([s[-1] ^ 0x10]), T0 + 0.01)


def test_reports_carry_the_engine_counts(tpair):
    """The TeardownDone the XDP side reports (built from its event) has the engine's
    retransmits / bytes_acked / bytes_received."""
    p = tpair()
    p.host(handover(b"r" * 3000, mss=1000, rto_us=1000), T0)
    p.run_timers(T0 + 0.0011)
    p.wire(peer(5000, 2000, payload=b"12345"), T0 + 0.002)
    (port, f), = p.wire(peer(5005, 1500, RST_), T0 + 0.003)
    assert port == HOST
    d = decode(f)
    assert type(d) is TeardownDone and d.reason == TEARDOWN_END_RESET
    assert (d.retransmits, d.bytes_acked, d.bytes_received) == (2, 1000, 5)


def test_options_on_acks(tpair):
    """SACK blocks and other options on the peer's segments (parse_tcp's general walk)."""
    p = tpair()
    p.host(handover(b"o" * 100, timestamps=True, sack_ok=True), T0)
    opts = tcp_options(timestamps=(5, 1)) + b"\x01\x01\x05\x0a" + bytes(8)
    p.wire(peer(5000, 1050, opts=opts), T0 + 0.01)
    p.wire(peer(5000, 1050, opts=b"\x01\x01\x05\x0a" + bytes(8) + tcp_options(
        timestamps=(6, 1))), T0 + 0.01)
    p.wire(peer(5000, 1101, opts=b"\x1e\x04ab" + tcp_options(timestamps=(6, 1))), T0 + 0.02)


@pytest.mark.parametrize("kw", [dict(tick=0.01, slots=16), dict(tick=0.0005, slots=4, ts_hz=250),
                                dict(ts_hz=1_000_000, fin_timeout=0.25)])
def test_engine_options(tpair, kw):
    """The engine's tick, slots (round counters beyond the span), TS clock, fin_timeout."""
    p = tpair(report_interval=0.002, teardown_kwargs=kw)
    p.host(handover(b"k" * 1500, mss=500, rto_us=3000, timestamps=True, time_wait_ms=300,
                    ts_offset=0xFFFFFF00), T0)
    p.host(handover(b"", cport=CPORT + 1, rto_us=100000, max_retries=2), T0 + 0.0013)
    p.run_timers(T0 + 0.02)
    p.wire(peer(5000, 2501, ts=(1, 1)), T0 + 0.021)
    p.wire(peer(5000, 2501, ACK_ | FIN_, ts=(2, 1)), T0 + 0.5)
    p.run_timers(T0 + 100)
    assert p.nic.teardown.active == 0


def test_payload_without_room_is_refused(open_xdp, monkeypatch):
    """XDP only (the Python engine keeps payloads in memory): when atcp_td_data has no
    room the handover is refused TABLE_FULL and nothing of it is left in the maps."""
    from acceltcp.nic.xdp import bpf
    from acceltcp.wire.control import TEARDOWN_REFUSED_TABLE_FULL, TeardownRefused

    x = open_xdp(NIC_MAC, teardown_capacity=2)
    data = x.teardown._data
    real = data.update
    calls = []

    def update(key, value, flags=0):
        calls.append(key)
        if len(calls) == 3:
            raise bpf.BpfError(28, "update atcp_td_data")      # ENOSPC on the 3rd chunk
        return real(key, value, flags)
    monkeypatch.setattr(data, "update", update)
    (port, f), = x.process(handover(b"z" * 5000), HOST, T0)
    d = decode(f)
    assert port == HOST and type(d) is TeardownRefused
    assert d.reason == TEARDOWN_REFUSED_TABLE_FULL
    assert data.keys() == [] and x.teardown.active == 0 and x.teardown.entries() == {}
    assert x.teardown.counters["refused_table_full"] == 1
    monkeypatch.undo()
    out = x.process(handover(b"z" * 5000), HOST, T0)               # room again: taken
    assert [q for q, _ in out] == [WIRE] * 4 and len(data.keys()) == 3


# -- the handover in XDP (teardown_host) ---------------------------------------------------

def test_one_frame_handovers_are_taken_in_xdp(tpair):
    """A moderated handover the engine answers with one frame is atcp_host's own (no pass
    to the control side): any payload up to one MSS (checksum steps of every size, an odd
    length), no payload, TS on and off, the host's header bare or with NOP NOP TS, both
    states; the RTO retransmission reads the payload XDP stored; slots come back in the
    engine's order; what XDP does not take (several segments, a duplicate, a full
    table, per-flow reports) gets the engine's answer from the control side."""
    p = tpair(capacity=6, report_interval=0.001)
    taken = lambda: p.xdp.xdp_counters()["xdp_td_accepted"]           # noqa: E731
    up = lambda: p.xdp.xdp_counters()["xdp_to_control"]               # noqa: E731
    ts = dict(timestamps=True, ts_recent=9, ts_offset=77, ts_last=5)
    host_ts = tcp_options(timestamps=(123, 456))
    cases = [(b"x" * 1460, dict(mss=1460, **ts), b""), (b"o" * 777, {}, host_ts),
             (b"", {}, b""), (b"z" * 64, dict(state=STATE_CLOSE_WAIT, **ts), host_ts)]
    now = T0
    for i, (payload, kw, opts) in enumerate(cases):
        now += 0.001
        before = up()
        out = p.host(handover(payload, cport=1000 + i, opts=opts, **kw), now)
        assert [port for port, _ in out] == [WIRE] and up() == before
    assert taken() == 4 and p.nic.teardown.active == 4
    p.run_timers(now + 0.5)                                 # RTOs: payload from the map
    for i, (payload, _, _) in enumerate(cases):             # every flow closes
        now += 0.6
        p.wire(peer(5000, 1000 + len(payload) + 1, ACK_ | FIN_, cport=1000 + i), now)
    now += 0.1
    p.run_timers(now + 65)
    assert p.nic.teardown.active == 0
    before = up()
    p.host(handover(b"y" * 100, cport=2000), now + 70)                  # a reused slot
    p.host(handover(b"y" * 100, cport=2000, flow_id=5), now + 70)       # duplicate
    p.host(handover(b"s" * 3000, cport=2001, mss=1000), now + 70)       # three segments
    assert taken() == 5 and up() == before + 2
    for c in range(2002, 2007):                                         # a full table
        p.host(handover(b"f", cport=c), now + 71)
    assert p.nic.teardown.active == 6 and taken() == 9
    p.run_timers(now + 200)
    p.status(now + 200)
    q = tpair(capacity=2, report_interval=0)                            # per-flow reports
    q.host(handover(b"r"), T0)
    assert q.xdp.xdp_counters()["xdp_td_accepted"] == 0


# -- events the ring could not take --------------------------------------------------------

@pytest.mark.parametrize("reuse", [False, True], ids=["counter-grows", "key-reused"])
def test_lost_events_are_recovered_from_the_maps(open_xdp, reuse):
    """XDP only (the engine has no ring).  A 64-record ring the control side does not
    drain while 100 flows are handed over and closed: NEW events that did not fit undo
    their handover in XDP (the control side takes it instead), DONE and TIMER events are
    lost.  The mirror is rebuilt from the maps once xdp_td_events_lost has grown, or at
    once when a new flow on a 4-tuple whose DONE was lost is taken: every flow is then
    counted done exactly once, no slot, payload or timer is left behind, and the slots
    are reused."""
    from acceltcp.nic.xdp import teardown_ctl

    x = open_xdp(NIC_MAC, teardown_capacity=256, report_interval=0.001,
                 teardown_kwargs=dict(events=64))
    td = x.teardown
    drain = td._drain
    td._drain = lambda now: []                                   # a stalled control side
    now = T0
    for i in range(100):
        now += 0.0001
        x.process(handover(b"", cport=2000 + i, state=STATE_CLOSE_WAIT), HOST, now)
        x.process(peer(5000, 1001, cport=2000 + i), WIRE, now)    # our FIN acked: done
    lost = x.xdp_counters()["xdp_td_events_lost"]
    assert lost > 0 and td.counters["accepted"] == 100
    assert 0 < x.xdp_counters()["xdp_td_accepted"] < 100          # some undone: ring full
    td._drain = drain
    td._loss_check_at = now + 1                 # only the key reuse may trigger the resync
    if reuse:
        for i in range(100):
            x.process(handover(b"", cport=2000 + i, state=STATE_CLOSE_WAIT), HOST, now)
        assert td.counters["events_recovered"] > 0 and td.active == 100
        for i in range(100):
            x.process(peer(5000, 1001, cport=2000 + i), WIRE, now)
    x.on_timer(now + teardown_ctl.LOSS_CHECK + 1)                # the counter is looked at
    total = 200 if reuse else 100
    assert td.counters["done_total"] == total
    assert td.status() == {"teardown_active": 0, "teardown_capacity": 256,
                           "teardowns_done": total}
    assert td._totals == {} and td.wheel.next_deadline() is None
    assert td._idx.keys() == [] and td._data.keys() == []
    assert td.counters["events_recovered"] > 0


def test_a_flow_ended_by_both_sides_at_once_is_freed_once(open_xdp):
    """XDP only.  The control side's timer and a segment on another CPU can end one flow
    at the same moment; whoever deletes its key from atcp_td_index ends it, the other
    leaves the slot alone (freed twice, it would go to two flows).  Each side is shown
    losing that race: the timer's _finish after the key is gone, and the program's
    td_finish for an entry whose key another end already deleted."""
    from acceltcp.nic.xdp.teardown_ctl import _ENTRY, _KEY

    x = open_xdp(NIC_MAC, teardown_capacity=4, report_interval=0.001)
    td = x.teardown
    x.process(handover(b"", time_wait_ms=100), HOST, T0)          # FIN-WAIT-1
    x.process(peer(5000, 1001, ACK_ | FIN_), WIRE, T0 + 0.001)      # -> TIME-WAIT
    key = next(iter(td._index))
    assert td.entry(0)["state_name"] == "TIME-WAIT"
    td._idx.delete(key)                     # a segment's td_finish on another CPU, just now
    x.on_timer(T0 + 1)                      # 2MSL: the timer loses the race
    assert td._freed.pop() is None and td.counters["done_total"] == 0

    x.process(handover(b"", cport=CPORT + 1, state=STATE_CLOSE_WAIT), HOST, T0 + 2)
    slot = td.lookup(next(k for k in td._index if k != key))
    e = list(_ENTRY.unpack(td._table.lookup(slot.to_bytes(4, "little"))))
    e[_KEY] = bytes(12)                     # its key no longer in the index: deleted
    td._table.update(slot.to_bytes(4, "little"), _ENTRY.pack(*e))
    x.process(peer(5000, 1001, cport=CPORT + 1), WIRE, T0 + 2.001)  # LAST-ACK: the end
    assert td._freed.pop() is None and td.counters["done_total"] == 0
