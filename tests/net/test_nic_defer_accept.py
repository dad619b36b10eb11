"""Defer accept against Linux TCP (docs/nic.md): the echo server's listener has the NIC
hand a connection up with the client's first data, not its bare handshake ACK. Linux
clients through the Python NIC (inline) and XDP: every echo byte-exact, one host frame
less per connection than with `--no-defer-accept`, a client that connects and closes
without a word still handed up (its FIN makes the connection), and one that waits before
it speaks still served."""

import json
import textwrap

import pytest

from .conftest import STACK_IP, VENV_BIN, wait_for

NEEDS_ROOT = True

PORT = 7
N = 60          # request/echo connections
SILENT = 10     # connect, close without a byte
LATE = 3        # connect, wait, then speak

CLIENTS = textwrap.dedent("""
    import json, socket, sys, time
    from acceltcp.testbed.peer import echoed as echo
    host, port, n, silent, late = (sys.argv[1], int(sys.argv[2]), int(sys.argv[3]),
                                   int(sys.argv[4]), int(sys.argv[5]))
    bad = 0
    for i in range(n):
        s = socket.create_connection((host, port), timeout=10)
        bad += not echo(s, bytes((i + k) & 0xFF for k in range(100 + i)))
        s.close()
    for i in range(silent):
        s = socket.create_connection((host, port), timeout=10)
        s.close()
    for i in range(late):
        s = socket.create_connection((host, port), timeout=10)
        time.sleep(0.3)                 # the NIC holds nothing for it meanwhile
        bad += not echo(s, b"late %d" % i)
        s.close()
    print(json.dumps({"bad": bad}))
""")


def _run(bed, tmp_path, placement, defer):
    extra = ["--nic", placement, "--offload", "setup"] + ([] if defer else
                                                          ["--no-defer-accept"])
    srv = bed.serve("echo", PORT, stats=tmp_path / ("%s-%s.json" % (placement, defer)),
                    extra=extra)
    r = bed.run([str(VENV_BIN / "python"), "-c", CLIENTS, STACK_IP, str(PORT), str(N),
                 str(SILENT), str(LATE)], timeout=120)
    assert json.loads(r.stdout.strip().splitlines()[-1]) == {"bad": 0}
    total = N + SILENT + LATE
    assert wait_for(lambda: (s := srv.snapshot())["counters"]["conns_closed"] >= total
                    and s["counters"]["conns_live"] == 0, timeout=20)
    return srv.stop()


@pytest.mark.parametrize("placement", ["inline", "xdp"])
def test_defer_accept_hands_up_with_the_first_data(request, bed, tmp_path, placement):
    if placement == "xdp":
        request.getfixturevalue("xdp_built")
    total = N + SILENT + LATE
    on = _run(bed, tmp_path, placement, True)
    off = _run(bed, tmp_path, placement, False)
    for st, deferred in ((on, total), (off, 0)):
        nic, c = st["nic"]["counters"], st["counters"]
        # every handshake by cookie; every connection handed up once, by its request,
        # its FIN (the silent ones) or, without defer accept, its bare ACK
        assert nic["cookie_ack_deferred"] == deferred, nic
        assert nic["cookie_ack_ok"] >= total and c["cookie_conns"] == total, (nic, c)
        assert nic.get("cookie_ack_bad", 0) == 0 and c["conns_reset"] == 0, (nic, c)
        assert st["drops"] == {}
    # what the host got: one frame less per connection (the bare handshake ACK)
    assert off["counters"]["frames_in"] - on["counters"]["frames_in"] >= 0.9 * total, \
        (on["counters"], off["counters"])
