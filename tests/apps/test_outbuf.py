"""apps.outbuf.OutBuffer: whatever the chunks and however much room the send buffer has
at each call, the bytes arrive in order, exactly once, and no more is ever offered than
is taken (so draining costs O(bytes), not O(bytes^2 / send))."""

from hypothesis import given
from hypothesis import strategies as st

from acceltcp.apps.outbuf import OutBuffer


class _Conn:
    def __init__(self):
        self.send_space = 0
        self.got = bytearray()


class _Stack:
    def __init__(self):
        self.calls = 0

    def send(self, conn, data):
        self.calls += 1
        n = min(len(data), conn.send_space)
        conn.got += data[:n]
        conn.send_space -= n
        return n


@given(st.lists(st.one_of(st.binary(max_size=200), st.integers(0, 300)), max_size=60))
def test_bytes_arrive_in_order_and_only_what_is_taken_is_offered(steps):
    buf, conn, stack = OutBuffer(), _Conn(), _Stack()
    want = bytearray()
    for step in steps:
        if isinstance(step, bytes):
            buf.append(step if len(step) % 2 else bytearray(step))
            want += step
        else:
            conn.send_space += step
            buf.send(stack, conn)
        assert len(buf) == len(want) - len(conn.got)
        assert bytes(conn.got) == want[:len(conn.got)]
    conn.send_space += len(want)
    buf.send(stack, conn)
    assert bytes(conn.got) == want and not buf and len(buf) == 0
    assert buf.offered == len(want)
    assert buf.peak >= 0


def test_a_big_buffer_drained_a_window_at_a_time_is_linear():
    """80 MiB drained 64 KiB at a time: 1280 sends, 80 MiB offered (the old
    ``out = out[n:]`` offered and copied ~53 GB)."""
    chunk = bytes(1 << 20)
    buf, conn, stack = OutBuffer(), _Conn(), _Stack()
    for _ in range(80):
        buf.append(chunk)
    assert buf.peak == 80 << 20
    while buf:
        conn.send_space = 65536
        assert buf.send(stack, conn) == 65536
        conn.got.clear()
    assert buf.offered == 80 << 20 and stack.calls == 1280


def test_small_chunks_go_out_in_one_send():
    buf, conn, stack = OutBuffer(), _Conn(), _Stack()
    for i in range(100):
        buf.append(b"+PONG\r\n")
    conn.send_space = 1 << 20
    assert buf.send(stack, conn) == 700 and stack.calls == 1
    buf.append(b"x" * 10)
    buf.clear()
    assert not buf and buf.send(stack, conn) == 0
