"""TCP header and options (RFC 9293 §3.1/§3.2, RFC 7323 WS/TS, RFC 2018 SACK).

`parse_tcp` validates once and returns a TcpSegment (a plain __slots__ object).
Fast paths (no option loop): data offset 5 (no options), 8 with the Linux
`NOP NOP TS` layout, 10 with the Linux SYN layout (MSS, SACK-perm or NOP NOP, TS,
NOP WS) and 11/13/15 with Linux's SACK layout (NOP NOP TS, NOP NOP SACK with 1-3
blocks). Any other layout takes the one option walk, `iter_tcp_options`. Checksums use the mod-0xFFFF trick of wire.checksum: the sum is formed from
integer fields, never by concatenating a pseudo-header.
Option *semantics* (MSS/WS only on SYN, RFC 7323 §3.2 TS rules, ...) are tcp/'s job.
"""

import struct

from .checksum import _fold
from .errors import WireError

__all__ = [
    "FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR",
    "TCP_HLEN", "TCP_MAX_OPTION_BYTES",
    "OPT_EOL", "OPT_NOP", "OPT_MSS", "OPT_WSCALE", "OPT_SACK_PERMITTED", "OPT_SACK",
    "OPT_TIMESTAMPS", "MAX_WSCALE",
    "TcpSegment", "parse_tcp", "iter_tcp_options", "tcp_options", "build_tcp", "build_tcp_frame", "flags_str",
]

FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10
URG = 0x20
ECE = 0x40
CWR = 0x80

TCP_HLEN = 20
TCP_MAX_OPTION_BYTES = 40      # data offset is 4 bits: at most 15 words = 60 bytes of header

OPT_EOL = 0
OPT_NOP = 1
OPT_MSS = 2
OPT_WSCALE = 3
OPT_SACK_PERMITTED = 4
OPT_SACK = 5
OPT_TIMESTAMPS = 8
MAX_WSCALE = 14                # RFC 7323 §2.3

# sport, dport, seq, ack, offset byte (doff << 4 | NS), flags, window, checksum, urgent
_TCP = struct.Struct("!HHIIBBHHH")
# the same + one option word + tsval + tsecr: the NOP,NOP,TS(10) layout (32-byte header)
_TCP_TS = struct.Struct("!HHIIBBHHHIII")
# the same + the SYN layout of tcp_options (and Linux): MSS, SACK-perm+TS (or NOP,NOP,TS),
# NOP,WS (40-byte header)
_TCP_SYN = struct.Struct("!HHIIBBHHHIIIII")
_NOP_NOP_TS = 0x0101080A
_SACKPERM_TS = 0x0402080A
_NOP_NOP_SACK = 0x01010500      # | the SACK option's length
_OPT_TS = struct.Struct("!III")        # option word, tsval, tsecr
_OPT_MSS = struct.Struct("!BBH")
# A SYN's full option set in the layout below (MSS, SACK-perm/NOP NOP + TS, NOP WS): one pack.
_OPT_SYN = struct.Struct("!BBHIIIBBBB")
_II = struct.Struct("!II")
_H = struct.Struct("!H")
# Ethernet + IPv4 + TCP fixed headers (54 bytes) in one Struct.
_FRAME = struct.Struct("!6s6sH" "BBHHHBBH4s4s" "HHIIBBHHH")

# Bound once (global name lookups are cheaper than attribute lookups per packet).
_from_bytes = int.from_bytes
_tcp_unpack = _TCP.unpack_from
_tcp_ts_unpack = _TCP_TS.unpack_from
_tcp_ts_sack_unpack = struct.Struct("!HHIIBBHHHIIII").unpack_from   # ... + NOP NOP SACK len
_tcp_syn_unpack = _TCP_SYN.unpack_from
_frame_pack = _FRAME.pack


