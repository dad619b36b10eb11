"""The bpf(2) system call through ctypes, bpffs, and loading objects with bpftool.

Theory of operation
-------------------
Nothing here parses ELF: ``bpftool prog loadall OBJ DIR/progs type xdp pinmaps DIR/maps``
(libbpf underneath) loads an object and pins its programs and maps under one directory of
a bpffs; this module then opens the pins (BPF_OBJ_GET) and talks to the kernel with raw
bpf(2) commands: map lookup/update/delete/get_next_key, map creation (a map whose
capacity is an option is created here and handed to bpftool with ``map name N pinned
P``), BPF_PROG_TEST_RUN (a frame in, verdict and frame out, repeat and duration), and
object info.  ``Loaded`` is the context manager around one loaded object: it always
unpins and closes, so no program or map outlives it (the kernel frees a BPF object when
its last pin and fd are gone).  Every instance directory is ``<bpffs>/atcp-<pid>-<n>``;
``cleanup_stale()`` removes those of dead processes (a crash leaves pins behind).

Errors: ``BpfError`` (an OSError with the command name) for a failing syscall;
``XdpUnavailable`` with one line naming what is missing (bpftool, the object, bpffs,
root, a kernel feature) -- the caller shows it as is.
"""

import ctypes
import errno
import mmap
import os
import platform
import re
import shutil
import struct
import subprocess
import threading

__all__ = ["BpfError", "XdpUnavailable", "Map", "Prog", "Loaded", "bpffs_root",
           "cleanup_stale", "attach_xdp", "detach_xdp", "possible_cpus", "obj_get", "map_create", "test_run",
           "XDP_ABORTED", "XDP_DROP", "XDP_PASS", "XDP_TX", "XDP_REDIRECT",
           "BPF_MAP_TYPE_HASH", "BPF_MAP_TYPE_ARRAY", "BPF_MAP_TYPE_PERCPU_ARRAY",
           "BPF_MAP_TYPE_LRU_HASH", "BPF_MAP_TYPE_QUEUE", "BPF_MAP_TYPE_STACK",
           "BPF_MAP_TYPE_RINGBUF", "RingBuffer", "BPF_F_TEST_XDP_LIVE_FRAMES", "BPF_F_MMAPABLE",
           "BPF_ANY", "BPF_NOEXIST", "BPF_EXIST"]

# enum bpf_cmd (include/uapi/linux/bpf.h)
BPF_MAP_CREATE = 0
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
BPF_MAP_GET_NEXT_KEY = 4
BPF_OBJ_PIN = 6
BPF_OBJ_GET = 7
BPF_PROG_TEST_RUN = 10
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_MAP_LOOKUP_AND_DELETE_ELEM = 21
BPF_MAP_LOOKUP_BATCH = 24

BPF_MAP_TYPE_HASH = 1
BPF_MAP_TYPE_ARRAY = 2
BPF_MAP_TYPE_PERCPU_ARRAY = 6
BPF_MAP_TYPE_LRU_HASH = 9
BPF_MAP_TYPE_QUEUE = 22
BPF_MAP_TYPE_STACK = 23
BPF_MAP_TYPE_RINGBUF = 27

BPF_F_TEST_XDP_LIVE_FRAMES = 2   # test_run: XDP_TX / XDP_REDIRECT really transmit
BPF_F_MMAPABLE = 1 << 10         # map_create: an array map the control side maps

BPF_ANY = 0
BPF_NOEXIST = 1
BPF_EXIST = 2

XDP_ABORTED = 0
XDP_DROP = 1
XDP_PASS = 2
XDP_TX = 3
XDP_REDIRECT = 4

_SYS_BPF = {"x86_64": 321, "aarch64": 280, "armv7l": 386, "riscv64": 280,
            "ppc64le": 361, "s390x": 351}
_ATTR_SIZE = 128          # >= every union bpf_attr member used here; the rest zero

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class BpfError(OSError):
    """A bpf(2) command failed: errno, the command's name, and what it was applied to."""


