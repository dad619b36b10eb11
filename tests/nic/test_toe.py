"""nic/toe.py: checksum completion and TSO against the host's own frame builder, and LRO
against rules written here independently (hypothesis over flag, option, order and
checksum mixes): LRO never merges what it must not and never loses or reorders a byte."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acceltcp.nic.toe import LRO_MAX_BYTES, Lro, complete_checksum, segment
from acceltcp.wire.checksum import ones_sum
from acceltcp.wire.tcp import (
    ACK, CWR, ECE, FIN, PSH, RST, SYN, URG, build_tcp_frame, build_tcp_header_partial,
    parse_tcp, tcp_options,
)

M1, M2 = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
A, B = bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2])
MASK = 0xFFFFFFFF


# -- checksum completion and TSO ------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 9000), mss=st.integers(1, 1460), seq=st.integers(0, MASK),
       ident=st.integers(0, 0xFFFF), flags=st.sampled_from(
           [ACK, ACK | PSH, ACK | PSH | FIN, ACK | FIN, ACK | CWR | PSH, ACK | ECE]),
       ts=st.one_of(st.none(), st.tuples(st.integers(0, MASK), st.integers(0, MASK))),
       seed=st.integers(0, 255))
def test_tso_cuts_what_the_host_would_have_built(n, mss, seq, ident, flags, ts, seed):
    payload = bytes((seed + i) & 0xFF for i in range(n))
    opts = tcp_options(timestamps=ts) if ts else b""
    hdr = build_tcp_header_partial(M2, M1, A, B, ident, 80, 40000, seq, 77, flags, 512, opts, n)
    got = segment(hdr, payload, mss)
    want = []
    for i, off in enumerate(range(0, n, mss)):
        last = off + mss >= n
        fl = flags if last else flags & ~(PSH | FIN)
        if i:
            fl &= ~CWR
        want.append(build_tcp_frame(M2, M1, A, B, ident + i, 80, 40000, (seq + off) & MASK,
                                    77, fl, 512, opts, payload[off:off + mss]))
    assert got == want


@given(n=st.integers(0, 1460), seq=st.integers(0, MASK))
def test_checksum_completion_equals_a_full_checksum(n, seq):
    payload = bytes(range(256)) * 6
    payload = payload[:n]
    hdr = build_tcp_header_partial(M2, M1, A, B, 9, 80, 40000, seq, 1, ACK | PSH, 512, b"", n)
    assert complete_checksum(hdr + payload) == build_tcp_frame(
        M2, M1, A, B, 9, 80, 40000, seq, 1, ACK | PSH, 512, b"", payload)


@pytest.mark.parametrize("bad", [b"", bytes(60), bytes(12) + b"\x86\xdd" + bytes(60)])
def test_not_ipv4_tcp_is_a_clear_error(bad):
    with pytest.raises(ValueError):
        complete_checksum(bad)
    with pytest.raises(ValueError):
        segment(bad, b"x", 100)


def test_tso_header_and_size_checks():
    hdr = build_tcp_header_partial(M2, M1, A, B, 9, 80, 40000, 1, 1, ACK, 512, b"", 10)
    with pytest.raises(ValueError, match="gso_size"):
        segment(hdr, b"x" * 10, 0)
    with pytest.raises(ValueError, match="data offset"):
        segment(hdr + b"\0\0\0\0", b"x" * 10, 5)


# -- LRO -------------------------------------------------------------------------------

FLOWS = [(A, B, 40000, 80), (A, B, 40001, 80)]


def seg_frame(flow, seq, n, flags=ACK, ack=5, window=600, ts=(100, 200), ttl=64, tos=0,
              corrupt=False, ident=1):
    src, dst, sport, dport = flow
    f = bytearray(build_tcp_frame(M1, M2, src, dst, ident, sport, dport, seq & MASK, ack,
                                  flags, window, tcp_options(timestamps=ts) if ts else b"",
                                  bytes((seq + i) & 0xFF for i in range(n)), ttl=ttl))
    if tos:
        f[15] = tos
        f[24:26] = b"\0\0"
        f[24:26] = (0xFFFF - ones_sum(bytes(f[14:34]))).to_bytes(2, "big")
    if corrupt and n:
        f[-1] ^= 0x40
    return bytes(f)


def fields(f):
    """What the oracle looks at: (flow, seq, payload, flags, header key, checksums ok)."""
    thl = (f[46] >> 4) * 4
    total = int.from_bytes(f[16:18], "big")
    poff = 34 + thl
    ok = ones_sum(f[14:34]) == 0xFFFF
    try:
        parse_tcp(memoryview(f)[34:14 + total], f[26:30], f[30:34], True)
    except Exception:
        ok = False
    hkey = (f[15], bytes(f[20:23]), bytes(f[26:38]), bytes(f[42:47]), bytes(f[48:50]),
            bytes(f[54:poff]))
    return (bytes(f[26:38]), int.from_bytes(f[38:42], "big"), bytes(f[poff:14 + total]),
            f[47], hkey, ok)


def may_follow(prev, cur):
    """The oracle's merge rule: may `cur` be merged after `prev` (same flow, prev open)?"""
    _, pseq, ppay, pfl, pkey, pok = prev
    _, seq, pay, fl, key, ok = cur
    return (pok and ok and pfl == ACK and fl in (ACK, ACK | PSH) and pay and ppay
            and key == pkey and seq == (pseq + len(ppay)) & MASK)


