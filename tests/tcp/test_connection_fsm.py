"""Every transition of ``tcp.fsm.TRANSITIONS`` driven through a real TCB.

Each scenario brings a connection into the transition's source state by ordinary means
(user calls, real segments from a peer TCB, timers), applies the event the way it
happens on the wire, and checks the destination. A transition without a scenario fails
``test_every_transition_has_a_scenario``, so the table and the tests cannot drift apart.
"""

import pytest

from acceltcp.tcp import fsm
from acceltcp.tcp.config import TcpConfig
from acceltcp.tcp.connection import TIME_WAIT_TICK
from acceltcp.tcp.states import (
    CLOSED, CLOSE_WAIT, CLOSING, ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, LAST_ACK, LISTEN,
    STATE_NAMES, SYN_RECEIVED, SYN_SENT, TIME_WAIT,
)
from acceltcp.wire.tcp import ACK, FIN, RST, SYN

from .pair import Pair, forge


# ----------------------------------------------------------------- reaching a state
def established():
    p = Pair()
    p.handshake()
    assert p.a.conn.state == ESTABLISHED and p.b.conn.state == ESTABLISHED
    return p


def a_fin_wait_1():
    p = established()
    p.a.conn.close(p.now)                      # FIN sent, still in a.sent
    assert p.a.conn.state == FIN_WAIT_1
    return p


def a_fin_wait_2():
    p = a_fin_wait_1()
    p.deliver(p.a)                             # FIN reaches b, b delays its ACK
    p.advance(0.5)                             # delayed ACK fires
    assert p.a.conn.state == FIN_WAIT_2 and p.b.conn.state == CLOSE_WAIT
    return p


def b_close_wait():
    return a_fin_wait_2()


def b_last_ack():
    p = a_fin_wait_2()
    p.b.conn.close(p.now)
    assert p.b.conn.state == LAST_ACK
    return p


def both_closing():
    p = established()
    p.a.conn.close(p.now)
    p.b.conn.close(p.now)
    fin_a, fin_b = p.a.take(), p.b.take()
    p.deliver(p.a, fin_a)                      # FINs cross
    p.deliver(p.b, fin_b)
    assert p.a.conn.state == CLOSING and p.b.conn.state == CLOSING
    return p


def a_time_wait():
    p = b_last_ack()
    p.pump()
    assert p.a.conn.state == TIME_WAIT and p.b.conn.state == CLOSED
    return p


def simultaneous_open():
    """Both send SYN; each SYN crosses the other (RFC 9293 Figure 7)."""
    p = Pair()
    p.a.conn.connect(p.now)
    p.b.conn.connect(p.now)
    return p


def rst_from_peer(p, victim):
    """An acceptable RST (exactly at RCV.NXT) from the victim's peer."""
    peer = p.peer(victim)
    victim.conn.on_segment(forge(peer, RST, seq=victim.conn.rcv_nxt, ack=0, ts=False), p.now)
    return victim.conn


# ------------------------------------------------------------------- the scenarios
def closed_listen():
    p = Pair()
    p.b.conn.listen()
    return p.b.conn, LISTEN


def closed_connect():
    p = Pair()
    p.a.conn.connect(p.now)
    assert p.a.sent[0].flags == SYN
    return p.a.conn, SYN_SENT


def listen_syn():
    p = Pair()
    p.b.conn.listen()
    p.a.conn.connect(p.now)
    p.deliver(p.a)                             # plain on_segment in LISTEN
    assert p.b.sent[0].flags == SYN | ACK
    return p.b.conn, SYN_RECEIVED


def listen_connect():
    p = Pair()
    p.b.conn.listen()
    p.b.conn.connect(p.now)
    return p.b.conn, SYN_SENT


def listen_close():
    p = Pair()
    p.b.conn.listen()
    p.b.conn.close(p.now)
    return p.b.conn, CLOSED


def listen_abort():
    p = Pair()
    p.b.conn.listen()
    p.b.conn.abort(p.now)
    return p.b.conn, CLOSED


def syn_sent_syn_ack():
    p = Pair()
    p.a.conn.connect(p.now)
    p.b.conn.accept_syn(p.a.take()[0], p.now)
    p.deliver(p.b)
    return p.a.conn, ESTABLISHED


