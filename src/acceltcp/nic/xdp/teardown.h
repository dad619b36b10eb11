/* AccelTCP XDP dataplane, teardown (nic/teardown.py, AccelTCP §4.2).
 *
 * Theory of operation
 * -------------------
 * nic/teardown.py (TeardownEngine) is the specification; its docstring has the entry
 * layout, the states and the RFC rules.  The work is split by what XDP can do:
 *
 * * The handover (0x090B): teardown_host (in atcp_host) takes what the engine would
 *   send as one frame -- a payload of at most one MSS, reports moderated -- and writes
 *   the slot, the payload (atcp_td_data), the entry, the key (atcp_td_index), and the
 *   data/FIN segment over the 0x090B's own buffer; the control side hears of it by a
 *   TD_EV_NEW event.  Every other handover (several segments, per-flow reports, a
 *   refusal) is passed up to the control side (teardown_ctl.py), which does the same
 *   in Python.  Both allocate slots from one free list in the maps (atcp_td_free,
 *   atcp_td_alloc), in the engine's order.
 * * Every peer segment on a handed-over 4-tuple is processed here: teardown_wire (in
 *   atcp_wire) finds the slot in atcp_td_index and tail-calls atcp_td_wire (a program of
 *   its own: atcp_wire's stack and verifier budget are the setup path's), which parses
 *   and checks the TCP header as parse_tcp does and runs td_segment (a bpf_loop
 *   callback: a verifier frame of its own): RST and SYN (RFC 5961), PAWS (RFC 7323),
 *   acceptability, ACK, duplicate
 *   and partial ACKs, text and FIN (RFC 9293 §3.10.7.4), TIME-WAIT with the verdict of
 *   tcp/timewait.py (td_tw_verdict, the same rules line for line), state changes,
 *   counters (atcp_td_counters) -- and the segment's answer.
 * * XDP sends at most one frame per frame received, in the received frame's buffer.  The
 *   answers the engine gives are a list; the program sends the first visible one itself
 *   when it is an ACK (built over the received frame, XDP_TX).  Everything else --
 *   the TIME-WAIT SYN that reopens (RFC 6191: after the flow's events it meets the
 *   listener as in atcp_wire, td_reopen: a cookie SYN-ACK goes out at once, a verdict for
 *   the host is a TD_EV_FRAME event behind the flow's end), a retransmission
 *   (its payload is up to an MSS: no room in front of a 54-byte ACK),
 *   a TeardownDone report, a later ACK -- becomes an event in atcp_td_events, in order,
 *   with the values the engine would have used at that point (seq, ack, payload range);
 *   the control side builds and sends them (after_frame; a live control process each
 *   tick), taking TSval and IPv4 ident then, in the same order as the engine.
 * * Timers: the wheel is the control side's (nic/timer_wheel.py itself: deadlines are
 *   floats, rounded to ticks in float arithmetic, which integer BPF code cannot
 *   reproduce exactly).  The program records each (re)arming as a TD_EV_TIMER event with
 *   the operation, its parameter and `now` (the double's bits from atcp_td_clock), and
 *   the control side schedules it with the engine's own expression; the same request
 *   is kept in the entry (tmr_op, tmr_param, tmr_now), so the wheel can be rebuilt from
 *   the maps alone (TeardownControl.rebuilt_wheel).  A freed slot (TD_EV_DONE) cancels
 *   its timer.  RTO retransmissions, the RST after max_retries,
 *   FIN-WAIT-2 and 2MSL expiry are the control side's on_timer.
 *
 * Limits: atcp_td_events holds 32,768 events (a full queue: xdp_td_events_lost, after
 * which the control side rebuilds its mirror from the maps; a live control process
 * drains it every tick), atcp_td_frames 64 copied SYNs, atcp_td_data
 * 256 MiB of payload (a handover that does not fit is refused TABLE_FULL).
 *
 * Shared state and races: the entry is written by this program (per segment) and by the
 * control side (handover, timer expiry, ts_last of the frames it builds).  One flow's
 * segments arrive on one CPU (RSS); the control side's writes race with them only on a
 * live port and only on a flow that is both retransmitting and receiving -- no lock. */
