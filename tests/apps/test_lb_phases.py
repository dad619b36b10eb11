"""apps.lb's session phases (``apps/lb/session.py``): the table is complete and
consistent, an illegal move raises the typed error, and every move of the table is taken
by the simulator's scenarios -- those of test_lb_sim.py and, for the endings they do not
reach (a client that resets in each phase, lingering closes that time out, a tunnel
that idles, a splice that waits on a backend that does not read), the ones below."""

import asyncio
import json
import os
import subprocess
import sys

import pytest

from acceltcp.apps.lb import IllegalPhaseMove, LoadBalancer, parse_config, session
from acceltcp.apps.lb.session import (ABORT, CLIENT_LOST, CLOSE, CLOSING, CONNECT, DONE,
                                      EVENT_NAMES, HEAD, NEXT_REQUEST, NSPLICE, PHASE_NAMES,
                                      PRESPLICE, RELAY, SPLICE, SPLICE_CLOSED, TRANSITIONS,
                                      TUNNEL, _Session, next_phase)
from acceltcp.host.aio import open_connection, start_server
from acceltcp.testbed.simnet import IP_A, IP_B
from acceltcp.tcp.config import TcpConfig

from .test_lb_sim import LB_PORT, _doc, _RawClient, body_for, get, http
from . import test_lb_sim

make_net = test_lb_sim.make_net          # the fixture: a Net per test, closed after it
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# ---------------------------------------------------------------------- the table itself
def test_the_table_is_complete_and_consistent():
    phases = range(len(PHASE_NAMES))
    events = range(len(EVENT_NAMES))
    assert len(set(PHASE_NAMES)) == len(PHASE_NAMES) == DONE + 1
    assert all(p in phases and e in events and t in phases
               for (p, e), t in TRANSITIONS.items())
    assert {e for _, e in TRANSITIONS} == set(events)          # every event is used
    assert not any(p == DONE for p, _ in TRANSITIONS)           # DONE is final
    # every phase is reached from HEAD, and every phase but DONE leads on to DONE
    reach, todo = {HEAD}, [HEAD]
    while todo:
        p = todo.pop()
        for (q, _), t in TRANSITIONS.items():
            if q == p and t not in reach:
                reach.add(t)
                todo.append(t)
    assert reach == set(phases)
    ends = {DONE}
    while True:
        more = {p for (p, _), t in TRANSITIONS.items() if t in ends} - ends
        if not more:
            break
        ends |= more
    assert ends == set(phases)
    # only the NIC's report ends a splice; a session the host holds can always end
    assert {e for (p, e) in TRANSITIONS if p == SPLICE} == {SPLICE_CLOSED,
                                                            session.TO_HOST_RELAY,
                                                            session.TO_TUNNEL}
    for p in (HEAD, CONNECT, PRESPLICE, RELAY, TUNNEL, CLOSING):
        assert TRANSITIONS[(p, CLIENT_LOST)] == DONE


@pytest.mark.parametrize("phase,event", [(DONE, CLOSE), (DONE, CLIENT_LOST), (SPLICE, ABORT),
                                         (HEAD, NSPLICE), (TUNNEL, NEXT_REQUEST),
                                         (CLOSING, session.REPLY_ERROR)])
def test_an_illegal_move_is_a_typed_error(phase, event):
    with pytest.raises(IllegalPhaseMove) as e:
        next_phase(phase, event)
    assert (e.value.phase, e.value.event) == (phase, event)
    assert str(e.value) == "%s is not allowed in %s" % (EVENT_NAMES[event], PHASE_NAMES[phase])
    s = _Session(None, False)
    s.phase = phase
    with pytest.raises(IllegalPhaseMove):
        s.move(event)
    assert s.phase == phase                                     # left as it was
    s.phase = RELAY
    s.move(NEXT_REQUEST)
    assert s.phase == HEAD == next_phase(RELAY, NEXT_REQUEST)


# ---------------------------------------------------------------------- endings
def _clean(n):
    n.settle()
    assert n.lb.stats()["sessions"] == 0
    assert all(be.active == 0 for be in n.lb.backends)


