"""A SYN for a 4-tuple in TIME-WAIT reopens it (RFC 9293 §3.6.1, RFC 6191)."""

import pytest

from acceltcp.testbed.simnet import make_pair
from acceltcp.tcp import states
from acceltcp.tcp.config import TcpConfig


def serve(b):
    lst = b.listen(80, 16)
    accepted = []

    def on_acc(listener):
        while (c := listener.accept()) is not None:
            accepted.append(c)
            b.close(c)                            # the server closes first
    lst.on_acceptable = on_acc
    return accepted


def client_round(loop, a, port=40000):
    c = a.connect("198.18.0.2", 80, local_port=port)
    a.attach(c, lambda conn: a.close(conn) if conn.eof else None)
    assert loop.run_until(lambda: c.closed, 5.0)
    return c


@pytest.mark.parametrize("timestamps", [True, False])
def test_server_side_time_wait_is_reopened_by_a_new_syn(loop, timestamps):
    cfg = TcpConfig(timestamps=timestamps)
    net = make_pair(loop, config_a=cfg, config_b=cfg)
    a, b = net
    accepted = serve(b)
    client_round(loop, a)
    assert b.connections == {}
    [old] = b.time_wait.values()
    assert old.state == states.TIME_WAIT
    loop.run_for(0.5)
    t0 = loop.time()
    client_round(loop, a)                         # same 4-tuple
    assert len(accepted) == 2
    assert loop.time() - t0 < 0.1                 # no SYN retransmission needed
    assert b.counters["time_wait_reopened"] == 1
    assert a.counters["retransmits"] == 0


def test_an_old_syn_does_not_reopen(loop):
    cfg = TcpConfig(timestamps=False)
    net = make_pair(loop, config_a=cfg, config_b=cfg,
                    stack_a={"isn": lambda *x: 1000})           # same ISN: not newer
    a, b = net
    serve(b)
    client_round(loop, a)
    loop.run_for(0.5)
    c = a.connect("198.18.0.2", 80, local_port=40000)
    loop.run_for(0.05)
    assert b.counters.get("time_wait_reopened", 0) == 0
    assert c.state == states.SYN_SENT or c.closed