def check_lro(frames, out, max_bytes):
    """Per flow, the output is the input with runs of mergeable neighbours merged, in
    order; everything else unchanged, at its place relative to its own flow."""
    by_flow = {}
    for f in frames:
        by_flow.setdefault(bytes(f[26:38]), []).append(f)
    pos = {k: 0 for k in by_flow}
    for o in out:
        k = bytes(o[26:38])
        ins = by_flow[k]
        i = pos[k]
        if o == ins[i]:
            pos[k] = i + 1
            continue
        # a merge: a run of inputs, each may follow the one before, the payload joined
        fo = fields(o)
        assert fo[5], "a merged frame has bad checksums"
        run = [fields(ins[i])]
        assert run[0][3] == ACK and run[0][5]
        pay = run[0][2]
        j = i + 1
        while len(pay) < len(fo[2]):
            nxt = fields(ins[j])
            assert may_follow(run[-1], nxt), "merged what must not be merged"
            run.append(nxt)
            pay += nxt[2]
            j += 1
        assert len(run) >= 2 and pay == fo[2] and len(pay) <= max_bytes
        assert fo[1] == run[0][1] and fo[4] == run[0][4]
        assert fo[3] == run[-1][3]              # PSH iff the last one had it
        pos[k] = j
    assert all(pos[k] == len(v) for k, v in by_flow.items()), "frames lost"


frame_spec = st.tuples(
    st.integers(0, 1),                                         # flow
    st.sampled_from(["next", "next", "next", "gap", "old"]),   # sequence
    st.integers(0, 300),                                       # payload bytes
    st.sampled_from([ACK, ACK, ACK, ACK | PSH, ACK | FIN, ACK | RST, SYN | ACK, ACK | URG,
                     ACK | ECE, ACK | CWR, RST]),
    st.sampled_from(["same", "same", "same", "ts", "none", "ack", "win", "ttl", "tos"]),
    st.booleans(),                                             # corrupt
)


@settings(max_examples=400, deadline=None)
@given(specs=st.lists(frame_spec, max_size=40), max_bytes=st.sampled_from([200, 1000, LRO_MAX_BYTES]),
       barrier=st.integers(-1, 40))
def test_lro_never_merges_what_it_must_not(specs, max_bytes, barrier):
    nxt = [(MASK - 500) & MASK, 1000]           # one flow's sequence numbers wrap
    frames = []
    for idx, (fl, how, n, flags, var, corrupt) in enumerate(specs):
        if idx == barrier:
            frames.append(M1 + M2 + b"\x08\x06" + bytes(28))      # ARP: a barrier
        seq = nxt[fl]
        if how == "gap":
            seq = (seq + 100) & MASK
        elif how == "old":
            seq = (seq - 50) & MASK
        kw = {}
        if var == "ts":
            kw["ts"] = (101, 200)
        elif var == "none":
            kw["ts"] = None
        elif var == "ack":
            kw["ack"] = 6
        elif var == "win":
            kw["window"] = 601
        elif var == "ttl":
            kw["ttl"] = 63
        elif var == "tos":
            kw["tos"] = 0x10
        frames.append(seg_frame(FLOWS[fl], seq, n, flags, corrupt=corrupt, **kw))
        nxt[fl] = (seq + n) & MASK
    lro = Lro(max_bytes=max_bytes)
    out = lro.coalesce(frames)
    check_lro([f for f in frames if f[12:14] == b"\x08\x00"],
              [f for f in out if f[12:14] == b"\x08\x00"], max_bytes)
    # the barrier stays where it was relative to everything: no merge spans it
    if 0 <= barrier < len(specs):
        cut = out.index(frames[barrier])
        for flow in FLOWS:
            key = flow[0] + flow[1] + flow[2].to_bytes(2, "big") + flow[3].to_bytes(2, "big")

            def before(fs):
                return b"".join(fields(f)[2] for f in fs if f[26:38] == key)
            assert before(out[:cut]) == before(frames[:barrier])
    assert lro.merged_frames - lro.merges == len(frames) - len(out)


def test_lro_merges_an_in_order_run_and_ends_it_at_psh():
    f = FLOWS[0]
    frames = [seg_frame(f, 1000 + 100 * i, 100, ACK | (PSH if i == 3 else 0)) for i in range(6)]
    lro = Lro()
    out = lro.coalesce(frames)
    assert len(out) == 2                  # 0..3 (PSH ends it), then 4..5
    for o, first, k, flags in ((out[0], 0, 4, ACK | PSH), (out[1], 4, 2, ACK)):
        seg = parse_tcp(memoryview(o)[34:], A, B, True)
        assert seg.seq == 1000 + 100 * first and seg.flags == flags
        assert bytes(seg.payload) == b"".join(
            bytes((1000 + 100 * i + j) & 0xFF for j in range(100))
            for i in range(first, first + k))
    assert (lro.merges, lro.merged_frames) == (2, 6)


def test_lro_limits():
    with pytest.raises(ValueError):
        Lro(max_bytes=0)
    with pytest.raises(ValueError):
        Lro(max_bytes=LRO_MAX_BYTES + 1)
