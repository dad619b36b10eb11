"""A child process seen from tests and benchmarks: its output line by line, with a
deadline (``wait_line``), and a running ``acceltcp serve``'s statistics
(``fetch_stats``)."""

import json
import os
import select
import signal
import time


def wait_line(popen, stream, predicate, timeout=20.0, label=None):
    """Read lines of `stream` (a pipe of `popen`, raw fd reads: nothing is left in a
    Python buffer) until ``predicate(line)``; -> that line. AssertionError with the last
    lines seen if the process ends or `timeout` seconds pass first."""
    deadline = time.monotonic() + timeout
    seen = []
    fd = stream.fileno()
    buf = b""
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.05)
        if r:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                line = line.decode(errors="replace")
                seen.append(line)
                if predicate(line):
                    return line
        elif popen.poll() is not None:
            break
    raise AssertionError("%s: no expected line within %.0fs (exit %s): %s"
                         % (label or popen.args, timeout, popen.poll(), "\n".join(seen[-20:])))


def fetch_stats(popen, path, timeout=5.0):
    """SIGUSR1 to a running ``acceltcp serve --stats-file PATH`` (`popen`: anything with
    ``send_signal``): it rewrites the file (a NIC process's counters refreshed first);
    -> the JSON once the file has changed. TimeoutError if it has not within `timeout`,
    or at once if the process has ended (`popen.poll()`, when it has one)."""
    path = os.fspath(path)

    def mtime():
        try:
            return os.stat(path).st_mtime_ns
        except FileNotFoundError:
            return 0

    before = mtime()
    popen.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if mtime() != before:
            try:
                with open(path) as f:
                    return json.load(f)
            except ValueError:                      # being written: read again
                pass
        poll = getattr(popen, "poll", None)
        if poll is not None and poll() is not None:
            raise TimeoutError("serve ended (exit %s) before writing stats to %s"
                               % (poll(), path))
        time.sleep(0.02)
    raise TimeoutError("serve wrote no stats to %s within %gs of SIGUSR1" % (path, timeout))
