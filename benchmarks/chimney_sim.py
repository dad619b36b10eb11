"""TCP Chimney in the simulator: host CPU per byte with and without the NIC running the
data path (``python benchmarks/chimney_sim.py [MiB]``, PYTHONPATH=src).

One bulk transfer of MiB each way (default 64) between a client stack (a) and a server
stack (b) behind the specification NIC (``nic.dataplane`` in ``SimNicDevice``), over a
1 Gbit/s link with 100 µs delay, on the simulator's virtual clock. ``host`` is the
server's offloads as ``serve --offload chimney`` would set them: none, or chimney (the
accepted connection's data path on the NIC until the client's FIN). Measured, in this
one process: the CPU time spent inside the server stack's entry points (frames in,
timers, the app's send/recv: ``host_s``) and inside the NIC's dataplane (``nic_s``),
per GiB moved (both ways counted), and the frames crossing the host port per MiB.
Python CPU time, so a ratio, not an absolute figure, is what carries over.
"""

import asyncio
import functools
import hashlib
import json
import random
import sys
import time

from acceltcp.host.aio import open_connection, start_server
from acceltcp.io.sim import SimLoop
from acceltcp.tcp.config import TcpConfig
from acceltcp.testbed.simnet import make_pair

MiB = 1 << 20


def _timed(obj, name, acc):
    f = getattr(obj, name)

    @functools.wraps(f)
    def w(*a, **k):
        t = time.process_time()
        try:
            return f(*a, **k)
        finally:
            acc[0] += time.process_time() - t
    setattr(obj, name, w)


async def _exchange(reader, writer, payload):
    async def pull():
        h = hashlib.sha256()
        n = 0
        while chunk := await reader.read(1 << 20):
            h.update(chunk)
            n += len(chunk)
        return n, h.hexdigest()

    async def push():
        for i in range(0, len(payload), 1 << 16):
            writer.write(payload[i:i + (1 << 16)])
            await writer.drain()
        writer.write_eof()
    return (await asyncio.gather(pull(), push()))[0]


def run(nbytes, chimney, seed=1):
    rng = random.Random(seed)
    up, down = rng.randbytes(nbytes), rng.randbytes(nbytes)
    cfg = TcpConfig()
    host, nic = [0.0], [0.0]
    got = {}
    with SimLoop(seed) as loop:
        net = make_pair(loop, config_a=cfg, config_b=cfg, nic_b=True, seed=seed,
                        bandwidth_bps=1e9, delay=100e-6, queue_limit=1000)
        b = net.b
        b.chimney.auto = chimney
        for name in ("receive_frame", "on_timer", "send", "recv"):
            _timed(b, name, host)
        dp = net.nic_b.dataplane
        for name in ("process", "on_timer"):
            _timed(dp, name, nic)
        hp0 = dict(net.nic_b.host_port)

        async def server(reader, writer):
            got["server"] = await _exchange(reader, writer, down)
            writer.close()

        async def main():
            await start_server(b, server, 5001)
            reader, writer = await open_connection(net.a, "198.18.0.2", 5001)
            got["client"] = await _exchange(reader, writer, up)
            writer.close()
            await writer.wait_closed()
            await asyncio.sleep(0.5)

        loop.run(main(), timeout=36000)
        hp = {k: v - hp0.get(k, 0) for k, v in net.nic_b.host_port.items()}
        c = dict(b.counters)
    ok = got["server"] == (nbytes, hashlib.sha256(up).hexdigest()) and \
        got["client"] == (nbytes, hashlib.sha256(down).hexdigest())
    gib = 2 * nbytes / (1 << 30)
    frames = hp["frames_to_host"] + hp["frames_from_host"]
    return {"chimney": chimney, "mib_each_way": nbytes // MiB, "byte_exact": ok,
            "host_s_per_gib": round(host[0] / gib, 3), "nic_s_per_gib": round(nic[0] / gib, 3),
            "host_port_frames_per_mib": round(frames / (2 * nbytes / MiB), 1),
            "offloaded": c.get("chimney_accepted", 0)}


def main():
    mib = int(sys.argv[1]) if len(sys.argv) > 1 else 64
    base = run(mib * MiB, False)
    ch = run(mib * MiB, True)
    print(json.dumps(base))
    print(json.dumps(ch))
    print("host CPU per byte: %.1fx less with chimney (NIC: %.2f s/GiB)" % (
        base["host_s_per_gib"] / max(ch["host_s_per_gib"], 1e-9), ch["nic_s_per_gib"]))


if __name__ == "__main__":
    main()
