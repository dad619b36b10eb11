"""RFC 6675 SACK scoreboard: Update, IsLost, SetPipe, NextSeg."""

import random

import pytest
from hypothesis import given, settings, strategies as st

from acceltcp.tcp.reassembly import ReassemblyQueue
from acceltcp.tcp.scoreboard import Scoreboard
from acceltcp.tcp.seq import SEQ_MOD, seq_add, seq_diff

MSS = 1000
ISN = SEQ_MOD - 3500         # segments 0..3 sit before the 2**32 wrap, 4.. after it


def S(i):
    """Sequence number of segment i."""
    return seq_add(ISN, i * MSS)


def blk(i, j):
    """SACK block covering segments i..j-1."""
    return (S(i), S(j))


def test_empty_scoreboard():
    sb = Scoreboard(MSS)
    assert not sb.has_sack_info and sb.highest_sacked() is None
    assert not sb.is_lost(S(0)) and not sb.is_sacked(S(0))
    assert sb.pipe(S(0), S(10), S(0)) == 10 * MSS           # plain FlightSize
    assert sb.pipe(S(0), S(10), S(2)) == 12 * MSS
    assert sb.next_seg(S(0), S(10), S(0)) is None
    assert sb.next_seg(S(0), S(10), S(0), new_data=False) is None
    assert sb.update(S(0), ()) == 0


def test_one_loss_among_ten():
    """Segment 0 lost, 1..9 arrive: each ACK carries one growing SACK block."""
    sb = Scoreboard(MSS)
    una, nxt = S(0), S(10)
    assert sb.update(una, [blk(1, 2)], nxt) == MSS
    assert sb.is_sacked(S(1)) and not sb.is_sacked(S(0))
    assert not sb.is_lost(una)
    assert sb.update(una, [blk(1, 3)], nxt) == MSS
    assert not sb.is_lost(una)                               # 2 segs, 2000 bytes: not > 2*SMSS
    assert sb.update(una, [blk(1, 4)], nxt) == MSS
    assert sb.is_lost(una)                                   # 3 segments above: IsLost
    assert sb.sacked == 3 * MSS and sb.sacked_bytes_above(una) == 3 * MSS
    assert sb.highest_sacked() == S(4)
    # SetPipe: seg 0 lost (0), segs 4..9 not lost (6)
    assert sb.pipe(una, nxt, una) == 6 * MSS
    assert sb.next_seg(una, nxt, una) == (S(0), MSS)          # rule 1
    # after retransmitting segment 0 (HighRxt = S(1)) it counts once again
    assert sb.pipe(una, nxt, S(1)) == 7 * MSS
    assert sb.next_seg(una, nxt, S(1)) is None
    assert sb.next_seg(una, nxt, S(1), new_data=False) is None   # nothing below highest SACK
    # the rest arrives
    assert sb.update(una, [blk(1, 10)], nxt) == 6 * MSS
    assert sb.pipe(una, nxt, S(1)) == 1 * MSS
    # the retransmission fills the hole: cumulative ACK to 10, state dropped
    assert sb.update(S(10), (), nxt) == 0
    assert not sb.has_sack_info and sb.sacked == 0


def test_several_losses():
    sb = Scoreboard(MSS)
    una, nxt = S(0), S(10)
    lost = {0, 3, 6}
    sacked = [blk(1, 3), blk(4, 6), blk(7, 10)]
    assert sb.update(una, sacked[::-1], nxt) == 7 * MSS
    assert sb.ranges() == sacked
    for i in range(10):
        assert sb.is_lost(S(i)) == (i in lost)
    assert sb.pipe(una, nxt, una) == 0
    hr = una
    sent = []
    while True:
        seg = sb.next_seg(una, nxt, hr)
        if seg is None:
            break
        sent.append(seg)
        hr = seq_add(seg[0], seg[1])
    assert sent == [(S(0), MSS), (S(3), MSS), (S(6), MSS)]
    assert sb.pipe(una, nxt, hr) == 3 * MSS


def test_islost_threshold_by_bytes_and_by_segments():
    sb = Scoreboard(MSS)
    una, nxt = S(0), S(20)
    sb.update(una, [(S(5), seq_add(S(5), 2 * MSS + 1))], nxt)    # 2001 bytes, one range
    assert sb.is_lost(una) and sb.is_lost(S(4))                 # > (DupThresh-1)*SMSS bytes
    assert not sb.is_lost(seq_add(S(7), 1))                      # nothing above
    sb.clear()
    # three small discontiguous SACKed segments: lost although only 300 bytes
    for k in (2, 4, 6):
        sb.update(una, [(S(k), seq_add(S(k), 100))], nxt)
    assert sb.sacked == 300
    assert sb.is_lost(una) and sb.is_lost(S(1))
    assert not sb.is_lost(S(3))                                  # only two above
    sb2 = Scoreboard(MSS, dupthresh=2)
    sb2.update(una, [blk(3, 4), blk(5, 6)], nxt)
    assert sb2.is_lost(S(0)) and not sb2.is_lost(S(4))