def _raw(n, data, *, port=LB_PORT):
    """A client connection that sends ``data`` and reads nothing."""
    return _RawClient(n.a, data, reading=False, port=port)


def _reset(n, client, after=0.01):
    n.loop.run_for(after)
    n.a.abort(client.conn)


def test_a_client_that_resets_in_each_phase(make_net):
    """HEAD (a partial head), CONNECT (a request, then a reset at once), RELAY (a backend
    that hangs), TUNNEL (after 101), CLOSING (after a 400): the balancer forgets the
    session and drops its backend connection."""
    n = make_net(_doc(1, splice=False))
    _reset(n, _raw(n, b"GET / HT"))                                  # HEAD
    c = _raw(n, get(b"/size/5"))                                     # CONNECT
    n.loop.run_until(lambda: c.off > 0, timeout=5)
    n.a.abort(c.conn)
    _reset(n, _raw(n, get(b"/hang")), 0.1)                           # RELAY
    _reset(n, _raw(n, b"GET /upgrade HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\n"
                      b"Upgrade: echo\r\n\r\n"), 0.1)                # TUNNEL
    _reset(n, _raw(n, b"NOT A REQUEST\r\n\r\n"), 0.1)                # CLOSING
    _clean(n)
    assert n.lb.counters["client_aborts"] == 3                       # CONNECT, RELAY, TUNNEL


def test_presplice_waits_on_a_backend_that_does_not_read(make_net):
    """Splicing after the request: the body is moved by the host first, and a backend
    that does not read it keeps the session in PRESPLICE until ``timeout_server`` (504,
    then a lingering close that times out too: the client neither reads nor ends) -- or
    until the client resets."""
    n = make_net(_doc(0, port=8090, timeout_server=1.0, timeout_client=1.0))

    async def deaf(reader, writer):
        await asyncio.sleep(3600)

    n.loop.run(start_server(n.a, deaf, 8091, config=TcpConfig(rcv_buf=4096), limit=1024))
    doc = _doc(0, port=8092, timeout_server=1.0, timeout_client=1.0)
    doc["backends"] = [{"address": "%s:8091" % IP_A}]
    # small send buffers: the backend's fills before the client's bytes are all moved
    n.lb = LoadBalancer(n.b, parse_config(doc, "t.toml"), loop=n.loop,
                        tcp_config=TcpConfig(snd_buf=4096))
    # all of it fits the balancer's receive buffer: the client has nothing in flight
    post = b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 64000\r\n\r\n" + b"b" * 64000
    timed = _RawClient(n.a, post, port=8092)
    n.loop.run_for(0.5)
    assert [s.phase for s in n.lb._sessions] == [PRESPLICE]
    n.loop.run_until(lambda: b"504" in timed.got, timeout=10)
    _reset(n, _raw(n, post, port=8092), 0.5)                         # PRESPLICE, reset
    _clean(n)
    c = n.lb.counters
    assert c["timeouts_server"] == 1 and c["timeouts_client"] == 1 and c["sent_5xx"] == 1


def test_splice_after_response_to_a_client_that_does_not_read(make_net):
    """splice_after = "response": the response head is out, and the rest waits for a
    client that does not read: at ``timeout_server`` the client is reset (a response
    had started)."""
    n = make_net(_doc(0, port=8090))

    async def fat(reader, writer):                  # a head of several segments
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nX-Pad: %s\r\nContent-Length: %d\r\n\r\n%s"
                     % (b"p" * 10000, 4 << 20, bytes(4 << 20)))
        await writer.drain()
        await asyncio.sleep(3600)

    n.loop.run(start_server(n.a, fat, 8091))
    doc = _doc(0, port=8092, splice_after="response", timeout_server=1.0)
    doc["backends"] = [{"address": "%s:8091" % IP_A}]
    # a small send buffer towards the client: the backend's bytes pile up behind it
    n.lb = LoadBalancer(n.b, parse_config(doc, "t.toml"), loop=n.loop,
                        tcp_config=TcpConfig(snd_buf=4096))
    client = _raw(n, get(b"/x"), port=8092)
    n.loop.run_for(0.5)
    assert [s.phase for s in n.lb._sessions] == [PRESPLICE]
    _clean(n)
    assert n.lb.counters["timeouts_server"] == 1 and client.got == b""