#ifndef ATCP_TEARDOWN_H
#define ATCP_TEARDOWN_H

#define TD_FIN_WAIT_1 5
#define TD_FIN_WAIT_2 6
#define TD_CLOSING 8
#define TD_LAST_ACK 9
#define TD_TIME_WAIT 10

#define TD_END_CLOSED 1   /* wire/control/teardown.py TEARDOWN_END_* */
#define TD_END_RESET 2
#define TD_END_RETRIES 3

#define TD_DUPTHRESH 3          /* RFC 5681 §3.2 */
#define TD_MAX_RTO_US 60000000  /* RFC 6298 §2.5 */
#define TD_HALF 0x80000000u

/* sizes are the control side's (premade): capacity entries */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct atcp_td_entry);
} atcp_td_table SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, struct atcp_flow_key);
	__type(value, __u32);
} atcp_td_index SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TD_C_MAX);
	__type(key, __u32);
	__type(value, __u64);
} atcp_td_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct atcp_td_clock);
} atcp_td_clock SEC(".maps");

/* events of 64 bytes (56 and the record header), read through mmap; the control side
 * makes the map (TeardownControl's `events`: 32,768 by default), this size is the
 * object's own */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096 * 64);
} atcp_td_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TD_FRAMES);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct atcp_td_frame);
} atcp_td_frames SEC(".maps");

/* atcp_td_seq[0]: the engine's IPv4 ident (TeardownEngine.ident: a counter of its own,
 * apart from the setup path's atcp_state.ident) and the next atcp_td_frames index */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct atcp_td_seq);
} atcp_td_seq SEC(".maps");

static __always_inline __u16 td_next_ident(void)
{
	__u32 zero = 0;
	struct atcp_td_seq *sq = bpf_map_lookup_elem(&atcp_td_seq, &zero);

	return sq ? (__u16)(__sync_fetch_and_add(&sq->ident, 1) + 1) : 0;
}

/* The handed-over payloads, for the control side's retransmissions (this program never
 * reads them): key slot << 5 | chunk, 2 KiB chunks, 32 per slot = 64 KiB, more than one
 * IPv4 frame's payload.  Allocated as used; full -> the handover is refused TABLE_FULL. */
#define TD_CHUNK 2048
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 131072);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, __u8[TD_CHUNK]);
} atcp_td_data SEC(".maps");

/* the free list (struct atcp_td_alloc): freed slots, newest on top; sized by the control
 * side (premade: capacity) */
struct {
	__uint(type, BPF_MAP_TYPE_STACK);
	__uint(max_entries, 1);
	__uint(key_size, 0);
	__uint(value_size, 4);
} atcp_td_free SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct atcp_td_alloc);
} atcp_td_alloc SEC(".maps");

/* ---- per-segment working state (a per-CPU scratch: the stack is the setup path's) ---- */

#define TD_O_ACK 1
#define TD_O_RTX 2
#define TD_O_DONE 3
#define TD_O_FRAME 4

struct td_out {
	__u8 kind;
	__u8 flags;             /* RTX: TCP flags; DONE: report */
	__u8 reason;
	__u8 pad;
	__u32 seq;              /* DONE: flow_id */
	__u32 ack;              /* DONE: retransmits */
	__u32 off;              /* DONE: bytes acked */
	__u32 len;              /* DONE: bytes received */
	__u8 key[12];
};

struct td_work {
	struct opts o;
	__u8 f[80] __attribute__((aligned(8)));
	__u32 seq, ack, plen, tsval, window;
	__u32 flags, has_ts;
	__u32 moderate, tsclk, sec;
	__u32 nout, visible, flen;
	__u32 t_op, t_param;
	struct td_out out[4];
	struct atcp_flow_key key;       /* lookup key */
	__u32 slot;                     /* atcp_wire -> atcp_td_wire */
	__u8 ips[8], ports[4];          /* of the frame being built */
	struct atcp_td_event ev;
};

