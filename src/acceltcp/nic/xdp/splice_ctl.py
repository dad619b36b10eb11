"""The splice path's control side (splice.h): installs splices, reports their end, sweeps
idle ones.

Theory of operation
-------------------
NicDataplane keeps its splice table in one ``nic.splice.SpliceTable``; here the table is
split between the programs and this object:

* maps (atcp_splice.h): ``atcp_splice`` (hash, incoming 4-tuple -> slot),
  ``atcp_sp_rules`` (array, slot -> rule + per-rule state), ``atcp_sp_ctl`` (the `now`
  the programs stamp on a rule's last activity, and the number of rules: 0 = the
  programs do no lookup at all), ``atcp_sp_report`` (a ring buffer: the splices the
  programs ended, read through mmap).  ``capacity`` rules (two per splice): the hash and array have that many
  entries.
* install (0x090C Splice, ``control``): the rule pair is checked and its per-rule
  constants (offsets, checksum-field deltas, rescale) computed by the specification's own
  code (``nic.splice.check_pair``, ``rule_constants``), then -- refusals in
  NicDataplane's order: BAD_RULE, DUPLICATE (a key already in atcp_splice: the keys of
  the splices installed here and not reported ended), TABLE_FULL --
  both records are written to free slots, the count raised, the keys inserted, the
  handed-over table's entries for both keys discarded, SpliceInstalled to the host.
  Slots are handed out as SpliceTable does (0, 1, 2, ...; freed slots reused last-freed
  first), so a slot here is the slot there.
* the end (``after_frame``, also drained by ``control`` and ``on_timer``): a program
  that saw both FINs acknowledged or an acceptable RST has removed both keys and written a
  report; each report becomes the 0x090D SpliceClosed NicDataplane writes (its splice
  id, the install time for duration_ms, host MAC as learned), and the slots are freed.
* the idle sweep (``next_deadline`` / ``on_timer``): as NicDataplane schedules it
  (every min(idle, 1 s) while splices exist), a splice whose two rules both saw no frame
  for ``idle`` seconds is removed here (the key delete decides a race with a program
  ending it at the same moment: whoever deletes it reports it) and reported with
  SPLICE_END_IDLE.  ``before_frame(now)`` writes `now` for the programs; ``on_timer``
  writes it too, so a live placement that calls only the timers still stamps activity
  (at most one sweep interval stale).

``rules()`` gives the table as the programs see it, keyed by incoming 4-tuple, for the
differential tests.
"""

import mmap
import struct
from collections import OrderedDict

from ...wire import control
from ...wire.control import Splice, SpliceClosed, SpliceInstalled, SpliceRefused
from .. import splice as sp
from ..dataplane import HOST
from . import bpf
from .parts import Part

__all__ = ["SpliceControl", "DEFAULT_CAPACITY", "RULE", "REPORT"]

DEFAULT_CAPACITY = 4096          # rules, as NicDataplane's splice_capacity

#: struct atcp_splice_rule (104 bytes)
RULE = struct.Struct("=12s12s12sIIIIHHHBBIIIIIQQQ")
#: struct atcp_splice_report (64 bytes)
REPORT = struct.Struct("=12s12sBBHIQQQQ")
_CTL = struct.Struct("=QII")     # struct atcp_splice_ctl
_U32 = struct.Struct("=I")
_D = struct.Struct("=d")
_Q = struct.Struct("=Q")
_ZERO = _U32.pack(0)
_M = 0xFFFFFFFF
_F_FROM_SERVER = 0x01
_REFUSED = {"full": control.SPLICE_REFUSED_TABLE_FULL,
            "dup": control.SPLICE_REFUSED_DUPLICATE,
            "bad": control.SPLICE_REFUSED_BAD_RULE}


def _end_reason(state_a, state_b):
    """The SpliceClosed reason of a splice whose rules' states are these, as the programs
    end it (an acceptable RST, both FINs acknowledged), or 0 while it lives."""
    if state_a & sp.ST_RST:
        return control.SPLICE_END_RESET_CLIENT
    if state_b & sp.ST_RST:
        return control.SPLICE_END_RESET_SERVER
    if state_a & state_b & sp.ST_FIN_ACKED:
        return control.SPLICE_END_FIN
    return 0


def _ring_bytes(reports):
    """A ring buffer for `reports` closure reports (8-byte header each): a power of two
    of at least one page, as the kernel wants."""
    n = mmap.PAGESIZE
    while n < reports * (REPORT.size + 8):
        n *= 2
    return n


def _bits(now):
    return _Q.unpack(_D.pack(now))[0]


def _float(bits):
    return _D.unpack(_Q.pack(bits))[0]


