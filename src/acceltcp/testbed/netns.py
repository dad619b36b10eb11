"""Network namespaces where real Linux programs talk to the stack.

Layout (every address from 198.18.0.0/15, RFC 2544's benchmarking range)::

    root namespace                         namespace atcp-peer (real kernel TCP)
    acceltcp serve/connect  == TAP fd ==>  atcp0  198.18.0.1/24  <- socat, nc, python...
    stack 198.18.0.2, MAC 02:a7:cc:00:00:02       MAC 02:a7:cc:00:00:01
                                           atcp-ref0 198.18.1.1/24 ==veth==
                                           namespace atcp-ref (only with ``ref=True``)
                                           atcp-ref1 198.18.1.2/24: kernel-stack servers
                                           for reference figures in the benchmarks

The stack process keeps the TAP fd in the root namespace and moves the netdev into the
peer namespace; the device dies with the fd. ``up`` is idempotent; ``down`` removes
the namespaces (and with them every device, address, route and nftables table in
them) after ending the processes still running inside, so it also cleans up after a
crash. Links and addresses go through pyroute2; sysctls, nftables and the programs
run with ``ip netns exec`` (iproute2).

Kernel-side loss (``set_loss``): nftables ``numgen random mod 100 < N`` rules on the
peer interface's netdev *ingress* (frames from the stack: ``drop``) and *egress*
(frames to the stack: ``fwd`` into a black-hole device, see ``set_loss`` for why not
``drop``), TCP only.
"""

import ctypes
import errno
import fcntl
import os
import socket
import struct
import shutil
import signal
import subprocess
import time

__all__ = [
    "DEFAULT_NS", "REF_NS", "PEER_IP", "STACK_IP", "PREFIXLEN", "PEER_MAC", "STACK_MAC",
    "REF_PEER_IP", "REF_IP", "TAP_NAME",
    "up", "down", "exists", "status", "attach_tap", "ns_cmd", "ns_popen", "ns_run",
    "set_loss", "clear_loss", "ns_pids", "require_root", "TestbedError", "ref_name_for",
    "xdp_names", "xdp_check_free", "attach_veth", "remove_veth", "set_tx_csum", "tap_up",
]

DEFAULT_NS = "atcp-peer"
REF_NS = "atcp-ref"
PEER_IP = "198.18.0.1"
STACK_IP = "198.18.0.2"
PREFIXLEN = 24
PEER_MAC = "02:a7:cc:00:00:01"
STACK_MAC = "02:a7:cc:00:00:02"
REF_PEER_IP = "198.18.1.1"       # atcp-peer's end of the veth to atcp-ref
REF_IP = "198.18.1.2"            # the kernel-stack reference servers
TAP_NAME = "atcp0"

#: sysctls of the peer namespace: no IPv6 chatter on the link (the stack is IPv4
#: only), a wide ephemeral range and TIME-WAIT reuse for the short-lived load. The
#: range starts at 10000 so that clients never take a port servers listen on there
#: (the tests and benchmarks use ports below 10000).
NS_SYSCTLS = {
    "net.ipv6.conf.all.disable_ipv6": "1",
    "net.ipv6.conf.default.disable_ipv6": "1",
    "net.ipv4.ip_local_port_range": "10000 65000",
    "net.ipv4.tcp_tw_reuse": "1",
    "net.core.somaxconn": "4096",
    "net.ipv4.tcp_max_syn_backlog": "4096",
}


class TestbedError(RuntimeError):
    pass


def ref_name_for(name):
    """The reference namespace that belongs to peer namespace `name`: ``atcp-ref`` for the
    default ``atcp-peer``, ``NAME-ref`` for any other, so that ``down --netns X`` never
    touches another testbed's reference namespace."""
    return REF_NS if name == DEFAULT_NS else name + "-ref"


def require_root():
    if os.geteuid() != 0:
        raise TestbedError("the testbed needs root (network namespaces, /dev/net/tun)")


def _ip():
    p = shutil.which("ip")
    if p is None:
        raise TestbedError("iproute2 (`ip`) is not installed: run `make system-deps`")
    return p


def exists(name=DEFAULT_NS):
    return os.path.exists(os.path.join("/run/netns", name))