class TcpSegment:
    """A parsed TCP segment. Absent options: mss/wscale/tsval/tsecr None,
    sack_permitted False, sack_blocks/unknown_options (). `payload` is bytes or
    memoryview (a slice of what was passed to parse_tcp). `sack_blocks`: tuple of
    (left, right) in wire order; `unknown_options`: tuple of (kind, bytes)."""

    __slots__ = ("src_port", "dst_port", "seq", "ack", "flags", "window", "urgent", "payload",
                 "mss", "wscale", "sack_permitted", "sack_blocks", "tsval", "tsecr",
                 "unknown_options")

    def __init__(self, src_port=0, dst_port=0, seq=0, ack=0, flags=0, window=0, urgent=0,
                 payload=b"", mss=None, wscale=None, sack_permitted=False, sack_blocks=(),
                 tsval=None, tsecr=None, unknown_options=()):
        self.src_port = src_port
        self.dst_port = dst_port
        self.seq = seq
        self.ack = ack
        self.flags = flags
        self.window = window
        self.urgent = urgent
        self.payload = payload
        self.mss = mss
        self.wscale = wscale
        self.sack_permitted = sack_permitted
        self.sack_blocks = sack_blocks
        self.tsval = tsval
        self.tsecr = tsecr
        self.unknown_options = unknown_options

    def __repr__(self):
        parts = ["%d->%d" % (self.src_port, self.dst_port), flags_str(self.flags),
                 "seq=%d" % self.seq, "ack=%d" % self.ack, "win=%d" % self.window,
                 "len=%d" % len(self.payload)]
        if self.urgent:
            parts.append("urg=%d" % self.urgent)
        if self.mss is not None:
            parts.append("mss=%d" % self.mss)
        if self.wscale is not None:
            parts.append("ws=%d" % self.wscale)
        if self.sack_permitted:
            parts.append("sackOK")
        if self.sack_blocks:
            parts.append("sack=%r" % (self.sack_blocks,))
        if self.tsval is not None:
            parts.append("ts=%d/%d" % (self.tsval, self.tsecr))
        if self.unknown_options:
            parts.append("opts=%r" % (self.unknown_options,))
        return "TcpSegment(" + " ".join(parts) + ")"


def flags_str(flags):
    """Flag bits -> tcpdump-like letters, e.g. SYN|ACK -> 'SA' (debug/repr only)."""
    return "".join(c for bit, c in ((SYN, "S"), (FIN, "F"), (RST, "R"), (PSH, "P"),
                                     (ACK, "A"), (URG, "U"), (ECE, "E"), (CWR, "C"))
                   if flags & bit) or "."


def iter_tcp_options(buf, i, end):
    """Walk the options in buf[i:end] (RFC 9293 §3.2: EOL, NOP, or kind-length-value):
    yields (kind, offset of the value, option length) for each option but NOP, up to
    EOL (the rest is padding). The one option walk: ``parse_tcp`` reads the values, the
    splice dataplane (``nic.splice``) shifts TSval/TSecr and SACK edges in place at the
    offsets yielded. Checks the structure and the lengths of the two options whose
    values both read at fixed offsets (TS: 10, RFC 7323 §3.2; SACK: 2 + 8n, n >= 1,
    RFC 2018 §3); other lengths are the caller's. Raises WireError when the walk reaches
    a bad option: tcp_option_overrun, tcp_bad_option_length (a caller that must not
    act on a partly valid header collects the whole walk first)."""
    while i < end:
        kind = buf[i]
        if kind == 1:                       # NOP
            i += 1
            continue
        if kind == 0:                       # EOL: the rest is padding
            return
        if i + 1 >= end:
            raise WireError("tcp_option_overrun", "no length byte")
        olen = buf[i + 1]
        if olen < 2 or i + olen > end:
            raise WireError("tcp_option_overrun")
        if kind == 8:
            if olen != 10:
                raise WireError("tcp_bad_option_length", "timestamps")
        elif kind == 5:
            if olen < 10 or (olen - 2) & 7:
                raise WireError("tcp_bad_option_length", "sack")
        yield kind, i + 2, olen
        i += olen


