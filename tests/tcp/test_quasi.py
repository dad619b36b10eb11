"""The quasi-TCB (tcp.quasi, AccelTCP §5.2 lazy TCB creation) against the full TCB: for
the same first segment, the same app calls and the same next input, a quasi-TCB sends
the same segments and, once promoted, holds exactly the state of a TcpConnection that
went through ``accept_cookie`` -- every slot, the RTO estimator's and the congestion
controller's included."""

from hypothesis import event, given, settings, strategies as st

from acceltcp.tcp.config import TcpConfig
from acceltcp.tcp.connection import TEARDOWN_WAIT, TcpConnection
from acceltcp.tcp.quasi import PROMOTE_REASONS, QuasiTcb
from acceltcp.tcp.states import CLOSED, ESTABLISHED
from acceltcp.wire import control
from acceltcp.wire.tcp import ACK, FIN, PSH, RST, build_tcp_frame, parse_tcp, tcp_options

MASK = 0xFFFFFFFF
IP_L = bytes([198, 18, 0, 2])
IP_R = bytes([198, 18, 0, 1])
MAC = b"\x02\x00\x00\x00\x00\x01"
_SKIP = {"output", "on_event", "on_promote"}


def segment(seq, ack, flags=ACK, window=1000, payload=b"", tsval=None, tsecr=0,
            sack_blocks=()):
    opts = tcp_options(timestamps=(tsval, tsecr) if tsval is not None else None,
                       sack_blocks=sack_blocks)
    frame = build_tcp_frame(MAC, MAC, IP_R, IP_L, 1, 40000, 80, seq, ack, flags, window,
                            opts, payload)
    return parse_tcp(frame[34:], IP_R, IP_L)


def _value(v):
    if isinstance(v, bytearray):
        return bytes(v)
    if hasattr(v, "__slots__") and not isinstance(v, (bytes, tuple)):
        return (type(v).__name__, tuple((s, getattr(v, s, None)) for c in type(v).__mro__
                                        for s in getattr(c, "__slots__", ())))
    return v


def state_of(conn):
    """Every slot of a TCB (bytearrays as bytes, the cc and rto objects by their slots)."""
    return {name: _value(object.__getattribute__(conn, name))
            for name in TcpConnection.__slots__ if name not in _SKIP}


class Side:
    """One TCB with its output and an app callback doing `ops` at its first event."""

    def __init__(self, conn, recv_n, reply, close):
        self.conn = conn
        self.out = []
        self.events = []
        self.promotions = []
        self.recv_n, self.reply, self.close = recv_n, reply, close
        self.got = b""
        conn.output = self._output
        conn.on_event = self._event
        conn.on_promote = lambda c, why: self.promotions.append(why)

    def _output(self, conn, flags, seq, ack, window, options, payload):
        self.out.append((flags, seq, ack, window, bytes(options), bytes(payload)))

    def _event(self, conn):
        self.events.append(conn.state)
        if len(self.events) > 1:
            return
        now = self.now
        if self.recv_n:
            self.got = conn.recv(self.recv_n, now)
        if self.reply:
            conn.send(self.reply, now)
        if self.close == "offer":
            self.offer = conn.teardown_offer(now)
            if self.offer is not None and self.offer is not TEARDOWN_WAIT:
                conn.app_closed = True
        elif self.close == "close":
            conn.close(now)


cfgs = st.builds(
    TcpConfig, mss=st.sampled_from([536, 1200, 1460, 8960]),
    wscale=st.sampled_from([None, 0, 7, 14]), sack=st.booleans(),
    timestamps=st.booleans(), delayed_ack=st.sampled_from([0.0, 0.04, 0.2, 0.04, 0.2]),
    ack_every=st.sampled_from([1, 2]), cc=st.sampled_from(["cubic", "newreno"]),
    rcv_buf=st.sampled_from([4096, 65535, 262144]), snd_buf=st.sampled_from([100, 262144]),
    initial_rto=st.sampled_from([0.1, 1.0, 70.0]))
