"""10 MiB each way between two host stacks over a faulty simulated link, byte-exact.

Faults on both directions: loss 5 %, reordering 2 %, duplication 1 %, corruption 0.1 %.
Corrupted frames must be caught by the checksums (counted as drops), and the sender's
counters must show real loss recovery (fast retransmits), not only timeouts.
"""

import hashlib
import random

import pytest

from acceltcp.testbed.simnet import make_pair
from acceltcp.io.sim import FaultConfig, SimLoop
from acceltcp.tcp.config import TcpConfig

from .duplex import run_duplex

MiB = 1 << 20
FAULTS = FaultConfig(loss=0.05, reorder=0.02, duplicate=0.01, corrupt=0.001)
NEAR_WRAP = (1 << 32) - 9000


def run_bidirectional(cc, nbytes, faults, seed=1):
    cfg = TcpConfig(cc=cc)
    rng = random.Random(seed)
    up = rng.randbytes(nbytes)
    down = rng.randbytes(nbytes)
    result = {}
    with SimLoop(seed) as loop:
        net = make_pair(loop, config_a=cfg, config_b=cfg, faults=faults, seed=seed,
                        bandwidth_bps=1e9, delay=100e-6, queue_limit=1000,
                        stack_a={"isn": lambda *a: NEAR_WRAP},
                        stack_b={"isn": lambda *a: NEAR_WRAP - 4321})
        result.update(run_duplex(loop, net, up, down))
        result["a"] = net.a.stats()
        result["b"] = net.b.stats()
        result["link"] = net.stats()["link"]
    return up, down, result


@pytest.mark.slow
@pytest.mark.parametrize("cc", ["newreno", "cubic"])
def test_10mib_each_way_under_faults(cc):
    up, down, r = run_bidirectional(cc, 10 * MiB, FAULTS)
    assert r["server"] == (len(up), hashlib.sha256(up).hexdigest())
    assert r["client"] == (len(down), hashlib.sha256(down).hexdigest())
    # The faults really happened ...
    for d in ("ab", "ba"):
        link = r["link"][d]
        assert link["loss"] > 0 and link["corrupted"] > 0
        assert link["duplicated"] > 0 and link["reordered"] > 0
    # ... corrupted frames were dropped by checksum, never delivered as data ...
    drops = {**r["a"]["drops"]}
    for k, v in r["b"]["drops"].items():
        drops[k] = drops.get(k, 0) + v
    assert sum(v for k, v in drops.items() if "checksum" in k) > 0
    # ... and loss recovery ran on both senders: fast retransmits, not only RTOs.
    for side in ("a", "b"):
        c = r[side]["counters"]
        assert c["fast_retransmits"] > 0, (side, c)
        assert c["retransmits"] > c["fast_retransmits"]
