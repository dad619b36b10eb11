/* AccelTCP XDP dataplane, teardown: peer segments (atcp_td_wire, reached from atcp_wire by
 * a tail call).  The theory of operation is in teardown.h. */
#ifndef ATCP_TEARDOWN_WIRE_H
#define ATCP_TEARDOWN_WIRE_H

/* Copy the received frame for a TD_EV_FRAME; the index, or -1. */
static __always_inline int td_copy_frame(struct xdp_md *ctx)
{
	__u64 len = bpf_xdp_get_buff_len(ctx);
	__u32 zero = 0, idx;
	struct atcp_td_seq *sq = bpf_map_lookup_elem(&atcp_td_seq, &zero);
	struct atcp_td_frame *fr;

	if (!sq)
		return -1;
	idx = __sync_fetch_and_add(&sq->frame, 1) % TD_FRAMES;
	fr = bpf_map_lookup_elem(&atcp_td_frames, &idx);
	if (!fr || len < 1 || len > TD_FRAME_MAX)
		return -1;
	len &= 0x1FFF;
	if (len < 1 || len > TD_FRAME_MAX)
		return -1;
	fr->len = len;
	if (bpf_xdp_load_bytes(ctx, 0, fr->b, len))
		return -1;
	return idx;
}

/* parse_tcp's general option walk */
static __always_inline int td_walk(struct xdp_md *ctx, __u32 doff, struct td_work *w)
{
	struct td_loop c = {.o = &w->o};
	__u32 olen = doff - 20;

	if (olen < 1 || olen > 40 || bpf_xdp_load_bytes(ctx, 54, w->o.b, olen))
		return -1;
	bpf_loop(40, td_opt_step, &c, 0);
	return 0;
}

/* atcp_td_jump[0] = atcp_td_wire (the control side writes it after loading).  Nothing
 * atcp_td_wire does may use a prog array: one in a prog array that refers to a prog array
 * was left behind by the kernel after its process was stopped and killed. */
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} atcp_td_jump SEC(".maps");

/* A SYN that reopened a TIME-WAIT (RFC 6191), its flow ended: on to the listener as in
 * atcp_wire steps 3-4, with what this program already checked (the IPv4 and TCP headers,
 * the checksum, the options in w->o).  A verdict for the host becomes a TD_EV_FRAME
 * event instead, behind the flow's TeardownDone in the queue: the host hears of the end
 * first, as from nic/dataplane.py. */
static __always_inline int td_reopen(struct xdp_md *ctx, const struct atcp_cfg *cfg,
				     struct td_work *w)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	const struct atcp_listener *l;
	struct atcp_flow_key fk;
	struct seg s;
	__u8 *f = data;
	int v, idx;

	if (data + 54 > end)
		return XDP_DROP;                /* cannot happen: checked */
	l = listener(*(__u32 *)(f + 30), *(__u16 *)(f + 36));
	if (!l) {
		v = to_host(cfg);
	} else {
		seg_read(f, &s, &fk);
		if (handed_has(cfg, &fk)) {
			count(C_handed_syn_to_host);
			v = to_host(cfg);
		} else {
			v = syn(ctx, cfg, l, &s, &w->o);
		}
	}
	if (v != XDP_REDIRECT && v != XDP_PASS)
		return v;
	idx = td_copy_frame(ctx);
	if (idx < 0) {
		count(C_xdp_td_emit_failed);
		return v;                       /* up now */
	}
	__builtin_memset(&w->ev, 0, sizeof(w->ev));
	w->ev.kind = TD_EV_FRAME;
	w->ev.off = idx;
	td_event(&w->ev);
	return XDP_DROP;
}

/* A segment of a teardown flow, reached by a tail call from atcp_wire: a program of its
 * own, verified from a clean state with a stack of its own (atcp_wire's is the setup
 * path's; inlined there, the two paths' states multiply beyond the verifier's budget).
 * The slot comes in the per-CPU scratch (w->slot: the same CPU, the same frame). */