def syn_sent_syn():
    p = simultaneous_open()
    p.deliver(p.b)                             # b's SYN reaches a
    assert p.a.sent[-1].flags == SYN | ACK
    return p.a.conn, SYN_RECEIVED


def syn_sent_close():
    p = Pair()
    p.a.conn.connect(p.now)
    p.a.conn.close(p.now)
    return p.a.conn, CLOSED


def syn_received_ack():
    p = Pair()
    p.a.conn.connect(p.now)
    p.b.conn.accept_syn(p.a.take()[0], p.now)
    p.deliver(p.b)                             # SYN,ACK to a; a answers with ACK
    assert p.b.conn.state == SYN_RECEIVED
    p.deliver(p.a)
    return p.b.conn, ESTABLISHED


def syn_received_ack_simultaneous():
    """Simultaneous open completes: the crossing SYN,ACKs establish both sides."""
    p = simultaneous_open()
    syn_a, syn_b = p.a.take(), p.b.take()
    p.deliver(p.a, syn_a)
    p.deliver(p.b, syn_b)
    assert p.a.conn.state == SYN_RECEIVED and p.b.conn.state == SYN_RECEIVED
    p.pump()
    assert p.a.conn.state == ESTABLISHED
    return p.b.conn, ESTABLISHED


def syn_received_close():
    p = Pair()
    p.a.conn.connect(p.now)
    p.b.conn.accept_syn(p.a.take()[0], p.now)
    p.b.conn.close(p.now)
    assert p.b.conn.state == FIN_WAIT_1
    # The FIN follows once our SYN is acknowledged; the close then completes.
    p.pump()
    p.advance(0.5)
    p.a.conn.close(p.now)
    p.pump()
    assert p.b.conn.state == TIME_WAIT and p.a.conn.state == CLOSED
    return p.b.conn, TIME_WAIT


def established_close():
    p = established()
    p.a.conn.close(p.now)
    assert p.a.sent[-1].flags & FIN
    return p.a.conn, FIN_WAIT_1


def established_fin():
    p = a_fin_wait_1()
    p.deliver(p.a)
    return p.b.conn, CLOSE_WAIT


def fin_wait_1_ack_of_fin():
    p = a_fin_wait_1()
    p.deliver(p.a)
    p.advance(0.5)
    return p.a.conn, FIN_WAIT_2


def fin_wait_1_fin():
    p = both_closing()
    return p.a.conn, CLOSING


def fin_wait_1_fin_with_ack_of_fin():
    """FIN,ACK that also acknowledges our FIN: FIN-WAIT-1 → (FIN-WAIT-2) → TIME-WAIT."""
    p = a_fin_wait_1()
    p.deliver(p.a)
    p.b.conn.close(p.now)                      # b's FIN carries the ACK of a's FIN
    fin_ack = p.b.take()
    assert len(fin_ack) == 1 and fin_ack[0].flags & (FIN | ACK) == FIN | ACK
    p.deliver(p.b, fin_ack)
    return p.a.conn, TIME_WAIT


def fin_wait_2_fin():
    p = b_last_ack()
    p.deliver(p.b)
    return p.a.conn, TIME_WAIT


def closing_ack_of_fin():
    p = both_closing()
    p.pump()                                   # the ACKs of the FINs cross
    return p.a.conn, TIME_WAIT


def close_wait_close():
    return b_last_ack().b.conn, LAST_ACK


def last_ack_ack_of_fin():
    p = b_last_ack()
    p.pump()
    return p.b.conn, CLOSED


def time_wait_fin():
    """A retransmitted FIN in TIME-WAIT is ACKed again and restarts 2MSL."""
    p = b_last_ack()
    fin = p.b.take()
    p.deliver(p.b, fin)
    assert p.a.conn.state == TIME_WAIT
    first = p.a.conn.t_tw
    p.a.take()
    p.now += 10.0
    p.deliver(p.b, fin)                        # the same FIN again
    assert p.a.take()[0].flags == ACK
    assert p.a.conn.t_tw == pytest.approx(first + 10.0, abs=2 * TIME_WAIT_TICK)
    return p.a.conn, TIME_WAIT


