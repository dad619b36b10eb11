"""The TOE offloads of the simulated NIC (nic/toe.py, SimNicDevice(toe=...)): bulk
transfers byte-exact with each offload on, lossy links included; TSO frames on the wire
identical to those the host cuts itself; fewer host-port transfers with TSO and LRO."""

import hashlib
import random

import pytest

from acceltcp.io.sim import FaultConfig, SimLoop
from acceltcp.nic.placements.sim import SimNicDevice
from acceltcp.testbed.simnet import make_pair
from acceltcp.wire.tcp import FIN, PSH, build_tcp_frame

from .duplex import run_duplex

MiB = 1 << 20
NEAR_WRAP = (1 << 32) - 9000
LOSSY = FaultConfig(loss=0.02, reorder=0.01, duplicate=0.005, corrupt=0.01)


def transfer(nbytes, toe=(), faults=None, tso=True, seed=3, capture=False):
    """nbytes each way between a and b, both behind a SimNicDevice with `toe`."""
    rng = random.Random(seed)
    up, down = rng.randbytes(nbytes), rng.randbytes(nbytes)
    got = {}
    wire = []
    with SimLoop(seed) as loop:
        net = make_pair(loop, faults=faults, seed=seed, nic_a=True, nic_b=True, toe=toe,
                        bandwidth_bps=1e9, delay=100e-6, queue_limit=1000, static_arp=True,
                        stack_a={"isn": lambda *a: NEAR_WRAP, "tso": tso},
                        stack_b={"isn": lambda *a: NEAR_WRAP - 4321, "tso": tso})
        if capture:
            for end in (net.link.a, net.link.b):
                end.add_tap(lambda frame, *_, end=end: wire.append(bytes(frame)))

        got.update(run_duplex(loop, net, up, down))
        got["host_port"] = {"a": dict(net.nic_a.host_port), "b": dict(net.nic_b.host_port)}
        got["lro"] = [n.lro and (n.lro.merges, n.lro.merged_frames, n.lro.bad_checksum)
                      for n in (net.nic_a, net.nic_b)]
    assert got["server"] == (len(up), hashlib.sha256(up).hexdigest())
    assert got["client"] == (len(down), hashlib.sha256(down).hexdigest())
    return got, wire


@pytest.mark.parametrize("toe", [("csum",), ("tso",), ("lro",), ("tso", "lro")])
def test_byte_exact_under_faults_with_each_offload(toe):
    got, _ = transfer(2 * MiB, toe=toe, faults=LOSSY)
    hp = got["host_port"]["a"]
    if "tso" in toe:
        assert hp["tso_segments"] > hp["frames_from_host"] / 2
    if "lro" in toe:
        merges, merged, _ = got["lro"][0]
        assert merges > 0 and merged >= 2 * merges
        # corrupted frames were sent up alone (and dropped by the host), never merged
        assert sum(bad for _, _, bad in got["lro"]) > 0


def test_tso_frames_on_the_wire_are_the_hosts_own():
    """Every super-segment the NIC cut in a real transfer went out as exactly the frames
    the host builds itself for those bytes (wire.tcp.build_tcp_frame per MSS piece: seq,
    IPv4 ident, PSH/FIN on the last piece only, options copied, full checksums)."""
    seen = []
    orig = SimNicDevice.send_segment

    def spy(self, header, payload, gso_size):
        seen.append((bytes(header), bytes(payload), gso_size))
        return orig(self, header, payload, gso_size)

    SimNicDevice.send_segment = spy
    try:
        _, wire = transfer(1 * MiB, toe=("tso",), capture=True)
    finally:
        SimNicDevice.send_segment = orig
    on_wire = set(wire)
    supers = [x for x in seen if len(x[1]) > x[2]]
    assert len(supers) > 10
    for header, payload, mss in seen:
        h = header
        thl = (h[46] >> 4) * 4
        seq, ack = int.from_bytes(h[38:42], "big"), int.from_bytes(h[42:46], "big")
        ident, flags, window = int.from_bytes(h[18:20], "big"), h[47], int.from_bytes(h[48:50], "big")
        pieces = [payload[i:i + mss] for i in range(0, len(payload), mss)]
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            want = build_tcp_frame(h[0:6], h[6:12], h[26:30], h[30:34], ident + i,
                                   int.from_bytes(h[34:36], "big"), int.from_bytes(h[36:38], "big"),
                                   (seq + i * mss) % 2**32, ack,
                                   flags if last else flags & ~(PSH | FIN), window,
                                   h[54:34 + thl], piece)
            # on the wire unless the link lost it (this run is loss-free)
            assert want in on_wire


def test_tso_and_lro_cut_host_port_transfers():
    base, _ = transfer(1 * MiB)
    toe, _ = transfer(1 * MiB, toe=("tso", "lro"))
    for side in ("a", "b"):
        b, t = base["host_port"][side], toe["host_port"][side]
        assert t["frames_from_host"] * 2 < b["frames_from_host"]
        assert t["frames_to_host"] < b["frames_to_host"]      # LRO merged data frames
        assert t["bytes_to_host"] < b["bytes_to_host"]        # one header per merge
