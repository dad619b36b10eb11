"""apps.http, the load balancer's HTTP/1.1 framing: request and response heads (valid
ones split anywhere parse identically to the whole; malformed ones are 400/505), message
length per RFC 9112 §6.3 (the request-smuggling shapes refused), chunked bodies found
exactly however they are cut, header rewriting."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from acceltcp.apps.http import (BODY_CHUNKED, BODY_CLOSE, BODY_LENGTH, BODY_NONE,
                                ChunkedScanner, HttpError, error_response, head_end,
                                parse_request, parse_response, rewrite_head)

TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_token = st.text(alphabet=TCHAR, min_size=1, max_size=12).map(str.encode)
_vchar = st.text(alphabet=[chr(c) for c in range(0x21, 0x7F)], min_size=1, max_size=20)
# field values: visible characters with single spaces/tabs inside, and obs-text
_value = st.lists(st.one_of(_vchar.map(str.encode), st.sampled_from([b" ", b"\t", b"\xe9"])),
                  max_size=6).map(b"".join).map(lambda v: v.strip(b" \t"))
_ordinary_name = _token.filter(lambda n: n.lower() not in (
    b"content-length", b"transfer-encoding", b"connection", b"host", b"upgrade"))


@st.composite
def request_heads(draw):
    """-> (head bytes, method, target, version, fields, eol)."""
    method = draw(_token)
    target = b"/" + draw(st.text(alphabet=[chr(c) for c in range(0x21, 0x7F)],
                                 max_size=30)).encode()
    version = draw(st.sampled_from([10, 11]))
    fields = draw(st.lists(st.tuples(_ordinary_name, _value), max_size=8))
    if draw(st.booleans()):
        fields.insert(draw(st.integers(0, len(fields))), (b"Host", b"example.com"))
    if draw(st.booleans()):
        fields.append((b"Content-Length", str(draw(st.integers(0, 10**6))).encode()))
    eols = draw(st.lists(st.sampled_from([b"\r\n", b"\n"]), min_size=len(fields) + 2,
                         max_size=len(fields) + 2))
    ows = draw(st.lists(st.sampled_from([b"", b" ", b"\t", b"  "]), min_size=2 * len(fields),
                        max_size=2 * len(fields)))
    lines = [b"%s %s HTTP/1.%d" % (method, target, version % 10)]
    for i, (n, v) in enumerate(fields):
        lines.append(n + b":" + ows[2 * i] + v + ows[2 * i + 1])
    head = b"".join(line + eol for line, eol in zip(lines + [b""], eols, strict=True))
    return head, method, target, version, fields


def _split(data, cuts):
    cuts = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)], strict=True)]


def _incremental_end(chunks):
    """head_end over data arriving in chunks, resuming the search as the lb does."""
    buf = b""
    scan = 0
    for chunk in chunks:
        buf += chunk
        end = head_end(buf, scan)
        if end >= 0:
            return end, buf
        scan = max(0, len(buf) - 2)
    return -1, buf


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request_heads(), st.binary(max_size=40), st.lists(st.integers(0, 10**6), max_size=6))
def test_valid_heads_split_anywhere_parse_like_the_whole(h, tail, cuts):
    head, method, target, version, fields = h
    end, buf = _incremental_end(_split(head + tail, cuts))
    assert end == len(head)                 # the first blank line, wherever the cuts are
    whole = parse_request(head)
    again = parse_request(buf[:end])
    for r in (whole, again):
        assert (r.method, r.target, r.version) == (method, target, version)
        assert r.fields == fields
        assert r.keep_alive is (version == 11)
    cl = [int(v) for n, v in fields if n == b"Content-Length"]
    assert whole.body == (BODY_LENGTH if cl and cl[0] else BODY_NONE)
    assert whole.length == (cl[0] if cl else 0)


@settings(max_examples=200, deadline=None)
@given(request_heads(), st.sampled_from([
    ("line", b"GET  / HTTP/1.1"), ("line", b"GET / HTTP/1.1 "), ("line", b"G@T / HTTP/1.1"),
    ("line", b"GET / HTTP/1"), ("line", b"GET / http/1.1"), ("line", b"GET /\x7f HTTP/1.1"),
    ("line", b"GET / HTTP/0.9"),
    ("field", b"Bad Name: x"), ("field", b"Name : x"), ("field", b" folded"),
    ("field", b"\tfolded"), ("field", b"X: a\x00b"), ("field", b"X: a\rb"), ("field", b"X: a\x1bb"),
    ("field", b"nocolon"), ("field", b": empty-name"), ("field", b"Content-Length: 1x"),
    ("field", b"Content-Length: -1"), ("field", b"Content-Length: 1, 2"),
    ("field", b"Transfer-Encoding: gzip"), ("field", b"Transfer-Encoding: chunked, chunked"),
]))
def test_malformed_heads_are_400(h, bad):
    head, *_ = h
    where, text = bad
    lines = head.split(b"\n")
    if where == "line":
        lines[0] = text + b"\r"
    else:
        lines.insert(1, text + b"\r")
    with pytest.raises(HttpError) as e:
        parse_request(b"\n".join(lines))
    assert e.value.status == 400


def test_version_and_smuggling_shapes():
    with pytest.raises(HttpError) as e:
        parse_request(b"PRI * HTTP/2.0\r\n\r\n")
    assert e.value.status == 505
    for head in (
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n",
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    ):
        with pytest.raises(HttpError) as e:
            parse_request(head)
        assert e.value.status == 400, head
    r = parse_request(b"POST / HTTP/1.1\r\nContent-Length: 7, 7\r\nContent-Length: 7\r\n\r\n")
    assert (r.body, r.length) == (BODY_LENGTH, 7)
    r = parse_request(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
    assert r.body == BODY_CHUNKED
    r = parse_request(b"GET / HTTP/1.1\n\n")            # bare LF line ends (RFC 9112 §2.2)
    assert r.target == b"/" and r.fields == []


def test_persistence_and_paths():
    def req(version, conn=None, target=b"/"):
        c = b"Connection: %s\r\n" % conn if conn else b""
        return parse_request(b"GET %s HTTP/1.%d\r\n%s\r\n" % (target, version, c))
    assert req(1).keep_alive and not req(1, b"close").keep_alive
    assert not req(1, b"Keep-Alive, CLOSE").keep_alive
    assert not req(0).keep_alive and req(0, b"keep-alive").keep_alive
    assert req(1, b"Upgrade").upgrade is False           # Upgrade field missing
    r = parse_request(b"GET /ws HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n")
    assert r.upgrade
    assert req(1, target=b"/a/b?c=/d").path == b"/a/b"
    assert req(1, target=b"http://h:80/x/y?z").path == b"/x/y"
    assert req(1, target=b"http://h").path == b"/"
    assert req(1, target=b"*").path == b"*"


@pytest.mark.parametrize("head,method,body,length,keep", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", b"GET", BODY_LENGTH, 12, True),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", b"HEAD", BODY_NONE, 0, True),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", b"GET", BODY_NONE, 0, True),
    (b"HTTP/1.1 204 No Content\r\n\r\n", b"GET", BODY_NONE, 0, True),
    (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n", b"GET", BODY_NONE, 0, True),
    (b"HTTP/1.1 100 Continue\r\n\r\n", b"POST", BODY_NONE, 0, True),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"GET", BODY_CHUNKED, 0, True),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", b"GET", BODY_CLOSE, 0, False),
    (b"HTTP/1.1 200 OK\r\n\r\n", b"GET", BODY_CLOSE, 0, False),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n", b"GET", BODY_LENGTH, 3, False),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\n", b"GET",
     BODY_LENGTH, 3, True),
    (b"HTTP/1.1 200\r\nContent-Length: 3\r\nConnection: close\r\n\r\n", b"GET",
     BODY_LENGTH, 3, False),
])
def test_response_framing(head, method, body, length, keep):
    r = parse_response(head, method)
    assert (r.body, r.length, r.keep_alive) == (body, length, keep)


@pytest.mark.parametrize("head", [
    b"HTTP/1.1 2000 OK\r\n\r\n", b"HTTP/2 200 OK\r\n\r\n", b"HTTP/1.1 200 OK\r\nX : y\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", b"ICY 200 OK\r\n\r\n",
])
def test_invalid_responses_are_502(head):
    with pytest.raises(HttpError) as e:
        parse_response(head)
    assert e.value.status == 502


def _chunked(data, sizes, ext, trailers):
    out = []
    i = 0
    for n in sizes:
        piece = data[i:i + n]
        if not piece:
            break
        out.append(b"%x%s\r\n%s\r\n" % (len(piece), ext, piece))
        i += len(piece)
    if i < len(data):
        out.append(b"%X\r\n%s\r\n" % (len(data) - i, data[i:]))
    out.append(b"0%s\r\n" % ext)
    out.extend(b"%s: %s\r\n" % t for t in trailers)
    out.append(b"\r\n")
    return b"".join(out)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000), st.lists(st.integers(1, 700), max_size=8),
       st.sampled_from([b"", b";a=b", b' ; q="x;y"']),
       st.lists(st.tuples(_token, _vchar.map(str.encode)), max_size=2),
       st.binary(max_size=30), st.lists(st.integers(0, 10**6), max_size=8))
def test_chunked_end_found_however_cut(data, sizes, ext, trailers, after, cuts):
    body = _chunked(data, sizes, ext, trailers)
    sc = ChunkedScanner()
    taken = 0
    for piece in _split(body + after, cuts):
        if sc.done:
            break
        n = sc.scan(piece)
        assert n <= len(piece)
        taken += n
        if not sc.done:
            assert n == len(piece)
    assert sc.done and taken == len(body)


@pytest.mark.parametrize("bad", [b"zz\r\n", b"5\r\nhelloX\r\n", b"-1\r\n",
                                 b"0\r\nbad trailer\r\n\r\n", b"1" * 17 + b"\r\n"])
def test_chunked_malformed(bad):
    with pytest.raises(HttpError) as e:
        ChunkedScanner(502).scan(bad + b"0\r\n\r\n")
    assert e.value.status == 502


def test_head_end_forms():
    assert head_end(b"GET / HTTP/1.1\r\n\r\nrest") == 18
    assert head_end(b"GET / HTTP/1.1\n\nrest") == 16
    assert head_end(b"GET / HTTP/1.1\r\n\nrest") == 17
    assert head_end(b"GET / HTTP/1.1\nA: b\n\r\n") == 22
    assert head_end(b"GET / HTTP/1.1\r\nA: b\r\n") == -1
    assert head_end(b"GET / HTTP/1.1\r\n\r") == -1


def test_rewrite_head():
    r = parse_request(b"GET /x HTTP/1.1\r\nHost: h\r\nUser-Agent: a\r\nX-Secret: s\r\n\r\n")
    add = b"X-Forwarded-For: 1.2.3.4\r\n"
    assert rewrite_head(r, add) == (b"GET /x HTTP/1.1\r\nHost: h\r\nUser-Agent: a\r\n"
                                    b"X-Secret: s\r\n" + add + b"\r\n")
    assert rewrite_head(r) is r.head
    out = rewrite_head(r, b"User-Agent: lb\r\n", frozenset([b"x-secret", b"user-agent"]))
    assert out == b"GET /x HTTP/1.1\r\nHost: h\r\nUser-Agent: lb\r\n\r\n"
    lf = parse_request(b"GET / HTTP/1.0\nHost: h\n\n")
    assert rewrite_head(lf, add) == b"GET / HTTP/1.0\nHost: h\n" + add + b"\n"
    again = parse_request(rewrite_head(lf, add))
    assert again.fields == [(b"Host", b"h"), (b"X-Forwarded-For", b"1.2.3.4")]


def test_error_response():
    full = error_response(502, "x")
    head, _, body = full.partition(b"\r\n\r\n")
    r = parse_response(head + b"\r\n\r\n")
    assert r.status == 502 and not r.keep_alive
    assert r.length == len(body) == len(b"502 Bad Gateway: x\n")
    head_only = error_response(400, head_only=True)
    assert head_only == error_response(400).partition(b"\r\n\r\n")[0] + b"\r\n\r\n"
