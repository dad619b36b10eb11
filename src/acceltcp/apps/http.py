"""HTTP/1.1 message framing for the load balancer (RFC 9110, RFC 9112), without I/O.

Theory of operation
-------------------
A proxy needs less of HTTP than a server: where each message starts and ends, whether
the connection persists after it, and the few fields that decide those. Bodies are
never decoded -- they are forwarded byte for byte -- so this module only *frames*:

* `head_end(buf, start)` finds the blank line that ends a head. Lines end in CRLF; a
  bare LF is accepted as well (RFC 9112 §2.2 allows it), a bare CR is not. Searching
  resumes near where the previous search stopped (``start``), so a head that trickles
  in costs linear time.
* `parse_request(head)` / `parse_response(head, method)` validate the whole head and
  return a `Request` / `Response`: request line (strict: one SP between parts, a token
  method, a visible-ASCII target) or status line, and every field line (token name, no
  whitespace before the colon, no obs-fold, no control characters in values). Errors
  raise `HttpError` with the status a server answers (400 malformed, 505 a major
  version other than 1; the proxy turns a bad *response* into 502).
* Message length follows RFC 9112 §6.3. Requests: ``Transfer-Encoding`` whose last
  coding is ``chunked`` (anything else, chunked applied twice, TE in HTTP/1.0 or TE
  together with Content-Length is a 400 -- these are the request-smuggling shapes), else
  ``Content-Length`` (all values equal), else no body. Responses: no body for HEAD, 1xx,
  204 and 304; chunked; Content-Length; else the body runs until the server closes.
* `ChunkedScanner` walks a chunked body as it streams past and says where it ends
  (size lines, data, CRLFs, trailers), without copying the data it skips.
* Persistence: HTTP/1.1 persists unless ``Connection: close``; HTTP/1.0 only with
  ``Connection: keep-alive``. A close-delimited response never persists.

Field names are kept as received (`fields`: ``(name, value)`` pairs, value without
surrounding whitespace), and the raw `head` is kept so that a proxy can forward it
unchanged or rewrite it (`rewrite_head`).
"""

import re

__all__ = ["HttpError", "Request", "Response", "ChunkedScanner", "head_end",
           "parse_request", "parse_response", "rewrite_head", "error_response",
           "REASONS", "BODY_NONE", "BODY_LENGTH", "BODY_CHUNKED", "BODY_CLOSE"]

#: How a message body is delimited.
BODY_NONE = 0        # no body (or a 1xx interim response)
BODY_LENGTH = 1      # Content-Length bytes
BODY_CHUNKED = 2     # chunked transfer coding, ends with the last chunk and trailers
BODY_CLOSE = 3       # response only: until the server closes the connection

REASONS = {
    100: "Continue", 101: "Switching Protocols", 200: "OK", 204: "No Content",
    304: "Not Modified", 400: "Bad Request", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 413: "Content Too Large",
    500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout", 505: "HTTP Version Not Supported",
}

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([\x21-\x7e]+) HTTP/([0-9])\.([0-9])")
_STATUS_LINE = re.compile(rb"HTTP/([0-9])\.([0-9]) ([0-9]{3})(?: [\t\x20-\x7e\x80-\xff]*)?")
# A field line without its terminator: name ":" OWS value, the value without controls
# (HTAB allowed, obs-text allowed); trailing OWS is stripped by the caller.
_FIELD = re.compile(rb"(" + _TOKEN + rb"):[ \t]*([^\x00-\x08\x0a-\x1f\x7f]*)")
# All field lines at once (the fast path): each line is name ":" OWS value, ending in
# CRLF or a bare LF; findall gives (name, value), the value's trailing OWS still on it.
_FIELD_LINES = re.compile(rb"(?:" + _TOKEN + rb":[ \t]*[^\x00-\x08\x0a-\x1f\x7f]*\r?\n)*")
_FIELD_PAIRS = re.compile(rb"(" + _TOKEN + rb"):[ \t]*([^\x00-\x08\x0a-\x1f\x7f]*)\r?\n")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
_MAX_LINE = 8192          # a chunk-size or trailer line longer than this is an error
_MAX_LENGTH = 1 << 62     # a Content-Length beyond this is an error, not a number to trust
_SPECIAL = frozenset((b"content-length", b"transfer-encoding", b"connection", b"host",
                      b"upgrade"))