def time_wait_2msl():
    p = a_time_wait()
    p.advance(p.a.conn.config.time_wait + 1)
    assert p.a.conn.closed
    return p.a.conn, CLOSED


def time_wait_handoff():
    """The host hands TIME-WAIT to a compact record; the TCB itself is done."""
    p = a_time_wait()
    conn = p.a.conn
    expires = conn.t_tw
    tw = conn.handoff_time_wait(p.now)
    assert conn.closed and conn.error is None
    assert (tw.rcv_nxt, tw.snd_nxt, tw.expires) == (conn.rcv_nxt, conn.snd_max, expires)
    return conn, CLOSED


def time_wait_new_syn():
    """A new incarnation's SYN (RFC 6191: sequence number above RCV.NXT, TSval above
    TS.Recent) ends TIME-WAIT without an answer; the owner's listener takes the SYN."""
    p = a_time_wait()
    conn = p.a.conn
    p.a.take()
    syn = forge(p.b, SYN, conn.rcv_nxt + 100000, 0, now=p.now + 10.0)
    assert syn.tsval is not None and syn.tsval != conn.ts_recent
    conn.on_segment(syn, p.now)
    assert conn.closed and conn.error is None and not p.a.take()
    return conn, CLOSED


def _nic_handoff(p, ep, state):
    """The host offers the rest of the connection to the NIC and hands it over: the
    offer carries every unacknowledged byte and nothing leaves the TCB afterwards."""
    conn = ep.conn
    conn.send(b"response", p.now)
    ep.take()
    offer = conn.teardown_offer(p.now)
    assert offer is not None
    assert (offer.state, offer.seq, offer.ack, offer.payload) == (
        state, conn.snd_una, conn.rcv_nxt, b"response")
    conn.handoff(p.now)
    assert conn.closed and conn.error is None and ep.take() == []
    return conn, CLOSED


def established_handoff():
    p = established()
    return _nic_handoff(p, p.b, ESTABLISHED)


def close_wait_handoff():
    p = b_close_wait()
    return _nic_handoff(p, p.b, CLOSE_WAIT)


def make_rst(reach, who, expected_error):
    def scenario():
        p = reach()
        ep = getattr(p, who)
        conn = rst_from_peer(p, ep)
        assert conn.error == expected_error
        assert conn.closed
        return conn, CLOSED
    return scenario


def syn_sent_rst():
    """RST,ACK answering our SYN: connection refused (RFC 9293 §3.10.7.3)."""
    p = Pair()
    p.a.conn.connect(p.now)
    syn = p.a.take()[0]
    rst = forge(p.b, RST | ACK, seq=0, ack=syn.seq + 1, ts=False)
    p.a.conn.on_segment(rst, p.now)
    assert p.a.conn.error == "refused"
    return p.a.conn, CLOSED


def syn_received_rst():
    p = Pair()
    p.a.conn.connect(p.now)
    p.b.conn.accept_syn(p.a.take()[0], p.now)
    p.b.take()
    p.b.conn.on_segment(forge(p.a, RST, seq=p.b.conn.rcv_nxt, ack=0, ts=False), p.now)
    assert p.b.conn.error is None             # a passive child just goes away
    return p.b.conn, CLOSED


def make_abort(reach, who, sends_rst):
    def scenario():
        p = reach()
        ep = getattr(p, who)
        ep.take()
        ep.conn.abort(p.now)
        sent = ep.take()
        assert bool(sent and sent[-1].flags & RST) == sends_rst
        return ep.conn, CLOSED
    return scenario


def make_timeout(reach_fn, who):
    """Retransmissions exhausted: the peer never answers."""
    def scenario():
        cfg = TcpConfig(max_retries=2, syn_retries=2, min_rto=0.2, initial_rto=0.2)
        p = Pair(cfg, cfg)
        reach_fn(p)
        ep = getattr(p, who)
        for _ in range(20):
            d = ep.conn.next_deadline()
            if d is None:
                break
            p.now = d
            ep.conn.on_timer(p.now)
            ep.take()                           # the peer hears nothing
        assert ep.conn.error == "timeout"
        return ep.conn, CLOSED
    return scenario


def _to_syn_sent(p):
    p.a.conn.connect(p.now)


def _to_syn_received(p):
    p.a.conn.connect(p.now)
    p.b.conn.accept_syn(p.a.take()[0], p.now)


