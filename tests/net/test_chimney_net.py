"""TCP Chimney partial offload against Linux TCP on the TAP testbed: ``serve echo --nic
inline --offload chimney``; a Linux client sends 20 MiB and reads the echo, under 2 %
loss each way. The NIC runs the accepted connection's data path (the host's own TCB
code); the client's FIN brings it back to the host, which finishes the echo and closes.
Byte-exact both ways."""

from acceltcp.testbed.peer import expected_sha256

from .conftest import STACK_IP

NEEDS_ROOT = True
MiB = 1 << 20


def test_chimney_echo_20mib_under_2pct_loss(bed, tmp_path):
    n = 20 * MiB
    srv = bed.serve("echo", 7, stats=tmp_path / "serve.json",
                    extra=["--nic", "inline", "--offload", "chimney"])
    bed.loss(2, 2)
    cl = bed.peer("duplex", STACK_IP, 7, "--bytes", n, "--seed", 3, "--timeout", 300,
                  timeout=600)
    bed.run(["nft", "delete", "table", "netdev", "atcp_loss"], check=False)
    st = srv.stop()
    assert cl["errors"] == [], cl
    assert cl["received"] == n and cl["sha256"] == expected_sha256(3, n)
    c = st["counters"]
    assert c["chimney_offered"] == c["chimney_accepted"] == 1, c
    assert c.get("chimney_upload_peer_fin", 0) + c.get("chimney_upload_app_close", 0) == 1
    assert c.get("chimney_lost", 0) == 0 and c["conns_reset"] == 0
    ch = st["nic"]["chimney"]
    assert ch["offloads"] == 1 and ch["uploads"] == 1
    # the NIC did the bulk of the transfer: most bytes each way went through its TCB
    assert ch["bytes_to_host"] > n // 2 and ch["bytes_from_host"] > n // 2
    assert ch["segments_in"] > 4 * ch["data_frames"]            # large chunks to the host
