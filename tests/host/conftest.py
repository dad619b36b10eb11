import pytest

from acceltcp.testbed.simnet import make_pair
from acceltcp.host.stack import HostStack
from acceltcp.io.sim import SimLoop
from acceltcp.tcp.config import TcpConfig

from .util import NEAR_WRAP, US_IP, Clock, FakeDevice


@pytest.fixture
def clock():
    return Clock(100.0)


@pytest.fixture
def dev():
    return FakeDevice()


def _stack(dev, clock, **kw):
    kw.setdefault("isn", lambda *a: NEAR_WRAP)
    kw.setdefault("strict", True)
    return HostStack(dev, US_IP, clock, **kw)


@pytest.fixture
def make_stack(dev, clock):
    """make_stack(**HostStack kwargs) -> a stack on `dev` at 198.18.1.1/24, clock `clock`."""
    return lambda **kw: _stack(dev, clock, **kw)


@pytest.fixture
def stack(dev, clock):
    return _stack(dev, clock)


@pytest.fixture
def loop():
    with SimLoop() as lp:
        yield lp


def near_wrap_isn(offset):
    return lambda *a: NEAR_WRAP - offset


@pytest.fixture
def net(loop):
    """Two real stacks (198.18.0.1 / 198.18.0.2) on a clean simulated link, ISNs near 2^32."""
    return make_pair(loop, stack_a={"isn": near_wrap_isn(0)},
                     stack_b={"isn": near_wrap_isn(3333)})


@pytest.fixture
def fast_config():
    """Short TIME-WAIT so tests can watch connections leave the table."""
    return TcpConfig(time_wait=2.0)
