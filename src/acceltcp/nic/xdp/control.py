"""XdpDataplane: the XDP NIC (nic.bpf.c) driven from Python, shaped like NicDataplane.

Theory of operation
-------------------
``XdpDataplane(mac, ...)`` loads ``build/xdp/nic.bpf.o`` with bpftool into its own bpffs
directory (``bpf.Loaded``: programs atcp_wire and atcp_host, maps atcp_*), writes the
configuration (atcp_cfg), and from then on is the control side of the maps:

* listeners: ``listen(Listen)`` / ``unlisten(Unlisten)``, the 0x090E semantics of
  NicDataplane (update in place, a new key on a full table is refused and counted
  ``listener_table_full``; capacity ``listener_capacity`` <= the map's 4096);
* the cookie clock and keys: ``set_clock(now)`` turns ``now`` into the integers the
  program reads (counter, generation, TS clock) with the SynCookieJar's own expressions,
  and writes the keyed BLAKE2s states (xdp/blake2s.py) of the current and previous
  generation -- a test sets `now` exactly; a live control process calls it every tick;
* counters: ``counters`` sums the per-CPU atcp_counters into NicDataplane.counters' names,
  plus what the control side counts itself (listens, control frames);
* ``process(frame, port, now, csum_ok=False)``: the frame through the program of that
  port with BPF_PROG_TEST_RUN -> ``[(port, frame), ...]`` like NicDataplane.process.
  atcp_wire: XDP_TX -> WIRE, XDP_PASS / XDP_REDIRECT -> HOST, XDP_DROP -> [].  atcp_host:
  XDP_REDIRECT -> WIRE, XDP_PASS -> the control side here (Listen, Unlisten,
  StatusRequest; Splice and Teardown go to their paths' control sides).
* the splice and teardown paths: ``SpliceControl`` (splice_ctl.py) and
  ``TeardownControl`` (teardown_ctl.py), each a ``parts.Part`` with its maps, counters,
  control messages and timers (``next_deadline()`` / ``on_timer(now)`` here run theirs).

Frames shorter than an Ethernet header never reach XDP (and BPF_PROG_TEST_RUN refuses
them): ``process`` raises ValueError for one.  ``close()`` (or ``with``) unloads
everything.  XdpUnavailable (one line) when something needed is missing.
"""

import os
import re
import struct
from pathlib import Path

from ...wire import control
from ...wire.control import Listen, StatusReport, StatusRequest, Unlisten
from ...wire.errors import WireError
from ..dataplane import _COUNTERS, HOST, WIRE
from ...tcp.syncookie import SynCookieJar
from . import bpf
from .blake2s import cookie_state
from .splice_ctl import SpliceControl
from .teardown_ctl import TeardownControl

__all__ = ["XdpDataplane", "XdpUnavailable", "object_path", "COUNTER_NAMES",
           "LISTEN_MAP_ENTRIES"]

XdpUnavailable = bpf.XdpUnavailable

_HERE = Path(__file__).resolve().parent
#: the counter names, in atcp.h's order (the index into atcp_counters): its own, then
#: the splice path's and the teardown path's
COUNTER_NAMES = tuple(
    name for h in ("atcp.h", "atcp_splice.h", "atcp_teardown.h")
    for name in re.findall(r"X\((\w+)\)", (_HERE / h).read_text().split("#define ATCP_ENUM")[0]))
LISTEN_MAP_ENTRIES = 4096

# atcp.h structs
_CFG = struct.Struct("=6sHBBBBIIII")           # struct atcp_cfg (28 bytes)
_CLOCK = struct.Struct("=qqII8I8I")            # struct atcp_clock (88 bytes)
_STATE = struct.Struct("=II")                  # struct atcp_state
_LVAL = struct.Struct("=HBB")                  # struct atcp_listener
_U32 = struct.Struct("=I")
_ZERO = _U32.pack(0)
_MASK = 0xFFFFFFFF
_F_SACK = 0x01
_F_TS = 0x02
_F_DEFER = 0x04
_WS_NONE = 0xFF


