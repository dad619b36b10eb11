/* AccelTCP XDP dataplane, splice (nic/splice.py, AccelTCP §4.3): frames of a spliced
 * connection translated in place, with differential checksums.
 *
 * Theory of operation
 * -------------------
 * The control side (splice_ctl.py) installs a splice: two rules (one per direction) in
 * atcp_sp_rules, an array indexed by slot, and their incoming 4-tuples in atcp_splice
 * (hash: frame[26:38] -> slot).  It computes everything per rule that nic/splice.py
 * precomputes (offsets, the checksum-field deltas cso_ip / cso_tcp / cso_ts, the window
 * rescale), so the programs do what translate() does per frame and nothing more:
 *
 *  - atcp_wire, after the IPv4 checks: a TCP frame whose 4-tuple has a rule;
 *    atcp_host: any non-control frame of >= 38 bytes whose 4-tuple has one (the host
 *    flushing what it held while the splice was installed: splice_flushed);
 *  - not plain IPv4/TCP (IP options, fragment, short, bad data offset, malformed
 *    options) -> dropped untouched (drop_splice_untranslatable);
 *  - else the header rewritten: MACs, addresses, ports, seq + dseq, ack + dack,
 *    TSval (bit 0 then cleared: the cookie MARK), TSecr, every SACK edge (+ dack), the
 *    window rescaled when the two shifts differ;
 *    IP checksum field (csum + cso_ip) mod 0xFFFF, TCP's (csum + cso_tcp + wraps [+
 *    cso_ts] [+ edge deltas] [+ window delta]) mod 0xFFFF, where each translated 32-bit
 *    value that passes 2**32 adds one (RFC 1624; splice.py's docstring has the
 *    arithmetic).  Linux's layouts (NOP NOP TS, and NOP NOP TS NOP NOP SACK filling the
 *    header) are translated in place; any other goes through the option walk, a
 *    bpf_loop over a per-CPU copy of the options, written back only when it succeeded;
 *  - the frame goes out on the wire (XDP_TX from the wire port, a redirect to the wire
 *    from the host port), splice_frames;
 *  - accounting and passive teardown tracking as translate() does (packets, payload
 *    bytes, last activity, each sender's latest ACK and window, the ack value covering
 *    each FIN, FIN acknowledged, RST acceptable in [peer's ACK, + peer's window), RFC
 *    9293 §3.10.7.4, or at the sender's acknowledged FIN's seq, as translate() says).  On the end of the splice (both FINs acknowledged, an acceptable
 *    RST) both keys leave atcp_splice and a report goes to atcp_sp_report (a ring buffer);
 *    the control side pops it and writes the 0x090D SpliceClosed to the host, frees the
 *    slots and keeps the idle sweep (a program cannot run on a timer).
 *
 * Several CPUs: packet and byte counts are atomic adds; the latest ACK, window and FIN
 * ack value are plain stores (two CPUs on the same splice at the same instant: the
 * latest ACK may be either's), the state bits are set with atomic ors; only the
 * CPU whose delete of the client-side key succeeds reports the end (the control side's
 * idle sweep too), so a splice is reported once.
 *
 * Stack: atcp_wire's own frame is ~504 bytes, so this code is inlined (clang shares the
 * slots of disjoint scopes) and keeps its buffers in a per-CPU scratch map; the bpf_loop
 * callback uses no stack at all (its frame adds to atcp_wire's). */
#ifndef ATCP_SPLICE_H
#define ATCP_SPLICE_H

#define SP_NOP_NOP_TS 0x0101080A
#define SP_END_FIN 1
#define SP_END_RESET_CLIENT 2
#define SP_END_RESET_SERVER 3

/* incoming 4-tuple -> slot; the control side creates it with max_entries = capacity */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct atcp_flow_key);
	__type(value, __u32);
} atcp_splice SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct atcp_splice_rule);
} atcp_sp_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct atcp_splice_ctl);
} atcp_sp_ctl SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096 * 32);
} atcp_sp_report SEC(".maps");

/* per-CPU scratch: the option walk's copy of the options and the report being built */
struct sp_scratch {
	__u8 b[80];             /* option bytes (<= 40); indices masked & 63 */
	__u32 len;              /* option bytes */
	__u32 i;                /* the walk's position */
	__u32 err;
	__u32 dack, dts, dtsecr;
	__u32 cso_ts;
	__u32 pad;
	__u64 c;                /* checksum-field delta the walk adds */
	struct atcp_splice_report rep;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sp_scratch);
} atcp_sp_scratch SEC(".maps");

