"""Out-of-order reassembly (RFC 9293 §3.10.7.4) and SACK block generation (RFC 2018 §4)."""

import random

from hypothesis import given, settings, strategies as st

from acceltcp.tcp.reassembly import ReassemblyQueue
from acceltcp.tcp.seq import SEQ_MOD, seq_add, seq_diff, seq_le, seq_lt

ISN = SEQ_MOD - 100          # the stream wraps after 100 bytes


def test_empty():
    q = ReassemblyQueue()
    assert not q and len(q) == 0 and q.nbytes == 0
    assert q.pop_ready(5) == (b"", 5)
    assert q.sack_blocks(4) == [] and q.right_edge() is None


def test_hole_fill_across_wrap():
    q = ReassemblyQueue()
    data = bytes(range(256)) * 2
    rcv = ISN
    q.add(seq_add(ISN, 300), data[300:400], rcv)
    q.add(seq_add(ISN, 100), data[100:200], rcv)
    q.add(seq_add(ISN, 200), data[200:300], rcv)        # merges the two blocks
    assert q.nblocks == 1 and q.nbytes == 300 and len(q) == 300
    assert q.sack_blocks(4) == [(seq_add(ISN, 100), seq_add(ISN, 400))]
    assert q.pop_ready(rcv) == (b"", rcv)               # still a hole at ISN
    rcv = seq_add(rcv, 100)                              # in-order data delivered directly
    out, rcv = q.pop_ready(rcv)
    assert out == data[100:400] and rcv == seq_add(ISN, 400) and rcv == 300
    assert not q and q.nbytes == 0


def test_overlaps_and_duplicates():
    q = ReassemblyQueue()
    data = bytes(random.Random(1).randrange(256) for _ in range(1000))
    base = 7
    q.add(base + 100, data[100:200], base)
    q.add(base + 100, data[100:200], base)              # exact duplicate
    assert q.nbytes == 100
    q.add(base + 150, data[150:260], base)              # overlaps the tail
    q.add(base + 50, data[50:120], base)                # overlaps the head
    q.add(base + 300, data[300:320], base)
    q.add(base + 280, data[280:400], base)              # covers a whole block
    assert q.ranges() == [(base + 50, base + 260), (base + 280, base + 400)]
    assert q.nbytes == 210 + 120
    q.add(base + 40, data[40:420], base)                # bridges everything
    assert q.ranges() == [(base + 40, base + 420)] and q.nbytes == 380
    q.add(base - 20, b"?" * 10, base)                   # wholly below rcv_nxt: ignored
    assert q.nbytes == 380
    q.add(base - 10, b"?" * 10 + data[:50], base)       # straddles rcv_nxt: front trimmed
    assert q.ranges() == [(base, base + 420)] and q.nbytes == 420
    out, rcv = q.pop_ready(base)
    assert out == data[:420] and rcv == base + 420


def test_partial_below_rcv_nxt_trimmed_on_pop():
    q = ReassemblyQueue()
    data = bytes(range(200))
    q.add(seq_add(ISN, 50), data[50:60], ISN)
    q.add(seq_add(ISN, 60), data[60:150], ISN)          # two chunks in one block
    q.add(seq_add(ISN, 170), data[170:180], ISN)
    rcv = seq_add(ISN, 100)                              # caller delivered 0..100 itself
    out, rcv = q.pop_ready(rcv)
    assert out == data[100:150] and rcv == seq_add(ISN, 150)
    assert q.ranges() == [(seq_add(ISN, 170), seq_add(ISN, 180))] and q.nbytes == 10
    rcv = seq_add(ISN, 190)                              # passes the remaining block entirely
    assert q.pop_ready(rcv) == (b"", rcv) and not q and q.nbytes == 0


def test_sack_block_order_rfc2018():
    q = ReassemblyQueue()
    r = 1000
    d = b"x" * 100
    q.add(r + 500, d, r)          # block A
    assert q.sack_blocks(4) == [(r + 500, r + 600)]
    q.add(r + 200, d, r)          # block B
    assert q.sack_blocks(4) == [(r + 200, r + 300), (r + 500, r + 600)]
    q.add(r + 800, d, r)          # block C
    assert q.sack_blocks(4) == [(r + 800, r + 900), (r + 200, r + 300), (r + 500, r + 600)]
    q.add(r + 600, d, r)          # extends A; A becomes the first block
    assert q.sack_blocks(4) == [(r + 500, r + 700), (r + 800, r + 900), (r + 200, r + 300)]
    assert q.sack_blocks(2) == [(r + 500, r + 700), (r + 800, r + 900)]
    q.add(r + 700, d, r)          # merges A and C
    assert q.sack_blocks(4) == [(r + 500, r + 900), (r + 200, r + 300)]
    q.add(r, b"y" * 200, r)       # fills the first hole; segment is at rcv_nxt
    out, r2 = q.pop_ready(r)
    assert r2 == r + 300 and out == b"y" * 200 + d
    assert q.sack_blocks(4) == [(r + 500, r + 900)]


