"""KvEngine against the real thing: the same requests to a redis-server (Debian's
redis-server package, started here on a free local port) and to the engine, replies
compared byte for byte. Random command sequences over a few keys and awkward values,
random KEYS patterns, and a list of raw inputs (inline quoting, protocol errors).
The reference runs with one database, as the engine has. Skipped without
redis-server (`make test` installs it as root: system-deps)."""

import shutil
import socket
import subprocess
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from acceltcp.apps.kv import KvEngine
from acceltcp.apps.resp import ReplyParser, encode_command

REDIS_SERVER = shutil.which("redis-server")
pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server not installed")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Redis:
    """A connection that returns each batch's raw reply bytes."""

    def __init__(self, port):
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)

    def request(self, data, n):
        """Send `data`, read until `n` replies are complete (or EOF) -> (bytes, eof)."""
        self.sock.sendall(data)
        parser = ReplyParser()
        got = 0
        raw = b""
        while got < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                return raw, True
            raw += chunk
            got += len(parser.feed(chunk))
        return raw, False

    def close(self):
        self.sock.close()


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory):
    port = _free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen([REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", str(workdir),
                             "--protected-mode", "no", "--databases", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                r = Redis(port)
                if r.request(b"PING\r\n", 1)[0] == b"+PONG\r\n":
                    r.close()
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail("redis-server did not start")
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def redis(redis_port):
    r = Redis(redis_port)
    yield r
    r.close()


@pytest.fixture(scope="module")
def engine():
    return KvEngine(time.monotonic)


def same(redis, engine, requests, sess=None):
    """Run `requests` (a list of argument lists) on both, pipelined; assert equal bytes
    (KEYS replies: equal as sets, their order is the hash table's)."""
    data = b"".join(encode_command(*r) for r in requests)
    theirs, _ = redis.request(data, len(requests))
    ours = engine.process(sess or engine.open_session(), data)
    if not any(r[0].upper() == b"KEYS" for r in requests):
        assert ours == theirs, (requests, ours, theirs)
        return
    a, b = ReplyParser().feed(ours), ReplyParser().feed(theirs)
    for r, x, y in zip(requests, a, b):
        if r[0].upper() == b"KEYS" and isinstance(x, list) and isinstance(y, list):
            x.sort()
            y.sort()
    assert a == b and [type(x) for x in a] == [type(y) for y in b], (requests, ours, theirs)


# ---------------------------------------------------------------------- random sequences
KEYS = st.sampled_from([b"a", b"b", b"n", b""])
VALUES = st.sampled_from([b"1", b"-1", b"0", b"01", b"-0", b"+1", b" 1", b"1.5", b"x", b"",
                          b"9223372036854775807", b"-9223372036854775808",
                          b"9223372036854775806", b"-9223372036854775807", b"100"])
TTLS = st.sampled_from([b"100", b"200", b"0", b"-1", b"x", b"9223372036854775807",
                        b"9223372036854775", b"9223372036854"])
SET_OPTS = st.lists(st.sampled_from([[b"NX"], [b"XX"], [b"GET"], [b"KEEPTTL"],
                                     [b"EX", b"100"], [b"PX", b"200000"], [b"EX"],
                                     [b"ex", b"0"], [b"EX", b"x"], [b"FOO"]]), max_size=3)
EXPIRE_OPTS = st.lists(st.sampled_from([b"NX", b"XX", b"GT", b"LT", b"FOO"]), max_size=2)


def _cmd(draw):
    k = draw(KEYS)
    kind = draw(st.integers(0, 19))
    if kind == 0:
        return [b"SET", k, draw(VALUES)] + [x for opt in draw(SET_OPTS) for x in opt]
    if kind == 1:
        return [b"GET", k]
    if kind == 2:
        return [b"DEL"] + draw(st.lists(KEYS, min_size=1, max_size=3))
    if kind == 3:
        return [b"EXISTS"] + draw(st.lists(KEYS, min_size=1, max_size=3))
    if kind == 4:
        return [draw(st.sampled_from([b"INCR", b"DECR", b"incr"])), k]
    if kind == 5:
        return [draw(st.sampled_from([b"INCRBY", b"DECRBY"])), k, draw(VALUES)]
    if kind == 6:
        return [b"MGET"] + draw(st.lists(KEYS, min_size=1, max_size=3))
    if kind == 7:
        pairs = [x for _ in range(draw(st.integers(1, 2))) for x in (draw(KEYS), draw(VALUES))]
        return [b"MSET"] + pairs + draw(st.sampled_from([[], [b"odd"]]))
    if kind == 8:
        return [draw(st.sampled_from([b"EXPIRE", b"PEXPIRE"])), k, draw(TTLS)] + \
            draw(EXPIRE_OPTS)
    if kind == 9:
        return [b"TTL", k]
    if kind == 10:
        return [b"KEYS", draw(st.sampled_from([b"*", b"?", b"[ab]", b"n*", b"[^a]", b""]))]
    if kind == 11:
        return [b"DBSIZE"]
    if kind == 12:
        return [b"ECHO", draw(VALUES)]
    if kind == 13:
        return [b"PING"] + draw(st.lists(VALUES, max_size=2))
    if kind == 14:
        return [b"SELECT", draw(st.sampled_from([b"0", b"1", b"16", b"x", b"-1"]))]
    if kind == 15:
        return draw(st.sampled_from([[b"GET"], [b"GET", k, k], [b"SET", k], [b"TTL"],
                                     [b"INCRBY", k], [b"EXPIRE", k], [b"MGET"], [b"DEL"]]))
    if kind == 16:
        return [b"NOPE", k, draw(VALUES)]
    if kind == 17:
        return [draw(st.sampled_from([b"FLUSHALL", b"FLUSHDB"]))] + \
            draw(st.sampled_from([[], [b"ASYNC"], [b"sync"], [b"x"]]))
    if kind == 18:
        return [b"CONFIG", b"GET", draw(st.sampled_from([b"save", b"appendonly", b"SAVE"]))]
    return [b"SET", k, draw(VALUES), b"EX", draw(TTLS)]


@st.composite
def sequences(draw):
    return [_cmd(draw) for _ in range(draw(st.integers(1, 12)))]


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(sequences())
def test_random_command_sequences_match_redis(redis, engine, seq):
    same(redis, engine, [[b"FLUSHALL"]])
    same(redis, engine, seq)
    same(redis, engine, [[b"MGET", b"a", b"b", b"n", b""], [b"TTL", b"a"], [b"TTL", b"n"]])


# ---------------------------------------------------------------------- KEYS patterns
GLOB_KEYS = [b"", b"a", b"b", b"ab", b"ba", b"a]", b"]", b"[", b"-", b"^", b"\\", b"a-",
             b"*", b"?", b"abc", b"aab", b"a\nb", b"!", b"c", b"a[b", b"a\\b"]


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.sampled_from(list(b"ab]*?[^-\\!c")), max_size=7).map(bytes))
def test_keys_patterns_match_redis(redis, engine, pattern):
    sess = engine.open_session()
    if not getattr(engine, "_glob_keys_loaded", False):
        same(redis, engine, [[b"FLUSHALL"], [b"MSET"] + [x for k in GLOB_KEYS for x in (k, b"1")]])
        engine._glob_keys_loaded = True
    data = encode_command(b"KEYS", pattern)
    theirs = ReplyParser().feed(redis.request(data, 1)[0])[0]
    ours = ReplyParser().feed(engine.process(sess, data))[0]
    assert sorted(ours) == sorted(theirs), pattern


