"""RESP2, the Redis serialization protocol: the request parser a server needs, the
reply parser a client needs, and the encoders both use.

Theory of operation
-------------------
`RequestParser` turns a byte stream into commands (lists of `bytes` arguments), whatever
the segmentation: ``feed(data)`` returns the commands completed by `data`, in order, and
keeps the rest. It understands both request forms Redis accepts:

* multibulk: ``*<argc>\\r\\n`` then argc times ``$<len>\\r\\n<len bytes>\\r\\n``;
* inline: one line of space-separated words, with Redis's quoting (``"..."`` with
  backslash escapes including ``\\xHH``, ``'...'``), as sent by ``redis-benchmark -t
  ping_inline`` and by people typing into telnet.

Common case first, when no partial request is pending and the segment starts with ``*``:

* One request of one or two arguments whose framing was seen before: everything up to
  the last argument's body (``*2\r\n$3\r\nGET\r\n$16\r\n`` for every GET of a 16-byte
  key) is looked up in a shared table of such prefixes, filled only from requests the
  split path below parsed. A hit with the remaining length equal to the recorded
  argument length plus the final CRLF *is* that request with another last argument,
  whatever its bytes: one ``rfind`` and one dict lookup.
* Otherwise the segment is cut at every CRLF with one ``bytes.split`` and commands are
  read off the pieces: a request is accepted when its header and every ``$<len>`` piece
  are in two small tables of canonical headers and each argument piece has exactly the
  announced length. That proves the framing (an argument holding a CRLF would be longer
  than its piece), so a pipelined batch of small requests costs one split plus a few
  C-level comparisons per request.

Anything else -- a partial request, an inline command, a big or unusual header, an
argument containing CRLF -- continues in the general parser from the first byte not
consumed, with identical results.

The general parser is a state machine over (arguments so far, arguments left, length of
the bulk string being read). Unconsumed input waits in a buffer; while a bulk string's
body is incomplete the parser only appends to it (``_wait`` bytes are needed before it
looks again), and an unterminated line is searched for its terminator only in the new
bytes, so input is scanned once however it is split.

Malformed input never raises: the parser stops, sets ``error`` to Redis's message (e.g.
``"Protocol error: invalid bulk length"``) and returns the commands before the fault;
the server runs those, replies ``-ERR <error>`` and closes that connection, as Redis
does. Limits (Redis's defaults): a bulk string of more than 512 MB, an array of more than
1 Mi elements, a line (any header, or an inline request) longer than 64 KiB. The line
limit applies whether or not the terminator has arrived, so the verdict does not depend
on how the input was segmented. As in Redis, the two bytes after a bulk string's body are
skipped, not checked.

`ReplyParser` is the client side (`KvLoad`, tests): values are `bytes` (bulk), `None`
(nil), `int`, `Status` / `ReplyError` (``+`` / ``-`` lines, `str` subclasses) and lists.
"""

__all__ = [
    "RequestParser", "ReplyParser", "ProtocolError", "Status", "ReplyError",
    "encode_command", "encode", "bulk", "integer", "error", "simple", "array",
    "split_inline", "parse_int", "OK", "NIL", "NIL_ARRAY", "PONG", "EMPTY_ARRAY", "ZERO",
    "ONE", "MAX_BULK", "MAX_ARRAY", "MAX_LINE",
]

MAX_BULK = 512 * 1024 * 1024     # proto-max-bulk-len
MAX_ARRAY = 1024 * 1024          # elements of one multibulk request
MAX_LINE = 64 * 1024             # PROTO_INLINE_MAX_SIZE: any header or inline line

LLONG_MAX = (1 << 63) - 1
LLONG_MIN = -(1 << 63)

OK = b"+OK\r\n"
PONG = b"+PONG\r\n"
NIL = b"$-1\r\n"
NIL_ARRAY = b"*-1\r\n"
EMPTY_ARRAY = b"*0\r\n"
ZERO = b":0\r\n"
ONE = b":1\r\n"

