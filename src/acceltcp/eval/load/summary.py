"""The summary of a load run: what was run, the counters and rates, printed or as JSON,
and the exit status."""

from .run import _int, _fmt


def _describe(args):
    if args.per_conn == 1:
        per = "1 per connection (short-lived)"
    elif args.per_conn == 0:
        per = "persistent connections"
    else:
        per = "%d per connection" % args.per_conn
    if args.app == "echo":
        what = "%d B messages" % args.size
    else:
        what = "USR workload (%.1f %% GET, %d keys of %d B, %d B values)" % (
            100 * args.get_ratio, args.keys, args.key_size, args.value_size)
    bound = []
    if args.duration:
        bound.append("%g s" % args.duration)
    if args.transactions:
        bound.append("%d transactions" % args.transactions)
    return "%s, %s, %d connections, for %s" % (what, per, args.concurrency,
                                                " or ".join(bound))


def _client_counters(stack):
    c = stack.counters
    out = {k: c.get(k, 0) for k in ("conns_opened", "conns_closed", "conns_reset",
                                    "conns_refused", "conns_timeout", "retransmits",
                                    "rto_timeouts", "frames_in", "frames_out")}
    out["drops"] = {k: v for k, v in stack.drops.items() if v}
    return out


def _per(total, txns):
    return total / txns if txns else None


def _common_summary(args, run):
    s = run.summary()
    s["command"] = "load"
    s["app"] = args.app
    s["options"] = {"per_conn": args.per_conn, "concurrency": args.concurrency,
                    "duration_s": args.duration or None,
                    "transactions": args.transactions or None, "interval_s": args.interval,
                    "time_wait_s": args.time_wait}
    if args.app == "echo":
        s["options"]["size"] = args.size
    else:
        load = run.load
        s["options"].update(keys=args.keys, key_size=args.key_size,
                            value_size=args.value_size, get_ratio=args.get_ratio,
                            seed=args.seed)
        s["kv"] = {"gets": load.gets, "sets": load.sets, "hits": load.hits,
                   "misses": load.misses}
    return s


def _print_summary(s, args):
    lat = s["latency_us"]
    where = ("%.3f s simulated, %.1f s wall" % (s["elapsed_s"], s["wall_s"] or 0.0)
             if s["mode"] == "sim" else "%.3f s" % s["elapsed_s"])
    lines = ["summary: %s transactions in %s: %s txn/s (stopped by %s)" % (
        "{:,}".format(s["transactions"]), where, _int(s["tps"]), s["stopped_by"])]
    lines.append("  connections opened %s; errors: %s" % (
        "{:,}".format(s["connections"]),
        ", ".join("%s %d" % kv for kv in s["errors"].items()) if s["errors"] else "none"))
    if lat["samples"]:
        lines.append("  latency us: mean %s  p50 %s  p99 %s  max %s" % (
            _int(lat["mean"]), _int(lat["p50"]), _int(lat["p99"]), _int(lat["max"])))
    if "kv" in s:
        k = s["kv"]
        lines.append("  kv: %d GET (%d hits, %d misses), %d SET" % (
            k["gets"], k["hits"], k["misses"], k["sets"]))
    if s["mode"] == "sim":
        sv = s["server"]
        lines.append("  server host: %s us CPU/txn, %s frames/txn (%d in, %d out)%s" % (
            _fmt(sv["cpu_us_per_txn"], ".1f"), _fmt(sv["frames_per_txn"], ".2f"),
            sv["frames_in"], sv["frames_out"],
            "; NIC offloads: %s" % ", ".join(sv["offloads"]) if sv["nic"] else ""))
        by = sv.get("cpu_by_kind")
        if by:
            lines.append("  server CPU by kind, measured (us/txn, share): " + ", ".join(
                "%s %s (%s %%)" % (k, _fmt(by["us_per_txn"][k], ".2f"),
                                   _fmt(by["share"][k] and 100 * by["share"][k], ".1f"))
                for k in by["us_per_txn"] if by["entries"][k] or by["cpu_ns"][k]))
        if sv.get("cores", 1) > 1:
            per = sv.get("per_core") or []
            lines.append("  %d server cores (RSS): connections %s; utilization %s" % (
                sv["cores"], " / ".join(str(c["connections"]) for c in per) or "-",
                " / ".join(_fmt(c["utilization"] and 100 * c["utilization"], ".0f") + " %"
                           for c in per) or "-"))
    else:
        c = s["client"]
        lines.append("  client stack: %s us CPU/txn, %s frames/txn; retransmits %d%s" % (
            _fmt(c["cpu_us_per_txn"], ".1f"), _fmt(c["frames_per_txn"], ".2f"),
            c["retransmits"], "; drops: " + ", ".join(
                "%s %d" % kv for kv in sorted(c["drops"].items())) if c["drops"] else ""))
    print("\n".join(lines), flush=True)


def _exit_status(summary):
    return 0 if summary["transactions"] > 0 and not summary["errors_total"] else 1
