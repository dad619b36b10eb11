"""The contract between XdpDataplane (control.py) and the control side of one offload
path of the XDP NIC -- splice (splice_ctl.py) and teardown (teardown_ctl.py).

XdpDataplane owns the loaded object and the setup path; each path owns its maps, its
counters (atcp_<path>.h) and its slow path.  The dataplane calls, in this order:

* ``premade_maps()`` before loading: {map name: (type, key size, value size, entries[,
  flags])}
  for maps whose size is an option (created here, handed to bpftool);
* ``attach(maps)`` after loading, with every pinned map by name;
* per frame: ``before_frame(now)`` (clocks the program reads), the program run, then
  ``after_frame(now)`` -> frames the control side adds (ring-buffer reports, segments
  XDP could not send itself) -- appended to the program's own output;
* ``control(msg, seg_frame, host_mac, now)`` for a control frame the host program passed
  up -> [(port, frame), ...], or None when the message is not this path's;
* ``next_deadline()`` / ``on_timer(now)``: the path's timers (teardown's wheel, the
  splice idle sweep); ``on_timer`` also does what ``before_frame`` and ``after_frame``
  do (the live control side's tick calls one or the other);
* ``reset()``: empty the tables (as freshly loaded);
* ``status()``: this path's StatusReport fields.
"""

__all__ = ["Part"]


class Part:
    """A path that is not built: no maps, no timers, refuses nothing by itself (the
    subclass's ``control`` says what it does with its messages)."""

    def __init__(self, dp):
        self.dp = dp

    def premade_maps(self):
        return {}

    def attach(self, maps):
        pass

    def before_frame(self, now):
        pass

    def after_frame(self, now):
        return []

    def control(self, msg, seg_frame, host_mac, now):
        return None

    def next_deadline(self):
        return None

    def on_timer(self, now):
        return []

    def reset(self):
        pass

    def status(self):
        return {}