# Canonical headers of small requests, for the split fast path: a dict hit both parses
# the number and proves the header has its canonical form (no "+1", "01", " 1").
_ARRAY_HEADERS = {b"*%d" % n: n for n in range(1, 1025)}
_BULK_HEADERS = {b"$%d" % n: n for n in range(0, 4097)}
# Framings of one-request segments of one or two arguments, up to the last argument's
# body -> (arguments before it, its length). Filled by the split path from requests it
# parsed (so every entry is a proven framing), shared by all parsers: a short-lived
# connection sends one request. Bounded; only ever a cache.
_SHAPES = {}
_SHAPES_MAX = 512


class ProtocolError(ValueError):
    """Malformed RESP from a server (`ReplyParser`)."""


class Status(str):
    """A ``+`` status reply."""

    __slots__ = ()

    def __repr__(self):
        return "Status(%s)" % str.__repr__(self)


class ReplyError(str):
    """A ``-`` error reply (the whole line: ``"ERR unknown command ..."``)."""

    __slots__ = ()

    @property
    def code(self):
        return self.split(" ", 1)[0]

    def __repr__(self):
        return "ReplyError(%s)" % str.__repr__(self)


def parse_int(s):
    """Redis's string2ll: an optional '-', digits, no leading zero (but "0"), no '+', no
    spaces, within a signed 64-bit integer. -> int, or None."""
    n = len(s)
    if n == 0 or n > 20:
        return None
    if s[0] == 45:                                   # '-'
        digits = s[1:]
        if not digits or digits[0] == 48:            # "-", "-0", "-01"
            return None
    else:
        digits = s
        if digits[0] == 48 and n > 1:                # "01"
            return None
    if not digits.isdigit():                         # bytes.isdigit: ASCII only
        return None
    v = int(s)
    if v > LLONG_MAX or v < LLONG_MIN:
        return None
    return v


# ---------------------------------------------------------------------- encoders
def bulk(value):
    """A bulk string reply."""
    return b"$%d\r\n%s\r\n" % (len(value), value)


def integer(n):
    return b":%d\r\n" % n


def simple(text):
    """A status reply; `text` (str or bytes) must not contain CR or LF."""
    if isinstance(text, str):
        text = text.encode()
    return b"+" + text + b"\r\n"


def error(message):
    """An error reply; CR and LF become spaces (as Redis's addReplyErrorFormat does), so
    an argument echoed into a message cannot break the framing."""
    if isinstance(message, str):
        message = message.encode("utf-8", "surrogateescape")
    return b"-" + message.replace(b"\r", b" ").replace(b"\n", b" ") + b"\r\n"


def array(items):
    """An array of already encoded replies."""
    return b"*%d\r\n" % len(items) + b"".join(items)


