"""A TCB's whole state as a plain value, both ways (TCP Chimney partial offload).

Theory of operation
-------------------
Chimney offload moves an established connection between the host and the NIC without a
second TCP: both sides run ``tcp.connection.TcpConnection``, and what moves is this
module's ``TcbState``, a named tuple of plain values only (None, bool, int, float,
str, bytes and tuples of them), so ``wire.control``'s chimney codec can carry it in
control frames without knowing TCP.

``export_state(conn)`` reads everything the TCB's next outputs depend on: the config
(it governs buffers, timers and the congestion controller), the sequence spaces,
windows and scales, TS.Recent and the TS offset, every timer deadline (absolute,
on the clock both sides share), the RTT estimator, the congestion controller's
variables, the SACK scoreboard, the reassembly queue, the unacknowledged and unsent
data (``sndbuf``), the in-order data not yet read (``rcvbuf``), the ACK policy and the
RFC 5961 rate-limit state, and the counters. Callbacks and the owner's bookkeeping
(``output``, ``on_event``, ``owner``, ``key``, ``on_promote``) are not state: the side
that imports supplies its own ``output`` and sets the rest.

``import_state(state, output)`` builds a fresh ``TcpConnection`` from it; the
property the tests check (hypothesis) is that the imported TCB's outputs for the same
inputs are those the exported one would have produced. Import validates shapes and
ranges and raises ValueError on anything else (the NIC refuses such an offload).

Caches that are rebuilt on demand (the scoreboard's prefix sums) are not carried.
"""

from collections import namedtuple
from dataclasses import fields as dc_fields

from .buffers import joined, without_front
from .cc import _BY_NAME as CC_BY_NAME
from .config import TcpConfig
from .reassembly import ReassemblyQueue
from .rto import RtoEstimator
from .scoreboard import Scoreboard
from .states import CLOSED, LISTEN, SYN_SENT, STATE_NAMES

__all__ = ["TCB_FIELDS", "TcbState", "export_state", "import_state", "STATE_VERSION"]

STATE_VERSION = 1
_U32 = 0xFFFFFFFF

# (TcpConnection attribute, kind). Kinds: u32 (sequence space / 32-bit value), int
# (non-negative), bool, f (float), of (float or None), ou32 (u32 or None), bytes,
# ip (4 bytes), port (u16), state (tcp.states), err (None or an error name), mss
# (1..65535), ws (a window shift, 0..14: RFC 7323 §2.3).
TCB_FIELDS = (
    ("state", "state"), ("error", "err"), ("closed", "bool"), ("app_closed", "bool"),
    ("passive", "bool"),
    ("local_ip", "ip"), ("local_port", "port"), ("remote_ip", "ip"), ("remote_port", "port"),
    ("iss", "u32"), ("snd_una", "u32"), ("snd_nxt", "u32"), ("snd_max", "u32"),
    ("snd_wnd", "int"), ("snd_wl1", "u32"), ("snd_wl2", "u32"), ("max_snd_wnd", "int"),
    ("sbase", "u32"), ("sndbuf", "bytes"), ("fin_queued", "bool"),
    ("irs", "u32"), ("rcv_nxt", "u32"), ("rcv_adv", "u32"), ("rcvbuf", "bytes"),
    ("rcv_fin_seq", "ou32"), ("fin_rcvd", "bool"),
    ("mss", "mss"), ("rcv_mss", "mss"), ("peer_mss", "mss"), ("wscale_ok", "bool"),
    ("snd_wscale", "ws"), ("rcv_wscale", "ws"), ("sack_ok", "bool"), ("ts_ok", "bool"),
    ("ts_offset", "u32"), ("ts_recent", "u32"), ("ts_recent_time", "f"),
    ("last_ack_sent", "u32"), ("max_seg", "u32"), ("tso_max", "u32"),
    ("t_rto", "of"), ("t_dack", "of"), ("t_persist", "of"), ("t_tw", "of"),
    ("retries", "int"), ("persist_backoff", "int"), ("rtt_seq", "ou32"), ("rtt_time", "f"),
    ("last_send", "f"), ("challenge_window", "f"), ("challenge_count", "int"),
    ("oow_ack_time", "f"),
    ("dupacks", "int"), ("in_recovery", "bool"), ("recover", "u32"), ("high_rxt", "u32"),
    ("ack_pending", "bool"), ("full_segs", "int"), ("_snd_full", "bool"),
    ("segs_in", "int"), ("segs_out", "int"), ("bytes_in", "int"), ("bytes_out", "int"),
    ("retransmits", "int"), ("fast_retransmits", "int"), ("rto_timeouts", "int"),
    ("dupacks_in", "int"), ("ooo_segments", "int"), ("paws_drops", "int"),
    ("challenge_acks", "int"), ("unacceptable", "int"), ("window_probes", "int"),
    ("oow_acks_limited", "int"),
)
_CONFIG_FIELDS = tuple(f.name for f in dc_fields(TcpConfig))
_RTO_SLOTS = ("initial", "min_rto", "max_rto", "granularity", "srtt", "rttvar", "rto",
              "backoffs", "_base")
