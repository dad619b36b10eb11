"""Connection-splicing dataplane: the L4 rule table and in-place frame translation.

Theory of operation (AccelTCP §4.3, Figure 7/8)
-----------------------------------------------
An L7 proxy P holds connection C (client IP_C:P_C <-> proxy IP_P:P_pc) and connection
S (proxy IP_P:P_ps <-> server IP_S:P_S). After ``nsplice`` the NIC relays between
client and server as if they shared one connection: a frame arriving on C is rewritten
to belong to S (Ethernet addresses, IPs, ports), its seq shifted by ΔSEQ and its ack by
ΔACK; the reverse direction is symmetric. One splice = two *rules* (one per direction),
paired with each other, keyed by the raw incoming 4-tuple ``frame[26:38]``
(src-ip | dst-ip | sport | dport), the same key the host stack demuxes on.

Offsets (the host computes them when both proxy send buffers are acknowledged and the
proxy has read everything it wants; ``splice_rules`` does the arithmetic). With the
proxy's TCB values at splice time::

    rule a (from the client):  ΔSEQ_a = S.snd_nxt - C.rcv_nxt   ΔACK_a = S.rcv_nxt - C.snd_nxt
    rule b (from the server):  ΔSEQ_b = C.snd_nxt - S.rcv_nxt   ΔACK_b = C.rcv_nxt - S.snd_nxt

so ΔACK_b == -ΔSEQ_a and ΔSEQ_b == -ΔACK_a (``install`` checks it). Bytes the proxy
consumed, added, removed or rewrote before splicing are all inside these four numbers.

Host checklist (``splice_rules`` takes one ``SpliceSide`` per proxy TCB):
- splice only when SND.UNA == SND.NXT on both TCBs, nothing is queued to send and the
  proxy has read (and relayed or dropped) its receive buffers; frames arriving while
  waiting are buffered and, once ``install`` returned, passed through ``translate``;
- timestamps must be on for both connections or for neither (``splice_rules`` raises);
  ``ts_now`` is the TSval the proxy would send now on that connection, ``ts_recent``
  the peer's latest TSval — so each sender's next TSval maps to >= what its new peer
  last saw from the proxy (PAWS, RFC 7323 §5) and TSecr comes back in the peer's clock;
- SACK-permitted should match on both sides (blocks are translated, but a peer that did
  not negotiate SACK just ignores them); the MSS each endpoint may send is the one the
  *proxy* advertised to it, so splice only if that is <= what the other endpoint
  advertised (or accept oversize segments on that path);
- connections with TCP-MD5/AO or MPTCP options cannot be spliced (opaque options);
- seed ``last_ack``/``last_wnd`` (``splice_rules`` does: SND.NXT / SND.WND of each TCB)
  so that a blind RST right after splicing is not taken for a reset.

Checksums are never recomputed over the payload (RFC 1624). A 32-bit value v adds
hi + lo == v (mod 0xFFFF) to the one's-complement sum, because 2^16 == 1 (mod 0xFFFF).
The checksum *field* is the complement of the sum, so a field change that adds D to
the sum turns the field into ``(csum - D) % 0xFFFF`` — the canonical encoding in
0..0xFFFE, bit-identical to a full recomputation (see wire.checksum). ``install``
precomputes, per rule, in the field domain (Figure 8 lines 2-4):

    cso_ip  = -(new IPs - old IPs)                                          (mod 0xFFFF)
    cso_tcp = cso_ip - (new ports - old ports) - ΔSEQ - ΔACK                (mod 0xFFFF)
    cso_ts  = -(ΔTSval + ΔTSecr)                                            (mod 0xFFFF)

(the TCP pseudo-header holds the IPs, hence cso_ip inside cso_tcp). Per frame the field
becomes ``(csum + cso + wraps) % 0xFFFF``: when ``x + Δ`` (Δ taken as unsigned 32-bit)
passes 2^32 the written value is ``x + Δ - 2^32`` and 2^32 == 1 (mod 0xFFFF), so the
sum grows by one less than precomputed — the field gets +1. That is Figure 8 lines 9-10
(the paper writes ``SEQ > -ΔSEQ`` with *one's-complement* negation, -Δ = 2^32-1-Δ,
i.e. ``SEQ >= 2^32 - ΔSEQ`` in two's complement: SEQ == 2^32 - ΔSEQ wraps to 0 and
needs the correction; the paper's "-1" is in the sum domain, ours is the field).
The same wrap rule covers every translated 32-bit value: seq, ack, TSval, TSecr and each
SACK edge. An incorrect incoming checksum stays incorrect by the same amount.

Options: ``translate`` has a fast path for no options and for Linux's ``NOP NOP TS``
32-byte header; any other layout (SACK blocks, TS elsewhere, MSS/WS on odd frames,
unknown kinds) takes a slower option walk that is still differential: TSval/TSecr and
every SACK edge are shifted, everything else is forwarded verbatim (so TCP-MD5/AO or
MPTCP would not survive splicing — the host must not splice such connections).
Malformed options (overrun, bad TS/SACK length), a non-IPv4 ethertype (VLAN tags
included: the key at frame[26:38] assumes none), IP options, fragments, non-TCP or
truncated frames return ``DROP`` and leave the frame untouched.

SACK blocks describe the *sender's receive* space, i.e. the peer's sequence numbers,
so each edge moves with the rule's ΔACK. Timestamps: the two connections' TS clocks
differ, so TSval moves by the rule's ``ts_shift`` (client clock -> the clock the
server saw from the proxy) and TSecr by minus the paired rule's ts_shift (undoing
what the reverse direction did). A translated TSval has bit 0 cleared (rounded down to
even: still non-decreasing), as the host clears it in every TSval it sends
(tcp.syncookie's MARK): the client echoes what it last got, and a straggler of a
spliced connection arriving after its rules are gone must not carry a TSecr that the
dataplane takes for a cookie's (it goes up to the host as an ordinary segment, which
drops it, ``drops["splice_late"]``). The receiver's echo comes back at most one tick
low: RFC 7323 §4 uses TSecr only for RTT samples. Window scale: windows a sender writes are in its own
shift (``wscale_in``), the receiver reads them with the shift it negotiated with the
proxy (``wscale_out``); when they differ the field is rescaled
``min((w << in) >> out, 0xFFFF)`` — rounded down and clamped, i.e. never more than
the real window (RFC 7323 §2.4 tolerates the resulting small shrink), with a 16-bit
differential checksum update. Equal shifts cost nothing.

Teardown is watched passively: the first FIN per direction reports FIN_C / FIN_S and
records the ack value that covers it; when both FINs are acknowledged by the peer the
frame carrying the last such ACK returns CLOSED. An RST returns RESET when its
translated seq lies in [peer's last ACK, + peer's window) (RFC 9293 §3.10.7.4;
unconditionally before the peer's first ACK is known), or is one below that ACK once
the peer has acknowledged the sender's FIN: the FIN's own sequence number, which an
endpoint whose socket is gone puts in the RST it answers a segment with (the segment's
ACK), and which Linux accepts in CLOSE-WAIT, LAST-ACK and CLOSING (tcp_reset_check;
without this rule a backend that had sent its FIN first took such an RST and went
silent, and the splice stayed until its idle timeout). Any other out-of-window RST is
still forwarded (the endpoint decides, RFC 5961 challenge ACK) and returns NONE. The
frame is always translated first: the dataplane forwards it, then acts on the event
(remove the rules on CLOSED/RESET and report the closure to the host).

Memory (``BYTES_PER_RULE``): a 52-byte packed record (struct ``_RULE``: macs 12,
4-tuple 12, ΔSEQ 4, ΔACK 4, ΔTSval 4, ΔTSecr 4, cso_ip 2, cso_tcp 2, cso_ts 2,
wscale in|out 1, flags 1, pair slot 4) plus 37 bytes of per-rule dynamic state in
parallel arrays (state bits 1, FIN ack value 4, the sender's latest ACK 4 and window 4,
packets 8, payload bytes 8, last activity 8) = 89 bytes per rule, 178 per splice. The
exact-match index is a dict here; a NIC's hash table would add ~16 bytes/rule
(12-byte key + slot). The incoming key is not stored: it is the reverse of the paired
rule's rewrite 4-tuple.
"""