def object_path():
    """The built object: $ACCELTCP_XDP_OBJ, else build/xdp/nic.bpf.o of the source tree."""
    env = os.environ.get("ACCELTCP_XDP_OBJ")
    if env:
        return env
    return str(_HERE.parents[3] / "build" / "xdp" / "nic.bpf.o")


class XdpDataplane:
    """The XDP NIC (module docstring).  Arguments as NicDataplane's for what exists here:
    mac, listener_capacity, handed_capacity, secret + cookie_kwargs (the SynCookieJar),
    syn_window, rst_on_bad_cookie, ttl.  host_ifindex / wire_ifindex: where the programs
    redirect (0 / 1 for BPF_PROG_TEST_RUN: the verdicts alone tell the port).  csum_ok:
    the wire port vouches for TCP checksums (a kernel peer's partial checksums on a
    veth); ``process`` may override it per frame, as NicDataplane.process does.
    teardown_capacity, splice_capacity, splice_idle, report_interval, teardown_kwargs:
    as NicDataplane's (None: the path's default)."""

    def __init__(self, mac, *, listener_capacity=64, handed_capacity=65536, secret=None,
                 syn_window=65535, rst_on_bad_cookie=False, ttl=64, host_ifindex=0,
                 wire_ifindex=1, csum_ok=False, obj=None, teardown_capacity=None,
                 splice_capacity=None, splice_idle=300.0, report_interval=0.001,
                 teardown_kwargs=None, **cookie_kwargs):
        mac = bytes(mac)
        if len(mac) != 6:
            raise ValueError("mac must be 6 bytes")
        if not 0 <= syn_window <= 0xFFFF:
            raise ValueError("syn_window must be 0..65535")
        if not 0 <= listener_capacity <= LISTEN_MAP_ENTRIES:
            raise ValueError("listener_capacity must be 0..%d" % LISTEN_MAP_ENTRIES)
        if isinstance(handed_capacity, bool) or not isinstance(handed_capacity, int) \
                or handed_capacity < 0:
            raise ValueError("handed_capacity must be an int >= 0")
        self.mac = mac
        self.jar = SynCookieJar(os.urandom(32) if secret is None else secret, **cookie_kwargs)
        self.listener_capacity = listener_capacity
        self.handed_capacity = handed_capacity
        self.syn_window = syn_window
        self.rst_on_bad_cookie = rst_on_bad_cookie
        self.ttl = ttl
        self.host_ifindex = host_ifindex
        self.wire_ifindex = wire_ifindex
        self.host_mac = None
        self._ctl = dict.fromkeys(_COUNTERS, 0)      # what the control side counts
        self._listen_keys = set()
        self._ports = {}                              # port -> listener entries on it
        self._clock = None                            # (count, ts) last written
        self._keys = {}                               # generation -> state words
        self._verify = None
        self.splice = SpliceControl(self, splice_capacity, idle=splice_idle)
        self.teardown = TeardownControl(self, teardown_capacity,
                                        report_interval=report_interval,
                                        **(teardown_kwargs or {}))
        self._parts = (self.splice, self.teardown)
        premade = {"atcp_handed": (bpf.BPF_MAP_TYPE_LRU_HASH, 12, 4, max(handed_capacity, 1))}
        for part in self._parts:
            premade.update(part.premade_maps())
        self._loaded = bpf.Loaded(obj or object_path(), premade)
        try:
            m = self._loaded.maps
            self._cfg, self._clk, self._st = m["atcp_cfg"], m["atcp_clock"], m["atcp_state"]
            self._cnt, self._lst, self._handed = (m["atcp_counters"], m["atcp_listen"],
                                                  m["atcp_handed"])
            self._lports = m["atcp_lports"]
            self._handed_ctl = m["atcp_handed_ctl"]
            self._wire = self._loaded.progs["atcp_wire"]
            self._host = self._loaded.progs["atcp_host"]
            if self._cnt.max_entries != len(COUNTER_NAMES):
                raise XdpUnavailable("XDP: %s is stale (counters differ from atcp.h): make xdp"
                                     % (obj or object_path()))
            for part in self._parts:
                part.attach(m)
            self._write_cfg(verify_csum=not csum_ok)
            self.set_clock(0.0)
        except BaseException:
            self._loaded.close()
            raise

    # -- lifetime ------------------------------------------------------------------------

    def close(self):
        self._loaded.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    @property
    def pin_dir(self):
        return self._loaded.dir

    @property
    def prog_ids(self):
        return {n: p.id for n, p in self._loaded.progs.items()}

    @property
    def map_ids(self):
        return {n: m.id for n, m in self._loaded.maps.items()}

    def reset(self):
        """Empty every table and counter (as freshly loaded; the configuration stays)."""
        self._lst.clear()
        for port in self._ports:
            self._lports.update(_U32.pack(port >> 6), bytes(8))
        self._ports.clear()
        self._handed.clear()
        self._cnt.clear()
        self._st.clear()
        self._handed_ctl.clear()
        self._listen_keys.clear()
        self._ctl = dict.fromkeys(_COUNTERS, 0)
        self.host_mac = None
        for part in self._parts:
            part.reset()

    # -- timers --------------------------------------------------------------------------

    def next_deadline(self):
        ds = [d for d in (p.next_deadline() for p in self._parts) if d is not None]
        return min(ds) if ds else None

    def on_timer(self, now):
        out = []
        for part in (self.teardown, self.splice):        # NicDataplane.on_timer's order
            out += part.on_timer(now)
        return out

    def tick(self, now):
        """A live control side's periodic work at `now`: the clocks the programs read,
        what they queued for the control side (reports), and the timers that are due
        -> [(port, frame), ...] to send (``process`` does the same around every frame
        it runs)."""
        self.set_clock(now)
        d = self.next_deadline()
        if d is not None and now >= d:
            return self.on_timer(now)           # a part's on_timer does the rest too
        out = []
        for part in self._parts:
            part.before_frame(now)
            out += part.after_frame(now)
        return out

    # -- configuration and clock ---------------------------------------------------------

    def _write_cfg(self, verify_csum):
        j = self.jar
        self._cfg.update(_ZERO, _CFG.pack(
            self.mac, self.syn_window, self.ttl, 1 if self.rst_on_bad_cookie else 0,
            1 if verify_csum else 0, j.window, j.steps, self.handed_capacity,
            self.host_ifindex, self.wire_ifindex))
        self._verify = verify_csum

    def _state(self, gen):
        st = self._keys.get(gen)
        if st is None:
            if len(self._keys) > 4:
                self._keys.clear()
            st = self._keys[gen] = cookie_state(self.jar._secret, gen)
        return st

    def set_secret(self, secret, **cookie_kwargs):
        """A new cookie secret (and jar options, as for the constructor): cookies made
        under the old one no longer verify.  The keys are rewritten at once."""
        self.jar = SynCookieJar(secret, **cookie_kwargs)
        self._keys.clear()
        self._write_cfg(self._verify)                # window, steps
        clock, self._clock = self._clock, None
        if clock is not None:                         # the same counter and TS clock
            self._write_clock(*clock)

    def set_clock(self, now):
        """Write the cookie clock for `now` (seconds, the jar's time base) and the keys of
        its generation and the one before (syncookie.py's expressions, bit for bit)."""
        j = self.jar
        count = int(now // j.tick)
        ts = (int(now * j.ts_hz) + j.ts_offset) & _MASK
        if self._clock != (count, ts):
            self._write_clock(count, ts)

    def _write_clock(self, count, ts):
        gen = count // self.jar.steps
        self._clk.update(_ZERO, _CLOCK.pack(count, gen, ts, 0, *self._state(gen),
                                            *self._state(gen - 1)))
        self._clock = (count, ts)

    # -- tables --------------------------------------------------------------------------

    def listen(self, msg):
        """0x090E Listen (NicDataplane._listen): install or update; [] always."""
        self._ctl["listens"] += 1
        key = msg.ip + msg.port.to_bytes(2, "big") + b"\0\0"
        if key not in self._listen_keys and len(self._listen_keys) >= self.listener_capacity:
            self._ctl["listener_table_full"] += 1
            self._drop("listener_table_full")
            return []
        flags = ((_F_SACK if msg.sack_ok else 0) | (_F_TS if msg.timestamps else 0)
                 | (_F_DEFER if msg.defer_accept else 0))
        self._lst.update(key, _LVAL.pack(msg.mss, _WS_NONE if msg.wscale is None
                                         else msg.wscale, flags))
        if key not in self._listen_keys:
            self._listen_keys.add(key)
            self._ports[msg.port] = self._ports.get(msg.port, 0) + 1
            self._port_bits(msg.port)
        return []

    def unlisten(self, msg):
        self._ctl["unlistens"] += 1
        key = msg.ip + msg.port.to_bytes(2, "big") + b"\0\0"
        if key in self._listen_keys:
            self._listen_keys.discard(key)
            self._lst.delete(key)
            n = self._ports[msg.port] - 1
            if n:
                self._ports[msg.port] = n
            else:
                del self._ports[msg.port]
                self._port_bits(msg.port)
        else:
            self._count("unlisten_unknown")
        return []

    def _port_bits(self, port):
        """Rewrite the atcp_lports word holding `port`'s bit."""
        w = port >> 6
        bits = sum(1 << (p & 63) for p in self._ports if p >> 6 == w)
        self._lports.update(_U32.pack(w), bits.to_bytes(8, "little"))

    def listener_entries(self):
        """[(ip, port, mss, wscale or None, sack_ok, timestamps, defer_accept)] from the
        map, sorted."""
        out = []
        for k, v in self._lst.items():
            mss, ws, fl = _LVAL.unpack(v)
            out.append((k[:4], int.from_bytes(k[4:6], "big"), mss,
                        None if ws == _WS_NONE else ws, bool(fl & _F_SACK), bool(fl & _F_TS),
                        bool(fl & _F_DEFER)))
        return sorted(out)

    def handed_entries(self):
        """{wire-side 4-tuple key (12 bytes): origin} from atcp_handed."""
        return {k: _U32.unpack(v)[0] for k, v in self._handed.items()}

    @property
    def ident(self):
        return _STATE.unpack(self._st.lookup(_ZERO))[0] & 0xFFFF

    # -- counters ------------------------------------------------------------------------

    def _count(self, name):
        self._ctl[name] = self._ctl.get(name, 0) + 1

    def _drop(self, reason):
        self._ctl["drops"] += 1
        self._count("drop_" + reason)
        return []

    def xdp_counters(self):
        """The programs' counters (atcp_counters summed over CPUs), every name."""
        return dict(zip(COUNTER_NAMES, self._cnt.counter_sums()))

    @property
    def counters(self):
        """NicDataplane.counters' shape: every base name, plus the per-reason counters
        that are not zero.  The xdp_* ones (no NicDataplane equivalent) are in
        ``xdp_counters()``."""
        x = self.xdp_counters()
        out = dict.fromkeys(_COUNTERS, 0)
        for src in (x, self._ctl):
            for k, v in src.items():
                if k.startswith("xdp_"):
                    continue
                if k in out:
                    out[k] += v
                elif v:
                    out[k] = out.get(k, 0) + v
        return out

    def status_report(self, request_id=0):
        c = self.counters
        fields = {}
        for part in self._parts:
            fields.update(part.status())
        return StatusReport(
            request_id=request_id, listeners=len(self._listen_keys),
            listener_capacity=self.listener_capacity, cookies_sent=c["syn_cookies_sent"],
            cookies_ok=c["cookie_ack_ok"], cookies_bad=c["cookie_ack_bad"],
            syn_to_host=c["syn_to_host"], drops=c["drops"], **fields)

    # -- frames --------------------------------------------------------------------------

    def process(self, frame, port, now, csum_ok=False):
        """One frame in on `port` (WIRE/HOST) at `now` -> [(port, frame), ...] out."""
        if len(frame) < 14:
            raise ValueError("a frame shorter than an Ethernet header never reaches XDP")
        if port == WIRE:
            if self._verify == csum_ok:
                self._write_cfg(verify_csum=not csum_ok)
            self.set_clock(now)
            for part in self._parts:
                part.before_frame(now)
            res = self.classify_wire(frame)
        elif port == HOST:
            for part in self._parts:
                part.before_frame(now)
            verdict, out, _ = self._host.test_run(frame)
            if verdict == bpf.XDP_REDIRECT:
                res = [(WIRE, out)]
            elif verdict == bpf.XDP_PASS or verdict == bpf.XDP_TX:    # TX: TD_X_UP_TX
                res = self.control_frame(out, now)
            elif verdict == bpf.XDP_DROP:
                res = []
            else:
                raise RuntimeError("atcp_host returned %d" % verdict)
        else:
            raise ValueError("port must be WIRE (0) or HOST (1), got %r" % (port,))
        for part in self._parts:
            res += part.after_frame(now)
        return res

    def classify_wire(self, frame):
        """`frame` through atcp_wire (BPF_PROG_TEST_RUN) -> [(port, frame), ...]."""
        verdict, out, _ = self._wire.test_run(frame)
        if verdict == bpf.XDP_TX:
            return [(WIRE, out)]
        if verdict in (bpf.XDP_PASS, bpf.XDP_REDIRECT):
            return [(HOST, out)]
        if verdict == bpf.XDP_DROP:
            return []
        raise RuntimeError("atcp_wire returned %d" % verdict)

    def control_frame(self, frame, now=0.0):
        """An offload EtherType from the host (NicDataplane._from_host) -> [(port, frame),
        ...]: what atcp_host passes up; the live placement (nic/placements/xdp.py XdpNicDevice)
        calls it directly for the control frames its stack sends."""
        host_mac = self.host_mac = bytes(frame[6:12])
        try:
            decoded = control.decode_from_host(frame)
        except WireError as e:
            return self._drop(e.reason)
        if decoded is None:
            return self._drop("ctl_from_host_unexpected")
        msg, seg_frame = decoded
        t = type(msg)
        if t is Listen:
            return self.listen(msg)
        if t is Unlisten:
            return self.unlisten(msg)
        if t is StatusRequest:
            self._ctl["status_reports"] += 1
            return [(HOST, self.status_report(msg.request_id).frame(host_mac, self.mac))]
        for part in self._parts:
            out = part.control(msg, seg_frame, host_mac, now)
            if out is not None:
                return out
        return self._drop("ctl_from_host_unexpected")

    def handed_discard(self, key):
        """NicDataplane._handed_discard on atcp_handed, for the control side's paths (a
        flow a splice or a teardown took): counted in atcp_handed_ctl, not atcp_state
        (common.h)."""
        if self._handed.delete(key):
            self._count("handed_removed")
            n = _U32.unpack(self._handed_ctl.lookup(_ZERO))[0]
            self._handed_ctl.update(_ZERO, _U32.pack((n + 1) & 0xFFFFFFFF))

    def cost(self, frame, now, port=WIRE, runs=2000, repeat=1):
        """Per-frame cost of `frame` in ns: the median of `runs` BPF_PROG_TEST_RUN calls of
        `repeat` runs each (the kernel times only the program runs, not the syscall).
        repeat > 1 only for frames the program leaves unchanged: test-run does not reset
        the packet between repeats."""
        self.set_clock(now)
        prog = self._wire if port == WIRE else self._host
        ds = sorted(prog.test_run(frame, repeat)[2] for _ in range(runs))
        return ds[len(ds) // 2]
