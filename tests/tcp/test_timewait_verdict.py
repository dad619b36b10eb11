"""One TIME-WAIT table, four implementations that must agree (issue 13).

Each row is a segment kind (flags, sequence and acknowledgment numbers relative to
RCV.NXT / SND.NXT, payload length, TSval relative to TS.Recent or none) and the verdict
expected in each TIME-WAIT state. Every (row, state) runs against

1. the pure function ``tcp.timewait.verdict`` (action, 2MSL restart, TS.Recent update);
2. the host's ``TimeWait`` record (``on_segment``: ACK sent or not, KEEP / REMOVE /
   REOPEN, ``expires`` moved, ``ts_recent``);
3. the NIC's ``TeardownEngine``, driven into TIME-WAIT through a handover and the
   peer's FIN as tests/nic/test_teardown.py does (ACK frame on WIRE or not, the entry
   kept / ended by RST / ended and the SYN passed to HOST, the 2MSL timer restarted,
   the entry's ts_recent),
4. the TCB itself in TIME-WAIT (``TcpConnection.on_segment`` before the host hands it
   to a record: ACK sent or not, closed without error, ``t_tw`` moved, ``ts_recent``),

and asserts the same observable outcome on the TCB, the host record and the NIC.
"""

import pytest

from acceltcp.nic.teardown import HOST, LISTENER, WIRE, TeardownEngine
from acceltcp.tcp import timewait
from acceltcp.tcp.config import TcpConfig
from acceltcp.tcp.states import TIME_WAIT
from acceltcp.tcp.timewait import (
    ACTION, CHALLENGE_ACK, CHALLENGE_ACKS_PER_SECOND, KEEP, REMOVE, REOPEN, RESTART, SEND_ACK, UPDATE_TS, TimeWait,
)
from acceltcp.wire import control
from acceltcp.wire.control import (
    TEARDOWN_END_CLOSED, TEARDOWN_END_RESET, Teardown, TeardownAccepted,
)
from acceltcp.wire.ipv4 import parse_ipv4
from acceltcp.wire.tcp import ACK, FIN, PSH, RST, SYN, build_tcp_frame, parse_tcp, tcp_options

from .pair import Pair
from ..nic.test_teardown import (
    A_IP, B_IP, CPORT, NIC_MAC, PEER_MAC, SPORT, check_wire, deliver, peer_frame, report,
)

MASK = 0xFFFFFFFF
T0 = 100.0
TW = 60.0                 # 2MSL of every record here
LATER = 10.0              # the segment arrives this long into TIME-WAIT


class St:
    """A TIME-WAIT state: RCV.NXT, SND.NXT (after our FIN), window field and shift,
    timestamps on/off and TS.Recent."""

    def __init__(self, name, rcv_nxt, snd_nxt, window, wscale, ts, ts_recent):
        self.name, self.rcv_nxt, self.snd_nxt = name, rcv_nxt, snd_nxt
        self.window, self.wscale, self.ts, self.ts_recent = window, wscale, ts, ts_recent

    def __repr__(self):
        return self.name


# window field 512 with shift 7: RCV.WND = 65,536 (the RST-window bug of issue 13)
STATES = {
    "ts": St("ts", 1_000_000, 5000, 512, 7, True, 10_000),
    "nots": St("nots", 1_000_000, 5000, 512, 7, False, 0),
    # sequence numbers and TSvals 100 / 4 below 2**32: the rows' offsets cross the wrap
    "wrap": St("wrap", (1 << 32) - 100, (1 << 32) - 16, 512, 7, True, (1 << 32) - 4),
}
ALL = tuple(STATES)

C, R, K, A, X = CHALLENGE_ACK, REMOVE, KEEP, SEND_ACK, REOPEN

