"""N simulated host cores behind one simulated NIC: receive-side scaling (RSS).

    loop = SimLoop()
    net = make_cores(loop, 4, nic=True)     # client stack 198.18.0.1; 4 server cores
    net.client, net.servers, net.runners, net.steering, net.nic

Theory of operation
-------------------
The server host is N `HostStack`s, one per core, each with its own tables (connections,
listeners, TIME-WAIT, ARP) and its own `StackRunner`; all share the host's one IP and
MAC. They sit behind one device -- a `nic.placements.sim.SimNicDevice` (the AccelTCP
NIC, its `NicDataplane` unchanged) or a bare `io.sim.Link` end -- through a `Steering`
stage that plays the NIC's multi-queue host interface: every frame the device hands to
the host goes to exactly one core's queue (`CoreQueue`, the device that core's stack
and runner see), and every frame a core sends goes to the device as it is.

Which core: the owner of the frame's connection, a pure function of its 4-tuple.

* The RSS hash is Toeplitz (Microsoft RSS spec) over the IPv4 TCP input (source IP,
  destination IP, source port, destination port: 12 bytes) with the *symmetric* key
  0x6d5a repeated (Woo & Park, "Scalable TCP Session Monitoring with Symmetric RSS",
  2012): with a key periodic in 16 bits, swapping the addresses (a 32-bit shift) or the
  ports (16 bits) selects the same key windows, so both directions of a connection hash
  alike. The hash's low 7 bits index a 128-entry indirection table filled round-robin
  with the cores (like Linux's default ``ethtool -X``): queue = table[hash & 127].
* Exact-match flow rules override the hash for connections a core opens itself (a
  server that connects out, e.g. a proxy to its backend): a SYN a core sends installs
  the rule "this 4-tuple -> this core" (the idea of Intel Flow Director's application
  targeted routing, which samples outgoing SYNs). At most ``flow_rules`` rules; the
  oldest is forgotten first.
* The NIC's own frames for the host go to the core that owns the connection they are
  about: a 0x090A NewConnection by the 4-tuple of the ACK it wraps; TeardownAccepted /
  TeardownRefused / TeardownDone by their key (the peer's 4-tuple); SpliceClosed by its
  client key (the connection the splicing core accepted). Replies that carry only an
  id go back to the core that asked: SpliceInstalled / SpliceRefused to the sender of
  that splice id's Splice, a StatusReport to the sender of that request id's
  StatusRequest (per id a FIFO of cores, as the NIC answers in order); an unsolicited
  StatusReport (id 0) goes to every core.
* Per-queue report moderation. A moderating NIC (``report_interval`` > 0, the default)
  acknowledges teardown offers with one *cumulative* TeardownAccepted for the latest
  flow (every earlier offer not refused is its too), in the order it got the offers.
  Each core numbers its own flows, so Steering keeps the offers it passed on, in order
  (core, flow id, key); a cumulative TeardownAccepted is split into one per core that
  has offers up to it, naming that core's latest, as a NIC with one report queue per
  host queue would. A TeardownRefused (always per flow) takes its offer off the list.
* ARP requests go to core 0 (one reply is enough); ARP replies go to every core (each
  keeps its own ARP table). Anything else (not IPv4 TCP/UDP, undecodable control
  frames) goes to core 0, whose stack counts its drop.

Frames from the cores: each core's ring (``begin_batch``/``end_batch``, as on the link
end) is its own, handed to the device at that core's ``end_batch``; cores never share a
batch. Every core's listener sends the NIC a Listen for the same ip:port (the dataplane
installs it once, updating in place); Steering forwards an Unlisten only when the last
core listening on that ip:port unlistens, so one core closing its listener does not
stop the others' setup offload.

Every core processes in parallel in virtual time when each has its own simulated CPU
(``eval.load.ServerCore`` between `CoreQueue` and stack: ``acceltcp load --sim
--cores N``); counters: ``Steering.counters`` (frames steered per core and by why).
"""

import collections
import hashlib
import struct

from ..host.runner import StackRunner
from ..host.stack import HostStack
from ..io.sim import Link
from ..nic.dataplane import NicDataplane
from ..nic.placements.sim import SimNicDevice
from ..wire import control
from ..wire.errors import WireError

__all__ = ["RSS_KEY_SYMMETRIC", "RSS_KEY_MICROSOFT", "Toeplitz", "flow_key", "CoreQueue",
           "Steering", "SimCores", "make_cores", "IP_CLIENT", "IP_SERVER"]

IP_CLIENT = "198.18.0.1"
IP_SERVER = "198.18.0.2"

