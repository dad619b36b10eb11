"""The classic TCP offload engine functions in the NIC: checksum completion, TSO, LRO.

Theory of operation
-------------------
A TOE (docs/reference: tcp-offload-engine) saves the host per-byte and per-frame work
on the data path; AccelTCP's offloads save per-connection work.  These three are pure
functions over frames, used by a NIC placement between its host port and the dataplane
(``nic.placements.sim.SimNicDevice(toe=...)``), so that the host crosses the host port
("PCIe") with fewer, larger transfers:

* **Checksum completion** (``complete_checksum``): the host hands a frame whose TCP
  checksum field holds only the folded pseudo-header sum (CHECKSUM_PARTIAL, as a
  virtio-net NEEDS_CSUM frame); the NIC sums the segment and writes the checksum.
* **TSO** (``segment``): the host hands one header (Ethernet + IPv4 + TCP + options) as
  a template and up to 64 KiB of payload; the NIC cuts MSS-sized frames as Linux's
  tcp_gso_segment does -- SEG.SEQ advances by the bytes before each frame, the IPv4
  identification by one per frame (the host reserved them: HostStack._output), CWR
  only on the first frame, PSH and FIN only on the last, every other header byte (TS
  option included) copied -- and both checksums complete.  So the frames on the wire are
  those the host would have built itself with the same segment boundaries.
* **LRO** (``Lro.coalesce``): of a batch of frames for the host, in-order data segments
  of one flow are merged into one frame (up to ``max_bytes`` of payload) when nothing
  the host must see per segment would be lost (RFC 9293 processing of the merged
  segment must equal processing each): the same 4-tuple, IPv4 without options or
  fragments, the same TOS/TTL/DF, SEG.SEQ exactly following the previous payload, the
  same SEG.ACK and window field, byte-identical TCP options (so timestamps too, as
  Linux's GRO requires), flags ACK or ACK|PSH only (PSH ends a merge: it is the last
  segment taken), payload non-empty, valid IPv4 header and TCP checksums (a frame that
  fails one goes up alone, for the host to count and drop: a merged frame gets new
  checksums, so merging it would hide the damage).  Anything else -- SYN, FIN, RST, URG,
  ECE/CWR, a gap, a retransmission, a pure ACK, a control frame -- goes up unmerged
  and ends the flow's open merge first, so no flow's frames are ever reordered.  Frames
  of spliced or teardown flows never reach the host, so LRO never sees them.
  A merged frame carries the first segment's header (with PSH if the last had it),
  the IPv4 total length and both checksums recomputed.
"""

import struct

from ..wire.checksum import internet_checksum, ones_sum, pseudo_header_sum
from ..wire.tcp import ACK, CWR, FIN, PSH

__all__ = ["complete_checksum", "segment", "Lro", "LRO_MAX_BYTES", "set_tcp_checksum",
           "set_partial_checksum", "TOE_OFFLOADS", "toe_set"]

TOE_OFFLOADS = ("csum", "tso", "lro")     # what a NIC placement's ``toe`` may hold

LRO_MAX_BYTES = 65535 - 20 - 60        # payload of one merged frame (IPv4 total <= 64 KiB)

_H = struct.Struct("!H")
_I = struct.Struct("!I")
_MERGEABLE = ACK                        # flags of a segment LRO may merge (PSH aside)


def set_tcp_checksum(f):
    """Write the full TCP checksum of an IPv4/TCP frame (bytearray, IHL 5), over the
    segment its IPv4 total length says."""
    tcp_len = ((f[16] << 8) | f[17]) - 20
    f[50:52] = b"\0\0"
    f[50:52] = _H.pack(internet_checksum(memoryview(f)[34:34 + tcp_len], pseudo_header_sum(
        bytes(f[26:30]), bytes(f[30:34]), 6, tcp_len)))


def set_partial_checksum(f):
    """Write only the pseudo-header sum into the TCP checksum field (CHECKSUM_PARTIAL,
    virtio-net NEEDS_CSUM: the device completes it)."""
    tcp_len = ((f[16] << 8) | f[17]) - 20
    f[50:52] = _H.pack(pseudo_header_sum(bytes(f[26:30]), bytes(f[30:34]), 6, tcp_len))


