"""wire.control, TCP Chimney frames (0x090F) and the plain-value state encoding
(docs/control-frames.md)."""

import pytest
from hypothesis import given, settings, strategies as st

from acceltcp.wire.control import (
    CHIMNEY_DATA_FIN, CHIMNEY_MAX_BODY, CHIMNEY_SEND_FIN, CHIMNEY_MESSAGES, CHIMNEY_REFUSED_TABLE_FULL,
    ETHERTYPE_CHIMNEY, OFFLOAD_ETHERTYPES, UPLOAD_APP_CLOSE, UPLOAD_PEER_FIN, VERSION,
    ChimneyAccepted, ChimneyData, ChimneyOffload, ChimneyRefused, ChimneySend, ChimneyUpload,
    ChimneyUploadRequest, decode, decode_chimney, decode_from_host, decode_value,
    encode_value, state_chunks,
)
from acceltcp.wire.errors import WireError

K1 = bytes([10, 0, 0, 2, 10, 0, 0, 1]) + (40000).to_bytes(2, "big") + (80).to_bytes(2, "big")
M1 = bytes.fromhex("020000000001")
M2 = bytes.fromhex("020000000002")

SAMPLES = {
    "ChimneyOffload": ChimneyOffload(42, K1, M1, M2, 100, 96, b"\x07\x00\x00\x00"),
    "ChimneyAccepted": ChimneyAccepted(42, K1),
    "ChimneyRefused": ChimneyRefused(42, K1, CHIMNEY_REFUSED_TABLE_FULL),
    "ChimneyData": ChimneyData(42, K1, CHIMNEY_DATA_FIN, 0xFFFFFFFE, 1448, b"hi"),
    "ChimneySend": ChimneySend(42, K1, 1448, 7, b"abc", CHIMNEY_SEND_FIN),
    "ChimneyUploadRequest": ChimneyUploadRequest(42, K1, UPLOAD_APP_CLOSE),
    "ChimneyUpload": ChimneyUpload(42, K1, UPLOAD_PEER_FIN, 5, 0, b"\x07\x00\x00\x00\x00"),
}
# Header + body, pinned (docs/control-frames.md shows the same bytes).
GOLDEN = {
    "ChimneyOffload": (
        "0120002c0000002a0a0000020a0000019c40005002000000000102000000000200000064"
        "000000600000000407000000"),
    "ChimneyAccepted": "012100140000002a0a0000020a0000019c400050",
    "ChimneyRefused": "012200180000002a0a0000020a0000019c40005001000000",
    "ChimneyData": (
        "012300240000002a0a0000020a0000019c40005001000000fffffffe000005a8000000026869"),
    "ChimneySend": (
        "012400240000002a0a0000020a0000019c40005001000000000005a80000000700000003616263"),
    "ChimneyUploadRequest": "012500180000002a0a0000020a0000019c40005002000000",
    "ChimneyUpload": (
        "012600240000002a0a0000020a0000019c400050030000000000000500000000000000050700000000"),
}
VALUE = (1, None, True, False, -2, 0.5, b"ab", "cubic", ())
VALUE_GOLDEN = ("070000000903000000000000000100020103fffffffffffffffe043fe000000000000005"
                "000000026162060000000563756269630700000000")


def test_every_message_has_a_golden():
    assert set(GOLDEN) == {m.__name__ for m in CHIMNEY_MESSAGES} == set(SAMPLES)
    assert ETHERTYPE_CHIMNEY == 0x090F and ETHERTYPE_CHIMNEY in OFFLOAD_ETHERTYPES
    assert len({m.TYPE for m in CHIMNEY_MESSAGES}) == len(CHIMNEY_MESSAGES)


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_bytes(name):
    msg = SAMPLES[name]
    b = msg.encode()
    assert b.hex() == GOLDEN[name]
    hlen = int.from_bytes(b[2:4], "big")
    assert hlen % 4 == 0 and b[0] == VERSION and b[1] == type(msg).TYPE
    assert len(b) == hlen + len(getattr(msg, "body", b""))
    f = msg.frame(M1, M2)
    assert f == M1 + M2 + b"\x09\x0f" + b
    assert decode_chimney(f) == msg and decode(f) == msg
    assert decode_chimney(f + bytes(60)) == msg           # Ethernet padding is ignored


def test_value_golden_and_round_trip():
    assert encode_value(VALUE).hex() == VALUE_GOLDEN
    assert decode_value(bytes.fromhex(VALUE_GOLDEN)) == VALUE


plain = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(1 << 63), (1 << 63) - 1),
              st.floats(allow_nan=False), st.binary(max_size=50),
              st.text("abcxyz_", max_size=10)),
    lambda inner: st.lists(inner, max_size=6).map(tuple), max_leaves=40)


@settings(max_examples=200, deadline=None)
@given(plain)
def test_value_round_trip(v):
    assert decode_value(encode_value(v)) == v


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_value_decoder_never_crashes(b):
    try:
        decode_value(b)
    except WireError as e:
        assert e.reason in ("ctl_short", "ctl_bad_field")