import struct
from array import array
from collections import namedtuple

from ..wire.control import L4Rule, SpliceSide, make_key, splice_rules
from ..wire.errors import WireError
from ..wire.tcp import iter_tcp_options

__all__ = [
    "NONE", "FIN_C", "FIN_S", "CLOSED", "RESET", "DROP", "EVENT_NAMES",
    "RULE_BYTES", "STATE_BYTES", "BYTES_PER_RULE",
    "TableFull", "SpliceRule", "SpliceSide", "SpliceReport", "SpliceTable",
    "translate", "make_key", "reverse_key", "splice_rules", "check_pair", "rule_constants",
]

# Events returned by translate (ints: the hot path compares, never constructs).
NONE = 0
FIN_C = 1        # first FIN from the client side (rule_a of install)
FIN_S = 2        # first FIN from the server side (rule_b)
CLOSED = 3       # both FINs acknowledged: remove the rules, report a normal close
RESET = 4        # acceptable RST from either side: remove the rules, report a reset
DROP = 5         # frame not translatable (malformed / not plain TCP over IPv4): untouched
EVENT_NAMES = ("none", "fin_c", "fin_s", "closed", "reset", "drop")

# Per-rule state bits (the dynamic `state` array).
ST_FIN = 0x01          # a FIN was seen from this rule's sender; `fins` holds its ack value
ST_FIN_ACKED = 0x02    # ... and the peer acknowledged it
ST_ACK = 0x04          # `acks`/`wnds` hold this sender's latest ACK / window (bytes)
ST_RST = 0x08          # an acceptable RST was seen from this sender
ST_USED = 0x80