/* bpf_loop's context must be on the stack: a pointer to the scratch's opts */
struct td_loop {
	struct opts *o;
};

static long td_opt_step(__u32 idx, struct td_loop *c)
{
	return opt_step(idx, c->o);
}

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct td_work);
} atcp_td_work SEC(".maps");

static __always_inline void tcount(__u32 idx)
{
	__u64 *c = bpf_map_lookup_elem(&atcp_td_counters, &idx);

	if (c)
		*c += 1;
}

static __always_inline void tadd(__u32 idx, __u64 n)
{
	__u64 *c = bpf_map_lookup_elem(&atcp_td_counters, &idx);

	if (c)
		*c += n;
}

/* RFC 9293 §3.4 on the ring (tcp/seq.py) */
static __always_inline int td_lt(__u32 a, __u32 b)
{
	return (__u32)(a - b) > TD_HALF;
}

static __always_inline int td_le(__u32 a, __u32 b)
{
	return (__u32)(b - a) < TD_HALF;
}

static __always_inline int td_gt(__u32 a, __u32 b)
{
	return (__u32)(b - a) >= TD_HALF;
}

static __always_inline int td_in_window(__u32 x, __u32 left, __u32 size)
{
	return (__u32)(x - left) < size;
}

/* TSval = max(ts_last, clock + offset), bit 0 cleared (TeardownEngine._build) */
static __always_inline __u32 td_tsval(struct atcp_td_entry *e, __u32 tsclk)
{
	__u32 ts = (tsclk + e->ts_offset) & 0xFFFFFFFE;

	if (td_lt(ts, e->ts_last))
		ts = (e->ts_last + 1) & 0xFFFFFFFE;
	e->ts_last = ts;
	return ts;
}

/* The ACK <SEQ=seq><ACK=ack> of entry e into w->f (sent at the end, over the received
 * frame): TSval and IPv4 ident are taken now, in the engine's order. */
static __always_inline int td_build_ack(struct td_work *w, struct atcp_td_entry *e,
				   const struct atcp_cfg *cfg, __u32 seq, __u32 ack)
{
	__u8 *f = w->f, *ips = w->ips, *ports = w->ports;
	__u32 olen = 0;

	if (e->flags & TD_F_TS) {
		store_be32(f + 54, 0x0101080A);
		store_be32(f + 58, td_tsval(e, w->tsclk));
		store_be32(f + 62, e->ts_recent);
		olen = 12;
	}
	__builtin_memcpy(ips, e->key + 4, 4);
	__builtin_memcpy(ips + 4, e->key, 4);
	__builtin_memcpy(ports, e->key + 10, 2);
	__builtin_memcpy(ports + 2, e->key + 8, 2);
	build_hdr(f, e->peer_mac, cfg, ips, td_next_ident(), ports, seq, ack, TCP_ACK,
		  e->window, olen);
	w->flen = 54 + olen;
	return 0;
}

static __always_inline struct td_out *td_push(struct td_work *w, __u8 kind)
{
	__u32 i = w->nout;

	if (i >= 4)
		return 0;
	w->nout = i + 1;
	struct td_out *o = &w->out[i & 3];

	__builtin_memset(o, 0, sizeof(*o));
	o->kind = kind;
	if (kind != TD_O_DONE)
		w->visible += 1;
	return o;
}

/* <SEQ=SND.MAX><ACK=RCV.NXT><CTL=ACK> (TeardownEngine._ack): built here when it is
 * the first frame out, else an event */
