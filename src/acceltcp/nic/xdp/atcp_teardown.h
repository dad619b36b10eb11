/* The teardown path's map layouts and counters (teardown.h; mirrored by teardown_ctl.py,
 * which reads the engine counter names below from this file).  Conventions as in atcp.h:
 * host byte order unless a name ends in _be. */
#ifndef ATCP_TEARDOWN_LAYOUT_H
#define ATCP_TEARDOWN_LAYOUT_H

/* Dataplane counters of the teardown path, appended to atcp.h's and atcp_splice.h's:
 * NicDataplane.counters' names (a segment on a teardown flow, or dropped because its TCP
 * header does not parse), and the xdp_td ones, which the Python NIC cannot run into (an
 * event lost on a full queue, a frame that could not be resized in place) and the
 * handovers teardown_host took itself. */
#define ATCP_TEARDOWN_COUNTERS(X)                                                      \
	X(teardown_frames) X(drop_teardown_tcp_short) X(drop_teardown_tcp_bad_offset)   \
	X(drop_teardown_tcp_bad_checksum) X(drop_teardown_tcp_option_overrun)           \
	X(drop_teardown_tcp_bad_option_length)                                          \
	X(xdp_td_events_lost) X(xdp_td_emit_failed) X(xdp_td_accepted)

/* The engine's counters (TeardownEngine.counters' names, in this order): a per-CPU
 * array of its own, atcp_td_counters, indexed by TD_C_<name>.  The per-reason drops
 * last (the engine lists them only when not zero). */
#define ATCP_TD_ENGINE_COUNTERS(E)                                                     \
	E(accepted) E(refused_table_full) E(refused_duplicate) E(refused_bad)           \
	E(retransmits_rto) E(retransmits_fast) E(retransmits_partial) E(done_closed)    \
	E(done_reset) E(done_retries) E(done_total) E(time_wait_entered)                \
	E(time_wait_restarts) E(fin_wait2_timeouts) E(syn_reopen) E(bytes_acked)        \
	E(bytes_received) E(frames_sent) E(reports_sent) E(acks_sent) E(challenge_acks) \
	E(rst_sent) E(dupacks) E(paws_drops) E(unacceptable) E(drops)                   \
	E(drop_teardown_no_flow) E(drop_teardown_key_mismatch)                          \
	E(drop_teardown_rst_outside) E(drop_teardown_no_ack)                            \
	E(drop_teardown_challenge_limited)

#define ATCP_TD_ENUM(n) TD_C_##n,
enum atcp_td_counter { ATCP_TD_ENGINE_COUNTERS(ATCP_TD_ENUM) TD_C_MAX };
#undef ATCP_TD_ENUM

/* atcp_td_table[slot]: nic/teardown.py's 64-byte entry (the same fields in the same
 * order and sizes, host order here), then the side-store counters the engine keeps in
 * DRAM.  A free slot is all zero (state 0).  Slot = the flow id on the timer wheel. */
struct atcp_td_entry {
	__u8 key[12];           /* peer ip | our ip | peer port | our port (frame[26:38]) */
	__u8 peer_mac[6];       /* Ethernet dst of our frames */
	__u8 state;             /* 5 FIN-WAIT-1, 6 FIN-WAIT-2, 8 CLOSING, 9 LAST-ACK,
	                         * 10 TIME-WAIT */
	__u8 flags;             /* TD_F_TS | TD_F_SACK | TD_F_RECOVER */
	__u32 snd_una;
	__u32 snd_max;          /* the sequence number after our FIN */
	__u32 rcv_nxt;
	__u32 rto_us;
	__u8 retries;
	__u8 max_retries;
	__u8 dupacks;
	__u8 wscale;            /* snd_wscale << 4 | rcv_wscale */
	__u16 mss;
	__u16 window;           /* our window field */
	__u16 peer_window;      /* the peer's last window field */
	__u16 challenge;        /* RFC 5961 §7 in TIME-WAIT: second mod 4096 << 4 | challenge
	                         * ACKs sent in it (nic/teardown.py challenge_ok) */
	__u32 ts_recent;
	__u32 ts_offset;
	__u32 ts_last;
	__u32 time_wait_ms;
	/* side store: the report's counters and the payload's bookkeeping */
	__u32 flow_id;
	__u32 total;            /* handed-over payload bytes */
	__u32 acked;            /* of them acknowledged: unacked data = [acked, total) */
	__u32 retransmits;
	__u32 bytes_received;
	/* the armed timer, as last requested (TD_EV_TIMER's fields): the control side's
	 * wheel is rebuilt from these (TeardownControl.rebuilt_wheel) */
	__u8 tmr_op;            /* TD_T_*, 0 = none */
	__u8 pad[3];
	__u32 tmr_param;
	__u32 pad2;
	__u64 tmr_now;          /* `now` of the request, the double's bits */
};

