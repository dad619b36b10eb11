// SPDX-License-Identifier: GPL-2.0
/* AccelTCP NIC dataplane in XDP: the wire port (atcp_wire) and the host port (atcp_host).
 *
 * Theory of operation
 * -------------------
 * nic/dataplane.py is the specification; this file does what it does, frame for frame,
 * for the parts built so far (setup offload and the handed-over flows table here; splice
 * in splice.h and teardown in teardown.h, each called from its place in the
 * classification below; common.h holds what every path shares).  tests/xdp runs every
 * frame through both (BPF_PROG_TEST_RUN here) and compares verdicts, bytes, counters and
 * tables.  Verdicts: atcp_wire  XDP_TX = back to the wire, to-host = bpf_redirect to
 * cfg.host_ifindex (XDP_PASS when 0), XDP_DROP.  atcp_host  to-wire = bpf_redirect to
 * cfg.wire_ifindex, XDP_PASS = to the control side (offload EtherTypes: Listen etc. are
 * control-plane work in Python), XDP_DROP.
 *
 * atcp_wire, classification (dataplane.py "From WIRE"):
 *  1. EtherType 0x090A..0x090E -> drop (a peer must not forge control frames); not IPv4
 *     -> host.  IPv4 is validated as wire/ipv4.py does (version, IHL, length, header
 *     checksum, fragments): a malformed frame goes to the host with malformed_<reason>.
 *  2. A splice rule's 4-tuple -> splice.h; a teardown flow's -> teardown.h.
 *  3. Listener lookup by (dst ip, dst port), exact entry before the wildcard 0.0.0.0;
 *     none -> host.  Only then is the TCP header parsed (checksum unless cfg.verify_csum
 *     is 0, options with bpf_loop: a plain loop over 40 option bytes explodes the
 *     verifier's path count).
 *  4. SYN: 4-tuple in atcp_handed -> host (the host's TCB answers, RFC 5961 §4); SYN with
 *     timestamps on a listener offering them, client MSS >= 536 -> cookie SYN-ACK built in
 *     the SYN's own buffer, XDP_TX.  Else -> host.
 *     ACK with TSecr bit 0 (the cookie MARK) -> cookie check: valid -> 0x090A in front
 *     (bpf_xdp_adjust_head) to the host, flow into atcp_handed; invalid but handed ->
 *     host; invalid -> drop (or RST, RFC 9293 §3.10.7.1, with cfg.rst_on_bad_cookie).
 *     Anything else -> host.
 *
 * atcp_host (dataplane.py "From HOST"): offload EtherTypes -> XDP_PASS (control side;
 * a 0x090B teardown.h takes itself, or with TD_X_UP_TX XDP_TX back to its writer);
 * every other frame goes to the wire unchanged; an unfragmented IPv4/TCP segment without
 * IP options whose flags byte has FIN or RST removes its flow from atcp_handed, a SYN-ACK
 * from a listener's ip:port adds it (origin HOST).
 *
 * Frame building: the SYN-ACK (70 or 74 bytes) and the RST (54) are written over the
 * received frame.  A longer result grows at the *front* (bpf_xdp_adjust_head: 256 bytes
 * of headroom on every driver), never at the tail (adjust_tail growth fails on a live
 * TAP); a shorter one trims the tail.  IPv4 ident: one counter in atcp_state, +1 per
 * originated frame, as NicDataplane.ident.
 *
 * The cookie (tcp/syncookie.py, bit for bit): the clock -- counter, generation and TS
 * clock -- and the keyed BLAKE2s states of the current and previous generation come from
 * atcp_clock, which the control side writes from `now` (so a test sets `now`
 * deterministically; a live control process writes it every tick).  blake2s.h does the
 * one compression per cookie. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "atcp.h"
#include "blake2s.h"
#include "common.h"
#include "splice.h"
#include "teardown.h"
#include "teardown_host.h"

char LICENSE[] SEC("license") = "GPL";

/* ---- the cookie (tcp/syncookie.py) ---------------------------------------------------- */

/* the 22-byte message as little-endian words: local ip, remote ip, local port, remote
 * port, client ISN, counter mod 2**32, mss_class << 6 | tsval_low6 (network order) */