def ns_cmd(name, argv):
    """argv run inside namespace `name` (``ip netns exec``)."""
    return [_ip(), "netns", "exec", name] + list(argv)


def ns_run(name, argv, check=True, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    r = subprocess.run(ns_cmd(name, argv), **kw)
    if check and r.returncode != 0:
        raise TestbedError("%s failed (%d): %s" % (" ".join(argv), r.returncode,
                                                  (r.stderr or "").strip()))
    return r


def ns_popen(name, argv, **kw):
    return subprocess.Popen(ns_cmd(name, argv), **kw)


def ns_pids(name):
    """PIDs of the processes whose network namespace is `name`."""
    if not exists(name):
        return []
    r = subprocess.run([_ip(), "netns", "pids", name], capture_output=True, text=True)
    return [int(p) for p in r.stdout.split()]


def _sysctl(name, key, value):
    ns_run(name, ["sysctl", "-qw", "%s=%s" % (key, value)], check=False)


def up(name=DEFAULT_NS, ref=False, ref_name=None):
    """Create the peer namespace (and the reference one with ``ref``; by default
    ``ref_name_for(name)``). Idempotent."""
    require_root()
    ref_name = ref_name or ref_name_for(name)
    from pyroute2 import NetNS, netns
    created = []
    for ns in ([name, ref_name] if ref else [name]):
        if not exists(ns):
            netns.create(ns)
            created.append(ns)
        with NetNS(ns) as ipr:
            lo = ipr.link_lookup(ifname="lo")[0]
            ipr.link("set", index=lo, state="up")
        for k, v in NS_SYSCTLS.items():
            _sysctl(ns, k, v)
    if ref:
        _veth_ref(name, ref_name)
    return created


def _veth_ref(name, ref_name):
    from pyroute2 import NetNS
    a, b = "atcp-ref0", "atcp-ref1"
    with NetNS(name) as ipr:
        if not ipr.link_lookup(ifname=a):
            ipr.link("add", ifname=a, kind="veth", peer={"ifname": b, "net_ns_fd": ref_name})
        ia = ipr.link_lookup(ifname=a)[0]
        if not any(x.get("address") == REF_PEER_IP for x in ipr.get_addr(index=ia)):
            ipr.addr("add", index=ia, address=REF_PEER_IP, prefixlen=PREFIXLEN)
        ipr.link("set", index=ia, state="up")
    with NetNS(ref_name) as ipr:
        ib = ipr.link_lookup(ifname=b)[0]
        if not any(x.get("address") == REF_IP for x in ipr.get_addr(index=ib)):
            ipr.addr("add", index=ib, address=REF_IP, prefixlen=PREFIXLEN)
        ipr.link("set", index=ib, state="up")


def _kill_ns_processes(names, grace=2.0):
    """SIGTERM, then SIGKILL, what still runs in the namespaces (our peers, after a crash)."""
    pids = set()
    for ns in names:
        pids.update(ns_pids(ns))
    pids.discard(os.getpid())
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = []
        for pid in pids:
            try:
                os.kill(pid, sig)
                alive.append(pid)
            except ProcessLookupError:
                pass
        if not alive:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            alive = [p for p in alive if _alive(p)]
            if not alive:
                return
            time.sleep(0.02)
        pids = set(alive)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:                                   # a zombie child of ours: reap it
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        pass
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def down(name=DEFAULT_NS, ref_name=None):
    """Remove the namespace and its reference namespace (``ref_name_for(name)`` by
    default; processes inside are ended first). Idempotent."""
    require_root()
    ref_name = ref_name or ref_name_for(name)
    from pyroute2 import netns
    names = [ns for ns in (name, ref_name) if exists(ns)]
    _kill_ns_processes(names)
    remove_veth(name)                      # --nic xdp: the root end, its programs
    _remove_stale_pins()
    removed = []
    for ns in names:
        try:
            netns.remove(ns)
        except OSError as e:
            if e.errno != errno.ENOENT:
                r = subprocess.run([_ip(), "netns", "delete", ns], capture_output=True)
                if r.returncode != 0:
                    raise
        removed.append(ns)
    return removed


def status(name=DEFAULT_NS, ref_name=None):
    """{namespace: {links: {ifname: [addresses]}, pids: [...]}} of what exists."""
    from pyroute2 import NetNS
    ref_name = ref_name or ref_name_for(name)
    out = {}
    for ns in (name, ref_name):
        if not exists(ns):
            continue
        links = {}
        with NetNS(ns) as ipr:
            for link in ipr.get_links():
                idx = link["index"]
                links[link.get("ifname")] = ["%s/%d" % (a.get("address"), a["prefixlen"])
                                             for a in ipr.get_addr(index=idx)]
        out[ns] = {"links": links, "pids": ns_pids(ns)}
    return out


def attach_tap(ifname, name=DEFAULT_NS, address=PEER_IP, prefixlen=PREFIXLEN, mac=PEER_MAC,
               mtu=1500):
    """Move the TAP netdev `ifname` (created by this process, root namespace) into the
    namespace, give it `address`/`prefixlen` and `mac`, and bring it up."""
    from pyroute2 import IPRoute, NetNS
    if not exists(name):
        raise TestbedError("network namespace %s does not exist: run `acceltcp testbed up%s`"
                           % (name, "" if name == DEFAULT_NS else " --netns " + name))
    with NetNS(name) as ipr:
        if ipr.link_lookup(ifname=ifname):
            raise TestbedError("%s already has an interface %s (another serve/connect is "
                               "running? `acceltcp testbed down` ends it)" % (name, ifname))
    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=ifname)[0]
        ipr.link("set", index=idx, address=mac, mtu=mtu)
        ipr.link("set", index=idx, net_ns_fd=name)
    with NetNS(name) as ipr:
        idx = ipr.link_lookup(ifname=ifname)[0]
        ipr.addr("add", index=idx, address=address, prefixlen=prefixlen)
        ipr.link("set", index=idx, state="up")
    return idx