@pytest.mark.parametrize("bad", [[1, 2], {1: 2}, 1 << 63, bytearray(b"x"), "é"])
def test_value_encoder_refuses(bad):
    with pytest.raises((ValueError, UnicodeEncodeError)):
        encode_value(bad)


def test_value_depth_limit():
    v = ()
    for _ in range(8):
        v = (v,)
    with pytest.raises(ValueError):
        encode_value(v)
    raw = bytes([7, 0, 0, 0, 1]) * 9 + bytes([0])
    with pytest.raises(WireError):
        decode_value(raw)


def test_state_chunks():
    blob = bytes(range(256)) * 500
    parts = state_chunks(blob)
    assert all(t == len(blob) for t, _, _ in parts)
    assert b"".join(c for _, _, c in parts) == blob
    assert max(len(c) for _, _, c in parts) <= CHIMNEY_MAX_BODY
    assert state_chunks(b"") == [(0, 0, b"")]


def test_real_state_round_trip():
    from acceltcp.tcp.config import TcpConfig
    from acceltcp.tcp.connection import TcpConnection
    c = TcpConnection(TcpConfig(), b"\x0a\x00\x00\x01", 80, b"\x0a\x00\x00\x02", 40000, 7,
                      lambda *a: None, 1.0)
    s = c.export_state()
    assert decode_value(encode_value(tuple(s))) == tuple(s)


@pytest.mark.parametrize("mutate,reason", [
    (lambda b: b[:14] + b"\x02" + b[15:], "ctl_bad_version"),
    (lambda b: b[:15] + b"\x2f" + b[16:], "ctl_bad_type"),
    (lambda b: b[:17] + b"\x30" + b[18:], "ctl_bad_length"),
    (lambda b: b[:-1], "ctl_short"),
    (lambda b: b[:14 + 20] + b"\x02" + b[14 + 21:], "ctl_bad_field"),      # unknown flag
    (lambda b: b[:14 + 21] + b"\x01" + b[14 + 22:], "ctl_bad_field"),      # padding
    (lambda b: b[:14 + 32] + b"\x00\x01\x00\x00" + b[14 + 36:], "ctl_bad_length"),
])
def test_malformed_data_frames(mutate, reason):
    f = SAMPLES["ChimneyData"].frame(M1, M2)
    with pytest.raises(WireError) as e:
        decode_chimney(mutate(f))
    assert e.value.reason == reason


def test_chunk_beyond_total_refused():
    f = bytearray(SAMPLES["ChimneyOffload"].frame(M1, M2))
    f[14 + 32:14 + 36] = (97).to_bytes(4, "big")      # offset 97 + 4 > total 100
    with pytest.raises(WireError):
        decode_chimney(bytes(f))
    with pytest.raises(ValueError):
        ChimneyOffload(1, K1, M1, M2, 3, 0, b"abcd").encode()
    with pytest.raises(ValueError):
        ChimneySend(1, K1, 0, bytes(CHIMNEY_MAX_BODY + 1)).encode()


def test_decode_from_host():
    f = SAMPLES["ChimneySend"].frame(M1, M2)
    assert decode_from_host(f) == (SAMPLES["ChimneySend"], None)


u32 = st.integers(0, 0xFFFFFFFF)
key = st.binary(min_size=12, max_size=12)
mac = st.binary(min_size=6, max_size=6)
body = st.binary(max_size=300)
messages = st.one_of(
    st.builds(lambda f, k, a, b, o, d: ChimneyOffload(f, k, a, b, o + len(d), o, d),
              u32, key, mac, mac, st.integers(0, 1 << 20), body),
    st.builds(ChimneyAccepted, u32, key),
    st.builds(ChimneyRefused, u32, key, st.integers(1, 3)),
    st.builds(ChimneyData, u32, key, st.integers(0, 1), u32, u32, body),
    st.builds(ChimneySend, u32, key, u32, u32, body, st.integers(0, 1)),
    st.builds(ChimneyUploadRequest, u32, key, st.integers(1, 2)),
    st.builds(lambda f, k, r, o, d: ChimneyUpload(f, k, r, o + len(d), o, d),
              u32, key, st.integers(1, 7), st.integers(0, 1 << 20), body),
)


@settings(max_examples=300, deadline=None)
@given(messages)
def test_round_trip(msg):
    assert decode_chimney(msg.frame(M1, M2)) == msg


def test_docs_show_the_golden_bytes():
    """docs/control-frames.md's chimney examples are these encodings, in this order."""
    import pathlib
    import re
    doc = pathlib.Path(__file__).resolve().parents[2] / "docs" / "control-frames.md"
    text = doc.read_text().split("## TCP Chimney (0x090F)")[1]
    dumps = []
    for block in re.findall(r"```\n(.*?)```", text, re.S):
        cur = []
        for line in block.splitlines():
            if line.startswith("0000") and cur:
                dumps.append("".join(cur))
                cur = []
            cur += line.split("(")[0].split()[1:]
        dumps.append("".join(cur))
    order = ["ChimneyOffload", "ChimneyAccepted", "ChimneyRefused", "ChimneyData",
             "ChimneySend", "ChimneyUploadRequest", "ChimneyUpload"]
    assert dumps == [GOLDEN[k] for k in order] + [VALUE_GOLDEN]
