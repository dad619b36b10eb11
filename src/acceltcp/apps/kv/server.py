"""`KvServer`: a `KvEngine` on a `HostStack` listener, driven by the stack's event
callbacks, with per-connection output back-pressure and limits (see the `apps.kv` package
docstring; docs/kv.md, "Limits")."""

import collections

from ..accept import accept_into
from .engine import KV_DEFAULT_PORT, KvEngine

__all__ = ["KvServer", "OUTPUT_PAUSE", "QUERY_LIMIT"]

_READ_MAX = 1 << 30         # recv everything the TCB holds
#: KvServer's defaults (docs/kv.md, "Limits"): reply bytes a connection may hold before
#: its requests wait (the TCB's default send buffer again), and the bytes of one
#: request being received (Redis's client-query-buffer-limit default, 1 GiB).
OUTPUT_PAUSE = 256 * 1024
QUERY_LIMIT = 1 << 30


# ---------------------------------------------------------------------- the server
class KvServer:
    """A `KvEngine` served on ``stack`` at ``port`` (see the `apps.kv` package docstring).

    ``offload_setup``: the listener's handshakes go to the NIC (SYN cookies, AccelTCP
    §4.1). ``offload_teardown``: each accepted connection offers its teardown to the NIC
    when the server closes it (§4.2; the stack closes it itself when the NIC or the TCB
    cannot take it). Both are the listener's flags and advisory: without a NIC device
    they change nothing. ``engine``: share or preload a `KvEngine` (default: a new one
    on the stack's clock).

    Per-connection memory bounds (docs/kv.md, "Limits"): ``output_pause`` -- while a
    connection's unsent replies (held by the server, beyond the TCB's send buffer) are at
    least this many bytes, its requests are not parsed or run: they wait, and then the
    client's window closes; parsing resumes when the stack reports send space and the
    replies have drained below it. The replies held are at most ``output_pause`` plus
    the last reply that crossed it. ``output_limit`` (0: none, as Redis's normal
    clients): a connection holding more is closed, its replies dropped (Redis's
    client-output-buffer-limit hard limit). ``query_limit``: a connection whose request
    being received holds more bytes is closed (Redis's client-query-buffer-limit).
    """

    def __init__(self, stack, port=KV_DEFAULT_PORT, *, backlog=4096, config=None,
                 offload_setup=False, offload_teardown=False, defer_accept=True, engine=None,
                 output_pause=OUTPUT_PAUSE, output_limit=0, query_limit=QUERY_LIMIT):
        if output_pause <= 0:
            raise ValueError("output_pause must be positive")
        self.stack = stack
        # a Redis client speaks first: the NIC may hand a connection up with its request
        self.listener = stack.listen(port, backlog, config=config, offload_setup=offload_setup,
                                     offload_teardown=offload_teardown,
                                     defer_accept=defer_accept)
        self.port = self.listener.port
        self.engine = engine if engine is not None else KvEngine(stack.clock, port=self.port)
        self.output_pause = output_pause
        self.output_limit = output_limit
        self.query_limit = query_limit
        self.accepted = 0
        self.closed_by_client = 0      # the client's FIN came first
        self.closed_by_server = 0      # QUIT or a protocol error
        self.closed_output_limit = 0   # replies over output_limit
        self.closed_query_limit = 0    # a request over query_limit
        self.output_pauses = 0         # times a connection's parsing was paused
        self.output_peak = 0           # the most reply bytes one connection held (before
                                       # sending the part its send buffer had room for)
        self.conn_errors = collections.Counter()   # reset / timeout
        self._handler = self._on_event
        accept_into(stack, self.listener, self)

    def on_accept(self, conn):
        self.accepted += 1
        return self._handler, self.engine.open_session()

    def _on_event(self, conn):
        sess = conn.owner.app
        if sess.released:
            return
        if conn.error is not None or conn.closed:
            if conn.error is not None:
                self.conn_errors[conn.error] += 1
            self._drop(sess)
            return
        if conn.fin_queued:
            return                                       # closing: the stack finishes it
        stack = self.stack
        out = sess.out
        if out:
            out.send(stack, conn)
        pause = self.output_pause
        while True:
            held = out.size
            if held >= pause:
                self.output_pauses += 1
                return              # the stack's send-space event resumes (the TCB is full)
            if sess.queued is not None:
                data = b""
            elif conn.rcvbuf and not sess.closing:
                data = stack.recv(conn, _READ_MAX)
            else:
                break
            reply = self.engine.process(sess, data, pause - held)
            if reply:
                if not out and len(reply) <= conn.send_space:
                    stack.send(conn, reply)                 # the common case: it fits
                else:
                    out.append(reply)
                    out.send(stack, conn)
                if out.peak > self.output_peak:
                    self.output_peak = out.peak
                limit = self.output_limit
                if limit and out.size > limit:
                    self.closed_output_limit += 1
                    self._close_now(conn, sess)
                    return
            if sess.parser.held > self.query_limit:
                self.closed_query_limit += 1
                self._close_now(conn, sess)
                return
        if out:
            return                                       # sent, then closed
        if sess.closing:
            if conn.rcvbuf:
                stack.recv(conn, _READ_MAX)   # unread data would turn the close into a RST
            self.closed_by_server += 1
            self._close(conn, sess)
        elif conn.eof:
            self.closed_by_client += 1
            self._close(conn, sess)

    def _drop(self, sess):
        sess.out.clear()
        sess.queued = None
        self.engine.close_session(sess)

    def _close_now(self, conn, sess):
        """Close over a limit: what the server holds is dropped (what the TCB holds still
        goes), unread input is read out so that the close is a FIN, not a reset."""
        self._drop(sess)
        if conn.rcvbuf:
            self.stack.recv(conn, _READ_MAX)
        self.stack.close(conn)

    def _close(self, conn, sess):
        self._drop(sess)
        self.stack.close(conn)

    def stats(self):
        """Engine counters plus the server's: JSON-able, for exit reports."""
        st = self.engine.stats()
        st.update(port=self.port, accepted=self.accepted,
                  closed_by_client=self.closed_by_client,
                  closed_by_server=self.closed_by_server,
                  closed_output_limit=self.closed_output_limit,
                  closed_query_limit=self.closed_query_limit,
                  output_pauses=self.output_pauses, output_peak=self.output_peak,
                  output_pause=self.output_pause, output_limit=self.output_limit,
                  query_limit=self.query_limit,
                  conn_errors=dict(self.conn_errors),
                  offload_setup=self.listener.offload_setup,
                  offload_teardown=self.listener.offload_teardown)
        return st

    def summary(self):
        """One line for a human at exit."""
        st = self.stats()
        cmds = ", ".join("%s %d" % kv for kv in sorted(st["commands"].items(),
                                                       key=lambda kv: -kv[1])[:6])
        return ("kv :%d: %d connections, %d commands%s, %d error replies (%d protocol), "
                "%d keys, %d B in / %d B out" % (
                    self.port, st["accepted"], st["commands_processed"],
                    " (%s)" % cmds if cmds else "", st["error_replies"],
                    st["protocol_errors"], st["keys"], st["bytes_in"], st["bytes_out"]))

    def close(self):
        """Stop listening (open connections stay)."""
        self.stack.unlisten(self.listener)
