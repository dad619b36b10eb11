"""An HTTP/1.1 layer-7 load balancer that splices (the paper's epproxy, HAProxy's role).

Theory of operation
-------------------
One `LoadBalancer` listens on a `HostStack` port and runs on the stack's event
callbacks (``stack.attach``), like the other apps: no threads, no loop of its own. For
every client connection it reads the first request head (`apps.http`), chooses a route
(longest path prefix of the ``[[routes]]``) and a backend, connects to it, forwards the
head -- rewritten if ``rewrite`` says so -- and then, per connection, one of two ways:

* **Splice** (the default; needs a NIC, ``stack.nic``): as soon as the backend
  connection is established, ``stack.nsplice(client, backend, callback)`` hands the
  *rest of the connection* to the NIC, which relays both ways with sequence/ack offsets
  computed from the two TCBs after the forwarded head -- a rewritten head of another
  length included. The host is done with the connection; the callback later brings the
  NIC's `control.SpliceClosed` (bytes and packets moved each way), or
  `host.offload.SpliceFailed` and the host relays after all. With keep-alive every later
  request on that client connection therefore goes to the same backend, unbalanced and
  unrewritten: HAProxy's "tunnel" mode, which is what splicing means. The backend is
  chosen per client connection, from its first request. ``splice_after = "response"``
  relays the first exchange in the host until the response head has gone to the
  client, and splices then: a backend that fails before answering still gets the
  client a 502/504 from the balancer, for the price of the first response segment.
* **Host relay** (a route with ``inspect = true``, ``splice = false``, no NIC, or a
  failed splice): full HTTP/1.1 proxying in the host. Each request is framed (RFC 9112
  §6: Content-Length, chunked, none), balanced and rewritten on its own; each response
  is framed (HEAD, 1xx, 204, 304 without body; Content-Length; chunked; until close)
  and relayed. Requests on one client connection are served one at a time: pipelined
  requests wait, unread, in the TCP receive buffer (serialized, never reordered).
  Backend connections are kept alive per client connection and reused when a later
  request picks the same backend. ``101 Switching Protocols`` turns the pair into a
  byte tunnel. Both connections run with TCP_NODELAY and a head goes out in one send
  with the body bytes that came along (Nagle would hold a small tail behind the peer's
  delayed ACK). Once a connection was relayed, it stays in the host: ``inspect`` is a
  per-flow opt-out of the offload (AccelTCP §1), never undone by a later request.

Splice fallback. Before ``nsplice`` the balancer moves every byte the client has sent
to the backend itself, following the request's framing. If nothing beyond the first
request went along, a `SpliceFailed` continues as host relay of that request, exactly;
if pipelined bytes went too (they were forwarded unparsed), as a byte tunnel to the same
backend. A backend that answers before that (a full-duplex peer, an early error) has
its bytes moved to the client unparsed, and the pair is spliced all the same (a
fallback is then a byte tunnel). A splice is not attempted (``splice_skipped``) when
the backend already closed, or the client already half-closed, before it could start.

Balancing (``balance``): ``roundrobin`` (smooth weighted round robin, as nginx),
``leastconn`` (fewest active client connections -- spliced ones count until the NIC's
closure report -- per weight, ties in turn), ``urihash`` (rendezvous hashing of the
request path without the query: a path keeps its backend while that backend is up, and
only the paths of a backend that goes down move). Routes may name their own pool.

Failures. Health is passive: a backend that refuses or does not answer the connection
(``timeout_connect``, done by the TCB's SYN retransmissions), or whose fresh connection
closes or resets before a response, is marked down for ``down_time`` seconds, after
which the next pick tries it again. A failed *connection* is retried on another backend
(``retries``), which is safe for any method because the backend received nothing; so is
an idempotent bodiless request on a kept-alive connection that the backend closed as it
was reused (its keep-alive timeout), once, on a new connection. Other requests that
reached a backend are never replayed. With no backend reachable the client
gets ``502 Bad Gateway``, with none up (or configured) ``503 Service Unavailable``, a
backend that does not answer within ``timeout_server`` ``504`` -- always with
``Connection: close`` and the connection closed, never a hang. Once a response has
started, a failing backend can only be reported by resetting the client. After a splice
the NIC owns the connection: a backend that dies then has its RST or FIN relayed to the
client by the NIC, which ends only that connection's in-flight request. Malformed
requests get 400 (505 for HTTP versions other than 1.x, 405 for CONNECT) and the
connection is closed.

Timers. The stack has no application timers, so ``timeout_client`` (a complete request
head, and keep-alive idle time) and ``timeout_server`` (no progress either way while a
request is relayed) need an asyncio loop (``loop=``; the simulator's works): one
periodic sweep, armed only while sessions exist, compares each session's deadline --
setting a deadline is one clock read. Without a loop those two timeouts are not enforced
(``warnings`` says so); connect timeouts are the TCB's and always are.

Counters (`stats`, `summary`): connections, requests, spliced / splice_failed (by
reason) / splice_skipped, relayed requests, tunnels, retries, per backend picks,
requests, failures and downs; responses the balancer itself sent by status; bytes moved
by the NIC (sums of the SpliceClosed reports) and by the host, each direction.

Package layout
--------------
``config``: the TOML configuration and its checks (`LbConfig`, `load_config`, ...);
``balance``: backends, the balancing algorithms, routes; ``session``: a client session,
its phases and the one table of legal moves between them (`IllegalPhaseMove`, as
``tcp.fsm`` for the TCB); ``server``: `LoadBalancer` (accept, heads, backends, endings,
timeouts, counters); ``relay``: splicing and the host relay (the base of
`LoadBalancer`); ``cli``: the options, `build_lb` and ``python -m acceltcp.apps.lb``.
"""

from .balance import _Backend, _connect_config, _LeastConn, _RoundRobin, _UriHash  # noqa: F401
from .cli import LB_EPILOG, LB_HELP, add_lb_arguments, build_lb, main
from .config import (BALANCE, LB_DEFAULT_PORT, BackendConfig, LbConfig, LbConfigError,
                     RewriteConfig, RouteConfig, config_from_args, load_config, parse_address,
                     parse_config)
from .server import LoadBalancer
from .session import IllegalPhaseMove

__all__ = ["LoadBalancer", "LbConfig", "BackendConfig", "RouteConfig", "RewriteConfig",
           "LbConfigError", "load_config", "parse_config", "config_from_args",
           "add_lb_arguments", "build_lb", "BALANCE", "LB_DEFAULT_PORT", "LB_HELP",
           "LB_EPILOG", "main", "parse_address", "IllegalPhaseMove"]
