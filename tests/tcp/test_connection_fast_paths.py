"""The TCB's fast paths give exactly the result of the full §3.10.7.4 procedure.

Each scenario is built twice, step for step (the pair is deterministic). The segment
under test goes through ``on_segment`` on one copy and straight through the full
procedure (``_rcv_synchronized``) on the other; both TCBs, what they sent and the events
they raised must then be identical. Scenarios that the fast paths must decline are
checked the same way (they fall back to the full procedure).
"""

import pytest

from acceltcp.tcp.config import TcpConfig
from acceltcp.tcp.connection import TcpConnection
from acceltcp.tcp.states import (
    CLOSE_WAIT, CLOSING, ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, SYN_RECEIVED, TIME_WAIT,
)
from acceltcp.wire.tcp import ACK, FIN, PSH

from .pair import Pair, forge

_SKIP = {"output", "on_event", "owner", "config", "rto", "cc", "sndbuf", "rcvbuf"}


def snapshot(ep):
    conn = ep.conn
    snap = {k: getattr(conn, k) for k in TcpConnection.__slots__ if k not in _SKIP}
    snap["sndbuf"] = bytes(conn.sndbuf)
    snap["rcvbuf"] = bytes(conn.rcvbuf)
    snap["rto"] = (conn.rto.srtt, conn.rto.rttvar, conn.rto.rto, conn.rto.backoffs)
    snap["cc"] = {k: getattr(conn.cc, k) for c in type(conn.cc).__mro__
                  for k in getattr(c, "__slots__", ())}
    snap["sent"] = [(s.flags, s.seq, s.ack, s.window, bytes(s.payload), s.tsval, s.tsecr,
                     s.sack_blocks) for s in ep.sent]
    snap["events"] = ep.events
    return snap


# Each scenario: build the pair up to the segment under test, and return
# (receiving endpoint, segment, the state it must be in, fast path expected).

def syn_received_ack_with_data(cfg):
    p = Pair(cfg, cfg)
    p.a.conn.connect(p.now)
    p.a.conn.send(b"request", p.now)          # queued: rides on the handshake's last ACK
    p.b.conn.accept_syn(p.a.take()[0], p.now)
    p.now += 0.001
    p.deliver(p.b)                             # SYN,ACK -> a: ACK + data
    (seg,) = p.a.take()
    assert seg.payload == b"request"
    return p, p.b, seg, SYN_RECEIVED, True


def syn_received_pure_ack(cfg):
    p = Pair(cfg, cfg)
    p.a.conn.connect(p.now)
    p.b.conn.accept_syn(p.a.take()[0], p.now)
    p.now += 0.001
    p.deliver(p.b)
    (seg,) = p.a.take()
    assert not seg.payload
    return p, p.b, seg, SYN_RECEIVED, True


def syn_received_with_queued_data(cfg):
    p, ep, seg, state, _ = syn_received_ack_with_data(cfg)
    ep.conn.send(b"early reply", p.now)        # queued in SYN-RECEIVED: full procedure
    return p, ep, seg, state, False


def syn_received_ack_not_for_our_syn(cfg):
    p, ep, seg, state, _ = syn_received_pure_ack(cfg)
    bad = forge(p.a, ACK, ack=ep.conn.iss, now=p.now)
    return p, ep, bad, state, False


def _server_closes(cfg, peer_acks_first):
    p = Pair(cfg, cfg)
    p.handshake()
    p.a.conn.send(b"request", p.now)
    p.deliver(p.a)
    p.now += 0.001
    p.b.conn.send(p.b.conn.recv(), p.now)
    p.b.conn.close(p.now)                       # reply + FIN: b in FIN-WAIT-1
    p.deliver(p.b)
    p.a.conn.recv()
    if peer_acks_first:
        p.advance(0.040)                        # a's delayed ACK: b to FIN-WAIT-2
        assert p.b.conn.state == FIN_WAIT_2
    p.now += 0.001
    p.a.conn.close(p.now)                       # FIN,ACK from a
    (seg,) = p.a.take()
    return p, seg


