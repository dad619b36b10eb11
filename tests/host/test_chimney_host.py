"""host.chimney with a fake NIC: the offer, the frozen TCB, data both ways through
0x090F frames, the socket option, refusals, uploads, bad frames, NIC loss."""

from acceltcp.host.socket import IPPROTO_TCP, TCP_CHIMNEY_OFFLOAD, SocketAPI
from acceltcp.host.stack import HostStack
from acceltcp.tcp.tcbstate import import_state
from acceltcp.wire import control
from acceltcp.wire.control import (
    ChimneyAccepted, ChimneyData, ChimneyOffload, ChimneyRefused, ChimneySend, ChimneyUpload,
    ChimneyUploadRequest,
)
from acceltcp.wire.tcp import ACK, RST, build_tcp_frame, parse_tcp, tcp_options

from .util import PEER_IP, PEER_MAC, US_IP, US_MAC, Clock, FakeDevice


class FakeNic(FakeDevice):
    nic = True
    chimney = True


def _cookie_frame(payload=b"hi"):
    hdr = control.NewConnection(mss=1460, wscale=7, sack_ok=True, ts_base=0x1001)
    seg = build_tcp_frame(US_MAC, PEER_MAC, PEER_IP, US_IP, 1, 40000, 80, 1000, 5000, ACK,
                          500, tcp_options(timestamps=(77, hdr.ts_base)), payload)
    return control.wrap(seg, hdr)


def setup():
    dev = FakeNic()
    st = HostStack(dev, US_IP, Clock(1.0), strict=True)
    st.arp_add(PEER_IP, PEER_MAC)
    api = SocketAPI(st)
    fd = api.socket()
    api.bind(fd, ("0.0.0.0", 80))
    api.listen(fd, 8)
    st.listeners[80].offload_setup = True
    st.receive_frame(_cookie_frame())
    cfd, _ = api.accept(fd)
    dev.sent.clear()
    return dev, st, api, cfd


def chimney_msgs(dev):
    return [control.decode(f) for f in dev.sent if f[12:14] == b"\x09\x0f"]


def nic(st, msg):
    st.receive_frame(msg.frame(US_MAC, US_MAC))


def test_socket_option_offload_data_and_upload():
    dev, st, api, fd = setup()
    conn = api._sock(fd).conn
    key = conn.owner.key
    assert api.getsockopt(fd, IPPROTO_TCP, TCP_CHIMNEY_OFFLOAD) == 0
    api.setsockopt(fd, IPPROTO_TCP, TCP_CHIMNEY_OFFLOAD, 1)
    offers = chimney_msgs(dev)
    assert [type(m) for m in offers] == [ChimneyOffload] and offers[0].key == key
    state = import_state(control.decode_value(offers[0].body), lambda *a: None)
    assert state.rcv_nxt == conn.rcv_nxt and not state.rcvbuf     # unread "hi" stays here
    assert api.getsockopt(fd, IPPROTO_TCP, TCP_CHIMNEY_OFFLOAD) == 1
    assert api.read(fd, 10) == b"hi"                  # the host's buffer, as ever
    dev.sent.clear()
    api.write(fd, b"x" * 1000)                        # not accepted yet: nothing leaves
    assert dev.sent == []
    nic(st, ChimneyAccepted(offers[0].flow_id, key))
    sends = chimney_msgs(dev)
    assert [(type(m), m.offset, m.body) for m in sends] == [(ChimneySend, 0, b"x" * 1000)]
    api.write(fd, b"y" * 10)
    assert chimney_msgs(dev)[-1].offset == 1000
    # data from the NIC, and 600 of our bytes acknowledged
    nic(st, ChimneyData(offers[0].flow_id, key, 0, 0, 600, b"reply"))
    assert api.read(fd, 100) == b"reply" and len(conn.sndbuf) == 410
    # wrong offset / more acked than given: counted, ignored
    nic(st, ChimneyData(offers[0].flow_id, key, 0, 99, 600, b"zz"))
    nic(st, ChimneyData(offers[0].flow_id, key, 0, 5, 5000, b""))
    assert st.counters["chimney_bad_frames"] == 2
    # the host asks for it back; the NIC's state (410 unacked bytes) comes back
    dev.sent.clear()
    api.setsockopt(fd, IPPROTO_TCP, TCP_CHIMNEY_OFFLOAD, 0)
    req = chimney_msgs(dev)
    assert [type(m) for m in req] == [ChimneyUploadRequest]
    nic_tcb = import_state(offers[0].body and control.decode_value(offers[0].body),
                           lambda *a: None)
    nic_tcb.sndbuf = bytearray(conn.sndbuf)
    nic_tcb.sbase = conn.sbase
    nic_tcb.snd_una = nic_tcb.snd_nxt = nic_tcb.snd_max = conn.sbase
    nic_tcb.rcv_nxt = nic_tcb.rcv_adv = (nic_tcb.rcv_nxt + 5) & 0xFFFFFFFF
    blob = control.encode_value(tuple(nic_tcb.export_state()))
    dev.sent.clear()
    nic(st, ChimneyUpload(offers[0].flow_id, key, control.UPLOAD_HOST_REQUEST, len(blob), 0,
                          blob))
    assert not st.chimney.owns(conn) and st.in_table(conn)
    assert conn.rcv_nxt == nic_tcb.rcv_nxt and len(conn.sndbuf) == 410
    # the host's TCB sends again itself: plain IPv4 frames
    assert dev.sent and all(f[12:14] == b"\x08\x00" for f in dev.sent)
    assert st.counters["chimney_upload_host_request"] == 1


