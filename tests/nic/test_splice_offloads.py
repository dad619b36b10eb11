"""Splicing frames from a TAP with offloads (docs/nic.md, "Splicing and the TAP's
offloads"): a partial-checksum frame or super-frame, translated and then completed by
the kernel, is exactly the frame the full-checksum path makes of the same segment; host
flushes from such a TAP get a full checksum, or leave as super-frames above the MTU."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from acceltcp.nic.dataplane import HOST, WIRE, GsoFrame, NicDataplane
from acceltcp.wire.checksum import ones_sum, pseudo_header_sum

from .test_splice import pair_rules, scenarios

MAC = bytes.fromhex("020000000009")


def setup(s):
    ra, rb = pair_rules(s["key_a"], s["out_a"], s["macs_a"], s["macs_b"], s["dseq"],
                        s["dack"], s["ts_a"], s["ts_b"], s["ws_a"], s["ws_b"])
    rule = ra if s["direction"] == "a" else rb
    return ra, rb, rule


def nic(ra, rb):
    dp = NicDataplane(MAC, splice_idle=1e9)
    dp.splices.install(ra, rb)
    return dp


def partial(frame):
    """The frame as a TAP with offloads hands it over: the TCP checksum field holds only
    the pseudo-header sum."""
    f = bytearray(frame)
    tcp_len = int.from_bytes(f[16:18], "big") - 20
    f[50:52] = pseudo_header_sum(bytes(f[26:30]), bytes(f[30:34]), 6, tcp_len).to_bytes(2, "big")
    return bytes(f)


def complete_checksum(frame):
    """What the kernel does with a NEEDS_CSUM frame (csum_start 34, csum_offset 16): sum
    from the TCP header to the end *with* the field as it is (the pseudo-header sum the
    sender put there) and store the complement."""
    f = bytearray(frame)
    tcp_len = int.from_bytes(f[16:18], "big") - 20
    f[50:52] = (0xFFFF - ones_sum(bytes(f[34:34 + tcp_len]))).to_bytes(2, "big")
    return bytes(f[:14 + tcp_len + 20])


def wire_out(outs):
    [(port, frame)] = [o for o in outs if o[0] == WIRE]
    return frame


def case(s):
    from .test_splice import frame_of
    ra, rb, rule = setup(s)
    k = rule.key
    frame = bytes(frame_of(b"\xaa" * 6, b"\xbb" * 6, k[0:4], k[4:8],
                           int.from_bytes(k[8:10], "big"), int.from_bytes(k[10:12], "big"),
                           s["seq"], s["ack"], s["flags"] & 0xF9 | 0x10, s["window"],
                           s["payload"], ident=s["ident"], ttl=s["ttl"], **s["opts"]))
    full = wire_out(nic(ra, rb).process(frame, WIRE, 1.0))
    return ra, rb, frame, bytes(full)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.sampled_from([536, 1448, 8948]))
def test_partial_and_gso_frames_complete_to_the_full_checksum_translation(s, gso):
    ra, rb, frame, full = case(s)
    out = wire_out(nic(ra, rb).process(partial(frame), WIRE, 1.0, True, True, gso))
    assert out.__class__ is GsoFrame and out.gso_size == gso
    assert complete_checksum(out) == full


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_host_flush_from_an_offloading_tap_gets_a_full_checksum(s):
    ra, rb, frame, full = case(s)
    out = wire_out(nic(ra, rb).process(partial(frame), HOST, 1.0, csum_partial=True))
    if len(frame) - 14 > 1500:                  # above the MTU: cut by the kernel
        assert out.__class__ is GsoFrame and complete_checksum(out) == full
    else:
        assert out.__class__ is not GsoFrame and bytes(out) == full
    # without offloads on the host's TAP the frame is translated as it is (differentially)
    out = wire_out(nic(ra, rb).process(frame, HOST, 1.0))
    assert bytes(out) == full


def test_a_flushed_super_frame_leaves_cut_to_the_mtu():
    s = {"key_a": bytes([10, 0, 0, 1, 10, 0, 0, 2, 0x9c, 0x40, 0, 80]),
         "out_a": bytes([10, 0, 0, 2, 10, 0, 1, 3, 0xc3, 0x50, 0x1f, 0x91]),
         "macs_a": (b"\x02" * 6, b"\x04" * 6), "macs_b": (b"\x06" * 6, b"\x08" * 6),
         "dseq": 1000, "dack": 2000, "ts_a": 5, "ts_b": 7, "ws_a": (7, 7), "ws_b": (7, 7),
         "direction": "a", "seq": 2**32 - 100, "ack": 77, "flags": 0x18, "window": 500,
         "payload": bytes(range(256)) * 40, "opts": {"timestamps": (1, 2)}, "ident": 3,
         "ttl": 64}
    ra, rb, frame, full = case(s)
    out = wire_out(nic(ra, rb).process(partial(frame), HOST, 1.0, csum_partial=True))
    assert out.__class__ is GsoFrame and out.gso_size == 1500 - 20 - 32
    assert complete_checksum(out) == full