static __always_inline void td_ack(struct td_work *w, struct atcp_td_entry *e,
				   const struct atcp_cfg *cfg)
{
	struct td_out *o;

	if (!w->visible)
		td_build_ack(w, e, cfg, e->snd_max, e->rcv_nxt);
	o = td_push(w, TD_O_ACK);

	tcount(TD_C_acks_sent);
	tcount(TD_C_frames_sent);
	if (o) {
		o->flags = TCP_ACK;
		o->seq = e->snd_max;
		o->ack = e->rcv_nxt;
	}
}

/* the first unacknowledged segment, with our FIN if it is the last (_first_segment) */
static __always_inline void td_first_segment(struct td_work *w, struct atcp_td_entry *e)
{
	struct td_out *o = td_push(w, TD_O_RTX);
	__u32 left = e->total - e->acked;

	e->retransmits += 1;
	tcount(TD_C_frames_sent);
	if (!o)
		return;
	o->seq = e->snd_una;
	o->ack = e->rcv_nxt;
	o->off = e->acked;
	if (left > e->mss) {
		o->flags = TCP_ACK;
		o->len = e->mss;
	} else {
		o->flags = left ? (TCP_ACK | 0x08 | TCP_FIN) : (TCP_ACK | TCP_FIN);
		o->len = left;
	}
}

/* Report TeardownDone and free the slot (_finish): the key leaves the index, the data
 * chunks their map and the slot goes on the free list here, the entry is zeroed; the
 * control side cancels its timer. */
static __always_inline void td_finish(struct td_work *w, __u32 slot, struct atcp_td_entry *e,
				      __u32 reason, __u32 moderate)
{
	struct td_out *o;

	/* Whoever deletes the key owns the end: the control side's timer may have ended
	 * this flow a moment ago (on another CPU), and then it reports and frees it --
	 * freed twice, the slot would go to two flows. */
	__builtin_memcpy(w->key.b, e->key, 12);
	if (bpf_map_delete_elem(&atcp_td_index, &w->key)) {
		w->t_op = 0;
		return;
	}
	o = td_push(w, TD_O_DONE);
	if (reason == TD_END_CLOSED)
		tcount(TD_C_done_closed);
	else if (reason == TD_END_RESET)
		tcount(TD_C_done_reset);
	else
		tcount(TD_C_done_retries);
	tcount(TD_C_done_total);
	if (o) {
		o->reason = reason;
		o->flags = !(moderate && reason == TD_END_CLOSED);
		o->seq = e->flow_id;
		o->ack = e->retransmits;
		o->off = e->acked;
		o->len = e->bytes_received;
		__builtin_memcpy(o->key, e->key, 12);
	}
	if (!(moderate && reason == TD_END_CLOSED)) {
		tcount(TD_C_reports_sent);
		w->visible += 1;
	}
	for (__u32 i = 0; i < 32; i++) {        /* 2 KiB chunks: 64 KiB at most */
		if (i * TD_CHUNK >= e->total)
			break;
		__u32 k = slot << 5 | i;

		bpf_map_delete_elem(&atcp_td_data, &k);
	}
	bpf_map_push_elem(&atcp_td_free, &slot, 0);
	__builtin_memset(e, 0, sizeof(*e));
	w->t_op = 0;                    /* the slot's timer goes with it */
}

static __always_inline void td_timer(struct td_work *w, __u32 op, __u32 param)
{
	w->t_op = op;
	w->t_param = param;
}

static __always_inline void td_arm_rto(struct td_work *w, const struct atcp_td_entry *e)
{
	__u64 rto = (__u64)e->rto_us << (e->retries & 63);

	if (e->retries >= 32 || rto > TD_MAX_RTO_US)
		rto = TD_MAX_RTO_US;
	td_timer(w, TD_T_RTO, (__u32)rto);
}

/* Enter TIME-WAIT; with time_wait_ms 0 skip it (report, free): returns 1 then. */
static __always_inline int td_time_wait(struct td_work *w, __u32 slot, struct atcp_td_entry *e,
					__u32 moderate)
{
	e->state = TD_TIME_WAIT;
	if (!e->time_wait_ms) {
		td_finish(w, slot, e, TD_END_CLOSED, moderate);
		return 1;
	}
	tcount(TD_C_time_wait_entered);
	td_timer(w, TD_T_TW, e->time_wait_ms);
	return 0;
}