_SB_SLOTS = ("mss", "dupthresh", "sacked", "dsack", "_limit", "_starts", "_ends", "_segs",
             "_anchor_seq", "_anchor_abs")
_RQ_SLOTS = ("_starts", "_ends", "_chunks", "_recent", "nbytes", "_anchor_seq", "_anchor_abs")
_ERRORS = (None, "reset", "refused", "timeout")

#: The state value: version, config (TcpConfig's fields in order), one field per
#: TCB_FIELDS entry (named without a leading underscore), then the sub-objects:
#: rto (_RTO_SLOTS values), cc ((name, values of the class's slots, base class first)),
#: scoreboard and reasm (None, or their slot values).
TcbState = namedtuple("TcbState", ("version", "config") +
                      tuple(n.lstrip("_") for n, _ in TCB_FIELDS) +
                      ("rto", "cc", "scoreboard", "reasm"))


def _cc_slots(cls):
    out = []
    for k in reversed(cls.__mro__):
        out.extend(k.__dict__.get("__slots__", ()))
    return tuple(out)


def _plain(v):
    if isinstance(v, (list, tuple)):
        return tuple(_plain(x) for x in v)
    if isinstance(v, (bytearray, memoryview)):
        return bytes(v)
    return v


def export_state(conn) -> TcbState:
    """The TCB ``conn`` as a TcbState (plain values; ``conn`` is left unchanged)."""
    cfg = conn.config
    cc = conn.cc
    sb = conn.scoreboard
    rq = conn.reasm
    return TcbState(
        STATE_VERSION, tuple(getattr(cfg, n) for n in _CONFIG_FIELDS),
        *(_plain(getattr(conn, n)) for n, _ in TCB_FIELDS),
        tuple(getattr(conn.rto, n) for n in _RTO_SLOTS),
        (cc.name, tuple(_plain(getattr(cc, n)) for n in _cc_slots(type(cc)))),
        None if sb is None else tuple(_plain(getattr(sb, n)) for n in _SB_SLOTS),
        None if rq is None else tuple(_plain(getattr(rq, n)) for n in _RQ_SLOTS))


def _bad(what):
    raise ValueError("bad chimney state: " + what)


def _check(kind, v, name):
    if kind == "u32" or kind == "ou32" and v is not None:
        if type(v) is not int or not 0 <= v <= _U32:
            _bad(name)
    elif kind == "int":
        if type(v) is not int or v < 0:
            _bad(name)
    elif kind == "bool":
        if type(v) is not bool:
            _bad(name)
    elif kind == "f" or kind == "of" and v is not None:
        if type(v) is not float and type(v) is not int:
            _bad(name)
    elif kind == "bytes":
        if type(v) is not bytes:
            _bad(name)
    elif kind == "ip":
        if type(v) is not bytes or len(v) != 4:
            _bad(name)
    elif kind == "mss":
        if type(v) is not int or not 0 < v <= 0xFFFF:
            _bad(name)
    elif kind == "ws":
        if type(v) is not int or not 0 <= v <= 14:
            _bad(name)
    elif kind == "port":
        if type(v) is not int or not 0 <= v <= 0xFFFF:
            _bad(name)
    elif kind == "state":
        if type(v) is not int or not 0 <= v < len(STATE_NAMES) or v in (LISTEN, SYN_SENT):
            _bad(name)
    elif kind == "err":
        if v not in _ERRORS:
            _bad(name)
    return v