/* what the bpf_loop callback gets (on the caller's stack): the scratch value */
struct sp_walk_ctx {
	struct sp_scratch *w;
};

/* x + d mod 2**32 at b[at..at+4), big-endian in place; 1 if it passed 2**32 */
static __always_inline __u32 sp_shift32(__u8 *b, __u32 d)
{
	__u32 x = load_be32(b), y = x + d;

	store_be32(b, y);
	return y < x;
}

/* A TSval: shifted, then bit 0 cleared (the cookie MARK; splice.py _shift_ts) -> the
 * field delta beyond cso_ts: 1 for a wrap, 1 more if the cleared bit was set */
static __always_inline __u32 sp_shift_tsval(__u8 *b, __u32 d)
{
	__u32 x = load_be32(b), y = x + d;

	store_be32(b, y & ~1u);
	return (y < x) + (y & 1);
}

/* One option per call (splice.py _options_slow): TS values and SACK edges are shifted
 * in the copy as they are met; a malformed option sets err and the copy is discarded. */
static long sp_opt_step(__u32 idx, struct sp_walk_ctx *x)
{
	struct sp_scratch *w = x->w;
	__u32 i, len, olen;
	__u8 kind;

	if (!w)
		return 1;
	i = w->i;
	len = w->len;
	if (i >= len || i >= 40)
		return 1;
	kind = w->b[i & 63];
	if (kind == 1) {                        /* NOP */
		w->i = i + 1;
		return 0;
	}
	if (kind == 0)                          /* EOL: the rest is padding */
		return 1;
	if (i + 1 >= len) {
		w->err = 1;
		return 1;
	}
	olen = w->b[(i + 1) & 63];
	if (olen < 2 || i + olen > len) {
		w->err = 1;
		return 1;
	}
	if (kind == 8) {                        /* RFC 7323 §3.2: TSval, TSecr */
		if (olen != 10) {
			w->err = 1;
			return 1;
		}
		w->c += sp_shift_tsval(&w->b[(i + 2) & 63], w->dts);
		w->c += sp_shift32(&w->b[(i + 6) & 63], w->dtsecr);
		w->c += w->cso_ts;
	} else if (kind == 5) {                 /* RFC 2018 §3: 2 + 8n, edges in ack space */
		if (olen < 10 || ((olen - 2) & 7)) {
			w->err = 1;
			return 1;
		}
		for (__u32 k = 0; k < 8; k++) {
			if (2 + 4 * k >= olen)
				break;
			w->c += sp_shift32(&w->b[(i + 2 + 4 * k) & 63], w->dack);
			/* each edge: -dack in the field domain */
			w->c += (0xFFFFu - w->dack % 0xFFFF) % 0xFFFF;
		}
	}
	w->i = i + olen;
	return 0;
}

/* Translate the frame by the rule of *slotp (splice.py translate) and account for it.
 * -> the verdict; from_host: the host port (to the wire = a redirect). */
