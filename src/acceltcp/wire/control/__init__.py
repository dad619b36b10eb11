"""Host <-> NIC control frames (AccelTCP Appendix A): codecs only, no state.

Every offload frame is Ethernet II with an otherwise unused EtherType followed by a
*control header*. Frames that carry a TCP segment put the header between the Ethernet
and the IPv4 header (`wrap` / `unwrap`); the others are a standalone header (plus any
Ethernet padding, which decoders ignore).

    0x090A  ETHERTYPE_NEW_CONNECTION   NIC -> host   NewConnection + the client's ACK
    0x090B  ETHERTYPE_TEARDOWN         host -> NIC   Teardown + a TSO segment (all unsent data)
    0x090C  ETHERTYPE_SPLICE           host -> NIC   Splice (two L4 rules)
    0x090D  ETHERTYPE_SPLICE_CLOSED    NIC -> host   SpliceClosed
    0x090E  ETHERTYPE_CONTROL          both ways     Listen, Unlisten, StatusRequest,
            StatusReport, SpliceInstalled, SpliceRefused, TeardownAccepted,
            TeardownRefused, TeardownDone (told apart by the type byte)
    0x090F  ETHERTYPE_CHIMNEY          both ways     TCP Chimney partial offload: a fixed
            header per type followed by a body of the header's `length` bytes
            (ChimneyOffload, ChimneyAccepted, ChimneyRefused, ChimneyData, ChimneySend,
            ChimneyUploadRequest, ChimneyUpload; `decode_chimney`)

Every header starts with the same 4-byte preamble: version (1 byte, VERSION), type
(1 byte, the message's TYPE), header length (2 bytes, the fixed size of that type,
a multiple of 4, so the IPv4 header behind a wrapped header keeps its usual alignment).
Network byte order, fixed size per type, u32 fields on 4-byte and u64 fields on 8-byte
offsets (from the header start). Reserved/padding bytes and unknown flag bits must be
zero. Byte layouts and examples: docs/control-frames.md.

API: each message is a small `__slots__` value class with `encode() -> bytes` (the
control header alone; ValueError on values decode would refuse) and, for standalone
messages, `frame(eth_dst, eth_src) -> bytes` (Ethernet header + encode()).
`decode(frame)` takes a whole Ethernet frame and returns the message (for 0x090A/0x090B
only the header: use `unwrap` to get the segment too); `decode_header(buf)` decodes a bare
control header. Both raise WireError with one of CTL_DROP_REASONS and nothing else.

The modules: `base` (preamble, field checks, the message base class and the layouts
messages share), `setup` (0x090A and Listen / Unlisten), `teardown` (0x090B and its
reports), `splice` (0x090C / 0x090D, the rules and their computation), `status`,
`frames` (decode, wrap / unwrap), `chimney` (0x090F) and `value` (the plain-value
encoding of a chimney state). Import from ``wire.control`` itself.
"""

from .base import (CTL_DROP_REASONS, ETHERTYPE_CHIMNEY, ETHERTYPE_CONTROL,
                   ETHERTYPE_NEW_CONNECTION, ETHERTYPE_SPLICE, ETHERTYPE_SPLICE_CLOSED,
                   ETHERTYPE_TEARDOWN, OFFLOAD_ETHERTYPES, VERSION, WS_NONE)
from .chimney import (CHIMNEY_DATA_FIN, CHIMNEY_MAX_BODY, CHIMNEY_MESSAGES,
                      CHIMNEY_REFUSED_BAD_STATE, CHIMNEY_REFUSED_DUPLICATE,
                      CHIMNEY_REFUSED_TABLE_FULL, CHIMNEY_SEND_FIN, UPLOAD_APP_CLOSE,
                      UPLOAD_ERROR, UPLOAD_HOST_REQUEST, UPLOAD_PEER_FIN, UPLOAD_PEER_RST,
                      UPLOAD_REASONS, UPLOAD_REORDER, UPLOAD_TIMEOUT, ChimneyAccepted,
                      ChimneyData, ChimneyOffload, ChimneyRefused, ChimneySend, ChimneyUpload,
                      ChimneyUploadRequest, decode_chimney, state_chunks)