def _ints(t, name):
    if type(t) is not tuple or any(type(x) is not int for x in t):
        _bad(name)
    return list(t)


def _restore_sb(t):
    if type(t) is not tuple or len(t) != len(_SB_SLOTS):
        _bad("scoreboard")
    mss, dupthresh, sacked, dsack, limit, starts, ends, segs, aseq, aabs = t
    sb = Scoreboard(_check("int", mss, "sb.mss"), _check("int", dupthresh, "sb.dupthresh"))
    sb.sacked = _check("int", sacked, "sb.sacked")
    if dsack is not None and (type(dsack) is not tuple or len(dsack) != 2):
        _bad("sb.dsack")
    sb.dsack = dsack
    sb._limit = _check("ou32", limit, "sb.limit")
    sb._starts, sb._ends, sb._segs = (_ints(starts, "sb"), _ints(ends, "sb"),
                                      _ints(segs, "sb"))
    if not len(sb._starts) == len(sb._ends) == len(sb._segs):
        _bad("sb ranges")
    sb._anchor_seq = _check("u32", aseq, "sb.anchor")
    if type(aabs) is not int:
        _bad("sb.anchor")
    sb._anchor_abs = aabs
    sb._dirty = True                   # prefix sums rebuilt on first use
    return sb


def _restore_rq(t):
    if type(t) is not tuple or len(t) != len(_RQ_SLOTS):
        _bad("reasm")
    starts, ends, chunks, recent, nbytes, aseq, aabs = t
    rq = ReassemblyQueue()
    rq._starts, rq._ends, rq._recent = _ints(starts, "rq"), _ints(ends, "rq"), \
        _ints(recent, "rq")
    if type(chunks) is not tuple or len(chunks) != len(rq._starts) or \
            len(rq._ends) != len(rq._starts):
        _bad("rq chunks")
    out = []
    for c in chunks:
        if type(c) is not tuple or any(type(x) is not bytes for x in c):
            _bad("rq chunks")
        out.append(list(c))
    rq._chunks = out
    rq.nbytes = _check("int", nbytes, "rq.nbytes")
    rq._anchor_seq = _check("u32", aseq, "rq.anchor")
    if type(aabs) is not int:
        _bad("rq.anchor")
    rq._anchor_abs = aabs
    return rq


def import_state(state, output, now: float = 0.0):
    """A new TcpConnection from ``state`` (a TcbState or a plain tuple of its fields),
    sending through ``output``. ValueError when the value is not a valid state."""
    from .connection import TcpConnection       # connection imports this module's users

    if type(state) is not TcbState:
        if type(state) is not tuple or len(state) != len(TcbState._fields):
            _bad("shape")
        state = TcbState(*state)
    if state.version != STATE_VERSION:
        _bad("version")
    if type(state.config) is not tuple or len(state.config) != len(_CONFIG_FIELDS):
        _bad("config")
    try:
        cfg = TcpConfig(**dict(zip(_CONFIG_FIELDS, state.config)))
        conn = TcpConnection(cfg, state.local_ip, state.local_port, state.remote_ip,
                             state.remote_port, 0, output, now)
    except (TypeError, ValueError) as e:
        _bad("config: %s" % e)
    for (name, kind), v in zip(TCB_FIELDS, state[2:2 + len(TCB_FIELDS)]):
        v = _check(kind, v, name)
        if kind == "bytes":
            v = bytearray(v)
        setattr(conn, name, v)
    rto = state.rto
    if type(rto) is not tuple or len(rto) != len(_RTO_SLOTS):
        _bad("rto")
    est = RtoEstimator.__new__(RtoEstimator)
    for n, v in zip(_RTO_SLOTS, rto):
        if v is not None and type(v) not in (int, float):
            _bad("rto")
        setattr(est, n, v)
    conn.rto = est
    cc = state.cc
    if type(cc) is not tuple or len(cc) != 2 or cc[0] not in CC_BY_NAME:
        _bad("cc")
    cls = CC_BY_NAME[cc[0]]
    slots = _cc_slots(cls)
    if type(cc[1]) is not tuple or len(cc[1]) != len(slots):
        _bad("cc")
    obj = cls.__new__(cls)
    for n, v in zip(slots, cc[1]):
        if v is not None and type(v) not in (int, float, bool):
            _bad("cc")
        setattr(obj, n, v)
    conn.cc = obj
    conn.scoreboard = None if state.scoreboard is None else _restore_sb(state.scoreboard)
    conn.reasm = None if state.reasm is None else _restore_rq(state.reasm)
    if conn.state == CLOSED:
        conn.closed = True
    return conn


