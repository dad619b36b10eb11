"""apps.lb configuration (TOML file, command-line overrides, errors that name the file
and the key), the balancing algorithms on their own, and the connect-timeout mapping."""

import argparse
import collections

import pytest

from acceltcp.apps import lb as lbmod
from acceltcp.apps.lb import (LbConfigError, add_lb_arguments, config_from_args, load_config,
                              main)
from acceltcp.tcp.config import TcpConfig

FULL = """\
[lb]
port = 8080
balance = "leastconn"
splice = true
splice_after = "response"
timeout_connect = 2
rewrite = { add_headers = { "X-Forwarded-For" = "$client_ip", "X-Via" = "lb $$1 $backend" }, \
set_headers = { "User-Agent" = "lb" }, del_headers = ["X-Secret"] }

[[backends]]
address = "198.18.0.1:8081"
name = "web1"
weight = 3

[[backends]]
address = "198.18.0.1:8082"

[[routes]]
prefix = "/admin"
inspect = true

[[routes]]
prefix = "/static/"
backends = ["web1"]
"""


def _file(tmp_path, text, name="lb.toml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_full_example(tmp_path):
    cfg = load_config(_file(tmp_path, FULL))
    assert (cfg.port, cfg.balance, cfg.splice, cfg.splice_after) == (8080, "leastconn", True,
                                                                     "response")
    assert cfg.timeout_connect == 2.0 and isinstance(cfg.timeout_connect, float)
    assert [(b.name, b.ip, b.port, b.weight) for b in cfg.backends] == [
        ("web1", "198.18.0.1", 8081, 3), ("198.18.0.1:8082", "198.18.0.1", 8082, 1)]
    assert [(r.prefix, r.inspect, r.backends) for r in cfg.routes] == [
        ("/admin", True, ()), ("/static/", False, ("web1",))]
    assert cfg.rewrite.add == (("X-Forwarded-For", "$client_ip"), ("X-Via", "lb $$1 $backend"))
    assert cfg.rewrite.set == (("User-Agent", "lb"),) and cfg.rewrite.delete == ("X-Secret",)
    text = cfg.describe()
    assert "web1" in text and "route /admin: inspect" in text and "X-Secret" in text


@pytest.mark.parametrize("text,where,what", [
    ("[lb]\nbalanse = 'leastconn'\n", "[lb]", "unknown key 'balanse'; did you mean 'balance'?"),
    ("[lb]\nbalance = 'random'\n", "[lb] balance", "must be one of roundrobin, leastconn"),
    ("[lb]\nport = 0\n", "[lb] port", "must be in 1..65535, not 0"),
    ("[lb]\nport = '80'\n", "[lb] port", "must be an integer"),
    ("[lb]\nsplice = 1\n", "[lb] splice", "must be true or false"),
    ("[lb]\ntimeout_server = 0\n", "[lb] timeout_server", "must be in"),
    ("[backend]\naddress = '1.2.3.4:1'\n", "top level", "did you mean 'backends'?"),
    ("[[backends]]\naddress = 'web:80'\n", "backends[0].address",
     "'web' is not an IPv4 address (the stack has no resolver)"),
    ("[[backends]]\naddress = '1.2.3.4'\n", "backends[0].address", "is not IPv4:PORT"),
    ("[[backends]]\naddress = '1.2.3.4:99999'\n", "backends[0].address", "is not 1..65535"),
    ("[[backends]]\nname = 'x'\n", "backends[0]", "missing key 'address'"),
    ("[[backends]]\naddress = '1.2.3.4:1'\nweight = 0\n", "backends[0].weight", "1..1000"),
    ("[[backends]]\naddress = '1.2.3.4:1'\n[[backends]]\naddress = '1.2.3.4:1'\n",
     "backends[1].address", "duplicate backend address"),
    ("[[backends]]\naddress = '1.2.3.4:1'\nport = 3\n", "backends[0]", "unknown key 'port'"),
    ("[[routes]]\nprefix = 'admin'\ninspect = true\n", "routes[0].prefix",
     "must be a path prefix starting with '/'"),
    ("[[routes]]\nprefix = '/a'\n", "routes[0]", "the route changes nothing"),
    ("[[routes]]\nprefix = '/a'\nbackends = ['nope']\n", "routes[0].backends",
     "'nope' is not a backend name"),
    ("[lb]\nrewrite = { add_headers = { 'X-A' = '$clientip' } }\n",
     "[lb] rewrite.add_headers.X-A", "unknown variable $clientip"),
    ("[lb]\nrewrite = { add_headers = { 'X A' = 'v' } }\n", "[lb] rewrite.add_headers.X A",
     "not a valid header name"),
    ("[lb]\nrewrite = { add_headers = { 'X-A' = \"a\\nb\" } }\n", "[lb] rewrite.add_headers.X-A",
     "cannot contain CR, LF or NUL"),
    ("[lb]\nrewrite = { remove = ['x'] }\n", "[lb] rewrite", "unknown key 'remove'"),
])
def test_errors_name_file_and_key(tmp_path, text, where, what):
    path = _file(tmp_path, text)
    with pytest.raises(LbConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert msg.startswith("%s: %s: " % (path, where)), msg
    assert what in msg


def test_unreadable_and_invalid_toml(tmp_path):
    with pytest.raises(LbConfigError, match=r"nope\.toml: cannot read: No such file"):
        load_config(str(tmp_path / "nope.toml"))
    path = _file(tmp_path, "[lb\nport = 1\n")
    with pytest.raises(LbConfigError, match=r"lb\.toml: invalid TOML: .*line 1"):
        load_config(path)


def _args(argv, parser=None):
    p = parser or argparse.ArgumentParser()
    add_lb_arguments(p)
    return p.parse_args(argv)


def test_command_line_overrides(tmp_path):
    path = _file(tmp_path, FULL.replace('backends = ["web1"]', 'inspect = true'))
    cfg = config_from_args(_args(["--config", path, "--backend", "10.0.0.1:80", "--backend",
                                  "10.0.0.2:81", "--balance", "urihash", "--no-splice",
                                  "--port", "9000"]))
    assert [(b.ip, b.port, b.name) for b in cfg.backends] == [
        ("10.0.0.1", 80, "10.0.0.1:80"), ("10.0.0.2", 81, "10.0.0.2:81")]
    assert (cfg.balance, cfg.splice, cfg.port) == ("urihash", False, 9000)
    cfg = config_from_args(_args(["--backend", "10.0.0.1:80"]))
    assert cfg.source == "command line" and cfg.port == 8080 and cfg.splice
    with pytest.raises(LbConfigError, match="no backends: give --config FILE"):
        config_from_args(_args([]))
    with pytest.raises(LbConfigError, match="--backend: 'x:1': 'x' is not an IPv4"):
        config_from_args(_args(["--backend", "x:1"]))
    with pytest.raises(LbConfigError, match=r"routes\[1\]\.backends: 'web1' is not a backend: "
                                            r"--backend replaced"):
        config_from_args(_args(["--config", _file(tmp_path, FULL, "b.toml"),
                                "--backend", "10.0.0.1:80"]))


def test_arguments_fit_a_command_that_has_port_already(capsys):
    # what `acceltcp serve APP` gives each app: a subparser with --port and --backlog
    p = argparse.ArgumentParser(prog="acceltcp serve lb", description="lb.")
    p.add_argument("--port", type=int, default=None)
    p.add_argument("--backlog", type=int, default=4096)
    args = _args(["--backend", "10.0.0.1:80", "--port", "81"], p)
    assert config_from_args(args).port == 81
    with pytest.raises(SystemExit):
        p.parse_args(["--help"])
    out = capsys.readouterr().out
    assert "load balancer (lb)" in out and "routes marked inspect" in out
    assert '\n  balance = "roundrobin"          # | "leastconn" | "urihash"\n' in out
    assert "--no-splice" in out and "--backend IP:PORT" in out


def test_check_command(tmp_path, capsys):
    assert main(["--config", _file(tmp_path, FULL)]) == 0
    out = capsys.readouterr().out
    assert "leastconn" in out and "web1" in out
    assert main(["--config", _file(tmp_path, "[lb]\nport = -1\n", "bad.toml")]) == 2
    err = capsys.readouterr().err
    assert "bad.toml: [lb] port: must be in 1..65535" in err


# ---------------------------------------------------------------------- balancing
def _pool(n, weights=None):
    cfgs = [lbmod.BackendConfig("10.0.0.%d" % (i + 1), 80, weight=(weights or [1] * n)[i])
            for i in range(n)]
    return [lbmod._Backend(c) for c in cfgs]


def test_roundrobin_alternates_and_weights():
    pool = _pool(3)
    rr = lbmod._RoundRobin(pool)
    assert [rr.pick(b"/", 0, None) for _ in range(6)] == pool * 2
    pool = _pool(2, [3, 1])
    rr = lbmod._RoundRobin(pool)
    seq = [rr.pick(b"/", 0, None) for _ in range(8)]
    assert seq.count(pool[0]) == 6 and seq.count(pool[1]) == 2
    assert seq[:4] != [pool[0]] * 3 + [pool[1]]          # smooth: interleaved, not bursts
    pool[0].down_until = 10.0
    assert {rr.pick(b"/", 5.0, None) for _ in range(4)} == {pool[1]}
    assert rr.pick(b"/", 5.0, (pool[1],)) is None
    assert rr.pick(b"/", 10.0, (pool[1],)) is pool[0]       # back up once its time is over


def test_leastconn():
    pool = _pool(3, [1, 1, 2])
    lc = lbmod._LeastConn(pool)
    pool[0].active, pool[1].active, pool[2].active = 2, 1, 3
    assert lc.pick(b"/", 0, None) is pool[1]                 # 1/1 < 3/2 < 2/1
    pool[1].active = 2
    assert lc.pick(b"/", 0, None) is pool[2]                 # 3/2 < 2/1
    for be in pool:
        be.active = 0
    seen = [lc.pick(b"/", 0, None) for _ in range(3)]
    assert set(seen) == set(pool)                            # ties go in turn
    assert lc.pick(b"/", 0, tuple(pool)) is None


def test_urihash_stable_spread_and_minimal_disruption():
    pool = _pool(4)
    uh = lbmod._UriHash(pool)
    paths = [b"/obj/%d" % i for i in range(400)]
    first = {p: uh.pick(p, 0, None) for p in paths}
    assert all(uh.pick(p, 0, None) is first[p] for p in paths)
    counts = collections.Counter(first.values())
    assert len(counts) == 4 and min(counts.values()) > 60
    pool[2].down_until = 1.0
    moved = {p: uh.pick(p, 0, None) for p in paths}
    for p in paths:
        if first[p] is not pool[2]:
            assert moved[p] is first[p]                      # only the down one's paths move
        else:
            assert moved[p] is not pool[2]
    again = lbmod._UriHash(_pool(4))                         # same addresses: same mapping
    assert [again.pick(p, 0, None).ip for p in paths] == [first[p].ip for p in paths]
    weighted = _pool(2, [3, 1])
    wu = lbmod._UriHash(weighted)
    c = collections.Counter(wu.pick(p, 0, None) for p in paths)
    assert 0.65 < c[weighted[0]] / len(paths) < 0.85


@pytest.mark.parametrize("timeout", [0.3, 1.0, 3.0, 10.0])
def test_connect_timeout_is_syn_retries(timeout):
    base = TcpConfig()
    cfg = lbmod._connect_config(base, timeout)
    r = cfg.syn_retries
    total = cfg.initial_rto * ((1 << (r + 1)) - 1)
    assert abs(total - timeout) < 1e-9 or (r == 0 and cfg.initial_rto == base.min_rto)
    assert cfg.initial_rto >= base.min_rto and base.syn_retries == 6