from .frames import (MESSAGES, decode, decode_from_host, decode_header, unwrap, wire_key,
                     wrap)
from .setup import Listen, NewConnection, Unlisten
from .splice import (SPLICE_END_FIN, SPLICE_END_IDLE, SPLICE_END_RESET_CLIENT,
                     SPLICE_END_RESET_SERVER, SPLICE_REFUSED_BAD_RULE, SPLICE_REFUSED_DUPLICATE,
                     SPLICE_REFUSED_TABLE_FULL, L4Rule, Splice, SpliceClosed, SpliceInstalled,
                     SpliceRefused, SpliceSide, make_key, splice_rules)
from .status import StatusReport, StatusRequest
from .teardown import (STATE_CLOSE_WAIT, STATE_ESTABLISHED, TEARDOWN_END_CLOSED,
                       TEARDOWN_END_RESET, TEARDOWN_END_RETRIES, TEARDOWN_REFUSED_BAD_STATE,
                       TEARDOWN_REFUSED_DUPLICATE, TEARDOWN_REFUSED_TABLE_FULL, Teardown,
                       TeardownAccepted, TeardownDone, TeardownRefused)
from .value import decode_value, encode_value

__all__ = [
    "VERSION", "ETHERTYPE_NEW_CONNECTION", "ETHERTYPE_TEARDOWN", "ETHERTYPE_SPLICE",
    "ETHERTYPE_SPLICE_CLOSED", "ETHERTYPE_CONTROL", "OFFLOAD_ETHERTYPES", "CTL_DROP_REASONS",
    "WS_NONE", "STATE_ESTABLISHED", "STATE_CLOSE_WAIT",
    "SPLICE_END_FIN", "SPLICE_END_RESET_CLIENT", "SPLICE_END_RESET_SERVER",
    "SPLICE_END_IDLE", "SPLICE_REFUSED_TABLE_FULL", "SPLICE_REFUSED_BAD_RULE",
    "SPLICE_REFUSED_DUPLICATE", "TEARDOWN_REFUSED_TABLE_FULL", "TEARDOWN_REFUSED_BAD_STATE",
    "TEARDOWN_REFUSED_DUPLICATE", "TEARDOWN_END_CLOSED", "TEARDOWN_END_RESET",
    "TEARDOWN_END_RETRIES",
    "NewConnection", "Teardown", "L4Rule", "SpliceSide", "make_key", "splice_rules",
    "Splice", "SpliceClosed", "Listen", "Unlisten",
    "StatusRequest", "StatusReport", "SpliceInstalled", "SpliceRefused", "TeardownAccepted",
    "TeardownRefused", "TeardownDone", "MESSAGES",
    "decode", "decode_header", "wrap", "unwrap", "decode_from_host", "wire_key",
    "ETHERTYPE_CHIMNEY", "CHIMNEY_MESSAGES", "CHIMNEY_MAX_BODY", "CHIMNEY_REFUSED_TABLE_FULL",
    "CHIMNEY_REFUSED_BAD_STATE", "CHIMNEY_REFUSED_DUPLICATE", "UPLOAD_HOST_REQUEST",
    "UPLOAD_APP_CLOSE", "UPLOAD_PEER_FIN", "UPLOAD_PEER_RST", "UPLOAD_REORDER",
    "UPLOAD_TIMEOUT", "UPLOAD_ERROR", "UPLOAD_REASONS", "CHIMNEY_DATA_FIN", "CHIMNEY_SEND_FIN",
    "ChimneyOffload", "ChimneyAccepted", "ChimneyRefused", "ChimneyData", "ChimneySend",
    "ChimneyUploadRequest", "ChimneyUpload", "decode_chimney", "encode_value",
    "decode_value", "state_chunks",
]