static __always_inline void td_drop(__u32 reason)
{
	tcount(TD_C_drops);
	tcount(reason);
}

/* ---- TIME-WAIT: tcp/timewait.py verdict, rule for rule -------------------------------- */

#define TW_KEEP 0
#define TW_REMOVE 1
#define TW_REOPEN 2
#define TW_SEND_ACK 3
#define TW_CHALLENGE_ACK 4
#define TW_ACTION 7
#define TW_RESTART 8
#define TW_UPDATE_TS 16
#define TW_PAWS 32

static __always_inline int td_syn_reopens(__u32 seq, __u32 has_ts, __u32 tsval, __u32 rnxt,
					  __u32 ts_ok, __u32 tsr)
{
	__u32 d;

	if (ts_ok && has_ts) {
		d = tsval - tsr;
		if (d == 0) {                   /* RFC 6191 bullet 2 */
			d = seq - rnxt;
			return d > 0 && d <= TD_HALF;
		}
		return d <= TD_HALF;            /* bullet 1 */
	}
	d = seq - rnxt;                         /* bullet 4 */
	return d > 0 && d <= TD_HALF;
}

static __always_inline __u32 td_tw_verdict(const struct td_work *w,
					   const struct atcp_td_entry *e)
{
	__u32 flags = w->flags, seq = w->seq, rnxt = e->rcv_nxt, upd = 0, d;
	__u32 ts_ok = e->flags & TD_F_TS;

	if (flags & TCP_RST) {
		d = seq - rnxt;
		if (d == 0)
			return TW_REMOVE;
		return d < ((__u32)e->window << (e->wscale & 15)) ? TW_CHALLENGE_ACK : TW_KEEP;
	}
	if (flags & TCP_SYN) {
		if (!(flags & TCP_ACK) &&
		    td_syn_reopens(seq, w->has_ts, w->tsval, rnxt, ts_ok, e->ts_recent))
			return TW_REOPEN;
		return TW_CHALLENGE_ACK;
	}
	if (ts_ok && w->has_ts) {
		if ((__u32)(w->tsval - e->ts_recent) > TD_HALF)
			return TW_SEND_ACK | TW_PAWS;
		upd = TW_UPDATE_TS;
	}
	if (flags & TCP_FIN) {
		if ((__u32)(seq + w->plen + 1 - rnxt) == 0)
			return TW_SEND_ACK | TW_RESTART;
		return TW_SEND_ACK;
	}
	if (w->plen || seq != rnxt)
		return TW_SEND_ACK;
	d = w->ack - e->snd_max;
	if ((flags & TCP_ACK) && d > 0 && d <= TD_HALF)
		return TW_SEND_ACK | upd;
	return TW_KEEP | upd;
}

/* RFC 5961 §7 (nic/teardown.py challenge_ok): one more challenge ACK this second? */
#define TD_CHALLENGE_ACKS_PER_SECOND 10

static __always_inline int td_challenge_ok(const struct td_work *w, struct atcp_td_entry *e)
{
	__u32 sec = w->sec & 0xFFF, v = e->challenge;

	if ((v >> 4) != sec)
		v = sec << 4;
	if ((v & 15) >= TD_CHALLENGE_ACKS_PER_SECOND)
		return 0;
	e->challenge = v + 1;
	return 1;
}

/* A peer segment in TIME-WAIT (_time_wait_segment). */
static __always_inline void td_tw_segment(struct td_work *w, __u32 slot,
					  struct atcp_td_entry *e, const struct atcp_cfg *cfg)
{
	__u32 v = td_tw_verdict(w, e), a = v & TW_ACTION, moderate = w->moderate;

