"""A capture of a lossy transfer is a well-formed pcap: scapy and tshark read every frame,
with no malformed packets and no checksum errors."""

import hashlib
import random
import shutil
import subprocess

from scapy.all import IP, TCP, rdpcap

from acceltcp.apps.bulk import SinkServer, Source
from acceltcp.testbed.simnet import make_pair
from acceltcp.io.pcap import PcapWriter
from acceltcp.io.sim import FaultConfig, SimLoop
from acceltcp.tcp.config import TcpConfig


def capture_lossy_transfer(path, nbytes=300_000):
    data = random.Random(5).randbytes(nbytes)
    cfg = TcpConfig()
    with SimLoop(5) as loop, PcapWriter(path) as pcap:
        net = make_pair(loop, config_a=cfg, config_b=cfg, seed=5,
                        faults=FaultConfig(loss=0.03, reorder=0.02, duplicate=0.01))
        net.link.capture(pcap)
        sink = SinkServer(net.b, 9, digest=True)
        Source(net.a, "198.18.0.2", 9, data)
        assert loop.run_until(lambda: sink.closed == 1, timeout=600)
        loop.run_for(1.0)
        assert sink.digest.hexdigest() == hashlib.sha256(data).hexdigest()
        retransmits = net.a.counters["retransmits"]
    return retransmits


def test_pcap_of_lossy_transfer_parses_with_scapy(tmp_path):
    path = tmp_path / "lossy.pcap"
    retransmits = capture_lossy_transfer(str(path))
    assert retransmits > 0
    packets = rdpcap(str(path))
    tcp = [p for p in packets if TCP in p]
    assert len(tcp) > 200
    for p in tcp:
        ip, seg = p[IP], p[TCP]
        assert ip.len == len(bytes(ip))
        # scapy recomputes both checksums from scratch: they must match ours.
        wire_ip, wire_tcp = ip.chksum, seg.chksum
        fresh = IP(bytes(ip))
        del fresh.chksum
        del fresh[TCP].chksum
        fresh = IP(bytes(fresh))
        assert (fresh.chksum, fresh[TCP].chksum) == (wire_ip, wire_tcp)
    syn = next(p[TCP] for p in tcp if p[TCP].flags == "S")
    kinds = {name for name, _ in syn.options}
    assert {"MSS", "WScale", "SAckOK", "Timestamp"} <= kinds


def test_pcap_of_lossy_transfer_parses_with_tshark(tmp_path):
    tshark = shutil.which("tshark")
    if tshark is None:
        # `make test` installs tshark (Debian) when run as root; without root it cannot.
        import os
        assert os.geteuid() != 0, "tshark missing although make test runs as root"
        return
    path = tmp_path / "lossy.pcap"
    capture_lossy_transfer(str(path))
    out = subprocess.run(
        [tshark, "-n", "-r", str(path), "-o", "tcp.check_checksum:TRUE",
         "-o", "ip.check_checksum:TRUE", "-T", "fields", "-e", "frame.number",
         "-e", "_ws.malformed", "-e", "_ws.expert.severity", "-e", "tcp.checksum.status",
         "-e", "ip.checksum.status"],
        capture_output=True, text=True, check=True)
    rows = [line.split("\t") for line in out.stdout.splitlines()]
    assert len(rows) > 200
    # Checksum status: 0 bad, 1 good, 2 unverified; ARP frames have none.
    tcp_frames = 0
    for number, malformed, severity, tcp_ck, ip_ck in rows:
        assert not malformed, f"frame {number} malformed"
        # Wireshark expert severities: chat 0x200000, note 0x400000, warn 0x600000,
        # error 0x800000 (malformed packets and bad checksums are errors).
        assert all(int(x) < 0x800000 for x in severity.split(",") if x), \
            f"frame {number}: expert severity {severity}"
        assert tcp_ck in ("", "1"), f"frame {number}: TCP checksum status {tcp_ck}"
        assert ip_ck in ("", "1"), f"frame {number}: IP checksum status {ip_ck}"
        tcp_frames += tcp_ck == "1"
    assert tcp_frames > 200
