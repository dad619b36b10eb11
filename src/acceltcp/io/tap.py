"""A Linux TAP device with virtio-net headers: checksum offload, TSO and GSO/LRO.

    dev = TapDevice("atcp0", offload=True)       # IFF_TAP | IFF_NO_PI | IFF_VNET_HDR
    dev.set_receiver(cb)                         # cb(frame: bytes, csum_ok: bool)
    dev.attach(loop)                             # loop.add_reader: read until EAGAIN
    dev.send(frame)                              # a complete frame (checksums filled)
    dev.send_segment(header, payload, gso_size)  # TCP/IPv4 with a *partial* checksum

Every frame crossing the fd is preceded by a 10-byte ``struct virtio_net_hdr``
(``<BBHHHH``: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset; little
endian, which TUNSETVNETLE makes explicit on every host):

* Receive. With ``offload=True`` the device announces ``TUN_F_CSUM | TUN_F_TSO4 |
  TUN_F_TSO6`` (TUNSETOFFLOAD), so the kernel hands us what a NIC with LRO/GRO would:
  TCP super-frames of up to 64 KiB (``gso_type`` TCPV4, ``gso_size`` = the MSS) in ONE
  read, with ``VIRTIO_NET_HDR_F_NEEDS_CSUM`` (the checksum is partial: the kernel made
  the packet and trusts it) or ``VIRTIO_NET_HDR_F_DATA_VALID`` (already verified).
  Either flag gives ``csum_ok=True`` to the receiver, which then skips the TCP checksum.
  While the receiver runs, ``rx_partial`` (NEEDS_CSUM: the TCP checksum field holds only
  the pseudo-header sum) and ``rx_gso_size`` (the MSS of a super-frame, else 0) describe
  the frame -- what a NIC that rewrites headers (splicing) must carry through.
  With ``offload=False`` the kernel segments to the MTU and fills every checksum;
  ``csum_ok`` is False and the stack verifies everything.

* Send. ``send(frame)`` writes a frame with an all-zero header (nothing to do for the
  kernel). ``send_segment(header, payload, gso_size)`` writes one TCP/IPv4 segment whose
  checksum field holds only the pseudo-header sum: flags NEEDS_CSUM, ``csum_start`` 34,
  ``csum_offset`` 16, and when the payload is longer than ``gso_size`` the segment is a
  TSO super-frame (``gso_type`` TCPV4, ``hdr_len`` = the header length): the kernel
  treats it exactly as a GRO'd packet from a NIC (local delivery) or segments it with
  per-segment checksums and IP IDs (forwarding), as virtio-net/TSO does. Header and
  payload go out with one ``writev`` (no concatenation copy). ``send_partial(frame,
  gso_size)`` does the same for a whole frame (its TCP header length read from it).

A TAP fd keeps working after its netdev moves to another network namespace; the
device disappears when the fd closes (it is not made persistent), so a crashed
process leaves nothing behind.

Reads happen in batches: one readiness callback reads until EAGAIN (at most
``batch`` frames, so timers stay fair), then calls ``on_batch_end`` once.
"""

import errno
import fcntl
import os
import struct
import time

__all__ = [
    "TapDevice", "VnetHeader", "VNET_HDR", "VNET_HDR_LEN",
    "IFF_TAP", "IFF_NO_PI", "IFF_VNET_HDR", "IFF_MULTI_QUEUE",
    "TUN_F_CSUM", "TUN_F_TSO4", "TUN_F_TSO6", "TUN_F_TSO_ECN",
    "VIRTIO_NET_HDR_F_NEEDS_CSUM", "VIRTIO_NET_HDR_F_DATA_VALID",
    "VIRTIO_NET_HDR_GSO_NONE", "VIRTIO_NET_HDR_GSO_TCPV4", "VIRTIO_NET_HDR_GSO_TCPV6",
    "TSO_MAX_FRAME",
]

