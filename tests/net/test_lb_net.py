"""The HTTP load balancer on the TAP testbed, between real tools: two nginx backends in
the peer namespace serving a SpecWeb-like file set, wrk and ab as clients (persistent
and one connection per request), splice on and off; curl fetches every file of a sample
and its sha256 must match; a backend killed mid-run costs only its in-flight requests."""

import hashlib
import random
import re
import signal
import subprocess
import time

import pytest

from .conftest import PEER_IP, STACK_IP

NEEDS_ROOT = True
PORT = 8080
BACKENDS = (8081, 8082)
NFILES = 60


def _file_sizes(n, seed=7):
    """SpecWeb-like sizes: 30 B .. 5,670 B, mean about 728 B (the paper's file set)."""
    rnd = random.Random(seed)
    sizes = [min(5670, max(30, int(rnd.lognormvariate(6.45, 0.95)))) for _ in range(n)]
    sizes[0], sizes[1] = 30, 5670
    return sizes


@pytest.fixture
def site(bed, tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    digests = {}
    rnd = random.Random(11)
    for i, size in enumerate(_file_sizes(NFILES)):
        data = rnd.randbytes(size)
        (www / ("f%d.bin" % i)).write_bytes(data)
        digests["f%d.bin" % i] = hashlib.sha256(data).hexdigest()
    sizes = [len((www / name).read_bytes()) for name in digests]
    assert 600 <= sum(sizes) / len(sizes) <= 860 and min(sizes) == 30 and max(sizes) == 5670
    procs = {}
    for port in BACKENDS:
        d = tmp_path / ("nginx%d" % port)
        d.mkdir()
        conf = d / "nginx.conf"
        conf.write_text("""
master_process off;
user root;
pid %(d)s/nginx.pid;
error_log %(d)s/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile off;
    keepalive_requests 100000;
    client_body_temp_path %(d)s;
    proxy_temp_path %(d)s;
    fastcgi_temp_path %(d)s;
    uwsgi_temp_path %(d)s;
    scgi_temp_path %(d)s;
    server {
        listen %(port)d backlog=4096;
        root %(www)s;
        default_type application/octet-stream;
    }
}
""" % {"d": d, "port": port, "www": www})
        # one process (no master/worker pair): SIGKILL ends the whole backend
        p = bed.popen(["nginx", "-c", str(conf), "-g", "daemon off;"],
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs[port] = p
    # both answer before the tests start (on loopback: the TAP's address appears with
    # the stack)
    for port in BACKENDS:
        deadline = time.monotonic() + 10
        while True:
            r = bed.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                         "http://127.0.0.1:%d/f0.bin" % port], check=False)
            if r.stdout == "200":
                break
            assert time.monotonic() < deadline, "nginx on %d did not start" % port
            time.sleep(0.1)
    return {"digests": digests, "procs": procs}


def _lb(bed, tmp_path, splice):
    extra = ["--backend", "%s:%d" % (PEER_IP, BACKENDS[0]),
             "--backend", "%s:%d" % (PEER_IP, BACKENDS[1])]
    if splice:
        extra += ["--nic", "inline", "--offload", "setup,splice"]
    # splicing translates full-checksum frames: TAP offloads off (docs/nic.md)
    return bed.serve("lb", PORT, offload=not splice, stats=tmp_path / "lb.json",
                     extra=extra)


def _wrk(bed, path, close, seconds=3, conns=16):
    argv = ["wrk", "-t", "1", "-c", str(conns), "-d", "%ds" % seconds, "--latency"]
    if close:
        argv += ["-H", "Connection: close"]
    r = bed.run(argv + ["http://%s:%d/%s" % (STACK_IP, PORT, path)], timeout=120)
    out = r.stdout
    m = re.search(r"(\d+) requests in", out)
    assert m, out
    return int(m.group(1)), out


def _ab(bed, path, keepalive, n=2000, conc=16):
    argv = ["ab", "-q", "-n", str(n), "-c", str(conc), "-r"]
    if keepalive:
        argv.append("-k")
    r = bed.run(argv + ["http://%s:%d/%s" % (STACK_IP, PORT, path)], timeout=180)
    out = r.stdout
    complete = int(re.search(r"Complete requests:\s+(\d+)", out).group(1))
    failed = int(re.search(r"Failed requests:\s+(\d+)", out).group(1))
    non2xx = re.search(r"Non-2xx responses:\s+(\d+)", out)
    return complete, failed, int(non2xx.group(1)) if non2xx else 0, out


def _curl_sample(bed, digests, names, tmp_path):
    for name in names:
        out = tmp_path / ("got-" + name)
        bed.run(["curl", "-s", "-f", "-o", str(out), "http://%s:%d/%s" % (STACK_IP, PORT, name)])
        assert hashlib.sha256(out.read_bytes()).hexdigest() == digests[name], name


@pytest.mark.parametrize("splice", [False, True], ids=["host-relay", "spliced"])
def test_wrk_ab_curl_through_lb(bed, tmp_path, site, splice):
    srv = _lb(bed, tmp_path, splice)
    digests = site["digests"]
    _curl_sample(bed, digests, sorted(digests)[:20] + ["f1.bin"], tmp_path)
    for close in (False, True):
        n, out = _wrk(bed, "f5.bin", close)
        assert n > 100, out
        assert "Non-2xx" not in out and "Socket errors" not in out, out
    for keepalive in (False, True):
        complete, failed, non2xx, out = _ab(bed, "f1.bin", keepalive)
        assert complete == 2000 and failed == 0 and non2xx == 0, out
    st = srv.stop()
    app = st["app_stats"]
    # wrk resets the connections it has open when its time is up (16 per run)
    assert st["counters"]["conns_reset"] <= 2 * 16
    if splice:
        assert app["spliced"] > 0 and app.get("splice_failed", 0) == 0, app
        assert st["nic"]["counters"]["splice_frames"] > 0
    else:
        assert app.get("spliced", 0) == 0, app


@pytest.mark.parametrize("splice", [False, True], ids=["host-relay", "spliced"])
def test_backend_killed_mid_run(bed, tmp_path, site, splice):
    srv = _lb(bed, tmp_path, splice)
    wrk = bed.popen(["wrk", "-t", "1", "-c", "16", "-d", "4s", "-H", "Connection: close",
                     "http://%s:%d/f3.bin" % (STACK_IP, PORT)], stdout=subprocess.PIPE)
    time.sleep(1.5)
    site["procs"][BACKENDS[0]].p.send_signal(signal.SIGKILL)
    wrk.p.wait(30)
    out = wrk.p.stdout.read()
    total = int(re.search(r"(\d+) requests in", out).group(1))
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                     out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    failed = (sum(map(int, errs.groups())) if errs else 0) + \
        (int(non2xx.group(1)) if non2xx else 0)
    # only what was in flight at the kill failed; the rest went to the other backend
    assert total > 200 and failed <= 16 + 16, out
    # and afterwards everything is served by the survivor
    _curl_sample(bed, site["digests"], sorted(site["digests"])[:10], tmp_path)
    complete, failed, non2xx, out = _ab(bed, "f2.bin", False, n=500)
    assert complete == 500 and failed == 0 and non2xx == 0, out
    st = srv.stop()
    be = st["app_stats"]["backends"][0]
    assert be["failures"] + be["connect_failures"] >= 1 and not be["up"], be
