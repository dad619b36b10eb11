"""One loop timer kept at the earliest deadline a sans-I/O component asks for.

The NIC dataplane (and anything else with ``next_deadline()`` / ``on_timer(now)``) needs
one ``loop.call_at`` that is moved earlier when its deadline moves earlier, left alone
when a later deadline is asked for (the callback re-arms after firing), and cancelled on
close. ``DeadlineTimer(loop, callback)``: ``arm(deadline)`` (None: nothing to do),
``cancel()``; ``callback()`` runs with the timer already cleared.
"""

__all__ = ["DeadlineTimer"]


class DeadlineTimer:
    __slots__ = ("loop", "callback", "when", "_handle")

    def __init__(self, loop, callback):
        self.loop = loop
        self.callback = callback
        self.when = None           # the deadline the pending call_at is at, or None
        self._handle = None

    def arm(self, deadline):
        """Make sure a call is pending at or before `deadline`."""
        if deadline is None:
            return
        w = self.when
        if w is not None:
            if w <= deadline:
                return
            self._handle.cancel()
        self.when = deadline
        self._handle = self.loop.call_at(deadline, self._fire)

    def cancel(self):
        if self._handle is not None:
            self._handle.cancel()
            self._handle = self.when = None

    def _fire(self):
        self._handle = self.when = None
        self.callback()
