"""The balancer itself: `LoadBalancer` accepts client connections, reads and routes
request heads, opens (and reuses) backend connections, ends sessions and times them
out, and reports its counters; `relay.Relay` (its base) splices and relays. Every
change of a session's phase goes through the table of ``session`` (``s.move(event)``).
"""

import collections
import errno

from ...tcp.states import CLOSE_WAIT, ESTABLISHED
from ...wire.ipv4 import ip_to_str
from ..accept import accept_into
from ..http import BODY_CHUNKED, BODY_NONE, ChunkedScanner, HttpError, error_response, \
    head_end, parse_request, rewrite_head
from .balance import _BALANCERS, _Backend, _connect_config, _Route
from .config import _Rewrite
from .relay import Relay
from .session import (ABORT, CLIENT_LOST, CLOSE, CLOSING, DONE, HEAD, LINGER, NEXT_REQUEST,
                      OPEN_BACKEND, PRESPLICE, RELAY, REPLY_ERROR, SPLICE, TO_SPLICE, TUNNEL,
                      U_ACTIVE, U_CONNECTING, U_DEAD, U_IDLE, _Session, _Upstream)

__all__ = ["LoadBalancer"]

_READ_MAX = 1 << 30
_IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"))

_COUNTERS = (
    "connections", "requests", "bad_requests", "inspected",
    "splice_requested", "spliced", "splice_failed", "splice_skipped",
    "relayed_requests", "tunnels", "retries", "no_backend",
    "backend_connect_failures", "backend_failures", "backend_aborts", "bad_responses",
    "client_aborts", "local_port_exhausted", "sent_4xx", "sent_5xx",
    "timeouts_client", "timeouts_server", "keepalive_timeouts",
    "nic_bytes_c", "nic_bytes_s", "nic_packets_c", "nic_packets_s",
    "host_bytes_c", "host_bytes_s",
)