hdrs = st.builds(control.NewConnection, mss=st.sampled_from([0, 536, 1200, 1460, 8960]),
                 wscale=st.sampled_from([None, 0, 3, 14]), sack_ok=st.booleans(),
                 timestamps=st.booleans(), ts_base=st.integers(0, MASK),
                 rtt_us=st.sampled_from([0xFFFFFFFF] * 5 + [1500]))
# what happens after the first event: the input that may promote the quasi
NEXT = ("nothing", "timer", "data", "data_newer_ts", "data_old_ts", "data_ooo", "data_big",
        "fin", "rst", "dupack", "ack_new_window", "ack_of_nothing_sent", "close", "send",
        "offer_handoff", "attr", "recv")


@settings(max_examples=800, deadline=None)
@given(cfg=cfgs, hdr=hdrs, seq=st.integers(0, MASK), ack=st.integers(0, MASK),
       window=st.integers(0, 65535), n=st.sampled_from([0, 1, 64, 600, 1460, 3000]),
       psh=st.booleans(), fin=st.sampled_from([False] * 5 + [True]),
       tsval=st.one_of(st.none(), st.integers(0, MASK)),
       syn_window=st.sampled_from([500, 65535, 65535]), tso=st.sampled_from([0, 65536]),
       recv_n=st.sampled_from([0, 10, 1 << 20]), reply=st.sampled_from([b"", b"r" * 64,
                                                                         b"R" * 5000]),
       close=st.sampled_from([None, "offer", "close"]), nxt=st.sampled_from(NEXT),
       now=st.floats(1.0, 1e6))
