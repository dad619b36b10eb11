"""``acceltcp load {echo,kv}``: the apps' load clients as a command (the paper's msg_test).

    run.py         LoadRun (one run on either loop) and the latency histogram
    servercore.py  ServerCore: the simulated server host's CPU core
    runs.py        a run in the simulator or on the TAP testbed
    summary.py     what a run reports, printed or as JSON; the exit status
    command.py     the options and `cmd_load`


    acceltcp load echo --sim                                  # 5 simulated seconds
    acceltcp load echo --sim --nic --offload setup,teardown --transactions 20000
    acceltcp load kv --sim --per-conn 0 --duration 2 --json kv.json
    acceltcp load echo --sim --server-cpu fixed:rx=8000 -n 5000  # same result every run
    acceltcp load echo --sim --cores 4 --nic --offload setup,teardown  # 4 simulated cores
    ip netns exec atcp-peer python -m acceltcp.testbed.peer server echo --port 7 &
    acceltcp load echo 198.18.0.1 7 --duration 10             # the stack as client (root)
    ip netns exec atcp-peer redis-server --bind 0.0.0.0 --protected-mode no --save '' &
    acceltcp load kv 198.18.0.1                               # USR against real Redis

Theory of operation
-------------------
The workload is an application's own load client, unchanged: `apps.echo.EchoLoad`
(``--size``-byte messages echoed back) or `apps.kv.KvLoad` (the Facebook USR workload:
99.8 % GET, 0.2 % SET, 16-byte keys, 2-byte values, every key written first with MSET
batches, every reply checked against what was written). Both keep ``--concurrency``
connections busy, closed loop, each carrying ``--per-conn`` transactions (1: one
transaction per connection, the paper's short-lived case; 0: persistent) and opening the
next connection as one finishes. The client runs on the user-level stack in both modes:

* ``--sim``: everything in one process on a `io.sim.SimLoop` (virtual time). The client
  is stack a of a `testbed.simnet.make_pair`-like pair (`_sim_net`), the server app (`EchoServer`, `KvServer`) runs on
  stack b -- "the host" -- optionally behind the simulated NIC (``--nic``) with the
  listener's ``--offload setup,teardown`` (SYN cookies, teardown; AccelTCP §4.1-4.2).
  The server host is one CPU core in virtual time: `ServerCore` sits between the
  server stack and its device and models it -- a frame arriving while the core is busy
  waits in an RX ring until the CPU time the previous work took has passed on the
  virtual clock. What that work took is ``--server-cpu``'s model (`eval.cost`):
  ``charged`` (the default, for measurements) is the CPU the server's runner measures
  (``time.process_time`` around every frame and timer, application included, the NIC's
  work not, as `eval.echo_sim` does); ``fixed[:rx=NS,tx=NS,timer=NS,conn=NS]`` is a
  fixed price per frame received and sent, per timer entry and per accepted connection,
  so that the run is a pure function of ``--seed`` and the options, whatever else the
  machine is doing (tests). ``--cores N``: the server host is N stacks behind one
  simulated NIC that steers connections by an RSS hash (`testbed.simcores`), each
  stack on its own `ServerCore`, so the cores work in parallel in virtual time (kv:
  the N servers share one engine). The client and the network cost nothing, so the server is
  the bottleneck (as in the paper's testbed, where many client machines load one server
  core) and transactions per simulated second are what this Python stack sustains on
  one core (charged) or what the model says (fixed): what an offload saves in CPU shows
  up as throughput. ``--server-cpu free``: processing takes no virtual time (the CPU is
  still measured and reported), the rate is the simulated link's (hundreds of thousands
  of transactions per simulated second, each costing real CPU to simulate: bound such
  runs with --transactions or a short --duration). The summary gives the server host's CPU µs and frames per transaction.
  ``--cpu-by-kind`` also splits the server's measured CPU by category (setup, teardown,
  data, nic, l2, timers, app: `host.runner`), per transaction and as shares, whatever
  the core model; the accounting costs ~5-10 % more measured CPU, charged like the rest.
* without ``--sim``: the stack is a client on the TAP testbed (`serve.common.tap_host`,
  needs root and ``acceltcp testbed up``) against a server in the peer namespace: the
  kernel's (``python -m acceltcp.testbed.peer server echo --port 7``, ``redis-server``)
  or another stack's. Real time; the summary gives the client stack's CPU per transaction.

`LoadRun` drives a run the same way on either loop: after the kv keyspace is populated
(not measured), it takes a baseline and schedules a report every ``--interval`` seconds
of loop time (simulated seconds in the simulator): transactions and errors in the
interval, the rate, the mean latency. It stops issuing at ``--duration`` or after
``--transactions`` (whichever comes first: both loads issue exactly ``total``
requests), on SIGINT/SIGTERM, or when the load ends by itself; then drains: requests in
flight are answered and counted, connections close, for at most ``DRAIN_S`` seconds --
what is still open after that counts as ``unfinished at the end``. Elapsed time ends at
the later of the stop and the last answer. Connection errors (refused, reset, timeout,
closed before the reply, connect() failures) are counted by kind, never raised; slots
left empty by failed connects are refilled every ``REFILL_S``. Latencies go into a
log-bucketed histogram (0.5 % buckets: bounded memory, percentiles within 0.5 %).

Exit status: 0 when transactions completed without any error, 1 otherwise (the summary
says why), 2 for bad options or a testbed that cannot be set up.
"""

from .command import add_load_parser, cmd_load
from .run import DRAIN_S, LatencyHistogram, LoadRun
from .servercore import ServerCore

__all__ = ["LoadRun", "LatencyHistogram", "ServerCore", "cmd_load", "add_load_parser",
           "DRAIN_S"]