# Rule flags (in the packed record).
RF_FROM_SERVER = 0x01  # direction: 0 = rule_a (client -> server), 1 = rule_b
RF_RESCALE = 0x02      # wscale_in != wscale_out: rescale the window field

# macs (dst|src, wire order), 4-tuple (src-ip|dst-ip|sport|dport, wire order), dseq, dack,
# dtsval, dtsecr, cso_ip, cso_tcp, cso_ts, wscale (in << 4 | out), flags, pair slot
_RULE = struct.Struct("!12s12sIIIIHHHBBI")
RULE_BYTES = _RULE.size                                  # 52
assert RULE_BYTES == 52          # translate() multiplies by the literal
STATE_BYTES = 1 + 4 + 4 + 4 + 8 + 8 + 8                  # 37
BYTES_PER_RULE = RULE_BYTES + STATE_BYTES                # 89

# Header fields read per frame, from offset 12 (after the MACs): ethertype, ver/ihl, tos,
# total length, ident, frag field, ttl, proto, IP checksum, (4-tuple skipped), seq, ack,
# data offset, flags, window, TCP checksum.
_HDR = struct.Struct("!HBBHHHBBH12xIIBBHH")
# Written back from offset 0 in one pack (cheaper than a slice assignment for the MACs):
# the new MACs, the fields read above (unchanged ones with their own values), the new
# 4-tuple, translated seq/ack/window and both checksums.
_OUT = struct.Struct("!12sHBBHHHBBH12sIIBBHH")
_III = struct.Struct("!III")
_II = struct.Struct("!II")
_rule_unpack = _RULE.unpack_from
_hdr_unpack = _HDR.unpack_from
_out_pack = _OUT.pack_into
_iii_unpack = _III.unpack_from
_ii_pack = _II.pack_into
_ii_unpack = _II.unpack_from
# the edges of a SACK option by its length (2 + 8n, n = 1..4: what 40 option bytes hold)
_EDGES = {olen: struct.Struct("!%dI" % ((olen - 2) // 4)) for olen in range(10, 41, 8)}
_from_bytes = int.from_bytes

_M = 0xFFFFFFFF
_HALF = 0x80000000
_WRAP = 0x100000000
_NOP_NOP_TS = 0x0101080A
_TCP_ACK = 0x10
_TCP_RST = 0x04
_TCP_FIN = 0x01


class TableFull(Exception):
    """No two free rule slots left in the SpliceTable (the host keeps relaying itself)."""


#: One direction of a splice (fields documented on wire.control.L4Rule): the host
#: computes it (``splice_rules``), the table installs it, a 0x090C frame carries it.
SpliceRule = L4Rule


# How a splice ended, for the host's callback (AccelTCP §5.1: remote addresses, bytes
# moved on the NIC, how it terminated). c = rule_a's sender (client), s = rule_b's.
SpliceReport = namedtuple("SpliceReport", (
    "client_key", "server_key", "packets_c", "bytes_c", "packets_s", "bytes_s",
    "fin_c", "fin_s", "reset"))


def reverse_key(key):
    """The 4-tuple of the opposite direction."""
    return key[4:8] + key[0:4] + key[10:12] + key[8:10]


def _check_rule(r):
    if len(r.key) != 12 or len(r.eth_src) != 6 or len(r.eth_dst) != 6 \
            or len(r.ip_src) != 4 or len(r.ip_dst) != 4:
        raise ValueError("bad address length in %r" % (r,))
    if not (0 <= r.sport <= 0xFFFF and 0 <= r.dport <= 0xFFFF):
        raise ValueError("bad port in %r" % (r,))
    if not (0 <= r.wscale_in <= 14 and 0 <= r.wscale_out <= 14):
        raise ValueError("window scale outside 0..14 (RFC 7323 §2.3) in %r" % (r,))


def _sum32(b):
    """Sum of the 16-bit words of a 4/12-byte field, mod 0xFFFF (2^16 == 1)."""
    return _from_bytes(b, "big") % 0xFFFF


def check_pair(rule_a, rule_b):
    """ValueError unless rule_a (from the client) and rule_b (from the server) are a
    well-formed splice: addresses, ports, shifts, reversed 4-tuples, offsets."""
    for r in (rule_a, rule_b):
        _check_rule(r)
    if rule_a.key == rule_b.key:
        raise ValueError("both rules match the same 4-tuple")
    if rule_b.out_key != reverse_key(rule_a.key) or \
            rule_a.out_key != reverse_key(rule_b.key):
        raise ValueError("rules are not a pair: each must rewrite to the reverse of "
                         "the other's match key")
    if (rule_a.seq_offset + rule_b.ack_offset) & _M or \
            (rule_a.ack_offset + rule_b.seq_offset) & _M:
        raise ValueError("offsets inconsistent: need ack_b == -seq_a, seq_b == -ack_a")


def rule_constants(r, peer_ts, flags):
    """The packed record's fields but the pair slot (``_RULE``'s order: macs, out
    4-tuple, ΔSEQ, ΔACK, ΔTSval, ΔTSecr, cso_ip, cso_tcp, cso_ts, wscale in|out,
    flags) of rule `r` whose paired rule shifts TSvals by `peer_ts`; `flags` gets
    RF_RESCALE when the shifts differ."""
    d_ip = _sum32(r.ip_src + r.ip_dst) - _sum32(r.key[0:8])
    old_ports = _from_bytes(r.key[8:10], "big") + _from_bytes(r.key[10:12], "big")
    d_tcp = d_ip + r.sport + r.dport - old_ports + r.seq_offset + r.ack_offset
    dtsecr = -peer_ts & _M
    if r.wscale_in != r.wscale_out:
        flags |= RF_RESCALE
    return (r.eth_dst + r.eth_src, r.out_key, r.seq_offset, r.ack_offset, r.ts_shift,
            dtsecr, -d_ip % 0xFFFF, -d_tcp % 0xFFFF, -(r.ts_shift + dtsecr) % 0xFFFF,
            r.wscale_in << 4 | r.wscale_out, flags)


class SpliceTable:
    """Fixed-capacity splice rule table: `capacity` rules (two per splice)."""

    def __init__(self, capacity):
        if capacity < 2:
            raise ValueError("capacity must be >= 2 (a splice takes two rules)")
        self.capacity = capacity
        self._rules = bytearray(capacity * RULE_BYTES)
        self._state = bytearray(capacity)
        zeros4 = bytes(4 * capacity)
        self._fins = array("I", zeros4)
        self._acks = array("I", zeros4)
        self._wnds = array("I", zeros4)
        zeros8 = bytes(8 * capacity)
        self._pkts = array("Q", zeros8)
        self._bytes = array("Q", zeros8)
        self._last = array("d", zeros8)
        self._index = {}                                  # incoming key -> slot
        self._free = list(range(capacity - 1, -1, -1))    # pop() hands out 0, 1, 2, ...
        # translate() takes all of these in one attribute load
        self._hot = (self._rules, self._state, self._fins, self._acks, self._wnds,
                     self._pkts, self._bytes, self._last)

    # ---- control path --------------------------------------------------------------

    def __len__(self):
        return len(self._index)

    @property
    def memory_bytes(self):
        """Bytes of rule table + per-rule state for the whole capacity (index excluded)."""
        return self.capacity * BYTES_PER_RULE

    def lookup(self, key):
        """Slot of the rule matching the raw incoming 4-tuple `key` (frame[26:38]), or None."""
        return self._index.get(bytes(key))

    def install(self, rule_a, rule_b, now=0.0):
        """Install a splice: rule_a for frames from the client, rule_b from the server.
        Returns (slot_a, slot_b). Raises TableFull, or ValueError for an inconsistent
        pair or a key already installed."""
        check_pair(rule_a, rule_b)
        if rule_a.key in self._index or rule_b.key in self._index:
            raise ValueError("a rule for this 4-tuple is already installed")
        if len(self._free) < 2:
            raise TableFull("splice table full (%d rules)" % self.capacity)
        slot_a = self._free.pop()
        slot_b = self._free.pop()
        self._write(slot_a, rule_a, rule_b.ts_shift, slot_b, 0, now)
        self._write(slot_b, rule_b, rule_a.ts_shift, slot_a, RF_FROM_SERVER, now)
        self._index[rule_a.key] = slot_a
        self._index[rule_b.key] = slot_b
        return slot_a, slot_b

    def _write(self, slot, r, peer_ts, pair, flags, now):
        _RULE.pack_into(self._rules, slot * RULE_BYTES, *rule_constants(r, peer_ts, flags),
                        pair)
        st = ST_USED
        if r.last_ack is not None:
            self._acks[slot] = r.last_ack & _M
            self._wnds[slot] = r.last_wnd
            st |= ST_ACK
        else:
            self._acks[slot] = self._wnds[slot] = 0
        self._state[slot] = st
        self._fins[slot] = 0
        self._pkts[slot] = self._bytes[slot] = 0
        self._last[slot] = now

    def _check_slot(self, slot):
        if not (0 <= slot < self.capacity) or not self._state[slot] & ST_USED:
            raise KeyError("slot %r is not installed" % (slot,))

    def pair(self, slot):
        """The slot of the other direction."""
        self._check_slot(slot)
        return _rule_unpack(self._rules, slot * RULE_BYTES)[11]

    def counters(self, slot):
        """(packets, payload bytes) translated by this rule."""
        self._check_slot(slot)
        return self._pkts[slot], self._bytes[slot]

    def state(self, slot):
        """The ST_* bits of this rule."""
        self._check_slot(slot)
        return self._state[slot]

    def rule(self, slot):
        """Decoded record (debug / control path) as a dict."""
        self._check_slot(slot)
        (macs, tup, dseq, dack, dts, dtsecr, cso_ip, cso_tcp, cso_ts, ws, flags,
         pair) = _rule_unpack(self._rules, slot * RULE_BYTES)
        return {"key": reverse_key(_rule_unpack(self._rules, pair * RULE_BYTES)[1]),
                "eth_dst": macs[:6], "eth_src": macs[6:], "out_key": tup,
                "seq_offset": dseq, "ack_offset": dack, "ts_shift": dts,
                "tsecr_shift": dtsecr, "cso_ip": cso_ip, "cso_tcp": cso_tcp,
                "cso_ts": cso_ts, "wscale_in": ws >> 4, "wscale_out": ws & 15,
                "from_server": bool(flags & RF_FROM_SERVER), "pair": pair,
                "state": self._state[slot], "packets": self._pkts[slot],
                "bytes": self._bytes[slot], "last_active": self._last[slot]}

    def installed(self, limit=64):
        """Up to `limit` installed splices, each as (client-side rule, server-side rule)
        in ``rule``'s shape, the oldest activity first: what is on the NIC now."""
        seen, out = set(), []
        for slot in sorted(self._index.values(), key=self._last.__getitem__):
            if slot in seen:
                continue
            pair = self.pair(slot)
            seen.update((slot, pair))
            a, b = sorted((self.rule(slot), self.rule(pair)), key=lambda r: r["from_server"])
            out.append((a, b))
            if len(out) >= limit:
                break
        return out

    def remove(self, slot):
        """Remove the splice `slot` belongs to (both rules). Returns a SpliceReport."""
        self._check_slot(slot)
        rules = self._rules
        rec = _rule_unpack(rules, slot * RULE_BYTES)
        tup_s, flags, pair = rec[1], rec[10], rec[11]
        tup_p = _rule_unpack(rules, pair * RULE_BYTES)[1]
        a, b = (pair, slot) if flags & RF_FROM_SERVER else (slot, pair)
        key_slot = reverse_key(tup_p)        # slot's incoming key
        key_pair = reverse_key(tup_s)
        st = self._state
        report = SpliceReport(
            key_slot if a == slot else key_pair, key_pair if a == slot else key_slot,
            self._pkts[a], self._bytes[a], self._pkts[b], self._bytes[b],
            bool(st[a] & ST_FIN), bool(st[b] & ST_FIN), bool((st[a] | st[b]) & ST_RST))
        del self._index[key_slot]
        del self._index[key_pair]
        for x in (slot, pair):
            st[x] = 0
            rules[x * RULE_BYTES:(x + 1) * RULE_BYTES] = bytes(RULE_BYTES)
            self._free.append(x)
        return report

    def expired(self, now, idle):
        """Splices with no frame in either direction for `idle` seconds: one slot each
        (the client-side rule's); pass it to remove()."""
        out = []
        last = self._last
        rules = self._rules
        limit = now - idle
        for slot in self._index.values():
            flags, pair = _rule_unpack(rules, slot * RULE_BYTES)[10:12]
            if not flags & RF_FROM_SERVER and last[slot] <= limit and last[pair] <= limit:
                out.append(slot)
        return out

    def translate(self, slot, frame, now):
        """Method form of translate()."""
        return translate(self, slot, frame, now)


def _shift_ts(frame, p, tsv, tse, cso_ts):
    """The one timestamp shift, for the fast path and the option walk: `tsv`/`tse` are
    TSval + ΔTSval and TSecr + ΔTSecr, written at frame[p:p + 8] mod 2**32, the TSval
    with bit 0 cleared. Returns the checksum-field delta: cso_ts, plus 1 for each of the
    two that passed 2**32 (the wrap rule in the module doc), plus 1 if the cleared bit
    was set (the value lost 1)."""
    v = tsv & _M
    odd = v & 1
    _ii_pack(frame, p, v - odd, tse & _M)
    return cso_ts + (tsv >> 32) + (tse >> 32) + odd


def _options_slow(frame, i, end, dack, dts, dtsecr, cso_ts):
    """Any option layout (wire.tcp's one walk): shift TSval/TSecr and SACK edges in
    place. Returns the checksum-field delta to add, or None (malformed: nothing
    written, since the whole walk is checked before the first write)."""
    try:
        opts = list(iter_tcp_options(frame, i, end))
    except WireError:
        return None
    c = 0
    for kind, p, olen in opts:
        if kind == 8:                         # RFC 7323 §3.2
            tsv, tse = _ii_unpack(frame, p)
            c += _shift_ts(frame, p, tsv + dts, tse + dtsecr, cso_ts)
        elif kind == 5:                       # RFC 2018 §3: edges in the peer's space
            edges = _EDGES[olen]
            out = []
            for e in edges.unpack_from(frame, p):
                e += dack
                if e > _M:
                    e -= _WRAP
                    c += 1
                out.append(e)
            edges.pack_into(frame, p, *out)
            c += (olen - 2) // 4 * (-dack % 0xFFFF)
    return c


def translate(table, slot, frame, now):
    """Rewrite `frame` (a bytearray holding Ethernet+IPv4+TCP) in place by rule `slot`
    and return an event (NONE, FIN_C, FIN_S, CLOSED, RESET; DROP = untouched).

    In place because it is the fastest: no payload copy at all, the checksums are
    updated differentially. Bytes after the IP total length (Ethernet padding) are
    ignored. `slot` must be installed (the caller got it from lookup()).
    """
    rules, state, fins, acks, wnds, pkts, nbytes, last = table._hot
    (macs, tup, dseq, dack, dts, dtsecr, cso_ip, cso_tcp, cso_ts, ws, rflags,
     pair) = _rule_unpack(rules, slot * 52)
    try:
        etype, vihl, tos, totlen, ident, frag, ttl, proto, ipcs, seq_in, ack_in, off, \
            flags, win, cs = _hdr_unpack(frame, 12)
    except Exception:                         # struct.error: shorter than 52 bytes
        return DROP
    doff = (off >> 4) << 2
    plen = totlen - 20 - doff
    if etype != 0x0800 or vihl != 0x45 or proto != 6 or frag & 0x3FFF or doff < 20 or plen < 0 \
            or totlen + 14 > len(frame):
        return DROP
    c = cso_tcp
    seq = seq_in + dseq
    if seq > _M:                              # Figure 8 line 9
        seq -= _WRAP
        c += 1
    ack = ack_in + dack
    if ack > _M:                              # Figure 8 line 10
        ack -= _WRAP
        c += 1
    if doff == 32:
        word, tsv, tse = _iii_unpack(frame, 54)
        if word == _NOP_NOP_TS:               # Linux's TS-only layout: the common case
            c += _shift_ts(frame, 58, tsv + dts, tse + dtsecr, cso_ts)
        else:
            d = _options_slow(frame, 54, 66, dack, dts, dtsecr, cso_ts)
            if d is None:
                return DROP
            c += d
    elif doff > 20:
        d = _options_slow(frame, 54, 34 + doff, dack, dts, dtsecr, cso_ts)
        if d is None:
            return DROP
        c += d
    wout = win
    if rflags & 2:                            # RF_RESCALE
        wout = (win << (ws >> 4)) >> (ws & 15)
        if wout > 0xFFFF:
            wout = 0xFFFF
        c += win - wout
    _out_pack(frame, 0, macs, etype, vihl, tos, totlen, ident, frag, ttl, proto,
              (ipcs + cso_ip) % 0xFFFF, tup, seq, ack, off, flags, wout, (cs + c) % 0xFFFF)

    # accounting and passive teardown tracking
    pkts[slot] += 1
    if plen:
        nbytes[slot] += plen
    last[slot] = now
    ev = 0
    st = state[slot]
    if flags & _TCP_ACK:
        if not st & ST_ACK or ((ack_in - acks[slot]) & _M) < _HALF:
            acks[slot] = ack_in
            wnds[slot] = win << (ws >> 4)
            st |= ST_ACK
        ps = state[pair]
        if ps & 3 == ST_FIN and ((ack_in - fins[pair]) & _M) < _HALF:
            state[pair] = ps | ST_FIN_ACKED
            if st & ST_FIN_ACKED:
                ev = CLOSED
    if flags & 5:                             # FIN or RST
        if flags & _TCP_RST:
            ps = state[pair]
            w = wnds[pair] or 1
            d = (seq - acks[pair]) & _M
            if not ps & ST_ACK or d < w or (d == _M and st & ST_FIN_ACKED):
                st |= ST_RST
                ev = RESET
        elif not st & ST_FIN:
            fins[slot] = (seq + plen + 1) & _M
            st |= ST_FIN
            if not ev:
                ev = FIN_C + (rflags & 1)
    state[slot] = st
    return ev


if __name__ == "__main__":   # micro-benchmark: python -m acceltcp.nic.splice
    import timeit

    from ..wire.checksum import internet_checksum, pseudo_header_sum
    from ..wire.tcp import build_tcp_frame, tcp_options

    _mc, _mp, _ms = b"\x02" * 6, b"\x04" * 6, b"\x06" * 6
    _ic, _ip, _is = b"\x0a\0\0\x01", b"\x0a\0\0\x02", b"\x0a\0\1\x03"
    _c = SpliceSide(_mp, _ip, 8080, _mc, _ic, 40000, 0xFFFFFF00, 5, 65535, True, 10, 20, 7, 7)
    _s = SpliceSide(_mp, _ip, 50000, _ms, _is, 80, 77, 0xFFFFFFF0, 65535, True, 30, 40, 7, 7)
    _t = SpliceTable(1024)
    _a, _b = _t.install(*splice_rules(_c, _s))

    def _bench(name, fn, number=200000):
        t = min(timeit.repeat(fn, number=number, repeat=5)) / number
        print("%-52s %7.3f us" % (name, t * 1e6))
        return t

    def _recompute(frame):
        """Baseline: same rewrite, but the TCP checksum recomputed over the payload."""
        tot = int.from_bytes(frame[16:18], "big")
        frame[0:12] = _ms + _mp
        frame[26:38] = _ip + _is + b"\xc3\x50\x00\x50"
        frame[50:52] = b"\0\0"
        seg = memoryview(frame)[34:14 + tot]
        frame[50:52] = internet_checksum(
            seg, pseudo_header_sum(frame[26:30], frame[30:34], 6, tot - 20)).to_bytes(2, "big")

    for _size in (64, 1460):
        _pl = bytes(range(256)) * (_size // 256) + bytes(_size % 256)
        _f = bytearray(build_tcp_frame(_mp, _mc, _ic, _ip, 1, 40000, 8080, 5, 0xFFFFFF00,
                                       0x18, 512, tcp_options(timestamps=(20, 10)), _pl))
        _key = bytes(_f[26:38])
        t1 = _bench("translate, %4d B payload + TS (in place)" % _size,
                    lambda f=_f: translate(_t, _a, f, 1.0))
        _bench("lookup(key) + translate, %4d B" % _size,
               lambda f=_f, k=_key: translate(_t, _t.lookup(k), f, 1.0))
        t2 = _bench("baseline: rewrite + full TCP csum (no seq/TS), %4d B" % _size,
                    lambda f=_f: _recompute(f))
        print("%-52s %7.2fx" % ("  -> differential speed-up", t2 / t1))
    _fs = bytearray(build_tcp_frame(_mp, _mc, _ic, _ip, 1, 40000, 8080, 5, 0xFFFFFF00, 0x10,
                                    512, tcp_options(timestamps=(20, 10),
                                                     sack_blocks=((1, 2), (3, 4), (5, 6))),
                                    b""))
    _bench("translate, pure ACK + TS + 3 SACK blocks (slow path)",
           lambda f=_fs: translate(_t, _a, f, 1.0))
