"""Link: serialization, propagation, tail drop, faults, determinism, taps."""

import math
import struct

import pytest

from acceltcp.io.sim import FaultConfig, FaultInjector, Link, SimLoop


@pytest.fixture
def loop():
    lp = SimLoop()
    yield lp
    lp.shutdown()


def numbered(i: int, size: int = 100) -> bytes:
    """A frame whose first 4 bytes are its sequence number."""
    return struct.pack("!I", i) + bytes((i + k) & 0xFF for k in range(size - 4))


def num(frame: bytes) -> int:
    return struct.unpack("!I", frame[:4])[0]


class Sink:
    def __init__(self, loop):
        self.loop = loop
        self.frames = []
        self.times = []

    def __call__(self, frame):
        self.frames.append(frame)
        self.times.append(self.loop.time())


def attach(loop, link):
    sa, sb = Sink(loop), Sink(loop)
    link.a.set_receiver(sa)
    link.b.set_receiver(sb)
    return sa, sb


# -- timing ---------------------------------------------------------------------


def test_single_frame_serialization_plus_propagation(loop):
    link = Link(loop, bandwidth_bps=1e9, delay=50e-6)
    _, sb = attach(loop, link)
    link.a.send(bytes(1000))
    loop.run_for(1)
    assert sb.times == [pytest.approx(8e-6 + 50e-6, abs=1e-12)]
    st = link.a.stats
    assert (st.sent_frames, st.sent_bytes) == (1, 1000)
    assert (st.delivered_frames, st.delivered_bytes) == (1, 1000)
    assert link.b.stats.received_frames == 1 and link.b.stats.received_bytes == 1000


def test_full_duplex_directions_are_independent(loop):
    link = Link(loop, bandwidth_bps=8e6, delay=0.01)
    sa, sb = attach(loop, link)
    link.a.send(bytes(1000))  # 1 ms each way
    link.b.send(bytes(1000))
    loop.run_for(1)
    assert sa.times == sb.times == [pytest.approx(0.011)]


def test_bandwidth_1MB_over_8Mbps_takes_one_second(loop):
    link = Link(loop, bandwidth_bps=8e6, delay=0.02, queue_limit=None)
    _, sb = attach(loop, link)
    for i in range(1000):
        link.a.send(numbered(i, 1000))
    assert link.a.tx_free_at == pytest.approx(1.0)
    loop.run_for(5)
    assert len(sb.frames) == 1000
    assert [num(f) for f in sb.frames] == list(range(1000))
    assert sb.times[0] == pytest.approx(0.001 + 0.02)
    assert sb.times[-1] == pytest.approx(1.0 + 0.02)
    gaps = {round(b - a, 9) for a, b in zip(sb.times, sb.times[1:])}
    assert gaps == {0.001}


def test_transmitter_idle_gap_is_not_credited(loop):
    link = Link(loop, bandwidth_bps=8e6, delay=0.0)
    _, sb = attach(loop, link)
    link.a.send(bytes(1000))
    loop.run_for(0.5)  # idle long after the first frame
    link.a.send(bytes(1000))
    loop.run_for(1)
    assert sb.times == [pytest.approx(0.001), pytest.approx(0.501)]


def test_frames_of_different_sizes_queue_behind_each_other(loop):
    link = Link(loop, bandwidth_bps=1e6, delay=1e-3)
    _, sb = attach(loop, link)
    for size in (125, 1250, 125):  # 1 ms, 10 ms, 1 ms
        link.a.send(bytes(size))
    loop.run_for(1)
    assert sb.times == [pytest.approx(t + 1e-3) for t in (0.001, 0.011, 0.012)]


# -- queue ----------------------------------------------------------------------


def test_tail_drop_when_queue_is_full(loop):
    link = Link(loop, bandwidth_bps=1e9, delay=0, queue_limit=256)
    _, sb = attach(loop, link)
    accepted = [link.a.send(numbered(i, 1500)) for i in range(300)]
    # one frame on the wire + 256 waiting; the remaining 43 are tail-dropped
    assert accepted == [True] * 257 + [False] * 43
    assert link.a.queue_len == 256
    assert link.a.stats.queue_full == 43
    assert link.a.stats.drops["queue_full"] == 43
    loop.run_for(1)
    assert [num(f) for f in sb.frames] == list(range(257))
    assert link.a.queue_len == 0
    # drained: accepts again
    assert link.a.send(numbered(999, 1500))
    loop.run_for(1)
    assert num(sb.frames[-1]) == 999
    assert link.a.stats.dropped == 43