SEC("xdp")
int atcp_td_wire(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 zero = 0, slot, tl, doff, i, first = 99;
	const struct atcp_cfg *cfg;
	const struct atcp_td_clock *clk;
	struct td_work *w = bpf_map_lookup_elem(&atcp_td_work, &zero);
	struct atcp_td_entry *e;
	__u8 *f = data;
	int verdict;

	if (!w || data + 38 > end)
		return XDP_DROP;
	slot = w->slot;
	cfg = bpf_map_lookup_elem(&atcp_cfg, &zero);
	clk = bpf_map_lookup_elem(&atcp_td_clock, &zero);
	if (!cfg || !clk)
		return XDP_DROP;
	tl = ((__u32)f[16] << 8 | f[17]) - 20;  /* IPv4 checked by atcp_wire: 24 <= total */
	/* TCP, RFC 9293 §3.1 (parse_tcp: the dataplane drops what does not parse) */
	if (tl < 20)
		return drop(C_drop_teardown_tcp_short);
	if (data + 54 > end)
		return XDP_DROP;                /* cannot happen: total <= the frame */
	doff = (f[46] >> 4) << 2;
	if (doff < 20 || doff > tl)
		return drop(C_drop_teardown_tcp_bad_offset);
	if (cfg->verify_csum &&
	    !tcp_csum_ok(ctx, tl, *(__u32 *)(f + 26) + (__u64)*(__u32 *)(f + 30) +
			 bpf_htons(6 + tl)))
		return drop(C_drop_teardown_tcp_bad_checksum);
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	f = data;
	if (data + 54 > end)
		return XDP_DROP;
	/* read the lengths again: the checksum's branches narrowed the old values' ranges,
	 * one verifier state per narrowing for everything below */
	tl = ((__u32)f[16] << 8 | f[17]) - 20;
	doff = (f[46] >> 4) << 2;
	if (tl < 20 || tl > 0xFFFF || doff < 20 || doff > tl)
		return XDP_DROP;                /* cannot happen: checked above */
	__builtin_memset(&w->o, 0, sizeof(w->o));
	w->o.len = doff - 20;
	w->o.mss = 0xFFFFFFFF;
	w->o.wscale = 0xFF;
	if (doff > 20 && !fast_opts(f, end, doff, &w->o)) {
		if (td_walk(ctx, doff, w))
			return XDP_DROP;              /* cannot happen: doff <= tl */
		if (w->o.err == C_malformed_tcp_option_overrun)
			return drop(C_drop_teardown_tcp_option_overrun);
		if (w->o.err)
			return drop(C_drop_teardown_tcp_bad_option_length);
	}
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	f = data;
	if (data + 54 > end)
		return XDP_DROP;
	count(C_teardown_frames);
	w->seq = load_be32(f + 38);
	w->ack = load_be32(f + 42);
	w->flags = f[47];
	w->window = (__u32)f[48] << 8 | f[49];
	w->plen = tl - doff;
	w->has_ts = w->o.has_ts;
	w->tsval = w->o.tsval;
	w->nout = 0;
	w->visible = 0;
	w->flen = 0;
	w->t_op = 0;
	w->moderate = clk->moderate;
	w->tsclk = clk->tsclk;
	w->sec = clk->sec;
	e = bpf_map_lookup_elem(&atcp_td_table, &slot);
	if (!e || !e->state) {
		td_drop(TD_C_drop_teardown_no_flow);    /* an index entry without a flow */
		return XDP_DROP;
	}
	{
		struct td_call c = {.w = w, .e = e, .cfg = cfg, .slot = slot};

		bpf_loop(1, td_segment_cb, &c, 0);
	}

	/* the timer first: a DONE after it cancels it; the request is also recorded in
	 * the entry (the wheel can be rebuilt from the maps) */
	if (w->t_op && e->state) {
		e->tmr_op = w->t_op;
		e->tmr_param = w->t_param;
		e->tmr_now = clk->now_bits;
	}
	if (w->t_op) {
		struct atcp_td_event *ev = &w->ev;

		__builtin_memset(ev, 0, sizeof(*ev));
		ev->kind = TD_EV_TIMER;
		ev->op = w->t_op;
		ev->slot = slot;
		ev->len = w->t_param;
		ev->now_bits = clk->now_bits;
		td_event(ev);
	}
	/* the first visible output is this frame's verdict if it is an ACK; the rest, and
	 * every other kind, are events */
	for (i = 0; i < 4; i++) {
		if (i >= w->nout)
			break;
		struct td_out *o = &w->out[i & 3];

		if (o->kind != TD_O_DONE || o->flags) {
			if (o->kind == TD_O_ACK)
				first = i;
			break;
		}
	}
	verdict = XDP_DROP;
	if (first < 4) {
		if (w->flen != 54 && w->flen != 66) {
			count(C_xdp_td_emit_failed);    /* cannot happen: built by td_ack */
			verdict = XDP_DROP;
		} else if (emit(ctx, w->f, w->flen)) {
			count(C_xdp_td_emit_failed);
			verdict = XDP_DROP;
		} else {
			verdict = XDP_TX;
		}
	}
	for (i = 0; i < 4; i++) {
		if (i >= w->nout)
			break;
		if (i == first)
			continue;
		struct td_out *o = &w->out[i & 3];
		struct atcp_td_event *ev = &w->ev;

		__builtin_memset(ev, 0, sizeof(*ev));
		ev->slot = slot;
		ev->flags = o->flags;
		ev->seq = o->seq;
		ev->ack = o->ack;
		ev->off = o->off;
		ev->len = o->len;
		if (o->kind == TD_O_DONE) {
			ev->kind = TD_EV_DONE;
			ev->op = o->reason;
			__builtin_memcpy(ev->key, o->key, 12);
		} else if (o->kind == TD_O_FRAME) {
			continue;               /* below */
		} else {
			ev->kind = TD_EV_SEND;  /* ACK or retransmission, built later */
		}
		td_event(ev);
	}
	/* RFC 6191: a SYN that reopened goes on to the listener, behind the flow's end
	 * (TD_O_FRAME: always the last output, td_tw_segment) */
	if (w->nout && w->nout <= 4 && w->out[(w->nout - 1) & 3].kind == TD_O_FRAME)
		return td_reopen(ctx, cfg, w);
	return verdict;
}

/* atcp_wire: a segment of a flow in the teardown table -> its XDP verdict; -1 (frame
 * untouched) otherwise.  Called after the IPv4 checks and splice_wire, for TCP only;
 * `total` is the IPv4 total length (already checked against the frame). */
static __always_inline int teardown_wire(struct xdp_md *ctx, const struct atcp_cfg *cfg,
					 __u32 total)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 zero = 0, *slotp;
	struct td_work *w = bpf_map_lookup_elem(&atcp_td_work, &zero);

	if (!w || data + 38 > end)
		return -1;
	__builtin_memcpy(w->key.b, data + 26, 12);
	slotp = bpf_map_lookup_elem(&atcp_td_index, &w->key);
	if (!slotp)
		return -1;
	w->slot = *slotp;
	bpf_tail_call(ctx, &atcp_td_jump, 0);
	count(C_xdp_td_emit_failed);            /* no program in atcp_td_jump: to the host */
	return -1;
}

#endif
