/* AccelTCP XDP dataplane, teardown: the handover taken in XDP (teardown_host, called from
 * atcp_host).  The theory of operation is in teardown.h. */
#ifndef ATCP_TEARDOWN_HOST_H
#define ATCP_TEARDOWN_HOST_H

/* ---- the handover in XDP (teardown_host) ----------------------------------------------- */

/* the payload's copy (zero beyond what was copied: cleared after use) and the frame
 * header; 512 bytes of slack so every checksum step's bound is the buffer's */
#define TD_SCRATCH (TD_CHUNK + 512)
struct td_host_work {
	__u8 chunk[TD_SCRATCH] __attribute__((aligned(8)));
	__u8 f[80] __attribute__((aligned(8)));
	struct atcp_td_event ev;
	struct atcp_flow_key key;
	__u8 ips[8], ports[4];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct td_host_work);
} atcp_td_hwork SEC(".maps");

#define TD_SUM_STEP(sz)                                                                \
	do {                                                                           \
		if (rem >= (sz)) {                                                     \
			if (off > TD_CHUNK)                                            \
				return sum;                                            \
			r = bpf_csum_diff(0, 0, (__be32 *)(b + off), (sz), 0);         \
			sum += (__u32)r;                                               \
			off += (sz);                                                   \
			rem -= (sz);                                                   \
		}                                                                      \
	} while (0)

/* The checksum sum of b[0, n) (n <= TD_CHUNK; b is zero beyond n). */
static __always_inline __u64 td_sum(const __u8 *b, __u32 n)
{
	__u64 sum = 0;
	__u32 off = 0, rem = (n + 3) & ~3u;
	__s64 r;

	for (int k = 0; k < 4; k++) {
		if (rem < 512)
			break;
		TD_SUM_STEP(512);
	}
	TD_SUM_STEP(256);
	TD_SUM_STEP(128);
	TD_SUM_STEP(64);
	TD_SUM_STEP(32);
	TD_SUM_STEP(16);
	TD_SUM_STEP(8);
	TD_SUM_STEP(4);
	return sum;
}

/* A slot from the free list (struct atcp_td_alloc), or -1 when the table is full. */
static __always_inline int td_take_slot(__u32 capacity)
{
	__u32 zero = 0, slot;
	struct atcp_td_alloc *a;

	if (!bpf_map_pop_elem(&atcp_td_free, &slot))
		return slot < capacity ? (int)slot : -1;
	a = bpf_map_lookup_elem(&atcp_td_alloc, &zero);
	if (!a || a->fresh >= capacity)
		return -1;
	slot = __sync_fetch_and_add(&a->fresh, 1);
	return slot < capacity ? (int)slot : -1;
}

static __always_inline void td_give_slot(__u32 slot)
{
	bpf_map_push_elem(&atcp_td_free, &slot, 0);
}

static __always_inline void td_clear_chunk(struct td_host_work *w, __u32 n)
{
	for (int i = 0; i < TD_CHUNK / 8; i++) {
		if (i * 8 >= n)
			break;
		*(volatile __u64 *)(w->chunk + i * 8) = 0;   /* not a memset call */
	}
}

/* 1: a 0x090B teardown_host does not take goes back by XDP_TX (TD_X_UP_TX) */
static __always_inline int teardown_up_tx(void)
{
	__u32 zero = 0;
	const struct atcp_td_clock *clk = bpf_map_lookup_elem(&atcp_td_clock, &zero);

	return clk && (clk->xdp & TD_X_UP_TX);
}

/* atcp_host: a 0x090B Teardown frame -> its verdict if the program takes the handover
 * itself, -1 to pass it to the control side (teardown_ctl.py), which does the rest.
 *
 * Taken here: what TeardownEngine.accept would accept and send as one frame -- a
 * well-formed handover (its checks; the TCP header bare or NOP NOP TS), a payload of at
 * most one MSS and one data chunk, reports moderated (no
 * per-flow TeardownAccepted: it would be a second frame), a 4-tuple not in the table, a
 * free slot.  Then, in the engine's order: slot, payload, entry, the first (and only)
 * data/FIN segment built over the 0x090B's own buffer (its header in front of the
 * payload, which stays where it is) and redirected to the wire, the RTO armed (a
 * TD_EV_NEW event: the control side mirrors the flow and schedules the timer), the key
 * into atcp_td_index, the flow out of atcp_handed.  Anything else, or a failure before
 * the key is in, is undone and passed up: the control side then gives the engine's
 * answer, refusals included. */
