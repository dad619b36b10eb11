"""The one error type of the codecs.

`WireError.reason` is a stable snake_case name that the host stack uses directly
as a drop-counter key; every reason a parser can raise is listed in DROP_REASONS.
"""

__all__ = ["WireError", "DROP_REASONS"]

#: Every `WireError.reason` the wire/ parsers raise (drop-counter keys).
DROP_REASONS = (
    # Ethernet
    "eth_short",               # frame shorter than the 14-byte header
    # ARP (RFC 826; only Ethernet/IPv4 is supported)
    "arp_short",               # fewer than 28 bytes
    "arp_unsupported",         # htype != 1, ptype != 0x0800, hlen != 6, plen != 4, or op not request/reply
    # IPv4 (RFC 791)
    "ip_short",                # fewer than 20 bytes
    "ip_bad_version",          # version != 4
    "ip_bad_ihl",              # IHL < 5
    "ip_options",              # IHL > 5: IP options are not handled
    "ip_bad_length",           # total_length < header length or > bytes present
    "ip_bad_checksum",         # header checksum does not verify
    "ip_fragment",             # MF set or fragment offset != 0 (no reassembly)
    # TCP (RFC 9293 §3.1/3.2, RFC 7323, RFC 2018)
    "tcp_short",               # fewer than 20 bytes
    "tcp_bad_offset",          # data offset < 5 words or past the segment end
    "tcp_bad_checksum",        # checksum (with pseudo-header) does not verify
    "tcp_option_overrun",      # option length byte missing, < 2, or past the header end
    "tcp_bad_option_length",   # known option with a wrong length (MSS != 4, WS != 3, ...)
)


class WireError(ValueError):
    """Malformed input. `reason` is one of DROP_REASONS; `detail` is free text."""

    def __init__(self, reason, detail=""):
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self):
        return self.reason + (": " + self.detail if self.detail else "")
