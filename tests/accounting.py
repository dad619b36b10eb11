"""The connection-accounting invariant, for any test that ends a run with a stack's
counters (``from tests.accounting import check_accounting``):

    conns_accepted + conns_opened == conns_closed + conns_live - conns_embryonic

(every connection the stack accepted or opened is closed or still live; children that
never finished their handshake count in neither), and no ``internal_error`` anywhere (an
exception out of a TCB or an app callback, counted instead of raised outside strict
mode). Accepts a ``HostStack``, its ``counters`` dict, or the JSON of ``acceltcp serve
--stats-file`` (which also carries the drops and the NIC's counters).
"""

__all__ = ["check_accounting", "accounting"]


def accounting(obj):
    """-> (counters, {name: internal_error count}) from a HostStack, a counters dict or a
    serve stats document."""
    errors = {}
    if hasattr(obj, "counters") and hasattr(obj, "drops"):          # a HostStack
        c = obj.counters
        errors["drops"] = obj.drops.get("internal_error", 0)
    elif "counters" in obj:                                          # serve stats JSON
        c = obj["counters"]
        errors["drops"] = obj.get("drops", {}).get("internal_error", 0)
        nic = obj.get("nic") or {}
        for k, v in (nic.get("counters") or {}).items():
            if "internal_error" in k:
                errors["nic." + k] = v
    else:
        c = obj
    for k, v in c.items():
        if "internal_error" in k:
            errors["counters." + k] = v
    return c, errors


def check_accounting(obj, settled=True):
    """Assert the invariant (module doc). ``settled``: also no embryonic child left (the
    run is over). -> the counters."""
    c, errors = accounting(obj)
    accepted = c.get("conns_accepted", 0)
    opened = c.get("conns_opened", 0)
    closed = c.get("conns_closed", 0)
    live = c.get("conns_live", 0)
    embryonic = c.get("conns_embryonic", 0)
    assert accepted + opened == closed + live - embryonic, (
        "accounting: accepted %d + opened %d != closed %d + live %d - embryonic %d "
        "(teardown: %s)" % (accepted, opened, closed, live, embryonic,
                            {k: v for k, v in c.items() if k.startswith("teardown")}))
    if settled:
        assert embryonic == 0, "%d embryonic children left" % embryonic
    bad = {k: v for k, v in errors.items() if v}
    assert not bad, "internal errors: %s" % bad
    return c
