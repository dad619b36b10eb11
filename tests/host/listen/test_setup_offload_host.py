"""The host side of setup offload: Listen/Unlisten to a NIC device, 0x090A frames only
from a NIC, malformed ones counted, never raised."""

from acceltcp.host.stack import HostStack
from acceltcp.tcp.config import TcpConfig
from acceltcp.wire import control
from acceltcp.wire.tcp import ACK, build_tcp_frame, tcp_options

from ..util import PEER_IP, PEER_MAC, US_IP, US_MAC, Clock, FakeDevice


class FakeNic(FakeDevice):
    nic = True


def _stack(device):
    return HostStack(device, US_IP, Clock(1.0), strict=True)


def _cookie_frame(hdr, payload=b"hi"):
    seg = build_tcp_frame(US_MAC, PEER_MAC, PEER_IP, US_IP, 1, 40000, 80, 1000, 5000, ACK,
                          500, tcp_options(timestamps=(77, hdr.ts_base)), payload)
    return control.wrap(seg, hdr)


def test_offloaded_listener_sends_listen_and_unlisten():
    dev = FakeNic()
    st = _stack(dev)
    # on a NIC the stack first asks for the NIC's capacities (host.offload)
    assert [type(control.decode(f)) for f in dev.sent] == [control.StatusRequest]
    cfg = TcpConfig(mss=1400, wscale=5, sack=False)
    lst = st.listen(80, 8, config=cfg, offload_setup=True)
    assert lst.offload_setup
    msg = control.decode(dev.sent[-1])
    assert msg == control.Listen(b"\0\0\0\0", 80, 1400, 5, False, True)
    st.unlisten(lst)
    assert control.decode(dev.sent[-1]) == control.Unlisten(b"\0\0\0\0", 80)
    assert st.counters["nic_control_sent"] == 3 and st.counters["frames_out"] == 0


def test_offload_is_advisory_without_a_nic():
    dev = FakeDevice()
    st = _stack(dev)
    lst = st.listen(80, 8, offload_setup=True)
    assert not lst.offload_setup and dev.sent == []
    st.receive_frame(_cookie_frame(control.NewConnection(ts_base=0x1001)))
    assert st.drops["ethertype_unsupported"] == 1 and not st.connections


def test_new_connection_frame_builds_an_established_child():
    dev = FakeNic()
    st = _stack(dev)
    st.arp_add(PEER_IP, PEER_MAC)
    lst = st.listen(80, 8, offload_setup=True)
    st.receive_frame(_cookie_frame(control.NewConnection(mss=1460, wscale=7, sack_ok=True,
                                                         ts_base=0x1001)))
    conn = lst.accept()
    assert conn is not None and conn.state == 4 and bytes(conn.rcvbuf) == b"hi"
    assert conn.iss == 4999 and conn.irs == 999
    c = st.counters
    assert c["cookie_conns"] == c["conns_accepted"] == 1 and "syns_received" not in c


def test_backlog_full_drops_the_new_connection_frame():
    dev = FakeNic()
    st = _stack(dev)
    st.listen(80, 0, offload_setup=True)
    st.receive_frame(_cookie_frame(control.NewConnection(ts_base=0x1001)))
    assert st.drops["listen_overflow"] == 1 and st.counters["cookie_conns"] == 0


def test_malformed_new_connection_frames_are_counted():
    dev = FakeNic()
    st = _stack(dev)
    st.listen(80, 8, offload_setup=True)
    good = _cookie_frame(control.NewConnection(ts_base=0x1001))
    st.receive_frame(good[:20])                                  # header cut short
    bad_version = good[:14] + b"\x07" + good[15:]
    st.receive_frame(bad_version)
    # the TCP checksum is the NIC's to check (it verified the ACK before its cookie);
    # a segment cut short is still the host's to notice
    st.receive_frame(good[:30 + 20 + 10])
    d = dict(st.drops)
    assert d.get("ctl_short") == 1 and d.get("ctl_bad_version") == 1
    assert sum(d.values()) == 3 and not st.connections
    c = st.counters
    assert c["frames_in"] == c["frames_delivered"] + 3