static __always_inline __u32 cookie_hash(const __u32 *h, const __u8 *frame_ips,
					 const __u8 *frame_ports, __u32 client_isn,
					 __u32 count32, __u32 field)
{
	__u32 m[6];
	__u8 *mb = (__u8 *)m;

	__builtin_memcpy(mb, frame_ips + 4, 4);          /* local = the frame's dst */
	__builtin_memcpy(mb + 4, frame_ips, 4);          /* remote = its src */
	__builtin_memcpy(mb + 8, frame_ports + 2, 2);    /* local port = dst port */
	__builtin_memcpy(mb + 10, frame_ports, 2);
	store_be32(mb + 12, client_isn);
	store_be32(mb + 16, count32);
	store_be16(mb + 20, field);
	mb[22] = 0;
	mb[23] = 0;
	return b2_cookie_hash(h, m);
}

/* the keyed state of generation gen, or NULL when the control side has not written it */
static __always_inline const __u32 *cookie_key(const struct atcp_clock *clk, __s64 gen)
{
	if (gen == clk->gen)
		return clk->h_cur;
	if (gen == clk->gen - 1)
		return clk->h_prev;
	return 0;
}

/* MSS_TABLE = (536, 1200, 1360, 1400, 1440, 1452, 1460, 8960): the largest class <= mss */
static __always_inline int mss_class(__u32 mss)
{
	if (mss >= 8960) return 7;
	if (mss >= 1460) return 6;
	if (mss >= 1452) return 5;
	if (mss >= 1440) return 4;
	if (mss >= 1400) return 3;
	if (mss >= 1360) return 2;
	if (mss >= 1200) return 1;
	if (mss >= 536) return 0;
	return -1;
}

static __always_inline __u16 mss_value(__u32 cls)
{
	switch (cls & 7) {
	case 0: return 536;
	case 1: return 1200;
	case 2: return 1360;
	case 3: return 1400;
	case 4: return 1440;
	case 5: return 1452;
	case 6: return 1460;
	default: return 8960;
	}
}

/* ---- wire port: the setup offload -------------------------------------------------------- */

/* what the wire path keeps of a segment to a listener */
struct seg {
	__u8 eth_src[6];
	__u8 ips[8];            /* src ip | dst ip, as in the frame */
	__u8 ports[4];          /* src port | dst port */
	__u32 seq, ack;
	__u8 flags;
};

/* a segment's addresses, ports, seq, ack and flags, from a frame of at least 54 bytes */
static __always_inline void seg_read(const __u8 *f, struct seg *s, struct atcp_flow_key *fk)
{
	__builtin_memcpy(s->eth_src, f + 6, 6);
	__builtin_memcpy(s->ips, f + 26, 8);
	__builtin_memcpy(s->ports, f + 34, 4);
	__builtin_memcpy(fk->b, f + 26, 12);
	s->seq = load_be32(f + 38);
	s->ack = load_be32(f + 42);
	s->flags = f[47];
}

/* A SYN with timestamps to a listener offering them: the cookie SYN-ACK (dataplane.py
 * _syn; options in tcp_options' layout: MSS, SACK-perm+TS or NOP NOP TS, NOP WS). */