def test_rule3_and_new_data():
    sb = Scoreboard(MSS)
    una, nxt = S(0), S(10)
    sb.update(una, [blk(2, 3)], nxt)                             # one SACKed segment
    assert not sb.is_lost(una)
    assert sb.next_seg(una, nxt, una) is None                    # rule 2: send new data
    assert sb.next_seg(una, nxt, una, new_data=False) == (S(0), MSS)   # rule 3
    assert sb.next_seg(una, nxt, S(1), new_data=False) == (S(1), MSS)  # up to the SACKed data
    assert sb.next_seg(una, nxt, S(2), new_data=False) is None   # S(3).. is above highest SACK
    sb.update(una, [(seq_add(S(0), 300), S(5))], nxt)            # hole of 300 bytes at SND.UNA
    assert sb.is_lost(una)
    assert sb.next_seg(una, nxt, una) == (S(0), 300)             # never runs into SACKed data


def test_rescue_seg():
    sb = Scoreboard(MSS)
    una, nxt = S(0), S(10)
    assert sb.rescue_seg(una, nxt) == (S(9), MSS)
    sb.update(una, [blk(8, 10)], nxt)
    assert sb.rescue_seg(una, nxt) == (S(7), MSS)
    sb.update(una, [(seq_add(S(7), 500), S(8))], nxt)
    assert sb.rescue_seg(una, nxt) == (seq_add(S(6), 500), MSS)
    sb.update(una, [blk(0, 10)], nxt)                            # odd, but all SACKed
    assert sb.rescue_seg(una, nxt) is None


def test_blocks_out_of_order_and_overlapping():
    sb = Scoreboard(MSS)
    una, nxt = S(0), S(20)
    assert sb.update(una, [blk(10, 12)], nxt) == 2 * MSS
    assert sb.update(una, [blk(4, 6), blk(10, 12)], nxt) == 2 * MSS
    assert sb.update(una, [blk(5, 11)], nxt) == 4 * MSS          # bridges: 6..10 new
    assert sb.ranges() == [blk(4, 12)]
    assert sb.update(una, [blk(4, 12)], nxt) == 0                 # repeat: nothing new
    assert sb.update(una, [blk(2, 3), blk(12, 13)], nxt) == 2 * MSS
    assert sb.ranges() == [blk(2, 3), blk(4, 13)]


def test_block_overlapping_snd_una_and_state_below_dropped():
    sb = Scoreboard(MSS)
    nxt = S(20)
    sb.update(S(0), [blk(3, 6), blk(8, 9)], nxt)
    assert sb.update(S(4), [blk(2, 7)], nxt) == MSS               # trimmed at SND.UNA; 6..7 new
    assert sb.ranges() == [blk(4, 7), blk(8, 9)]
    assert sb.sacked == 4 * MSS
    assert not sb.is_sacked(S(3))
    sb.update(S(8), (), nxt)
    assert sb.ranges() == [blk(8, 9)] and sb.sacked == MSS
    sb.update(S(9), (), nxt)
    assert not sb.has_sack_info and sb.sacked == 0


def test_invalid_and_dsack_blocks():
    sb = Scoreboard(MSS)
    una, nxt = S(5), S(20)
    assert sb.update(una, [blk(1, 3), blk(8, 9)], nxt) == MSS     # D-SACK below ACK (RFC 2883)
    assert sb.dsack == blk(1, 3)
    assert sb.update(una, [blk(8, 9), blk(7, 10)], nxt) == 2 * MSS   # first inside second: D-SACK
    assert sb.dsack == blk(8, 9) and sb.ranges() == [blk(7, 10)]
    assert sb.update(una, [blk(11, 12), blk(19, 21)], nxt) == MSS    # beyond SND.NXT: ignored
    assert sb.update(una, [blk(14, 13), (S(15), S(15))], nxt) == 0   # inverted / empty
    sb.set_limit(S(30))
    assert sb.update(una, [blk(11, 12), blk(19, 21)]) == 2 * MSS     # limit from set_limit
    assert sb.dsack is None
    assert sb.ranges() == [blk(7, 10), blk(11, 12), blk(19, 21)]