#: 40-byte symmetric Toeplitz key (0x6d5a repeated; Woo & Park 2012).
RSS_KEY_SYMMETRIC = bytes.fromhex("6d5a" * 20)
#: the Microsoft RSS specification's example key (its verification suite's).
RSS_KEY_MICROSOFT = bytes.fromhex(
    "6d5a56da255b0ec24167253d43a38fb0d0ca2bcbae7b30b477cb2da38030f20c6a42b73bbeac01fa")

INDIRECTION = 128               # indirection table entries
FLOW_RULES = 65536              # exact-match rules for connections the cores open

_ETH_IP, _ETH_ARP = b"\x08\x00", b"\x08\x06"
_ARP_OP = struct.Struct("!H")


class Toeplitz:
    """The Toeplitz hash of an input of up to ``max_len`` bytes under a 40-byte key:
    for each input bit set (most significant first, bit i), XOR in the 32 key bits
    starting at key bit i. Linear over GF(2), so it is precomputed per input byte
    position and byte value: one table lookup per input byte."""

    def __init__(self, key=RSS_KEY_SYMMETRIC, max_len=12):
        if len(key) * 8 < max_len * 8 + 32:
            raise ValueError("the key must be at least %d bytes" % (max_len + 4))
        k = int.from_bytes(key, "big")
        top = len(key) * 8 - 32
        windows = [(k >> (top - i)) & 0xFFFFFFFF for i in range(max_len * 8)]
        self._tables = []
        for p in range(max_len):
            t = [0] * 256
            for v in range(256):
                for j in range(8):                  # bit j from the most significant
                    if v & (0x80 >> j):
                        t[v] ^= windows[8 * p + j]
            self._tables.append(t)

    def __call__(self, data):
        h = 0
        for t, b in zip(self._tables, data):
            h ^= t[b]
        return h


def flow_key(frame, offset=14):
    """The 12-byte RSS input (source IP, destination IP, source port, destination port)
    of the IPv4 TCP/UDP packet at ``frame[offset:]``, or None if it is not one (short,
    another protocol, a fragment after the first)."""
    ip = offset
    if len(frame) < ip + 20 or frame[ip] >> 4 != 4 or frame[ip + 9] not in (6, 17):
        return None
    if (frame[ip + 6] & 0x1F) or frame[ip + 7]:        # fragment offset != 0: no ports
        return None
    l4 = ip + (frame[ip] & 0x0F) * 4
    if len(frame) < l4 + 4:
        return None
    return bytes(frame[ip + 12:ip + 20]) + bytes(frame[l4:l4 + 4])


def _reverse(key):
    return key[4:8] + key[0:4] + key[10:12] + key[8:10]


class CoreQueue:
    """One core's queue pair on the NIC: the device that core's stack and runner see
    (``mac``, ``nic``, ``syn_window``, ``offload`` are the device's; ``send``,
    ``send_segment``, its own TX ring; ``set_receiver``)."""

    def __init__(self, steering, index):
        self.steering = steering
        self.index = index
        device = steering.device
        self.mac = device.mac
        self.nic = bool(getattr(device, "nic", False))
        if hasattr(device, "syn_window"):
            self.syn_window = device.syn_window
        self.offload = bool(getattr(device, "offload", False))
        self.frames_in = 0
        self.frames_out = 0
        self._receiver = None
        self._ring = None

    def set_receiver(self, callback):
        self._receiver = callback

    def deliver(self, frame):
        self.frames_in += 1
        rx = self._receiver
        if rx is not None:
            rx(frame)
        else:
            self.steering.counters["no_receiver"] += 1

    def send(self, frame):
        self.frames_out += 1
        ring = self._ring
        if ring is not None:
            ring.append(frame)
            return True
        return self.steering.from_core(self.index, frame)

    def send_segment(self, header, payload, gso_size):
        self.frames_out += 1
        ring = self._ring
        if ring is not None:
            ring.append((header, payload, gso_size))
            return True
        return self.steering.from_core(self.index, (header, payload, gso_size))

    def begin_batch(self):
        self._ring = []

    def end_batch(self):
        ring, self._ring = self._ring, None
        if ring:
            for item in ring:
                self.steering.from_core(self.index, item)