# ---------------------------------------------------------------------- --nic xdp
# The XDP placement (docs/placements.md, docs/xdp.md) keeps this module's addresses but
# puts a veth between the namespace and the NIC:
#
#   namespace NAME: atcp0 198.18.0.1 (veth, atcp_pass) ==== axHHHHHHHHw (root: atcp_wire)
#   root: axHHHHHHHHh, the TAP the stack reads/writes (atcp_host), no address
#
# The names are derived from the namespace's name (crc32), so testbeds never collide and
# ``down --netns NAME`` finds what a killed serve left in the root namespace. Deleting
# the namespace deletes the pair anyway (a veth dies with either end).

def xdp_names(name=DEFAULT_NS):
    """-> (TAP name, wire veth name) of the XDP placement in namespace `name` (11 chars)."""
    import zlib
    h = "ax%08x" % zlib.crc32(name.encode())
    return h + "h", h + "w"


def _ifindex(ifname):
    try:
        return socket.if_nametoindex(ifname)
    except OSError:
        return 0


_CLONE_NEWNET = 0x40000000
_SIOCETHTOOL = 0x8946
_ETHTOOL_GTXCSUM = 0x16
_ETHTOOL_STXCSUM = 0x17


def _ns_socket(name):
    """An AF_INET socket living in namespace `name` (setns there and back: the socket
    keeps its namespace); ioctls on it address that namespace's devices."""
    libc = ctypes.CDLL(None, use_errno=True)
    own = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        fd = os.open(os.path.join("/run/netns", name), os.O_RDONLY)
        try:
            if libc.setns(fd, _CLONE_NEWNET):
                raise OSError(ctypes.get_errno(), "setns %s" % name)
            try:
                return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            finally:
                if libc.setns(own, _CLONE_NEWNET):
                    raise OSError(ctypes.get_errno(), "setns back")
        finally:
            os.close(fd)
    finally:
        os.close(own)


def set_tx_csum(ifname, on, name=DEFAULT_NS):
    """``ethtool -K IF tx on|off`` inside namespace `name`, by SIOCETHTOOL (ethtool(8)
    need not be installed). -> the setting read back."""
    val = ctypes.create_string_buffer(struct.pack("=II", _ETHTOOL_STXCSUM, 1 if on else 0))
    with _ns_socket(name) as s:
        req = struct.pack("16sP", ifname.encode(), ctypes.addressof(val)).ljust(40, b"\0")
        fcntl.ioctl(s.fileno(), _SIOCETHTOOL, req)
        ctypes.memmove(val, struct.pack("=II", _ETHTOOL_GTXCSUM, 0), 8)
        fcntl.ioctl(s.fileno(), _SIOCETHTOOL, req)
    return bool(struct.unpack("=II", val.raw[:8])[1])