static __always_inline int syn(struct xdp_md *ctx, const struct atcp_cfg *cfg,
			       const struct atcp_listener *l, const struct seg *s,
			       const struct opts *o)
{
	__u32 zero = 0, mss = o->mss == 0xFFFFFFFF ? 536 : o->mss, opt, isn, tsval, olen;
	const struct atcp_clock *clk;
	const __u32 *key;
	struct atcp_frame_buf *fb = bpf_map_lookup_elem(&atcp_fbuf, &zero);
	__u8 *f, ips[8], ports[4];
	int cls;

	if (!o->has_ts || !(l->flags & ATCP_F_TS) || !fb)
		goto host;
	f = fb->b;
	cls = mss_class(mss);
	if (cls < 0)                            /* client MSS below the smallest class */
		goto host;
	opt = o->wscale == 0xFF ? (WSCALE_NONE << 1 | TS_MARK) : (o->wscale << 1 | TS_MARK);
	if (o->sack_ok)
		opt |= TS_SACK;
	clk = bpf_map_lookup_elem(&atcp_clock, &zero);
	if (!clk)
		goto host;
	key = cookie_key(clk, floordiv(clk->count, cfg->steps));
	if (!key) {
		count(C_xdp_key_missing);
		goto host;
	}
	isn = ((__u32)clk->count & 31) << 27 | (__u32)cls << 24 |
	      cookie_hash(key, s->ips, s->ports, s->seq, (__u32)clk->count,
			  (__u32)cls << 6 | opt);
	/* the cookie TSval: the clock's high bits, never ahead of the clock (ts-64 .. ts-1) */
	tsval = (clk->ts & 0xFFFFFFC0) | opt;
	if (opt >= (clk->ts & 0x3F))
		tsval -= 64;

	__u8 ws = o->wscale != 0xFF ? l->wscale : ATCP_WS_NONE;

	__builtin_memset(f, 0, sizeof(fb->b));
	f[54] = 2;                              /* MSS */
	f[55] = 4;
	store_be16(f + 56, l->mss);
	if ((l->flags & ATCP_F_SACK) && o->sack_ok) {
		f[58] = 4;                      /* SACK-permitted (RFC 2018) + TS */
		f[59] = 2;
	} else {
		f[58] = 1;
		f[59] = 1;
	}
	f[60] = 8;                              /* TS (RFC 7323 §3.2): TSecr = client TSval */
	f[61] = 10;
	store_be32(f + 62, tsval);
	store_be32(f + 66, o->tsval);
	olen = 16;
	if (ws != ATCP_WS_NONE) {               /* WS only if the client sent one (§2.2) */
		f[70] = 1;
		f[71] = 3;
		f[72] = 3;
		f[73] = ws;
		olen = 20;
	}
	__builtin_memcpy(ips, s->ips + 4, 4);
	__builtin_memcpy(ips + 4, s->ips, 4);
	__builtin_memcpy(ports, s->ports + 2, 2);
	__builtin_memcpy(ports + 2, s->ports, 2);
	build_hdr(f, s->eth_src, cfg, ips, next_ident(), ports, isn, s->seq + 1,
		  TCP_SYN | TCP_ACK, cfg->syn_window, olen);
	if (emit(ctx, f, 54 + olen)) {
		count(C_xdp_adjust_failed);
		return XDP_DROP;
	}
	count(C_syn_cookies_sent);
	return XDP_TX;
host:
	count(C_syn_to_host);
	return to_host(cfg);
}

/* An ACK whose TSecr has the MARK bit (dataplane.py _cookie_ack, syncookie.py check);
 * bare: it carries neither data nor FIN (absorbed on a defer-accept listener). */
static __always_inline int cookie_ack(struct xdp_md *ctx, const struct atcp_cfg *cfg,
				      const struct seg *s, const struct opts *o,
				      const struct atcp_flow_key *fk, int defer)
{
	__u32 zero = 0, isn = s->ack - 1, tsecr = o->tsecr, age, cls;
	const struct atcp_clock *clk = bpf_map_lookup_elem(&atcp_clock, &zero);
	const __u32 *key;
	__s64 cnt;

	if (!clk)
		goto bad;
	age = ((__u32)clk->count - (isn >> 27)) & 31;
	if (age >= cfg->window)
		goto bad;
	cnt = clk->count - age;
	key = cookie_key(clk, floordiv(cnt, cfg->steps));
	if (!key) {
		count(C_xdp_key_missing);
		goto bad;
	}
	cls = isn >> 24 & 7;
	if (cookie_hash(key, s->ips, s->ports, s->seq - 1, (__u32)cnt,
			cls << 6 | (tsecr & 0x3F)) != (isn & 0xFFFFFF))
		goto bad;

	/* valid; on a defer-accept listener a bare ACK is absorbed, nothing kept: the
	 * client's first data (or FIN) echoes the same cookie at the same ISN + 1 */
	if (defer) {
		count(C_cookie_ack_deferred);   /* not a drop: dataplane.py counts no drop */
		return XDP_DROP;
	}

	/* the client's segment goes up behind a NewConnection header (control.wrap) */
	__u8 hdr[30];
	__u32 code = (tsecr & 0x3F) >> 1;       /* SACK << 4 | wscale code */

	count(C_cookie_ack_ok);
	handed_add(cfg, fk, ATCP_HANDED_COOKIE);
	if (bpf_xdp_adjust_head(ctx, -16)) {
		count(C_xdp_adjust_failed);
		return XDP_DROP;
	}
	if (bpf_xdp_load_bytes(ctx, 16, hdr, 12))
		return XDP_DROP;
	hdr[12] = 0x09;                         /* EtherType 0x090A */
	hdr[13] = 0x0A;
	hdr[14] = 1;                            /* version */
	hdr[15] = 1;                            /* NEW_CONNECTION */
	store_be16(hdr + 16, 16);
	store_be16(hdr + 18, mss_value(cls));
	hdr[20] = (code & 15) == WSCALE_NONE ? ATCP_WS_NONE : (code & 15);
	hdr[21] = ((code & 16) ? ATCP_F_SACK : 0) | ATCP_F_TS;
	store_be32(hdr + 22, tsecr);            /* ts_base */
	store_be32(hdr + 26, 0xFFFFFFFF);       /* rtt_us unknown */
	if (bpf_xdp_store_bytes(ctx, 0, hdr, 30))
		return XDP_DROP;
	return up(cfg);

bad:
	if (handed_has(cfg, fk)) {
		/* a later segment of a handed-over flow still echoing the cookie TSval */
		count(C_handed_ack_to_host);
		return to_host(cfg);
	}
	count(C_cookie_ack_bad);
	if (!cfg->rst_on_bad_cookie)
		return drop(C_drop_cookie_bad);
	count(C_drops);
	count(C_drop_cookie_bad);
	count(C_rst_sent);
	/* <SEQ=SEG.ACK><CTL=RST> (RFC 9293 §3.10.7.1) */
	struct atcp_frame_buf *fb = bpf_map_lookup_elem(&atcp_fbuf, &zero);
	__u8 ips[8], ports[4];

	if (!fb)
		return XDP_DROP;

	__builtin_memcpy(ips, s->ips + 4, 4);
	__builtin_memcpy(ips + 4, s->ips, 4);
	__builtin_memcpy(ports, s->ports + 2, 2);
	__builtin_memcpy(ports + 2, s->ports, 2);
	build_hdr(fb->b, s->eth_src, cfg, ips, next_ident(), ports, s->ack, 0, TCP_RST, 0, 0);
	if (emit(ctx, fb->b, 54)) {
		count(C_xdp_adjust_failed);
		return XDP_DROP;
	}
	return XDP_TX;
}

