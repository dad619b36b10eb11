"""SIGTERM as an exception for a benchmark's ``main()``, so that its ``finally`` blocks
remove the namespaces and processes it made.

Only in the process that asked: a child forked meanwhile (pyroute2 opens its netns
sockets in forked children and ends them with SIGTERM) exits at once instead of running
the parent's code on from the fork. The previous handler is back when the returned
function is called: ``acceltcp eval`` runs the benchmarks in its own process."""

import os
import signal

__all__ = ["raise_on_sigterm"]


def raise_on_sigterm(exc=SystemExit):
    """Make SIGTERM raise ``exc(143)`` in this process -> a function that restores the
    previous handler."""
    owner = os.getpid()

    def handler(signum, frame):
        if os.getpid() != owner:
            os._exit(128 + signum)
        raise exc(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, previous)
