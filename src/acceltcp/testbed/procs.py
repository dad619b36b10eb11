"""Reading a child process's output line by line, with a deadline (tests, benchmarks)."""

import os
import select
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
