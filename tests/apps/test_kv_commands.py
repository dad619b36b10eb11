"""KvEngine command semantics, replies byte-exact where Redis 7.0's are known (the
expected values were taken from redis-server 7.0.15): SET options, integer edge cases,
expiry (lazy and swept), KEYS globs, connection commands, pipelining, protocol errors,
counters."""

import pytest

from acceltcp.apps.kv import KvEngine, compile_pattern
from acceltcp.apps.resp import ReplyError, ReplyParser, Status, encode_command


class Clock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def kv(clock):
    return KvEngine(clock, epoch_ms=1_700_000_000_000)


def run(kv, *args, sess=None):
    """One command -> the decoded reply."""
    (reply,) = ReplyParser().feed(kv.execute(*args, sess=sess))
    return reply


def err(kv, *args):
    r = run(kv, *args)
    assert isinstance(r, ReplyError), r
    return str(r)


OK = Status("OK")


# ---------------------------------------------------------------------- SET
def test_set_get_del_exists(kv):
    assert run(kv, "SET", "k", "v") == OK
    assert run(kv, "GET", "k") == b"v"
    assert run(kv, "GET", "nokey") is None
    assert run(kv, "SET", "", "empty key") == OK and run(kv, "GET", "") == b"empty key"
    assert run(kv, "EXISTS", "k", "k", "nokey") == 2
    assert run(kv, "DEL", "k", "k", "nokey") == 1
    assert run(kv, "EXISTS", "k") == 0
    v = bytes(range(256)) * 3 + b"\r\n$5\r\n"
    run(kv, "SET", "bin", v)
    assert run(kv, "GET", "bin") == v


def test_set_nx_xx_get(kv):
    assert run(kv, "SET", "k", "1", "XX") is None
    assert run(kv, "GET", "k") is None
    assert run(kv, "SET", "k", "1", "NX") == OK
    assert run(kv, "SET", "k", "2", "NX") is None
    assert run(kv, "SET", "k", "2", "xx") == OK
    assert run(kv, "GET", "k") == b"2"
    assert run(kv, "SET", "k", "3", "GET") == b"2"
    assert run(kv, "SET", "k", "4", "NX", "GET") == b"3"          # not set, old value
    assert run(kv, "GET", "k") == b"3"
    assert run(kv, "SET", "new", "x", "GET") is None
    assert run(kv, "SET", "k", "5", "NX", "NX") is None            # repeats are allowed


@pytest.mark.parametrize("args,message", [
    (("EX", "0"), "ERR invalid expire time in 'set' command"),
    (("EX", "-1"), "ERR invalid expire time in 'set' command"),
    (("PX", "0"), "ERR invalid expire time in 'set' command"),
    (("EX", "9223372036854775807"), "ERR invalid expire time in 'set' command"),
    (("PX", "9223372036854775807"), "ERR invalid expire time in 'set' command"),
    (("EX", "9223372036854775"), "ERR invalid expire time in 'set' command"),
    (("EX", "x"), "ERR value is not an integer or out of range"),
    (("EX", "01"), "ERR value is not an integer or out of range"),
    (("EX",), "ERR syntax error"),
    (("EX", "10", "PX", "10"), "ERR syntax error"),
    (("NX", "XX"), "ERR syntax error"),
    (("KEEPTTL", "EX", "5"), "ERR syntax error"),
    (("EX", "5", "KEEPTTL"), "ERR syntax error"),
    (("FOO",), "ERR syntax error"),
])
def test_set_errors(kv, args, message):
    run(kv, "SET", "k", "old")
    assert err(kv, "SET", "k", "new", *args) == message
    assert run(kv, "GET", "k") == b"old"


def test_set_ex_px_keepttl(kv, clock):
    assert run(kv, "SET", "k", "v", "ex", "9223372036854") == OK      # the largest that fits
    assert run(kv, "SET", "k", "v", "EX", "100") == OK
    assert run(kv, "TTL", "k") == 100
    assert run(kv, "SET", "k", "w", "KEEPTTL") == OK
    assert run(kv, "TTL", "k") == 100
    assert run(kv, "SET", "k", "w") == OK                            # a plain SET clears it
    assert run(kv, "TTL", "k") == -1
    assert run(kv, "SET", "k", "v", "EX", "5", "EX", "6") == OK      # the last one wins
    assert run(kv, "TTL", "k") == 6
    assert run(kv, "SET", "p", "v", "PX", "1500") == OK
    assert run(kv, "PTTL", "p") == 1500 and run(kv, "TTL", "p") == 2  # rounded
    clock.t += 1.5
    assert run(kv, "GET", "p") == b"v"                               # expired when now > deadline
    clock.t += 0.001
    assert run(kv, "GET", "p") is None