# ---------------------------------------------------------------------- raw inputs
RAW = [
    b"PING\r\n", b"PING hello\r\n", b"\r\n\r\nPING\r\n", b"PING \"hello world\"\r\n",
    b"SET k \"a\\x62\"\r\nGET k\r\n", b"ECHO 'it\\'s'\r\n", b"ECHO ab\"cd\"\r\n",
    b"ECHO \"a\\qb\"\r\n", b"ECHO \fc\r\n", b"ECHO a\vb\r\n", b"*-1\r\nPING\r\n",
    b"*0\r\nPING\r\n", b"*1\r\n$4\r\nPINGxx*1\r\n$4\r\nPING\r\n",
    b"*1\r\n$4\r\nPING\r\nPING\r\n", b"PING\nPING\n", b"pInG\r\n",
    b"*3\r\n$3\r\nfoo\r\n$1\r\na\r\n$2\r\nbb\r\n", b"*1\r\n$3\r\nfoo\r\n",
    b"SET k v\r\nGET k\r\nEXPIRE k 100\r\nTTL k\r\nNOPE\r\n",
    # protocol errors: the reply, then the connection is closed
    b"*x\r\n", b"*2147483648\r\n", b"*1\r\n$-1\r\n", b"*1\r\n$x\r\n",
    b"*1\r\n$536870913\r\n", b"*1\r\n:4\r\nPING\r\n", b"PING\r\n*1\r\n+x\r\n",
    b"\"PING\r\n", b"ECHO \"a\"b\r\n", b"*1\r\n$01\r\n", b"*01\r\n",
    b"a" * 70000, b"*" + b"1" * 70000,
]


def _replies(data):
    p = ReplyParser()
    return len(p.feed(data))


@pytest.mark.parametrize("data", RAW, ids=lambda d: repr(d[:40]))
def test_raw_requests_match_redis(redis_port, engine, data):
    r = Redis(redis_port)
    try:
        sess = engine.open_session()
        ours = engine.process(sess, data)
        theirs, eof = r.request(data, _replies(ours))
        if sess.closing:                   # Redis must close after the same bytes
            if not eof:
                r.sock.settimeout(5)
                eof = r.sock.recv(1) == b""
            assert eof
        assert ours == theirs
    finally:
        r.close()