class HttpError(Exception):
    """A message that cannot be framed: `status` is the code a server answers with,
    `detail` says what was wrong (for counters, logs and 4xx bodies)."""

    def __init__(self, status, detail):
        super().__init__(status, detail)
        self.status = status
        self.detail = detail

    def __str__(self):
        return "%d %s: %s" % (self.status, REASONS.get(self.status, ""), self.detail)


def head_end(buf, start=0):
    """Index just past the blank line that ends the head in ``buf`` (searching from
    ``start``; resume at ``max(0, len(old) - 2)`` when data was appended), or -1."""
    i = buf.find(b"\n\r\n", start)
    j = buf.find(b"\n\n", start, i + 1 if i >= 0 else len(buf))
    if j >= 0:
        return j + 2
    return i + 3 if i >= 0 else -1


def _split(head):
    """(first line without its terminator, the field lines with theirs)."""
    blank = 2 if head.endswith(b"\n\r\n") else 1
    i = head.find(b"\n")
    if i < 0 or i >= len(head) - blank:         # no field lines
        i = len(head) - blank
        first = head[:i - 1] if i > 0 else b""
        return (first[:-1] if first[-1:] == b"\r" else first), b""
    first = head[:i]
    return (first[:-1] if first[-1:] == b"\r" else first), head[i + 1:len(head) - blank]


def _field_pairs(block):
    """The (name, value) pairs of the field lines; HttpError(400) naming the first bad
    line.  All lines are checked by one regex; only a failing head is walked per line."""
    if _FIELD_LINES.fullmatch(block):
        return [(n, v.rstrip(b" \t")) for n, v in _FIELD_PAIRS.findall(block)]
    match = _FIELD.fullmatch
    for line in block.split(b"\n"):
        if line[-1:] == b"\r":
            line = line[:-1]
        if match(line) is None:
            if line[:1] in (b" ", b"\t"):
                raise HttpError(400, "obsolete line folding")
            raise HttpError(400, "malformed header field")
    raise HttpError(400, "malformed header field")    # not reached: a line failed


def _tokens(value):
    return [t.strip(b" \t").lower() for t in value.split(b",")]


def _content_length(value, known):
    if value.isdigit():
        n = int(value) if len(value) < 19 else _MAX_LENGTH
    else:
        vals = {v.strip(b" \t") for v in value.split(b",")}
        if len(vals) != 1 or not next(iter(vals)).isdigit():
            raise HttpError(400, "invalid Content-Length")
        v = vals.pop()
        n = int(v) if len(v) < 19 else _MAX_LENGTH
    if n >= _MAX_LENGTH:
        raise HttpError(400, "Content-Length too large")
    if known is not None and known != n:
        raise HttpError(400, "conflicting Content-Length values")
    return n


class _Head:
    __slots__ = ("version", "fields", "head", "length", "body", "keep_alive", "upgrade")

    def _fields(self, block, is_request):
        """Validate the field lines; set framing and persistence attributes."""
        fields = _field_pairs(block)
        length = None
        te = None
        conn = ()
        hosts = 0
        upgrade = False
        for name, value in fields:
            lname = name.lower()
            if lname in _SPECIAL:
                if lname == b"content-length":
                    length = _content_length(value, length)
                elif lname == b"transfer-encoding":
                    te = (te or []) + _tokens(value)
                elif lname == b"connection":
                    conn = conn + tuple(_tokens(value))
                elif lname == b"host":
                    hosts += 1
                else:
                    upgrade = True
        if hosts > 1 and is_request:
            raise HttpError(400, "more than one Host field")
        self.fields = fields
        self.upgrade = upgrade and b"upgrade" in conn
        v11 = self.version == 11
        self.keep_alive = (b"close" not in conn) and (v11 or b"keep-alive" in conn)
        return length, te


