"""How a server app takes its connections: ``accept_into(stack, listener, app)``.

An app implements ``ServerApp.on_accept(conn) -> (handler, state)``: what to call on the
connection's events and the object the stack keeps for it (``conn.owner.app``).

Theory of operation
-------------------
The stack calls ``listener.on_acceptable(listener)`` when a child joins the accept queue,
from inside the processing of the segment that established it (a handshake ACK, a
0x090A from the NIC, maybe with the request on it), and then hands that segment's event
to the child's handler. So every queued child is accepted and attached here, and the
handler runs at once for all but the newest -- children queued earlier, whose events
passed while they had no handler; the newest gets its event from the stack right after
this returns, exactly once.
"""

from typing import Protocol, runtime_checkable

__all__ = ["ServerApp", "accept_into"]


@runtime_checkable
class ServerApp(Protocol):
    def on_accept(self, conn) -> tuple:
        """A new connection -> (handler(conn), state) for ``stack.attach``."""


def accept_into(stack, listener, app):
    """Drain `listener`'s accept queue into ``app.on_accept`` whenever a child joins."""
    if not isinstance(app, ServerApp):
        raise TypeError("%s has no on_accept(conn)" % type(app).__name__)
    on_accept = app.on_accept
    attach = stack.attach
    queue = listener.accept_queue

    def on_acceptable(lst):
        while queue:
            conn = lst.accept()
            handler, state = on_accept(conn)
            attach(conn, handler, state)
            if queue:
                handler(conn)

    listener.on_acceptable = on_acceptable
