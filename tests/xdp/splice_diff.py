"""What the splice differential tests share: a Pair with splice tables, the rule table of
both NICs in one shape, and a spliced proxy's two connections to make frames on."""

import struct

from acceltcp.nic.dataplane import HOST, WIRE
from acceltcp.wire.control import Splice, SpliceSide, StatusRequest, splice_rules
from acceltcp.wire.tcp import build_tcp_frame, tcp_options

from .diff import HOST_MAC, NIC_MAC, Pair

PROXY_MAC = NIC_MAC
CLIENT_MAC = bytes.fromhex("02000000000c")
SERVER_MAC = bytes.fromhex("02000000000d")
CLIENT_IP = bytes([10, 0, 0, 2])
PROXY_IP = bytes([10, 0, 0, 1])
SERVER_IP = bytes([10, 0, 1, 3])
M = 0xFFFFFFFF


def table_view(table):
    """NicDataplane's SpliceTable in SpliceControl.rules()'s shape."""
    if table is None:
        return {}
    out = {}
    for key, slot in table._index.items():
        d = table.rule(slot)
        out[key] = {
            "slot": slot, "key": d["key"], "eth_dst": d["eth_dst"], "eth_src": d["eth_src"],
            "out_key": d["out_key"], "seq_offset": d["seq_offset"],
            "ack_offset": d["ack_offset"], "ts_shift": d["ts_shift"],
            "tsecr_shift": d["tsecr_shift"], "cso_ip": d["cso_ip"], "cso_tcp": d["cso_tcp"],
            "cso_ts": d["cso_ts"], "wscale_in": d["wscale_in"],
            "wscale_out": d["wscale_out"], "from_server": d["from_server"],
            "pair": d["pair"], "state": d["state"], "fin": table._fins[slot],
            "ack": table._acks[slot], "wnd": table._wnds[slot], "packets": d["packets"],
            "bytes": d["bytes"], "last_active": d["last_active"]}
    return out


class SplicePair(Pair):
    """A Pair whose check_state also compares the splice tables, the next deadline and
    the StatusReport's splice fields."""

    def check_state(self):
        super().check_state()
        x, n = self.xdp, self.nic
        assert x.splice.rules() == table_view(n.splices)
        assert x.xdp_counters()["xdp_splice_report_lost"] == 0
        assert x.next_deadline() == n.next_deadline()
        xs, ns = x.status_report(), n.status_report()
        assert (xs.splice_rules, xs.splice_capacity, xs.splices_closed) == \
            (ns.splice_rules, ns.splice_capacity, ns.splices_closed)

    def status(self, now):
        return self.run(StatusRequest(7).frame(NIC_MAC, HOST_MAC), HOST, now)

    def timer(self, now):
        a = [(p, bytes(f)) for p, f in self.nic.on_timer(now)]
        b = [(p, bytes(f)) for p, f in self.xdp.on_timer(now)]
        assert b == a, "on_timer(%r) differs" % (now,)
        return a


class Proxy:
    """A proxy's client-side (C) and server-side (S) connections at splice time, and the
    frames each endpoint sends once they are spliced."""

    def __init__(self, c_snd=1000, c_rcv=5000, s_snd=9000, s_rcv=7000, ts=True,
                 c_ts=(100, 200), s_ts=(300, 400), c_ws=(7, 7), s_ws=(7, 7),
                 c_wnd=65535, s_wnd=65535, cport=40000, pport=8080, sport=80,
                 pport_s=50000, client_ip=CLIENT_IP, server_ip=SERVER_IP):
        # SpliceSide(local_mac, local_ip, local_port, remote_mac, remote_ip, remote_port,
        #            snd_nxt, rcv_nxt, snd_wnd, ts_ok, ts_now, ts_recent, local_ws, peer_ws)
        self.c = SpliceSide(PROXY_MAC, PROXY_IP, pport, CLIENT_MAC, client_ip, cport,
                            c_snd & M, c_rcv & M, c_wnd, ts, c_ts[0], c_ts[1], *c_ws)
        self.s = SpliceSide(PROXY_MAC, PROXY_IP, pport_s, SERVER_MAC, server_ip, sport,
                            s_snd & M, s_rcv & M, s_wnd, ts, s_ts[0], s_ts[1], *s_ws)
        self.rule_a, self.rule_b = splice_rules(self.c, self.s)

    def splice(self, sid=1, rule_a=None, rule_b=None):
        return Splice(sid, rule_a or self.rule_a, rule_b or self.rule_b).frame(NIC_MAC,
                                                                                HOST_MAC)

    def from_client(self, seq_delta=0, ack_delta=0, flags=0x18, payload=b"", window=1000,
                    options=None, ts=None, ident=1):
        """A frame the client sends (to the proxy's C address), seq/ack relative to
        where the proxy's TCB left them."""
        c = self.c
        if options is None:
            options = tcp_options(timestamps=ts) if ts is not None else b""
        return build_tcp_frame(PROXY_MAC, CLIENT_MAC, c.remote_ip, c.local_ip, ident,
                               c.remote_port, c.local_port, (c.rcv_nxt + seq_delta) & M,
                               (c.snd_nxt + ack_delta) & M, flags, window, options, payload)

    def from_server(self, seq_delta=0, ack_delta=0, flags=0x18, payload=b"", window=1000,
                    options=None, ts=None, ident=1):
        s = self.s
        if options is None:
            options = tcp_options(timestamps=ts) if ts is not None else b""
        return build_tcp_frame(PROXY_MAC, SERVER_MAC, s.remote_ip, s.local_ip, ident,
                               s.remote_port, s.local_port, (s.rcv_nxt + seq_delta) & M,
                               (s.snd_nxt + ack_delta) & M, flags, window, options, payload)


def u32(frame, off):
    return struct.unpack_from("!I", frame, off)[0]


__all__ = ["SplicePair", "Proxy", "table_view", "u32", "WIRE", "HOST", "M"]
