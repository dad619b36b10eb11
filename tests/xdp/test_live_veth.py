"""atcp_wire on a live device: a veth pair between two namespaces of this test's own, the
program attached in native mode on the NIC's end and the XDP_PASS stub on the peer's end
(a veth end receiving XDP_TX'd frames needs a program, notes/xdp-on-this-kernel.md).
Real Linux clients connect(): their SYNs (timestamps on) are answered by cookie SYN-ACKs
from XDP, and their handshake ACKs verify and become 0x090A frames (the NIC's kernel
drops those: no host stack here -- the live topology with the TAP is the next slice).
With timestamps off the SYN goes up instead (to this namespace's kernel, which has no
listener: an RST).  The namespaces are removed when the test ends, also on failure, and
with them the devices and attachments."""

import os
import subprocess
import sys
import time

import pytest

from acceltcp.wire.control import Listen

NIC_IP = "198.18.77.1"
PEER_IP = "198.18.77.2"
CLIENT = """
import socket, sys
ok = 0
for i in range(int(sys.argv[3])):
    s = socket.socket()
    s.settimeout(2.0)
    try:
        s.connect((sys.argv[1], int(sys.argv[2])))
        ok += 1
    except OSError as e:
        print("connect:", e, file=sys.stderr)
    finally:
        s.close()
print(ok)
"""


def _ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