def test_lingering_closes_and_an_idle_tunnel(make_net):
    """A client that half-closes inside a head, a last request with another one behind
    it (both: a lingering close), a tunnel idle for ``timeout_server`` (reset), a
    second request that is malformed after a first response: reset, as the balancer
    does today (``resp_started`` still holds from the first response), where docs/lb.md
    promises a 400."""
    n = make_net(_doc(1, splice=False, timeout_server=1.0))

    async def scenario():
        reader, writer = await open_connection(n.a, IP_B, LB_PORT)
        writer.write(b"GET / HTTP/1.1\r\nHo")
        writer.write_eof()
        partial = await reader.read(-1)
        writer.close()
        two = await http(n.a, [get(b"/size/7", close=True), get(b"/size/8")], pipeline=True)
        (up,) = await http(n.a, [b"GET /upgrade HTTP/1.1\r\nHost: h\r\nConnection: Upgrade"
                                 b"\r\nUpgrade: echo\r\n\r\n"])
        try:
            idle = await up.reader.read(-1)
        except ConnectionResetError:
            idle = "reset"
        up.writer.close()
        bad = await http(n.a, [get(b"/size/9"), b"NOT A REQUEST\r\n\r\n"])
        return partial, two, up, idle, bad
    partial, two, up, idle, bad = n.run(scenario())
    assert partial == b"" and len(two) == 1 and two[0].body == body_for(b"/size/7", 7)
    assert up.status == 101 and idle == "reset"
    assert bad[0].status == 200 and bad[1].status is None
    _clean(n)
    assert n.lb.counters["timeouts_server"] == 1 and n.lb.counters["tunnels"] == 1


def test_pipelined_requests_then_fin_before_the_splice(make_net):
    """Pipelined requests went to the backend unparsed with the first one, and the
    client half-closed before the splice could start: skipped, a byte tunnel."""
    n = make_net(_doc(1))

    async def scenario():
        reader, writer = await open_connection(n.a, IP_B, LB_PORT)
        writer.write(get(b"/size/11") + get(b"/size/12", close=True))
        writer.write_eof()
        data = await reader.read(-1)
        writer.close()
        return data
    data = n.run(scenario())
    assert data.count(b"HTTP/1.1 200 OK") == 2 and data.endswith(body_for(b"/size/12", 12))
    _clean(n)
    c = n.lb.counters
    assert c["splice_skipped"] == 1 and c["tunnels"] == 1 and c["spliced"] == 0


# ---------------------------------------------------------------------- coverage
_RECORDER = """
import json, sys
import pytest
from acceltcp.apps.lb import session
seen = set()
move = session._Session.move
def recording(self, event):
    before = self.phase
    move(self, event)
    seen.add((before, event))
session._Session.move = recording
rc = pytest.main(sys.argv[2:])
with open(sys.argv[1], "w") as f:
    json.dump(sorted(seen), f)
sys.exit(rc)
"""


def test_every_move_of_the_table_is_taken_by_the_scenarios(tmp_path):
    """The scenarios of test_lb_sim.py and of this file, run with a recorder around
    `_Session.move`: they take every move of the table (and, since they pass, no other)."""
    out = tmp_path / "moves.json"
    here = os.path.relpath(__file__, ROOT)
    r = subprocess.run(
        [sys.executable, "-c", _RECORDER, str(out), "-q", "-x", "-p", "no:cacheprovider",
         os.path.join(os.path.dirname(here), "test_lb_sim.py"), here,
         "-k", "not every_move"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    seen = {tuple(m) for m in json.loads(out.read_text())}
    assert seen <= set(TRANSITIONS)
    missing = sorted("%s --%s-->" % (PHASE_NAMES[p], EVENT_NAMES[e])
                     for p, e in set(TRANSITIONS) - seen)
    assert not missing, missing