class LoadBalancer(Relay):
    """The balancer on ``stack`` (see the module docstring).

    ``config``: an `LbConfig`. ``loop``: an asyncio loop for the client/server timeouts
    (optional). ``tcp_config``: the TcpConfig of client connections (default: the
    stack's); backend connections use it with ``timeout_connect`` applied.
    ``offload_setup`` / ``offload_teardown``: the listener's NIC offloads (SYN cookies,
    teardown; advisory). ``offload_splice``: None follows ``config.splice``; True/False
    overrides it. Splicing needs a NIC; without one requests are relayed in the host.
    ``warnings``: what the operator should know (no NIC, no backends, no loop).
    """

    def __init__(self, stack, config, *, loop=None, tcp_config=None, offload_setup=False,
                 offload_teardown=False, offload_splice=None, defer_accept=True):
        self.stack = stack
        self.config = cfg = config
        self.loop = loop
        self.splice = bool(cfg.splice if offload_splice is None else offload_splice)
        self.warnings = []
        if self.splice and not stack.nic:
            self.warnings.append("splice: this stack has no NIC; every request is relayed "
                                 "in the host")
        if not cfg.backends:
            self.warnings.append("no backends configured: every request gets 503")
        if loop is None:
            self.warnings.append("no event loop: timeout_client and timeout_server are not "
                                 "enforced")
        self.max_head = cfg.max_head
        self.splice_after_response = cfg.splice_after == "response"
        base = tcp_config if tcp_config is not None else stack.config
        # TCP_NODELAY both ways, as proxies do: the relay writes whole messages (a head
        # with the body bytes that came along in one send), and Nagle would hold a
        # small tail behind a peer's delayed ACK
        client_config = base if base.nodelay else base.copy(nodelay=True)
        self.backend_config = _connect_config(client_config, cfg.timeout_connect)
        self.backends = [_Backend(b) for b in cfg.backends]
        by_name = {be.name: be for be in self.backends}
        make = _BALANCERS[cfg.balance]
        self.balancer = make(self.backends)
        routes = sorted(cfg.routes, key=lambda r: -len(r.prefix))
        self.routes = [_Route(r.prefix.encode(), r.inspect,
                              make([by_name[n] for n in r.backends]) if r.backends else None)
                       for r in routes]
        # an HTTP client speaks first: the NIC may hand a connection up with its request
        self.listener = stack.listen(cfg.port, cfg.backlog, config=client_config,
                                     offload_setup=offload_setup,
                                     offload_teardown=offload_teardown,
                                     defer_accept=defer_accept)
        self.port = self.listener.port
        self.rewrite = _Rewrite(cfg.rewrite, ip_to_str(stack.ip), self.port) \
            if cfg.rewrite else None
        self.counters = dict.fromkeys(_COUNTERS, 0)
        self.status_sent = collections.Counter()      # status -> responses the lb made
        self.splice_failures = collections.Counter()  # SpliceFailed reason -> count
        self.splice_ends = collections.Counter()      # how spliced connections ended
        self._sessions = {}            # live sessions not on the NIC (insertion-ordered)
        self._clock = stack.clock
        self._tick_handle = None
        self._tick_every = min(1.0, max(0.05, min(cfg.timeout_client, cfg.timeout_server) / 4))
        self._client_cb = self._on_client
        self._upstream_cb = self._on_upstream
        accept_into(stack, self.listener, self)

    # ------------------------------------------------------------------ accept, heads
    def on_accept(self, conn):
        s = _Session(conn, self.splice)
        self.counters["connections"] += 1
        self._sessions[s] = None
        self._arm(s, self.config.timeout_client)    # in HEAD from the start
        return self._client_cb, s

    def _on_client(self, conn):
        s = conn.owner.app
        ph = s.phase
        if ph == SPLICE or ph == DONE:
            return
        if conn.error is not None or conn.closed:
            self._client_lost(s)
            return
        if ph == HEAD:
            if s.cout and not self._flush_client(s):
                return
            self._read_head(s)
        elif ph == RELAY:
            self._relay(s)
        elif ph == TUNNEL:
            self._tunnel(s)
        elif ph == CLOSING:
            self._closing(s)
        elif ph == PRESPLICE:
            self._presplice(s)
        # CONNECT: what the client sends waits in its receive buffer for the backend

    def _wait_request(self, s):
        s.move(NEXT_REQUEST)
        self._arm(s, self.config.timeout_client)

    def _read_head(self, s):
        c = s.client
        while True:
            # at most max_head + 1 bytes held: enough to find a head or refuse it; the
            # rest waits in the TCB (its window is the client's back-pressure)
            if c.rcvbuf:
                room = self.max_head + 1 - len(s.inbuf)
                if room > 0:
                    data = self.stack.recv(c, room)
                    s.inbuf = s.inbuf + data if s.inbuf else data
            buf = s.inbuf
            if buf[:1] == b"\r" or buf[:1] == b"\n":
                s.inbuf = buf = buf.lstrip(b"\r\n")  # empty lines before a request: ignored
                s.scan = 0
                if not buf and c.rcvbuf:
                    continue
            break
        end = head_end(buf, s.scan) if buf else -1
        if end < 0:
            if len(buf) > self.max_head:
                self.counters["bad_requests"] += 1
                self._reply_error(s, 400, "request head larger than %d bytes" % self.max_head)
            elif c.eof:
                self._close_client(s)               # the client is done (mid-head or not)
            else:
                s.scan = len(buf) - 2 if len(buf) > 2 else 0
            return
        if end > self.max_head:
            self.counters["bad_requests"] += 1
            self._reply_error(s, 400, "request head larger than %d bytes" % self.max_head)
            return
        head = buf[:end]
        s.inbuf = buf[end:]
        s.scan = 0
        try:
            req = parse_request(head)
        except HttpError as e:
            self.counters["bad_requests"] += 1
            self._reply_error(s, e.status, e.detail)
            return
        self._dispatch(s, req)

    def _dispatch(self, s, req):
        cnt = self.counters
        cnt["requests"] += 1
        s.req = req
        s.resp_started = False
        if req.method == b"CONNECT":
            self._reply_error(s, 405, "CONNECT is not supported")
            return
        path = req.path
        balancer = self.balancer
        inspect = False
        for r in self.routes:                       # longest prefix first
            if path.startswith(r.prefix):
                inspect = r.inspect
                if r.balancer is not None:
                    balancer = r.balancer
                break
        if inspect:
            cnt["inspected"] += 1
            s.may_splice = False
        splice = s.may_splice and self.stack.nic
        body = req.body
        s.req_chunks = ChunkedScanner() if body == BODY_CHUNKED else None
        s.req_left = req.length
        s.req_done = body == BODY_NONE
        s.raw = False
        rest = s.inbuf
        fwd = b""
        if rest and not s.req_done:
            try:
                n = self._track_request(s, rest)
            except HttpError as e:
                cnt["bad_requests"] += 1
                self._reply_error(s, e.status, e.detail)
                return
            fwd = rest[:n]
            rest = rest[n:]
        s.splice_pending = splice and self.splice_after_response
        if s.splice_pending:
            splice = False                          # relay until the response head
        elif splice and rest:
            # pipelined requests go along unparsed: the NIC would relay them anyway
            fwd += rest
            rest = b""
            s.raw = True
        s.inbuf = rest
        s.fwd = fwd
        s.splice = splice
        s.balancer = balancer
        s.tried = None
        be = balancer.pick(path, self._clock(), None)
        if be is None:
            cnt["no_backend"] += 1
            self._reply_error(s, 503, "no backend is available")
            return
        self._open(s, be)

    def _track_request(self, s, data):
        """How many bytes of ``data`` belong to the current request's body."""
        if s.req_done:
            return 0
        ch = s.req_chunks
        if ch is not None:
            n = ch.scan(data)
            if ch.done:
                s.req_done = True
            return n
        left = s.req_left
        if len(data) >= left:
            s.req_left = 0
            s.req_done = True
            return left
        s.req_left = left - len(data)
        return len(data)

    # ------------------------------------------------------------------ backends
    def _forward_head(self, s, be):
        rw = self.rewrite
        req = s.req
        if rw is None:
            return req.head
        add = rw.static
        if add is None:
            if rw.per_backend:
                add = rw.render(self._env(s, be))
            else:
                add = s.added
                if add is None:
                    add = s.added = rw.render(self._env(s, None))
        return rewrite_head(req, add, rw.drop)

    def _env(self, s, be):
        c = s.client
        env = {"client_ip": ip_to_str(c.remote_ip), "client_port": str(c.remote_port)}
        if be is not None:
            env["backend"] = be.name
        return env

    def _open(self, s, be):
        """Send the current request to ``be``: on a kept-alive connection of this
        session, or on a new one."""
        st = self.stack
        s.be = be
        be.active += 1
        be.picks += 1
        head = self._forward_head(s, be)
        data = head + s.fwd if s.fwd else head
        if s.idle:
            up = s.idle.pop(be, None)
            if up is not None:
                if up.conn.state == ESTABLISHED and not up.conn.rcvbuf:
                    up.state = U_ACTIVE
                    up.reused = True
                    s.up = up
                    s.fwd = None
                    self.counters["host_bytes_c"] += len(data)
                    self._send_up(up, data)
                    if s.splice:
                        s.move(TO_SPLICE)
                        self._presplice(s)
                    else:
                        self._start_relay(s)
                    return
                self._drop_upstream(up)
        try:
            conn = st.connect(be.ip, be.port, config=self.backend_config)
        except OSError as e:
            if e.errno == errno.EADDRNOTAVAIL:      # our ports, not the backend's fault
                self.counters["local_port_exhausted"] += 1
                self._release(s)
                self._reply_error(s, 503, "no local port free to reach a backend")
                return
            self._connect_failed(s, None, e.strerror or str(e))
            return
        up = _Upstream(conn, be, s)
        up.first = len(data)
        s.up = up
        s.move(OPEN_BACKEND)
        s.deadline = None                 # the TCB's SYN retries time the connect
        st.attach(conn, self._upstream_cb, up)
        self._send_up(up, data)           # queued: leaves with the handshake's ACK

    def _send_up(self, up, data):
        out = up.out
        if out:
            out.append(data)
            return
        n = self.stack.send(up.conn, data)
        if n < len(data):
            out.append(memoryview(data)[n:] if n else data)

    def _flush_up(self, up):
        out = up.out
        out.send(self.stack, up.conn)
        return not out

    def _on_upstream(self, conn):
        up = conn.owner.app
        state = up.state
        if state == U_DEAD:
            return
        if state == U_IDLE:
            if not (conn.rcvbuf or conn.fin_rcvd or conn.closed):
                return                                  # send space opened: nothing to do
            # the server closed a kept-alive connection, or sent something unasked
            s = up.sess
            if s.idle is not None and s.idle.get(up.be) is up:
                del s.idle[up.be]
            self._drop_upstream(up)
            return
        s = up.sess
        ph = s.phase
        if ph == SPLICE or ph == DONE:
            return
        if state == U_CONNECTING:
            if conn.error is not None or conn.closed:
                self._connect_failed(s, up, conn.error or "closed")
                return
            if conn.state != ESTABLISHED and conn.state != CLOSE_WAIT:
                return                                  # still handshaking
            up.state = U_ACTIVE
            s.fwd = None
            self.counters["host_bytes_c"] += up.first
            if up.out and not self._flush_up(up):
                pass                                    # the rest on the next event
            if s.splice:
                s.move(TO_SPLICE)
                self._presplice(s)
            else:
                self._start_relay(s)
            return
        if ph == RELAY:
            self._relay(s)
        elif ph == PRESPLICE:
            self._presplice(s)
        elif ph == TUNNEL:
            self._tunnel(s)

    def _connect_failed(self, s, up, why):
        cnt = self.counters
        be = s.be
        if up is not None:
            up.state = U_DEAD
            if not up.conn.closed:
                self.stack.abort(up.conn)
        s.up = None
        self._release(s)
        be.connect_failures += 1
        cnt["backend_connect_failures"] += 1
        self._mark_down(be)
        tried = s.tried = (s.tried or ()) + (be,)
        if len(tried) <= self.config.retries:
            nxt = s.balancer.pick(s.req.path, self._clock(), tried)
            if nxt is not None:
                cnt["retries"] += 1
                self._open(s, nxt)
                return
        self._reply_error(s, 502, "no backend could be reached")

    def _mark_down(self, be):
        now = self._clock()
        if be.down_until <= now:
            be.downs += 1
        be.down_until = now + self.config.down_time

    def _release(self, s):
        be = s.be
        if be is not None:
            be.active -= 1
            s.be = None

    def _drop_upstream(self, up, abort=False):
        up.state = U_DEAD
        conn = up.conn
        if not conn.closed:
            if abort or up.out:
                self.stack.abort(conn)
            else:
                self.stack.close(conn)            # unread input makes it a reset

    # ------------------------------------------------------------------ endings
    def _backend_failed(self, s, up):
        """The backend closed or reset before a (complete) response head."""
        if up.reused and not s.resp_started and not s.rbuf and s.req.body == BODY_NONE \
                and s.req.method in _IDEMPOTENT:
            # a kept-alive connection the backend closed as we reused it (its keep-alive
            # timeout): the request may never have been read, and resending an idempotent
            # one is safe (RFC 9110 §9.2.2); once, on a new connection
            self.counters["retries"] += 1
            s.up = None
            self._drop_upstream(up, abort=True)
            be = s.be
            self._release(s)
            s.fwd = None
            self._open(s, be)
            return
        self.counters["backend_failures"] += 1
        be = s.be
        if be is not None:
            be.failures += 1
            if not up.reused:
                self._mark_down(be)
        self._reply_error(s, 502, "the backend closed the connection without a response")

    def _bad_response(self, s, detail):
        self.counters["bad_responses"] += 1
        if s.be is not None:
            s.be.failures += 1
        self._reply_error(s, 502, "invalid response from the backend")

    def _reply_error(self, s, status, detail):
        """Answer ``status`` ourselves and close; a reset if a response had started."""
        self.status_sent[status] += 1
        self.counters["sent_4xx" if status < 500 else "sent_5xx"] += 1
        up = s.up
        if up is not None:
            s.up = None
            self._drop_upstream(up, abort=True)
        self._release(s)
        if s.resp_started:
            self._abort_session(s)
            return
        req = s.req
        s.req = None
        s.inbuf = b""
        s.move(REPLY_ERROR)
        self._to_client(s, error_response(status, detail,
                                          req is not None and req.method == b"HEAD"))
        self._arm(s, self.config.timeout_client)
        self._closing(s)

    def _close_client(self, s):
        """End the client connection gracefully (FIN after what is queued)."""
        c = s.client
        if c.closed:
            s.move(CLOSE)
            self._finish(s)
            return
        if s.cout or c.rcvbuf or s.inbuf:
            s.move(LINGER)
            s.inbuf = b""
            self._arm(s, self.config.timeout_client)
            self._closing(s)
            return
        s.move(CLOSE)
        self.stack.close(c)
        self._finish(s)

    def _closing(self, s):
        """Lingering close: send what is queued, FIN, read and drop until the client's
        FIN (RFC 9112 §9.6), so that a reset does not destroy the response."""
        st = self.stack
        c = s.client
        if c.closed or c.error is not None:
            s.move(CLIENT_LOST)
            self._finish(s)
            return
        if c.rcvbuf:
            st.recv(c, _READ_MAX)
        if s.cout and not self._flush_client(s):
            return
        if not s.shut:
            s.shut = True
            st.shutdown(c)
        if c.eof and s.phase == CLOSING:
            s.move(CLOSE)
            st.close(c)
            self._finish(s)

    def _client_lost(self, s):
        """The client reset, or its connection ended, under us."""
        if s.phase != HEAD and s.phase != CLOSING:
            self.counters["client_aborts"] += 1
        up = s.up
        if up is not None:
            s.up = None
            self._drop_upstream(up, abort=True)
        self._release(s)
        s.move(CLIENT_LOST)
        self._finish(s)

    def _abort_session(self, s):
        up = s.up
        if up is not None:
            s.up = None
            self._drop_upstream(up, abort=True)
        self._release(s)
        c = s.client
        s.move(ABORT)
        if not c.closed:
            self.stack.abort(c)
        self._finish(s)

    def _finish(self, s):
        """Forget a session that has moved to DONE."""
        self._sessions.pop(s, None)
        s.deadline = None
        idle = s.idle
        if idle:
            s.idle = None
            for up in idle.values():
                self._drop_upstream(up)

    # ------------------------------------------------------------------ timeouts
    def _arm(self, s, timeout):
        s.deadline = self._clock() + timeout
        if self._tick_handle is None and self.loop is not None:
            self._tick_handle = self.loop.call_later(self._tick_every, self._tick)

    def _tick(self):
        self._tick_handle = None
        now = self._clock()
        due = [s for s in self._sessions if s.deadline is not None and s.deadline <= now]
        for s in due:
            if s.phase != DONE and s.deadline is not None and s.deadline <= now:
                self._expire(s)
        if self._sessions and self.loop is not None:
            self._tick_handle = self.loop.call_later(self._tick_every, self._tick)

    def _expire(self, s):
        cnt = self.counters
        ph = s.phase
        s.deadline = None
        if ph == HEAD:
            if s.inbuf or s.client.rcvbuf:
                cnt["timeouts_client"] += 1
                self._reply_error(s, 408, "the request head did not arrive in time")
            else:
                cnt["keepalive_timeouts"] += 1
                self._close_client(s)
        elif ph == RELAY or ph == PRESPLICE:
            cnt["timeouts_server"] += 1
            self._reply_error(s, 504, "the backend did not answer in time")
        elif ph == TUNNEL:
            cnt["timeouts_server"] += 1
            self._abort_session(s)
        elif ph == CLOSING:
            cnt["timeouts_client"] += 1
            self._abort_session(s)

    # ------------------------------------------------------------------ reports
    def stats(self):
        """Counters (JSON-able), for exit reports."""
        now = self._clock()
        d = dict(self.counters)
        d.update(port=self.port, balance=self.config.balance, splice=self.splice,
                 splice_after=self.config.splice_after, nic=bool(self.stack.nic),
                 sessions=len(self._sessions),
                 on_nic=d["splice_requested"] - d["spliced"] - d["splice_failed"],
                 status_sent={str(k): v for k, v in sorted(self.status_sent.items())},
                 splice_failed_reasons=dict(self.splice_failures),
                 splice_ends=dict(self.splice_ends),
                 backends=[be.stats(now) for be in self.backends],
                 offload_setup=self.listener.offload_setup,
                 offload_teardown=self.listener.offload_teardown,
                 warnings=list(self.warnings))
        return d

    def summary(self):
        """A few lines for a human at exit."""
        c = self.counters
        now = self._clock()
        lines = [
            "lb :%d (%s, splice %s): %d connections, %d requests; %d spliced, %d splice "
            "failed%s, %d skipped; %d relayed in the host, %d tunnels" % (
                self.port, self.config.balance, "on" if self.splice else "off",
                c["connections"], c["requests"], c["spliced"], c["splice_failed"],
                " (%s)" % ", ".join("%s %d" % kv for kv in self.splice_failures.items())
                if self.splice_failures else "", c["splice_skipped"],
                c["relayed_requests"], c["tunnels"]),
            "  sent by the lb: %d 4xx, %d 5xx%s; %d bad requests, %d retries, %d backend "
            "connect failures, %d backend failures, %d client aborts, %d timeouts" % (
                c["sent_4xx"], c["sent_5xx"],
                " (%s)" % ", ".join("%d: %d" % kv for kv in sorted(self.status_sent.items()))
                if self.status_sent else "", c["bad_requests"], c["retries"],
                c["backend_connect_failures"], c["backend_failures"], c["client_aborts"],
                c["timeouts_client"] + c["timeouts_server"]),
            "  bytes moved: NIC %d c->s, %d s->c; host %d c->s, %d s->c" % (
                c["nic_bytes_c"], c["nic_bytes_s"], c["host_bytes_c"], c["host_bytes_s"]),
        ]
        for be in self.backends:
            lines.append("  backend %-22s %s: %d picks, %d relayed, %d spliced, %d connect "
                         "failures, %d failures, down %d times" % (
                             be.name, "up" if be.down_until <= now else "DOWN", be.picks,
                             be.requests, be.spliced, be.connect_failures, be.failures,
                             be.downs))
        return "\n".join(lines)

    def close(self):
        """Stop listening and stop the timeout sweep (open connections stay)."""
        self.stack.unlisten(self.listener)
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = None