def test_quasi_matches_the_full_tcb(cfg, hdr, seq, ack, window, n, psh, fin, tsval,
                                    syn_window, tso, recv_n, reply, close, nxt, now):
    payload = bytes(range(256)) * (n // 256) + bytes(n % 256)
    flags = ACK | (PSH if psh else 0) | (FIN if fin else 0)
    seg = segment(seq, ack, flags, window, payload, tsval=tsval,
                  tsecr=hdr.ts_base if tsval is not None else 0)
    quasi = QuasiTcb.from_cookie(cfg, IP_L, 80, IP_R, 40000, None, seg, hdr, now, syn_window)
    common = (not fin and n <= syn_window and hdr.rtt_us == 0xFFFFFFFF
              and not (n and (cfg.delayed_ack <= 0 or
                              (n >= cfg.mss - (12 if cfg.timestamps and hdr.timestamps
                                               and tsval is not None else 0)
                               and cfg.ack_every <= 1))))
    assert (quasi is not None) == common
    event("quasi" if common else "full TCB")
    if quasi is None:
        return
    event("next: " + nxt)
    full = TcpConnection(cfg, IP_L, 80, IP_R, 40000, (ack - 1) & MASK, None, now)
    sides = []
    for conn in (full, quasi):
        conn.tso_max = tso
        side = Side(conn, recv_n, reply, close)
        side.now = now
        sides.append(side)
    full.accept_cookie(seg, hdr, now, syn_window)
    quasi.start()
    f, q = sides
    assert q.events == f.events and f.events[0] == ESTABLISHED
    assert q.got == f.got and q.out == f.out
    if close == "offer":
        assert q.offer == f.offer
    # the next input, the same to both
    later = now + 0.5
    rn = (seq + n) & MASK
    for side in sides:
        c = side.conn
        if nxt == "timer":
            d = c.next_deadline()
            if d is not None:
                c.on_timer(d)
        elif nxt.startswith("data"):
            ts = tsval
            if ts is not None and nxt.endswith("ts"):
                ts = (ts + (5 if nxt == "data_newer_ts" else -5)) & MASK
            s_ = (rn + 10) & MASK if nxt == "data_ooo" else rn
            body = b"m" * 1460 if nxt == "data_big" else b"more"
            c.on_segment(segment(s_, ack, ACK | PSH, window, body, tsval=ts), later)
            if nxt == "data_big" and c.state != CLOSED:     # and one more: two full ones
                c.on_segment(segment((s_ + 1460) & MASK, ack, ACK, window, body,
                                     tsval=ts), later)
        elif nxt == "fin":
            c.on_segment(segment(rn, ack, ACK | FIN, window, tsval=tsval), later)
        elif nxt == "rst":
            c.on_segment(segment(rn, 0, RST, 0), later)
        elif nxt == "dupack":
            c.on_segment(segment(rn, ack, ACK, window, tsval=tsval), later)
        elif nxt == "ack_new_window":
            c.on_segment(segment(rn, ack, ACK, (window + 999) & 0xFFFF, tsval=tsval), later)
        elif nxt == "ack_of_nothing_sent":
            c.on_segment(segment(rn, (ack + 7) & MASK, ACK, window, tsval=tsval), later)
        elif nxt == "close" and c.state != CLOSED:
            c.close(later)
        elif nxt == "send" and c.writable:
            c.send(b"x" * 100, later)
        elif nxt == "offer_handoff" and close == "offer" and side.offer not in (None,
                                                                                TEARDOWN_WAIT):
            c.handoff(later, False)
        elif nxt == "recv":
            c.recv(1 << 20, later)
        elif nxt == "attr":
            assert c.cc.cwnd > 0
    assert q.out == f.out
    assert q.events == f.events
    assert quasi.next_deadline() == full.next_deadline()
    assert quasi.stats == full.stats
    assert all(why in PROMOTE_REASONS for why in q.promotions) and len(q.promotions) <= 1
    if nxt in ("data", "dupack", "ack_new_window") and not q.promotions:
        event("quasi took a second segment")
    if quasi.__class__ is QuasiTcb:
        assert not q.out                      # a quasi never sent anything
        quasi._promote("attr")
    assert quasi.__class__ is TcpConnection
    assert state_of(quasi) == state_of(full)


def _cookie_pair(payload=b"GET", **cfg):
    cfg = TcpConfig(**cfg)
    hdr = control.NewConnection(1460, 7, True, True, 1001)
    seg = segment(5000, 9000, ACK | PSH, 512, payload, tsval=77, tsecr=1001)
    return cfg, hdr, seg


def test_a_quasi_handed_to_the_nic_never_becomes_full():
    cfg, hdr, seg = _cookie_pair()
    q = QuasiTcb.from_cookie(cfg, IP_L, 80, IP_R, 40000, None, seg, hdr, 3.0)
    side = Side(q, 1 << 20, b"reply", "offer")
    side.now = 3.0
    q.start()
    assert side.got == b"GET" and side.offer.payload == b"reply"
    assert side.offer.seq == 9000 and side.offer.ack == 5003 and side.offer.rto == 1.0
    q.handoff(3.1, False)
    assert q.closed and q.state == CLOSED and q.next_deadline() is None
    assert q.__class__ is QuasiTcb and side.promotions == [] and side.out == []
    assert q.counter_values()[:3] == (1, 0, 3)


def test_unusual_first_segments_get_a_full_tcb():
    cfg, hdr, _ = _cookie_pair()
    for seg in (segment(1, 2, ACK | FIN, 100, b"x", tsval=1),
                segment(1, 2, ACK, 100, b"x", tsval=1, sack_blocks=((5, 9),)),
                segment(1, 2, ACK, 100, b"x" * 70000 if False else b"x" * 600, tsval=1)):
        syn_window = 100 if len(seg.payload) == 600 else 65535
        assert QuasiTcb.from_cookie(cfg, IP_L, 80, IP_R, 40000, None, seg, hdr, 1.0,
                                    syn_window) is None
    seg = segment(1, 2, ACK, 100, b"x", tsval=1)
    assert QuasiTcb.from_cookie(TcpConfig(delayed_ack=0), IP_L, 80, IP_R, 40000, None, seg,
                                hdr, 1.0) is None
    known_rtt = control.NewConnection(1460, 7, True, True, 1001, rtt_us=300)
    assert QuasiTcb.from_cookie(cfg, IP_L, 80, IP_R, 40000, None, seg, known_rtt,
                                1.0) is None


def test_reading_a_slot_it_does_not_hold_promotes():
    cfg, hdr, seg = _cookie_pair()
    q = QuasiTcb.from_cookie(cfg, IP_L, 80, IP_R, 40000, None, seg, hdr, 3.0)
    why = []
    q.on_promote = lambda c, reason: why.append(reason)
    assert q.rcv_nxt == 5003 and why == []              # held: no promotion
    try:
        q.no_such_field
    except AttributeError:
        pass
    else:
        raise AssertionError("a name that is no slot must raise")
    assert why == [] and q.__class__ is QuasiTcb
    assert q.snd_max == 9000 and why == ["attr"] and q.__class__ is TcpConnection


SEGS = st.lists(st.tuples(
    st.sampled_from(["data", "bare", "window", "ooo", "old_ts", "newer_ts", "fin", "big"]),
    st.sampled_from([1, 50, 700, 1460])), min_size=1, max_size=5)


@settings(max_examples=400, deadline=None)
@given(cfg=cfgs, hdr=hdrs, seq=st.integers(0, MASK), ack=st.integers(0, MASK),
       first=st.sampled_from([0, 0, 20, 600]), tsval=st.one_of(st.none(),
                                                              st.integers(0, MASK)),
       segs=SEGS, recv=st.booleans(), now=st.floats(1.0, 1e6))
def test_quasi_takes_the_request_in_pieces_as_the_full_tcb(cfg, hdr, seq, ack, first, tsval,
                                                            segs, recv, now):
    """A bare handshake ACK (or a first piece of the request), then further segments:
    the quasi takes those a full TCB takes without sending, and promotes on the others,
    always in the full TCB's state."""
    seg = segment(seq, ack, ACK, 1000, b"a" * first, tsval=tsval, tsecr=hdr.ts_base)
    quasi = QuasiTcb.from_cookie(cfg, IP_L, 80, IP_R, 40000, None, seg, hdr, now)
    if quasi is None:
        return
    full = TcpConnection(cfg, IP_L, 80, IP_R, 40000, (ack - 1) & MASK, None, now)
    sides = [Side(c, 1 << 20 if recv else 0, b"", None) for c in (full, quasi)]
    for side in sides:
        side.now = now
    full.accept_cookie(seg, hdr, now)
    quasi.start()
    rn = (seq + first) & MASK
    ts = tsval
    t = now
    for kind, n in segs:
        t += 0.001
        if ts is not None:
            ts = (ts + (-3 if kind == "old_ts" else 1 if kind == "newer_ts" else 0)) & MASK
        s_ = (rn + 100) & MASK if kind == "ooo" else rn
        body = b"" if kind in ("bare", "window") else b"b" * (2 * n if kind == "big" else n)
        flags = ACK | (FIN if kind == "fin" else 0)
        wnd = 2000 if kind == "window" else 1000
        for side in sides:
            side.conn.on_segment(segment(s_, ack, flags, wnd, body, tsval=ts), t)
            if recv and side.conn.rcvbuf:
                side.conn.recv(1 << 20, t)
        if kind not in ("ooo", "old_ts") and full.rcv_nxt != rn:
            rn = full.rcv_nxt if kind != "fin" else rn
        f, q = sides
        assert q.out == f.out and q.events == f.events
        assert quasi.next_deadline() == full.next_deadline()
        if quasi.__class__ is QuasiTcb:
            event("still quasi after " + kind)
            assert state_of_quasi(quasi) == {k: v for k, v in state_of(full).items()
                                             if k in state_of_quasi(quasi)}
    if quasi.__class__ is QuasiTcb:
        quasi._promote("attr")
    assert state_of(quasi) == state_of(full)


def state_of_quasi(conn):
    """The slots a quasi holds (the others are unset until it is promoted)."""
    out = {}
    for name in TcpConnection.__slots__:
        if name in _SKIP:
            continue
        try:
            out[name] = _value(object.__getattribute__(conn, name))
        except AttributeError:
            continue
    return out
