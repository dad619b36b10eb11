"""The kv server's behaviour without I/O: `KvEngine` (keyspace, expiry, the command table,
counters) and its per-client `KvSession` (see the `apps.kv` package docstring)."""

import collections
import heapq
import itertools
import os
import sys
import time

from .. import resp
from ..outbuf import OutBuffer
from ..resp import bulk as _bulk
from ..resp import error as _err
from ..resp import (EMPTY_ARRAY, LLONG_MAX, LLONG_MIN, NIL, OK, ONE, PONG, ZERO, RequestParser,
                    encode_command, parse_int)
from .pattern import compile_pattern

__all__ = ["KvEngine", "KvSession", "KV_DEFAULT_PORT", "REDIS_VERSION", "SERVER_VERSION"]

KV_DEFAULT_PORT = 6379
#: What INFO and HELLO report as redis_version: the dialect (Redis 7.0) this subset follows.
REDIS_VERSION = "7.0.0"
SERVER_VERSION = "0.1.0"

_SWEEP_BUDGET = 64          # heap entries the active expiry pops per process() call


class _Fail(Exception):
    """A command's error reply (already encoded); raised by argument helpers."""

    __slots__ = ("reply",)

    def __init__(self, reply):
        self.reply = reply


ERR_SYNTAX = _err("ERR syntax error")
ERR_NOT_INT = _err("ERR value is not an integer or out of range")
ERR_OVERFLOW = _err("ERR increment or decrement would overflow")
ERR_DECR_OVERFLOW = _err("ERR decrement would overflow")
ERR_DB_INDEX = _err("ERR DB index is out of range")
ERR_CLIENT_NAME = _err("ERR Client names cannot contain spaces, newlines or special "
                       "characters.")
ERR_NOPROTO = _err("NOPROTO unsupported protocol version")
ERR_PROTO_VERSION = _err("ERR Protocol version is not an integer or out of range")
ERR_WRONGPASS = _err("WRONGPASS invalid username-password pair or user is disabled.")
ERR_EXPIRE_FLAGS = _err("ERR NX and XX, GT or LT options at the same time are not compatible")
ERR_EXPIRE_GTLT = _err("ERR GT and LT options at the same time are not compatible")


def _cstr(b):
    """What C's %s prints of an argument: up to its first NUL."""
    i = b.find(b"\0")
    return b if i < 0 else b[:i]


def _raw(enc):
    """The value inside a stored bulk-string encoding."""
    return enc[enc.index(b"\r\n") + 2:-2]


def _status_lines(lines):
    return resp.array([resp.simple(s) for s in lines])


# ---------------------------------------------------------------------- the engine
class KvSession:
    """One client's state in a `KvEngine`. ``closing``: QUIT or a protocol error; the
    transport closes once ``out`` (an `OutBuffer`: replies the transport could not send
    yet) is empty. ``queued``: commands parsed but held back by `KvEngine.process`'s
    ``limit`` (an iterator; None when there are none)."""

    __slots__ = ("id", "parser", "name", "closing", "out", "queued", "released")

    def __init__(self, sid):
        self.id = sid
        self.parser = RequestParser()
        self.name = None
        self.closing = False
        self.out = OutBuffer()
        self.queued = None
        self.released = False


class _Command:
    __slots__ = ("name", "arity", "fn", "calls", "rejected")

    def __init__(self, name, arity, fn):
        self.name = name          # lower case, as Redis reports it
        self.arity = arity        # Redis convention: n = exactly n, -n = at least n
        self.fn = fn
        self.calls = 0
        self.rejected = 0         # wrong number of arguments