class Steering:
    """Between one frame device (a `SimNicDevice` or a link end) and ``n`` cores'
    `CoreQueue`s (``queues``); the module docstring says which core gets what."""

    def __init__(self, device, n, *, key=RSS_KEY_SYMMETRIC, flow_rules=FLOW_RULES):
        if n < 1:
            raise ValueError("cores must be >= 1, got %r" % (n,))
        self.device = device
        self.n = n
        self.hash = Toeplitz(key)
        self.table = [i % n for i in range(INDIRECTION)]
        self.flow_rules = flow_rules
        self.rules = {}                       # 4-tuple from the peer -> core
        self.queues = [CoreQueue(self, i) for i in range(n)]
        self.counters = dict.fromkeys(
            ("rss", "flow_rule", "nic_by_key", "nic_by_id", "broadcast", "default",
             "no_receiver", "unlisten_held"), 0)
        self.per_core = [0] * n               # frames steered to each core
        self._listening = {}                  # (ip, port) -> cores listening (Listen seen)
        self._pending = {}                    # (message type, id) -> [core, ...] FIFO
        self._offers = collections.deque()    # teardown offers passed on: (core, id, key)
        self._send = device.send
        self._send_segment = getattr(device, "send_segment", None)
        device.set_receiver(self._from_device)

    def __getattr__(self, name):              # stats, dataplane...: the device's
        if name.startswith("_") or "device" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.__dict__["device"], name)

    # -- which core
    def core_of(self, key):
        """The core owning the connection whose frames from the peer carry ``key``."""
        core = self.rules.get(key)
        if core is not None:
            self.counters["flow_rule"] += 1
            return core
        self.counters["rss"] += 1
        return self.table[self.hash(key) & (INDIRECTION - 1)]

    def _from_device(self, frame):
        et = bytes(frame[12:14])
        if et == _ETH_IP:
            key = flow_key(frame)
            if key is not None:
                return self._to(self.core_of(key), frame)
        elif et == _ETH_ARP:
            if len(frame) >= 22 and _ARP_OP.unpack_from(frame, 20)[0] == 2:
                return self._to_all(frame)
        elif ((et[0] << 8) | et[1]) in control.OFFLOAD_ETHERTYPES:
            core = self._nic_frame_core(frame)
            if core == "all":
                return self._to_all(frame)
            if core == "done":
                return None
            if core is not None:
                return self._to(core, frame)
        self.counters["default"] += 1
        self._to(0, frame)

    def _nic_frame_core(self, frame):
        et = (frame[12] << 8) | frame[13]
        try:
            if et == control.ETHERTYPE_NEW_CONNECTION:
                key = flow_key(frame, 14 + ((frame[16] << 8) | frame[17]))
                return None if key is None else self.core_of(key)
            msg = control.decode(frame)
        except (WireError, IndexError):
            return None
        t = type(msg)
        if t is control.TeardownAccepted and self._split_accepted(frame, msg):
            return "done"
        if t in (control.TeardownAccepted, control.TeardownRefused, control.TeardownDone):
            if t is control.TeardownRefused:
                self._offer_gone(msg.flow_id, msg.key)
            self.counters["nic_by_key"] += 1
            return self.core_of(msg.key)
        if t is control.SpliceClosed:
            self.counters["nic_by_key"] += 1
            return self.core_of(msg.client_key)
        if t in (control.SpliceInstalled, control.SpliceRefused):
            return self._asked(control.Splice, msg.splice_id)
        if t is control.StatusReport:
            if msg.request_id == 0:
                return "all"
            return self._asked(control.StatusRequest, msg.request_id)
        return None

    def _split_accepted(self, frame, msg):
        """A TeardownAccepted for an offer on the list: one per core whose offers it
        covers (module docstring) -> True; else False (route it by its key)."""
        offers, mark = self._offers, (msg.flow_id, msg.key)
        if not any(o[1:] == mark for o in offers):
            return False
        latest = {}
        while True:
            core, fid, key = offers.popleft()
            latest[core] = (fid, key)
            if (fid, key) == mark:
                break
        dst, src = bytes(frame[0:6]), bytes(frame[6:12])
        for core in sorted(latest):
            self.counters["nic_by_key"] += 1
            self._to(core, control.TeardownAccepted(*latest[core]).frame(dst, src))
        return True

    def _offer_gone(self, fid, key):
        for o in self._offers:
            if o[1] == fid and o[2] == key:
                self._offers.remove(o)
                return

    def _asked(self, what, ident):
        fifo = self._pending.get((what, ident))
        if not fifo:
            return None
        core = fifo.pop(0)
        if not fifo:
            del self._pending[(what, ident)]
        self.counters["nic_by_id"] += 1
        return core

    def _to(self, core, frame):
        self.per_core[core] += 1
        self.queues[core].deliver(frame)

    def _to_all(self, frame):
        self.counters["broadcast"] += 1
        for q in self.queues:
            self.per_core[q.index] += 1
            q.deliver(frame)

    # -- from the cores
    def from_core(self, core, item):
        """A frame (or a ``send_segment`` triple) core ``core`` sends."""
        if type(item) is tuple:
            header, payload, gso = item
            self._outgoing_syn(core, header)
            return self._send_segment(header, payload, gso)
        frame = item
        et = (frame[12] << 8) | frame[13] if len(frame) >= 14 else 0
        if et == 0x0800:
            self._outgoing_syn(core, frame)
        elif et == control.ETHERTYPE_TEARDOWN:
            try:
                msg, seg = control.unwrap(frame)
            except WireError:
                pass                                    # the NIC counts its drop
            else:
                self._offers.append((core, msg.flow_id, control.wire_key(seg)))
        elif et == control.ETHERTYPE_CONTROL or et == control.ETHERTYPE_SPLICE:
            if not self._control_from_core(core, frame):
                return True
        return self._send(frame)

    def _outgoing_syn(self, core, frame):
        """A SYN (not SYN-ACK) the core sends: its connection's frames come back to it."""
        key = flow_key(frame)
        if key is None or frame[23] != 6:
            return
        tcp = 14 + (frame[14] & 0x0F) * 4
        if len(frame) > tcp + 13 and frame[tcp + 13] & 0x12 == 0x02:
            back = _reverse(key)
            rules = self.rules
            rules.pop(back, None)
            if len(rules) >= self.flow_rules:
                del rules[next(iter(rules))]            # the oldest rule goes
            rules[back] = core

    def _control_from_core(self, core, frame):
        """Note who asked what; False: do not pass this frame to the NIC."""
        try:
            msg = control.decode(frame)
        except WireError:
            return True                                 # the NIC counts its drop
        t = type(msg)
        if t is control.Splice:
            self._pending.setdefault((control.Splice, msg.splice_id), []).append(core)
        elif t is control.StatusRequest and msg.request_id:
            self._pending.setdefault((control.StatusRequest, msg.request_id),
                                     []).append(core)
        elif t is control.Listen:
            self._listening.setdefault((msg.ip, msg.port), set()).add(core)
        elif t is control.Unlisten:
            cores = self._listening.get((msg.ip, msg.port))
            if cores is not None:
                cores.discard(core)
                if cores:
                    self.counters["unlisten_held"] += 1
                    return False
                del self._listening[(msg.ip, msg.port)]
        return True

    def stats(self):
        return {"per_core": list(self.per_core), "flow_rules": len(self.rules),
                **{k: v for k, v in self.counters.items() if v}}