static __always_inline int teardown_host(struct xdp_md *ctx, const struct atcp_cfg *cfg)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u8 *f = data;
	__u32 zero = 0;
	struct atcp_td_clock *clk = bpf_map_lookup_elem(&atcp_td_clock, &zero);
	struct td_host_work *w = bpf_map_lookup_elem(&atcp_td_hwork, &zero);
	struct atcp_td_entry *e;
	__u32 mss, state, rto, flow_id, snd_wnd, sws, rws, mfl, total, doff, n, seq, ack;
	__u32 win, pwin, olen, hlen, flen, delta;
	int slot;

	if (!clk || !w || !(clk->xdp & TD_X_ACCEPT) || !clk->moderate || !clk->capacity)
		return -1;
	if (data + 94 > end)                    /* control header, IPv4, a bare TCP header */
		return -1;
	/* the control header (wire/control/teardown.py Teardown): version 1, type 2, 40 bytes */
	if (f[14] != 1 || f[15] != 0x02 || f[16] != 0 || f[17] != 40)
		return -1;
	mss = (__u32)f[18] << 8 | f[19];
	state = (__u32)f[20] << 8 | f[21];
	rto = load_be32(f + 22);
	flow_id = load_be32(f + 26);
	snd_wnd = load_be32(f + 30);
	sws = f[34];
	rws = f[35];
	mfl = f[36];                            /* 0x01 SACK, 0x02 timestamps */
	if ((state != 4 && state != 7) || mss < 64 || mss > 65535 - 52 || sws > 14 ||
	    rws > 14 || (mfl & ~3u))
		return -1;
	/* the segment: IPv4 without options or fragments, TCP, nothing behind it */
	if (f[54] != 0x45 || f[63] != 6 || (f[60] & 0x3F) || f[61])
		return -1;
	total = (__u32)f[56] << 8 | f[57];
	flen = (__u32)(end - data);
	if (total < 40 || 54 + total != flen)
		return -1;
	doff = (f[86] >> 4) * 4;
	if (doff != 20 && doff != 32)
		return -1;
	if (!(f[87] & TCP_ACK) || (f[87] & (TCP_SYN | TCP_RST | TCP_FIN)))
		return -1;
	if (total < 20 + doff)
		return -1;
	n = total - 20 - doff;
	if (n > mss || n > TD_CHUNK)
		return -1;
	if (doff == 32) {
		if (data + 106 > end || load_be32(f + 94) != 0x0101080A)
			return -1;
	}
	/* the wire-side key: peer ip | our ip | peer port | our port */
	__builtin_memcpy(w->key.b, f + 70, 4);
	__builtin_memcpy(w->key.b + 4, f + 66, 4);
	__builtin_memcpy(w->key.b + 8, f + 76, 2);
	__builtin_memcpy(w->key.b + 10, f + 74, 2);
	if (bpf_map_lookup_elem(&atcp_td_index, &w->key))
		return -1;                      /* DUPLICATE: the control side refuses */
	seq = load_be32(f + 78);
	ack = load_be32(f + 82);
	win = (__u32)f[88] << 8 | f[89];
	__builtin_memcpy(w->ev.mac, f + 6, 6);  /* the host's MAC (the reports' dst) */
	__builtin_memcpy(w->f, f, 6);           /* the peer's MAC (our frames' dst) */

	slot = td_take_slot(clk->capacity);
	if (slot < 0)
		return -1;                      /* TABLE_FULL: the control side refuses */
	if (n) {
		__u32 k = (__u32)slot << 5;

		if (bpf_xdp_load_bytes(ctx, 74 + doff, w->chunk, n) ||
		    bpf_map_update_elem(&atcp_td_data, &k, w->chunk, BPF_ANY)) {
			td_clear_chunk(w, n);
			td_give_slot(slot);
			return -1;
		}
	}
	{
		__u32 s = (__u32)slot;

		e = bpf_map_lookup_elem(&atcp_td_table, &s);
	}
	if (!e) {
		td_clear_chunk(w, n);
		td_give_slot(slot);
		return -1;
	}
	if (!flow_id) {                         /* the NIC assigns one (1 .. 2**32-1) */
		struct atcp_td_alloc *a = bpf_map_lookup_elem(&atcp_td_alloc, &zero);

		if (a) {
			a->next_id = a->next_id == 0xFFFFFFFF ? 1 : a->next_id + 1;
			flow_id = a->next_id;
		}
	}
	if (rto < clk->min_rto_us)
		rto = clk->min_rto_us;
	if (rto > TD_MAX_RTO_US)
		rto = TD_MAX_RTO_US;
	pwin = snd_wnd >> sws;
	__builtin_memcpy(e->key, w->key.b, 12);
	__builtin_memcpy(e->peer_mac, w->f, 6);
	e->state = state == 4 ? TD_FIN_WAIT_1 : TD_LAST_ACK;
	e->flags = (mfl & 0x02 ? TD_F_TS : 0) | (mfl & 0x01 ? TD_F_SACK : 0);
	e->snd_una = seq;
	e->snd_max = seq + n + 1;
	e->rcv_nxt = ack;
	e->rto_us = rto;
	e->retries = 0;
	e->max_retries = f[37];
	e->dupacks = 0;
	e->wscale = sws << 4 | rws;
	e->mss = mss;
	e->window = win;
	e->peer_window = pwin < 0xFFFF ? pwin : 0xFFFF;
	e->challenge = 0;
	e->ts_recent = load_be32(f + 38);
	e->ts_offset = load_be32(f + 42);
	e->ts_last = load_be32(f + 46);
	e->time_wait_ms = load_be32(f + 50);
	e->flow_id = flow_id;
	e->total = n;
	e->acked = 0;
	e->retransmits = 0;
	e->bytes_received = 0;
	e->tmr_op = TD_T_RTO;
	e->tmr_param = rto;
	e->tmr_now = clk->now_bits;

	/* TD_EV_NEW first: on a full queue the handover is undone and passed up */
	{
		struct atcp_td_event *ev = &w->ev;

		ev->kind = TD_EV_NEW;
		ev->flags = 0;
		ev->op = TD_T_RTO;
		ev->pad = 0;
		ev->slot = slot;
		ev->seq = flow_id;
		ev->ack = 0;
		ev->off = n;
		ev->len = rto;
		ev->now_bits = clk->now_bits;
		__builtin_memcpy(ev->key, w->key.b, 12);
		ev->pad2 = 0;
		ev->pad3 = 0;
		if (bpf_ringbuf_output(&atcp_td_events, ev, sizeof(*ev), 0)) {
			count(C_xdp_td_events_lost);
			__builtin_memset(e, 0, sizeof(*e));
			if (n) {
				__u32 k = (__u32)slot << 5;

				bpf_map_delete_elem(&atcp_td_data, &k);
			}
			td_clear_chunk(w, n);
			td_give_slot(slot);
			return -1;
		}
	}

	/* the segment <SEQ=una><ACK=rcv_nxt><CTL=ACK,PSH,FIN> (ACK,FIN without payload) */
	olen = 0;
	if (e->flags & TD_F_TS) {
		store_be32(w->f + 54, 0x0101080A);
		store_be32(w->f + 58, td_tsval(e, clk->tsclk));
		store_be32(w->f + 62, e->ts_recent);
		olen = 12;
	}
	__builtin_memcpy(w->ips, e->key + 4, 4);
	__builtin_memcpy(w->ips + 4, e->key, 4);
	__builtin_memcpy(w->ports, e->key + 10, 2);
	__builtin_memcpy(w->ports + 2, e->key + 8, 2);
	build_hdr_payload(w->f, e->peer_mac, cfg, w->ips, td_next_ident(), w->ports, seq, ack,
			  n ? (TCP_ACK | 0x08 | TCP_FIN) : (TCP_ACK | TCP_FIN), win, olen, n,
			  n ? td_sum(w->chunk, n) : 0);
	td_clear_chunk(w, n);
	hlen = 54 + olen;
	delta = 74 + doff - hlen;               /* 28..52: the header shrinks */
	if (bpf_xdp_adjust_head(ctx, (int)delta)) {
		count(C_xdp_td_emit_failed);
		return XDP_DROP;                /* cannot happen: the buffer only shrinks */
	}
	if (olen ? bpf_xdp_store_bytes(ctx, 0, w->f, 66) : bpf_xdp_store_bytes(ctx, 0, w->f, 54)) {
		count(C_xdp_td_emit_failed);
		return XDP_DROP;
	}
	bpf_map_update_elem(&atcp_td_index, &w->key, &slot, BPF_ANY);
	handed_discard(&w->key);
	tcount(TD_C_accepted);
	tcount(TD_C_frames_sent);
	count(C_xdp_td_accepted);
	return bpf_redirect(cfg->wire_ifindex, 0);
}

#endif
