"""Differential, teardown, generated: hypothesis-made peer segments on handed-over flows
through nic/dataplane.py + nic/teardown.py and through atcp_td_wire + TeardownControl,
derandomized (the same frames on every run).  Each example is a fresh pair of NICs, one
to three handovers with generated parameters (payload, MSS, state, timestamps, window
and scaling, RTO, retries, TIME-WAIT, sequence numbers near the wrap), then segments
aimed at the flow's current state (sequence and ACK numbers around RCV.NXT, SND.UNA and
SND.MAX, every flag combination, TSvals around TS.Recent, data, options), corrupted
frames, timer expiries and clock steps.  Outputs are compared on every frame, the
teardown state (tdiff.TdPair.check_state) every few frames and after each example."""

import random
import struct
from collections import Counter

import pytest
from hypothesis import given, settings, strategies as st

from acceltcp.wire.control import STATE_CLOSE_WAIT, STATE_ESTABLISHED

from .diff import fix_checksums
from .tdiff import TdPair, handover, peer

EXAMPLES = 400
ACTIONS = 40
MIN_SEGMENTS = 8000     # peer segments per run (per report mode)
MASK = 0xFFFFFFFF
FLAGS = (0x10, 0x10, 0x10, 0x10, 0x10, 0x18, 0x18, 0x11, 0x19, 0x04, 0x14, 0x02, 0x12,
         0x00, 0x01, 0x16, 0x03)