def _to_established_with_data(p):
    p.handshake()
    p.a.conn.send(b"x" * 100, p.now)


def _to_fin_wait_1(p):
    p.handshake()
    p.a.conn.close(p.now)


def _to_fin_wait_2(p):
    # FIN-WAIT-2 has nothing to retransmit; data the peer never ACKs keeps it busy.
    p.handshake()
    p.a.conn.close(p.now)
    p.deliver(p.a)
    p.advance(0.5)
    p.b.conn.send(b"y" * 10, p.now)


def _to_close_wait(p):
    _to_fin_wait_2(p)


def _to_closing(p):
    p.handshake()
    p.a.conn.close(p.now)
    p.b.conn.close(p.now)
    fin_a, fin_b = p.a.take(), p.b.take()
    p.deliver(p.a, fin_a)
    p.deliver(p.b, fin_b)
    p.b.take()                                 # b's ACK of a's FIN is lost


def _to_last_ack(p):
    p.handshake()
    p.a.conn.close(p.now)
    p.deliver(p.a)
    p.advance(0.5)
    p.b.conn.close(p.now)


SCENARIOS = {
    (CLOSED, fsm.APP_LISTEN): [closed_listen],
    (CLOSED, fsm.APP_CONNECT): [closed_connect],
    (LISTEN, fsm.RCV_SYN): [listen_syn],
    (LISTEN, fsm.APP_CONNECT): [listen_connect],
    (LISTEN, fsm.APP_CLOSE): [listen_close],
    (LISTEN, fsm.APP_ABORT): [listen_abort],
    (SYN_SENT, fsm.RCV_SYN_ACK): [syn_sent_syn_ack],
    (SYN_SENT, fsm.RCV_SYN): [syn_sent_syn],
    (SYN_SENT, fsm.APP_CLOSE): [syn_sent_close],
    (SYN_RECEIVED, fsm.RCV_ACK_OF_SYN): [syn_received_ack, syn_received_ack_simultaneous],
    (SYN_RECEIVED, fsm.APP_CLOSE): [syn_received_close],
    (ESTABLISHED, fsm.APP_CLOSE): [established_close],
    (FIN_WAIT_1, fsm.RCV_ACK_OF_FIN): [fin_wait_1_ack_of_fin],
    (FIN_WAIT_1, fsm.RCV_FIN): [fin_wait_1_fin, fin_wait_1_fin_with_ack_of_fin],
    (FIN_WAIT_2, fsm.RCV_FIN): [fin_wait_2_fin],
    (CLOSING, fsm.RCV_ACK_OF_FIN): [closing_ack_of_fin],
    (TIME_WAIT, fsm.RCV_FIN): [time_wait_fin],
    (TIME_WAIT, fsm.TIMEOUT_2MSL): [time_wait_2msl],
    (TIME_WAIT, fsm.HANDOFF): [time_wait_handoff],
    (TIME_WAIT, fsm.RCV_NEW_SYN): [time_wait_new_syn],
    (ESTABLISHED, fsm.HANDOFF): [established_handoff],
    (CLOSE_WAIT, fsm.HANDOFF): [close_wait_handoff],
    (ESTABLISHED, fsm.RCV_FIN): [established_fin],
    (CLOSE_WAIT, fsm.APP_CLOSE): [close_wait_close],
    (LAST_ACK, fsm.RCV_ACK_OF_FIN): [last_ack_ack_of_fin],
    # RST in every state that has one (RFC 9293 §3.10.7.3/.4 second check)
    (SYN_SENT, fsm.RCV_RST): [syn_sent_rst],
    (SYN_RECEIVED, fsm.RCV_RST): [syn_received_rst],
    (ESTABLISHED, fsm.RCV_RST): [make_rst(established, "a", "reset")],
    (FIN_WAIT_1, fsm.RCV_RST): [make_rst(a_fin_wait_1, "a", "reset")],
    (FIN_WAIT_2, fsm.RCV_RST): [make_rst(a_fin_wait_2, "a", "reset")],
    (CLOSE_WAIT, fsm.RCV_RST): [make_rst(b_close_wait, "b", "reset")],
    (CLOSING, fsm.RCV_RST): [make_rst(both_closing, "a", None)],
    (LAST_ACK, fsm.RCV_RST): [make_rst(b_last_ack, "b", None)],
    (TIME_WAIT, fsm.RCV_RST): [make_rst(a_time_wait, "a", None)],
    # ABORT (RFC 9293 §3.10.5): RST only to a synchronized peer
    (SYN_SENT, fsm.APP_ABORT): [make_abort(lambda: _reach(_to_syn_sent), "a", False)],
    (SYN_RECEIVED, fsm.APP_ABORT): [make_abort(lambda: _reach(_to_syn_received), "b", True)],
    (ESTABLISHED, fsm.APP_ABORT): [make_abort(established, "a", True)],
    (FIN_WAIT_1, fsm.APP_ABORT): [make_abort(a_fin_wait_1, "a", True)],
    (FIN_WAIT_2, fsm.APP_ABORT): [make_abort(a_fin_wait_2, "a", True)],
    (CLOSE_WAIT, fsm.APP_ABORT): [make_abort(b_close_wait, "b", True)],
    (CLOSING, fsm.APP_ABORT): [make_abort(both_closing, "a", True)],
    (LAST_ACK, fsm.APP_ABORT): [make_abort(b_last_ack, "b", True)],
    (TIME_WAIT, fsm.APP_ABORT): [make_abort(a_time_wait, "a", False)],
    # retransmission limit (RFC 9293 §3.8.3 R2) → reset with an error to the app
    (SYN_SENT, fsm.TIMEOUT): [make_timeout(_to_syn_sent, "a")],
    (SYN_RECEIVED, fsm.TIMEOUT): [make_timeout(_to_syn_received, "b")],
    (ESTABLISHED, fsm.TIMEOUT): [make_timeout(_to_established_with_data, "a")],
    (FIN_WAIT_1, fsm.TIMEOUT): [make_timeout(_to_fin_wait_1, "a")],
    (FIN_WAIT_2, fsm.TIMEOUT): [make_timeout(_to_fin_wait_2, "b")],
    (CLOSE_WAIT, fsm.TIMEOUT): [make_timeout(_to_close_wait, "b")],
    (CLOSING, fsm.TIMEOUT): [make_timeout(_to_closing, "a")],
    (LAST_ACK, fsm.TIMEOUT): [make_timeout(_to_last_ack, "b")],
}


