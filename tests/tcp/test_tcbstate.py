"""TcbState round trip: a TCB exported and imported behaves exactly as the original.

Two worlds run the same random script (sends, reads, deliveries with drops and
reordering, timer runs); at a random step the second world's TCBs are replaced by
``from_state(export_state())`` copies. From then on every segment both worlds emit,
and the final states, must be identical.
"""

from hypothesis import given, settings, strategies as st

from acceltcp.tcp.config import TcpConfig
from acceltcp.tcp.connection import TcpConnection
from acceltcp.tcp.tcbstate import TcbState, export_state, import_state

import pytest

from .pair import Pair


def seg_key(s):
    return (s.flags, s.seq, s.ack, s.window, bytes(s.payload), s.tsval, s.tsecr,
            tuple(s.sack_blocks or ()))


OPS = st.one_of(
    st.tuples(st.just("send"), st.sampled_from("ab"), st.integers(1, 40000)),
    st.tuples(st.just("read"), st.sampled_from("ab"), st.integers(1, 70000)),
    st.tuples(st.just("deliver"), st.sampled_from("ab"),
              st.lists(st.sampled_from("kkkkdr"), max_size=60)),
    st.tuples(st.just("advance"), st.just(""), st.sampled_from([0.001, 0.05, 0.3, 1.5])),
    st.tuples(st.just("close"), st.sampled_from("ab"), st.just(0)),
)


def run(pair, op, log):
    kind, who, arg = op
    ep = pair.a if who == "a" else pair.b
    if kind == "send":
        if ep.conn.state in (4, 7) and not ep.conn.fin_queued:    # ESTABLISHED, CLOSE_WAIT
            ep.conn.send(bytes([arg & 0xFF]) * arg, pair.now)
    elif kind == "read":
        log.append(("read", who, ep.conn.recv(arg, pair.now)))
    elif kind == "close":
        ep.conn.shutdown(pair.now)
    elif kind == "deliver":
        segs = ep.take()
        held = []
        plan = list(arg) + ["k"] * max(0, len(segs) - len(arg))
        for seg, what in zip(segs, plan):
            if what == "k":
                pair.peer(ep).conn.on_segment(seg, pair.now)
            elif what == "r":
                held.append(seg)                  # reordered: after the others
        for seg in held:
            pair.peer(ep).conn.on_segment(seg, pair.now)
    else:
        end = pair.now + arg
        for _ in range(50):
            ds = [d for d in (pair.a.conn.next_deadline(), pair.b.conn.next_deadline())
                  if d is not None and d <= end]
            if not ds:
                break
            pair.now = max(pair.now, min(ds))
            for e in (pair.a, pair.b):
                d = e.conn.next_deadline()
                if d is not None and d <= pair.now:
                    e.conn.on_timer(pair.now)
        pair.now = end
    for e in (pair.a, pair.b):
        log.extend((e.name, seg_key(s)) for s in e.sent)


def clone_into(pair):
    """Replace both TCBs of ``pair`` by imported copies of their exported states."""
    for e in (pair.a, pair.b):
        st0 = e.conn.export_state()
        conn = TcpConnection.from_state(st0, e._output, pair.now)
        conn.on_event = e._on_event
        assert export_state(conn) == st0          # exact round trip of the value
        e.conn = conn


def norm(state):
    return state._replace(segs_in=0)


@settings(max_examples=150, deadline=None)
@given(cfg_a=st.builds(TcpConfig, cc=st.sampled_from(["cubic", "newreno"]),
                       sack=st.booleans(), timestamps=st.booleans(),
                       snd_buf=st.sampled_from([8192, 65536, 262144])),
       script=st.lists(OPS, min_size=1, max_size=40), cut=st.integers(0, 40))
def test_export_import_round_trip(cfg_a, script, cut):
    worlds = []
    for clone in (False, True):
        pair = Pair(config_a=cfg_a)
        pair.handshake()
        log = []
        for i, op in enumerate(script):
            if clone and i == min(cut, len(script)):
                clone_into(pair)
            run(pair, op, log)
        if clone and cut >= len(script):
            clone_into(pair)
        worlds.append((pair, log))
    (p1, log1), (p2, log2) = worlds
    assert log1 == log2
    for e1, e2 in ((p1.a, p2.a), (p1.b, p2.b)):
        assert norm(e1.conn.export_state()) == norm(e2.conn.export_state())


def test_state_is_plain_and_complete():
    pair = Pair()
    pair.handshake()
    pair.a.conn.send(b"x" * 100000, pair.now)
    segs = pair.a.take()
    pair.b.conn.on_segment(segs[1], pair.now)            # out of order: reassembly
    pair.a.conn.on_segment(pair.b.take()[0], pair.now)   # SACK: scoreboard
    s = pair.a.conn.export_state()
    assert isinstance(s, TcbState) and s.scoreboard is not None
    assert pair.b.conn.export_state().reasm is not None

    def plain(v):
        if isinstance(v, tuple):
            return all(plain(x) for x in v)
        return v is None or type(v) in (bool, int, float, str, bytes)
    assert plain(tuple(s))
    assert s.sndbuf == b"x" * 100000 and s.snd_una == pair.a.conn.snd_una


@pytest.mark.parametrize("field,value", [
    ("snd_una", -1), ("snd_una", 1 << 32), ("sndbuf", "text"), ("state", 1),
    ("local_ip", b"\x01"), ("version", 2), ("cc", ("bbr", ())), ("error", "boom"),
    ("rto", (1.0,)), ("reasm", ((1,), (), (), (), 0, 0, 0)),
])
def test_import_refuses_bad_values(field, value):
    pair = Pair()
    pair.handshake()
    s = pair.a.conn.export_state()._replace(**{field: value})
    with pytest.raises(ValueError):
        import_state(s, lambda *a: None)


@pytest.mark.parametrize("cut", range(1, 8))
def test_round_trip_mid_recovery(cut):
    """A fixed script through SACK recovery, reassembly and an RTO, cut at every step."""
    script = [("send", "a", 40000), ("deliver", "a", list("kdkkdkkkr")),
              ("deliver", "b", []), ("deliver", "a", list("kkdk")), ("deliver", "b", []),
              ("advance", "", 1.5), ("deliver", "a", []), ("deliver", "b", [])]
    worlds = []
    for clone in (False, True):
        pair = Pair()
        pair.handshake()
        log = []
        for i, op in enumerate(script):
            if clone and i == cut:
                clone_into(pair)
            run(pair, op, log)
        worlds.append((pair, log))
    assert worlds[0][1] == worlds[1][1]
    assert worlds[0][0].b.conn.rcv_nxt == worlds[1][0].b.conn.rcv_nxt
    assert worlds[0][0].a.conn.fast_retransmits > 0
