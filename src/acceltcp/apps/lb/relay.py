"""Splicing and the host relay of the load balancer's sessions: `Relay` is the base
of `LoadBalancer` (``self`` is the balancer; its sessions, counters, stack and helpers).

Before ``nsplice`` the balancer moves, itself and through the messages' framing, what
each side has sent to the other (`_presplice`; when the backend answers early, what the
windows do not take at once is left to ``nsplice``); then the NIC takes both connections, or
a `SpliceFailed` continues in the host exactly where the NIC would have. The host relay
frames each request and response (RFC 9112 §6) and moves bytes only as far as the
receiving side's send buffer has room: what one side cannot take stops the other at
its TCB's window, and at most one read is held (``OutBuffer``, docs/lb.md).
"""

import functools

from ...host.offload import SpliceFailed
from ...tcp.states import ESTABLISHED
from ...wire import control
from ..http import BODY_CHUNKED, BODY_CLOSE, BODY_LENGTH, BODY_NONE, ChunkedScanner, \
    HttpError, head_end, parse_response
from ..proxy import relay
from .session import (CLOSE, NSPLICE, RELAY, SPLICE_CLOSED, TO_HOST_RELAY, TO_SPLICE,
                      TO_TUNNEL, TUNNEL, U_DEAD, U_IDLE)

_SPLICE_ENDS = {control.SPLICE_END_FIN: "fin", control.SPLICE_END_RESET_CLIENT:
                "reset_client", control.SPLICE_END_RESET_SERVER: "reset_server",
                control.SPLICE_END_IDLE: "idle"}


