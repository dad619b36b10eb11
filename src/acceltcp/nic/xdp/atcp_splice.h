/* The splice path's map layouts and counters (splice.h; mirrored by splice_ctl.py with
 * struct.Struct, "=" layouts).  Conventions as in atcp.h: host order unless the field is a
 * byte array copied from or to the wire. */
#ifndef ATCP_SPLICE_LAYOUT_H
#define ATCP_SPLICE_LAYOUT_H

/* Counters of the splice path, appended to atcp.h's.  NicDataplane's names; the xdp_
 * one exists only here: a closure report the queue had no room for (the control side
 * fell behind; the rules are gone, the host does not hear of it). */
#define ATCP_SPLICE_COUNTERS(X)                                                     \
	X(splice_frames) X(splice_flushed) X(splices_closed)                           \
	X(drop_splice_untranslatable) X(xdp_splice_report_lost)

/* atcp_sp_rules[slot]: one direction of a splice (nic/splice.py's packed record and
 * per-rule state in one value).  Written by the control side on install; the dynamic
 * part (state .. last) by the programs. */
struct atcp_splice_rule {
	__u8 key[12];           /* the incoming 4-tuple (frame[26:38]), atcp_splice's key */
	__u8 macs[12];          /* eth dst | eth src the frame gets */
	__u8 out_key[12];       /* the 4-tuple it gets */
	__u32 dseq, dack;       /* seq / ack offsets (mod 2**32) */
	__u32 dts, dtsecr;      /* TSval / TSecr offsets */
	__u16 cso_ip, cso_tcp;  /* checksum-field deltas, mod 0xFFFF (splice.py) */
	__u16 cso_ts;
	__u8 ws;                /* wscale_in << 4 | wscale_out */
	__u8 flags;             /* ATCP_SP_FROM_SERVER | ATCP_SP_RESCALE */
	__u32 pair;             /* the other direction's slot */
	__u32 state;            /* ATCP_SP_ST_* */
	__u32 fin;              /* the ack value that covers this sender's FIN */
	__u32 ack;              /* this sender's latest ACK (incoming space) */
	__u32 wnd;              /* ... and its window in bytes */
	__u64 pkts, bytes;      /* frames / TCP payload bytes translated */
	__u64 last;             /* `now` of the last frame (an IEEE double's bits) */
};                              /* 104 bytes */

#define ATCP_SP_FROM_SERVER 0x01
#define ATCP_SP_RESCALE 0x02
#define ATCP_SP_ST_FIN 0x01
#define ATCP_SP_ST_FIN_ACKED 0x02
#define ATCP_SP_ST_ACK 0x04
#define ATCP_SP_ST_RST 0x08
#define ATCP_SP_ST_USED 0x80

/* atcp_sp_ctl[0]: written by the control side only. */
struct atcp_splice_ctl {
	__u64 now;              /* the control side's `now` (an IEEE double's bits) */
	__u32 rules;            /* rules installed as far as the control side knows: 0 =
	                         * no lookup at all (an over-estimate only costs a lookup) */
	__u32 pad;
};

/* atcp_sp_report (a queue): a splice the programs ended (both FINs acknowledged or an
 * acceptable RST); its rules are already gone from atcp_splice.  The control side pops
 * it and writes the 0x090D SpliceClosed to the host. */
struct atcp_splice_report {
	__u8 client_key[12];    /* rule a's incoming 4-tuple */
	__u8 server_key[12];    /* rule b's */
	__u8 reason;            /* SPLICE_END_FIN, _RESET_CLIENT, _RESET_SERVER */
	__u8 fins;              /* 1: a FIN from the client side, 2: from the server side */
	__u16 pad;
	__u32 slot;             /* the slot whose frame ended it (freed first) */
	__u64 packets_c, bytes_c, packets_s, bytes_s;
};                              /* 64 bytes */

#endif