def test_sack_blocks_more_than_recency_list():
    q = ReassemblyQueue()
    for i in range(100):
        q.add(10 + 20 * i + 10, b"z" * 5, 10)
    blocks = q.sack_blocks(200)
    assert len(blocks) == 100 and blocks[0] == (10 + 20 * 99 + 10, 10 + 20 * 99 + 15)
    assert sorted(blocks) == q.ranges()


def test_memoryview_input():
    q = ReassemblyQueue()
    buf = bytearray(b"abcdefgh")
    q.add(5, memoryview(buf)[2:6], 3)
    buf[:] = b"XXXXXXXX"                                 # the queue must have copied
    assert q.pop_ready(3) == (b"", 3)
    q.add(3, b"ab", 3)
    assert q.pop_ready(3) == (b"abcdef", 9)


@st.composite
def scenarios(draw):
    n = draw(st.integers(1, 600))
    isn = draw(st.one_of(st.integers(SEQ_MOD - 700, SEQ_MOD - 1), st.integers(0, SEQ_MOD - 1)))
    seed = draw(st.integers(0, 2**32))
    rng = random.Random(seed)
    segs = []
    # a few independent segmentations (retransmissions with different boundaries)
    for _ in range(draw(st.integers(1, 3))):
        pos = 0
        while pos < n:
            ln = rng.randint(1, 80)
            segs.append((pos, min(n, pos + ln)))
            pos += ln
    # extra random overlapping pieces and exact duplicates
    for _ in range(draw(st.integers(0, 20))):
        a = rng.randrange(n)
        segs.append((a, min(n, a + rng.randint(1, 120))))
    segs += [segs[rng.randrange(len(segs))] for _ in range(draw(st.integers(0, 10)))]
    rng.shuffle(segs)
    data = bytes(rng.randrange(256) for _ in range(n))
    return data, isn, segs


@settings(max_examples=150, deadline=None)
@given(scenarios(), st.booleans())
def test_random_reassembly(sc, direct):
    data, isn, segs = sc
    q = ReassemblyQueue()
    rcv = isn
    out = bytearray()
    for idx, (a, b) in enumerate(segs):
        seq = seq_add(isn, a)
        payload = data[a:b]
        if direct and seq_le(seq, rcv) and seq_lt(rcv, seq_add(isn, b)):
            # the connection's fast path: in-order data goes straight to the app
            skip = seq_diff(rcv, seq)
            out += payload[skip:]
            rcv = seq_add(rcv, len(payload) - skip)
        else:
            q.add(seq, payload, rcv)
        more, rcv = q.pop_ready(rcv)
        out += more
        got = seq_diff(rcv, isn)
        assert bytes(out) == data[:got]
        # held ranges == exactly the received bytes above rcv_nxt, as maximal runs
        have = set()
        for x, y in segs[:idx + 1]:
            have.update(range(max(x, got), y))
        runs = []
        for off in sorted(have):
            if runs and runs[-1][1] == off:
                runs[-1][1] = off + 1
            else:
                runs.append([off, off + 1])
        expect = [(seq_add(isn, x), seq_add(isn, y)) for x, y in runs]
        assert q.ranges() == expect
        assert q.nbytes == len(have) == len(q)
        blocks = q.sack_blocks(len(runs) + 1)
        assert sorted(blocks, key=lambda blk: seq_diff(blk[0], isn)) == expect
        if b > got:                                  # last segment still held: first block has it
            first = blocks[0]
            lo = max(a, got)
            assert seq_diff(first[0], isn) <= lo and b <= seq_diff(first[1], isn)
        for blk in q.sack_blocks(3):
            assert blk in expect
    assert bytes(out) == data and seq_diff(rcv, isn) == len(data)
    assert not q