static __always_inline int sp_frame(struct xdp_md *ctx, const struct atcp_cfg *cfg,
				    const struct atcp_splice_ctl *sc, __u32 slot, int from_host)
{
	struct atcp_splice_rule *r, *p;
	__u32 zero = 0, pslot, seq_in, ack_in, seq, ack, totlen, doff, plen, win, wout, st, st0, ps;
	__u64 c;
	__u8 flags;
	int ev = 0;

	r = bpf_map_lookup_elem(&atcp_sp_rules, &slot);
	if (!r)
		goto untranslatable;
	pslot = r->pair;
	p = bpf_map_lookup_elem(&atcp_sp_rules, &pslot);
	if (!p)
		goto untranslatable;

	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u8 *f = data;

	if (data + 54 > end)
		goto untranslatable;
	if (f[12] != 8 || f[13] != 0 || f[14] != 0x45 || f[23] != 6 || (f[20] & 0x3F) || f[21])
		goto untranslatable;
	totlen = (__u32)f[16] << 8 | f[17];
	doff = (f[46] >> 4) << 2;
	if (doff < 20 || totlen < 20 + doff || totlen + 14 > (__u32)(end - data))
		goto untranslatable;
	plen = totlen - 20 - doff;

	c = r->cso_tcp;
	seq_in = load_be32(f + 38);
	ack_in = load_be32(f + 42);
	seq = seq_in + r->dseq;
	c += seq < seq_in;                      /* Figure 8 line 9 */
	ack = ack_in + r->dack;
	c += ack < ack_in;                      /* Figure 8 line 10 */

	if (doff == 32) {
		/* cannot happen (totlen + 14 <= the frame), but the verifier must see it:
		 * the barrier keeps clang from deducing it away */
		asm volatile("" : "+r"(end));
		if (data + 66 > end)
			goto untranslatable;
		if (load_be32(f + 54) == SP_NOP_NOP_TS) {
			/* Linux's TS-only layout: in place */
			c += sp_shift_tsval(f + 58, r->dts);
			c += sp_shift32(f + 62, r->dtsecr);
			c += r->cso_ts;
			goto options_done;
		}
	}
	if (doff == 44 || doff == 52 || doff == 60) {
		/* Linux's layout with SACK blocks: NOP NOP TS NOP NOP SACK(2 + 8n), n = 1..3,
		 * filling the header (what the walk would do, without it) */
		__u32 edges = (doff - 36) / 4;

		asm volatile("" : "+r"(end));
		if (data + 70 > end)
			goto untranslatable;    /* cannot happen: totlen + 14 <= the frame */
		if (load_be32(f + 54) == SP_NOP_NOP_TS &&
		    load_be32(f + 66) == (0x01010500u | (doff - 34))) {
			__u32 cso_edge = (0xFFFFu - r->dack % 0xFFFF) % 0xFFFF;

			c += sp_shift_tsval(f + 58, r->dts);
			c += sp_shift32(f + 62, r->dtsecr);
			c += r->cso_ts;
			for (__u32 k = 0; k < 6; k++) {
				if (k >= edges)
					break;
				if (data + 74 + 4 * k > end)
					goto untranslatable;
				c += sp_shift32(f + 70 + 4 * k, r->dack) + cso_edge;
			}
			goto options_done;
		}
	}
	if (doff > 20) {
		struct sp_scratch *w = bpf_map_lookup_elem(&atcp_sp_scratch, &zero);
		struct sp_walk_ctx x = {.w = w};
		__u32 olen = doff - 20;

		if (!w || olen > 40 || bpf_xdp_load_bytes(ctx, 54, w->b, olen))
			goto untranslatable;
		w->len = olen;
		w->i = 0;
		w->err = 0;
		w->c = 0;
		w->dack = r->dack;
		w->dts = r->dts;
		w->dtsecr = r->dtsecr;
		w->cso_ts = r->cso_ts;
		bpf_loop(40, sp_opt_step, &x, 0);
		if (w->err)
			goto untranslatable;
		c += w->c;
		if (bpf_xdp_store_bytes(ctx, 54, w->b, olen))
			goto untranslatable;
		data = (void *)(long)ctx->data;
		end = (void *)(long)ctx->data_end;
		f = data;
		if (data + 54 > end)
			goto untranslatable;
	}
options_done:
	win = (__u32)f[48] << 8 | f[49];
	wout = win;
	if (r->flags & ATCP_SP_RESCALE) {       /* RFC 7323 §2.4: never more than the window */
		wout = (win << (r->ws >> 4)) >> (r->ws & 15);
		if (wout > 0xFFFF)
			wout = 0xFFFF;
		c += win + 0xFFFF - wout;
	}
	__builtin_memcpy(f, r->macs, 12);
	store_be16(f + 24, (((__u32)f[24] << 8 | f[25]) + r->cso_ip) % 0xFFFF);
	__builtin_memcpy(f + 26, r->out_key, 12);
	store_be32(f + 38, seq);
	store_be32(f + 42, ack);
	store_be16(f + 48, wout);
	store_be16(f + 50, (((__u32)f[50] << 8 | f[51]) + c) % 0xFFFF);
	flags = f[47];

	/* accounting and passive teardown tracking */
	__sync_fetch_and_add(&r->pkts, 1);
	if (plen)
		__sync_fetch_and_add(&r->bytes, plen);
	r->last = sc->now;
	st = st0 = r->state;
	if (flags & TCP_ACK) {
		if (!(st & ATCP_SP_ST_ACK) || ack_in - r->ack < 0x80000000u) {
			r->ack = ack_in;
			r->wnd = win << (r->ws >> 4);
			st |= ATCP_SP_ST_ACK;
		}
		ps = p->state;
		if ((ps & 3) == ATCP_SP_ST_FIN && ack_in - p->fin < 0x80000000u) {
			__sync_fetch_and_or(&p->state, ATCP_SP_ST_FIN_ACKED);
			if (st & ATCP_SP_ST_FIN_ACKED)
				ev = SP_END_FIN;
		}
	}
	if (flags & (TCP_FIN | TCP_RST)) {
		if (flags & TCP_RST) {
			__u32 pw = p->wnd ? p->wnd : 1, d = seq - p->ack;

			ps = p->state;
			/* translate()'s rule: in the window, or at its FIN's seq once acked */
			if (!(ps & ATCP_SP_ST_ACK) || d < pw ||
			    (d == 0xFFFFFFFFu && (st & ATCP_SP_ST_FIN_ACKED))) {
				st |= ATCP_SP_ST_RST;
				ev = (r->flags & ATCP_SP_FROM_SERVER) ? SP_END_RESET_SERVER
								     : SP_END_RESET_CLIENT;
			}
		} else if (!(st & ATCP_SP_ST_FIN)) {
			r->fin = seq + plen + 1;
			st |= ATCP_SP_ST_FIN;
		}
	}
	if (st != st0)                          /* bits are only ever added */
		__sync_fetch_and_or(&r->state, st & ~st0);
	count(C_splice_frames);

	if (ev) {
		/* the end of the splice: both keys go, the report to the control side.  The
		 * client-side key goes first: whoever deletes it (a program on another CPU
		 * ending it from the other side, the control side's idle sweep) reports. */
		struct atcp_splice_rule *a = (r->flags & ATCP_SP_FROM_SERVER) ? p : r;
		struct atcp_splice_rule *b = (r->flags & ATCP_SP_FROM_SERVER) ? r : p;

		if (bpf_map_delete_elem(&atcp_splice, a->key))
			goto forward;
		bpf_map_delete_elem(&atcp_splice, b->key);

		struct sp_scratch *w = bpf_map_lookup_elem(&atcp_sp_scratch, &zero);

		count(C_splices_closed);
		if (w) {
			__builtin_memcpy(w->rep.client_key, a->key, 12);
			__builtin_memcpy(w->rep.server_key, b->key, 12);
			w->rep.reason = ev;
			w->rep.fins = (a->state & ATCP_SP_ST_FIN ? 1 : 0) |
				      (b->state & ATCP_SP_ST_FIN ? 2 : 0);
			w->rep.pad = 0;
			w->rep.slot = slot;
			w->rep.packets_c = a->pkts;
			w->rep.bytes_c = a->bytes;
			w->rep.packets_s = b->pkts;
			w->rep.bytes_s = b->bytes;
			if (bpf_ringbuf_output(&atcp_sp_report, &w->rep, sizeof(w->rep), 0))
				count(C_xdp_splice_report_lost);
		} else {
			count(C_xdp_splice_report_lost);
		}
	}
forward:
	if (from_host)
		return bpf_redirect(cfg->wire_ifindex, 0);
	return XDP_TX;

untranslatable:
	return drop(C_drop_splice_untranslatable);
}