def parse_tcp(buf, src_ip, dst_ip, verify_checksum=True):
    """Parse the TCP segment `buf` (the IP payload, sliced to the IP total length).

    src_ip/dst_ip (4 bytes) feed the pseudo-header (RFC 9293 §3.1). Raises WireError:
    tcp_short, tcp_bad_offset, tcp_bad_checksum, tcp_option_overrun,
    tcp_bad_option_length. A window-scale shift > 14 is reported as 14 (RFC 7323
    §2.3: "MUST use 14"). Options after EOL are ignored; a repeated option: last wins.
    """
    n = len(buf)
    if n < 20:
        raise WireError("tcp_short")
    doff = (buf[12] >> 4) << 2
    if doff < 20 or doff > n:
        raise WireError("tcp_bad_offset")
    if verify_checksum:
        s = _from_bytes(buf, "big")
        if n & 1:
            s <<= 8
        if n > 1024:
            s = _fold(s)
        # Sum incl. checksum field and pseudo-header must be -0, i.e. 0 mod 0xFFFF
        # (never all-zero: proto 6 is in it). Reduce the long integer first, then add
        # the (small) pseudo-header.
        if (s % 0xFFFF + _from_bytes(src_ip, "big") + _from_bytes(dst_ip, "big") + 6 + n) \
                % 0xFFFF:
            raise WireError("tcp_bad_checksum")
    if doff == 20:
        sport, dport, seq, ack, _, flags, window, _, urg = _tcp_unpack(buf)
        return TcpSegment(sport, dport, seq, ack, flags, window, urg, buf[20:],
                          None, None, False, (), None, None, ())
    if doff == 32:
        sport, dport, seq, ack, _, flags, window, _, urg, word, tsval, tsecr = \
            _tcp_ts_unpack(buf)
        if word == _NOP_NOP_TS:
            return TcpSegment(sport, dport, seq, ack, flags, window, urg, buf[32:],
                              None, None, False, (), tsval, tsecr, ())
    elif doff == 40:
        sport, dport, seq, ack, _, flags, window, _, urg, mss_opt, word, tsval, tsecr, \
            ws_opt = _tcp_syn_unpack(buf)
        if mss_opt >> 16 == 0x0204 and ws_opt >> 8 == 0x010303 and \
                (word == _SACKPERM_TS or word == _NOP_NOP_TS):
            wscale = ws_opt & 0xFF
            return TcpSegment(sport, dport, seq, ack, flags, window, urg, buf[40:],
                              mss_opt & 0xFFFF, wscale if wscale <= 14 else 14,
                              word == _SACKPERM_TS, (), tsval, tsecr, ())
    elif doff == 44 or doff == 52 or doff == 60:
        sport, dport, seq, ack, _, flags, window, _, urg, word, tsval, tsecr, sack_opt = \
            _tcp_ts_sack_unpack(buf)
        if word == _NOP_NOP_TS and sack_opt == _NOP_NOP_SACK | (doff - 34):
            # Linux's SACK layout: TS, then 1-3 blocks filling the header (RFC 2018 §3)
            return TcpSegment(sport, dport, seq, ack, flags, window, urg, buf[doff:],
                              None, None, False, tuple(_II.iter_unpack(buf[36:doff])),
                              tsval, tsecr, ())
    sport, dport, seq, ack, _, flags, window, _, urg = _tcp_unpack(buf)
    # RFC 9293 §3.2: options are EOL, NOP, or kind-length-value.
    mss = wscale = tsval = tsecr = None
    sack_permitted = False
    sack_blocks = unknown = ()
    for kind, i, olen in iter_tcp_options(buf, 20, doff):
        if kind == 8:                       # RFC 7323 §3.2 (length checked by the walk)
            tsval, tsecr = _II.unpack_from(buf, i)
        elif kind == 2:                     # RFC 9293 §3.7.1
            if olen != 4:
                raise WireError("tcp_bad_option_length", "mss")
            mss = _H.unpack_from(buf, i)[0]
        elif kind == 3:                     # RFC 7323 §2.2
            if olen != 3:
                raise WireError("tcp_bad_option_length", "wscale")
            wscale = buf[i]
            if wscale > 14:
                wscale = 14
        elif kind == 4:                     # RFC 2018 §2
            if olen != 2:
                raise WireError("tcp_bad_option_length", "sack_permitted")
            sack_permitted = True
        elif kind == 5:                     # RFC 2018 §3 (length checked by the walk)
            sack_blocks = tuple(_II.iter_unpack(buf[i:i + olen - 2]))
        else:
            unknown += ((kind, bytes(buf[i:i + olen - 2])),)
    return TcpSegment(sport, dport, seq, ack, flags, window, urg, buf[doff:],
                      mss, wscale, sack_permitted, sack_blocks, tsval, tsecr, unknown)