def test_queue_drains_at_line_rate(loop):
    link = Link(loop, bandwidth_bps=8e6, delay=0, queue_limit=10)
    attach(loop, link)
    for _ in range(11):
        assert link.a.send(bytes(1000))  # 1 ms each
    assert not link.a.send(bytes(1000))
    loop.run_for(0.0035)  # frames 0..3 started (t=0,1,2,3 ms): 7 left waiting
    assert link.a.queue_len == 7
    assert all(link.a.send(bytes(1000)) for _ in range(3))
    assert not link.a.send(bytes(1000))


def test_queue_limit_zero_means_no_buffer(loop):
    link = Link(loop, bandwidth_bps=8e6, delay=0, queue_limit=0)
    attach(loop, link)
    assert link.a.send(bytes(1000))
    assert not link.a.send(bytes(1000))
    loop.run_for(0.001)
    assert link.a.send(bytes(1000))


def test_no_receiver_and_mtu_drops(loop):
    link = Link(loop, mtu=1500)
    link.a.send(bytes(100))
    loop.run_for(1)
    assert link.a.stats.no_receiver == 1
    sa, sb = attach(loop, link)
    assert link.a.send(bytes(1514))
    assert not link.a.send(bytes(1515))
    loop.run_for(1)
    assert len(sb.frames) == 1
    assert link.a.stats.drops == {"queue_full": 0, "too_big": 1, "loss": 0, "no_receiver": 1}
    link.b.set_receiver(None)
    link.a.send(b"x")
    loop.run_for(1)
    assert link.a.stats.no_receiver == 2


def test_mutable_frames_are_snapshotted(loop):
    link = Link(loop)
    _, sb = attach(loop, link)
    buf = bytearray(b"abcdef")
    link.a.send(buf)
    link.a.send(memoryview(buf)[:3])
    buf[0] = ord("Z")
    loop.run_for(1)
    assert sb.frames == [b"abcdef", b"abc"]
    assert all(type(f) is bytes for f in sb.frames)


def test_macs_generated_from_seed_and_distinct(loop):
    l1 = Link(loop, seed=5)
    l2 = Link(loop, seed=5)
    macs = [l1.a.mac, l1.b.mac, l2.a.mac, l2.b.mac]
    assert len(set(macs)) == 4
    for m in macs:
        assert len(m) == 6 and m[0] & 0x02 and not m[0] & 0x01
    with SimLoop() as other:
        assert Link(other, seed=5).a.mac == l1.a.mac  # reproducible
    l3 = Link(loop, mac_a=b"\x02\x00\x00\x00\x00\x01", mac_b="02:00:00:00:00:02")
    assert l3.a.mac == bytes.fromhex("020000000001") and l3.b.mac == bytes.fromhex("020000000002")


# -- faults ---------------------------------------------------------------------


def test_fault_config_validation():
    for bad in (dict(loss=-0.1), dict(duplicate=1.5), dict(reorder=float("nan")),
                dict(corrupt=2), dict(delay_rate=-1), dict(extra_delay=-1),
                dict(reorder_delay=-1e-6)):
        with pytest.raises(ValueError):
            FaultConfig(**bad)
    assert not FaultConfig().enabled
    assert FaultConfig(loss=1.0).enabled


N = 20000


def run_faulty(cfg, seed=0, n=N, size=64, bandwidth=1e9, delay=50e-6):
    lp = SimLoop()
    try:
        link = Link(lp, bandwidth_bps=bandwidth, delay=delay, queue_limit=None,
                    faults_ab=cfg, seed=seed)
        sink = Sink(lp)
        link.b.set_receiver(sink)
        sent = [numbered(i, size) for i in range(n)]
        for f in sent:
            link.a.send(f)
        lp.run_for(10)
        return link, sent, sink
    finally:
        lp.shutdown()


def within(count, n, p, sigmas=5):
    sd = math.sqrt(n * p * (1 - p))
    return abs(count - n * p) <= sigmas * sd + 1