# (name, flags, seq - RCV.NXT, ack - SND.NXT, payload bytes, TSval - TS.Recent or None,
#  expected: (action, restart, TS.Recent updated) for all states, or {state: ...})
ROWS = [
    # RST: RFC 5961 §3.2 against RCV.WND = 512 << 7 = 65,536; no PAWS on RST
    ("rst exact", RST, 0, 0, 0, None, (R, 0, 0)),
    ("rst-ack exact", RST | ACK, 0, 0, 0, None, (R, 0, 0)),
    ("rst exact old tsval", RST, 0, 0, 0, -100, (R, 0, 0)),
    ("rst +4000 in scaled window", RST, 4000, 0, 0, None, (C, 0, 0)),
    ("rst +65535 last in window", RST, 65535, 0, 0, None, (C, 0, 0)),
    ("rst +65536 just outside", RST, 65536, 0, 0, None, (K, 0, 0)),
    ("rst -1 left of window", RST, -1, 0, 0, None, (K, 0, 0)),
    ("rst +2**30", RST, 1 << 30, 0, 0, None, (K, 0, 0)),
    # SYN: RFC 6191 reopen, else an RFC 5961 §4.2 challenge
    ("syn newer seq no ts", SYN, 50000, 0, 0, None, (X, 0, 0)),
    ("syn older seq no ts", SYN, -5, 0, 0, None, (C, 0, 0)),
    ("syn at rcv_nxt no ts", SYN, 0, 0, 0, None, (C, 0, 0)),
    ("syn newer ts older seq", SYN, -50000, 0, 0, 10,
     {"ts": (X, 0, 0), "wrap": (X, 0, 0), "nots": (C, 0, 0)}),
    ("syn older ts newer seq", SYN, 50000, 0, 0, -10,
     {"ts": (C, 0, 0), "wrap": (C, 0, 0), "nots": (X, 0, 0)}),
    ("syn equal ts newer seq", SYN, 1, 0, 0, 0, (X, 0, 0)),
    ("syn equal ts older seq", SYN, -1, 0, 0, 0, (C, 0, 0)),
    ("syn-ack newer", SYN | ACK, 50000, 0, 0, 10, (C, 0, 0)),
    ("syn-ack at rcv_nxt", SYN | ACK, 0, 0, 0, 0, (C, 0, 0)),
    # the peer's FIN again: ACK, restart 2MSL
    ("fin again", FIN | ACK, -1, 0, 0, 0, (A, 1, 0)),
    ("fin again no ts", FIN | ACK, -1, 0, 0, None, (A, 1, 0)),
    ("fin again with data", FIN | PSH | ACK, -11, 0, 10, 0, (A, 1, 0)),
    ("fin again old tsval", FIN | ACK, -1, 0, 0, -10,
     {"ts": (A, 0, 0), "wrap": (A, 0, 0), "nots": (A, 1, 0)}),
    ("fin ahead", FIN | ACK, 100, 0, 0, 0, (A, 0, 0)),
    ("fin at rcv_nxt", FIN | ACK, 0, 0, 0, 0, (A, 0, 0)),
    ("fin older", FIN | ACK, -50, 0, 0, 0, (A, 0, 0)),
    # bare segments and data
    ("ack at rcv_nxt", ACK, 0, 0, 0, 5, (K, 0, 1)),
    ("ack at rcv_nxt no ts", ACK, 0, 0, 0, None, (K, 0, 0)),
    ("ack acks unsent", ACK, 0, 10, 0, 0, (A, 0, 1)),
    ("ack old ack", ACK, 0, -10, 0, 0, (K, 0, 1)),
    ("ack old tsval (paws)", ACK, 0, 0, 0, -1,
     {"ts": (A, 0, 0), "wrap": (A, 0, 0), "nots": (K, 0, 0)}),
    ("ack in window not at rcv_nxt", ACK, 100, 0, 0, 0, (A, 0, 0)),
    ("ack before rcv_nxt", ACK, -1, 0, 0, 0, (A, 0, 0)),
    ("data at rcv_nxt", ACK | PSH, 0, 0, 20, 0, (A, 0, 0)),
    ("data in window", ACK | PSH, 100, 0, 20, 0, (A, 0, 0)),
    ("no ack bit", 0, 0, 0, 0, None, (K, 0, 0)),
]

CASES = [pytest.param(row, STATES[s], id="%s-%s" % (row[0].replace(" ", "_"), s))
         for row in ROWS for s in ALL]


def expected(row, st):
    exp = row[6] if isinstance(row[6], tuple) else row[6][st.name]
    action, restart, upd = exp
    return action, bool(restart), bool(upd) and st.ts