def tcp_options(mss=None, wscale=None, sack_permitted=False, timestamps=None, sack_blocks=(),
                unknown=()):
    """Encode options in Linux's layouts (tcp_options_write), 4-byte aligned:

        MSS            02 04 mss
        SACK-perm+TS   04 02 08 0a tsval tsecr     (TS alone: 01 01 08 0a ...)
        SACK-perm      01 01 04 02                 (without TS)
        WS             01 03 03 shift
        SACK blocks    01 01 05 len (left right)*
        unknown        kind len data ... then EOL/zero padding (RFC 9293 §3.1)

    `timestamps` is (tsval, tsecr); `sack_blocks` are (left, right) pairs; `unknown`
    are raw (kind, bytes) TLVs emitted verbatim (kind >= 2). Raises ValueError for
    more than 40 bytes: fitting SACK blocks is the CALLER's job (at most 4 blocks
    without TS, 3 with TS; RFC 2018 §3), as is sending MSS/WS only on SYNs.
    """
    if mss is None and wscale is None and not sack_permitted and not sack_blocks \
            and not unknown:
        if timestamps is None:
            return b""
        try:
            return _OPT_TS.pack(_NOP_NOP_TS, timestamps[0], timestamps[1])
        except struct.error as e:
            raise ValueError("timestamps: %s" % e) from None
    if mss is not None and wscale is not None and timestamps is not None and \
            not sack_blocks and not unknown:
        # A SYN or SYN,ACK offering everything: the same bytes as the general path below.
        try:
            return _OPT_SYN.pack(2, 4, mss, _SACKPERM_TS if sack_permitted else _NOP_NOP_TS,
                                 timestamps[0], timestamps[1], 1, 3, 3, wscale)
        except struct.error as e:
            raise ValueError(str(e)) from None
    try:
        parts = []
        if mss is not None:
            parts.append(_OPT_MSS.pack(2, 4, mss))
        if timestamps is not None:
            parts.append(_OPT_TS.pack(_SACKPERM_TS if sack_permitted else _NOP_NOP_TS,
                                      timestamps[0], timestamps[1]))
        elif sack_permitted:
            parts.append(b"\x01\x01\x04\x02")
        if wscale is not None:
            parts.append(bytes((1, 3, 3, wscale)))
        if sack_blocks:
            parts.append(bytes((1, 1, 5, 2 + 8 * len(sack_blocks))))
            for left, right in sack_blocks:
                parts.append(_II.pack(left, right))
        for kind, data in unknown:
            if kind < 2:
                raise ValueError("unknown option kind must be >= 2")
            parts.append(bytes((kind, 2 + len(data))))
            parts.append(bytes(data))
    except struct.error as e:
        raise ValueError(str(e)) from None
    out = b"".join(parts)
    pad = -len(out) & 3
    if pad:
        out += b"\x00" * pad
    if len(out) > 40:
        raise ValueError("TCP options need %d bytes > 40" % len(out))
    return out


def _payload_sum(payload, plen):
    """The payload as one integer of 16-bit words (odd length padded), folded when long:
    added to the header fields, it gives the TCP checksum sum (RFC 1071)."""
    p = _from_bytes(payload, "big")
    if plen & 1:
        p <<= 8
    return _fold(p) if plen > 1024 else p


def build_tcp(src_ip, dst_ip, sport, dport, seq, ack, flags, window, options=b"", payload=b"",
              urgent=0):
    """TCP header + options + payload with the checksum filled (pseudo-header from src/dst ip).

    `options` must be encoded already (tcp_options): a multiple of 4, at most 40 bytes.
    Out-of-range fields raise ValueError.
    """
    olen = len(options)
    plen = len(payload)
    if olen & 3 or olen > 40:
        raise ValueError("options length must be a multiple of 4 and <= 40")
    off = (20 + olen) << 2                  # (doff words) << 4
    tcp_len = 20 + olen + plen
    s = (_from_bytes(src_ip, "big") + _from_bytes(dst_ip, "big") + 6 + tcp_len
         + sport + dport + seq + ack + (off << 8) + flags + window + urgent)
    if olen:
        s += _from_bytes(options, "big")
    if plen:
        s += _payload_sum(payload, plen)
    try:
        hdr = _TCP.pack(sport, dport, seq, ack, off, flags, window, -s % 0xFFFF, urgent)
    except struct.error as e:
        raise ValueError(str(e)) from None
    return hdr + options + payload


