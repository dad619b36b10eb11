"""Hypothesis strategies shared by the wire/ tests."""

from hypothesis import strategies as st
from scapy.layers.inet import TCPOptions

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
# Sequence-number-like: anywhere in 0..2**32-1, with extra weight near the wrap.
u32 = st.one_of(
    st.integers(0, 2**32 - 1),
    st.integers(2**32 - 70000, 2**32 - 1),
    st.sampled_from([0, 1, 2**31 - 1, 2**31, 2**32 - 2, 2**32 - 1]),
)
ip_addr = st.binary(min_size=4, max_size=4)
mac_addr = st.binary(min_size=6, max_size=6)
port = u16
tcp_flags = u8
payloads = st.one_of(st.binary(max_size=80), st.binary(min_size=1000, max_size=3000))

KNOWN_KINDS = {0, 1, 2, 3, 4, 5, 8}
# Kinds that neither we nor scapy decode: both keep them as (kind, bytes).
OPAQUE_KINDS = sorted(set(range(6, 256)) - KNOWN_KINDS - set(TCPOptions[0]))


@st.composite
def option_sets(draw, opaque_only=True, wscale_max=14):
    """kwargs for tcp_options() whose encoding fits in 40 bytes."""
    kw = {}
    budget = 40
    if draw(st.booleans()):
        kw["mss"] = draw(u16)
        budget -= 4
    if draw(st.booleans()):
        kw["timestamps"] = (draw(u32), draw(u32))
        budget -= 12
    kw["sack_permitted"] = draw(st.booleans())
    if kw["sack_permitted"] and "timestamps" not in kw:
        budget -= 4
    if draw(st.booleans()):
        kw["wscale"] = draw(st.integers(0, wscale_max))
        budget -= 4
    nblocks = draw(st.integers(0, min(4, (budget - 4) // 8) if budget >= 12 else 0))
    if nblocks:
        kw["sack_blocks"] = tuple((draw(u32), draw(u32)) for _ in range(nblocks))
        budget -= 4 + 8 * nblocks
    unknown = []
    kinds = st.sampled_from(OPAQUE_KINDS) if opaque_only else \
        st.integers(2, 255).filter(lambda k: k not in KNOWN_KINDS)
    while budget >= 2 and draw(st.integers(0, 2)) == 0:
        data = draw(st.binary(max_size=budget - 2))
        unknown.append((draw(kinds), data))
        budget -= 2 + len(data)
    if unknown:
        kw["unknown"] = tuple(unknown)
    return kw


@st.composite
def tcp_headers(draw):
    return dict(sport=draw(port), dport=draw(port), seq=draw(u32), ack=draw(u32),
                flags=draw(tcp_flags), window=draw(u16))