/* the teardown path's peer segments: after the setup path, which a reopening SYN meets */
#include "teardown_wire.h"

SEC("xdp")
int atcp_wire(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 zero = 0, n = end - data, total;
	const struct atcp_cfg *cfg = bpf_map_lookup_elem(&atcp_cfg, &zero);
	const struct atcp_listener *l;
	__u8 *f = data;

	if (!cfg)
		return XDP_ABORTED;
	if (data + ETH_HLEN > end)
		return to_host(cfg);            /* cannot happen: drivers give >= 14 bytes */
	__u16 et = (__u16)f[12] << 8 | f[13];

	if (et != ETH_P_IP) {
		if (et >= 0x090A && et <= 0x090E)
			return drop(C_drop_offload_ethertype);
		return to_host(cfg);
	}
	/* IPv4, RFC 791 (wire/ipv4.py parse_ipv4_fields, in its order) */
	if (n < ETH_HLEN + 20 || data + 34 > end)
		return malformed(cfg, C_malformed_ip_short);
	if (f[14] != 0x45) {
		if (f[14] >> 4 != 4)
			return malformed(cfg, C_malformed_ip_bad_version);
		if (f[14] < 0x45)
			return malformed(cfg, C_malformed_ip_bad_ihl);
		return malformed(cfg, C_malformed_ip_options);
	}
	total = (__u32)f[16] << 8 | f[17];
	if (total < 20 || total > n - ETH_HLEN)
		return malformed(cfg, C_malformed_ip_bad_length);
	{
		__u64 s = 0;

		for (int i = 0; i < 10; i++)
			s += ((__u16 *)(f + 14))[i];
		if (csum_fold(s) != 0xFFFF)
			return malformed(cfg, C_malformed_ip_bad_checksum);
	}
	if ((f[20] & 0x3F) | f[21])
		return malformed(cfg, C_malformed_ip_fragment);
	if (f[23] != 6)
		return to_host(cfg);
	if (total < 24)
		return malformed(cfg, C_malformed_tcp_short);
	if (data + 38 > end)
		return to_host(cfg);            /* cannot happen: total <= n - 14 */

	/* 2. splice rules, then teardown flows, by frame[26:38] (splice.h, teardown.h) */
	{
		int v = splice_wire(ctx, cfg);

		if (v >= 0)
			return v;
		v = teardown_wire(ctx, cfg, total);
		if (v >= 0)
			return v;
	}
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	f = data;
	if (data + 38 > end)
		return to_host(cfg);

	/* 3. listeners */
	l = listener(*(__u32 *)(f + 30), *(__u16 *)(f + 36));
	if (!l)
		return to_host(cfg);

	/* TCP, RFC 9293 §3.1 (wire/tcp.py parse_tcp) */
	__u32 tl = total - 20, doff;

	if (tl < 20)
		return malformed(cfg, C_malformed_tcp_short);
	if (data + 54 > end)
		return to_host(cfg);
	doff = (f[46] >> 4) << 2;
	if (doff < 20 || doff > tl)
		return malformed(cfg, C_malformed_tcp_bad_offset);
	if (cfg->verify_csum &&
	    !tcp_csum_ok(ctx, tl, *(__u32 *)(f + 26) + (__u64)*(__u32 *)(f + 30) +
			 bpf_htons(6 + tl)))
		return malformed(cfg, C_malformed_tcp_bad_checksum);

	/* everything needed later, read before the packet pointers go stale */
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	f = data;
	if (data + 54 > end)
		return to_host(cfg);
	struct seg s;
	struct atcp_flow_key fk;
	struct opts o = {.len = doff - 20, .mss = 0xFFFFFFFF, .wscale = 0xFF};

	seg_read(f, &s, &fk);
	__u32 olen = doff - 20;

	if (olen && !fast_opts(f, end, doff, &o)) {
		if (olen < 1 || olen > 40 || bpf_xdp_load_bytes(ctx, 54, o.b, olen))
			return to_host(cfg);    /* cannot happen: doff <= tl */
		bpf_loop(40, opt_step, &o, 0);
		if (o.err)
			return malformed(cfg, o.err);
	}

	/* 4. to a listener */
	if ((s.flags & (TCP_SYN | TCP_ACK | TCP_RST)) == TCP_SYN) {
		if (handed_has(cfg, &fk)) {
			count(C_handed_syn_to_host);
			return to_host(cfg);
		}
		return syn(ctx, cfg, l, &s, &o);
	}
	if ((s.flags & (TCP_SYN | TCP_ACK | TCP_RST)) == TCP_ACK && o.has_ts && (o.tsecr & 1))
		return cookie_ack(ctx, cfg, &s, &o, &fk,
				  (l->flags & ATCP_F_DEFER) && tl == doff && !(s.flags & TCP_FIN));
	return to_host(cfg);
}