# <linux/if_tun.h>
TUNSETIFF = 0x400454CA           # _IOW('T', 202, int)
TUNSETPERSIST = 0x400454CB
TUNGETFEATURES = 0x800454CF      # _IOR('T', 207, unsigned int)
TUNSETOFFLOAD = 0x400454D0       # _IOW('T', 208, unsigned int)
TUNGETIFF = 0x800454D2
TUNSETVNETHDRSZ = 0x400454D8     # _IOW('T', 216, int)
TUNSETVNETLE = 0x400454DC        # _IOW('T', 220, int)
TUNSETQUEUE = 0x400454D9

IFF_TUN = 0x0001
IFF_TAP = 0x0002
IFF_MULTI_QUEUE = 0x0100
IFF_ATTACH_QUEUE = 0x0200
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000

TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_TSO_ECN = 0x08

# <linux/virtio_net.h>
VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
VIRTIO_NET_HDR_F_DATA_VALID = 2
VIRTIO_NET_HDR_GSO_NONE = 0
VIRTIO_NET_HDR_GSO_TCPV4 = 1
VIRTIO_NET_HDR_GSO_TCPV6 = 4
VIRTIO_NET_HDR_GSO_ECN = 0x80

VNET_HDR = struct.Struct("<BBHHHH")
VNET_HDR_LEN = VNET_HDR.size     # 10
_CSUM_OK = VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID
_ZERO_HDR = bytes(VNET_HDR_LEN)
_IFREQ = struct.Struct("16sH22x")
#: Ethernet + IPv4 + TCP of one TSO super-frame at most: IPv4 total length <= 65535.
TSO_MAX_FRAME = 14 + 65535
_RX_BUF = 14 + 65535 + 64        # the largest GSO frame the kernel hands a TAP, with room
_ETH_IP_HLEN = 34                # csum_start of TCP/IPv4 without IP options
_TCP_CSUM_OFFSET = 16


class VnetHeader:
    """A decoded virtio_net_hdr (tests and debugging; the hot path unpacks inline)."""

    __slots__ = ("flags", "gso_type", "hdr_len", "gso_size", "csum_start", "csum_offset")

    def __init__(self, flags=0, gso_type=0, hdr_len=0, gso_size=0, csum_start=0, csum_offset=0):
        self.flags = flags
        self.gso_type = gso_type
        self.hdr_len = hdr_len
        self.gso_size = gso_size
        self.csum_start = csum_start
        self.csum_offset = csum_offset

    @classmethod
    def unpack(cls, buf):
        return cls(*VNET_HDR.unpack_from(buf))

    def pack(self):
        return VNET_HDR.pack(self.flags, self.gso_type, self.hdr_len, self.gso_size,
                             self.csum_start, self.csum_offset)

    def __repr__(self):
        return ("VnetHeader(flags=%d, gso_type=%d, hdr_len=%d, gso_size=%d, csum=%d+%d)"
                % (self.flags, self.gso_type, self.hdr_len, self.gso_size, self.csum_start,
                   self.csum_offset))


class TapStats:
    """Device counters (plain attributes; `as_dict()` for JSON)."""

    __slots__ = ("rx_frames", "rx_bytes", "rx_gso_frames", "rx_csum_trusted", "rx_reads",
                 "rx_wakeups", "rx_bad_header", "tx_frames", "tx_bytes", "tx_tso_frames",
                 "tx_csum_partial", "tx_errors", "tx_eagain", "rx_max_frame", "tx_max_frame")

    def __init__(self):
        for k in self.__slots__:
            setattr(self, k, 0)

    def as_dict(self):
        return {k: getattr(self, k) for k in self.__slots__}