@pytest.mark.parametrize("p", [0.01, 0.2])
def test_loss_rate(p):
    link, sent, sink = run_faulty(FaultConfig(loss=p))
    lost = link.a.stats.loss
    assert within(lost, N, p)
    assert len(sink.frames) == N - lost
    assert link.a.faults.lost == lost
    got = [num(f) for f in sink.frames]
    assert got == sorted(got)  # loss alone never reorders
    assert all(sent[num(f)] == f for f in sink.frames)


def test_duplicate_rate():
    p = 0.1
    link, sent, sink = run_faulty(FaultConfig(duplicate=p))
    dup = link.a.stats.duplicated
    assert within(dup, N, p)
    assert len(sink.frames) == N + dup
    counts = {}
    for f in sink.frames:
        counts[num(f)] = counts.get(num(f), 0) + 1
    assert set(counts) == set(range(N))
    assert sum(1 for c in counts.values() if c == 2) == dup
    assert max(counts.values()) == 2
    assert link.a.stats.delivered_frames == N + dup


def test_corrupt_rate_and_bytes_really_change():
    p = 0.05
    link, sent, sink = run_faulty(FaultConfig(corrupt=p), size=100)
    assert len(sink.frames) == N
    changed = 0
    positions = set()
    # the sequence number may itself be corrupted: match by position (order is kept)
    for orig, got in zip(sent, sink.frames):
        assert len(got) == len(orig)
        diff = [i for i in range(len(orig)) if orig[i] != got[i]]
        if diff:
            changed += 1
            assert len(diff) == 1
            flipped = bin(orig[diff[0]] ^ got[diff[0]]).count("1")
            assert 1 <= flipped <= 3
            positions.add(diff[0])
    assert changed == link.a.stats.corrupted
    assert within(changed, N, p)
    assert len(positions) > 90  # anywhere in the frame, headers included
    assert 0 in positions and 99 in positions


