"""A SYN flood against the host stack alone (no NIC) on the TAP testbed: 1,000 spoofed
SYNs a second for 20 s from 198.18.128.0/17 (no one answers their SYN-ACKs nor ARP for
them; `testbed.synflood` says why that is the worst case), while Linux clients connect
and do an echo round trip. The SYN queue fills within a second; from then on clients
get SYN cookies. Every client must be served (>= 99 %), the SYN queue stays at its cap,
no ARP request goes out for a spoofed source, and the server's memory stays flat."""

import json
import sys

from ..accounting import check_accounting
from .conftest import STACK_IP, wait_for

NEEDS_ROOT = True
FLOOD = [sys.executable, "-m", "acceltcp.testbed.synflood"]
RATE = 1000
SECONDS = 20


def _rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for %d" % pid)


def test_clients_are_served_through_a_spoofed_syn_flood(bed, tmp_path):
    srv = bed.serve("echo", 7, offload=False, stats=tmp_path / "serve.json")
    # warm up (first connection, ARP, allocator) before the baseline
    r = bed.run(FLOOD + ["clients", STACK_IP, "7", "--count", "20", "--rate", "0"])
    assert json.loads(r.stdout.splitlines()[-1])["ok"] == 20
    rss0 = _rss_kib(srv.proc.pid)
    flood = bed.popen(FLOOD + ["flood", STACK_IP, "7", "--rate", str(RATE), "--duration",
                               str(SECONDS)])
    flood.wait_line(flood.p.stdout, lambda line: '"start"' in line)
    # the queue is full within the first second (1,024 < 1,000 SYN/s x 2 s)
    assert wait_for(lambda: srv.snapshot()["counters"]["conns_live"] >= 1024, 5.0)
    n = 300
    r = bed.run(FLOOD + ["clients", STACK_IP, "7", "--count", str(n), "--rate", "20",
                         "--concurrency", "8", "--timeout", "20"], timeout=60, check=False)
    res = json.loads(r.stdout.splitlines()[-1])
    mid = srv.snapshot()
    flood.p.wait(SECONDS + 30)
    fres = json.loads(flood.p.stdout.read().splitlines()[-1])
    rss1 = _rss_kib(srv.proc.pid)
    st = srv.stop()
    c = st["counters"]

    assert fres["sent"] >= RATE * SECONDS * 0.99 and fres["rate"] >= RATE * 0.95, fres
    assert res["ok"] >= 0.99 * n, res
    # clients came in while the queue was full: through cookies
    assert c["syn_cookies_sent"] >= RATE * SECONDS * 0.5 and c["syn_cookie_ack_ok"] > 0.5 * n
    assert c.get("syn_cookie_ack_bad", 0) == 0
    # the SYN queue never held more than its cap (embryonic children are conns_live)
    assert mid["counters"]["conns_live"] <= 1024 + 16
    # no ARP request for any spoofed source; nothing queued or dropped for ARP
    assert c.get("arp_requests_sent", 0) <= 2, c
    for k in ("arp_pending_full", "arp_queue_overflow", "arp_unresolved"):
        assert st["drops"].get(k, 0) == 0, st["drops"]
    # memory flat: the queue's 1,024 children and their timers, not per-SYN state
    assert rss1 - rss0 < 48 * 1024, (rss0, rss1)
    check_accounting(st, settled=False)        # children still in the queue at the end