class XdpUnavailable(RuntimeError):
    """The XDP dataplane cannot run here; the message names what is missing (one line)."""


_NR = None


def _sys_bpf_nr():
    global _NR
    if _NR is None:
        nr = _SYS_BPF.get(platform.machine())
        if nr is None:
            raise XdpUnavailable("XDP: no bpf(2) syscall number known for %s"
                                 % platform.machine())
        _NR = nr
    return _NR


def _bpf(cmd, attr, what):
    """bpf(cmd, attr) -> the return value; BpfError on failure.  attr: a ctypes buffer."""
    r = _libc.syscall(_NR or _sys_bpf_nr(), cmd, attr, len(attr))
    if r < 0:
        e = ctypes.get_errno()
        raise BpfError(e, "%s: %s" % (what, os.strerror(e)))
    return r


def _attr(fmt, *vals):
    buf = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into(fmt, buf, 0, *vals)
    return buf


def _addr(buf):
    return ctypes.addressof(buf) if buf is not None else 0


def obj_get(path):
    """BPF_OBJ_GET: an fd for the pinned program or map at `path`."""
    p = ctypes.create_string_buffer(os.fsencode(path))
    return _bpf(BPF_OBJ_GET, _attr("=QII", _addr(p), 0, 0), "BPF_OBJ_GET " + path)


def obj_pin(fd, path):
    p = ctypes.create_string_buffer(os.fsencode(path))
    _bpf(BPF_OBJ_PIN, _attr("=QII", _addr(p), fd, 0), "BPF_OBJ_PIN " + path)


def map_create(map_type, key_size, value_size, max_entries, name, flags=0):
    """BPF_MAP_CREATE (no BTF) -> fd."""
    nm = os.fsencode(name)[:15].ljust(16, b"\0")
    attr = _attr("=IIIIIII16s", map_type, key_size, value_size, max_entries, flags, 0, 0, nm)
    return _bpf(BPF_MAP_CREATE, attr, "BPF_MAP_CREATE " + name)


def _info(fd, size, what):
    info = ctypes.create_string_buffer(size)
    _bpf(BPF_OBJ_GET_INFO_BY_FD, _attr("=IIQ", fd, size, _addr(info)), what)
    return info.raw


_possible = None


def possible_cpus():
    """The number of possible CPUs (the per-CPU map value count)."""
    global _possible
    if _possible is None:
        n = 0
        with open("/sys/devices/system/cpu/possible") as f:
            for part in f.read().strip().split(","):
                lo, _, hi = part.partition("-")
                n = max(n, int(hi or lo) + 1)
        _possible = n
    return _possible


