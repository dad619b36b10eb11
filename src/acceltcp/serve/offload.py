"""The host stack on an offload-capable device (TAP with virtio-net headers).

Two thin subclasses connect the stack to the device's checksum offload, TSO and LRO,
without touching the sans-I/O core:

* ``OffloadStack(HostStack)`` — ``receive_frame(frame, csum_ok)``: a frame the kernel
  marked checksum-valid or partial (``csum_ok``) is parsed with
  ``parse_tcp(..., verify_checksum=False)``; a 64 KiB LRO/GRO super-frame then costs
  no checksum pass at all. On output, data segments leave through
  ``device.send_segment(header, payload, gso_size)`` with a *partial* checksum (the
  pseudo-header sum only): the payload is never summed in Python, and the payload
  bytes are written with ``writev`` after the header instead of being concatenated.
  Frames without payload (ACKs, SYNs, RSTs, ARP) keep the base path.
* ``TsoConnection(TcpConnection)`` — after option negotiation it sets ``max_seg`` to
  the largest multiple of the MSS that fits an IPv4 datagram, so the TCB hands the
  stack whole TSO super-segments; the kernel (``gso_size`` = MSS) does the rest.

With ``offload=False`` neither subclass changes anything: the base stack verifies
every checksum and sends MSS-sized, fully checksummed frames.

These subclasses are the stop-gap for two small host-side hooks (see
docs/realnet.md): ``HostStack.receive_frame(frame, csum_ok=False)`` and an output
hook that passes ``(header, payload, gso_size)`` to devices that can offload. If the
base class grows ``csum_ok`` itself, ``OffloadStack`` uses it.
"""

import inspect
import struct

from ..host import stack as _stack_module
from ..host.stack import HostStack
from ..tcp.connection import TcpConnection
from ..wire.tcp import parse_tcp

__all__ = ["OffloadStack", "TsoConnection", "tso_connection_class", "TSO_PAYLOAD_MAX",
           "build_partial_header"]

#: TCP payload of a TSO super-frame: IPv4 total length <= 65535, minus IPv4 (20) and the
#: largest TCP header (60).
TSO_PAYLOAD_MAX = 65535 - 20 - 60

# Ethernet + IPv4 + TCP fixed headers, as wire.tcp builds them.
_FRAME = struct.Struct("!6s6sH" "BBHHHBBH4s4s" "HHIIBBHHH")
_frame_pack = _FRAME.pack
_from_bytes = int.from_bytes
_BASE_HAS_CSUM_OK = "csum_ok" in inspect.signature(HostStack.receive_frame).parameters


def _parse_tcp_trusted(buf, src_ip, dst_ip, verify_checksum=True):
    return parse_tcp(buf, src_ip, dst_ip, False)


def build_partial_header(eth_dst, eth_src, src_ip, dst_ip, ident, sport, dport, seq, ack, flags,
                         window, options, payload_len, ttl=64):
    """Ethernet + IPv4 (DF, full header checksum) + TCP header + options for a segment of
    ``payload_len`` bytes whose TCP checksum field holds the folded pseudo-header sum
    (CHECKSUM_PARTIAL / VIRTIO_NET_HDR_F_NEEDS_CSUM: the device sums from byte 34 on)."""
    olen = len(options)
    tcp_len = 20 + olen + payload_len
    ident &= 0xFFFF
    addrs = _from_bytes(src_ip, "big") + _from_bytes(dst_ip, "big")
    ip_csum = -(0x8500 + 20 + tcp_len + ident + (ttl << 8) + 6 + addrs) % 0xFFFF
    partial = (addrs + 6 + tcp_len) % 0xFFFF or 0xFFFF
    hdr = _frame_pack(eth_dst, eth_src, 0x0800, 0x45, 0, 20 + tcp_len, ident, 0x4000, ttl, 6,
                      ip_csum, src_ip, dst_ip, sport, dport, seq, ack, (20 + olen) << 2, flags,
                      window, partial, 0)
    return hdr + options if olen else hdr