def _ip_checksum(f):
    f[24:26] = b"\0\0"
    f[24:26] = _H.pack(internet_checksum(memoryview(f)[14:34]))


def complete_checksum(frame):
    """A copy of an IPv4/TCP frame (IHL 5) with its TCP checksum computed over what the
    IPv4 total length says; ValueError for anything else."""
    f = bytearray(frame)
    if len(f) < 54 or f[12:14] != b"\x08\x00" or f[14] != 0x45 or f[23] != 6:
        raise ValueError("not an IPv4/TCP frame without IP options")
    total = _H.unpack_from(f, 16)[0]
    if total < 40 or 14 + total > len(f):
        raise ValueError("IPv4 total length %d does not fit the frame" % total)
    set_tcp_checksum(f)
    return bytes(f[:14 + total])


def toe_set(toe):
    """A placement's ``toe`` argument -> frozenset (ValueError for a name not in
    TOE_OFFLOADS)."""
    toe = frozenset(toe)
    if not toe <= set(TOE_OFFLOADS):
        raise ValueError("toe offloads are %s, got %s" % (TOE_OFFLOADS, sorted(toe)))
    return toe


def segment(header, payload, gso_size):
    """TSO: ``header`` (Ethernet + IPv4 IHL 5 + TCP + options, as HostStack builds it for
    ``send_segment``) + ``payload`` -> the list of complete frames of at most
    ``gso_size`` payload bytes each (module docstring).  ValueError for a header that is
    not IPv4/TCP or a gso_size < 1."""
    h = bytes(header)
    if len(h) < 54 or h[12:14] != b"\x08\x00" or h[14] != 0x45 or h[23] != 6:
        raise ValueError("TSO header is not IPv4/TCP without IP options")
    thl = (h[46] >> 4) * 4
    if thl < 20 or 34 + thl != len(h):
        raise ValueError("TSO header length %d does not match its data offset" % len(h))
    if gso_size < 1:
        raise ValueError("gso_size must be >= 1")
    n = len(payload)
    seq0 = _I.unpack_from(h, 38)[0]
    ident0 = _H.unpack_from(h, 18)[0]
    flags = h[47]
    out = []
    off = 0
    i = 0
    while True:
        chunk = payload[off:off + gso_size]
        last = off + len(chunk) >= n
        f = bytearray(h)
        f += chunk
        _H.pack_into(f, 16, 20 + thl + len(chunk))
        _H.pack_into(f, 18, (ident0 + i) & 0xFFFF)
        _I.pack_into(f, 38, (seq0 + off) & 0xFFFFFFFF)
        fl = flags
        if i:
            fl &= ~CWR
        if not last:
            fl &= ~(PSH | FIN)
        f[47] = fl
        _ip_checksum(f)
        set_tcp_checksum(f)
        out.append(bytes(f))
        if last:
            return out
        off += len(chunk)
        i += 1


