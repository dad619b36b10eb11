"""The host stack: connection table, listeners, ARP, timers, socket/epoll API, asyncio face.

    HostStack (stack.py)   frames <-> TCBs; drops, counters, timers
    StackRunner (runner.py) drives a HostStack from an asyncio loop (real or SimLoop)
    SocketAPI (socket.py)  mTCP-like sockets + epoll, Linux constants and errno
    aio.py                 open_connection / start_server streams
"""

from .stack import HostStack, HostConn, Listener, HOST_DROP_REASONS
from .runner import StackRunner

__all__ = ["HostStack", "HostConn", "Listener", "HOST_DROP_REASONS", "StackRunner"]
