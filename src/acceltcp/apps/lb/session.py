"""A client session of the load balancer: its phases, every legal move between them
in one table, and the session's and its backend connections' state.

The balancer (``server``, ``relay``) decides *which event* a callback, a timer or a
splice report amounts to; this table alone decides *where that event leads*, as
``tcp.fsm`` does for the TCB. An event that has no entry for the current phase is a bug
and raises `IllegalPhaseMove` (a typed error) instead of leaving a session in a phase
nothing expects. A session starts in HEAD and ends in DONE (or is handed to the NIC in
SPLICE and ends there with the NIC's report).

    HEAD       reading a request head (the first, or the next one on a kept-alive
               connection)
    CONNECT    a backend connection is being opened; the client's bytes wait in its
               receive buffer
    PRESPLICE  moving, through the framing, what each side sent, before ``nsplice``
    SPLICE     on the NIC: the host hears once more, in the closure report (or a
               SpliceFailed)
    RELAY      a request/response exchange relayed in the host
    TUNNEL     bytes both ways (101 Switching Protocols, or a fallback after raw bytes)
    CLOSING    lingering close: our response, FIN, then the client's bytes dropped until
               its FIN
    DONE       over
"""

from ..outbuf import OutBuffer

# --- client-session phases -------------------------------------------------------------
HEAD, CONNECT, PRESPLICE, SPLICE, RELAY, TUNNEL, CLOSING, DONE = range(8)
PHASE_NAMES = ("HEAD", "CONNECT", "PRESPLICE", "SPLICE", "RELAY", "TUNNEL", "CLOSING",
               "DONE")

# --- events --------------------------------------------------------------------------
NEXT_REQUEST = 0      # the response is done and the connection is kept: the next request
OPEN_BACKEND = 1      # a new backend connection is opened (the first try, or a retry)
TO_SPLICE = 2         # the backend connection is up, or (splice_after = "response") the
                      # response head has been relayed: move what is left, then splice
NSPLICE = 3           # nsplice called: the NIC takes the connection
SPLICE_CLOSED = 4     # the NIC's closure report
TO_HOST_RELAY = 5     # relay in the host: the backend connection is up (or reused), a
                      # splice was skipped or failed, or the exchange ended before it
TO_TUNNEL = 6         # bytes both ways: 101 Switching Protocols, or the fallback of a
                      # splice after pipelined bytes went to the backend unparsed
REPLY_ERROR = 7       # the balancer answers itself (4xx, 5xx), then closes lingering
LINGER = 8            # the connection ends with bytes still to send or to read
CLOSE = 9             # the connection ended cleanly (FIN both ways, or closed)
ABORT = 10            # the client is reset (a response had started, a timeout, ...)
CLIENT_LOST = 11      # the client reset or closed its connection under us

EVENT_NAMES = (
    "NEXT_REQUEST", "OPEN_BACKEND", "TO_SPLICE", "NSPLICE", "SPLICE_CLOSED",
    "TO_HOST_RELAY", "TO_TUNNEL", "REPLY_ERROR", "LINGER", "CLOSE", "ABORT", "CLIENT_LOST",
)

TRANSITIONS: dict[tuple[int, int], int] = {
    # a request head arrives and is routed; a backend is picked
    (HEAD, OPEN_BACKEND): CONNECT,
    (HEAD, TO_HOST_RELAY): RELAY,               # a kept-alive backend connection reused
    (CONNECT, OPEN_BACKEND): CONNECT,           # the connect failed: the next backend
    (CONNECT, TO_SPLICE): PRESPLICE,
    (CONNECT, TO_HOST_RELAY): RELAY,
    # splicing (AccelTCP §4.3), and carrying on in the host where it cannot
    (PRESPLICE, NSPLICE): SPLICE,
    (PRESPLICE, TO_HOST_RELAY): RELAY,          # skipped, or the exchange is over
    (PRESPLICE, TO_TUNNEL): TUNNEL,             # skipped after raw bytes went along
    (SPLICE, SPLICE_CLOSED): DONE,
    (SPLICE, TO_HOST_RELAY): RELAY,             # SpliceFailed
    (SPLICE, TO_TUNNEL): TUNNEL,                # SpliceFailed after raw bytes went along
    # the host relay
    (RELAY, NEXT_REQUEST): HEAD,
    (RELAY, OPEN_BACKEND): CONNECT,             # a reused connection closed: once more
    (RELAY, TO_SPLICE): PRESPLICE,              # splice_after = "response": the head is out
    (RELAY, TO_TUNNEL): TUNNEL,                 # 101 Switching Protocols
    # endings
    (HEAD, LINGER): CLOSING,                    # the client ended (or idled) between requests
    (RELAY, LINGER): CLOSING,                   # the response was the last one
    (HEAD, CLOSE): DONE,
    (RELAY, CLOSE): DONE,
    (TUNNEL, CLOSE): DONE,
    (CLOSING, CLOSE): DONE,                     # the client's FIN after ours
}
# The balancer answers an error itself (and closes lingering) before the response has
# started; once it has, or when time runs out in a tunnel or a lingering close, the
# client is reset. In HEAD a response has started when an earlier response on the
# connection did. A client may vanish in any phase the host holds it in.
for _phase in (HEAD, CONNECT, PRESPLICE, RELAY):
    TRANSITIONS[(_phase, REPLY_ERROR)] = CLOSING