def segment(row, st):
    """The row's segment as the peer's frame and parsed (the same bytes for all)."""
    name, flags, dseq, dack, plen, dts, _ = row
    ts = None if dts is None else ((st.ts_recent + dts) & MASK, 0)
    frame = peer_frame(flags, st.rcv_nxt + dseq, st.snd_nxt + dack, bytes(plen), ts=ts)
    ip = parse_ipv4(frame[14:])
    return frame, parse_tcp(frame[34:14 + ip.total_length], ip.src, ip.dst)


def outcome(action):
    return "ack" if action in (SEND_ACK, CHALLENGE_ACK) else \
        {KEEP: "keep", REMOVE: "remove", REOPEN: "reopen"}[action]


def run_pure(row, st):
    frame, seg = segment(row, st)
    v = timewait.verdict(seg.flags, seg.seq, seg.ack, len(seg.payload), seg.tsval,
                         st.rcv_nxt, st.snd_nxt, st.window, st.wscale, st.ts, st.ts_recent)
    return v & ACTION, bool(v & RESTART), bool(v & UPDATE_TS)


def host_record(st):
    """A host TIME-WAIT record at state `st` and the list its ACKs go to."""
    sent = []
    tw = TimeWait(None, b"k", lambda rec, *f: sent.append(f), st.snd_nxt, st.rcv_nxt,
                  st.window, st.wscale, st.ts, 0, 1000, st.ts_recent, T0, T0 + TW, TW)
    return tw, sent


def run_host(row, st):
    """-> (outcome, 2MSL restarted, TS.Recent after)."""
    frame, seg = segment(row, st)
    tw, sent = host_record(st)
    r = tw.on_segment(seg, T0 + LATER)
    restarted = tw.expires != T0 + TW
    if r == KEEP and sent:
        (flags, seq, ack, window, opts, payload), = sent
        assert (flags, seq, ack, window, payload) == (ACK, st.snd_nxt, st.rcv_nxt,
                                                      st.window, b"")
        return "ack", restarted, tw.ts_recent
    assert not sent
    return {KEEP: "keep", REMOVE: "remove", REOPEN: "reopen"}[r], restarted, tw.ts_recent


def tcb_time_wait(st):
    """A TCB (receive buffer: the window of `st`) brought to TIME-WAIT by a close
    (tests/tcp/pair.py), its sequence space and timestamps then set to `st`, its rate
    limits at rest; and the list its segments go to."""
    p = Pair(config_a=TcpConfig(rcv_buf=st.window << st.wscale))
    p.handshake()
    p.a.conn.close(p.now)
    p.pump()
    p.b.conn.close(p.now)
    p.pump()
    conn = p.a.conn
    assert conn.state == TIME_WAIT
    conn.rcv_nxt = st.rcv_nxt
    conn.rcv_adv = (st.rcv_nxt + (st.window << st.wscale)) & MASK
    conn.rcv_wscale = st.wscale
    conn.snd_una = conn.snd_nxt = conn.snd_max = st.snd_nxt
    conn.ts_ok, conn.ts_recent, conn.ts_recent_time = st.ts, st.ts_recent, T0
    conn.t_tw = T0 + TW
    conn.challenge_window = conn.oow_ack_time = T0 - TW
    conn.challenge_count = 0
    sent = []
    conn.output = lambda c, *f: sent.append(f)
    return conn, sent


def run_tcb(row, st):
    """-> (outcome, 2MSL restarted, TS.Recent after) of the TCB in TIME-WAIT."""
    conn, sent = tcb_time_wait(st)
    frame, seg = segment(row, st)
    conn.on_segment(seg, T0 + LATER)
    restarted = conn.t_tw != T0 + TW
    if conn.closed:
        assert not sent and conn.error is None
        return ("reopen" if seg.flags & SYN else "remove"), restarted, conn.ts_recent
    if sent:
        (flags, seq, ack, window, opts, payload), = sent
        assert (flags, seq, ack, window, payload) == (ACK, st.snd_nxt, st.rcv_nxt,
                                                      st.window, b"")
        return "ack", restarted, conn.ts_recent
    return "keep", restarted, conn.ts_recent