class Run:
    def __init__(self, p, data):
        self.p = p
        self.r = random.Random(data.draw(st.integers(0, 2**64)))
        self.now = 1000.0 + self.r.random()
        self.ports = []
        self.sent = 0
        self.segments = 0

    def send_wire(self, f, csum_ok=False):
        self.sent += 1
        self.segments += 1
        self.p.wire(f, self.now, state=self.sent % 4 == 0, csum_ok=csum_ok)

    def handover(self):
        r = self.r
        cport = r.choice((40000, 40001, 40002))
        n = r.choice((0, 1, 100, 1000, 3000, 9000, r.randrange(20000)))
        ts = r.randrange(3) != 0
        msg = dict(mss=r.choice((64, 100, 536, 1000, 1460)),
                   state=STATE_CLOSE_WAIT if r.randrange(4) == 0 else STATE_ESTABLISHED,
                   rto_us=r.choice((0, 1000, 5000, 200000, 200000, 200000)),
                   max_retries=r.choice((0, 1, 3, 8)),
                   time_wait_ms=r.choice((0, 10, 1000, 60000)),
                   rcv_wscale=r.choice((0, 0, 2, 7, 14)), snd_wscale=r.choice((0, 3)),
                   snd_wnd=r.choice((0, 1000, 1 << 20)), flow_id=r.choice((0, 0, 7)),
                   timestamps=ts, sack_ok=bool(r.getrandbits(1)))
        if ts:
            msg.update(ts_recent=r.getrandbits(32), ts_offset=r.getrandbits(32),
                       ts_last=r.getrandbits(32))
        una = r.choice((r.getrandbits(32), MASK - r.randrange(3000), 1000))
        rnxt = r.choice((r.getrandbits(32), MASK - r.randrange(10), 5000))
        window = r.choice((0, 1, 100, 1000, 65535))
        self.sent += 1
        self.p.host(handover(r.randbytes(n), una=una, rnxt=rnxt, window=window, cport=cport,
                             **msg), self.now, state=False)
        self.ports.append(cport)

    def entry(self, cport):
        td = self.p.nic.teardown
        fid = td.lookup(bytes([10, 0, 0, 2, 10, 0, 0, 1]) + struct.pack("!HH", cport, 80))
        return td.entry(fid) if fid is not None else None

    def dupacks(self):
        """Duplicate ACKs at SND.UNA (RFC 5681 §2), 3 or 4 in a row."""
        live = [c for c in self.ports if self.entry(c) is not None]
        if not live:
            return self.handover()
        cport = self.r.choice(live)
        e = self.entry(cport)
        ts = (e["ts_recent"], 0) if e["flags"] & 1 else None
        for _ in range(self.r.choice((3, 4))):
            self.now += 0.0001
            self.send_wire(peer(e["rcv_nxt"], e["snd_una"], window=e["peer_window"],
                                cport=cport, ts=ts))

    def segment(self):
        r = self.r
        cport = r.choice(self.ports)
        e = self.entry(cport)
        if e is None:                       # gone: a random segment on the tuple
            e = dict(rcv_nxt=r.getrandbits(32), snd_una=r.getrandbits(32),
                     snd_max=r.getrandbits(32), window=1000, wscale=0, ts_recent=0,
                     flags=r.getrandbits(1), mss=100, peer_window=500)
        wnd = e["window"] << (e["wscale"] & 15)
        plen = r.choice((0, 0, 0, 1, 5, 100, 700))
        seq = (e["rcv_nxt"] + r.choice((0, 0, 0, 0, -1, 1, wnd, wnd - 1, -plen, -1 - plen, -1000,
                                        r.getrandbits(32), 1 << 31))) & MASK
        una, smax = e["snd_una"], e["snd_max"]
        ack = r.choice((una, una, una + e["mss"], smax, smax, smax + 1, una - 1,
                        (una + smax) // 2, r.getrandbits(32))) & MASK
        flags = r.choice(FLAGS) if r.randrange(10) else r.randrange(256)
        window = e["peer_window"] if r.randrange(3) else r.randrange(65536)
        tsr = e["ts_recent"]
        tsval = (tsr + r.choice((0, 1, 1, 2, 100, -1, 1 << 31, r.getrandbits(32)))) & MASK
        k = r.randrange(8)
        if k == 0:
            opts = b""
        elif k == 1:                        # SACK blocks and TS: the general walk
            opts = b"\x01\x01\x05\x0a" + r.randbytes(8) + struct.pack(
                "!BBBBII", 1, 1, 8, 10, tsval, r.getrandbits(32))
        elif k == 2:                        # a malformed option list
            opts = r.choice((b"\x08\x05\x00\x00", b"\x02\x04\x05", b"\x01\x01\x01\x09",
                             b"\x02\x03\x05\x00", b"\x03\x02\x01\x01"))    # bad lengths
            opts = opts.ljust(4, b"\0")
        else:
            opts = struct.pack("!BBBBII", 1, 1, 8, 10, tsval, r.getrandbits(32))
        f = peer(seq, ack, flags, payload=r.randbytes(plen), window=window, cport=cport,
                 opts=opts)
        c = r.randrange(12)
        if c == 0:
            f = f[:-1] + bytes([f[-1] ^ 0x21])            # bad checksum
        elif c == 1:
            b = bytearray(f)
            b[46] = r.randrange(256)                      # data offset
            f = fix_checksums(b)
        self.send_wire(f, csum_ok=r.randrange(8) == 0)

    def step(self):
        r = self.r
        a = r.randrange(20)
        if a == 0 and len(self.ports) < 3 or \
                a < 4 and not any(self.entry(c) for c in self.ports):
            self.handover()
        elif a == 5:
            self.dupacks()
        elif a in (1, 2):
            d = self.p.nic.next_deadline()
            if d is not None:
                self.now = max(self.now, d)
                self.sent += 1
                self.p.timer(self.now, state=False)
        elif a == 3:
            self.now += r.choice((0.0005, 0.01, 0.3, 2.0, 70.0))
            self.sent += 1
            self.p.timer(self.now, state=False)
        elif a == 4:
            self.sent += 1
            self.p.status(self.now)
        else:
            self.now += r.choice((0.0, 0.0001, 0.001, 0.003))
            self.segment()


@pytest.mark.parametrize("ri", [0, 0.001], ids=["per-flow-reports", "moderated"])
def test_generated_teardown_segments_agree(open_xdp, ri):
    p = TdPair(open_xdp, capacity=3, report_interval=ri)
    seen = Counter()
    segments = []

    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None)
    @given(st.data())
    def run(data):
        p.reset()
        r = Run(p, data)
        r.handover()
        while r.sent < ACTIONS:
            r.step()
        p.check_state()
        seen.update(p.nic.teardown.counters)
        seen.update(p.nic.counters)
        segments.append(r.segments)

    run()
    print("generated peer segments compared: %d (%d frames in all)" % (sum(segments),
                                                                       p.frames))
    assert sum(segments) >= MIN_SEGMENTS, "only %d segments" % sum(segments)
    for name in ("accepted", "refused_duplicate", "retransmits_rto", "retransmits_fast",
                 "retransmits_partial", "done_closed", "done_reset", "done_retries",
                 "time_wait_entered", "time_wait_restarts", "syn_reopen", "bytes_acked",
                 "bytes_received", "challenge_acks", "dupacks", "paws_drops", "unacceptable",
                 "drop_teardown_no_ack", "drop_teardown_rst_outside", "acks_sent",
                 "teardown_frames", "drop_teardown_tcp_bad_checksum",
                 "drop_teardown_tcp_bad_offset", "drop_teardown_tcp_bad_option_length"):
        assert seen[name] > 0, "%s: %s" % (name, sorted(seen.items()))