class Lro:
    """Large receive offload over batches of frames for the host (module docstring).
    Counters: ``merged_frames`` (frames that went into a merge, first included),
    ``merges`` (frames made by merging), ``bad_checksum`` (segments sent up alone)."""

    def __init__(self, max_bytes=LRO_MAX_BYTES, verify_checksum=True):
        if not 1 <= max_bytes <= LRO_MAX_BYTES:
            raise ValueError("max_bytes must be 1..%d" % LRO_MAX_BYTES)
        self.max_bytes = max_bytes
        self.verify_checksum = verify_checksum
        self.merges = 0
        self.merged_frames = 0
        self.bad_checksum = 0

    @staticmethod
    def _candidate(f):
        """(flow key, header key, seq, payload offset, payload length, psh) of a frame LRO
        may merge, or None."""
        if len(f) < 54 or f[12] != 8 or f[13] or f[14] != 0x45 or f[23] != 6:
            return None
        if f[20] & 0x3F or f[21]:                       # MF or a fragment offset
            return None
        fl = f[47]
        if fl & ~PSH != _MERGEABLE:
            return None
        total = (f[16] << 8) | f[17]
        thl = (f[46] >> 4) * 4
        if thl < 20 or total > len(f) - 14 or 20 + thl >= total:     # no payload
            return None
        poff = 34 + thl
        # what must match between merged segments: TOS, DF, TTL, addresses and ports,
        # ACK, data offset, window, options
        hkey = (bytes(f[15:16]), bytes(f[20:23]), bytes(f[26:38]), bytes(f[42:47]),
                bytes(f[48:50]), bytes(f[54:poff]))
        return (bytes(f[26:38]), hkey, _I.unpack_from(f, 38)[0], poff, total - 20 - thl,
                bool(fl & PSH))

    def _valid(self, f, poff, plen):
        """RFC 791 / RFC 9293 §3.1: the IPv4 header, and the segment with the
        pseudo-header, each sum to -0 with their checksums."""
        if not self.verify_checksum:
            return True
        if ones_sum(memoryview(f)[14:34]) != 0xFFFF:
            return False
        tcp_len = poff - 34 + plen
        return ones_sum(memoryview(f)[34:34 + tcp_len],
                        pseudo_header_sum(bytes(f[26:30]), bytes(f[30:34]), 6, tcp_len)) == 0xFFFF

    def coalesce(self, frames):
        """A batch of frames for the host -> the batch with in-order segments merged; the
        frames of each flow keep their order, other frames their place."""
        out = []
        open_ = {}                   # flow key -> index in out of its open merge
        state = {}                   # index -> [hkey, next seq, payload parts, psh, poff]
        for f in frames:
            c = self._candidate(f)
            if c is None:
                if len(f) >= 38 and f[12:14] == b"\x08\x00":
                    self._close(open_.pop(bytes(f[26:38]), None), out, state)
                else:                # not IPv4: a barrier for every flow
                    for idx in open_.values():
                        self._close(idx, out, state)
                    open_.clear()
                out.append(f)
                continue
            key, hkey, seq, poff, plen, psh = c
            if not self._valid(f, poff, plen):
                self.bad_checksum += 1
                self._close(open_.pop(key, None), out, state)
                out.append(f)
                continue
            idx = open_.get(key)
            if idx is not None:
                st = state[idx]
                if (st[0] == hkey and st[1] == seq and st[5] + plen <= self.max_bytes):
                    st[2].append(bytes(f[poff:poff + plen]))
                    st[1] = (seq + plen) & 0xFFFFFFFF
                    st[5] += plen
                    if psh:
                        st[3] = True
                        self._close(open_.pop(key), out, state)
                    continue
                self._close(open_.pop(key), out, state)
            out.append(f)
            if not psh:
                idx = len(out) - 1
                open_[key] = idx
                state[idx] = [hkey, (seq + plen) & 0xFFFFFFFF, [bytes(f[poff:poff + plen])],
                              False, poff, plen]
        for idx in open_.values():
            self._close(idx, out, state)
        return out

    def coalesce_flagged(self, rx):
        """``coalesce`` over (frame, csum_ok) pairs: a merged frame is new, its parts'
        checksums verified and its own recomputed (csum_ok True); the others keep their
        flag."""
        ok = {id(f): c for f, c in rx}
        return [(f, ok.get(id(f), True)) for f in self.coalesce([f for f, _ in rx])]

    def stats(self):
        return {"merges": self.merges, "merged_frames": self.merged_frames,
                "bad_checksum": self.bad_checksum}

    def _close(self, idx, out, state):
        """End the open merge at out[idx]: a frame of several segments is rebuilt."""
        if idx is None:
            return
        hkey, _, parts, psh, poff, _ = state.pop(idx)
        if len(parts) == 1:
            return                   # nothing was merged: the frame stays as it came
        f = bytearray(out[idx][:poff])
        for p in parts:
            f += p
        _H.pack_into(f, 16, len(f) - 14)
        if psh:
            f[47] |= PSH
        _ip_checksum(f)
        set_tcp_checksum(f)
        out[idx] = bytes(f)
        self.merges += 1
        self.merged_frames += len(parts)