	if (a == TW_REMOVE) {
		td_finish(w, slot, e, TD_END_RESET, moderate);
		return;
	}
	if (a == TW_REOPEN) {                   /* RFC 6191: to the host, behind the report */
		tcount(TD_C_syn_reopen);
		td_finish(w, slot, e, TD_END_CLOSED, moderate);
		td_push(w, TD_O_FRAME);
		return;
	}
	if (v & TW_UPDATE_TS)
		e->ts_recent = w->tsval;
	if (a == TW_CHALLENGE_ACK) {
		if (!td_challenge_ok(w, e)) {   /* over the limit */
			td_drop(TD_C_drop_teardown_challenge_limited);
			return;
		}
		tcount(TD_C_challenge_acks);
	} else if (a == TW_SEND_ACK) {
		if (v & TW_PAWS)
			tcount(TD_C_paws_drops);
		else
			tcount(TD_C_unacceptable);
		if (v & TW_RESTART) {           /* the peer's FIN again */
			tcount(TD_C_time_wait_restarts);
			td_timer(w, TD_T_TW, e->time_wait_ms);
		}
	} else {                                /* KEEP */
		if (w->flags & TCP_RST)
			td_drop(TD_C_drop_teardown_rst_outside);
		else if (!(w->flags & TCP_ACK))
			td_drop(TD_C_drop_teardown_no_ack);
		return;
	}
	td_ack(w, e, cfg);
}

/* ---- the other states (TeardownEngine.on_segment) ------------------------------------- */