def test_pipe_arithmetic():
    sb = Scoreboard(MSS)
    una, nxt = S(0), S(12)
    sb.update(una, [blk(2, 3), blk(5, 7), blk(9, 10)], nxt)
    # SACKed above: seg 0,1 see 4 segs -> lost; 3,4 see 3 -> lost; 7,8 see 1; 10,11 see 0
    assert [sb.is_lost(S(i)) for i in range(12)] == \
        [True, True, False, True, True, False, False, False, False, False, False, False]
    assert sb.pipe(una, nxt, una) == 4 * MSS                      # 7, 8, 10, 11
    assert sb.pipe(una, nxt, S(2)) == 6 * MSS                     # + 0, 1 retransmitted
    assert sb.pipe(una, nxt, S(8)) == 4 * MSS + 4 * MSS + 1 * MSS  # + 0,1,3,4 and 7 twice
    assert sb.pipe(una, nxt, seq_add(S(0), 500)) == 4 * MSS + 500
    assert sb.pipe(una, una, una) == 0


def test_wrap():
    isn = SEQ_MOD - 1500
    sb = Scoreboard(MSS)
    una, nxt = isn, seq_add(isn, 10 * MSS)
    sb.update(una, [(seq_add(isn, 1000), seq_add(isn, 4000))], nxt)
    assert sb.is_sacked(SEQ_MOD - 500) and sb.is_sacked(0) and sb.is_sacked(2499)
    assert not sb.is_sacked(2500) and not sb.is_sacked(isn)
    assert sb.is_lost(isn)
    assert sb.next_seg(una, nxt, una) == (isn, MSS)
    assert sb.highest_sacked() == 2500
    sb.update(seq_add(isn, 2000), [(2500, 3500)], nxt)
    assert sb.ranges() == [(500, 3500)]


def test_set_mss_and_clear():
    sb = Scoreboard(MSS)
    sb.update(S(0), [blk(1, 2)], S(5))
    sb.clear()
    assert not sb.has_sack_info and sb.sacked == 0 and sb.ranges() == []
    sb.set_mss(500)
    assert sb.mss == 500
    with pytest.raises(ValueError):
        Scoreboard(0)


# -- model check: receiver's ReassemblyQueue feeds the sender's Scoreboard --------

def model_lost(sacked, i, dupthresh=3):
    return i not in sacked and sum(1 for j in sacked if j > i) >= dupthresh


@settings(max_examples=120, deadline=None)
@given(st.integers(1, 30), st.integers(0, 2**32), st.sampled_from([ISN, 0, SEQ_MOD - 1]),
       st.integers(1, 4))
def test_model(n, seed, isn, max_blocks):
    rng = random.Random(seed)
    arrivals = [i for i in range(n) if rng.random() < 0.7]
    rng.shuffle(arrivals)
    arrivals += [rng.randrange(n) for _ in range(rng.randint(0, 5))]   # duplicates
    snd_nxt = seq_add(isn, n * MSS)
    q = ReassemblyQueue()
    sb = Scoreboard(MSS)
    rcv = isn
    model = set()
    for i in arrivals:
        q.add(seq_add(isn, i * MSS), b"d" * MSS, rcv)
        _, rcv = q.pop_ready(rcv)
        una = seq_diff(rcv, isn) // MSS
        blocks = q.sack_blocks(max_blocks)
        new = sb.update(rcv, blocks, snd_nxt)
        old = {j for j in model if j >= una}
        model = set(old)
        for left, right in blocks:
            model.update(range(seq_diff(left, isn) // MSS, seq_diff(right, isn) // MSS))
        assert new == (len(model) - len(old)) * MSS
        assert sb.sacked == len(model) * MSS
        for j in range(una, n):
            seq = seq_add(isn, j * MSS)
            assert sb.is_sacked(seq) == (j in model)
            assert sb.is_lost(seq) == model_lost(model, j)
            assert sb.is_lost(seq_add(seq, 700)) == model_lost(model, j)
        top = max(model) if model else None
        for hr in range(una, n + 1):
            pipe = sum((not model_lost(model, j)) + (j < hr) for j in range(una, n) if j not in model)
            assert sb.pipe(rcv, snd_nxt, seq_add(isn, hr * MSS)) == pipe * MSS
            cands = [j for j in range(hr, n) if j not in model and top is not None and j < top]
            lost = [j for j in cands if model_lost(model, j)]
            exp1 = lost[0] if lost else None
            exp3 = cands[0] if cands else None
            got1 = sb.next_seg(rcv, snd_nxt, seq_add(isn, hr * MSS))
            got3 = sb.next_seg(rcv, snd_nxt, seq_add(isn, hr * MSS), new_data=False)
            # rule (1) picks the lowest hole >= HighRxt only if it is lost (IsLost is monotone)
            assert got1 == (None if exp1 is None or exp1 != exp3 else (seq_add(isn, exp1 * MSS), MSS))
            assert got3 == (None if exp3 is None else (seq_add(isn, exp3 * MSS), MSS))
