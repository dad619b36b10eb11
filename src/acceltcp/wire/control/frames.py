"""Whole offload frames: decoding a frame or a bare header to its message, and putting a
NewConnection / Teardown header in front of a segment (`wrap`) or taking it off
(`unwrap`)."""

from ..errors import WireError
from .base import (ETHERTYPE_CHIMNEY, ETHERTYPE_CONTROL, ETHERTYPE_NEW_CONNECTION,
                   ETHERTYPE_SPLICE, ETHERTYPE_TEARDOWN, _ethertype, _read_header)
from .chimney import decode_chimney
from .setup import Listen, NewConnection, Unlisten
from .splice import Splice, SpliceClosed, SpliceInstalled, SpliceRefused
from .status import StatusReport, StatusRequest
from .teardown import Teardown, TeardownAccepted, TeardownDone, TeardownRefused

__all__ = ["MESSAGES", "decode", "decode_header", "wrap", "unwrap", "decode_from_host",
           "wire_key"]

MESSAGES = (NewConnection, Teardown, Splice, SpliceClosed, Listen, Unlisten, StatusRequest,
            StatusReport, SpliceInstalled, SpliceRefused, TeardownAccepted, TeardownRefused,
            TeardownDone)
_BY_TYPE = {m.TYPE: m for m in MESSAGES}


def decode_header(buf, ethertype=None):
    """Decode a bare control header at the start of `buf` (trailing bytes ignored).
    With `ethertype`, the type must be one that EtherType carries. Raises WireError."""
    cls, t = _read_header(buf, _BY_TYPE, ethertype)
    return cls._build(t)


def decode(frame):
    """A whole offload Ethernet frame -> its message (for 0x090A/0x090B: the header only).
    Raises WireError (CTL_DROP_REASONS)."""
    et = _ethertype(frame)
    if et == ETHERTYPE_CHIMNEY:
        return decode_chimney(frame)
    return decode_header(memoryview(frame)[14:], et)


def wrap(ethernet_frame, header, check=True):
    """IPv4 Ethernet frame + NewConnection/Teardown header -> offload frame (EtherType
    replaced, header inserted between Ethernet and IP). ValueError if the frame is not
    IPv4 or the header does not carry a segment (`check`: see ``encode``)."""
    if not header.CARRIES_SEGMENT:
        raise ValueError("%s does not travel in front of a segment" % type(header).__name__)
    if len(ethernet_frame) < 14 or ethernet_frame[12:14] != b"\x08\x00":
        raise ValueError("not an IPv4 Ethernet frame")
    return bytes(ethernet_frame[:12]) + header.ETHERTYPE.to_bytes(2, "big") + \
        header.encode(check) + bytes(ethernet_frame[14:])


def unwrap(frame):
    """Offload frame (0x090A/0x090B) -> (header, the Ethernet frame with EtherType 0x0800
    and the header removed). Raises WireError; the IP/TCP part is not checked here."""
    et = _ethertype(frame)
    if et not in (ETHERTYPE_NEW_CONNECTION, ETHERTYPE_TEARDOWN):
        raise WireError("ctl_bad_ethertype", "0x%04x carries no segment" % et)
    header = decode_header(memoryview(frame)[14:], et)
    return header, bytes(frame[:12]) + b"\x08\x00" + bytes(frame[14 + header._S.size:])


def decode_from_host(frame):
    """A control frame the host sends its NIC -> (message, the segment frame a 0x090B
    Teardown carries, else None), or None if its EtherType is none of the host->NIC
    ones (0x090B, 0x090C, 0x090E, 0x090F). Raises WireError when it does not decode."""
    et = (frame[12] << 8) | frame[13]
    if et == ETHERTYPE_TEARDOWN:
        return unwrap(frame)
    if et == ETHERTYPE_CHIMNEY:
        return decode_chimney(frame), None
    if et == ETHERTYPE_CONTROL or et == ETHERTYPE_SPLICE:
        return decode(frame), None
    return None


def wire_key(frame):
    """The wire-side 4-tuple key (client ip | local ip | client port | local port, as in
    ``frame[26:38]`` of a frame from the client) of a frame the host sends (local ip |
    client ip | local port | client port); 12 zero bytes for a frame too short to have
    one."""
    if len(frame) < 38:
        return bytes(12)
    return (bytes(frame[30:34]) + bytes(frame[26:30]) + bytes(frame[36:38])
            + bytes(frame[34:36]))