class TapDevice:
    """A TAP interface opened with IFF_VNET_HDR (see the module docstring).

    ``name``: interface name (the kernel picks one for "" or a pattern like "atcp%d").
    ``mac``: the MAC *our stack* uses on this link (6 bytes); the kernel end has its own.
    ``offload``: announce checksum offload + TSO/GSO to the kernel (TUNSETOFFLOAD).
    ``multi_queue``: open with IFF_MULTI_QUEUE (``open_queue()`` adds queues).
    ``batch``: frames read per readiness callback at most.
    """

    def __init__(self, name="atcp%d", mac=b"\x02\xa7\xcc\x00\x00\x02", *, offload=True,
                 multi_queue=False, batch=256, tso6=True):
        self.mac = bytes(mac)
        self.offload = offload
        self.rx_partial = False        # the frame being delivered (module doc)
        self.rx_gso_size = 0
        self.multi_queue = multi_queue
        self.batch = batch
        self.stats = TapStats()
        self._flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | (IFF_MULTI_QUEUE if multi_queue
                                                              else 0)
        self._offload_bits = (TUN_F_CSUM | TUN_F_TSO4 | (TUN_F_TSO6 if tso6 else 0)
                              if offload else 0)
        self.fd = -1
        self.fd = self._open(name)
        self.name = self._ifname(self.fd)
        self.queues = [self.fd]
        self._receiver = None
        self._batch_end = None
        self._taps = []
        self._loop = None
        self._rxbuf = bytearray(_RX_BUF)
        self._rxmv = memoryview(self._rxbuf)
        self._hdrbuf = bytearray(VNET_HDR_LEN)
        self.closed = False

    # ------------------------------------------------------------------ setup
    def _open(self, name):
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            fcntl.ioctl(fd, TUNSETIFF, _IFREQ.pack(name.encode(), self._flags))
            fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", VNET_HDR_LEN))
            try:
                fcntl.ioctl(fd, TUNSETVNETLE, struct.pack("i", 1))
            except OSError as e:          # kernels without CONFIG_TUN_VNET_CROSS_LE: LE host
                if e.errno not in (errno.EINVAL, errno.ENOTTY):
                    raise
            fcntl.ioctl(fd, TUNSETOFFLOAD, self._offload_bits)
        except BaseException:
            os.close(fd)
            raise
        return fd

    @staticmethod
    def _ifname(fd):
        buf = fcntl.ioctl(fd, TUNGETIFF, bytes(_IFREQ.size))
        return _IFREQ.unpack(buf)[0].rstrip(b"\0").decode()

    def open_queue(self):
        """Another queue of a multi-queue device: a new fd (frames are spread by flow)."""
        if not self.multi_queue:
            raise ValueError("not a multi-queue device")
        fd = self._open(self.name)
        self.queues.append(fd)
        return fd

    def keep_queue(self, k):
        """In the process that owns queue `k` of a multi-queue device: make it this
        object's only fd and close the others (another process reads those)."""
        fd = self.queues[k]
        for other in self.queues:
            if other != fd:
                os.close(other)
        self.fd = fd
        self.queues = [fd]

    def fileno(self):
        return self.fd

    @property
    def ifindex(self):
        """Index in the namespace the interface lives in now (socket.if_nametoindex there)."""
        import socket
        return socket.if_nametoindex(self.name)

    # ------------------------------------------------------------------ frame device API
    def set_receiver(self, callback):
        """``callback(frame, csum_ok)`` per received frame (bytes)."""
        self._receiver = callback

    def set_batch_end(self, callback):
        """``callback()`` once after each batch of received frames (a driver re-arms there)."""
        self._batch_end = callback

    def add_tap(self, fn):
        """``fn(frame, timestamp)`` for every frame in and out (pcap writers)."""
        self._taps.append(fn)

    def remove_tap(self, fn):
        self._taps.remove(fn)

    def attach(self, loop):
        """Read from the fd whenever it is readable, in batches."""
        self._loop = loop
        loop.add_reader(self.fd, self.poll)

    def detach(self):
        if self._loop is not None and self.fd >= 0:
            self._loop.remove_reader(self.fd)
        self._loop = None

    def poll(self):
        """Read until EAGAIN or `batch` frames; deliver each; -> frames read."""
        st = self.stats
        st.rx_wakeups += 1
        fd = self.fd
        readv = os.readv
        bufs = (self._hdrbuf, self._rxbuf)
        hdr = self._hdrbuf
        mv = self._rxmv
        recv = self._receiver
        taps = self._taps
        n_frames = 0
        nbytes = 0
        gso = trusted = 0
        biggest = st.rx_max_frame
        try:
            for _ in range(self.batch):
                try:
                    n = readv(fd, bufs)
                except BlockingIOError:
                    break
                except InterruptedError:
                    continue
                n -= VNET_HDR_LEN
                if n <= 0:
                    st.rx_bad_header += 1
                    continue
                frame = bytes(mv[:n])
                n_frames += 1
                nbytes += n
                if n > biggest:
                    biggest = n
                if hdr[1]:
                    gso += 1
                csum_ok = hdr[0] & _CSUM_OK != 0
                if csum_ok:
                    trusted += 1
                    self.rx_partial = hdr[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0
                    self.rx_gso_size = (hdr[4] | hdr[5] << 8) if hdr[1] else 0
                elif self.rx_partial or self.rx_gso_size:
                    self.rx_partial = False
                    self.rx_gso_size = 0
                if taps:
                    now = time.time()
                    for t in taps:
                        t(frame, now)
                if recv is not None:
                    recv(frame, csum_ok)
        finally:
            st.rx_reads += n_frames
            st.rx_frames += n_frames
            st.rx_bytes += nbytes
            st.rx_gso_frames += gso
            st.rx_csum_trusted += trusted
            st.rx_max_frame = biggest
            if self._batch_end is not None and n_frames:
                self._batch_end()
        return n_frames

    def _write(self, parts, nbytes):
        try:
            os.writev(self.fd, parts)
        except BlockingIOError:
            # The kernel side never blocks a TAP write; count it like a NIC ring overrun.
            self.stats.tx_eagain += 1
            return False
        except OSError:
            self.stats.tx_errors += 1
            return False
        st = self.stats
        st.tx_frames += 1
        st.tx_bytes += nbytes
        if nbytes > st.tx_max_frame:
            st.tx_max_frame = nbytes
        if self._taps:
            frame = b"".join(parts[1:])
            now = time.time()
            for t in self._taps:
                t(frame, now)
        return True

    def send(self, frame):
        """A complete frame, checksums filled: written with an all-zero vnet header."""
        return self._write((_ZERO_HDR, frame), len(frame))

    def send_segment(self, header, payload, gso_size):
        """One TCP/IPv4 segment, ``header`` = Ethernet+IPv4+TCP(+options) whose TCP checksum
        field holds the folded pseudo-header sum (over the whole TCP length). The kernel
        completes the checksum; a payload longer than ``gso_size`` makes it a TSO frame."""
        hlen = len(header)
        plen = len(payload)
        if plen > gso_size:
            vh = VNET_HDR.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, hlen,
                               gso_size, _ETH_IP_HLEN, _TCP_CSUM_OFFSET)
            self.stats.tx_tso_frames += 1
        else:
            vh = VNET_HDR.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, hlen, 0, _ETH_IP_HLEN,
                               _TCP_CSUM_OFFSET)
        self.stats.tx_csum_partial += 1
        return self._write((vh, header, payload), hlen + plen)

    def send_partial(self, frame, gso_size):
        """A whole TCP/IPv4 frame (IHL 5) whose checksum field holds the pseudo-header
        sum: ``send_segment`` of its header and payload (a super-frame if the payload is
        longer than ``gso_size``)."""
        mv = memoryview(frame)
        hlen = 34 + ((frame[46] >> 4) << 2)
        return self.send_segment(mv[:hlen], mv[hlen:], gso_size or 0xFFFF)

    # ------------------------------------------------------------------ teardown
    def close(self):
        if self.closed:
            return
        self.closed = True
        self.detach()
        for fd in self.queues:
            try:
                os.close(fd)
            except OSError:
                pass
        self.queues = []
        self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return "TapDevice(%s, offload=%s%s)" % (self.name, self.offload,
                                                 ", closed" if self.closed else "")