def fin_wait_1_fin_acking_ours(cfg):
    p, seg = _server_closes(cfg, False)
    assert seg.flags & FIN and seg.ack == p.b.conn.snd_max
    return p, p.b, seg, FIN_WAIT_1, True


def fin_wait_2_fin(cfg):
    p, seg = _server_closes(cfg, True)
    return p, p.b, seg, FIN_WAIT_2, True


def fin_wait_1_fin_with_data(cfg):
    p, seg = _server_closes(cfg, False)
    data = forge(p.a, ACK | FIN | PSH, payload=b"late", now=p.now)
    return p, p.b, data, FIN_WAIT_1, False


def fin_wait_1_simultaneous_close(cfg):
    p = Pair(cfg, cfg)
    p.handshake()
    p.now += 0.001
    p.a.conn.close(p.now)
    p.b.conn.close(p.now)
    (seg,) = p.a.take()                         # a's FIN does not ack b's FIN: CLOSING
    p.b.take()
    return p, p.b, seg, FIN_WAIT_1, False


def established_fin(cfg):
    p = Pair(cfg, cfg)
    p.handshake()
    p.now += 0.001
    p.a.conn.close(p.now)
    (seg,) = p.a.take()
    return p, p.b, seg, ESTABLISHED, False      # the ESTABLISHED fast path takes no FIN


SCENARIOS = [syn_received_ack_with_data, syn_received_pure_ack, syn_received_with_queued_data,
             syn_received_ack_not_for_our_syn, fin_wait_1_fin_acking_ours, fin_wait_2_fin,
             fin_wait_1_fin_with_data, fin_wait_1_simultaneous_close, established_fin]
CONFIGS = {"default": TcpConfig(), "no-ts-no-sack": TcpConfig(timestamps=False, sack=False),
           "no-wscale": TcpConfig(wscale=None)}


@pytest.mark.parametrize("cfg", list(CONFIGS.values()), ids=list(CONFIGS))
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda f: f.__name__)
def test_fast_path_equals_full_procedure(scenario, cfg, monkeypatch):
    p1, ep1, seg1, state, fast = scenario(cfg)
    p2, ep2, seg2, _, _ = scenario(cfg)
    assert ep1.conn.state == ep2.conn.state == state
    assert snapshot(ep1) == snapshot(ep2)

    full = []
    real = TcpConnection._rcv_synchronized
    monkeypatch.setattr(TcpConnection, "_rcv_synchronized",
                        lambda self, seg, now: (full.append(seg), real(self, seg, now)))
    now = p1.now + 0.0005
    ep1.conn.on_segment(seg1, now)
    assert (not full) == fast                   # the fast path took it (or declined)
    monkeypatch.undo()

    ep2.conn.segs_in += 1                       # what on_segment counts before dispatching
    ep2.conn._rcv_synchronized(seg2, now)
    ep2.conn._flush_events()
    assert snapshot(ep1) == snapshot(ep2)


def test_fast_paths_reach_the_expected_states():
    p, ep, seg, _, _ = syn_received_ack_with_data(TcpConfig())
    ep.conn.on_segment(seg, p.now)
    assert ep.conn.state == ESTABLISHED and ep.conn.recv() == b"request"
    p, ep, seg, _, _ = fin_wait_1_fin_acking_ours(TcpConfig())
    ep.conn.on_segment(seg, p.now)
    assert ep.conn.state == TIME_WAIT and ep.conn.eof
    assert [s.flags for s in ep.take()] == [ACK]
    p, ep, seg, _, _ = fin_wait_1_simultaneous_close(TcpConfig())
    ep.conn.on_segment(seg, p.now)
    assert ep.conn.state == CLOSING
    p, ep, seg, _, _ = established_fin(TcpConfig())
    ep.conn.on_segment(seg, p.now)
    assert ep.conn.state == CLOSE_WAIT