def xdp_check_free(name=DEFAULT_NS, ifname=TAP_NAME, with_tap=True):
    """Before the XDP placement's devices are made: leftovers of a process that is gone
    (a SIGKILLed serve: the veth's ifalias names it) are removed; the devices of a live
    one are an error (TestbedError), and left alone. ``with_tap``: the TAP's name counts
    too (not once the caller has opened it)."""
    if not exists(name):
        raise TestbedError("network namespace %s does not exist: run `acceltcp testbed up%s`"
                           % (name, "" if name == DEFAULT_NS else " --netns " + name))
    from pyroute2 import NetNS
    tap, wire = xdp_names(name)
    owner = _veth_owner(wire)
    if owner is not None and not os.path.exists("/proc/%d" % owner):
        remove_veth(name)                  # a killed serve's: its programs go with it
        _remove_stale_pins()
    with NetNS(name) as ipr:
        taken = ipr.link_lookup(ifname=ifname)
    busy = [d for d, there in ((ifname, taken), (wire, _ifindex(wire)),
                               (tap, with_tap and _ifindex(tap))) if there]
    if busy:
        raise TestbedError("%s already has an interface %s (another serve/connect is "
                           "running? `acceltcp testbed down%s` ends it)" % (
                               name, busy[0], "" if name == DEFAULT_NS else " --netns " + name))


def attach_veth(name=DEFAULT_NS, ifname=TAP_NAME, address=PEER_IP, prefixlen=PREFIXLEN,
                mac=PEER_MAC, mtu=1500):
    """The XDP placement's wire: a veth pair, `ifname` in namespace `name` with `address`
    and `mac` (what ``attach_tap`` gives the TAP there), its peer ``xdp_names(name)[1]``
    in the root namespace (no address, no IPv6: everything it receives is the XDP
    program's). The namespace's end sends full checksums (tx checksum offload off: a
    partial checksum does not survive a redirect, notes/xdp-on-this-kernel.md).
    The root end's ifalias names the process that made it: leftovers of a process that
    is gone (a SIGKILLed serve) are removed first, those of a live one are an error.
    -> the root end's (name, ifindex)."""
    from pyroute2 import IPRoute, NetNS
    if not exists(name):
        raise TestbedError("network namespace %s does not exist: run `acceltcp testbed up%s`"
                           % (name, "" if name == DEFAULT_NS else " --netns " + name))
    xdp_check_free(name, ifname, with_tap=False)
    wire = xdp_names(name)[1]
    with IPRoute() as ipr:
        ipr.link("add", ifname=wire, kind="veth", peer={"ifname": ifname, "net_ns_fd": name})
        try:
            idx = ipr.link_lookup(ifname=wire)[0]
            _write_sysctl("net/ipv6/conf/%s/disable_ipv6" % wire, "1")
            ipr.link("set", index=idx, mtu=mtu, ifalias=_ALIAS % os.getpid())
            ipr.link("set", index=idx, state="up")
            with NetNS(name) as nsr:
                i = nsr.link_lookup(ifname=ifname)[0]
                nsr.link("set", index=i, address=mac, mtu=mtu)
                nsr.addr("add", index=i, address=address, prefixlen=prefixlen)
                nsr.link("set", index=i, state="up")
            if set_tx_csum(ifname, False, name):
                raise TestbedError("%s: tx checksum offload stays on" % ifname)
        except BaseException:
            remove_veth(name)
            raise
    return wire, idx


def tap_up(ifname, mtu=1500):
    """The XDP placement's TAP, left in the root namespace: no IPv6 (no chatter to the
    stack), no address, up."""
    from pyroute2 import IPRoute
    _write_sysctl("net/ipv6/conf/%s/disable_ipv6" % ifname, "1")
    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=ifname)[0]
        ipr.link("set", index=idx, mtu=mtu, state="up")
    return idx


_ALIAS = "acceltcp serve pid %d"