class Relay:
    """Splicing and the host relay (methods of `LoadBalancer`)."""

    # ------------------------------------------------------------------ splicing
    def _presplice(self, s):
        """Move, ourselves and through the messages' framing, what each side has sent
        to the other; then splice -- or relay in the host when that is no longer
        possible or useful."""
        st = self.stack
        c = s.client
        up = s.up
        b = up.conn
        self._arm(s, self.config.timeout_server)
        if up.out and not self._flush_up(up):
            return
        if s.inbuf:                                 # pipelined requests read with a head
            s.raw = True
            self._to_backend(s, s.inbuf)
            s.inbuf = b""
        moved = self._move_framed(s, c, b, self._track_request, self._to_backend)
        if s.resp is None and (b.rcvbuf or s.resp_started):
            # The backend answers before the request is through (a full-duplex peer, an
            # early error), so it reads while it answers: splice now. Waiting for both
            # directions to be moved at one moment may wait for ever when both peers
            # stream. What it sent goes to the client unparsed, as much as fits; nsplice
            # relays what is left in either receive buffer before it splices; a fallback
            # is a byte tunnel.
            s.raw = True
            s.resp_started = True
            self._move_framed(s, b, c, self._track_response, self._to_client)
            if up.out or s.cout:
                return
        elif not moved or up.out:
            return                                  # the backend's next event resumes
        elif s.resp is not None:                    # splice_after = "response"
            if s.cout and not self._flush_client(s):
                return
            if s.rbuf:                              # read with the response head
                data = s.rbuf
                s.rbuf = b""
                self._follow(s, self._track_response, data)
                self._to_client(s, data)
            if not self._move_framed(s, b, c, self._track_response, self._to_client):
                return                              # the client's next event resumes
            if s.cout:
                return
            if s.resp_done and not (s.req_done and s.req.keep_alive and s.resp.keep_alive):
                # the exchange is over and the connection closes: nothing left to splice
                s.may_splice = False
                s.move(TO_HOST_RELAY)
                self._response_done(s)
                return
        if b.state != ESTABLISHED or c.state != ESTABLISHED or not st.nic:
            # the backend closed, the client half-closed, or the NIC is gone
            self.counters["splice_skipped"] += 1
            s.may_splice = False
            self._splice_fallback(s)
            return
        if s.idle:
            for old in s.idle.values():
                self._drop_upstream(old)
            s.idle = None
        s.move(NSPLICE)
        s.deadline = None
        self._sessions.pop(s, None)
        self.counters["splice_requested"] += 1
        s.unread = (len(c.rcvbuf), len(b.rcvbuf))
        st.nsplice(c, b, functools.partial(self._splice_done, s))

    def _move_framed(self, s, src, dst, track, forward):
        """Move what ``src`` has received towards ``dst``, as much as ``dst``'s send buffer
        takes, with ``forward(s, data)``; ``track`` follows the message's framing until a
        byte beyond it makes the rest raw. -> False if ``dst`` ran out of room first."""
        st = self.stack
        while src.rcvbuf:
            space = dst.send_space
            if not space:
                return False
            data = st.recv(src, space)
            self._follow(s, track, data)
            forward(s, data)
        return True

    @staticmethod
    def _follow(s, track, data):
        """``track`` (`_track_request` or `_track_response`) over ``data``, until bytes
        beyond the message, or a framing error (the peer will judge it), make ``s.raw``."""
        if not s.raw:
            try:
                if track(s, data) < len(data):
                    s.raw = True
            except HttpError:
                s.raw = True

    def _to_backend(self, s, data):
        self.counters["host_bytes_c"] += len(data)
        self._send_up(s.up, data)

    def _splice_done(self, s, result):
        cnt = self.counters
        if isinstance(result, SpliceFailed):
            cnt["host_bytes_c"] += result.relayed_c
            cnt["host_bytes_s"] += result.relayed_s
            cnt["splice_failed"] += 1
            self.splice_failures[result.reason] += 1
            s.may_splice = False
            self._sessions[s] = None
            self._splice_fallback(s)
            return
        cnt["spliced"] += 1
        cnt["host_bytes_c"] += s.unread[0]          # nsplice relayed them before it spliced
        cnt["host_bytes_s"] += s.unread[1]
        cnt["nic_bytes_c"] += result.bytes_c
        cnt["nic_bytes_s"] += result.bytes_s
        cnt["nic_packets_c"] += result.packets_c
        cnt["nic_packets_s"] += result.packets_s
        self.splice_ends[_SPLICE_ENDS.get(result.reason, "other")] += 1
        if s.be is not None:
            s.be.spliced += 1
        self._release(s)
        s.move(SPLICE_CLOSED)
        s.client = s.up = s.req = s.resp = None

    def _splice_fallback(self, s):
        """Carry on in the host where the splice would have taken over."""
        if s.raw:
            self.counters["tunnels"] += 1
            s.move(TO_TUNNEL)
            self._tunnel(s)
        elif s.resp is None:
            self._start_relay(s)
        else:
            s.move(TO_HOST_RELAY)
            if s.resp_done:
                self._response_done(s)
            else:
                self._relay(s)

    # ------------------------------------------------------------------ host relay
    def _start_relay(self, s):
        s.move(TO_HOST_RELAY)
        s.rbuf = b""
        s.rscan = 0
        s.resp = None
        s.resp_done = False
        s.rclean = True
        self._relay(s)

    def _relay(self, s):
        c = s.client
        if c.error is not None or c.closed:
            self._client_lost(s)
            return
        self._arm(s, self.config.timeout_server)
        if not s.req_done:
            self._pump_request(s)
            if s.phase != RELAY:
                return
        self._pump_response(s)

    def _pump_request(self, s):
        st = self.stack
        c = s.client
        up = s.up
        if up.out and not self._flush_up(up):
            return
        b = up.conn
        while c.rcvbuf and not s.req_done:
            space = b.send_space
            if not space:
                break
            if s.req_chunks is None and s.req_left < space:
                space = s.req_left                  # no over-read into the next request
            data = st.recv(c, space)
            try:
                n = self._track_request(s, data)
            except HttpError as e:
                self.counters["bad_requests"] += 1
                self._reply_error(s, e.status, e.detail)
                return
            if n < len(data):
                s.inbuf = data[n:]                  # the next (pipelined) request
                data = data[:n]
            self._to_backend(s, data)
        if not s.req_done and c.eof:
            self.counters["client_aborts"] += 1     # the client ended inside its body
            self._abort_session(s)

    def _pump_response(self, s):
        st = self.stack
        c = s.client
        up = s.up
        b = up.conn
        if s.cout and not self._flush_client(s):
            return                                  # the client's next event resumes
        while True:
            resp = s.resp
            if resp is None:                        # a response head
                if s.cout:
                    return                          # (after an interim response) the
                                                    # client's next event resumes
                if b.rcvbuf:
                    room = self.max_head + 1 - len(s.rbuf)
                    if room > 0:
                        data = st.recv(b, room)
                        s.rbuf = s.rbuf + data if s.rbuf else data
                buf = s.rbuf
                end = head_end(buf, s.rscan) if buf else -1
                if end < 0:
                    if len(buf) > self.max_head:
                        self._bad_response(s, "response head too large")
                    elif b.error is not None or b.closed or b.eof:
                        self._backend_failed(s, up)
                    else:
                        s.rscan = len(buf) - 2 if len(buf) > 2 else 0
                    return
                head = buf[:end]
                rest = buf[end:]
                s.rbuf = b""
                s.rscan = 0
                try:
                    resp = parse_response(head, s.req.method)
                except HttpError as e:
                    self._bad_response(s, e.detail)
                    return
                if resp.interim:
                    if resp.status == 101:
                        if not s.req.upgrade:
                            self._bad_response(s, "101 without an Upgrade request")
                            return
                        self._upgrade(s, head + rest)
                        return
                    self._to_client(s, head)        # 100 Continue and friends
                    s.resp_started = True
                    s.rbuf = rest
                    continue
                s.resp_started = True
                s.resp = resp
                s.resp_done = resp.body == BODY_NONE
                s.rleft = resp.length
                s.rchunks = ChunkedScanner(502) if resp.body == BODY_CHUNKED else None
                if s.splice_pending:                # splice_after = "response": now
                    s.splice_pending = False
                    self._to_client(s, head)
                    s.rbuf = rest
                    s.move(TO_SPLICE)
                    self._presplice(s)
                    return
                if rest and not self._response_bytes(s, rest, head):
                    return
                if not rest:
                    self._to_client(s, head)
                if s.resp_done:
                    self._response_done(s)
                    return
                continue
            if b.rcvbuf:
                space = c.send_space
                if not space:
                    return                          # the client's next event resumes
                if not self._response_bytes(s, st.recv(b, space)):
                    return
                continue
            if b.error is not None or b.eof or b.closed:
                if resp.body == BODY_CLOSE and b.error is None:
                    s.resp_done = True
                    self._response_done(s)
                else:
                    self.counters["backend_aborts"] += 1   # cut short: only a reset says so
                    self._abort_session(s)
            return

    def _track_response(self, s, data):
        """How many bytes of ``data`` belong to the current response's body (HttpError
        for a malformed chunked body)."""
        if s.resp_done:
            return 0
        mode = s.resp.body
        if mode == BODY_LENGTH:
            left = s.rleft
            if len(data) >= left:
                s.rleft = 0
                s.resp_done = True
                return left
            s.rleft = left - len(data)
            return len(data)
        if mode == BODY_CHUNKED:
            ch = s.rchunks
            n = ch.scan(data)
            if ch.done:
                s.resp_done = True
            return n
        return len(data)                            # BODY_CLOSE: until the backend's FIN

    def _response_bytes(self, s, data, head=b""):
        """Forward body bytes (after ``head``, in one send); -> False once the response
        ended (or failed)."""
        try:
            n = self._track_response(s, data)
        except HttpError:
            self.counters["bad_responses"] += 1
            self._abort_session(s)
            return False
        if n < len(data):
            s.rclean = False                        # the backend sent more than asked
            data = data[:n]
        self._to_client(s, head + data if head else data)
        if s.resp_done:
            self._response_done(s)
            return False
        return True

    def _response_done(self, s):
        self.counters["relayed_requests"] += 1
        up = s.up
        be = s.be
        req = s.req
        if be is not None:
            be.requests += 1
        self._release(s)
        s.up = None
        keep = req.keep_alive and s.resp.keep_alive and s.req_done
        b = up.conn
        if keep and s.rclean and b.state == ESTABLISHED and not b.rcvbuf and not up.out:
            up.state = U_IDLE
            idle = s.idle
            if idle is None:
                idle = s.idle = {}
            old = idle.get(up.be)
            if old is not None:
                self._drop_upstream(old)
            idle[up.be] = up
        else:
            self._drop_upstream(up, abort=not s.req_done)
        s.req = s.resp = None
        if not keep:
            self._close_client(s)
            return
        self._wait_request(s)
        if s.inbuf or s.client.rcvbuf or s.client.eof:
            self._read_head(s)

    def _to_client(self, s, data):
        self.counters["host_bytes_s"] += len(data)
        cout = s.cout
        if cout:
            cout.append(data)
            return
        c = s.client
        if c.closed or c.fin_queued:
            return
        n = self.stack.send(c, data)
        if n < len(data):
            cout.append(memoryview(data)[n:] if n else data)

    def _flush_client(self, s):
        cout = s.cout
        cout.send(self.stack, s.client)
        return not cout

    def _upgrade(self, s, head):
        """101 Switching Protocols: from here on bytes, both ways."""
        self._to_client(s, head)
        s.resp_started = True
        self.counters["tunnels"] += 1
        if s.inbuf:
            self._to_backend(s, s.inbuf)
            s.inbuf = b""
        s.move(TO_TUNNEL)
        self._tunnel(s)

    def _tunnel(self, s):
        st = self.stack
        c = s.client
        up = s.up
        b = up.conn
        self._arm(s, self.config.timeout_server)
        cnt = self.counters
        if s.cout:
            self._flush_client(s)
        if up.out:
            self._flush_up(up)
        if not s.cout:
            cnt["host_bytes_s"] += relay(st, b, c)
        if not up.out:
            cnt["host_bytes_c"] += relay(st, c, b)
        if s.phase != TUNNEL:
            return
        if c.closed and b.closed:
            up.state = U_DEAD
            self._release(s)
            s.move(CLOSE)
            self._finish(s)
        elif c.eof and b.eof and not s.cout and not up.out:
            self._drop_upstream(up)
            self._release(s)
            st.close(c)
            s.move(CLOSE)
            self._finish(s)
