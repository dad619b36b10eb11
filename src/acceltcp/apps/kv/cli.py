"""The kv server's options on an argparse parser (``acceltcp serve kv`` adds them to its
own) and a `KvServer` from them."""

import argparse

from ..options import add_option
from .engine import KV_DEFAULT_PORT
from .server import OUTPUT_PAUSE, QUERY_LIMIT, KvServer

__all__ = ["add_kv_arguments", "build_kv_server"]


def _size(text):
    """'65536', '64K', '1M', '1G' (binary multiples) -> bytes."""
    t = text.strip().upper().removesuffix("B")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(t[-1:], 1)
    try:
        n = int(t[:-1] if mult > 1 else t) * mult
    except ValueError:
        raise argparse.ArgumentTypeError("not a size: %r" % text) from None
    if n < 0:
        raise argparse.ArgumentTypeError("a size cannot be negative: %r" % text)
    return n


def add_kv_arguments(parser, *, offload_flags=True):
    """The kv server's options on an argparse parser, those it does not have already
    (``acceltcp serve`` has --port and --backlog). ``offload_flags``: also
    --offload-setup / --offload-teardown (leave them out where the command has its own
    way of choosing offloads)."""
    add_option(parser, "--port", type=int, default=KV_DEFAULT_PORT,
                help="TCP port (%(default)s)")
    add_option(parser, "--backlog", type=int, default=4096, help="accept queue length")
    add_option(parser, "--output-pause", type=_size, default=OUTPUT_PAUSE, metavar="BYTES",
                help="stop running a connection's requests while it holds this many reply "
                     "bytes its send buffer has not taken (%(default)s; K/M/G suffixes)")
    add_option(parser, "--output-limit", type=_size, default=0, metavar="BYTES",
                help="close a connection holding more unsent reply bytes than this "
                     "(0: never, as Redis's normal clients)")
    add_option(parser, "--query-limit", type=_size, default=QUERY_LIMIT, metavar="BYTES",
                help="close a connection whose request being received exceeds this "
                     "(%(default)s, Redis's client-query-buffer-limit)")
    if offload_flags:
        add_option(parser, "--offload-setup", action="store_true",
                    help="have the NIC answer SYNs with SYN cookies (needs a NIC device)")
        add_option(parser, "--offload-teardown", action="store_true",
                    help="hand connection teardown to the NIC (needs a NIC device)")
    return parser


def _given(args, name, default):
    v = getattr(args, name, None)
    return default if v is None else v


def build_kv_server(stack, args, **overrides):
    """A `KvServer` on `stack` from `add_kv_arguments` options (missing ones: defaults;
    a None port: 6379); `overrides`: KvServer keyword arguments that win over `args`
    (e.g. the offloads a command chose). Its ``stats()`` / ``summary()`` are the exit
    counters."""
    port = getattr(args, "port", None)
    kw = {"backlog": getattr(args, "backlog", None) or 4096,
          "output_pause": _given(args, "output_pause", OUTPUT_PAUSE),
          "output_limit": _given(args, "output_limit", 0),
          "query_limit": _given(args, "query_limit", QUERY_LIMIT),
          "offload_setup": getattr(args, "offload_setup", False),
          "offload_teardown": getattr(args, "offload_teardown", False)}
    kw.update(overrides)
    return KvServer(stack, KV_DEFAULT_PORT if port is None else port, **kw)