/* ---- host port ------------------------------------------------------------------------------ */

SEC("xdp")
int atcp_host(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	const struct atcp_cfg *cfg = bpf_map_lookup_elem(&atcp_cfg, &zero);
	__u8 *f = data;

	if (!cfg)
		return XDP_ABORTED;
	if (data + ETH_HLEN <= end) {
		__u16 et = (__u16)f[12] << 8 | f[13];

		if (et >= 0x090A && et <= 0x090E) {
			if (et == 0x090B) {
				int v = teardown_host(ctx, cfg);

				if (v >= 0)
					return v;
				if (teardown_up_tx()) {
					count(C_xdp_to_control);
					return XDP_TX;  /* a live TAP: back to the writer */
				}
			}
			count(C_xdp_to_control);
			return XDP_PASS;        /* control frames: the control side's work */
		}
	}
	/* a splice rule's 4-tuple: the host flushing what it held (splice.h) */
	{
		int v = splice_host(ctx, cfg);

		if (v >= 0)
			return v;
	}
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	f = data;

	/* Only a segment with FIN, SYN or RST looks further (dataplane.py _host_segment) */
	if (data + 54 <= end && (f[47] & (TCP_FIN | TCP_SYN | TCP_RST)) &&
	    f[12] == 8 && f[13] == 0 && f[14] == 0x45 && f[23] == 6 &&
	    !(f[20] & 0x3F) && !f[21]) {
		struct atcp_flow_key k;         /* the wire-side key: the client's view */

		__builtin_memcpy(k.b, f + 30, 4);
		__builtin_memcpy(k.b + 4, f + 26, 4);
		__builtin_memcpy(k.b + 8, f + 36, 2);
		__builtin_memcpy(k.b + 10, f + 34, 2);
		if (f[47] & (TCP_FIN | TCP_RST)) {
			handed_discard(&k);
		} else if ((f[47] & (TCP_SYN | TCP_ACK)) == (TCP_SYN | TCP_ACK)) {
			if (listener(*(__u32 *)(f + 26), *(__u16 *)(f + 34)))
				handed_add(cfg, &k, ATCP_HANDED_HOST);
		}
	}
	count(C_passthrough_wire);
	return bpf_redirect(cfg->wire_ifindex, 0);
}

/* ---- the stub ---------------------------------------------------------------------------------
 * A veth end that receives XDP_TX'd or redirected frames needs an XDP program of its own
 * (notes/xdp-on-this-kernel.md): the peer's end of the wire port gets this one. */
SEC("xdp")
int atcp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}