def _veth_owner(wire):
    """The pid in the ifalias of a wire veth (the serve that made it), or None."""
    try:
        with open("/sys/class/net/%s/ifalias" % wire) as f:
            alias = f.read().strip()
    except OSError:
        return None
    head, _, pid = alias.rpartition(" ")
    return int(pid) if head == (_ALIAS % 0).rpartition(" ")[0] and pid.isdigit() else None


def _write_sysctl(path, value):
    try:
        with open(os.path.join("/proc/sys", path), "w") as f:
            f.write(value)
    except OSError:
        pass


def remove_veth(name=DEFAULT_NS):
    """Delete the XDP placement's veth pair of namespace `name` (its root end, and with it
    the other end and both programs' attachments). -> whether there was one."""
    wire = xdp_names(name)[1]
    idx = _ifindex(wire)
    if not idx:
        return False
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        try:
            ipr.link("del", index=idx)
        except Exception as e:         # gone meanwhile
            if _ifindex(wire):
                raise TestbedError("cannot delete %s: %s" % (wire, e)) from None
    return True


def _remove_stale_pins():
    """XDP pins of processes that are gone (a killed serve --nic xdp): nic/xdp/bpf.py."""
    try:
        from ..nic.xdp import bpf
        bpf.cleanup_stale()
    except Exception:               # no bpffs, no XDP here: nothing was pinned
        pass


# ---------------------------------------------------------------------- loss
_LOSS_TABLE = "atcp_loss"
BLACKHOLE = "atcp-null"          # a veth whose peer end stays down: frames sent to it vanish


def _blackhole(name):
    from pyroute2 import NetNS
    with NetNS(name) as ipr:
        if not ipr.link_lookup(ifname=BLACKHOLE):
            ipr.link("add", ifname=BLACKHOLE, kind="veth", peer=BLACKHOLE + "1")
        ipr.link("set", index=ipr.link_lookup(ifname=BLACKHOLE)[0], state="up")


def set_loss(percent_in, percent_out=None, name=DEFAULT_NS, ifname=TAP_NAME):
    """Random kernel-side TCP loss on the peer interface `ifname`: `percent_in` % of the
    frames from the stack and `percent_out` % of those to it vanish (nftables ``numgen
    random mod 100 < N``; with offloads on a frame may be a 64 KiB super-frame).

    From the stack: a netdev *ingress* ``drop``. To the stack: a netdev *egress* rule
    that forwards the frame into a black-hole device (``fwd to`` a veth whose peer is
    down). A plain ``drop`` at egress (or in OUTPUT/POSTROUTING) would make the local
    send fail with NET_XMIT_DROP/EPERM, and Linux TCP would simply send the segment
    again later: no loss on the wire, no recovery to test. After ``fwd`` the send
    succeeded, exactly like a frame lost on a cable.
    """
    if percent_out is None:
        percent_out = percent_in
    clear_loss(name)
    rules = ["table netdev %s {" % _LOSS_TABLE]
    match = "meta protocol ip ip protocol tcp numgen random mod 100 <"
    if percent_in:
        rules.append('  chain rx { type filter hook ingress device "%s" priority 0; policy '
                     'accept; %s %d counter drop; }' % (ifname, match, int(percent_in)))
    if percent_out:
        _blackhole(name)
        rules.append('  chain tx { type filter hook egress device "%s" priority 0; policy '
                     'accept; %s %d counter fwd to "%s"; }' % (ifname, match,
                                                             int(percent_out), BLACKHOLE))
    rules.append("}")
    ns_run(name, ["nft", "-f", "-"], input="\n".join(rules) + "\n")


def loss_counters(name=DEFAULT_NS):
    """{chain: packets dropped} of the loss table (empty if none)."""
    import json
    r = ns_run(name, ["nft", "-j", "list", "table", "netdev", _LOSS_TABLE], check=False)
    if r.returncode != 0:
        return {}
    out = {}
    for item in json.loads(r.stdout).get("nftables", []):
        rule = item.get("rule")
        if rule is None:
            continue
        for expr in rule.get("expr", []):
            if "counter" in expr:
                out[rule["chain"]] = expr["counter"]["packets"]
    return out


def clear_loss(name=DEFAULT_NS):
    ns_run(name, ["nft", "delete", "table", "netdev", _LOSS_TABLE], check=False)