class KvEngine:
    """The server's behaviour without I/O (see the `apps.kv` package docstring).

    ``clock``: seconds (float), normally ``stack.clock``; ``port``: reported by INFO and
    CONFIG GET; ``epoch_ms``: Unix time in ms at clock 0 (default: from ``time.time()``).
    """

    # (name, arity, method): the command table. Arity as Redis's command table has it.
    COMMANDS = (
        ("get", 2, "_get"), ("set", -3, "_set"), ("del", -2, "_del"),
        ("exists", -2, "_exists"), ("incr", 2, "_incr"), ("decr", 2, "_decr"),
        ("incrby", 3, "_incrby"), ("decrby", 3, "_decrby"), ("mget", -2, "_mget"),
        ("mset", -3, "_mset"), ("expire", -3, "_expire"), ("pexpire", -3, "_pexpire"),
        ("ttl", 2, "_ttl"), ("pttl", 2, "_pttl"), ("keys", 2, "_keys"),
        ("flushall", -1, "_flushall"), ("flushdb", -1, "_flushall"), ("dbsize", 1, "_dbsize"),
        ("ping", -1, "_ping"), ("echo", 2, "_echo"), ("select", 2, "_select"),
        ("quit", -1, "_quit"), ("info", -1, "_info"), ("config", -2, "_config"),
        ("command", -1, "_command"), ("client", -2, "_client"), ("hello", -1, "_hello"),
    )

    def __init__(self, clock, *, port=KV_DEFAULT_PORT, epoch_ms=None):
        self.clock = clock
        self.port = port
        now_ms = int(clock() * 1000)
        self.epoch_ms = (int(time.time() * 1000) - now_ms) if epoch_ms is None else epoch_ms
        self.started_ms = now_ms
        self.data = {}            # key -> value encoded as a bulk-string reply
        self.expires = {}         # key -> deadline, clock ms
        self._heap = []           # (deadline, key), lazily invalidated against `expires`
        self._table = {}
        self.commands = {}        # name -> _Command
        for name, arity, method in self.COMMANDS:
            cmd = _Command(name, arity, getattr(self, method))
            self.commands[name] = cmd
            self._table[name.encode()] = cmd
            self._table[name.upper().encode()] = cmd
        self._next_id = 0
        self._reset_stats()
        self.connected_clients = 0

    def _reset_stats(self):
        self.connections_received = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.keyspace_hits = 0
        self.keyspace_misses = 0
        self.expired_keys = 0
        self.error_replies = 0
        self.errors = collections.Counter()     # error code (ERR, NOPROTO...) -> replies
        self.unknown_commands = 0
        self.protocol_errors = 0
        for cmd in self.commands.values():
            cmd.calls = cmd.rejected = 0

    # ------------------------------------------------------------------ sessions
    def open_session(self):
        self._next_id += 1
        self.connections_received += 1
        self.connected_clients += 1
        return KvSession(self._next_id)

    def close_session(self, sess):
        if not sess.released:
            sess.released = True
            self.connected_clients -= 1

    def process(self, sess, data, limit=0):
        """Bytes from `sess`'s connection -> the replies they complete (b"" if none).
        Afterwards ``sess.closing`` says whether to close once the replies are sent.

        ``limit`` (> 0): stop running commands once the replies of this call reach
        ``limit`` bytes (at least one command runs); the parsed commands left wait in
        ``sess.queued`` and run first at the next call (``process(sess, b"", limit)``
        resumes them). A transport uses it to stop parsing a connection whose unsent
        replies are over its threshold (`KvServer`'s output back-pressure)."""
        self.bytes_in += len(data)
        if sess.closing:
            return b""
        parser = sess.parser
        cmds = parser.feed(data) if data else ()
        queued = sess.queued
        if queued is not None:            # held back by an earlier limit: they go first
            sess.queued = None
            cmds = itertools.chain(queued, cmds) if cmds else queued
        h = self._heap
        if h and h[0][0] < int(self.clock() * 1000):
            self._sweep()
        out = []
        size = 0
        table = self._table
        it = iter(cmds)
        for argv in it:
            cmd = table.get(argv[0])
            if cmd is None:
                cmd = table.get(argv[0].lower())
                if cmd is None:
                    r = self._unknown(argv)
                    out.append(r)
                    if limit:
                        size += len(r)
                        if size >= limit:
                            sess.queued = it
                            break
                    continue
            n = len(argv)
            a = cmd.arity
            if n != a and (a > 0 or n < -a):
                cmd.rejected += 1
                r = self._fail(_err("ERR wrong number of arguments for '%s' command"
                                    % cmd.name))
            else:
                try:
                    r = cmd.fn(argv, sess)
                except _Fail as e:
                    r = self._fail(e.reply)
                cmd.calls += 1             # after the call, as Redis (INFO excludes itself)
                if sess.closing:
                    out.append(r)
                    break
            out.append(r)
            if limit:
                size += len(r)
                if size >= limit:
                    sess.queued = it       # the rest (maybe none: then the next call
                    break                  # only checks the parser's error)
        else:
            if parser.error is not None:
                self.protocol_errors += 1
                sess.closing = True
                out.append(self._fail(resp.error(("ERR " + parser.error).encode("latin-1"))))
        if not out:
            return b""
        reply = out[0] if len(out) == 1 else b"".join(out)
        self.bytes_out += len(reply)
        return reply

    def execute(self, *argv, sess=None):
        """Run one command (arguments as bytes or str) -> its encoded reply. For tests
        and tools: the same path as a request on a connection."""
        if sess is None:
            sess = KvSession(0)
        return self.process(sess, encode_command(*argv))

    def _fail(self, reply):
        self.error_replies += 1
        end = reply.find(b" ")
        self.errors[reply[1:end if end > 0 else -2].decode("latin-1")] += 1
        return reply

    def _unknown(self, argv):
        self.unknown_commands += 1
        args = b""
        for a in argv[1:]:
            if len(args) >= 128:
                break
            args += b"'%s' " % _cstr(a)[:128 - len(args)]
        return self._fail(resp.error(b"ERR unknown command '%s', with args beginning with: %s"
                                     % (_cstr(argv[0])[:128], args)))

    @staticmethod
    def _unknown_subcommand(argv):
        return _Fail(resp.error(b"ERR unknown subcommand '%s'. Try %s HELP."
                                % (_cstr(argv[1])[:128], argv[0].upper())))

    @staticmethod
    def _arity(name):
        return _Fail(_err("ERR wrong number of arguments for '%s' command" % name))

    # ------------------------------------------------------------------ keyspace
    def _now(self):
        return int(self.clock() * 1000)

    def _live(self, key):
        """The stored encoding of `key`, or None; an expired key is removed here."""
        v = self.data.get(key)
        if v is not None and self.expires:
            d = self.expires.get(key)
            if d is not None and int(self.clock() * 1000) > d:
                self._drop_expired(key)
                return None
        return v

    def _drop_expired(self, key):
        del self.data[key]
        del self.expires[key]
        self.expired_keys += 1

    def _set_deadline(self, key, deadline):
        self.expires[key] = deadline
        h = self._heap
        heapq.heappush(h, (deadline, key))
        if len(h) > 64 + 2 * len(self.expires):
            self._heap = [(d, k) for k, d in self.expires.items()]
            heapq.heapify(self._heap)

    def _sweep(self):
        """Active expiry: pop due heap entries, at most _SWEEP_BUDGET per call."""
        h = self._heap
        exp = self.expires
        now = int(self.clock() * 1000)
        budget = _SWEEP_BUDGET
        while h and h[0][0] < now and budget:
            d, key = heapq.heappop(h)
            budget -= 1
            if exp.get(key) == d:
                self._drop_expired(key)

    def _deadline_arg(self, arg, seconds, absolute, command):
        """Redis's getExpireMillisecondsOrReply: SET's EX/PX/EXAT/PXAT -> clock ms."""
        v = parse_int(arg)
        if v is None:
            raise _Fail(ERR_NOT_INT)
        if v <= 0 or (seconds and v > LLONG_MAX // 1000):
            raise _Fail(_err("ERR invalid expire time in '%s' command" % command))
        if seconds:
            v *= 1000
        if not absolute:
            v += self._now() + self.epoch_ms
            if v > LLONG_MAX:
                raise _Fail(_err("ERR invalid expire time in '%s' command" % command))
        return v - self.epoch_ms

    # ------------------------------------------------------------------ strings
    def _get(self, argv, sess):
        v = self.data.get(argv[1])
        if v is None:
            self.keyspace_misses += 1
            return NIL
        if self.expires and self._live(argv[1]) is None:
            self.keyspace_misses += 1
            return NIL
        self.keyspace_hits += 1
        return v

    _NX, _XX, _GET, _KEEPTTL, _EX, _PX, _EXAT, _PXAT = 1, 2, 4, 8, 16, 32, 64, 128

    def _set(self, argv, sess):
        key = argv[1]
        n = len(argv)
        if n == 3:                                   # plain SET: the common case
            self.data[key] = b"$%d\r\n%s\r\n" % (len(argv[2]), argv[2])
            if self.expires:
                self.expires.pop(key, None)
            return OK
        flags = 0
        expire = None
        j = 3
        while j < n:
            opt = argv[j].upper()
            more = j < n - 1
            if opt == b"NX" and not flags & self._XX:
                flags |= self._NX
            elif opt == b"XX" and not flags & self._NX:
                flags |= self._XX
            elif opt == b"GET":
                flags |= self._GET
            elif opt == b"KEEPTTL" and not flags & (self._EX | self._PX | self._EXAT
                                                    | self._PXAT):
                flags |= self._KEEPTTL
            elif opt == b"EX" and more and not flags & (self._KEEPTTL | self._PX | self._EXAT
                                                         | self._PXAT):
                flags |= self._EX
                expire = argv[j + 1]
                j += 1
            elif opt == b"PX" and more and not flags & (self._KEEPTTL | self._EX | self._EXAT
                                                         | self._PXAT):
                flags |= self._PX
                expire = argv[j + 1]
                j += 1
            elif opt == b"EXAT" and more and not flags & (self._KEEPTTL | self._EX | self._PX
                                                           | self._PXAT):
                flags |= self._EXAT
                expire = argv[j + 1]
                j += 1
            elif opt == b"PXAT" and more and not flags & (self._KEEPTTL | self._EX | self._PX
                                                           | self._EXAT):
                flags |= self._PXAT
                expire = argv[j + 1]
                j += 1
            else:
                raise _Fail(ERR_SYNTAX)
            j += 1
        deadline = None
        if expire is not None:
            deadline = self._deadline_arg(expire, bool(flags & (self._EX | self._EXAT)),
                                          bool(flags & (self._EXAT | self._PXAT)), "set")
        old = self._live(key)
        if (flags & self._NX and old is not None) or (flags & self._XX and old is None):
            return (old or NIL) if flags & self._GET else NIL
        if deadline is not None and deadline < self._now():
            # EXAT/PXAT in the past: stored and expired at once, as in Redis.
            if old is not None:
                del self.data[key]
                self.expires.pop(key, None)
        else:
            self.data[key] = _bulk(argv[2])
            if deadline is not None:
                self._set_deadline(key, deadline)
            elif not flags & self._KEEPTTL and self.expires:
                self.expires.pop(key, None)
        if flags & self._GET:
            return old or NIL
        return OK

    def _incr_by(self, key, incr):
        enc = self._live(key)
        if enc is None:
            old = 0
        else:
            old = parse_int(_raw(enc))
            if old is None:
                raise _Fail(ERR_NOT_INT)
        if (incr < 0 and old < 0 and incr < LLONG_MIN - old) or \
                (incr > 0 and old > 0 and incr > LLONG_MAX - old):
            raise _Fail(ERR_OVERFLOW)
        new = b"%d" % (old + incr)
        self.data[key] = b"$%d\r\n%s\r\n" % (len(new), new)    # the TTL stays
        return b":" + new + b"\r\n"

    @staticmethod
    def _int_arg(arg):
        v = parse_int(arg)
        if v is None:
            raise _Fail(ERR_NOT_INT)
        return v

    def _incr(self, argv, sess):
        return self._incr_by(argv[1], 1)

    def _decr(self, argv, sess):
        return self._incr_by(argv[1], -1)

    def _incrby(self, argv, sess):
        return self._incr_by(argv[1], self._int_arg(argv[2]))

    def _decrby(self, argv, sess):
        incr = self._int_arg(argv[2])
        if incr == LLONG_MIN:
            raise _Fail(ERR_DECR_OVERFLOW)
        return self._incr_by(argv[1], -incr)

    def _mget(self, argv, sess):
        live = self._live
        vals = [live(k) for k in argv[1:]]
        misses = vals.count(None)
        self.keyspace_misses += misses
        self.keyspace_hits += len(vals) - misses
        return b"*%d\r\n" % len(vals) + b"".join(v or NIL for v in vals)

    def _mset(self, argv, sess):
        if len(argv) % 2 == 0:
            raise self._arity("mset")
        data = self.data
        exp = self.expires
        for i in range(1, len(argv), 2):
            key = argv[i]
            data[key] = _bulk(argv[i + 1])
            if exp:
                exp.pop(key, None)
        return OK

    # ------------------------------------------------------------------ keys
    def _del(self, argv, sess):
        n = 0
        for key in argv[1:]:
            if self._live(key) is not None:
                del self.data[key]
                if self.expires:
                    self.expires.pop(key, None)
                n += 1
        return b":%d\r\n" % n

    def _exists(self, argv, sess):
        live = self._live
        return b":%d\r\n" % sum(1 for k in argv[1:] if live(k) is not None)

    def _keys(self, argv, sess):
        pattern = argv[1]
        exp = self.expires
        now = self._now()
        if pattern == b"*":
            keys = [k for k in self.data if not exp or exp.get(k, now) >= now]
        else:
            match = compile_pattern(pattern)
            keys = [k for k in self.data if match(k) and (not exp or exp.get(k, now) >= now)]
        return b"*%d\r\n" % len(keys) + b"".join(map(_bulk, keys))

    def _dbsize(self, argv, sess):
        return b":%d\r\n" % len(self.data)

    def _flushall(self, argv, sess):
        if len(argv) > 2 or (len(argv) == 2 and argv[1].upper() not in (b"ASYNC", b"SYNC")):
            raise _Fail(ERR_SYNTAX)
        self.data.clear()
        self.expires.clear()
        self._heap = []
        return OK

    def _expire(self, argv, sess):
        return self._expire_generic(argv, True, "expire")

    def _pexpire(self, argv, sess):
        return self._expire_generic(argv, False, "pexpire")

    def _expire_generic(self, argv, seconds, command):
        nx = xx = gt = lt = False
        for opt in argv[3:]:
            o = opt.upper()
            if o == b"NX":
                nx = True
            elif o == b"XX":
                xx = True
            elif o == b"GT":
                gt = True
            elif o == b"LT":
                lt = True
            else:
                raise _Fail(resp.error(b"ERR Unsupported option %s" % _cstr(opt)))
        if nx and (xx or gt or lt):
            raise _Fail(ERR_EXPIRE_FLAGS)
        if gt and lt:
            raise _Fail(ERR_EXPIRE_GTLT)
        when = self._int_arg(argv[2])
        bad = _err("ERR invalid expire time in '%s' command" % command)
        if seconds:
            if when > LLONG_MAX // 1000 or when < -(-LLONG_MIN // 1000):
                raise _Fail(bad)
            when *= 1000
        now = self._now()
        base = now + self.epoch_ms
        if when > LLONG_MAX - base:
            raise _Fail(bad)
        when += now                                   # clock ms
        key = argv[1]
        if self._live(key) is None:
            return ZERO
        cur = self.expires.get(key)
        if nx and cur is not None or xx and cur is None:
            return ZERO
        if gt and (cur is None or when <= cur):
            return ZERO
        if lt and cur is not None and when >= cur:
            return ZERO
        if when <= now:
            del self.data[key]
            self.expires.pop(key, None)
        else:
            self._set_deadline(key, when)
        return ONE

    def _ttl(self, argv, sess):
        return self._ttl_generic(argv[1], False)

    def _pttl(self, argv, sess):
        return self._ttl_generic(argv[1], True)

    def _ttl_generic(self, key, ms):
        if self._live(key) is None:
            return b":-2\r\n"
        d = self.expires.get(key)
        if d is None:
            return b":-1\r\n"
        ttl = max(0, d - self._now())
        return b":%d\r\n" % (ttl if ms else (ttl + 500) // 1000)

    # ------------------------------------------------------------------ connection
    def _ping(self, argv, sess):
        if len(argv) == 1:
            return PONG
        if len(argv) == 2:
            return _bulk(argv[1])
        raise self._arity("ping")

    def _echo(self, argv, sess):
        return _bulk(argv[1])

    def _select(self, argv, sess):
        db = self._int_arg(argv[1])
        if db != 0:
            raise _Fail(ERR_DB_INDEX)
        return OK

    def _quit(self, argv, sess):
        sess.closing = True
        return OK

    def _set_name(self, sess, name):
        if any(c < 33 or c > 126 for c in name):
            raise _Fail(ERR_CLIENT_NAME)
        sess.name = name or None

    def _client(self, argv, sess):
        sub = argv[1].upper()
        n = len(argv)
        if sub == b"SETNAME":
            if n != 3:
                raise self._arity("client|setname")
            self._set_name(sess, argv[2])
            return OK
        if sub == b"GETNAME":
            if n != 2:
                raise self._arity("client|getname")
            return _bulk(sess.name) if sess.name else NIL
        if sub == b"ID":
            if n != 2:
                raise self._arity("client|id")
            return b":%d\r\n" % sess.id
        if sub == b"HELP" and n == 2:
            return _status_lines([
                "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "GETNAME", "    Return the name of the current connection.",
                "ID", "    Return the ID of the current connection.",
                "SETNAME <name>", "    Assign the name <name> to the current connection.",
                "HELP", "    Print this help."])
        raise self._unknown_subcommand(argv)

    def _hello(self, argv, sess):
        n = len(argv)
        j = 1
        if n >= 2:
            ver = parse_int(argv[1])
            if ver is None:
                raise _Fail(ERR_PROTO_VERSION)
            if ver != 2:                 # RESP3 is not spoken here: clients fall back to 2
                raise _Fail(ERR_NOPROTO)
            j = 2
        name = None
        while j < n:
            opt = argv[j].upper()
            more = n - 1 - j
            if opt == b"AUTH" and more >= 2:
                # No users here: like Redis's default user without a password, which
                # takes any password; any other user does not exist.
                if argv[j + 1] != b"default":
                    raise _Fail(ERR_WRONGPASS)
                j += 3
            elif opt == b"SETNAME" and more >= 1:
                name = argv[j + 1]
                j += 2
            else:
                raise _Fail(resp.error(b"ERR Syntax error in HELLO option '%s'"
                                       % _cstr(argv[j])))
        if name is not None:
            self._set_name(sess, name)
        return resp.array([_bulk(b"server"), _bulk(b"redis"),
                           _bulk(b"version"), _bulk(REDIS_VERSION.encode()),
                           _bulk(b"proto"), b":2\r\n", _bulk(b"id"), b":%d\r\n" % sess.id,
                           _bulk(b"mode"), _bulk(b"standalone"), _bulk(b"role"),
                           _bulk(b"master"), _bulk(b"modules"), EMPTY_ARRAY])

    # ------------------------------------------------------------------ server
    def config_params(self):
        """What CONFIG GET knows: name -> value (bytes)."""
        return {b"save": b"", b"appendonly": b"no", b"databases": b"1",
                b"port": b"%d" % self.port, b"maxmemory": b"0", b"timeout": b"0"}

    def _config(self, argv, sess):
        sub = argv[1].upper()
        n = len(argv)
        if sub == b"GET":
            if n < 3:
                raise self._arity("config|get")
            params = self.config_params()
            found = {}             # name -> (name as replied, value); each name once
            for pattern in argv[2:]:
                p = pattern.lower()
                if p in params:                  # an exact name is echoed as given
                    found.setdefault(p, (pattern, params[p]))
                    continue
                match = compile_pattern(p)
                for name, value in params.items():
                    if match(name):
                        found.setdefault(name, (name, value))
            return resp.array([_bulk(x) for kv in found.values() for x in kv])
        if sub == b"RESETSTAT":
            if n != 2:
                raise self._arity("config|resetstat")
            self._reset_stats()
            return OK
        if sub == b"HELP" and n == 2:
            return _status_lines([
                "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "GET <pattern>",
                "    Return parameters matching the glob-like <pattern> and their values.",
                "RESETSTAT", "    Reset statistics reported by the INFO command.",
                "HELP", "    Print this help."])
        raise self._unknown_subcommand(argv)

    def _command(self, argv, sess):
        n = len(argv)
        if n == 1:
            return EMPTY_ARRAY                  # no command table is served
        sub = argv[1].upper()
        if sub == b"COUNT":
            if n != 2:
                raise self._arity("command|count")
            return b":%d\r\n" % len(self.commands)
        if sub == b"DOCS":
            return EMPTY_ARRAY                  # redis-cli then uses its built-in help
        if sub == b"HELP" and n == 2:
            return _status_lines([
                "COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "(no subcommand)", "    Return an empty array: no command table is served.",
                "COUNT", "    Return the total number of commands in this server.",
                "DOCS [<command-name> ...]", "    Return an empty array.",
                "HELP", "    Print this help."])
        raise self._unknown_subcommand(argv)

    INFO_SECTIONS = ("server", "clients", "stats", "keyspace")
    INFO_EXTRA = ("commandstats", "errorstats")

    def _info(self, argv, sess):
        names = [a.decode("latin-1").lower() for a in argv[1:]]
        if not names or "default" in names:
            want = set(self.INFO_SECTIONS)
        else:
            want = set(names)
        if "all" in want or "everything" in want:
            want.update(self.INFO_SECTIONS + self.INFO_EXTRA)
        return _bulk(self.info(want).encode())

    def info(self, sections=None):
        """INFO text for `sections` (default: server, clients, stats, keyspace)."""
        want = set(self.INFO_SECTIONS if sections is None else sections)
        now = self._now()
        out = []
        if "server" in want:
            up = (now - self.started_ms) // 1000
            out.append(_info_section("Server", [
                ("redis_version", REDIS_VERSION), ("redis_mode", "standalone"),
                ("acceltcp_kv_version", SERVER_VERSION),
                ("os", "acceltcp user-level TCP stack, Python %d.%d.%d" % sys.version_info[:3]),
                ("arch_bits", 64), ("multiplexing_api", "acceltcp"),
                ("process_id", os.getpid()), ("tcp_port", self.port),
                ("server_time_usec", (now + self.epoch_ms) * 1000),
                ("uptime_in_seconds", up), ("uptime_in_days", up // 86400)]))
        if "clients" in want:
            out.append(_info_section("Clients", [("connected_clients", self.connected_clients)]))
        if "stats" in want:
            out.append(_info_section("Stats", [
                ("total_connections_received", self.connections_received),
                ("total_commands_processed", sum(c.calls for c in self.commands.values())),
                ("total_net_input_bytes", self.bytes_in),
                ("total_net_output_bytes", self.bytes_out),
                ("expired_keys", self.expired_keys),
                ("keyspace_hits", self.keyspace_hits),
                ("keyspace_misses", self.keyspace_misses),
                ("total_error_replies", self.error_replies),
                ("unknown_commands", self.unknown_commands),
                ("protocol_errors", self.protocol_errors)]))
        if "commandstats" in want:
            out.append(_info_section("Commandstats", [
                ("cmdstat_" + c.name, "calls=%d,rejected_calls=%d" % (c.calls, c.rejected))
                for c in self.commands.values() if c.calls or c.rejected]))
        if "errorstats" in want:
            out.append(_info_section("Errorstats", [
                ("errorstat_" + code, "count=%d" % n) for code, n in sorted(self.errors.items())]))
        if "keyspace" in want:
            lines = []
            if self.data:
                exp = self.expires
                avg = sum(max(0, d - now) for d in exp.values()) // len(exp) if exp else 0
                lines.append(("db0", "keys=%d,expires=%d,avg_ttl=%d"
                              % (len(self.data), len(exp), avg)))
            out.append(_info_section("Keyspace", lines))
        return "\r\n".join(out)

    def stats(self):
        """Counters as a JSON-able dict (what INFO shows, by name)."""
        return {
            "connections_received": self.connections_received,
            "connected_clients": self.connected_clients,
            "commands_processed": sum(c.calls for c in self.commands.values()),
            "commands": {c.name: c.calls for c in self.commands.values() if c.calls},
            "rejected_calls": {c.name: c.rejected for c in self.commands.values()
                               if c.rejected},
            "unknown_commands": self.unknown_commands,
            "error_replies": self.error_replies,
            "errors": dict(self.errors),
            "protocol_errors": self.protocol_errors,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "keys": len(self.data),
            "expires": len(self.expires),
            "expired_keys": self.expired_keys,
            "keyspace_hits": self.keyspace_hits,
            "keyspace_misses": self.keyspace_misses,
        }


def _info_section(title, fields):
    lines = ["# " + title]
    lines.extend("%s:%s" % kv for kv in fields)
    return "\r\n".join(lines) + "\r\n"