class Request(_Head):
    """A parsed request head. `method`, `target` (bytes), `version` (10 or 11), `fields`,
    `head` (the raw bytes), `body` (BODY_NONE/LENGTH/CHUNKED), `length` (Content-Length
    or 0), `keep_alive`, `upgrade` (Upgrade + Connection: upgrade)."""

    __slots__ = ("method", "target")

    @property
    def path(self):
        """The target's path, without query (absolute-form: the part after the
        authority; ``*``: ``b"*"``)."""
        t = self.target
        if t[:1] != b"/":
            i = t.find(b"://")
            if i < 0:
                return t
            j = t.find(b"/", i + 3)
            t = t[j:] if j >= 0 else b"/"
        q = t.find(b"?")
        return t if q < 0 else t[:q]

    def __repr__(self):
        return "<Request %s %s HTTP/1.%d>" % (self.method.decode(), self.target.decode(),
                                              self.version % 10)


def parse_request(head):
    """A request head (bytes, up to and including its blank line) -> `Request`;
    `HttpError` (400, 505) if it is not a valid HTTP/1.x request head."""
    line, block = _split(head)
    if not line and not block:
        raise HttpError(400, "empty request")
    m = _REQUEST_LINE.fullmatch(line)
    if m is None:
        raise HttpError(400, "malformed request line")
    method, target, major, minor = m.groups()
    if major != b"1":
        raise HttpError(505 if major != b"0" else 400, "HTTP/%s.%s not supported"
                        % (major.decode(), minor.decode()))
    r = Request()
    r.method = method
    r.target = target
    r.version = 10 if minor == b"0" else 11
    r.head = head
    length, te = r._fields(block, True)
    if te is not None:
        if r.version == 10:
            raise HttpError(400, "Transfer-Encoding in an HTTP/1.0 request")
        if te[-1] != b"chunked" or te.count(b"chunked") != 1:
            raise HttpError(400, "Transfer-Encoding must end with chunked (once)")
        if length is not None:
            raise HttpError(400, "both Transfer-Encoding and Content-Length")
        r.body = BODY_CHUNKED
        r.length = 0
    elif length:
        r.body = BODY_LENGTH
        r.length = length
    else:
        r.body = BODY_NONE
        r.length = 0
    return r


class Response(_Head):
    """A parsed response head. `status` (int), `version`, `fields`, `head`, `body`
    (BODY_*), `length`, `keep_alive` (False when close-delimited), `interim` (1xx)."""

    __slots__ = ("status",)

    @property
    def interim(self):
        return self.status < 200

    def __repr__(self):
        return "<Response %d HTTP/1.%d>" % (self.status, self.version % 10)


def parse_response(head, method=b"GET"):
    """A response head -> `Response`, framed for a request of ``method``; `HttpError`
    (status 502: what a proxy answers for an invalid response) if it is invalid."""
    line, block = _split(head)
    m = _STATUS_LINE.fullmatch(line)
    if m is None:
        raise HttpError(502, "malformed status line")
    major, minor, status = m.groups()
    if major != b"1":
        raise HttpError(502, "response version HTTP/%s.%s" % (major.decode(), minor.decode()))
    r = Response()
    r.status = status = int(status)
    r.version = 10 if minor == b"0" else 11
    r.head = head
    try:
        length, te = r._fields(block, False)
    except HttpError as e:
        raise HttpError(502, "response: " + e.detail) from None
    r.length = 0
    if status < 200 or status == 204 or status == 304 or method == b"HEAD":
        r.body = BODY_NONE
    elif te is not None:
        if length is not None:
            raise HttpError(502, "response with both Transfer-Encoding and Content-Length")
        if te[-1] == b"chunked" and te.count(b"chunked") == 1:
            r.body = BODY_CHUNKED
        else:
            r.body = BODY_CLOSE
    elif length is not None:
        r.body = BODY_LENGTH if length else BODY_NONE
        r.length = length
    else:
        r.body = BODY_CLOSE
    if r.body == BODY_CLOSE:
        r.keep_alive = False
    return r