def nic_time_wait(st):
    """A TeardownEngine with one flow in TIME-WAIT at state `st`: the host hands over an
    ESTABLISHED connection with nothing unsent (SND.UNA = SND.NXT - 1, our FIN next,
    RCV.NXT one before the peer's FIN); the peer ACKs our FIN and sends its own."""
    eng = TeardownEngine(NIC_MAC, 4)
    una = (st.snd_nxt - 1) & MASK
    before_fin = (st.rcv_nxt - 1) & MASK
    opts = tcp_options(timestamps=(10, st.ts_recent)) if st.ts else b""
    f = build_tcp_frame(PEER_MAC, NIC_MAC, B_IP, A_IP, 1, SPORT, CPORT, una, before_fin,
                        ACK, st.window, opts, b"")
    msg = Teardown(mss=1448, snd_wnd=65535, rcv_wscale=st.wscale, timestamps=st.ts,
                   ts_recent=st.ts_recent, ts_last=10, time_wait_ms=int(TW * 1000))
    hdr, inner = control.unwrap(control.wrap(f, msg))
    out = eng.accept(hdr, inner, NIC_MAC, T0)
    assert isinstance(report(out[0][1]), TeardownAccepted)
    (fin,) = [check_wire(x) for port, x in out if port == WIRE]
    assert fin.flags & FIN and fin.seq == una
    ts = (st.ts_recent, fin.tsval) if st.ts else None
    out = deliver(eng, peer_frame(ACK | FIN, before_fin, st.snd_nxt, ts=ts), T0)
    (ack,) = [check_wire(x) for _, x in out]
    assert ack.ack == st.rcv_nxt
    fid = eng.lookup(frame_key())
    e = eng.entry(fid)
    assert (e["state"], e["rcv_nxt"], e["snd_max"], e["window"], e["ts_recent"]) == \
        (TIME_WAIT, st.rcv_nxt, st.snd_nxt, st.window, st.ts_recent)
    return eng, fid


def frame_key():
    return peer_frame(ACK, 0, 0)[26:38]


def run_nic(row, st):
    """-> (outcome, 2MSL restarted, TS.Recent after) and the engine's counters."""
    eng, fid = nic_time_wait(st)
    frame, seg = segment(row, st)
    out = deliver(eng, frame, T0 + LATER)
    ports = [port for port, _ in out]
    if ports == [WIRE]:
        a = check_wire(out[0][1])
        assert (a.flags, a.seq, a.ack, a.window, a.payload) == \
            (ACK, st.snd_nxt, st.rcv_nxt, st.window, b"")
        if st.ts:
            assert a.tsecr == eng.entry(fid)["ts_recent"]
        result = "ack"
    elif ports == [HOST]:
        assert report(out[0][1]).reason == TEARDOWN_END_RESET and eng.active == 0
        return ("remove", False, None), eng.counters
    elif ports == [HOST, LISTENER]:
        assert report(out[0][1]).reason == TEARDOWN_END_CLOSED and out[1][1] is frame
        assert eng.active == 0
        return ("reopen", False, None), eng.counters
    else:
        assert out == []
        result = "keep"
    ts_recent = eng.entry(fid)["ts_recent"]
    eng.on_timer(T0 + TW + 0.5)            # the first 2MSL is over: gone unless restarted
    restarted = eng.active == 1
    if restarted:
        eng.on_timer(T0 + LATER + TW + 0.5)
        assert eng.active == 0
    return (result, restarted, ts_recent), eng.counters


@pytest.mark.parametrize("row,st", CASES)
def test_pure_verdict(row, st):
    assert run_pure(row, st) == expected(row, st)


@pytest.mark.parametrize("row,st", CASES)
def test_tcb_host_record_and_nic_engine_agree(row, st):
    action, restart, upd = expected(row, st)
    tsval = segment(row, st)[1].tsval
    ts_after = tsval if upd else st.ts_recent
    want = (outcome(action), restart, ts_after)
    host = run_host(row, st)
    nic, counters = run_nic(row, st)
    tcb = run_tcb(row, st)
    if action in (REMOVE, REOPEN):
        assert tcb[0] == host[0] == nic[0] == want[0]
        return
    assert tcb == want
    assert host == want
    assert nic == want
    assert counters["challenge_acks"] == (1 if action == CHALLENGE_ACK else 0)
    assert counters["time_wait_restarts"] == (1 if restart else 0)


def test_table_covers_every_action():
    seen = {expected(row, st)[0] for row in ROWS for st in STATES.values()}
    assert seen == {KEEP, REMOVE, REOPEN, SEND_ACK, CHALLENGE_ACK}