def _reach(fn):
    p = Pair()
    fn(p)
    return p


def test_every_transition_has_a_scenario():
    missing = [(STATE_NAMES[s], fsm.EVENT_NAMES[e]) for (s, e) in fsm.TRANSITIONS
               if (s, e) not in SCENARIOS]
    assert not missing, f"transitions without a test: {missing}"
    extra = [k for k in SCENARIOS if k not in fsm.TRANSITIONS]
    assert not extra


@pytest.mark.parametrize(
    "scenario",
    [pytest.param(fn, id=f"{STATE_NAMES[s]}--{fsm.EVENT_NAMES[e]}--{fn.__name__}")
     for (s, e), fns in SCENARIOS.items() for fn in fns])
def test_transition(scenario):
    conn, expected = scenario()
    assert STATE_NAMES[conn.state] == STATE_NAMES[expected]


def test_transition_table_destinations_match():
    # The table's own destination for each scenario key is what the scenario reached.
    for (state, event), fns in SCENARIOS.items():
        for fn in fns:
            conn, reached = fn()
            if fn not in (fin_wait_1_fin_with_ack_of_fin, syn_received_close):
                assert fsm.TRANSITIONS[(state, event)] == reached, fn.__name__


def test_illegal_event_is_a_typed_error():
    with pytest.raises(fsm.IllegalTransition):
        fsm.next_state(CLOSED, fsm.RCV_FIN)
    with pytest.raises(fsm.IllegalTransition):
        fsm.next_state(TIME_WAIT, fsm.APP_CONNECT)


def test_send_on_closing_connection_is_broken_pipe():
    p = a_fin_wait_1()
    with pytest.raises(BrokenPipeError):
        p.a.conn.send(b"late", p.now)


def test_send_after_reset_raises_reset():
    p = established()
    rst_from_peer(p, p.a)
    with pytest.raises(ConnectionResetError):
        p.a.conn.send(b"x", p.now)