def encode_command(*args):
    """A command as a multibulk request (what every client sends). Arguments may be
    bytes, str or int."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        elif isinstance(a, int):
            a = b"%d" % a
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def encode(value):
    """The reference encoder: a Python value as a RESP2 reply (`ReplyParser` inverts it).
    bytes -> bulk, None -> nil bulk, int -> integer, Status / ReplyError -> line, list
    or tuple -> array."""
    if value is None:
        return NIL
    if isinstance(value, Status):
        return simple(str(value))
    if isinstance(value, ReplyError):
        return error(str(value))
    if isinstance(value, bool):
        raise TypeError("no RESP2 encoding for bool")
    if isinstance(value, int):
        return integer(value)
    if isinstance(value, (bytes, bytearray)):
        return bulk(bytes(value))
    if isinstance(value, (list, tuple)):
        return array([encode(v) for v in value])
    raise TypeError("no RESP2 encoding for %r" % type(value).__name__)


# ---------------------------------------------------------------------- inline commands
_HEX = {c: int(chr(c), 16) for c in b"0123456789abcdefABCDEF"}
_ESCAPES = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("b"): 8, ord("a"): 7}
_ISSPACE = frozenset(b" \t\n\v\f\r")         # C isspace(): between words, after quotes
_WORD_END = frozenset(b" \n\r\t")            # what ends an unquoted word (sdssplitargs)
_PLAIN_UNSAFE = (b'"', b"'", b"\0", b"\v", b"\f")


def split_inline(line):
    """Split an inline request into arguments exactly as Redis's sdssplitargs does.
    -> list of bytes (empty for a blank line), or None for unbalanced quotes. A NUL ends
    the line (Redis reads it as a C string)."""
    for c in _PLAIN_UNSAFE:
        if c in line:
            break
    else:
        return line.split()      # no quotes, no NUL, no \v\f: bytes.split() is identical
    nul = line.find(b"\0")
    if nul >= 0:
        line = line[:nul]
    out = []
    n = len(line)
    i = 0
    while True:
        while i < n and line[i] in _ISSPACE:
            i += 1
        if i >= n:
            return out
        cur = bytearray()
        inq = insq = False
        while True:
            c = line[i] if i < n else 0
            if inq:
                if (c == 92 and i + 3 < n and line[i + 1] == 120          # \xHH
                        and line[i + 2] in _HEX and line[i + 3] in _HEX):
                    cur.append(_HEX[line[i + 2]] * 16 + _HEX[line[i + 3]])
                    i += 3
                elif c == 92 and i + 1 < n:
                    i += 1
                    cur.append(_ESCAPES.get(line[i], line[i]))
                elif c == 34:                                            # closing "
                    if i + 1 < n and line[i + 1] not in _ISSPACE:
                        return None
                    i += 1
                    break
                elif i >= n:
                    return None
                else:
                    cur.append(c)
            elif insq:
                if c == 92 and i + 1 < n and line[i + 1] == 39:          # \'
                    i += 1
                    cur.append(39)
                elif c == 39:                                            # closing '
                    if i + 1 < n and line[i + 1] not in _ISSPACE:
                        return None
                    i += 1
                    break
                elif i >= n:
                    return None
                else:
                    cur.append(c)
            else:
                if i >= n or c in _WORD_END:
                    break
                if c == 34:
                    inq = True
                elif c == 39:
                    insq = True
                else:
                    cur.append(c)
            i += 1
        out.append(bytes(cur))


# ---------------------------------------------------------------------- request parser
class RequestParser:
    """Incremental RESP2 request parser (server side). See the module docstring.

    ``feed(data) -> [argv, ...]``; ``error``: None, or the protocol error message that
    stopped it (it then ignores further input); ``pending``: bytes waiting; ``held``:
    bytes of the incomplete request held (waiting bytes and arguments read so far)."""

    __slots__ = ("error", "_buf", "_wait", "_scan", "_args", "_left", "_need", "_held")

    def __init__(self):
        self.error = None
        self._buf = bytearray()   # input not consumed yet
        self._wait = 0            # len(_buf) needed before parsing can progress
        self._scan = 0            # no line terminator in _buf before this offset
        self._args = None         # arguments of the multibulk request being read
        self._left = 0            # arguments still to read
        self._need = -1           # length of the bulk being read; -1: its header next
        self._held = 0            # bytes of the arguments in _args

    @property
    def pending(self):
        return len(self._buf)

    @property
    def held(self):
        return len(self._buf) + self._held

    def feed(self, data):
        buf = self._buf
        if buf:
            buf += data
            if len(buf) < self._wait:
                return []
            data = bytes(buf)
            self._buf = bytearray()
            return self._parse(data, [], self._scan)
        if self.error is not None or not data:
            return []
        if self._args is None and data[0] == 42:           # '*': the fast paths
            k = data.rfind(b"\r\n", 0, -2)
            shape = _SHAPES.get(data[:k + 2])
            if shape is not None and len(data) - k - 4 == shape[1] and data[-2:] == b"\r\n":
                return [shape[0] + [data[k + 2:-2]]]
            return self._split(data)
        return self._parse(data, [], 0)

    def _split(self, data):
        """The split fast path (module docstring); the general parser takes over at the
        first request it cannot prove."""
        parts = data.split(b"\r\n")
        last = len(parts) - 1             # parts[last]: the bytes after the final CRLF
        i = 0
        out = []
        arrays = _ARRAY_HEADERS
        lengths = _BULK_HEADERS.get
        while i < last:
            argc = arrays.get(parts[i])
            if argc is None:
                break
            j = i + 1 + 2 * argc
            if j > last:
                break
            args = parts[i + 2:j:2]
            for h, a in zip(parts[i + 1:j:2], args):
                if lengths(h) != len(a):
                    break
            else:
                out.append(args)
                i = j
                continue
            break
        if i == last and not parts[last]:
            if i <= 5 and len(out) == 1:
                # One request of one or two arguments: remember its framing up to the
                # last argument (``*2 $3 GET $16`` is the same for every such GET).
                if len(_SHAPES) >= _SHAPES_MAX:
                    _SHAPES.clear()
                a = out[0]
                _SHAPES[data[:len(data) - len(a[-1]) - 2]] = (a[:-1], len(a[-1]))
            return out
        if i:
            data = data[sum(map(len, parts[:i])) + 2 * i:]
        return self._parse(data, out, 0)

    def _fail(self, message, out):
        self.error = "Protocol error: " + message
        self._buf = bytearray()
        self._args = None
        self._held = 0
        self._wait = 0
        return out

    def _parse(self, data, out, scan):
        """The general state machine over `data` (all unconsumed input); `scan`: where to
        search for the first line terminator."""
        if self.error is not None:
            return out
        pos = 0
        end = len(data)
        args = self._args
        left = self._left
        need = self._need
        held = self._held
        while True:
            if args is None:                                     # a new request
                if pos >= end:
                    break
                if data[pos] == 42:                              # '*' multibulk
                    nl = data.find(b"\r\n", scan if scan > pos else pos)
                    scan = 0
                    if nl < 0 or nl - pos > MAX_LINE:
                        if _line_too_long(data, pos, nl):
                            return self._fail("too big mbulk count string", out)
                        break
                    n = parse_int(data[pos + 1:nl])
                    if n is None or n > MAX_ARRAY:
                        return self._fail("invalid multibulk length", out)
                    pos = nl + 2
                    if n > 0:
                        args = []
                        left = n
                        need = -1
                        held = 0
                    continue
                nl = data.find(b"\n", scan if scan > pos else pos)   # inline
                scan = 0
                if nl < 0:
                    if _line_too_long(data, pos, -1):
                        return self._fail("too big inline request", out)
                    break
                cr = nl > pos and data[nl - 1] == 13       # the line ends at CRLF or LF
                if nl - cr - pos > MAX_LINE:
                    return self._fail("too big inline request", out)
                line = data[pos:nl - cr]
                pos = nl + 1
                argv = split_inline(line)
                if argv is None:
                    return self._fail("unbalanced quotes in request", out)
                if argv:
                    out.append(argv)
                continue
            if need < 0:                                         # a bulk header
                if pos >= end:
                    break
                if data[pos] != 36:                              # '$'
                    return self._fail("expected '$', got '%s'" % chr(data[pos]), out)
                nl = data.find(b"\r\n", scan if scan > pos else pos)
                scan = 0
                if nl < 0 or nl - pos > MAX_LINE:
                    if _line_too_long(data, pos, nl):
                        return self._fail("too big bulk count string", out)
                    break
                n = parse_int(data[pos + 1:nl])
                if n is None or n < 0 or n > MAX_BULK:
                    return self._fail("invalid bulk length", out)
                pos = nl + 2
                need = n
            if end - pos < need + 2:
                break
            args.append(data[pos:pos + need])
            held += need
            pos += need + 2
            need = -1
            left -= 1
            if not left:
                out.append(args)
                args = None
        self._args = args
        self._left = left
        self._need = need
        self._held = held if args is not None else 0
        if pos < end:
            rest = self._buf = bytearray(memoryview(data)[pos:])
            if args is not None and need >= 0:
                self._wait = need + 2
                self._scan = 0
            else:
                self._wait = 0
                self._scan = len(rest) - 1       # a CRLF may straddle the next feed
        else:
            self._wait = self._scan = 0
        return out


def _line_too_long(data, pos, nl):
    """The line starting at `pos` is known to exceed MAX_LINE: its CRLF is at `nl`, or
    not in `data` yet (-1; a final CR may begin it)."""
    if nl >= 0:
        return nl - pos > MAX_LINE
    n = len(data) - pos
    if data[-1] == 13:
        n -= 1
    return n > MAX_LINE


# ---------------------------------------------------------------------- reply parser
class _Incomplete(Exception):
    def __init__(self, need):
        self.need = need


class ReplyParser:
    """Incremental RESP2 reply parser (client side): ``feed(data) -> [value, ...]``;
    raises `ProtocolError` on malformed input. An incomplete reply is parsed again from
    its start only once at least the bytes it was known to need have arrived."""

    __slots__ = ("_buf", "_wait")

    def __init__(self):
        self._buf = bytearray()   # an incomplete reply's bytes (appended to: O(n) total)
        self._wait = 0

    @property
    def pending(self):
        return len(self._buf)

    def feed(self, data):
        if self._buf:
            self._buf += data
            if len(self._buf) < self._wait:
                return []
            buf = bytes(self._buf)
        else:
            buf = bytes(data)
            if len(buf) < self._wait:
                self._buf += buf
                return []
        out = []
        pos = 0
        end = len(buf)
        while pos < end:
            try:
                value, pos2 = self._value(buf, pos)
            except _Incomplete as e:
                self._wait = e.need - pos
                break
            out.append(value)
            pos = pos2
        else:
            self._wait = 0
        self._buf = bytearray(memoryview(buf)[pos:])
        return out

    def _line(self, buf, pos):
        nl = buf.find(b"\r\n", pos)
        if nl < 0:
            raise _Incomplete(len(buf) + 1)
        return buf[pos + 1:nl], nl + 2

    def _value(self, buf, pos):
        t = buf[pos]
        line, nxt = self._line(buf, pos)
        if t == 36:                                   # '$'
            n = self._int(line)
            if n < 0:
                if n != -1:
                    raise ProtocolError("bad bulk length %r" % line)
                return None, nxt
            if len(buf) < nxt + n + 2:
                raise _Incomplete(nxt + n + 2)
            if buf[nxt + n:nxt + n + 2] != b"\r\n":
                raise ProtocolError("bulk string not followed by CRLF")
            return buf[nxt:nxt + n], nxt + n + 2
        if t == 43:                                   # '+'
            return Status(line.decode("utf-8", "surrogateescape")), nxt
        if t == 45:                                   # '-'
            return ReplyError(line.decode("utf-8", "surrogateescape")), nxt
        if t == 58:                                   # ':'
            return self._int(line), nxt
        if t == 42:                                   # '*'
            n = self._int(line)
            if n < 0:
                if n != -1:
                    raise ProtocolError("bad array length %r" % line)
                return None, nxt
            items = []
            for _ in range(n):
                if nxt >= len(buf):
                    raise _Incomplete(nxt + 1)
                v, nxt = self._value(buf, nxt)
                items.append(v)
            return items, nxt
        raise ProtocolError("unknown reply type %r" % chr(t))

    @staticmethod
    def _int(line):
        v = parse_int(line)
        if v is None:
            raise ProtocolError("bad integer %r" % line)
        return v