def test_refused_offer_host_keeps_it():
    dev, st, api, fd = setup()
    conn = api._sock(fd).conn
    assert st.chimney_offload(conn) and not st.in_table(conn)
    api.write(fd, b"during the offer")
    offer = chimney_msgs(dev)[0]
    dev.sent.clear()
    nic(st, ChimneyRefused(offer.flow_id, offer.key, control.CHIMNEY_REFUSED_TABLE_FULL))
    assert st.in_table(conn) and not st.chimney.owns(conn)
    assert st.counters["chimney_refused_table_full"] == 1
    segs = [parse_tcp(f[34:], US_IP, PEER_IP) for f in dev.sent if f[12:14] == b"\x08\x00"]
    assert b"".join(bytes(s.payload) for s in segs) == b"during the offer"


def test_close_while_offloaded_waits_for_the_state():
    dev, st, api, fd = setup()
    conn = api._sock(fd).conn
    st.chimney_offload(conn)
    offer = chimney_msgs(dev)[0]
    nic(st, ChimneyAccepted(offer.flow_id, offer.key))
    dev.sent.clear()
    st.close(conn)
    assert [(type(m), m.reason) for m in chimney_msgs(dev)] == [
        (ChimneyUploadRequest, control.UPLOAD_APP_CLOSE)]
    assert conn.state == 4                             # nothing happened to the TCB yet
    blob = offer.body
    dev.sent.clear()
    nic(st, ChimneyUpload(offer.flow_id, offer.key, control.UPLOAD_APP_CLOSE, len(blob), 0,
                          blob))
    assert conn.state != 4 and conn.fin_queued or conn.closed


def test_nic_lost_resets_what_it_held():
    dev, st, api, fd = setup()
    conn = api._sock(fd).conn
    st.chimney_offload(conn)
    offer = chimney_msgs(dev)[0]
    nic(st, ChimneyAccepted(offer.flow_id, offer.key))
    dev.sent.clear()
    lost = st.nic_lost()
    assert lost["chimney_lost"] == 1 and lost["chimney_keys_lost"] == [offer.key.hex()]
    assert conn.closed and conn.error == "reset"
    rst = [parse_tcp(f[34:], US_IP, PEER_IP) for f in dev.sent]
    assert len(rst) == 1 and rst[0].flags & RST
    assert not st.connections and st.chimney is None
    assert st.chimney_offload(conn) is False              # nothing to offload to


def test_bad_frames_counted_never_raised():
    dev, st, api, fd = setup()
    nic(st, ChimneyAccepted(7, b"k" * 12))
    f = bytearray(ChimneyData(1, b"k" * 12, 0, 0, 0, b"x").frame(US_MAC, US_MAC))
    f[15] = 0x7F
    st.receive_frame(bytes(f))
    assert st.counters["chimney_bad_frames"] == 1 and st.drops["ctl_bad_type"] == 1


def test_shutdown_while_offloaded_sends_fin_through_the_nic():
    dev, st, api, fd = setup()
    conn = api._sock(fd).conn
    st.chimney_offload(conn)
    offer = chimney_msgs(dev)[0]
    nic(st, ChimneyAccepted(offer.flow_id, offer.key))
    api.write(fd, b"last")
    dev.sent.clear()
    st.shutdown(conn)
    msgs = chimney_msgs(dev)
    assert [(type(m), m.flags, m.offset) for m in msgs] == [
        (ChimneySend, control.CHIMNEY_SEND_FIN, 4)]
    assert st.chimney.owns(conn) and not conn.writable


def test_cycle_uploads_the_offloaded_and_offers_the_others():
    dev, st, api, fd = setup()
    conn = api._sock(fd).conn
    assert st.chimney.cycle() == (0, 1)                   # offered
    offer = chimney_msgs(dev)[0]
    assert st.chimney.cycle() == (0, 0)                   # no answer yet: nothing to do
    nic(st, ChimneyAccepted(offer.flow_id, offer.key))
    dev.sent.clear()
    assert st.chimney.cycle() == (1, 0)                   # asked back
    assert [type(m) for m in chimney_msgs(dev)] == [ChimneyUploadRequest]
    assert st.chimney.owns(conn)


def test_no_chimney_on_a_nic_that_does_not_run_it():
    """A NIC device without ``chimney`` (the XDP NIC): no offers, 0x090F not taken."""
    class OtherNic(FakeDevice):
        nic = True
    dev = OtherNic()
    st = HostStack(dev, US_IP, Clock(1.0), strict=True)
    assert st.chimney is None
    st.receive_frame(ChimneyData(1, b"k" * 12, 0, 0, 0, b"x").frame(US_MAC, PEER_MAC))
    assert st.drops["ethertype_unsupported"] == 1


def test_upload_without_state_resets_the_connection():
    dev, st, api, fd = setup()
    conn = api._sock(fd).conn
    st.chimney_offload(conn)
    offer = chimney_msgs(dev)[0]
    nic(st, ChimneyAccepted(offer.flow_id, offer.key))
    blob = control.encode_value(())
    nic(st, ChimneyUpload(offer.flow_id, offer.key, control.UPLOAD_ERROR, len(blob), 0, blob))
    assert conn.closed and conn.error == "reset"
    assert st.counters["chimney_upload_error"] == 1 and st.counters["chimney_lost"] == 1
    assert not st.connections and len(st.chimney) == 0