class SimCores:
    """Result of `make_cores`: the client stack, the server cores' stacks and runners,
    the steering stage and the NIC (or None), the link."""

    def __init__(self, loop, link, client, client_runner, servers, runners, steering, nic):
        self.loop = loop
        self.link = link
        self.client = client
        self.client_runner = client_runner
        self.servers = servers
        self.runners = runners
        self.steering = steering
        self.nic = nic

    def close(self):
        for r in (self.client_runner, *self.runners):
            r.close()


def _secret(seed, name):
    return hashlib.blake2s(("%s:%s" % (seed, name)).encode(), digest_size=16).digest()


def make_cores(loop, cores, *, nic=False, seed=0, config=None, client_config=None,
               nic_kwargs=None, toe=(), static_arp=True, wrap=None, server_kwargs=None,
               **link_kwargs):
    """A client stack (198.18.0.1) on link end a; on end b, optionally behind the
    simulated NIC (``nic``; ``nic_kwargs``: NicDataplane kwargs, ``toe``: its TOE
    offloads), a `Steering` stage and ``cores`` server stacks (198.18.0.2, one MAC),
    each with its own runner. ``wrap(index, queue)`` -> the device between core
    ``index``'s queue and its stack (e.g. a simulated CPU); default: the queue itself.
    -> `SimCores`."""
    link_kwargs.setdefault("seed", seed)
    link = Link(loop, **link_kwargs)
    device = link.b
    dev_nic = None
    if nic:
        kw = dict(nic_kwargs or {})
        kw.setdefault("secret", _secret(seed, "nic-b"))
        dev_nic = device = SimNicDevice(loop, link.b, NicDataplane(link.b.mac, **kw), toe=toe)
    steering = Steering(device, cores)
    client = HostStack(link.a, IP_CLIENT, loop.time, config=client_config or config,
                       name="a", secret=_secret(seed, "a"), strict=True)
    client_runner = StackRunner(loop, client)
    servers, runners = [], []
    for i, q in enumerate(steering.queues):
        dev = wrap(i, q) if wrap is not None else q
        name = "b" if i == 0 else "b%d" % i
        s = HostStack(dev, IP_SERVER, loop.time, config=config, name=name,
                      secret=_secret(seed, name), strict=True, **(server_kwargs or {}))
        runners.append(StackRunner(loop, s, dev))
        servers.append(s)
        if static_arp:
            s.arp_add(client.ip, client.mac)
    if static_arp:
        client.arp_add(servers[0].ip, servers[0].mac)
    return SimCores(loop, link, client, client_runner, servers, runners, steering, dev_nic)