def test_socket_option_tcp_setup_offload():
    from acceltcp.host.socket import IPPROTO_TCP, TCP_SETUP_OFFLOAD, SocketAPI

    dev = FakeNic()
    st = _stack(dev)
    api = SocketAPI(st)
    fd = api.socket()
    assert api.getsockopt(fd, IPPROTO_TCP, TCP_SETUP_OFFLOAD) == 0
    api.setsockopt(fd, IPPROTO_TCP, TCP_SETUP_OFFLOAD, 1)
    assert api.getsockopt(fd, IPPROTO_TCP, TCP_SETUP_OFFLOAD) == 1
    api.bind(fd, ("0.0.0.0", 80))
    api.listen(fd, 8)
    assert st.listeners[80].offload_setup
    assert isinstance(control.decode(dev.sent[-1]), control.Listen)


def test_defer_accept_goes_into_the_listen_frame():
    # advisory like setup offload: a listener asks the NIC to hand a connection up with
    # the client's first data; the socket option is Linux's TCP_DEFER_ACCEPT
    from acceltcp.host.socket import IPPROTO_TCP, TCP_DEFER_ACCEPT, TCP_SETUP_OFFLOAD, SocketAPI

    dev = FakeNic()
    st = _stack(dev)
    st.listen(80, 8, offload_setup=True, defer_accept=True)
    assert control.decode(dev.sent[-1]).defer_accept is True
    api = SocketAPI(st)
    fd = api.socket()
    api.setsockopt(fd, IPPROTO_TCP, TCP_SETUP_OFFLOAD, 1)
    assert api.getsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT) == 0
    api.setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, 30)
    assert api.getsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT) == 1
    api.bind(fd, ("0.0.0.0", 81))
    api.listen(fd, 8)
    msg = control.decode(dev.sent[-1])
    assert msg.port == 81 and msg.defer_accept is True
    st.listen(82, 8, offload_setup=True)
    assert control.decode(dev.sent[-1]).defer_accept is False


def test_socket_option_tcp_teardown_offload_offers_on_close():
    """TCP_TEARDOWN_OFFLOAD on the listener socket: the accepted socket inherits it and
    close() offers the connection to the NIC (one 0x090B with the unsent reply)."""
    from acceltcp.host.socket import IPPROTO_TCP, TCP_TEARDOWN_OFFLOAD, SocketAPI

    dev = FakeNic()
    st = _stack(dev)
    st.arp_add(PEER_IP, PEER_MAC)
    api = SocketAPI(st)
    fd = api.socket()
    api.setsockopt(fd, IPPROTO_TCP, TCP_TEARDOWN_OFFLOAD, 1)
    assert api.getsockopt(fd, IPPROTO_TCP, TCP_TEARDOWN_OFFLOAD) == 1
    api.bind(fd, ("0.0.0.0", 80))
    api.listen(fd, 8)
    st.offload.on_frame(control.StatusReport(teardown_capacity=4).frame(US_MAC, US_MAC))
    st.listeners[80].offload_setup = True
    st.receive_frame(_cookie_frame(control.NewConnection(mss=1460, ts_base=0x1001)))
    cfd, _ = api.accept(fd)
    assert api.getsockopt(cfd, IPPROTO_TCP, TCP_TEARDOWN_OFFLOAD) == 1
    assert api.read(cfd, 10) == b"hi"
    api.write(cfd, b"reply")
    dev.sent.clear()
    api.close(cfd)
    assert len(dev.sent) == 1
    msg, seg = control.unwrap(dev.sent[0])
    assert isinstance(msg, control.Teardown) and seg.endswith(b"reply")
    assert st.counters["teardown_offered"] == 1
    # the NIC's (cumulative) answer: the host forgets the connection
    st.offload.on_frame(control.TeardownAccepted(msg.flow_id, bytes(12)).frame(US_MAC, US_MAC))
    assert not st.connections and st.counters["teardown_accepted"] == 1