def test_cookie_ack_reopen_uses_the_same_rule():
    """The host's NIC-cookie path (``TimeWait.reopens(seg, cookie_ack=True)``): the ACK
    completing a handshake on the NIC stands for a SYN at SEG.SEQ - 1."""
    st = STATES["nots"]
    tw = TimeWait(None, b"k", None, st.snd_nxt, st.rcv_nxt, st.window, st.wscale, False, 0,
                  1000, 0, T0, T0 + TW, TW)
    for dseq, new in ((2, True), (1, False), (-100, False)):
        frame, seg = segment(("ack", ACK, dseq, 0, 0, None, None), st)
        assert tw.reopens(seg, cookie_ack=True) is new
        assert timewait.syn_reopens((seg.seq - 1) & MASK, None, st.rcv_nxt, False, 0) is new


CHALLENGED = [r for r in ROWS if r[0] in ("rst +4000 in scaled window", "syn at rcv_nxt no ts",
                                          "syn-ack newer")]


class NicOwner:
    """The NIC engine's flow in TIME-WAIT, with the record's ``on_segment`` and a list
    of the ACKs it sent."""

    def __init__(self, st):
        self.eng, self.fid = nic_time_wait(st)
        self.sent = []

    def on_segment(self, frame, now):
        for port, f in deliver(self.eng, frame, now):
            assert port == WIRE
            a = check_wire(f)
            self.sent.append((a.flags, a.seq, a.ack))


@pytest.mark.parametrize("row", CHALLENGED, ids=lambda r: r[0].replace(" ", "_"))
@pytest.mark.parametrize("owner", ["tcb", "host", "nic"])
def test_challenge_acks_are_rate_limited(owner, row):
    """RFC 5961 §7: a flood of segments that draw challenge ACKs gets
    CHALLENGE_ACKS_PER_SECOND of them a second, from the TCB in TIME-WAIT, the host's
    record and the NIC's teardown engine alike; the next second has a fresh budget.
    (The NIC counts whole seconds of ``now``: T0 + LATER = 110.0 starts one.)"""
    st = STATES["ts"]
    if owner == "nic":
        rec = NicOwner(st)
        sent = rec.sent
    else:
        rec, sent = tcb_time_wait(st) if owner == "tcb" else host_record(st)
    frame, seg = segment(row, st)
    msg = frame if owner == "nic" else seg
    t = T0 + LATER
    for k in range(3 * CHALLENGE_ACKS_PER_SECOND):
        rec.on_segment(msg, t + k * 0.01)           # 30 segments in 0.3 s
    assert len(sent) == CHALLENGE_ACKS_PER_SECOND
    rec.on_segment(msg, t + 1.0)
    assert len(sent) == CHALLENGE_ACKS_PER_SECOND + 1
    assert all(f[0] == ACK for f in sent)
    if owner == "nic":
        c = rec.eng.counters
        assert c["challenge_acks"] == CHALLENGE_ACKS_PER_SECOND + 1
        assert c["drop_teardown_challenge_limited"] == 2 * CHALLENGE_ACKS_PER_SECOND
    # the other answers are not limited: the peer's FIN again is ACKed every time
    fin_frame, fin = segment(("fin again", FIN | ACK, -1, 0, 0, 0, None), st)
    rec.on_segment(fin_frame if owner == "nic" else fin, t + 1.0)
    assert len(sent) == CHALLENGE_ACKS_PER_SECOND + 2


def test_record_inherits_the_tcb_challenge_budget():
    """The hand-off carries the budget: a flood that used it up on the TCB gets no
    further challenge ACK from the record within the same second."""
    st = STATES["ts"]
    conn, sent = tcb_time_wait(st)
    frame, seg = segment(CHALLENGED[0], st)
    t = T0 + LATER
    for k in range(CHALLENGE_ACKS_PER_SECOND):
        conn.on_segment(seg, t + k * 0.01)
    assert len(sent) == CHALLENGE_ACKS_PER_SECOND
    tw = conn.handoff_time_wait(t + 0.2)
    tw.output = lambda rec, *f: sent.append(f)
    tw.on_segment(seg, t + 0.3)
    assert len(sent) == CHALLENGE_ACKS_PER_SECOND
    tw.on_segment(seg, t + 1.0)
    assert len(sent) == CHALLENGE_ACKS_PER_SECOND + 1