def test_reorder_rate_and_frames_really_overtake():
    p = 0.05
    # 1 Gbit/s, 1500 B: 12 us apart; reordered frames are held 36 us by default
    link, sent, sink = run_faulty(FaultConfig(reorder=p), size=1500, n=N // 2)
    n = N // 2
    assert link.a.faults.reorder_delay == pytest.approx(3 * 1500 * 8 / 1e9)
    assert within(link.a.stats.reordered, n, p)
    got = [num(f) for f in sink.frames]
    assert sorted(got) == list(range(n))  # nothing lost or duplicated
    late = sum(1 for i in range(1, n) if got[i] < got[i - 1])
    assert late > 0.8 * link.a.stats.reordered  # most reordered frames got overtaken
    # a reordered frame is overtaken by the ~3 frames sent within reorder_delay
    pos = {x: i for i, x in enumerate(got)}
    displacement = max(pos[x] - x for x in range(n))
    assert 1 <= displacement <= 6


def test_reorder_delay_override():
    link, sent, sink = run_faulty(FaultConfig(reorder=1.0, reorder_delay=1e-3), n=10,
                                  bandwidth=8e6, delay=0)
    assert sink.times[0] == pytest.approx(64 * 8 / 8e6 + 1e-3)


def test_delay_rate_and_extra_delay():
    p, extra = 0.1, 0.002
    link, sent, sink = run_faulty(FaultConfig(delay_rate=p, extra_delay=extra),
                                  n=2000, bandwidth=8e6, delay=0.0)  # 64 us per frame
    delayed = link.a.stats.delayed
    assert within(delayed, 2000, p)
    byte_t = 8 / 8e6
    late = 0
    for f, t in zip(sink.frames, sink.times):
        base = (num(f) + 1) * 64 * byte_t
        if t == pytest.approx(base + extra):
            late += 1
        else:
            assert t == pytest.approx(base)
    assert late == delayed


def test_all_faults_at_once_accounting():
    cfg = FaultConfig(loss=0.05, duplicate=0.05, reorder=0.05, corrupt=0.05,
                      delay_rate=0.05, extra_delay=1e-4)
    link, sent, sink = run_faulty(cfg, size=200)
    st = link.a.stats
    for name in ("loss", "duplicated", "reordered", "corrupted", "delayed"):
        # every action is applied only to frames not lost (except loss itself)
        base = N if name == "loss" else N - st.loss
        assert within(getattr(st, name), base, 0.05), name
    assert len(sink.frames) == N - st.loss + st.duplicated == st.delivered_frames
    d = st.as_dict()
    assert d["loss"] == st.loss and d["sent_frames"] == N


def test_faults_can_be_changed_mid_run(loop):
    link = Link(loop, faults_ab=FaultConfig(loss=1.0))
    _, sb = attach(loop, link)
    for _ in range(10):
        link.a.send(b"x" * 60)
    loop.run_for(1)
    link.a.set_faults(None)
    for _ in range(5):
        link.a.send(b"y" * 60)
    loop.run_for(1)
    assert len(sb.frames) == 5 and link.a.stats.loss == 10
    link.a.set_faults(FaultConfig(loss=1.0))
    link.a.send(b"z")
    loop.run_for(1)
    assert link.a.stats.loss == 11


def test_fault_injector_standalone():
    inj = FaultInjector(FaultConfig(corrupt=1.0), rng=3)
    out = []
    inj.inject(b"\x00" * 10, 1.0, lambda w, fn, f: out.append((w, f)), None)
    assert len(out) == 1 and out[0][1] != b"\x00" * 10 and inj.corrupted == 1
    assert inj.counters()["frames"] == 1
    assert inj.corrupt_frame(b"") == b""


# -- determinism ----------------------------------------------------------------


CHAOS = FaultConfig(loss=0.03, duplicate=0.03, reorder=0.05, corrupt=0.03,
                    delay_rate=0.02, extra_delay=3e-4)


def outcome(seed):
    with SimLoop() as lp:
        link = Link(lp, bandwidth_bps=1e8, delay=1e-4, queue_limit=64, faults_ab=CHAOS,
                    faults_ba=CHAOS, seed=seed)
        log = []
        link.a.set_receiver(lambda f: log.append(("a", lp.time(), f)))

        def echo(f):
            log.append(("b", lp.time(), f))
            link.b.send(f[::-1])

        link.b.set_receiver(echo)

        def pump(i):
            link.a.send(numbered(i, 60 + (i * 37) % 1400))
            if i < 3000:
                lp.call_later(lp.rng.choice([0, 1e-6, 2e-5, 1e-4]), pump, i + 1)

        pump(0)
        lp.run_for(2)
        stats = (link.a.stats.as_dict(), link.b.stats.as_dict(), link.a.mac, link.b.mac)
    return log, stats


def test_same_seed_same_outcome_byte_for_byte():
    log1, st1 = outcome(11)
    log2, st2 = outcome(11)
    assert len(log1) > 3000
    assert st1[0]["queue_full"] > 0  # the queue limit is exercised too
    assert log1 == log2 and st1 == st2


def test_different_seed_different_outcome():
    log1, st1 = outcome(11)
    log3, st3 = outcome(12)
    assert log1 != log3
    assert st1[:2] != st3[:2]


_DIGEST_SCRIPT = """
import hashlib, sys
sys.path.insert(0, sys.argv[1])
from test_io_link import outcome
log, stats = outcome(11)
h = hashlib.sha256(repr((log, stats)).encode())
print(h.hexdigest())
"""


def test_same_seed_same_outcome_across_processes_and_hash_seeds():
    import hashlib
    import os
    import subprocess
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    log, stats = outcome(11)
    expected = hashlib.sha256(repr((log, stats)).encode()).hexdigest()
    for hash_seed in ("1", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        out = subprocess.run([sys.executable, "-c", _DIGEST_SCRIPT, here], env=env,
                             capture_output=True, text=True, timeout=120, check=True)
        assert out.stdout.strip() == expected


# -- taps -----------------------------------------------------------------------


def test_taps_see_every_sent_frame_with_send_time(loop):
    link = Link(loop, faults_ab=FaultConfig(loss=1.0), queue_limit=0)
    seen = []
    link.a.add_tap(lambda f, t: seen.append(("a", f, t)))
    tap_b = lambda f, t: seen.append(("b", f, t))  # noqa: E731
    link.b.add_tap(tap_b)
    loop.call_at(1.0, link.a.send, b"one")
    loop.call_at(1.0, link.a.send, b"two")  # tail-dropped (queue_limit=0), still tapped
    loop.call_at(2.0, link.b.send, b"three")
    loop.run_for(3)
    assert seen == [("a", b"one", 1.0), ("a", b"two", 1.0), ("b", b"three", 2.0)]
    link.b.remove_tap(tap_b)
    link.b.send(b"four")
    assert len(seen) == 3