/* the slot of frame[26:38]'s rule, or -1 (no table entries: no lookup) */
static __always_inline long sp_lookup(struct xdp_md *ctx, const struct atcp_splice_ctl **scp)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 zero = 0, *slotp;
	const struct atcp_splice_ctl *sc;

	if (data + 38 > end)
		return -1;
	sc = bpf_map_lookup_elem(&atcp_sp_ctl, &zero);
	if (!sc || !sc->rules)
		return -1;
	slotp = bpf_map_lookup_elem(&atcp_splice, (__u8 *)data + 26);
	if (!slotp)
		return -1;
	*scp = sc;
	return *slotp;
}

/* atcp_wire: a frame whose 4-tuple (frame[26:38]) has a splice rule -> its XDP verdict;
 * -1 (frame untouched) otherwise.  Called after the IPv4 checks, for TCP only. */
static __always_inline int splice_wire(struct xdp_md *ctx, const struct atcp_cfg *cfg)
{
	const struct atcp_splice_ctl *sc = 0;
	long slot = sp_lookup(ctx, &sc);

	if (slot < 0 || !sc)
		return -1;
	return sp_frame(ctx, cfg, sc, (__u32)slot, 0);
}

/* atcp_host: the host flushing what it held while a splice was installed (a frame of
 * >= 38 bytes whose 4-tuple is a rule's) -> its verdict; -1 otherwise. */
static __always_inline int splice_host(struct xdp_md *ctx, const struct atcp_cfg *cfg)
{
	const struct atcp_splice_ctl *sc = 0;
	long slot = sp_lookup(ctx, &sc);

	if (slot < 0 || !sc)
		return -1;
	count(C_splice_flushed);
	return sp_frame(ctx, cfg, sc, (__u32)slot, 1);
}

#endif
