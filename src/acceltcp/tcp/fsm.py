"""Every state transition of RFC 9293 (§3.3.2, Figure 5) in one table.

The connection (``tcp.connection``) decides *which event* a segment, a user call or a
timer amounts to; this table alone decides *where that event leads*. An event that is
not in the table for the current state is a bug or an illegal user call, and raises
``IllegalTransition`` (a typed error, as in h11) instead of silently corrupting state.

Events are small ints; the names read like the arrows of Figure 5.
"""

from .states import (
    CLOSED, LISTEN, SYN_SENT, SYN_RECEIVED, ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2,
    CLOSE_WAIT, CLOSING, LAST_ACK, TIME_WAIT, STATE_NAMES,
)

# --- events -------------------------------------------------------------------------
APP_LISTEN = 0        # passive OPEN
APP_CONNECT = 1       # active OPEN (send SYN)
APP_CLOSE = 2         # CLOSE (send FIN once queued data is out)
APP_ABORT = 3         # ABORT (send RST where synchronized)
RCV_SYN = 4           # a SYN without ACK
RCV_SYN_ACK = 5       # a SYN,ACK acknowledging our SYN
RCV_ACK_OF_SYN = 6    # an ACK covering our SYN
RCV_FIN = 7           # the peer's FIN, in sequence
RCV_ACK_OF_FIN = 8    # an ACK covering our FIN
RCV_RST = 9           # an acceptable RST
TIMEOUT = 10          # retransmissions exhausted (RFC 9293 §3.8.3 R2)
TIMEOUT_2MSL = 11     # TIME-WAIT expired
HANDOFF = 12          # another owner takes the connection over (TIME-WAIT record, NIC)
RCV_NEW_SYN = 13      # a new incarnation's SYN in TIME-WAIT (RFC 6191): TIME-WAIT ends

EVENT_NAMES = (
    "APP_LISTEN", "APP_CONNECT", "APP_CLOSE", "APP_ABORT", "RCV_SYN", "RCV_SYN_ACK",
    "RCV_ACK_OF_SYN", "RCV_FIN", "RCV_ACK_OF_FIN", "RCV_RST",
    "TIMEOUT", "TIMEOUT_2MSL", "HANDOFF", "RCV_NEW_SYN",
)

TRANSITIONS: dict[tuple[int, int], int] = {
    # opening
    (CLOSED, APP_LISTEN): LISTEN,
    (CLOSED, APP_CONNECT): SYN_SENT,
    (LISTEN, RCV_SYN): SYN_RECEIVED,
    (LISTEN, APP_CONNECT): SYN_SENT,            # §3.10.2: a listener may be turned active
    (LISTEN, APP_CLOSE): CLOSED,
    (SYN_SENT, RCV_SYN_ACK): ESTABLISHED,
    (SYN_SENT, RCV_SYN): SYN_RECEIVED,          # simultaneous open (Figure 7)
    (SYN_SENT, APP_CLOSE): CLOSED,
    (SYN_RECEIVED, RCV_ACK_OF_SYN): ESTABLISHED,
    (SYN_RECEIVED, APP_CLOSE): FIN_WAIT_1,
    # closing: we close first
    (ESTABLISHED, APP_CLOSE): FIN_WAIT_1,
    (FIN_WAIT_1, RCV_ACK_OF_FIN): FIN_WAIT_2,
    (FIN_WAIT_1, RCV_FIN): CLOSING,             # simultaneous close (Figure 13); a FIN that
                                                # also acks ours goes FIN-WAIT-2 then TIME-WAIT
    (FIN_WAIT_2, RCV_FIN): TIME_WAIT,
    (CLOSING, RCV_ACK_OF_FIN): TIME_WAIT,
    (TIME_WAIT, RCV_FIN): TIME_WAIT,            # retransmitted FIN: re-ACK, restart 2MSL
    (TIME_WAIT, TIMEOUT_2MSL): CLOSED,
    (TIME_WAIT, HANDOFF): CLOSED,               # a compact TIME-WAIT record takes over
    (TIME_WAIT, RCV_NEW_SYN): CLOSED,           # the owner passes the SYN to its listener
    # closing: the peer closes first
    (ESTABLISHED, RCV_FIN): CLOSE_WAIT,
    (CLOSE_WAIT, APP_CLOSE): LAST_ACK,
    (LAST_ACK, RCV_ACK_OF_FIN): CLOSED,
    # the NIC takes the connection over (AccelTCP §4.2 teardown, §4.3 splice)
    (ESTABLISHED, HANDOFF): CLOSED,
    (CLOSE_WAIT, HANDOFF): CLOSED,
}

# RST (§3.10.7.4 second check), ABORT (§3.10.5) and retransmission timeout (R2) end any
# connection that has left CLOSED. A passively opened SYN-RECEIVED connection "returns to
# LISTEN": our listener is a separate object that never left LISTEN, so the child closes.
for _state in (SYN_SENT, SYN_RECEIVED, ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, CLOSE_WAIT,
               CLOSING, LAST_ACK, TIME_WAIT):
    TRANSITIONS[(_state, RCV_RST)] = CLOSED
    TRANSITIONS[(_state, APP_ABORT)] = CLOSED
    if _state != TIME_WAIT:
        TRANSITIONS[(_state, TIMEOUT)] = CLOSED
TRANSITIONS[(LISTEN, APP_ABORT)] = CLOSED
del _state


class IllegalTransition(Exception):
    """An event that has no transition from the current state."""

    def __init__(self, state: int, event: int):
        super().__init__(f"{EVENT_NAMES[event]} is not allowed in {STATE_NAMES[state]}")
        self.state = state
        self.event = event


def next_state(state: int, event: int) -> int:
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransition(state, event) from None
