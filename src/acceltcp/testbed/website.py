"""The SpecWeb-like web site the load balancer is tested and measured with, and the
nginx configuration that serves it (tests/net/test_lb_net.py, benchmarks/apps.py).

File sizes follow the paper's SpecWeb file set: 30 B to 5,670 B, mean about 728 B
(lognormal, clipped; the smallest and largest sizes always present). Contents are
pseudo-random and deterministic for a seed, so a client can check every byte by sha256.
nginx runs as one process (``master_process off``: a kill ends the whole backend) as
root (pytest's temporary directories are not readable by nginx's usual user).
"""

import hashlib
import os
import random

__all__ = ["file_sizes", "make_site", "nginx_conf", "backend_body"]

NGINX_COMMON = """
master_process off;
user root;
pid %(d)s/nginx.pid;
error_log %(d)s/error.log;
events { worker_connections 8192; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path %(d)s;
    proxy_temp_path %(d)s;
    fastcgi_temp_path %(d)s;
    uwsgi_temp_path %(d)s;
    scgi_temp_path %(d)s;
%(body)s
}
"""

BACKEND_BODY = """
    sendfile off;
    server {
%(listen)s
        root %(www)s;
        default_type application/octet-stream;
    }
"""


def file_sizes(n, seed=7):
    """SpecWeb-like sizes: 30 B .. 5,670 B, mean about 728 B."""
    rnd = random.Random(seed)
    sizes = [min(5670, max(30, int(rnd.lognormvariate(6.45, 0.95)))) for _ in range(n)]
    sizes[0], sizes[1] = 30, 5670
    return sizes


def make_site(directory, n=60, seed=11):
    """Write the n files f0.bin .. into `directory`; -> {name: (size, sha256 hex)}."""
    os.makedirs(directory, exist_ok=True)
    rnd = random.Random(seed)
    files = {}
    for i, size in enumerate(file_sizes(n)):
        data = rnd.randbytes(size)
        name = "f%d.bin" % i
        with open(os.path.join(directory, name), "wb") as f:
            f.write(data)
        files[name] = (size, hashlib.sha256(data).hexdigest())
    return files


def nginx_conf(workdir, body):
    """Write `workdir`/nginx.conf around an http-block `body`; -> its path."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "nginx.conf")
    with open(path, "w") as f:
        f.write(NGINX_COMMON % {"d": workdir, "body": body})
    return path


def backend_body(ports, www):
    """An http-block body: serve `www` on each of `ports` (all addresses)."""
    listen = "\n".join("        listen %d backlog=4096;" % p for p in ports)
    return BACKEND_BODY % {"listen": listen, "www": www}