static __always_inline int td_segment(struct td_work *w, __u32 slot, struct atcp_td_entry *e,
				 const struct atcp_cfg *cfg)
{
	__u32 moderate = w->moderate;
	__u32 state = e->state, flags = w->flags, seq = w->seq, rnxt = e->rcv_nxt;
	__u32 wnd = (__u32)e->window << (e->wscale & 15), plen = w->plen;
	__u32 fin = flags & TCP_FIN, seglen, ok, ts_on, need_ack = 0;

	if (state == TD_TIME_WAIT) {
		td_tw_segment(w, slot, e, cfg);
		return 0;
	}
	/* RST: RFC 5961 §3.2 */
	if (flags & TCP_RST) {
		if (seq == rnxt) {
			td_finish(w, slot, e, TD_END_RESET, moderate);
		} else if (td_in_window(seq, rnxt, wnd)) {
			tcount(TD_C_challenge_acks);
			td_ack(w, e, cfg);
		} else {
			td_drop(TD_C_drop_teardown_rst_outside);
		}
		return 0;
	}
	/* SYN: RFC 5961 §4.2 */
	if (flags & TCP_SYN) {
		tcount(TD_C_challenge_acks);
		td_ack(w, e, cfg);
		return 0;
	}
	/* RFC 7323 §5.3 PAWS */
	ts_on = (e->flags & TD_F_TS) && w->has_ts;
	if (ts_on && td_lt(w->tsval, e->ts_recent)) {
		tcount(TD_C_paws_drops);
		td_ack(w, e, cfg);
		return 0;
	}
	/* RFC 9293 §3.10.7.4 first: acceptability */
	seglen = fin ? plen + 1 : plen;
	if (seglen == 0)
		ok = wnd == 0 ? seq == rnxt : td_in_window(seq, rnxt, wnd);
	else if (wnd == 0 || seq == rnxt)
		ok = seq == rnxt;
	else
		ok = td_in_window(seq, rnxt, wnd) || td_in_window(seq + seglen - 1, rnxt, wnd);
	if (!ok) {
		tcount(TD_C_unacceptable);
		td_ack(w, e, cfg);
		return 0;
	}
	if (ts_on && td_le(seq, rnxt))
		e->ts_recent = w->tsval;        /* RFC 7323 §4.3 */

	/* fifth: ACK */
	if (!(flags & TCP_ACK)) {
		td_drop(TD_C_drop_teardown_no_ack);
		return 0;
	}
	__u32 ack = w->ack, una = e->snd_una, smax = e->snd_max;

	if (td_gt(ack, smax)) {
		td_ack(w, e, cfg);                   /* acks something not yet sent */
		return 0;
	}
	if (td_gt(ack, una)) {
		__u32 acked = ack - una, left = e->total - e->acked;
		__u32 k = acked < left ? acked : left;

		if (k) {
			e->acked += k;
			tadd(TD_C_bytes_acked, k);
		}
		e->snd_una = ack;
		e->retries = 0;
		e->dupacks = 0;
		if (ack == smax) {              /* our FIN is acknowledged */
			e->flags &= ~TD_F_RECOVER;
			if (state == TD_LAST_ACK) {
				td_finish(w, slot, e, TD_END_CLOSED, moderate);
				return 0;
			}
			if (state == TD_FIN_WAIT_1) {
				state = e->state = TD_FIN_WAIT_2;
				td_timer(w, TD_T_FW2, 0);
			} else if (state == TD_CLOSING) {
				if (td_time_wait(w, slot, e, moderate))
					return 0;
				state = TD_TIME_WAIT;
			}
		} else {
			if (e->flags & TD_F_RECOVER) {  /* RFC 6582 §3.2 step 4 */
				tcount(TD_C_retransmits_partial);
				td_first_segment(w, e);
			}
			td_arm_rto(w, e);
		}
	} else if (ack == una && !plen && !fin && una != smax &&
		   w->window == e->peer_window) {
		tcount(TD_C_dupacks);           /* RFC 5681 §2 */
		__u32 d = e->dupacks;

		if (d < TD_DUPTHRESH) {
			d += 1;
			e->dupacks = d;
			if (d == TD_DUPTHRESH) {        /* RFC 5681 §3.2: on the 3rd only */
				tcount(TD_C_retransmits_fast);
				e->flags |= TD_F_RECOVER;
				td_first_segment(w, e);
			}
		}
	}
	e->peer_window = w->window;

	/* seventh: text, acknowledged and discarded; after the peer's FIN, ignored */
	if (plen && (state == TD_FIN_WAIT_1 || state == TD_FIN_WAIT_2)) {
		__u32 d = rnxt - seq;           /* 0 <= seq_diff < plen (plen < 2**31) */

		need_ack = 1;
		if (d < plen) {
			__u32 n = plen - d;

			if (n > wnd)
				n = wnd;        /* beyond the advertised window */
			rnxt = e->rcv_nxt = rnxt + n;
			e->bytes_received += n;
			tadd(TD_C_bytes_received, n);
		}
	}
	/* eighth: FIN */
	if (fin) {
		need_ack = 1;
		if ((state == TD_FIN_WAIT_1 || state == TD_FIN_WAIT_2) && seq + plen == rnxt) {
			e->rcv_nxt = rnxt + 1;
			if (state == TD_FIN_WAIT_1) {
				e->state = TD_CLOSING;  /* the RTO stays armed */
			} else {
				td_ack(w, e, cfg);
				td_time_wait(w, slot, e, moderate);
				return 0;
			}
		}
	}
	if (need_ack)
		td_ack(w, e, cfg);
	return 0;
}

/* td_segment runs as a bpf_loop callback: a frame of its own for the verifier, whose
 * states then meet at one call site (inlined into atcp_wire it exceeds the verifier's
 * budget), and no stack of atcp_wire's (which the setup path fills). */
struct td_call {
	struct td_work *w;
	struct atcp_td_entry *e;
	const struct atcp_cfg *cfg;
	__u32 slot;
};

static long td_segment_cb(__u32 idx, struct td_call *c)
{
	td_segment(c->w, c->slot, c->e, c->cfg);
	return 1;
}

static __always_inline void td_event(struct atcp_td_event *ev)
{
	if (bpf_ringbuf_output(&atcp_td_events, ev, sizeof(*ev), 0))
		count(C_xdp_td_events_lost);
}

#endif