# -- the host's TCB while the NIC runs the connection (host.chimney) ---------------------
#
# Offloaded, the host's TcpConnection stays the app's handle but runs no TCP: it is out
# of the demux table and the timers, and its output goes nowhere. Its ``sndbuf`` keeps
# every byte the app wrote that the peer has not acknowledged (so ``send_space`` and
# ``writable`` work as ever) and its ``rcvbuf`` what the NIC delivered that the app has
# not read. When the state comes back, ``restore_into`` loads the NIC's TCB into the
# same object, keeping those two buffers.

_KEEP = frozenset(("output", "on_event", "owner", "key", "on_promote", "_corked",
                   "_cork_now", "_notify", "sndbuf", "rcvbuf", "tso_max", "max_seg"))


def host_export(conn) -> TcbState:
    """The state to offload: ``conn``'s, with ``rcvbuf`` empty (what the app has not
    read stays with the host's TCB, the NIC delivers only what arrives later)."""
    return export_state(conn)._replace(rcvbuf=b"")


def offloaded_input(conn, data) -> None:
    """In-order bytes the NIC received on ``conn``: to the app as from the TCB itself."""
    if data:
        conn.rcvbuf = joined(conn.rcvbuf, data, conn.config.zero_copy)
        conn.bytes_in += len(data)
        conn._notify = True
        conn._flush_events()


def offloaded_acked(conn, n: int) -> None:
    """The peer acknowledged ``n`` more of the app's bytes: free them (the app may
    write again)."""
    if n <= 0:
        return
    n = min(n, len(conn.sndbuf))
    conn.sndbuf = buf = without_front(conn.sndbuf, n)
    conn.sbase = (conn.sbase + n) & _U32
    conn.bytes_out += n
    if conn._snd_full and len(buf) < conn.config.snd_buf:
        conn._snd_full = False
        conn._notify = True
        conn._flush_events()


def restore_into(conn, state, now: float) -> None:
    """Load an uploaded state into the host's own ``conn`` (same object: the app's
    handle and the stack's record stay valid). The send buffer stays the host's (every
    unacknowledged byte the app wrote, of which the state's are a prefix: ValueError
    otherwise), the receive buffer is what the app has not read followed by the
    state's. Then the TCB sends what it may and tells the app what changed."""
    new = import_state(state, conn.output, now)
    sb = conn.sndbuf
    if new.sbase != conn.sbase or bytes(sb[:len(new.sndbuf)]) != bytes(new.sndbuf):
        raise ValueError("uploaded send buffer is not a prefix of the host's")
    if new.rcvbuf:
        conn.rcvbuf = joined(conn.rcvbuf, bytes(new.rcvbuf), conn.config.zero_copy)
    for name in new.__slots__:
        if name not in _KEEP:
            setattr(conn, name, getattr(new, name))
    t = conn.tso_max                           # the host's device may cut TSO segments
    conn.max_seg = t - t % conn.mss if t > conn.mss else conn.mss
    conn._snd_full = len(sb) >= conn.config.snd_buf
    conn._notify = True
    if conn.state in (4, 7) and len(sb) > ((conn.snd_nxt - conn.sbase) & _U32):
        conn._output(now)                      # ESTABLISHED / CLOSE-WAIT: send the rest
    conn._flush_events()


def offload_lost(conn, now: float) -> None:
    """The NIC that ran ``conn`` is gone, and its state with it: reset the connection
    from what the host knows (an RST at its last SND.MAX; a peer that moved on answers
    with a challenge ACK, which then meets no TCB and gets an exact RST) and tell the
    app (error "reset")."""
    from . import fsm

    if conn.state != CLOSED:
        conn._fail("reset", fsm.APP_ABORT, now, send_rst=True)
    conn._flush_events()