class Map:
    """An open BPF map: fd, name, type, key/value sizes, max_entries.  Keys and values
    are bytes of exactly the map's sizes (per-CPU maps: a list of per-CPU values).  An
    array map made BPF_F_MMAPABLE is read and written through its mmap: the same
    lookup/update, no syscall (the values lie in order, each rounded up to 8 bytes)."""

    def __init__(self, fd):
        self.fd = fd
        raw = _info(fd, 88, "map info")
        (self.type, self.id, self.key_size, self.value_size, self.max_entries,
         self.flags) = struct.unpack_from("=IIIIII", raw, 0)
        self.name = raw[24:40].split(b"\0", 1)[0].decode()
        self._mm = None
        if self.type == BPF_MAP_TYPE_ARRAY and self.flags & BPF_F_MMAPABLE:
            self._step = (self.value_size + 7) & ~7
            size = -(-self._step * self.max_entries // mmap.PAGESIZE) * mmap.PAGESIZE
            self._mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.percpu = self.type in (BPF_MAP_TYPE_PERCPU_ARRAY, 5, 10)   # +PERCPU_HASH, LRU_PERCPU
        self._vsize = (((self.value_size + 7) & ~7) * possible_cpus() if self.percpu
                       else self.value_size)
        self._lock = threading.Lock()
        self._ring = None

    def _elem(self, cmd, key, value, flags, what):
        # a keyless map (queue: update = push) takes a NULL key
        k = ctypes.create_string_buffer(bytes(key), self.key_size) if self.key_size else None
        attr = _attr("=IIQQQ", self.fd, 0, _addr(k), _addr(value), flags)
        return _bpf(cmd, attr, "%s %s" % (what, self.name))

    def _offset(self, key):
        i = _U32.unpack(key)[0]
        if i >= self.max_entries:
            raise BpfError(errno.E2BIG, "%s: index %d out of range" % (self.name, i))
        return i * self._step

    def lookup(self, key):
        """The value (bytes; per-CPU maps: list of bytes) or None when absent."""
        if self._mm is not None:
            try:
                off = self._offset(key)
            except BpfError:
                return None
            return self._mm[off:off + self.value_size]
        v = ctypes.create_string_buffer(self._vsize)
        try:
            self._elem(BPF_MAP_LOOKUP_ELEM, key, v, 0, "lookup")
        except BpfError as e:
            if e.errno == errno.ENOENT:
                return None
            raise
        if not self.percpu:
            return v.raw
        step = (self.value_size + 7) & ~7
        return [v.raw[i * step:i * step + self.value_size] for i in range(possible_cpus())]

    def counter_sums(self):
        """A per-CPU array of u64 counters -> each index's sum over CPUs, read with one
        BPF_MAP_LOOKUP_BATCH instead of a lookup per index."""
        if not (self.percpu and self.type == BPF_MAP_TYPE_PERCPU_ARRAY and self.value_size == 8):
            raise BpfError(errno.EINVAL, "%s: not a per-CPU array of u64" % self.name)
        n, ncpu = self.max_entries, possible_cpus()
        keys = ctypes.create_string_buffer(4 * n)
        vals = ctypes.create_string_buffer(8 * ncpu * n)
        out_batch = ctypes.create_string_buffer(4)
        attr = _attr("=QQQQIIQQ", 0, _addr(out_batch), _addr(keys), _addr(vals), n, self.fd,
                     0, 0)
        try:
            _bpf(BPF_MAP_LOOKUP_BATCH, attr, "lookup_batch " + self.name)
        except BpfError as e:
            if e.errno != errno.ENOENT:            # ENOENT: the whole array was read
                raise
        got = struct.unpack_from("=I", attr, 32)[0]
        if got != n:
            raise BpfError(errno.EIO, "lookup_batch %s: %d of %d" % (self.name, got, n))
        flat = struct.unpack("=%dQ" % (ncpu * n), vals)
        return [sum(flat[i * ncpu:(i + 1) * ncpu]) for i in range(n)]

    def update(self, key, value, flags=BPF_ANY):
        if self._mm is not None and flags != BPF_NOEXIST:   # an array: every index exists
            value = bytes(value)
            if len(value) > self.value_size:
                raise BpfError(errno.EINVAL, "update %s: value too long" % self.name)
            off = self._offset(key)
            self._mm[off:off + self.value_size] = value.ljust(self.value_size, b"\0")
            return
        if self.percpu:
            step = (self.value_size + 7) & ~7
            value = b"".join(bytes(x).ljust(step, b"\0") for x in value)
        v = ctypes.create_string_buffer(bytes(value), self._vsize)
        self._elem(BPF_MAP_UPDATE_ELEM, key, v, flags, "update")

    def delete(self, key):
        """True if the key was there."""
        try:
            self._elem(BPF_MAP_DELETE_ELEM, key, None, 0, "delete")
        except BpfError as e:
            if e.errno == errno.ENOENT:
                return False
            raise
        return True

    def keys(self):
        """All keys (BPF_MAP_GET_NEXT_KEY from none)."""
        out = []
        nxt = ctypes.create_string_buffer(self.key_size)
        key = None
        while True:
            k = ctypes.create_string_buffer(key, self.key_size) if key is not None else None
            attr = _attr("=IIQQQ", self.fd, 0, _addr(k), _addr(nxt), 0)
            try:
                _bpf(BPF_MAP_GET_NEXT_KEY, attr, "get_next_key " + self.name)
            except BpfError as e:
                if e.errno == errno.ENOENT:
                    return out
                raise
            key = nxt.raw
            out.append(key)
            if len(out) > self.max_entries + 1:       # a table changing under us
                return out

    def items(self):
        return [(k, self.lookup(k)) for k in self.keys()]

    def pop(self):
        """A queue map's oldest value, a stack map's newest (BPF_MAP_LOOKUP_AND_DELETE_ELEM);
        None when empty."""
        v = ctypes.create_string_buffer(self._vsize)
        try:
            _bpf(BPF_MAP_LOOKUP_AND_DELETE_ELEM, _attr("=IIQQQ", self.fd, 0, 0, _addr(v), 0),
                 "pop " + self.name)
        except BpfError as e:
            if e.errno == errno.ENOENT:
                return None
            raise
        return v.raw

    def clear(self):
        if self.type in (BPF_MAP_TYPE_QUEUE, BPF_MAP_TYPE_STACK):
            while self.pop() is not None:
                pass
        elif self.type in (BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_PERCPU_ARRAY):
            zero = bytes(self.value_size)
            for i in range(self.max_entries):
                key = struct.pack("=I", i)
                self.update(key, [zero] * possible_cpus() if self.percpu else zero)
        else:
            for k in self.keys():
                self.delete(k)

    def ring(self):
        """A ring buffer map's reader (RingBuffer), made once."""
        if self._ring is None:
            self._ring = RingBuffer(self)
        return self._ring

    def close(self):
        if self._ring is not None:
            self._ring.close()
            self._ring = None
        if self._mm is not None:
            self._mm.close()
            self._mm = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


_RB_BUSY = 1 << 31
_RB_DISCARD = 1 << 30
_U64 = struct.Struct("=Q")
_U32 = struct.Struct("=I")


class RingBuffer:
    """A BPF_MAP_TYPE_RINGBUF map read through mmap, no syscall per record: the consumer
    page (ours to write: how far we have read), then the producer page and the data,
    which the kernel maps twice in a row so that a record crossing the end reads as one.
    A record is an 8-byte header (length, BUSY while the producer writes it, DISCARD)
    and the data, rounded up to 8 bytes."""

    def __init__(self, m):
        if m.type != BPF_MAP_TYPE_RINGBUF:
            raise ValueError("%s is not a ring buffer map" % m.name)
        page = mmap.PAGESIZE
        self.size = m.max_entries
        self._page = page
        self._mask = self.size - 1
        self._cons = mmap.mmap(m.fd, page, mmap.MAP_SHARED,
                               mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._data = mmap.mmap(m.fd, page + 2 * self.size, mmap.MAP_SHARED, mmap.PROT_READ,
                               offset=page)

    def records(self):
        """Every complete record not read yet, in order (bytes each); marks them read."""
        cons = _U64.unpack_from(self._cons, 0)[0]
        prod = _U64.unpack_from(self._data, 0)[0]
        if cons == prod:
            return []
        out = []
        data, base, mask = self._data, self._page, self._mask
        while cons < prod:
            off = base + (cons & mask)
            hdr = _U32.unpack_from(data, off)[0]
            if hdr & _RB_BUSY:
                break
            n = hdr & ~(_RB_BUSY | _RB_DISCARD)
            if not hdr & _RB_DISCARD:
                out.append(data[off + 8:off + 8 + n])
            cons += (n + 15) & ~7
        _U64.pack_into(self._cons, 0, cons)
        return out

    def pending(self):
        return _U64.unpack_from(self._cons, 0)[0] != _U64.unpack_from(self._data, 0)[0]

    def close(self):
        self._cons.close()
        self._data.close()


def test_run(prog_fd, data, repeat=1, out_size=None, flags=0):
    """BPF_PROG_TEST_RUN of an XDP program: (retval, frame out, duration ns per run).
    The frame out is what the program left (after adjust_head/tail and rewrites).
    flags=BPF_F_TEST_XDP_LIVE_FRAMES: the verdict is carried out (XDP_TX/REDIRECT send
    the frame; the kernel then returns no frame and no verdict)."""
    data = bytes(data)
    din = ctypes.create_string_buffer(data, len(data))
    live = flags & BPF_F_TEST_XDP_LIVE_FRAMES
    size = 0 if live else (out_size or len(data) + 512)
    dout = ctypes.create_string_buffer(size) if size else None
    attr = _attr("=IIIIQQIIIIQQI", prog_fd, 0, len(data), size, _addr(din), _addr(dout),
                 repeat, 0, 0, 0, 0, 0, flags)
    _bpf(BPF_PROG_TEST_RUN, attr, "BPF_PROG_TEST_RUN")
    retval, _, size_out = struct.unpack_from("=III", attr, 4)
    duration = struct.unpack_from("=I", attr, 36)[0]
    return retval, dout.raw[:size_out] if dout is not None else b"", duration


class Prog:
    """An open BPF program: fd, name, id."""

    def __init__(self, fd):
        self.fd = fd
        raw = _info(fd, 80, "prog info")
        self.type, self.id = struct.unpack_from("=II", raw, 0)
        self.name = raw[64:80].split(b"\0", 1)[0].decode()

    def test_run(self, data, repeat=1, flags=0):
        return test_run(self.fd, data, repeat, flags=flags)

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# -- bpffs ------------------------------------------------------------------------------

def _is_bpffs(path):
    path = os.path.realpath(path)
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 2 and parts[2] == "bpf" and parts[1] == path:
                return True
    return False


def bpffs_root():
    """A mounted bpffs: /sys/fs/bpf (mounted here if it is not), else /run/acceltcp/bpffs."""
    for path in ("/sys/fs/bpf", "/run/acceltcp/bpffs"):
        if _is_bpffs(path):
            return path
    errs = []
    for path in ("/sys/fs/bpf", "/run/acceltcp/bpffs"):
        try:
            os.makedirs(path, exist_ok=True)
            subprocess.run(["mount", "-t", "bpf", "bpf", path], check=True,
                           capture_output=True, text=True)
            return path
        except (OSError, subprocess.CalledProcessError) as e:
            errs.append("%s: %s" % (path, getattr(e, "stderr", "") or e))
    raise XdpUnavailable("XDP: cannot mount a bpffs (%s)" % "; ".join(
        s.strip() for s in errs))


_seq = 0
_seq_lock = threading.Lock()
_DIR_RE = re.compile(r"^atcp-(\d+)-\d+$")


def cleanup_stale(root=None):
    """Remove instance directories of processes that no longer exist -> their names."""
    root = root or bpffs_root()
    gone = []
    for name in os.listdir(root):
        m = _DIR_RE.match(name)
        if m and not os.path.exists("/proc/%s" % m.group(1)):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
            gone.append(name)
    return gone


def _bpftool():
    path = shutil.which("bpftool") or next(
        (p for p in ("/usr/sbin/bpftool", "/sbin/bpftool") if os.path.exists(p)), None)
    if path is None:
        raise XdpUnavailable("XDP: bpftool not found (Debian package bpftool: make system-deps)")
    return path


def _load_error(stderr):
    """The telling lines of a failed load: the verifier's last words before its summary
    ("processed N insns"), and libbpf's own error lines."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for i, ln in enumerate(lines):
        if ln.startswith("processed ") and " insns" in ln:
            return " | ".join(lines[max(i - 1, 0):i + 1])
    errs = [ln for ln in lines if ln.startswith(("libbpf:", "Error:"))]
    return " | ".join((errs or lines)[-3:])


class Loaded:
    """One object loaded and pinned: ``progs`` and ``maps`` (name -> Prog/Map).

    obj: path of the .bpf.o.  premade: {map name: (type, key_size, value_size,
    max_entries[, map flags])} maps to create here (capacities) instead of from the object's
    definition.  A context manager; ``close()`` unpins everything and closes the fds,
    also after a failed load."""

    def __init__(self, obj, premade=None):
        global _seq
        if os.geteuid() != 0:
            raise XdpUnavailable("XDP: needs root (CAP_BPF, CAP_NET_ADMIN) to load programs")
        if not os.path.exists(obj):
            raise XdpUnavailable("XDP: %s not built (make xdp; needs clang, libbpf-dev, "
                                 "bpftool and /sys/kernel/btf/vmlinux)" % obj)
        bpftool = _bpftool()
        root = bpffs_root()
        cleanup_stale(root)
        with _seq_lock:
            _seq += 1
            self.dir = os.path.join(root, "atcp-%d-%d" % (os.getpid(), _seq))
        self.progs = {}
        self.maps = {}
        try:
            os.makedirs(os.path.join(self.dir, "pre"))
            cmd = [bpftool, "prog", "loadall", obj, os.path.join(self.dir, "progs"),
                   "type", "xdp"]
            for name, (mtype, ks, vs, n, *flags) in (premade or {}).items():
                fd = map_create(mtype, ks, vs, n, name, *flags)
                try:
                    obj_pin(fd, os.path.join(self.dir, "pre", name))
                finally:
                    os.close(fd)
                cmd += ["map", "name", name, "pinned", os.path.join(self.dir, "pre", name)]
            cmd += ["pinmaps", os.path.join(self.dir, "maps")]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode:
                raise XdpUnavailable("XDP: the kernel refused %s: %s" % (
                    os.path.basename(obj), _load_error(r.stderr)))
            shutil.rmtree(os.path.join(self.dir, "pre"))
            for name in sorted(os.listdir(os.path.join(self.dir, "progs"))):
                self.progs[name] = Prog(obj_get(os.path.join(self.dir, "progs", name)))
            for name in sorted(os.listdir(os.path.join(self.dir, "maps"))):
                self.maps[name] = Map(obj_get(os.path.join(self.dir, "maps", name)))
        except BpfError as e:
            self.close()
            raise XdpUnavailable("XDP: bpf(2) refused: %s" % e) from None
        except BaseException:
            self.close()
            raise

    def close(self):
        for obj in list(self.progs.values()) + list(self.maps.values()):
            obj.close()
        self.progs.clear()
        self.maps.clear()
        if self.dir and os.path.isdir(self.dir):
            shutil.rmtree(self.dir, ignore_errors=True)    # unlink = unpin
        self.dir = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        try:
            if getattr(self, "dir", None):
                self.close()
        except Exception:
            pass


def attach_xdp(ifname, prog_id, netns=None, mode="xdpdrv"):
    """Attach program `prog_id` to `ifname` (native mode) with bpftool, in namespace
    `netns` if given. By id: `ip netns exec` mounts a sysfs of its own, without the pins.
    A netlink attachment, not a bpf_link: it lasts until detached or the device is gone,
    whatever happens to this process."""
    cmd = [_bpftool(), "net", "attach", mode, "id", str(prog_id), "dev", ifname]
    if netns:
        cmd = ["ip", "netns", "exec", netns] + cmd
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise XdpUnavailable("XDP: cannot attach to %s: %s" % (
            ifname, (r.stderr.strip().splitlines() or ["bpftool failed"])[-1]))


def detach_xdp(ifname, netns=None, mode="xdpdrv"):
    """Detach whatever XDP program `ifname` has (no error if none, or no device)."""
    cmd = [_bpftool(), "net", "detach", mode, "dev", ifname]
    if netns:
        cmd = ["ip", "netns", "exec", netns] + cmd
    return subprocess.run(cmd, capture_output=True, text=True).returncode == 0
