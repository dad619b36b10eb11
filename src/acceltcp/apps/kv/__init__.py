"""An in-memory key-value server speaking RESP2 (a subset of Redis), and its load client.

Theory of operation
-------------------
Three layers, the inner two without any I/O:

* `KvEngine` is the server's whole behaviour: the keyspace, expiry, the command table,
  per-client `KvSession`s and the counters. ``process(session, data) -> reply bytes``
  takes whatever bytes a connection delivered and returns every reply they complete,
  already joined, so a pipelined batch costs one send. Requests are parsed by
  `resp.RequestParser`; a malformed one makes the engine run the commands before it,
  append ``-ERR Protocol error: ...`` and mark the session ``closing`` (as does QUIT),
  which closes that connection only.
* `KvServer` puts an engine on a `HostStack` listener with the stack's event callbacks
  (``stack.attach``), like `apps.echo.EchoServer`: no threads, no loop of its own. On an
  event it reads everything received, hands it to the engine, sends the replies, and
  closes when the session is closing or the client sent its FIN. Replies that do not fit
  the send buffer wait in the session (an `OutBuffer`: drained in O(bytes)); while they
  are over ``output_pause`` the session's requests are not run and nothing more is read
  (the client's window then closes: back-pressure, not unbounded buffering), until the
  stack's send-space event has drained them (docs/kv.md, "Limits").
* `KvLoad` is the client side: the Facebook USR workload of the AccelTCP evaluation
  (99.8 % GET, 0.2 % SET, keys under 20 bytes, 2-byte values; Atikoglu et al.,
  SIGMETRICS 2012), one transaction per connection or persistent connections, with every
  reply checked against what was written.

The keyspace is a dict from key to the value *already encoded as a bulk-string reply*
(``$2\\r\\nab\\r\\n``): GET, the dominant command, is a dict lookup whose result is
appended to the output as is; SET pays the one formatting instead. Values are strings
only, so there is no WRONGTYPE.

Time is the stack's clock (``stack.clock()``, virtual in the simulator) in whole
milliseconds, as Redis keeps it. A key with a deadline is expired lazily when a command
touches it (Redis's rule: expired when now > deadline), and actively by a bounded sweep
of a deadline heap run at every `process` call: the stack has no application timers, so
an idle server keeps expired keys in memory (never visible) until its next request.
Wall-clock time is needed only for EXAT/PXAT and the overflow checks Redis makes on
expiry times: ``epoch_ms`` maps the stack's clock to Unix time (taken at start-up).

Offloads are the listener's (``stack.listen``): ``offload_setup`` has the NIC complete
handshakes with SYN cookies (AccelTCP §4.1), ``offload_teardown`` has every accepted
connection offer its teardown to the NIC when the server closes it (§4.2) -- after the
client's FIN in the usual case, so from CLOSE-WAIT, the reply riding along. The server
reads out anything unread before it closes, so that a connection stays eligible (and is
never reset for unread data).

The package: `engine` (`KvEngine`, `KvSession`: commands and data), `pattern` (Redis
globs), `server` (`KvServer`: the stack-facing side, output back-pressure), `cli`
(`add_kv_arguments`, `build_kv_server`) and `load` (`KvLoad`).
"""

from .cli import add_kv_arguments, build_kv_server
from .engine import KV_DEFAULT_PORT, REDIS_VERSION, SERVER_VERSION, KvEngine, KvSession
from .load import KvLoad
from .pattern import compile_pattern
from .server import OUTPUT_PAUSE, QUERY_LIMIT, KvServer

__all__ = ["KvEngine", "KvSession", "KvServer", "KvLoad", "compile_pattern",
           "add_kv_arguments", "build_kv_server", "KV_DEFAULT_PORT", "REDIS_VERSION",
           "SERVER_VERSION", "OUTPUT_PAUSE", "QUERY_LIMIT"]