def build_tcp_frame(eth_dst, eth_src, src_ip, dst_ip, ident, sport, dport, seq, ack, flags,
                    window, options, payload, ttl=64):
    """THE hot-path builder: Ethernet + IPv4 (DF, tos 0, no options) + TCP, both checksums.

    `ident` is taken mod 2**16. `options` as for build_tcp. Not padded to the 60-byte
    Ethernet minimum (a NIC/TAP does that; receivers ignore padding). ValueError on
    out-of-range fields or a total length > 65535. Address lengths are NOT checked
    here (hot path): struct pads/truncates a wrong-size MAC/IP silently.
    """
    olen = len(options)
    plen = len(payload)
    if olen & 3 or olen > 40:
        raise ValueError("options length must be a multiple of 4 and <= 40")
    tcp_len = 20 + olen + plen
    if tcp_len > 65515:
        raise ValueError("IPv4 total length > 65535")
    ident &= 0xFFFF
    addrs = _from_bytes(src_ip, "big") + _from_bytes(dst_ip, "big")
    # IPv4 checksum from the field values (0x4500 ver/ihl/tos, 0x4000 DF, proto 6).
    ip_csum = -(0x8500 + 20 + tcp_len + ident + (ttl << 8) + 6 + addrs) % 0xFFFF
    off = (20 + olen) << 2
    s = (addrs + 6 + tcp_len + sport + dport + seq + ack + (off << 8) + flags + window)
    if olen:
        s += _from_bytes(options, "big")
    if plen:
        s += _payload_sum(payload, plen)
    try:
        hdr = _frame_pack(eth_dst, eth_src, 0x0800,
                          0x45, 0, 20 + tcp_len, ident, 0x4000, ttl, 6, ip_csum, src_ip, dst_ip,
                          sport, dport, seq, ack, off, flags, window, -s % 0xFFFF, 0)
    except struct.error as e:
        raise ValueError(str(e)) from None
    return hdr + options + payload          # one copy of the payload (CPython concat)


if __name__ == "__main__":   # micro-benchmark: python -m acceltcp.wire.tcp
    import timeit

    from .ethernet import parse_ethernet
    from .ipv4 import parse_ipv4

    _src, _dst, _m1, _m2 = b"\x0a\0\0\x01", b"\x0a\0\0\x02", b"\x02" * 6, b"\x04" * 6
    _opts = tcp_options(timestamps=(123456, 654321))

    def _bench(name, fn, number=100000):
        t = min(timeit.repeat(fn, number=number, repeat=7)) / number
        print("%-44s %7.3f us" % (name, t * 1e6))

    for _size in (64, 1460):
        _pl = bytes(range(256)) * (_size // 256) + bytes(_size % 256)
        _frame = build_tcp_frame(_m1, _m2, _src, _dst, 7, 1234, 80, 4000000000, 5, ACK | PSH,
                                 65535, _opts, _pl)

        def _parse(frame=_frame):
            mv = memoryview(frame)
            parse_ethernet(mv)
            ip = parse_ipv4(mv[14:])
            return parse_tcp(mv[34:14 + ip.total_length], ip.src, ip.dst)

        _bench("build_tcp_frame  %4d B payload + TS" % _size,
               lambda pl=_pl: build_tcp_frame(_m1, _m2, _src, _dst, 7, 1234, 80, 4000000000, 5,
                                              ACK | PSH, 65535, _opts, pl))
        _bench("parse eth+ip+tcp %4d B payload + TS (mv)" % _size, _parse)
    _bench("tcp_options(timestamps=...)", lambda: tcp_options(timestamps=(1, 2)))
    _bench("tcp_options(SYN: mss, sack, ts, ws)",
           lambda: tcp_options(mss=1460, wscale=7, sack_permitted=True, timestamps=(1, 2)))


#: TCP payload of a TSO super-segment: IPv4 total length <= 65535, minus IPv4 (20) and the
#: largest TCP header (60).
TSO_PAYLOAD_MAX = 65535 - 20 - 60


def build_tcp_header_partial(eth_dst, eth_src, src_ip, dst_ip, ident, sport, dport, seq, ack,
                             flags, window, options, payload_len, ttl=64):
    """Ethernet + IPv4 (DF, full header checksum) + TCP header + options for a segment of
    ``payload_len`` bytes, for a device that completes the TCP checksum (CHECKSUM_PARTIAL,
    virtio-net NEEDS_CSUM): the checksum field holds the folded pseudo-header sum over the
    whole TCP length, and the payload is never summed here. A ``payload_len`` above the
    MSS makes it a TSO super-segment that the device cuts into MSS-sized frames."""
    olen = len(options)
    tcp_len = 20 + olen + payload_len
    ident &= 0xFFFF
    addrs = int.from_bytes(src_ip, "big") + int.from_bytes(dst_ip, "big")
    ip_csum = -(0x8500 + 20 + tcp_len + ident + (ttl << 8) + 6 + addrs) % 0xFFFF
    partial = (addrs + 6 + tcp_len) % 0xFFFF or 0xFFFF
    try:
        hdr = _FRAME.pack(eth_dst, eth_src, 0x0800, 0x45, 0, 20 + tcp_len, ident, 0x4000, ttl,
                          6, ip_csum, src_ip, dst_ip, sport, dport, seq, ack, (20 + olen) << 2,
                          flags, window, partial, 0)
    except struct.error as e:
        raise ValueError(str(e)) from None
    return hdr + options if olen else hdr
