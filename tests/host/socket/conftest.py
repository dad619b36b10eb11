import pytest

from acceltcp.host.socket import SocketAPI


class Sockets:
    """Socket APIs on both stacks of a simulated pair, plus small drivers."""

    def __init__(self, net):
        self.net = net
        self.loop = net.loop
        self.a = SocketAPI(net.a)
        self.b = SocketAPI(net.b)

    def run(self, seconds=0.05):
        self.loop.run_for(seconds)

    def until(self, pred, timeout=5.0):
        assert self.loop.run_until(pred, timeout), "condition not reached"

    def server(self, port=80, backlog=16):
        fd = self.b.socket()
        self.b.bind(fd, ("0.0.0.0", port))
        self.b.listen(fd, backlog)
        return fd

    def connect(self, port=80, api=None):
        api = api or self.a
        fd = api.socket()
        try:
            api.connect(fd, ("198.18.0.2", port))
        except BlockingIOError:
            pass
        return fd

    def accept(self, lfd):
        out = []

        def ready():                 # run_until calls it once more after success
            if out:
                return True
            try:
                out.append(self.b.accept(lfd))
                return True
            except BlockingIOError:
                return False
        self.until(ready)
        return out[0]

    def pair(self, port=80):
        """-> (client fd on a, server-side fd on b), established."""
        lfd = self.server(port)
        cfd = self.connect(port)
        sfd, _ = self.accept(lfd)
        self.until(lambda: self.a.poll(cfd) & 0x4)       # EPOLLOUT: connected
        return cfd, sfd

    @staticmethod
    def at_eof(api, fd):
        try:
            return api.read(fd, 1 << 20) == b""
        except BlockingIOError:
            return False

    def read_all(self, api, fd, n, timeout=10.0):
        buf = bytearray()

        def got():
            try:
                buf.extend(api.read(fd, 1 << 20))
            except BlockingIOError:
                pass
            return len(buf) >= n
        self.until(got, timeout)
        return bytes(buf)


@pytest.fixture
def sk(net):
    return Sockets(net)
