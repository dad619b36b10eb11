"""The host secret every stack on this machine keys its ISNs and timestamp clocks with.

Theory of operation
-------------------
A stack numbers its connections with a keyed hash (`host.ports.InitialNumbers`): ISN =
a 4 µs clock + F(4-tuple, secret) (RFC 6528), TSval = a 1 ms clock + F(address pair,
secret) (RFC 7323 §7.1). Both clocks are the system's monotonic clock, so for one secret
the numbers of a 4-tuple only grow, whichever process sends them. A secret drawn per
process breaks that across processes: a new ``serve`` (or a restarted one) that reuses
a 4-tuple a kernel peer still holds in TIME-WAIT -- the peer closed first, as nginx does
behind the lb -- sends a SYN whose TSval and ISN are below the old connection's half of
the time, and the peer's TIME-WAIT refuses it (PAWS, RFC 6191) with at most a
rate-limited ACK: the connection waits for SYN retransmissions. Linux keys these
numbers with one secret per boot (net_secret); so does this module: `machine_secret`
creates 16 random bytes once under /run (a tmpfs: a new secret each boot), readable by
root only, and every stack of every later process reads the same.

Where /run cannot be written (not root), each process draws its own, as before.
"""

import os

__all__ = ["machine_secret", "SECRET_PATH"]

SECRET_PATH = "/run/acceltcp/secret"
SECRET_BYTES = 16


def machine_secret(path=SECRET_PATH):
    """The machine's stack secret (created on first use), or fresh random bytes when
    `path` can be neither read nor created."""
    try:
        with open(path, "rb") as f:
            secret = f.read()
        if len(secret) == SECRET_BYTES:
            return secret
    except OSError:
        pass
    secret = os.urandom(SECRET_BYTES)
    tmp = "%s.%d" % (path, os.getpid())
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secret)
        try:
            os.link(tmp, path)             # the first process to get here wins
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
        with open(path, "rb") as f:        # whoever won: the one every process uses
            kept = f.read()
        return kept if len(kept) == SECRET_BYTES else secret
    except OSError:
        return secret
