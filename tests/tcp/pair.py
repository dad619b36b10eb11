"""Two TCBs wired back to back through the real codecs, with a hand-cranked clock.

Each segment a connection emits is encoded with ``wire.tcp.build_tcp`` and parsed back
with ``parse_tcp`` (checksums included), then queued for the other side. Tests decide
when queued segments are delivered, dropped, reordered or forged.
"""

from acceltcp.tcp.config import TcpConfig
from acceltcp.tcp.connection import TcpConnection
from acceltcp.wire.tcp import build_tcp, parse_tcp

A_IP = bytes([198, 18, 0, 1])
B_IP = bytes([198, 18, 0, 2])
NEAR_WRAP = (1 << 32) - 5000           # ISNs within 10 kB of 2^32


class Endpoint:
    def __init__(self, name, config, lip, lport, rip, rport, iss, now):
        self.name = name
        self.sent = []                      # parsed segments emitted, in order
        self.events = 0
        self.conn = TcpConnection(config, lip, lport, rip, rport, iss, self._output, now)
        self.conn.on_event = self._on_event

    def _output(self, conn, flags, seq, ack, window, options, payload):
        raw = build_tcp(conn.local_ip, conn.remote_ip, conn.local_port, conn.remote_port,
                        seq, ack, flags, window, options, bytes(payload))
        self.sent.append(parse_tcp(raw, conn.local_ip, conn.remote_ip))

    def _on_event(self, conn):
        self.events += 1

    def take(self):
        out, self.sent = self.sent, []
        return out


class Pair:
    """Client ``a`` (198.18.0.1:40000) and server ``b`` (198.18.0.2:80)."""

    def __init__(self, config_a=None, config_b=None, iss_a=NEAR_WRAP, iss_b=NEAR_WRAP - 777):
        self.now = 0.0
        self.a = Endpoint("a", config_a or TcpConfig(), A_IP, 40000, B_IP, 80, iss_a, 0.0)
        self.b = Endpoint("b", config_b or TcpConfig(), B_IP, 80, A_IP, 40000, iss_b, 0.0)

    def peer(self, ep):
        return self.b if ep is self.a else self.a

    def deliver(self, src, segs=None):
        """Deliver ``segs`` (default: everything ``src`` has sent) to its peer."""
        dst = self.peer(src)
        for seg in (src.take() if segs is None else segs):
            dst.conn.on_segment(seg, self.now)

    def pump(self, max_rounds=10000):
        """Deliver everything both ways until quiet (no timers are run)."""
        for _ in range(max_rounds):
            if not self.a.sent and not self.b.sent:
                return
            self.deliver(self.a)
            self.deliver(self.b)
        raise AssertionError("pair did not go quiet")

    def advance(self, dt):
        """Move the clock by ``dt``, firing due timers on both sides, then pump."""
        end = self.now + dt
        while True:
            deadlines = [d for d in (self.a.conn.next_deadline(), self.b.conn.next_deadline())
                         if d is not None and d <= end]
            if not deadlines:
                break
            self.now = max(self.now, min(deadlines))
            for ep in (self.a, self.b):
                d = ep.conn.next_deadline()
                if d is not None and d <= self.now:
                    ep.conn.on_timer(self.now)
            self.pump()
        self.now = end

    def handshake(self):
        """Passive open on b, active on a; returns when both are ESTABLISHED."""
        self.a.conn.connect(self.now)
        syn = self.a.take()
        assert len(syn) == 1
        self.b.conn.accept_syn(syn[0], self.now)
        self.pump()


def forge(src, flags, seq=None, ack=None, payload=b"", window=65535, ts=True, now=0.0,
          **opts):
    """A segment as ``src`` might send it, built and parsed through the codecs."""
    from acceltcp.wire.tcp import tcp_options

    conn = src.conn
    seq = conn.snd_nxt if seq is None else seq
    ack = conn.rcv_nxt if ack is None else ack
    timestamps = None
    if ts and conn.ts_ok:
        tsval = (int(now * conn.config.ts_hz) + conn.ts_offset) & 0xFFFFFFFF
        timestamps = (tsval, conn.ts_recent)
    raw = build_tcp(conn.local_ip, conn.remote_ip, conn.local_port, conn.remote_port,
                    seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, flags, window,
                    tcp_options(timestamps=timestamps, **opts), payload)
    return parse_tcp(raw, conn.local_ip, conn.remote_ip)
