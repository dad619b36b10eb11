"""A layer-7 proxy that hands the rest of each connection to the NIC (AccelTCP §4.3).

For every client: read the request head (up to and including the first ``delimiter``),
pick a backend, connect to it, forward the head -- optionally rewritten, so the two
connections' sequence spaces differ by more than their ISNs -- and then either

* ``splice=True``: ``stack.nsplice(client, backend, callback)``: the NIC relays
  everything else, translating headers; the callback gets the NIC's closure report
  (``control.SpliceClosed``: bytes and packets moved each way, how it ended), or
  ``SpliceFailed`` and the proxy relays in the host after all; or
* ``splice=False``: relay in the host (read from one side, write to the other, half
  closes followed), the baseline the offload is measured against.

Written on the stack's event callbacks, like the other apps. `relay` is the host's
byte relay for one direction (the HTTP load balancer, ``apps.lb``, uses it for tunnels).

Memory per connection pair: at most ``2 * max_head`` bytes of head being read; the
relay holds nothing (it moves only as much as the sink's send buffer has room for, and
either connection's event moves both directions), so a slow side stops the other at the
TCBs' buffer sizes (`tests/apps/test_relay_bounds.py`).
"""

from ..host.offload import SpliceFailed
from ..tcp.states import ESTABLISHED
from .accept import accept_into

__all__ = ["SpliceProxy", "relay"]


def relay(stack, src, dst):
    """Move what ``src`` received to ``dst`` (as much as ``dst``'s send buffer takes) and
    follow the end of ``src``: its FIN becomes a FIN on ``dst`` once everything is
    moved, its reset an abort of ``dst``. -> bytes moved. Call it on the events of
    either connection (data on ``src``, send space on ``dst``)."""
    n = 0
    if src.rcvbuf and not dst.closed:
        space = dst.send_space
        if space:
            data = stack.recv(src, space)
            n = stack.send(dst, data)
    if src.eof and not dst.fin_queued and not dst.closed:
        stack.shutdown(dst)
    if src.error is not None and not dst.closed:
        stack.abort(dst)
    return n


class _Pair:
    __slots__ = ("client", "backend", "head", "spliced", "splicing", "report")

    def __init__(self, client):
        self.client = client
        self.backend = None
        self.head = bytearray()
        self.spliced = False
        self.splicing = False      # nsplice called, its outcome not yet known
        self.report = None


class SpliceProxy:
    """``SpliceProxy(stack, port, backends, ...)``. backends: a list of (ip, port), used
    round-robin, or a callable ``head -> (ip, port)``. rewrite: ``head -> bytes`` (the
    head as forwarded). Counters: accepted, spliced, splice_failed, relayed, closed,
    reports (the SpliceClosed messages, newest last, at most `keep_reports`)."""

    def __init__(self, stack, port, backends, *, splice=True, rewrite=None, delimiter=b"\n",
                 max_head=16384, backlog=4096, config=None, offload_setup=False,
                 keep_reports=1024):
        self.stack = stack
        self.splice = splice
        self.rewrite = rewrite
        self.delimiter = delimiter
        self.max_head = max_head
        self.config = config
        if callable(backends):
            self._pick = backends
        else:
            backends = list(backends)
            if not backends:
                raise ValueError("no backends")
            self._rr = 0

            def pick(head):
                self._rr = (self._rr + 1) % len(backends)
                return backends[self._rr]
            self._pick = pick
        self.listener = stack.listen(port, backlog, config=config, offload_setup=offload_setup)
        self.counters = dict.fromkeys(("accepted", "spliced", "splice_failed", "relayed",
                                       "closed", "bad_head", "backend_failed"), 0)
        self.reports = []
        self.keep_reports = keep_reports
        self._pairs = {}                      # conn -> _Pair (both sides map to it)
        accept_into(stack, self.listener, self)

    def on_accept(self, conn):
        self.counters["accepted"] += 1
        p = self._pairs[conn] = _Pair(conn)
        return self._on_client, p

    # ------------------------------------------------------------------ before splicing
    def _on_client(self, conn):
        p = self._pairs.get(conn)
        if p is None or p.splicing:          # the connections are the splice's now
            return
        if p.backend is None:
            self._read_head(p)
        else:
            self._relay_both(conn, p.backend, p)

    def _read_head(self, p):
        st = self.stack
        c = p.client
        if c.closed or (c.eof and not c.rcvbuf):
            self._finish(p)
            return
        if not c.rcvbuf:
            return
        # at most max_head at a time: what follows the head stays in the receive buffer
        # (nsplice relays it), and what is read always fits the new connection's buffer
        p.head += st.recv(c, self.max_head)
        i = p.head.find(self.delimiter)
        if i < 0:
            if len(p.head) > self.max_head:
                self.counters["bad_head"] += 1
                st.abort(c)
                self._finish(p)
            return
        head = bytes(p.head[:i + len(self.delimiter)])
        rest = bytes(p.head[i + len(self.delimiter):])
        p.head = bytearray()
        ip, port = self._pick(head)
        try:
            b = st.connect(ip, port, config=self.config)
        except OSError:
            self.counters["backend_failed"] += 1
            st.abort(c)
            self._finish(p)
            return
        p.backend = b
        self._pairs[b] = p
        st.attach(b, self._on_backend, p)
        st.send(b, (self.rewrite(head) if self.rewrite is not None else head) + rest)

    def _on_backend(self, conn):
        p = self._pairs.get(conn)
        if p is None or p.splicing:
            return
        if self.splice and not p.spliced and conn.state == ESTABLISHED \
                and not p.client.closed:
            p.spliced = p.splicing = True
            self.stack.nsplice(p.client, conn, lambda r, p=p: self._on_splice_end(p, r))
            return
        self._relay_both(conn, p.client, p)

    # ------------------------------------------------------------------ host relay
    def _relay_both(self, conn, other, p):
        """An event on ``conn``: its data to ``other``, and -- it may be send space --
        ``other``'s waiting data to it (a relay that only moved a connection's own data
        on its events never resumed a direction stopped by a full send buffer)."""
        self._relay(conn, other, p)
        if self._pairs.get(conn) is p:
            self._relay(other, conn, p)

    def _relay(self, src, dst, p):
        st = self.stack
        relay(st, src, dst)
        c, b = p.client, p.backend
        if c.closed and (b is None or b.closed):
            self._finish(p)
        elif c.eof and b is not None and b.eof and not c.rcvbuf and not b.rcvbuf:
            for conn in (c, b):
                if not conn.closed:
                    st.close(conn)

    # ------------------------------------------------------------------ splice outcome
    def _on_splice_end(self, p, result):
        p.splicing = False
        if isinstance(result, SpliceFailed):
            self.counters["splice_failed"] += 1
            self.counters["relayed"] += 1
            st = self.stack
            st.attach(p.client, self._on_client, p)
            st.attach(p.backend, self._on_backend, p)
            self._relay(p.client, p.backend, p)
            self._relay(p.backend, p.client, p)
            return
        self.counters["spliced"] += 1
        p.report = result
        self.reports.append(result)
        if len(self.reports) > self.keep_reports:
            del self.reports[0]
        self._finish(p)

    def _finish(self, p):
        self._pairs.pop(p.client, None)
        if p.backend is not None:
            self._pairs.pop(p.backend, None)
        self.counters["closed"] += 1