class TsoConnection(TcpConnection):
    """A TCB that emits TSO super-segments (``max_seg`` a multiple of the MSS)."""

    __slots__ = ()
    tso_payload = TSO_PAYLOAD_MAX

    def _negotiate(self, seg, now):
        TcpConnection._negotiate(self, seg, now)
        mss = self.mss
        t = self.tso_payload
        if t > mss:
            self.max_seg = t - t % mss


def tso_connection_class(payload=TSO_PAYLOAD_MAX):
    """A TsoConnection subclass whose super-segments carry at most `payload` bytes."""
    return type("TsoConnection%d" % payload, (TsoConnection,), {"__slots__": (),
                                                                "tso_payload": payload})


class OffloadStack(HostStack):
    """HostStack that uses a device's checksum offload and TSO (module docstring).

    ``offload``: use them (the device must provide ``send_segment``). ``tso``: also
    emit super-segments (default: same as ``offload``).
    """

    def __init__(self, device, ip, clock, *, offload=True, tso=None, **kw):
        if tso is None:
            tso = offload
        if tso and not offload:
            raise ValueError("TSO needs checksum offload")
        if tso and "tcb_class" not in kw:
            kw["tcb_class"] = TsoConnection
        super().__init__(device, ip, clock, **kw)
        self.offload = offload
        self.tso = tso
        self._send_segment = device.send_segment if offload else None
        self.csum_skipped = 0          # frames whose TCP checksum was trusted, not verified

    # ------------------------------------------------------------------ receive
    def receive_frame(self, frame, csum_ok=False):
        if not csum_ok:
            return HostStack.receive_frame(self, frame)
        self.csum_skipped += 1
        if _BASE_HAS_CSUM_OK:
            return HostStack.receive_frame(self, frame, csum_ok=True)
        return self._receive_trusted(frame)

    def _receive_trusted(self, frame):
        """The base receive path with the TCP checksum already vouched for by the kernel.

        Until HostStack.receive_frame takes ``csum_ok`` itself, the base code runs with
        host.stack's module-level ``parse_tcp`` swapped, for the duration of this one
        call, for a variant that skips the checksum: the base path stays the only copy
        of the hot path (no drift). The stack is single-threaded and never receives
        frames re-entrantly (devices deliver from the event loop), so the swap is seen
        by this frame only.
        """
        mod = _stack_module
        mod.parse_tcp = _parse_tcp_trusted
        try:
            HostStack.receive_frame(self, frame)
        finally:
            mod.parse_tcp = parse_tcp

    # ------------------------------------------------------------------ output
    def _output(self, conn, flags, seq, ack, window, options, payload):
        send_segment = self._send_segment
        if send_segment is None or not payload:
            return HostStack._output(self, conn, flags, seq, ack, window, options, payload)
        rec = conn.owner
        e = rec.arp
        if e is None or not e.live:
            e = rec.arp = self._arp.get(rec.nexthop)
            if e is None:                  # unresolved: the base path queues a full frame
                return HostStack._output(self, conn, flags, seq, ack, window, options,
                                         payload)
        e.used = True
        mss = conn.mss
        n = len(payload)
        ident = (self._ident + 1) & 0xFFFF
        # A super-frame stands for ceil(n / mss) datagrams: reserve as many IP IDs, as a
        # NIC doing TSO would use (RFC 6864: meaningless with DF, but keeps them unique).
        self._ident = (ident + (n - 1) // mss) & 0xFFFF
        hdr = build_partial_header(e.mac, self.mac, self.ip, rec.remote_ip, ident,
                                   rec.local_port, rec.remote_port, seq, ack, flags, window,
                                   options, n)
        self._frames_out += 1
        self._bytes_out += len(hdr) + n
        send_segment(hdr, payload, mss)
