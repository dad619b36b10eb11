"""RESP2 codec: requests split anywhere and pipelined parse to what was encoded; inline
commands split as Redis's sdssplitargs does; malformed input gives Redis's protocol
error message, never an exception, whatever the segmentation; replies round-trip."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from acceltcp.apps import resp
from acceltcp.apps.resp import (MAX_ARRAY, MAX_BULK, MAX_LINE, ReplyError, ReplyParser,
                                RequestParser, Status, encode, encode_command, parse_int,
                                split_inline)

FAST = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

args_st = st.lists(st.binary(max_size=40) | st.sampled_from(
    [b"GET", b"SET", b"\r\n", b"$3\r\nfoo", b"*1\r\n", b"x" * 300]), min_size=1, max_size=6)
commands_st = st.lists(args_st, min_size=1, max_size=8)


def feed_pieces(data, cuts):
    """Feed `data` cut at `cuts` -> (commands, error)."""
    p = RequestParser()
    out = []
    prev = 0
    for c in sorted(set(cuts)) + [len(data)]:
        out += p.feed(data[prev:c])
        prev = c
    return out, p.error


@st.composite
def split_points(draw, data):
    return draw(st.lists(st.integers(0, len(data)), max_size=12))


@FAST
@given(commands_st, st.data())
def test_pipelined_requests_split_anywhere_parse_to_what_was_encoded(cmds, data):
    wire = b"".join(encode_command(*c) for c in cmds)
    cuts = data.draw(split_points(wire))
    got, err = feed_pieces(wire, cuts)
    assert err is None
    assert got == cmds


@FAST
@given(commands_st)
def test_byte_by_byte(cmds):
    wire = b"".join(encode_command(*c) for c in cmds)
    assert feed_pieces(wire, range(len(wire))) == (cmds, None)


def test_shape_cache_is_exact():
    """The one-request fast path learns the framing of `GET <16 bytes>` from one request
    and applies it to others, also ones whose key holds CRLF or '$' bytes; a request that
    only looks similar (other length, trailing bytes, missing CRLF) is not taken by it."""
    p = RequestParser()
    assert p.feed(encode_command("GET", "a" * 16)) == [[b"GET", b"a" * 16]]
    for key in (b"b" * 16, b"x\r\n$16\r\nabcdefghi", b"\r\n" * 8, b"$16\r\n" + b"z" * 11):
        assert p.feed(encode_command(b"GET", key)) == [[b"GET", key]]
    assert p.feed(encode_command("GET", "c" * 15)) == [[b"GET", b"c" * 15]]
    req = encode_command("GET", "d" * 16)
    assert p.feed(req + b"PING\r\n") == [[b"GET", b"d" * 16], [b"PING"]]
    assert p.feed(req[:-2] + b"xx") == [[b"GET", b"d" * 16]]       # Redis skips 2 bytes
    assert p.feed(req[:-1]) == []                                  # incomplete
    assert p.feed(b"\n") == [[b"GET", b"d" * 16]]
    assert p.error is None and p.pending == 0


def test_header_forms_redis_rejects():
    for bad, msg in ((b"*01\r\n", "invalid multibulk length"),
                     (b"*+1\r\n", "invalid multibulk length"),
                     (b"* 1\r\n", "invalid multibulk length"),
                     (b"*1\r\n$01\r\nx\r\n", "invalid bulk length"),
                     (b"*1\r\n$-0\r\n", "invalid bulk length"),
                     (b"*1\r\n$ 1\r\nx\r\n", "invalid bulk length")):
        assert feed_pieces(bad, []) == ([], "Protocol error: " + msg), bad


# ---------------------------------------------------------------------- malformed input
MALFORMED = [
    # (input, commands before the fault, Redis's message)
    (b"*x\r\n", [], "invalid multibulk length"),
    (b"*2147483648\r\n", [], "invalid multibulk length"),
    (b"*%d\r\n" % (MAX_ARRAY + 1), [], "invalid multibulk length"),
    (b"*1\r\n$-1\r\n", [], "invalid bulk length"),
    (b"*1\r\n$x\r\n", [], "invalid bulk length"),
    (b"*1\r\n$%d\r\n" % (MAX_BULK + 1), [], "invalid bulk length"),
    (b"*1\r\n:4\r\nPING\r\n", [], "expected '$', got ':'"),
    (b"PING\r\n*2\r\n$4\r\nECHO\r\n+x\r\n", [[b"PING"]], "expected '$', got '+'"),
    (b"*1\r\n$4\r\nPING\r\n\"PING\r\n", [[b"PING"]], "unbalanced quotes in request"),
    (b"SET k \"a\"b\r\n", [], "unbalanced quotes in request"),
    (b"ECHO 'it''s'\r\n", [], "unbalanced quotes in request"),
    (b"a" * (MAX_LINE + 1), [], "too big inline request"),
    (b"a" * (MAX_LINE + 1) + b"\r\n", [], "too big inline request"),
    (b"*" + b"1" * (MAX_LINE + 1), [], "too big mbulk count string"),
    (b"*1\r\n$" + b"1" * (MAX_LINE + 1) + b"\r\n", [], "too big bulk count string"),
]


@pytest.mark.parametrize("data,before,message", MALFORMED)
def test_malformed_gives_redis_message_whatever_the_segmentation(data, before, message):
    expect = (before, "Protocol error: " + message)
    assert feed_pieces(data, []) == expect
    step = 1 if len(data) < 200 else 4099
    assert feed_pieces(data, range(0, len(data), step)) == expect


def test_after_an_error_the_parser_takes_nothing():
    p = RequestParser()
    assert p.feed(b"PING\r\n*1\r\n$x\r\n") == [[b"PING"]]
    assert p.error == "Protocol error: invalid bulk length"
    assert p.feed(b"PING\r\n") == [] and p.pending == 0


def test_limits_are_inclusive():
    # The largest allowed sizes are accepted (and only wait for the data).
    p = RequestParser()
    assert p.feed(b"*%d\r\n$%d\r\n" % (MAX_ARRAY, MAX_BULK)) == []
    assert p.error is None
    line = b"a" * MAX_LINE
    assert feed_pieces(line + b"\r\n", [MAX_LINE + 1]) == ([[line]], None)
    assert feed_pieces(line + b"\n", [MAX_LINE]) == ([[line]], None)
    star = b"*" + b"0" * (MAX_LINE - 1)                  # a 64 KiB header line: "*000...0"
    assert feed_pieces(star + b"\r\n", [MAX_LINE]) == \
        ([], "Protocol error: invalid multibulk length")


def test_empty_and_negative_arrays_and_blank_lines_are_skipped():
    assert feed_pieces(b"*0\r\n*-1\r\n\r\n\n  \r\nPING\r\n", [3, 9]) == ([[b"PING"]], None)


def test_large_bulk_in_small_pieces_is_collected_once():
    body = bytes(range(256)) * 4000                     # 1 MB
    wire = encode_command(b"SET", b"k", body)
    got, err = feed_pieces(wire, range(0, len(wire), 1460))
    assert err is None and got == [[b"SET", b"k", body]]


@FAST
@given(st.binary(max_size=300), st.data())
def test_garbage_never_raises_and_the_verdict_ignores_segmentation(data, d):
    whole = feed_pieces(data, [])
    assert feed_pieces(data, d.draw(split_points(data))) == whole


@FAST
@given(commands_st, st.binary(min_size=1, max_size=30), st.data())
def test_garbage_after_good_requests(cmds, junk, d):
    wire = b"".join(encode_command(*c) for c in cmds)
    got, _ = feed_pieces(wire + junk, d.draw(split_points(wire + junk)))
    assert got[:len(cmds)] == cmds                      # the good ones always come out


# ---------------------------------------------------------------------- inline
def redis_quote(arg):
    """How redis-cli (sdscatrepr) quotes an argument."""
    out = bytearray(b'"')
    for c in arg:
        if c in b'\\"':
            out += b"\\" + bytes([c])
        elif c == 10:
            out += b"\\n"
        elif c == 13:
            out += b"\\r"
        elif c == 9:
            out += b"\\t"
        elif c == 7:
            out += b"\\a"
        elif c == 8:
            out += b"\\b"
        elif 32 <= c < 127:
            out.append(c)
        else:
            out += b"\\x%02x" % c
    return bytes(out + b'"')


@FAST
@given(st.lists(st.binary(max_size=20), min_size=1, max_size=6), st.data())
def test_inline_quoted_arguments_round_trip(args, d):
    line = b" ".join(redis_quote(a) for a in args)
    assert split_inline(line) == args
    wire = line + b"\r\n"
    assert feed_pieces(wire, d.draw(split_points(wire))) == ([args], None)


@FAST
@given(st.lists(st.binary(min_size=1, max_size=10).filter(
    lambda b: not any(c in b" \t\r\n\v\f\0\"'" for c in b)), min_size=1, max_size=6),
    st.sampled_from([b" ", b"  ", b"\t", b" \t "]))
def test_inline_plain_words(words, sep):
    assert split_inline(sep.join(words)) == words
    assert split_inline(sep + sep.join(words) + sep) == words


@pytest.mark.parametrize("line,args", [
    (b"PING", [b"PING"]),
    (b"", []),
    (b"   ", []),
    (b"SET k \"a\\x62\"", [b"SET", b"k", b"ab"]),
    (b"ECHO \"\\x6\"", [b"ECHO", b"x6"]),            # not a full \xHH: \x is just x
    (b"ECHO 'it\\'s'", [b"ECHO", b"it's"]),
    (b"ECHO 'a\\nb'", [b"ECHO", b"a\\nb"]),           # no escapes in single quotes
    (b"ECHO \"a\\qb\"", [b"ECHO", b"aqb"]),
    (b"ab\"cd\" e", [b"abcd", b"e"]),                 # a quote inside a word opens
    (b"a\vb \fc", [b"a\vb", b"c"]),                   # \v \f end no word, are skipped
    (b"\vPING", [b"PING"]),
    (b"GET a\0b c", [b"GET", b"a"]),                  # a NUL ends the line
    (b"ECHO \"\"", [b"ECHO", b""]),
    (b"ECHO \"a\" \"b\"", [b"ECHO", b"a", b"b"]),
])
def test_inline_like_sdssplitargs(line, args):
    assert split_inline(line) == args


@pytest.mark.parametrize("line", [b"\"", b"'", b"\"a\"b", b"'a'b", b"ECHO \"abc",
                                  b"ECHO \"a\\\"", b"\"a\0\""])
def test_inline_unbalanced(line):
    assert split_inline(line) is None


def test_inline_lf_only_and_crlf():
    assert feed_pieces(b"PING\nECHO a\r\nGET x\r\r\n", [2]) == \
        ([[b"PING"], [b"ECHO", b"a"], [b"GET", b"x"]], None)       # a CR ends a word


# ---------------------------------------------------------------------- integers
@pytest.mark.parametrize("s,v", [(b"0", 0), (b"-1", -1), (b"9223372036854775807", 2**63 - 1),
                                 (b"-9223372036854775808", -2**63), (b"10", 10)])
def test_parse_int(s, v):
    assert parse_int(s) == v


@pytest.mark.parametrize("s", [b"", b"-", b"-0", b"01", b"+1", b" 1", b"1 ", b"1.0", b"1e3",
                               b"9223372036854775808", b"-9223372036854775809", b"1_0",
                               b"\xd9\xa1", b"0x1"])
def test_parse_int_rejects(s):
    assert parse_int(s) is None


# ---------------------------------------------------------------------- replies
replies_st = st.recursive(
    st.none() | st.integers(-2**63, 2**63 - 1) | st.binary(max_size=30)
    | st.text(alphabet=st.characters(blacklist_characters="\r\n", max_codepoint=0x7e),
              max_size=20).map(Status)
    | st.text(alphabet=st.characters(blacklist_characters="\r\n", max_codepoint=0x7e),
              min_size=1, max_size=20).map(ReplyError),
    lambda children: st.lists(children, max_size=5), max_leaves=20)


@FAST
@given(st.lists(replies_st, min_size=1, max_size=5), st.data())
def test_replies_round_trip_split_anywhere(values, d):
    wire = b"".join(encode(v) for v in values)
    p = ReplyParser()
    got = []
    prev = 0
    for c in sorted(set(d.draw(split_points(wire)))) + [len(wire)]:
        got += p.feed(wire[prev:c])
        prev = c
    assert got == values
    assert [type(g) for g in got] == [type(v) for v in values]
    assert p.pending == 0


def test_reply_parser_rejects_garbage():
    for bad in (b"?x\r\n", b"$3\r\nabcde", b":1x\r\n", b"*-2\r\n"):
        with pytest.raises(resp.ProtocolError):
            ReplyParser().feed(bad)


def test_error_reply_cannot_break_framing():
    assert resp.error("ERR bad\r\nthing") == b"-ERR bad  thing\r\n"
    assert ReplyParser().feed(resp.error("ERR a\nb")) == [ReplyError("ERR a b")]