#define TD_F_TS 0x01
#define TD_F_SACK 0x02
#define TD_F_RECOVER 0x04

/* atcp_td_clock[0]: written by the control side before every frame / each tick. */
struct atcp_td_clock {
	__u64 now_bits;         /* `now` as the bits of an IEEE double: copied into timer
	                         * events so the control side schedules with the exact float */
	__u32 tsclk;            /* int(now * ts_hz) mod 2**32 (the engine's TS clock) */
	__u32 moderate;         /* 1: no per-flow CLOSED report (report_interval > 0) */
	__u32 min_rto_us;       /* the engine's RTO floor (one wheel tick) */
	__u32 capacity;         /* flows (atcp_td_table's entries in use as slots) */
	__u32 xdp;              /* TD_X_* */
	__u32 sec;              /* int(now) mod 2**32: the challenge-ACK limit's second */
};

#define TD_X_ACCEPT 0x01        /* teardown_host takes the handovers it can (one frame out) */
#define TD_X_UP_TX 0x02         /* a 0x090B it does not take goes back by XDP_TX (a live
                                 * TAP: to the process that wrote it), not XDP_PASS */

/* atcp_td_alloc[0]: slots never used yet start at `fresh` (the free list: freed slots on
 * the atcp_td_free stack first, then fresh ones in ascending order -- TeardownEngine's
 * LIFO list initialised to capacity-1 .. 0); next_id: the last flow id the NIC assigned
 * (to a handover with flow id 0) */
struct atcp_td_alloc {
	__u32 fresh;
	__u32 next_id;
};

/* atcp_td_events: what the program leaves for the control side, in order (a queue).
 *  TD_EV_SEND   build and send a frame of slot: flags, seq, ack, payload [off, off+len)
 *               of the stored data (the TSval and IPv4 ident are taken when built);
 *  TD_EV_TIMER  (re)arm slot's timer: op TD_T_RTO (param µs), TD_T_FW2 (fin_timeout),
 *               TD_T_TW (param ms), from `now` = now_bits;
 *  TD_EV_DONE   the slot was freed: reason, and with report = 1 the TeardownDone fields;
 *  TD_EV_FRAME  the input frame, copied to atcp_td_frames[off], goes to the host (a SYN
 *               that reopened a TIME-WAIT, which the listener's path sends up);
 *  TD_EV_NEW    teardown_host took a handover into slot: flow_id (seq), its key, payload
 *               bytes (off), the host's MAC, and its RTO armed (len µs from now_bits). */
struct atcp_td_event {
	__u8 kind;
	__u8 flags;             /* SEND: TCP flags; DONE: report */
	__u8 op;                /* TIMER: TD_T_*; DONE: reason */
	__u8 pad;
	__u32 slot;
	__u32 seq;              /* SEND; DONE: flow_id */
	__u32 ack;              /* SEND; DONE: retransmits */
	__u32 off;              /* SEND; DONE: bytes acked; FRAME: atcp_td_frames index */
	__u32 len;              /* SEND; DONE: bytes received; TIMER: param */
	__u64 now_bits;         /* TIMER */
	__u8 key[12];           /* DONE, NEW */
	__u32 pad2;
	__u8 mac[6];            /* NEW: the host's */
	__u16 pad3;
};

#define TD_EV_SEND 1
#define TD_EV_TIMER 2
#define TD_EV_DONE 3
#define TD_EV_FRAME 4
#define TD_EV_NEW 5

#define TD_T_RTO 1
#define TD_T_FW2 2
#define TD_T_TW 3

#define TD_FRAME_MAX 4096       /* a copied frame (TD_EV_FRAME): more than XDP holds */
#define TD_FRAMES 64            /* copies in flight */

struct atcp_td_seq {
	__u32 ident;            /* IPv4 ident of the last frame the teardown path built */
	__u32 frame;            /* the next atcp_td_frames index (mod TD_FRAMES) */
};

struct atcp_td_frame {
	__u32 len;
	__u8 b[TD_FRAME_MAX];
};

#endif
