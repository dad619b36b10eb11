"""`peer pingpong` (the 64 B point of benchmarks/realnet.py, eval table2) on loopback,
against in-process echo servers: every reply is checked against its message, so a
server that alters a byte or closes early is counted as an error and fails the run."""

import json
import socket
import threading

from acceltcp.testbed import peer


def _server(transform):
    """A loopback server: each connection's bytes, passed through transform(data) ->
    bytes or None (None: close the connection), sent back. -> (port, stop)."""
    ls = socket.create_server(("127.0.0.1", 0))
    ls.settimeout(0.2)
    stop = threading.Event()

    def conn(s):
        with s:
            while not stop.is_set():
                d = s.recv(65536)
                if not d:
                    return
                out = transform(d)
                if out is None:
                    return
                s.sendall(out)

    def accept():
        while not stop.is_set():
            try:
                s, _ = ls.accept()
            except socket.timeout:
                continue
            threading.Thread(target=conn, args=(s,), daemon=True).start()
        ls.close()
    threading.Thread(target=accept, daemon=True).start()
    return ls.getsockname()[1], stop


def _run(capsys, port, *extra):
    rc = peer.main(["pingpong", "127.0.0.1", str(port), "--conns", "4", "--seconds", "0.3",
                    "--head", "GET / HTTP/1.1\\n", "--timeout", "5", *extra])
    return rc, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_pingpong_counts_round_trips_of_echoed_messages(capsys):
    port, stop = _server(lambda d: d)
    try:
        rc, res = _run(capsys, port)
    finally:
        stop.set()
    assert rc == 0 and res["errors"] == 0 and res["round_trips"] >= 4
    assert res["size"] == 64 and res["conns"] == 4


def test_pingpong_fails_on_an_altered_reply(capsys):
    def flip(d):
        return d if d.startswith(b"GET") else bytes([d[0] ^ 1]) + d[1:]
    port, stop = _server(flip)
    try:
        rc, res = _run(capsys, port)
    finally:
        stop.set()
    assert rc == 1 and res["errors"] == 4 and res["round_trips"] == 0


def test_pingpong_fails_when_the_server_closes(capsys):
    port, stop = _server(lambda d: d if d.startswith(b"GET") else None)
    try:
        rc, res = _run(capsys, port)
    finally:
        stop.set()
    assert rc == 1 and res["errors"] == 4
