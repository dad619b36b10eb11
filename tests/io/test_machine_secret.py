"""serve/secret.py: one stack secret per machine, made once, root's only; a fresh one
per process where it cannot be kept."""

import os
import stat

from acceltcp.host.ports import InitialNumbers
from acceltcp.serve.secret import SECRET_BYTES, machine_secret


def test_made_once_and_kept(tmp_path):
    path = tmp_path / "run" / "acceltcp" / "secret"
    first = machine_secret(str(path))
    assert len(first) == SECRET_BYTES
    assert machine_secret(str(path)) == first == path.read_bytes()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert os.listdir(path.parent) == ["secret"]          # no temporary file left


def test_a_secret_that_cannot_be_kept_is_drawn_per_call(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_bytes(b"x")
    a = machine_secret(str(blocker / "secret"))           # its directory is a file
    b = machine_secret(str(blocker / "secret"))
    assert len(a) == len(b) == SECRET_BYTES and a != b
    short = tmp_path / "short"
    short.write_bytes(b"123")
    assert len(machine_secret(str(short))) == SECRET_BYTES
    assert short.read_bytes() == b"123"                   # left as it was


def test_one_secret_numbers_a_4_tuple_upward_across_stacks():
    """Two stacks (processes) with the machine's secret: the later one's ISN and TSval
    for the same 4-tuple and peer are above the earlier one's, as a peer's TIME-WAIT
    requires (RFC 6191); the TS offset is the same."""
    secret = os.urandom(SECRET_BYTES)
    ip, peer = bytes([198, 18, 0, 2]), bytes([198, 18, 0, 1])
    old, new = InitialNumbers(secret, ip), InitialNumbers(secret, ip)
    assert new.ts_offset(peer) == old.ts_offset(peer)
    t = 1000.0
    a = old.isn(ip, 40404, peer, 80, t)
    b = new.isn(ip, 40404, peer, 80, t + 0.5)
    assert 0 < (b - a) & 0xFFFFFFFF < 0x80000000