@pytest.fixture
def veth_pair(request):
    tag = "%d" % os.getpid()
    nic_ns, peer_ns = "atcp-xdpn-" + tag, "atcp-xdpp-" + tag

    def cleanup():
        for ns in (nic_ns, peer_ns):
            _ip("netns", "del", ns, check=False)
    request.addfinalizer(cleanup)
    cleanup()
    _ip("netns", "add", nic_ns)
    _ip("netns", "add", peer_ns)
    _ip("link", "add", "axn" + tag[-8:], "netns", nic_ns, "type", "veth", "peer", "name",
        "axp" + tag[-8:], "netns", peer_ns)
    n_if, p_if = "axn" + tag[-8:], "axp" + tag[-8:]
    _ip("-n", nic_ns, "addr", "add", NIC_IP + "/24", "dev", n_if)
    _ip("-n", peer_ns, "addr", "add", PEER_IP + "/24", "dev", p_if)
    for ns, dev in ((nic_ns, n_if), (peer_ns, p_if)):
        _ip("-n", ns, "link", "set", dev, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
    mac = bytes.fromhex(_ip("-n", nic_ns, "-br", "link", "show", n_if).stdout.split()[2]
                        .replace(":", ""))
    return nic_ns, n_if, peer_ns, p_if, mac


def _connect(peer_ns, port, n, ts=True):
    cmd = ["ip", "netns", "exec", peer_ns]
    subprocess.run(cmd + ["sysctl", "-qw", "net.ipv4.tcp_timestamps=%d" % (1 if ts else 0)],
                   check=True)
    r = subprocess.run(cmd + [sys.executable, "-c", CLIENT, NIC_IP, str(port), str(n)],
                       capture_output=True, text=True, timeout=60)
    return int(r.stdout.strip() or 0), r.stderr


def test_linux_clients_through_xdp_cookies(open_xdp, veth_pair):
    nic_ns, n_if, peer_ns, p_if, mac = veth_pair
    x = open_xdp(mac, csum_ok=True)          # a kernel peer's partial checksums
    x.listen(Listen(bytes(map(int, NIC_IP.split("."))), 80, 1460, 7, True, True))
    x.set_clock(time.monotonic())
    # by id: `ip netns exec` mounts a sysfs of its own, without /sys/fs/bpf's pins
    for ns, dev, prog in ((nic_ns, n_if, "atcp_wire"), (peer_ns, p_if, "atcp_pass")):
        subprocess.run(["ip", "netns", "exec", ns, "bpftool", "net", "attach", "xdpdrv", "id",
                        str(x.prog_ids[prog]), "dev", dev], check=True)
    ok, err = _connect(peer_ns, 80, 20)
    c = x.counters
    assert ok == 20, err
    # each client's handshake ACK and its FIN (closed before any reply: it still echoes
    # the cookie TSval at seq = ISN + 1, and verifies like the ACK, as in nic/dataplane.py)
    assert c["syn_cookies_sent"] == 20 and c["cookie_ack_ok"] == 40, c
    assert c["cookie_ack_bad"] == 0 and len(x.handed_entries()) == 20
    # timestamps off: no cookie, the SYN goes up (no listener up there: refused)
    ok, _ = _connect(peer_ns, 80, 3, ts=False)
    c = x.counters
    assert ok == 0 and c["syn_to_host"] >= 3 and c["syn_cookies_sent"] == 20


EXCHANGE = """
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
s.bind((sys.argv[1], 0))
s.settimeout(0.2)
nic_ip = socket.inet_aton(sys.argv[2])
for hx in sys.argv[3:]:
    s.send(bytes.fromhex(hx))
    end = time.monotonic() + 3.0
    got = ""
    while time.monotonic() < end and not got:
        try:
            f = s.recv(4096)
        except socket.timeout:
            continue
        if len(f) >= 54 and f[23] == 6 and f[26:30] == nic_ip:
            got = f.hex()
    print(got or "-", flush=True)
"""


def test_live_synacks_are_the_python_nics_bytes(open_xdp, veth_pair):
    """Crafted SYNs sent from the peer's namespace: the SYN-ACKs that come back over the
    veth are byte for byte the Python NIC's for the same secret, clock and listener --
    including a TS-only SYN (66 bytes) whose SYN-ACK (70) grows at the front of the
    buffer on a live device, and a SYN with payload, trimmed at the tail."""
    from acceltcp.nic.dataplane import HOST, WIRE, NicDataplane
    from acceltcp.wire.tcp import build_tcp_frame, tcp_options

    nic_ns, n_if, peer_ns, p_if, mac = veth_pair
    peer_mac = bytes.fromhex(_ip("-n", peer_ns, "-br", "link", "show", p_if).stdout.split()[2]
                             .replace(":", ""))
    x = open_xdp(mac, csum_ok=True, secret=bytes(range(32)))
    nic = NicDataplane(mac, secret=bytes(range(32)), teardown_capacity=0, splice_capacity=0)
    srv = bytes(map(int, NIC_IP.split(".")))
    cli = bytes(map(int, PEER_IP.split(".")))
    listen = Listen(srv, 80, 1400, 9, True, True)
    x.listen(listen)
    now = 5000.125
    nic.process(listen.frame(mac, peer_mac), HOST, now)
    x.set_clock(now)
    for ns, dev, prog in ((nic_ns, n_if, "atcp_wire"), (peer_ns, p_if, "atcp_pass")):
        subprocess.run(["ip", "netns", "exec", ns, "bpftool", "net", "attach", "xdpdrv", "id",
                        str(x.prog_ids[prog]), "dev", dev], check=True)
    syns = [build_tcp_frame(mac, peer_mac, cli, srv, 1, 41000 + i, 80, 0xFFFFFF00 + i, 0,
                            0x02, 64240, opts, payload)
            for i, (opts, payload) in enumerate([
                (tcp_options(timestamps=(777, 0)), b""),                       # grows 4
                (tcp_options(mss=1460, wscale=7, sack_permitted=True,
                             timestamps=(778, 0)), b""),                      # same size
                (tcp_options(mss=1200, timestamps=(779, 0)), bytes(100))])]  # shrinks
    want = [nic.process(f, WIRE, now) for f in syns]
    r = subprocess.run(["ip", "netns", "exec", peer_ns, sys.executable, "-c", EXCHANGE, p_if,
                        NIC_IP] + [f.hex() for f in syns], capture_output=True, text=True,
                       timeout=60, check=True)
    got = r.stdout.split()
    assert [w[0][0] for w in want] == [WIRE] * 3
    assert got == [bytes(w[0][1]).hex() for w in want]
    assert x.counters["syn_cookies_sent"] == 3 and x.xdp_counters()["xdp_adjust_failed"] == 0
