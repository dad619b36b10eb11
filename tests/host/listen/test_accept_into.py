"""apps/accept.py: a server app's on_accept is called once per connection, and each
connection's handler once per event -- the newest child's establishing event comes from
the stack, children queued before any app was there are handled at once."""

import pytest

from acceltcp.apps.accept import ServerApp, accept_into
from acceltcp.wire.tcp import ACK, PSH, SYN

from ..util import NEAR_WRAP, PEER_IP, PEER_MAC, syn, tcp_frame, tcp_sent


class Recorder:
    def __init__(self):
        self.accepted = []
        self.events = []

    def on_accept(self, conn):
        self.accepted.append(conn.remote_port)
        return self.on_event, ("state", conn.remote_port)

    def on_event(self, conn):
        assert conn.owner.app == ("state", conn.remote_port)     # what on_accept gave
        self.events.append((conn.remote_port, bytes(conn.rcvbuf)))


def establish(stack, dev, sport, request=b""):
    stack.receive_frame(syn(sport=sport))
    synack = [s for s in tcp_sent(dev) if s.tcp.flags == SYN | ACK and s.tcp.dst_port == sport][-1]
    stack.receive_frame(tcp_frame(ACK | (PSH if request else 0), seq=(NEAR_WRAP + 1) % 2**32,
                                  ack=(synack.tcp.seq + 1) % 2**32, sport=sport,
                                  payload=request))


@pytest.fixture
def lstack(stack):
    stack.arp_add(PEER_IP, PEER_MAC)
    return stack


def test_each_connection_is_accepted_once_and_its_first_event_seen_once(lstack, dev):
    lst = lstack.listen(80, 8)
    app = Recorder()
    accept_into(lstack, lst, app)
    establish(lstack, dev, 5001, b"GET")
    establish(lstack, dev, 5002)
    assert app.accepted == [5001, 5002]
    assert app.events == [(5001, b"GET"), (5002, b"")]
    assert not lst.accept_queue


def test_children_queued_before_the_app_are_handled_when_the_next_one_arrives(lstack, dev):
    lst = lstack.listen(80, 8)
    establish(lstack, dev, 5001, b"early")          # no app yet: it waits in the queue
    app = Recorder()
    accept_into(lstack, lst, app)
    establish(lstack, dev, 5002, b"late")
    assert app.accepted == [5001, 5002]
    # the queued one at once (its event passed unhandled), the newest from the stack
    assert app.events == [(5001, b"early"), (5002, b"late")]


def test_an_app_without_on_accept_is_refused(lstack):
    lst = lstack.listen(80, 8)

    class NoAccept:
        def on_event(self, conn):
            pass

    assert isinstance(Recorder(), ServerApp) and not isinstance(NoAccept(), ServerApp)
    with pytest.raises(TypeError, match="on_accept"):
        accept_into(lstack, lst, NoAccept())