for _phase in (HEAD, PRESPLICE, RELAY, TUNNEL, CLOSING):
    TRANSITIONS[(_phase, ABORT)] = DONE
for _phase in (HEAD, CONNECT, PRESPLICE, RELAY, TUNNEL, CLOSING):
    TRANSITIONS[(_phase, CLIENT_LOST)] = DONE
del _phase


class IllegalPhaseMove(Exception):
    """An event that has no move from the session's current phase."""

    def __init__(self, phase: int, event: int):
        super().__init__(f"{EVENT_NAMES[event]} is not allowed in {PHASE_NAMES[phase]}")
        self.phase = phase
        self.event = event


def next_phase(phase: int, event: int) -> int:
    try:
        return TRANSITIONS[(phase, event)]
    except KeyError:
        raise IllegalPhaseMove(phase, event) from None


# --- backend-connection states -------------------------------------------------------
U_CONNECTING, U_ACTIVE, U_IDLE, U_DEAD = range(4)


class _Upstream:
    """One connection to a backend, on behalf of one client session."""

    __slots__ = ("conn", "be", "sess", "state", "out", "reused", "first")

    def __init__(self, conn, be, sess):
        self.conn = conn
        self.be = be
        self.sess = sess
        self.state = U_CONNECTING
        self.out = OutBuffer()       # request bytes the send buffer did not take yet
        self.reused = False
        self.first = 0               # bytes queued before the handshake completed


class _Session:
    """One client connection."""

    __slots__ = ("client", "phase", "inbuf", "scan", "req", "req_left", "req_chunks",
                 "req_done", "balancer", "be", "tried", "fwd", "splice", "may_splice", "raw",
                 "splice_pending", "up", "idle", "rbuf", "rscan", "resp", "resp_done", "rleft",
                 "rchunks", "resp_started", "rclean", "cout", "shut", "deadline", "added", "unread")

    def __init__(self, client, may_splice):
        self.client = client
        self.phase = HEAD
        self.inbuf = b""             # client bytes read and not yet used (a head, pipelining)
        self.scan = 0                # where the head-end search resumes
        self.req = None
        self.req_left = 0
        self.req_chunks = None
        self.req_done = True
        self.balancer = None
        self.be = None               # the backend charged with this session (leastconn)
        self.tried = None            # backends whose connect failed for this request
        self.fwd = None              # request body bytes to send after the head
        self.splice = False          # splice once the backend connection is up
        self.splice_pending = False  # splice once the response head is relayed
        self.may_splice = may_splice
        self.raw = False             # bytes beyond the request went to the backend unparsed
        self.up = None
        self.idle = None             # backend -> kept-alive _Upstream
        self.rbuf = b""
        self.rscan = 0
        self.resp = None
        self.resp_done = False
        self.rleft = 0
        self.rchunks = None
        self.resp_started = False
        self.rclean = True           # the backend sent nothing after the response
        self.cout = OutBuffer()      # response bytes the client's send buffer did not take
        self.shut = False
        self.deadline = None
        self.added = None            # rewrite lines rendered for this client
        self.unread = None           # (client, backend) bytes nsplice was left to relay

    def move(self, event):
        """Take ``event``: the phase the table says, or `IllegalPhaseMove`."""
        try:
            self.phase = TRANSITIONS[(self.phase, event)]
        except KeyError:
            raise IllegalPhaseMove(self.phase, event) from None