def rewrite_head(req, add=b"", drop=frozenset()):
    """``req.head`` with the fields named in ``drop`` (lowercase bytes) removed and the
    lines ``add`` (each ending in CRLF) appended after the last field. Without
    anything to drop the head is spliced, not re-serialized; with, it is rebuilt from
    the request line and the remaining fields (CRLF line ends)."""
    head = req.head
    if not drop:
        if not add:
            return head
        blank = 2 if head.endswith(b"\n\r\n") else 1
        return b"".join((head[:len(head) - blank], add, head[len(head) - blank:]))
    out = [b"%s %s HTTP/1.%d\r\n" % (req.method, req.target, req.version % 10)]
    for name, value in req.fields:
        if name.lower() not in drop:
            out.append(b"%s: %s\r\n" % (name, value))
    out.append(add)
    out.append(b"\r\n")
    return b"".join(out)


def error_response(status, detail=None, head_only=False):
    """A complete ``Connection: close`` response the proxy sends itself. ``detail``
    (str) goes into the text body; ``head_only`` for a HEAD request (no body)."""
    reason = REASONS.get(status, "Error")
    body = ("%d %s%s\n" % (status, reason, ": " + detail if detail else "")).encode()
    head = (b"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
            b"Connection: close\r\nCache-Control: no-store\r\n\r\n"
            % (status, reason.encode(), len(body)))
    return head if head_only else head + body


class ChunkedScanner:
    """Finds the end of a chunked body streaming past (RFC 9112 §7.1). ``scan(data)`` ->
    how many of these bytes belong to the body; `done` once the last chunk and the
    trailer section have passed (then the rest of ``data`` is not part of it).
    `HttpError` (400) on a malformed chunk; ``error_status`` makes it e.g. 502."""

    __slots__ = ("done", "_state", "_left", "_line", "_status")

    _SIZE, _DATA, _DATA_END, _TRAILER = range(4)

    def __init__(self, error_status=400):
        self.done = False
        self._state = self._SIZE
        self._left = 0
        self._line = b""
        self._status = error_status

    def _fail(self, detail):
        raise HttpError(self._status, detail)

    def scan(self, data):
        pos = 0
        n = len(data)
        state = self._state
        while pos < n:
            if state == self._DATA:
                take = n - pos
                left = self._left
                if take >= left:
                    pos += left
                    self._left = 0
                    state = self._DATA_END
                else:
                    self._left = left - take
                    pos = n
                continue
            nl = data.find(b"\n", pos)
            if nl < 0:
                self._line += data[pos:]
                if len(self._line) > _MAX_LINE:
                    self._fail("chunk line too long")
                pos = n
                break
            line = data[pos:nl]
            if self._line:
                line = self._line + line
                self._line = b""
            pos = nl + 1
            if line[-1:] == b"\r":
                line = line[:-1]
            if len(line) > _MAX_LINE:
                self._fail("chunk line too long")
            if state == self._SIZE:
                size = line.split(b";", 1)[0].rstrip(b" \t")
                if _HEX.fullmatch(size) is None or b"\r" in line:
                    self._fail("malformed chunk size")
                size = int(size, 16)
                if size:
                    self._left = size
                    state = self._DATA
                else:
                    state = self._TRAILER
            elif state == self._DATA_END:
                if line:
                    self._fail("chunk data longer than its size")
                state = self._SIZE
            else:                                           # trailer section
                if not line:
                    self.done = True
                    self._state = state
                    return pos
                if _FIELD.fullmatch(line) is None:
                    self._fail("malformed trailer field")
        self._state = state
        return pos