def test_set_exat_pxat(kv, clock):
    unix_ms = kv.epoch_ms + int(clock.t * 1000)
    assert run(kv, "SET", "k", "v", "PXAT", str(unix_ms + 2000)) == OK
    assert run(kv, "PTTL", "k") == 2000
    assert run(kv, "SET", "k", "v", "EXAT", str(unix_ms // 1000 + 10)) == OK
    assert 9 <= run(kv, "TTL", "k") <= 10
    assert run(kv, "SET", "k", "v", "EXAT", "1") == OK                # in the past: gone
    assert run(kv, "GET", "k") is None and run(kv, "EXISTS", "k") == 0


# ---------------------------------------------------------------------- integers
def test_incr_decr(kv):
    assert run(kv, "INCR", "n") == 1
    assert run(kv, "INCRBY", "n", "-5") == -4
    assert run(kv, "DECR", "n") == -5
    assert run(kv, "DECRBY", "n", "3") == -8
    assert run(kv, "GET", "n") == b"-8"
    assert err(kv, "INCRBY", "n", "abc") == "ERR value is not an integer or out of range"
    assert err(kv, "INCRBY", "n", "1.5") == "ERR value is not an integer or out of range"


def test_incr_overflow_at_the_64_bit_limits(kv):
    assert run(kv, "SET", "n", str(2**63 - 2)) == OK
    assert run(kv, "INCR", "n") == 2**63 - 1
    assert err(kv, "INCR", "n") == "ERR increment or decrement would overflow"
    assert run(kv, "GET", "n") == b"9223372036854775807"
    assert run(kv, "INCRBY", "m", "9223372036854775807") == 2**63 - 1
    assert err(kv, "INCRBY", "m", "1") == "ERR increment or decrement would overflow"
    assert run(kv, "SET", "n", str(-2**63)) == OK
    assert err(kv, "DECR", "n") == "ERR increment or decrement would overflow"
    assert err(kv, "INCRBY", "n", "-1") == "ERR increment or decrement would overflow"
    assert run(kv, "INCRBY", "n", "9223372036854775807") == -1
    assert err(kv, "DECRBY", "x", "-9223372036854775808") == "ERR decrement would overflow"
    assert err(kv, "INCRBY", "x", "9223372036854775808") == \
        "ERR value is not an integer or out of range"


@pytest.mark.parametrize("value", ["01", " 1", "1 ", "+1", "-0", "1.0", "", "abc",
                                   "9223372036854775808", "1" * 30])
def test_incr_needs_a_canonical_integer(kv, value):
    run(kv, "SET", "s", value)
    assert err(kv, "INCR", "s") == "ERR value is not an integer or out of range"
    assert run(kv, "GET", "s") == value.encode()


def test_incr_keeps_the_ttl(kv):
    run(kv, "SET", "k", "5", "EX", "100")
    assert run(kv, "INCR", "k") == 6
    assert run(kv, "TTL", "k") == 100


# ---------------------------------------------------------------------- expiry
def test_ttl_minus_one_minus_two(kv):
    run(kv, "SET", "k", "v")
    assert run(kv, "TTL", "k") == -1 and run(kv, "PTTL", "k") == -1
    assert run(kv, "TTL", "nokey") == -2 and run(kv, "PTTL", "nokey") == -2
    assert run(kv, "EXPIRE", "k", "100") == 1
    assert run(kv, "TTL", "k") == 100 and run(kv, "PTTL", "k") == 100000
    assert run(kv, "EXPIRE", "nokey", "100") == 0


def test_expire_zero_or_negative_deletes(kv):
    run(kv, "SET", "a", "1")
    run(kv, "SET", "b", "1")
    assert run(kv, "EXPIRE", "a", "0") == 1
    assert run(kv, "PEXPIRE", "b", "-5") == 1
    assert run(kv, "EXISTS", "a", "b") == 0
    assert kv.stats()["keys"] == 0


def test_expire_options(kv):
    run(kv, "SET", "k", "v")
    assert run(kv, "EXPIRE", "k", "100", "GT") == 0          # no TTL counts as infinite
    assert run(kv, "EXPIRE", "k", "100", "XX") == 0
    assert run(kv, "EXPIRE", "k", "100", "LT") == 1
    assert run(kv, "EXPIRE", "k", "50", "GT") == 0
    assert run(kv, "EXPIRE", "k", "200", "GT") == 1
    assert run(kv, "EXPIRE", "k", "300", "NX") == 0
    assert run(kv, "EXPIRE", "k", "50", "lt", "xx") == 1
    assert run(kv, "TTL", "k") == 50
    assert err(kv, "EXPIRE", "k", "10", "NX", "XX") == \
        "ERR NX and XX, GT or LT options at the same time are not compatible"
    assert err(kv, "EXPIRE", "k", "10", "GT", "LT") == \
        "ERR GT and LT options at the same time are not compatible"
    assert err(kv, "EXPIRE", "k", "abc", "FOO") == "ERR Unsupported option FOO"
    assert err(kv, "EXPIRE", "nokey", "9223372036854775807") == \
        "ERR invalid expire time in 'expire' command"
    assert err(kv, "PEXPIRE", "nokey", "9223372036854775807") == \
        "ERR invalid expire time in 'pexpire' command"
    assert err(kv, "EXPIRE", "k", "x") == "ERR value is not an integer or out of range"


def test_lazy_expiry_on_access(kv, clock):
    run(kv, "SET", "k", "v", "PX", "10")
    run(kv, "SET", "other", "v")
    clock.t += 0.011
    kv._heap.clear()                       # no sweep: only the access may expire it
    assert kv.stats()["keys"] == 2         # DBSIZE counts it until then, as Redis does
    assert run(kv, "KEYS", "*") == [b"other"]
    assert run(kv, "EXISTS", "k") == 0
    assert kv.stats()["keys"] == 1 and kv.stats()["expired_keys"] == 1


def test_sweep_removes_expired_keys_without_access(kv, clock):
    for i in range(200):
        run(kv, "SET", "k%d" % i, "v", "PX", str(10 + i))
    run(kv, "SET", "stays", "v", "EX", "1000")
    clock.t += 1.0
    run(kv, "PING")                         # each request batch sweeps a bounded number
    assert kv.stats()["keys"] == 201 - 64
    for _ in range(3):
        run(kv, "PING")
    st = kv.stats()
    assert st["keys"] == 1 and st["expires"] == 1 and st["expired_keys"] == 200
    assert run(kv, "TTL", "stays") == 999


def test_deadline_heap_stays_bounded(kv):
    for i in range(5000):
        run(kv, "SET", "k", "v", "EX", str(100 + i))          # re-armed over and over
    assert len(kv._heap) <= 64 + 2 * len(kv.expires) + 1
    assert run(kv, "TTL", "k") == 5099


# ---------------------------------------------------------------------- multi-key
def test_mget_mset(kv):
    assert err(kv, "MSET", "a") == "ERR wrong number of arguments for 'mset' command"
    assert err(kv, "MSET", "a", "1", "b") == "ERR wrong number of arguments for 'mset' command"
    run(kv, "SET", "a", "old", "EX", "10")
    assert run(kv, "MSET", "a", "1", "b", "2") == OK
    assert run(kv, "TTL", "a") == -1
    assert run(kv, "MGET", "a", "b", "nokey", "a") == [b"1", b"2", None, b"1"]


def test_flushall_dbsize(kv):
    run(kv, "MSET", "a", "1", "b", "2")
    run(kv, "EXPIRE", "a", "100")
    assert run(kv, "DBSIZE") == 2
    assert err(kv, "FLUSHALL", "x") == "ERR syntax error"
    assert err(kv, "FLUSHDB", "ASYNC", "x") == "ERR syntax error"
    assert run(kv, "FLUSHALL", "async") == OK
    assert run(kv, "DBSIZE") == 0 and kv.stats()["expires"] == 0
    run(kv, "SET", "a", "1")
    assert run(kv, "FLUSHDB") == OK and run(kv, "DBSIZE") == 0


# ---------------------------------------------------------------------- KEYS globs
KEYS = [b"", b"a", b"b", b"ab", b"a]", b"]", b"[", b"-", b"^", b"\\", b"a-", b"*", b"?",
        b"x", b"abc", b"a\nb", b"A", b"c"]

# pattern -> matching keys, as redis-server 7.0.15 answered KEYS on exactly these keys
REDIS_GLOB = {
    b"*": KEYS,
    b"**": [k for k in KEYS if k],
    b"": [b""],
    b"?": [b"*", b"-", b"?", b"A", b"[", b"\\", b"]", b"^", b"a", b"b", b"c", b"x"],
    b"[": [],
    b"[^": [b"*", b"-", b"?", b"A", b"[", b"\\", b"]", b"^", b"a", b"b", b"c", b"x"],
    b"[a": [b"a"],
    b"[a-]": [b"]", b"^", b"a"],
    b"[a-]b]": [b"]", b"^", b"a", b"b"],
    b"[\\]]": [b"]"],
    b"\\": [b"\\"],
    b"a\\": [],
    b"[^a]": [b"*", b"-", b"?", b"A", b"[", b"\\", b"]", b"^", b"b", b"c", b"x"],
    b"[!a]": [b"a"],
    b"[a-c]": [b"a", b"b", b"c"],
    b"[c-a]": [b"a", b"b", b"c"],
    b"a*": [b"a", b"a\nb", b"a-", b"a]", b"ab", b"abc"],
    b"*]": [b"]", b"a]"],
    b"[]]": [],
    b"[]": [],
    b"[^]": [b"*", b"-", b"?", b"A", b"[", b"\\", b"]", b"^", b"a", b"b", b"c", b"x"],
    b"[a-": [b"-", b"a"],
    b"\\*": [b"*"],
    b"\\?": [b"?"],
    b"[\\": [b"\\"],
    b"a[": [],
    b"*[": [],
    b"?*": [k for k in KEYS if k],
    b"a?b": [b"a\nb"],
    b"[A-a]": [b"A", b"[", b"\\", b"]", b"^", b"a"],
}


@pytest.mark.parametrize("pattern", list(REDIS_GLOB))
def test_keys_globs_as_redis(kv, pattern):
    for k in KEYS:
        run(kv, "SET", k, "1")
    assert sorted(run(kv, "KEYS", pattern)) == sorted(REDIS_GLOB[pattern])


@pytest.mark.parametrize("pattern,key,matches", [
    (b"h?llo", b"hello", True), (b"h*llo", b"heeeello", True), (b"h*llo", b"hllo", True),
    (b"h[ae]llo", b"hallo", True), (b"h[ae]llo", b"hillo", False),
    (b"h[^e]llo", b"hallo", True), (b"h[^e]llo", b"hello", False),
    (b"h[a-b]llo", b"hbllo", True), (b"*a*a*a*a*a*a*a*a*b", b"a" * 3000, False),
    (b"*a*b*", b"xxaxxbxx", True), (b"*a*b*", b"xxbxxaxx", False),
    (b"a*b*c", b"abbbc", True), (b"a*b*c", b"abc", True), (b"a*b*c", b"acb", False),
    (b"usr:0000*7", b"usr:000000000007", True), (b"*\\*", b"x*", True),
    (b"*\\*", b"x\\*", True), (b"*\\*", b"x", False), (b"?", b"\n", True),
    (b"[\\-]", b"-", True), (b"[a\\-z]", b"b", False),
])
def test_glob_more(pattern, key, matches):
    assert compile_pattern(pattern)(key) is matches


# ---------------------------------------------------------------------- connection & server
def test_ping_echo_select_quit(kv):
    sess = kv.open_session()
    assert kv.process(sess, b"PING\r\n*2\r\n$4\r\nPING\r\n$2\r\nhi\r\nECHO \"\"\r\n") == \
        b"+PONG\r\n$2\r\nhi\r\n$0\r\n\r\n"
    assert kv.process(sess, b"PING a b\r\n") == \
        b"-ERR wrong number of arguments for 'ping' command\r\n"
    assert kv.process(sess, b"SELECT 0\r\nSELECT 1\r\nSELECT x\r\nSELECT -1\r\n") == (
        b"+OK\r\n-ERR DB index is out of range\r\n-ERR value is not an integer or out of "
        b"range\r\n-ERR DB index is out of range\r\n")
    assert not sess.closing
    assert kv.process(sess, b"QUIT\r\nPING\r\n") == b"+OK\r\n"      # nothing after QUIT
    assert sess.closing
    assert kv.process(sess, b"PING\r\n") == b""


def test_unknown_command_and_arity_messages(kv):
    assert err(kv, "foo", "a", "bb") == \
        "ERR unknown command 'foo', with args beginning with: 'a' 'bb' "
    assert err(kv, "foo") == "ERR unknown command 'foo', with args beginning with: "
    assert err(kv, "GET") == "ERR wrong number of arguments for 'get' command"
    assert err(kv, "get", "a", "b") == "ERR wrong number of arguments for 'get' command"
    assert err(kv, "SeT", "a") == "ERR wrong number of arguments for 'set' command"
    long = err(kv, "x" * 200, *["y" * 50] * 5)          # truncated as Redis does (128)
    assert long == "ERR unknown command '%s', with args beginning with: %s" % (
        "x" * 128, "'%s' '%s' '%s' " % ("y" * 50, "y" * 50, "y" * 22))
    assert err(kv, "a\r\nb") == "ERR unknown command 'a  b', with args beginning with: "
    assert kv.stats()["unknown_commands"] == 4


def test_mixed_case_commands(kv):
    assert run(kv, "pInG") == Status("PONG")
    assert run(kv, "set", "k", "v") == OK and run(kv, "Get", "k") == b"v"


def test_hello(kv):
    sess = kv.open_session()
    r = run(kv, "HELLO", sess=sess)
    assert r[:6] == [b"server", b"redis", b"version", b"7.0.0", b"proto", 2]
    assert r[6:8] == [b"id", sess.id]
    assert run(kv, "HELLO", "2", "SETNAME", "me", sess=sess)[4:6] == [b"proto", 2]
    assert run(kv, "CLIENT", "GETNAME", sess=sess) == b"me"
    assert run(kv, "HELLO", "2", "AUTH", "default", "anything")[5] == 2
    assert err(kv, "HELLO", "3") == "NOPROTO unsupported protocol version"
    assert err(kv, "HELLO", "1") == "NOPROTO unsupported protocol version"
    assert err(kv, "HELLO", "x") == "ERR Protocol version is not an integer or out of range"
    assert err(kv, "HELLO", "2", "FOO") == "ERR Syntax error in HELLO option 'FOO'"
    assert err(kv, "HELLO", "2", "AUTH", "default") == "ERR Syntax error in HELLO option 'AUTH'"
    assert err(kv, "HELLO", "2", "AUTH", "bob", "pw").startswith("WRONGPASS")


def test_client(kv):
    sess = kv.open_session()
    assert run(kv, "CLIENT", "GETNAME", sess=sess) is None
    assert run(kv, "CLIENT", "SETNAME", "foo", sess=sess) == OK
    assert run(kv, "CLIENT", "GETNAME", sess=sess) == b"foo"
    assert err(kv, "CLIENT", "SETNAME", "a b") == \
        "ERR Client names cannot contain spaces, newlines or special characters."
    assert run(kv, "CLIENT", "SETNAME", "", sess=sess) == OK
    assert run(kv, "CLIENT", "GETNAME", sess=sess) is None
    assert run(kv, "CLIENT", "ID", sess=sess) == sess.id
    assert err(kv, "CLIENT", "FOO") == "ERR unknown subcommand 'FOO'. Try CLIENT HELP."
    assert err(kv, "CLIENT", "SETNAME") == \
        "ERR wrong number of arguments for 'client|setname' command"
    assert err(kv, "CLIENT") == "ERR wrong number of arguments for 'client' command"
    assert all(isinstance(x, Status) for x in run(kv, "CLIENT", "HELP"))


def test_config_and_command(kv):
    # what redis-benchmark sends on start, and what redis-cli sends
    assert run(kv, "CONFIG", "GET", "save") == [b"save", b""]
    assert run(kv, "CONFIG", "GET", "appendonly") == [b"appendonly", b"no"]
    assert run(kv, "CONFIG", "get", "SAVE") == [b"SAVE", b""]
    assert run(kv, "CONFIG", "GET", "nonexistent") == []
    assert run(kv, "CONFIG", "GET", "app*", "save", "s*") == \
        [b"appendonly", b"no", b"save", b""]
    assert err(kv, "CONFIG", "GET") == "ERR wrong number of arguments for 'config|get' command"
    assert err(kv, "CONFIG", "SET", "save", "") == \
        "ERR unknown subcommand 'SET'. Try CONFIG HELP."
    assert run(kv, "COMMAND", "DOCS") == []
    assert run(kv, "COMMAND") == []
    assert run(kv, "COMMAND", "COUNT") == len(kv.commands)
    assert err(kv, "COMMAND", "x", "y") == "ERR unknown subcommand 'x'. Try COMMAND HELP."


def test_info(kv, clock):
    sess = kv.open_session()
    kv.process(sess, b"SET a 1\r\nGET a\r\nGET b\r\nNOPE\r\nSET k v EX 10\r\n")
    text = run(kv, "INFO", sess=sess).decode()
    sections = [line for line in text.split("\r\n") if line.startswith("#")]
    assert sections == ["# Server", "# Clients", "# Stats", "# Keyspace"]
    fields = dict(line.split(":", 1) for line in text.split("\r\n") if ":" in line)
    assert fields["redis_version"] == "7.0.0"
    assert fields["connected_clients"] == "1"
    assert fields["keyspace_hits"] == "1" and fields["keyspace_misses"] == "1"
    assert fields["total_error_replies"] == "1"
    assert fields["total_commands_processed"] == "4"       # the unknown one is not counted
    assert fields["db0"] == "keys=2,expires=1,avg_ttl=10000"
    assert run(kv, "INFO", "keyspace") == b"# Keyspace\r\ndb0:keys=2,expires=1,avg_ttl=10000\r\n"
    assert run(kv, "INFO", "nosuch") == b""
    everything = run(kv, "INFO", "everything").decode()
    assert "cmdstat_set:calls=2,rejected_calls=0" in everything
    assert "errorstat_ERR:count=1" in everything


# ---------------------------------------------------------------------- pipelining, errors
def test_pipelined_replies_in_order(kv):
    sess = kv.open_session()
    reqs = [encode_command("SET", "k%d" % i, str(i)) for i in range(50)]
    reqs += [encode_command("INCR", "k%d" % i) for i in range(50)]
    reqs += [encode_command("GET", "k%d" % i) for i in range(50)]
    replies = ReplyParser().feed(kv.process(sess, b"".join(reqs)))
    assert replies == [OK] * 50 + list(range(1, 51)) + [b"%d" % (i + 1) for i in range(50)]


def test_protocol_error_runs_what_came_before_then_closes(kv):
    sess = kv.open_session()
    out = kv.process(sess, b"SET a 1\r\n*2\r\n$3\r\nGET\r\n$1\r\na\r\n*1\r\n$x\r\nPING\r\n")
    assert out == b"+OK\r\n$1\r\n1\r\n-ERR Protocol error: invalid bulk length\r\n"
    assert sess.closing
    assert kv.process(sess, b"PING\r\n") == b""
    st = kv.stats()
    assert st["protocol_errors"] == 1 and st["errors"] == {"ERR": 1}
    other = kv.open_session()                 # the engine and other clients are unaffected
    assert kv.process(other, b"GET a\r\n") == b"$1\r\n1\r\n"


def test_protocol_error_message_keeps_the_offending_byte(kv):
    sess = kv.open_session()
    assert kv.process(sess, b"*1\r\n\xff") == b"-ERR Protocol error: expected '$', got '\xff'\r\n"
    sess = kv.open_session()
    assert kv.process(sess, b"*1\r\n\r\n") == b"-ERR Protocol error: expected '$', got ' '\r\n"


def test_stats_counters(kv):
    a = kv.open_session()
    b = kv.open_session()
    requests = b"SET k v\r\nGET k\r\nGET k\r\nGET x\r\nGET\r\n"
    kv.process(a, requests)
    kv.close_session(b)
    kv.close_session(b)                       # idempotent
    st = kv.stats()
    assert st["connections_received"] == 2 and st["connected_clients"] == 1
    assert st["commands"] == {"set": 1, "get": 3}
    assert st["rejected_calls"] == {"get": 1}
    assert st["keyspace_hits"] == 2 and st["keyspace_misses"] == 1
    assert st["bytes_in"] == len(requests)
    assert st["bytes_out"] == len(b"+OK\r\n$1\r\nv\r\n$1\r\nv\r\n$-1\r\n") + len(
        b"-ERR wrong number of arguments for 'get' command\r\n")
    assert run(kv, "CONFIG", "RESETSTAT") == OK
    assert kv.stats()["commands"] == {"config": 1}