class SpliceControl(Part):
    """The splice path of an XdpDataplane (module docstring).  capacity: rules (None:
    DEFAULT_CAPACITY, 0: no table, every Splice refused TABLE_FULL); idle: seconds
    without a frame after which a splice is removed."""

    def __init__(self, dp, capacity=None, idle=300.0):
        super().__init__(dp)
        if capacity is None:
            capacity = DEFAULT_CAPACITY
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
            raise ValueError("splice_capacity must be an int >= 0")
        if capacity == 1:
            raise ValueError("capacity must be >= 2 (a splice takes two rules)")
        self.capacity = capacity
        self.idle = idle
        self._maps = None
        self._clear_state()

    def _clear_state(self):
        # client-side key -> (splice id, install time, slot a, slot b, server-side key),
        # in install order (the order of NicDataplane's idle reports)
        self._splices = OrderedDict()
        self._keys = set()              # both keys of every splice in _splices
        self._free = list(range(self.capacity - 1, -1, -1))   # pop() hands out 0, 1, ...
        self._idle_check = None
        self._ctl = None                # (now bits, rules) last written
        self._unreported = set()        # client keys of splices ended without a report yet

    # -- Part: maps ------------------------------------------------------------------------

    def premade_maps(self):
        n = max(self.capacity, 2)
        return {"atcp_splice": (bpf.BPF_MAP_TYPE_HASH, 12, 4, n),
                "atcp_sp_rules": (bpf.BPF_MAP_TYPE_ARRAY, 4, RULE.size, n, bpf.BPF_F_MMAPABLE),
                "atcp_sp_report": (bpf.BPF_MAP_TYPE_RINGBUF, 0, 0, _ring_bytes(n // 2))}

    def attach(self, maps):
        self._index = maps["atcp_splice"]
        self._rules = maps["atcp_sp_rules"]
        self._ctl_map = maps["atcp_sp_ctl"]
        self._reports = maps["atcp_sp_report"].ring()
        self._write_ctl(0.0)

    def _write_ctl(self, now):
        v = (_bits(now), 2 * len(self._splices))
        if v != self._ctl:
            self._ctl_map.update(_ZERO, _CTL.pack(v[0], v[1], 0))
            self._ctl = v

    def reset(self):
        self._index.clear()
        self._reports.records()
        zero = bytes(RULE.size)
        for slot in range(self.capacity):
            self._rules.update(_U32.pack(slot), zero)
        self._clear_state()
        self._write_ctl(0.0)

    # -- Part: per frame -------------------------------------------------------------------

    def before_frame(self, now):
        self._write_ctl(now)

    def after_frame(self, now):
        return self._drain(now)

    def _drain(self, now):
        """The splices the programs ended -> their SpliceClosed frames."""
        out = []
        for raw in self._reports.records():
            ck, sk, reason, fins, _, slot, pc, bc, ps, bs = REPORT.unpack(raw)
            meta = self._splices.get(ck)
            if meta is None or slot not in (meta[2], meta[3]):
                self.dp._count("splice_report_late")      # reported already (on_timer)
                continue
            del self._splices[ck]
            self._keys.difference_update((ck, sk))
            self._unreported.discard(ck)
            sid, t0, sa, sb, _ = meta
            self._free.append(slot)
            self._free.append(sb if slot == sa else sa)
            out.append(self._closed(sid, t0, ck, sk, reason, fins, pc, bc, ps, bs, now))
        if out:
            self._write_ctl(now)
        return out

    def _closed(self, sid, t0, ck, sk, reason, fins, pc, bc, ps, bs, now):
        dp = self.dp
        msg = SpliceClosed(sid, ck, sk, reason, bool(fins & 1), bool(fins & 2),
                           int((now - t0) * 1000), pc, bc, ps, bs)
        return (HOST, msg.frame(dp.host_mac or bytes(6), dp.mac))

    # -- Part: control frames --------------------------------------------------------------

    def control(self, msg, seg_frame, host_mac, now):
        if type(msg) is not Splice:
            return None
        out = self._drain(now)             # frees the slots of splices already ended
        dp = self.dp
        why = None
        if not self.capacity:
            why = "full"
        else:
            try:
                rec_a, rec_b = self._records(msg.rule_a, msg.rule_b, now)
            except ValueError:
                why = "bad"
            else:
                if msg.rule_a.key in self._keys or msg.rule_b.key in self._keys:
                    why = "dup"
                elif len(self._free) < 2:
                    why = "full"
        if why is not None:
            dp._count("refused_splice")
            dp._count("refused_splice_" + why)
            out.append((HOST, SpliceRefused(msg.splice_id, _REFUSED[why])
                        .frame(host_mac, dp.mac)))
            return out
        sa = self._free.pop()
        sb = self._free.pop()
        ka, kb = msg.rule_a.key, msg.rule_b.key
        self._rules.update(_U32.pack(sa), rec_a(sb))
        self._rules.update(_U32.pack(sb), rec_b(sa))
        self._splices[ka] = (msg.splice_id, now, sa, sb, kb)
        self._keys.update((ka, kb))
        self._write_ctl(now)                # the count before the keys: never too low
        self._index.update(ka, _U32.pack(sa))
        self._index.update(kb, _U32.pack(sb))
        if dp.handed_capacity:              # the splice rules own these tuples now
            for key in (ka, kb):
                dp.handed_discard(key)
        dp._count("splices_installed")
        if self._idle_check is None:
            self._idle_check = now + min(self.idle, 1.0)
        out.append((HOST, SpliceInstalled(msg.splice_id).frame(host_mac, dp.mac)))
        return out

    def _records(self, rule_a, rule_b, now):
        """SpliceTable.install's checks (ValueError for a bad pair) and per-rule constants
        (nic.splice.rule_constants) -> two functions pair slot -> atcp_splice_rule bytes."""
        sp.check_pair(rule_a, rule_b)
        stamp = _bits(now)

        def record(r, peer_ts, flags):
            k = sp.rule_constants(r, peer_ts, flags)
            if r.last_ack is not None:
                ack, wnd, st = r.last_ack & _M, r.last_wnd, sp.ST_USED | sp.ST_ACK
            else:
                ack = wnd = 0
                st = sp.ST_USED
            return lambda pair: RULE.pack(r.key, *k, pair, st, 0, ack, wnd, 0, 0, stamp)
        return (record(rule_a, rule_b.ts_shift, 0),
                record(rule_b, rule_a.ts_shift, _F_FROM_SERVER))

    # -- Part: timers ----------------------------------------------------------------------

    def next_deadline(self):
        return self._idle_check

    def on_timer(self, now):
        self._write_ctl(now)
        out = self._drain(now)
        t = self._idle_check
        if t is not None and now >= t:
            limit = now - self.idle
            for ka, (sid, t0, sa, sb, kb) in list(self._splices.items()):
                va, vb = self._record(sa), self._record(sb)
                ended = _end_reason(va[13], vb[13])
                if ended:
                    # Its rules say it ended. Normally a program ended it and its report
                    # was drained above, or is a moment late (another CPU between its
                    # delete and its ring write). Still here one sweep later: the ring
                    # refused the report (xdp_splice_report_lost), or no program saw the
                    # end (two CPUs acknowledging each other's FIN at once each read the
                    # other's FIN_ACKED before it was set). Ended here, reported from the
                    # rules.
                    if ka not in self._unreported:
                        self._unreported.add(ka)
                        continue
                    self._unreported.discard(ka)
                    if self._index.delete(ka):
                        self._index.delete(kb)
                        self.dp._count("splices_closed")
                        self.dp._count("splice_end_missed")
                    else:
                        self.dp._count("splice_report_recovered")
                elif va[-1] > limit or vb[-1] > limit:
                    continue
                elif not self._index.delete(ka):
                    continue                # a program ended it just now: its report
                else:
                    self._index.delete(kb)
                    va, vb = self._record(sa), self._record(sb)
                    self.dp._count("splices_closed")
                    ended = control.SPLICE_END_IDLE
                del self._splices[ka]
                self._keys.difference_update((ka, kb))
                self._free.append(sa)
                self._free.append(sb)
                fins = (1 if va[13] & sp.ST_FIN else 0) | (2 if vb[13] & sp.ST_FIN else 0)
                out.append(self._closed(sid, t0, ka, kb, ended, fins,
                                        va[17], va[18], vb[17], vb[18], now))
            self._write_ctl(now)
            self._idle_check = (now + min(self.idle, 1.0)) if self._splices else None
        return out

    def _record(self, slot):
        """atcp_sp_rules[slot] decoded (the last field as the float it stamps)."""
        v = list(RULE.unpack(self._rules.lookup(_U32.pack(slot))))
        v[-1] = _float(v[-1])
        return v

    # -- inspection --------------------------------------------------------------------------

    def rules(self):
        """{incoming 4-tuple: the rule and its state} as the programs see them."""
        out = {}
        for key, raw in self._index.items():
            slot = _U32.unpack(raw)[0]
            (k, macs, out_key, dseq, dack, dts, dtsecr, cso_ip, cso_tcp, cso_ts, ws, flags,
             pair, state, fin, ack, wnd, pkts, nbytes, last) = self._record(slot)
            out[key] = {
                "slot": slot, "key": k, "eth_dst": macs[:6], "eth_src": macs[6:],
                "out_key": out_key, "seq_offset": dseq, "ack_offset": dack,
                "ts_shift": dts, "tsecr_shift": dtsecr, "cso_ip": cso_ip,
                "cso_tcp": cso_tcp, "cso_ts": cso_ts, "wscale_in": ws >> 4,
                "wscale_out": ws & 15, "from_server": bool(flags & _F_FROM_SERVER),
                "pair": pair, "state": state, "fin": fin, "ack": ack, "wnd": wnd,
                "packets": pkts, "bytes": nbytes, "last_active": last}
        return out

    def status(self):
        return {"splice_rules": 2 * len(self._splices), "splice_capacity": self.capacity,
                "splices_closed": self.dp.counters["splices_closed"]}
