"""Classic pcap files (libpcap format), nanosecond timestamps by default.

``PcapWriter`` writes what Wireshark, tshark, tcpdump and scapy read: the classic
24-byte global header with magic 0xa1b23c4d (nanosecond timestamps) or 0xa1b2c3d4
(microseconds), then one 16-byte record header per frame.  It does not look inside
frames, so any EtherType (ARP, our control frames...) is fine.

    with PcapWriter("trace.pcap") as w:
        link.capture(w)            # or: end.add_tap(w.write)
        loop.run_for(1.0)

``read_pcap`` is a small reader (both magics, both byte orders) for tests.
"""

from __future__ import annotations

import os
import struct
from typing import BinaryIO, Union

__all__ = [
    "LINKTYPE_ETHERNET",
    "MAGIC_NANOSECOND",
    "MAGIC_MICROSECOND",
    "PcapWriter",
    "read_pcap",
    "iter_pcap",
]

MAGIC_MICROSECOND = 0xA1B2C3D4
MAGIC_NANOSECOND = 0xA1B23C4D
LINKTYPE_ETHERNET = 1
VERSION_MAJOR, VERSION_MINOR = 2, 4

_GLOBAL_HDR = struct.Struct("<IHHiIII")  # magic, major, minor, thiszone, sigfigs, snaplen, linktype
_REC_HDR = struct.Struct("<IIII")  # ts_sec, ts_frac, incl_len, orig_len

PathOrFile = Union[str, "os.PathLike[str]", BinaryIO]


class PcapWriter:
    """Write frames to a classic pcap file.

    ``path_or_fileobj``: a path (opened, owned and closed by the writer) or a binary
    file object (flushed, not closed).  ``write(frame, timestamp)`` takes the
    timestamp in seconds (float) and stores seconds + nanoseconds (or microseconds if
    ``nanosecond=False``).  Frames longer than ``snaplen`` are truncated in the file,
    with their original length recorded.
    """

    def __init__(self, path_or_fileobj: PathOrFile, snaplen: int = 262144,
                 nanosecond: bool = True, linktype: int = LINKTYPE_ETHERNET):
        if not 0 < snaplen < 2**32:
            raise ValueError(f"snaplen out of range: {snaplen!r}")
        if not 0 <= linktype < 2**32:
            raise ValueError(f"linktype out of range: {linktype!r}")
        if isinstance(path_or_fileobj, (str, bytes, os.PathLike)):
            self._file = open(path_or_fileobj, "wb")
            self._owns = True
            self.path = os.fspath(path_or_fileobj)
        else:
            self._file = path_or_fileobj
            self._owns = False
            self.path = getattr(path_or_fileobj, "name", None)
        self.snaplen = snaplen
        self.nanosecond = nanosecond
        self.linktype = linktype
        self.frames = 0
        self._scale = 1_000_000_000 if nanosecond else 1_000_000
        self._closed = False
        magic = MAGIC_NANOSECOND if nanosecond else MAGIC_MICROSECOND
        self._file.write(_GLOBAL_HDR.pack(magic, VERSION_MAJOR, VERSION_MINOR, 0, 0,
                                          snaplen, linktype))

    def write(self, frame, timestamp: float) -> None:
        """Append one frame captured at ``timestamp`` seconds (>= 0)."""
        if self._closed:
            raise ValueError("write to a closed PcapWriter")
        if not timestamp >= 0:
            raise ValueError(f"pcap timestamps must be >= 0, got {timestamp!r}")
        sec = int(timestamp)
        frac = round((timestamp - sec) * self._scale)  # exact split, then round
        if frac >= self._scale:
            sec += 1
            frac -= self._scale
        if sec >= 2**32:
            raise ValueError(f"timestamp does not fit a classic pcap: {timestamp!r}")
        n = len(frame)
        incl = n if n <= self.snaplen else self.snaplen
        f = self._file
        f.write(_REC_HDR.pack(sec, frac, incl, n))
        f.write(frame if incl == n else memoryview(frame)[:incl])
        self.frames += 1

    # ``end.add_tap(writer.tap)`` reads naturally; it is the same as ``write``.
    tap = write

    def __call__(self, frame, timestamp: float) -> None:
        self.write(frame, timestamp)

    def flush(self) -> None:
        if not self._closed:
            self._file.flush()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._owns:
            self._file.close()
        else:
            self._file.flush()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "PcapWriter":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<PcapWriter {self.path!r} {state} frames={self.frames}>"


def iter_pcap(src: PathOrFile, *, integer_ns: bool = False):
    """Yield ``(timestamp, frame)`` from a classic pcap file.

    ``timestamp`` is float seconds, or an int of nanoseconds with ``integer_ns=True``.
    ``frame`` is the captured bytes (possibly truncated to the snaplen).
    """
    if isinstance(src, (str, bytes, os.PathLike)):
        with open(src, "rb") as f:
            yield from _iter_file(f, integer_ns)
    else:
        yield from _iter_file(src, integer_ns)


def _iter_file(f: BinaryIO, integer_ns: bool):
    head = f.read(24)
    if len(head) < 24:
        raise ValueError("not a pcap file: truncated global header")
    for order in ("<", ">"):
        (magic,) = struct.unpack(order + "I", head[:4])
        if magic in (MAGIC_NANOSECOND, MAGIC_MICROSECOND):
            break
    else:
        raise ValueError(f"not a classic pcap file (magic {head[:4].hex()})")
    to_ns = 1 if magic == MAGIC_NANOSECOND else 1000
    rec = struct.Struct(order + "IIII")
    while True:
        h = f.read(16)
        if not h:
            return
        if len(h) < 16:
            raise ValueError("truncated pcap record header")
        sec, frac, incl, _orig = rec.unpack(h)
        data = f.read(incl)
        if len(data) < incl:
            raise ValueError("truncated pcap record")
        ns = sec * 1_000_000_000 + frac * to_ns
        yield (ns if integer_ns else ns / 1_000_000_000), data  # int/int: correctly rounded


def read_pcap(src: PathOrFile, *, integer_ns: bool = False) -> list[tuple[float, bytes]]:
    """All ``(timestamp, frame)`` records of a classic pcap file (see ``iter_pcap``)."""
    return list(iter_pcap(src, integer_ns=integer_ns))
