"""The load balancer's command line: its options on any argparse parser (``acceltcp
serve lb`` adds them to its own), a `LoadBalancer` from them, and ``python -m
acceltcp.apps.lb``, which checks a configuration without running anything."""

import argparse
import sys

from ..options import add_option
from .config import BALANCE, LB_DEFAULT_PORT, LbConfigError, config_from_args
from .server import LoadBalancer

__all__ = ["LB_HELP", "LB_EPILOG", "add_lb_arguments", "build_lb", "main"]

#: The options group's description, wrapped at 78 columns (any argparse formatter).
LB_HELP = """\
HTTP/1.1 load balancer: reads each client's first request, picks a backend
(roundrobin, leastconn or urihash), forwards the request (optionally with
added, replaced or removed headers) and has the NIC splice the rest of the
connection; routes marked inspect, --no-splice, or a stack without a NIC relay
every request in the host instead, each balanced on its own. Settings come
from a TOML file (--config; the options below override it)."""

#: A configuration example, for a command's epilog (keep its layout:
#: argparse.RawDescriptionHelpFormatter).
LB_EPILOG = """\
load balancer configuration (TOML), for example:

  [lb]
  port = 8080
  balance = "roundrobin"          # | "leastconn" | "urihash"
  splice = true                   # false: relay every request in the host
  splice_after = "request"        # | "response": splice once the response head is in
  rewrite = { add_headers = { "X-Forwarded-For" = "$client_ip" } }

  [[backends]]
  address = "198.18.0.1:8081"     # IPv4:PORT; optional: name, weight
  [[backends]]
  address = "198.18.0.1:8082"

  [[routes]]                      # optional; the longest matching prefix wins
  prefix = "/admin"
  inspect = true                  # relayed and balanced per request in the host

Every key and its default: docs/lb.md. Check a file without running it:
  python -m acceltcp.apps.lb --config FILE
"""


def add_lb_arguments(parser, *, epilog=True):
    """The balancer's options on an argparse parser, as a group described by `LB_HELP`
    (those it does not have already: ``acceltcp serve`` has --port and --backlog).
    ``epilog``: give a parser without an epilog `LB_EPILOG`, the configuration example,
    and a formatter that keeps its layout (argparse.RawDescriptionHelpFormatter, if it
    had the default one)."""
    if epilog and parser.epilog is None:
        parser.epilog = LB_EPILOG
        if parser.formatter_class is argparse.HelpFormatter:
            parser.formatter_class = argparse.RawDescriptionHelpFormatter
    g = parser.add_argument_group("load balancer (lb)", LB_HELP)
    add_option(g, "--config", metavar="FILE",
                help="TOML configuration: [lb] settings, [[backends]], [[routes]] "
                     "(the options below override it)")
    add_option(g, "--backend", metavar="IP:PORT", action="append",
                help="a backend server; repeat for more (replaces the file's [[backends]])")
    add_option(g, "--balance", choices=BALANCE,
                help="how a backend is chosen for each client connection (spliced) or "
                     "request (host relay) (file's [lb] balance, else roundrobin)")
    add_option(g, "--no-splice", action="store_true",
                help="relay every request in the host instead of having the NIC splice "
                     "connections: per-request balancing of keep-alive connections")
    add_option(g, "--port", type=int, default=None,
                help="listening port (file's [lb] port, else %d)" % LB_DEFAULT_PORT)
    add_option(g, "--backlog", type=int, default=None, help="accept queue length")
    return parser


def build_lb(stack, args, *, loop=None, tcp_config=None, **overrides):
    """A `LoadBalancer` on ``stack`` from `add_lb_arguments` options; ``overrides``:
    LoadBalancer keyword arguments (offload_setup, offload_teardown, offload_splice).
    Raises `LbConfigError` (bad configuration) and OSError (port in use). Print its
    ``warnings`` at start and ``summary()`` / write ``stats()`` at exit."""
    cfg = config_from_args(args)
    return LoadBalancer(stack, cfg, loop=loop, tcp_config=tcp_config, **overrides)


def main(argv=None):
    """``python -m acceltcp.apps.lb [options]``: check a configuration and print it as
    the balancer would use it (the balancer itself runs under ``acceltcp serve``)."""
    p = argparse.ArgumentParser(
        prog="python -m acceltcp.apps.lb",
        description="Check a load balancer configuration and print it as it would be\n"
                    "used; exit status 2 if it is invalid. The balancer itself runs on\n"
                    "the stack (acceltcp serve lb ...).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_lb_arguments(p)
    args = p.parse_args(argv)
    try:
        cfg = config_from_args(args)
    except LbConfigError as e:
        print("lb: %s" % e, file=sys.stderr)
        return 2
    print(cfg.describe())
    return 0
