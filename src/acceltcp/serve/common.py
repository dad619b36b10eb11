"""What ``serve``, ``connect`` and ``load`` (eval/load/) share: a TapHost from the
command line's options, the JSON counters and the ready line, the choice of offloads.

Public, in a module of its own, so that ``eval`` imports no private name of
``serve/commands.py`` (issue 13; tests/test_layering.py checks it).
"""

import asyncio
import errno
import json
import os
import resource
import sys
import time

from ..tcp.config import TcpConfig
from .runner import TapHost

__all__ = ["tcp_config", "dataplane_kwargs", "tap_host", "stats_snapshot", "write_json",
           "print_ready", "new_loop", "OFFLOADS", "XDP_UNSUPPORTED", "parse_offloads",
           "app_offload_kwargs"]


def tcp_config(args):
    return TcpConfig(rcv_buf=args.rcv_buf, snd_buf=args.snd_buf)


def dataplane_kwargs(args):
    """NicDataplane kwargs from the --nic-* options that were given."""
    kw = {}
    for opt, name in (("nic_listeners", "listener_capacity"),
                      ("nic_handed_flows", "handed_capacity"),
                      ("nic_teardown_flows", "teardown_capacity"),
                      ("nic_splice_rules", "splice_capacity"),
                      ("nic_chimney_flows", "chimney_capacity")):
        v = getattr(args, opt, None)
        if v is not None:
            kw[name] = v
    return kw


def tap_host(args, **host_kw):
    """-> (loop, TapHost) with the stack's CPU accounted, or (None, None) after printing
    why not (no namespace, not root, ...).  host_kw: more TapHost arguments."""
    from ..nic.xdp.bpf import XdpUnavailable
    from ..testbed.netns import TestbedError
    from ..nic.placements import NicStartError
    loop = new_loop()
    try:
        host = TapHost(loop, netns=args.netns, tap_name=args.tap, stack_ip=args.ip,
                       peer_ip=args.peer_ip, offload=args.offload,
                       tso=args.tso if args.offload else False, config=tcp_config(args),
                       pcap=args.pcap, batch=args.batch, nic=getattr(args, "nic", "none"),
                       dataplane=dataplane_kwargs(args), isn=getattr(args, "isn", None),
                       nic_watchdog=getattr(args, "nic_watchdog", 1.0),
                       nic_toe=getattr(args, "nic_toe", None) or (), **host_kw)
    except (TestbedError, OSError, NicStartError, ValueError, XdpUnavailable) as e:
        loop.close()
        what = "%s %s" % (args.command, getattr(args, "app", "") or "")
        if isinstance(e, PermissionError) or getattr(e, "errno", None) == errno.EPERM:
            e = "%s (needs root: /dev/net/tun, network namespaces)" % e
        print("acceltcp %s: %s" % (what.strip(), e), file=sys.stderr)
        return None, None
    host.runner.cpu_accounting = True
    return loop, host


def stats_snapshot(host, extra=None):
    """The JSON counters of a TapHost's stack, device and process."""
    st = host.stack
    c = st.counters
    tcp = st.stats()["tcp"]
    ru = resource.getrusage(resource.RUSAGE_SELF)
    out = {
        "offload": host.tap.offload,
        "tso": st.tso_max > 0,
        "tap": host.tap.name,
        "netns": host.netns,
        "stack_ip": host.stack_ip,
        "frames_in": c["frames_in"],
        "bytes_in": c["bytes_in"],
        "frames_out": c["frames_out"],
        "bytes_out": c["bytes_out"],
        "conns_accepted": c.get("conns_accepted", 0),
        "conns_opened": c.get("conns_opened", 0),
        "conns_closed": c.get("conns_closed", 0),
        "conns_live": c.get("conns_live", 0),
        "retransmits": c.get("retransmits", 0),
        "fast_retransmits": c.get("fast_retransmits", 0),
        "rto_timeouts": c.get("rto_timeouts", 0),
        "drops": dict(st.drops),
        "csum_trusted": c.get("csum_trusted", 0),
        "counters": c,
        "tcp": tcp,
        "device": host.device_stats(),
        "cpu": {"user_s": ru.ru_utime, "sys_s": ru.ru_stime,
                "stack_s": host.runner.cpu_ns / 1e9},
        "elapsed_s": time.monotonic() - host.started,
        "placement": host.placement,
    }
    nic = host.nic_stats()
    if nic is not None:
        # The NIC's CPU apart from the host's: busy time in the dataplane (and, for the
        # process placement, the NIC process's whole user/sys time).
        out["nic"] = nic
        out["nic_lost"] = nic["lost"]
        out["cpu"]["nic_s"] = nic["cpu"].get("busy_s", 0.0)
    if host.pcap is not None:
        out["pcap"] = {"path": host.pcap.path, "frames": host.pcap_frames()}
    if extra:
        out.update(extra)
    return out


def write_json(path, obj):
    tmp = "%s.tmp%d" % (path, os.getpid())
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def print_ready(**info):
    info["event"] = "ready"
    sys.stderr.write(json.dumps(info) + "\n")
    sys.stderr.flush()


def new_loop():
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    return loop


OFFLOADS = ("setup", "teardown", "splice", "chimney")
XDP_UNSUPPORTED = ("chimney",)      # TCP Chimney runs in the Python NIC only


def parse_offloads(text):
    """--offload value -> tuple of names ("none" or "" -> ())."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["none"]:
        return ()
    bad = [n for n in names if n not in OFFLOADS]
    if bad:
        raise ValueError("unknown offload %s (choose from %s, or none)"
                         % (", ".join(bad), ", ".join(OFFLOADS)))
    return tuple(dict.fromkeys(names))


def app_offload_kwargs(spec, wanted):
    """``offload_<name>=True`` for each wanted offload the app can use.
    -> (kwargs, {offload: why it is not used})."""
    kw = {}
    unused = {}
    for name in wanted:
        if name == "chimney":
            continue                    # the stack's (host.chimney auto), not the app's
        if name in spec.offloads:
            kw["offload_" + name] = True
        elif name == "splice":
            unused[name] = "%s is not a proxy (nothing to splice)" % spec.name
        else:
            unused[name] = "%s does not use %s offload" % (spec.name, name)
    return kw, unused
