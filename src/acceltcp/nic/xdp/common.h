/* AccelTCP XDP dataplane: what every path of nic.bpf.c shares -- the constants, the
 * configuration, state and counter maps, counting and verdict helpers, checksums, and
 * building and emitting the frames the NIC originates.  Included once, by nic.bpf.c
 * (one object; the per-path headers splice.h and teardown.h come after it). */
#ifndef ATCP_COMMON_H
#define ATCP_COMMON_H

#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

#define WSCALE_NONE 15          /* cookie TSval code: the client sent no WS */
#define TS_MARK 0x01
#define TS_SACK 0x20

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct atcp_cfg);
} atcp_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct atcp_clock);
} atcp_clock SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct atcp_state);
} atcp_state SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, C_MAX);
	__type(key, __u32);
	__type(value, __u64);
} atcp_counters SEC(".maps");

/* a frame the setup path builds (SYN-ACK, RST) before emit() writes it over the received
 * one: per CPU, off the 512-byte stack, which the parse and the cookie's hash fill */
struct atcp_frame_buf {
	__u8 b[80];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct atcp_frame_buf);
} atcp_fbuf SEC(".maps");

/* capacity enforced by the control side (listener_capacity <= this) */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct atcp_listen_key);
	__type(value, struct atcp_listener);
} atcp_listen SEC(".maps");

/* One bit per local port with at least one listener entry: traffic to any other port
 * is rejected with one array lookup (ListenerTable._ports in dataplane.py). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} atcp_lports SEC(".maps");

/* The control side creates it with max_entries = handed_capacity and hands it to the
 * loader (bpftool ... map name atcp_handed pinned ...); this size is the default. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct atcp_flow_key);
	__type(value, __u32);
} atcp_handed SEC(".maps");

/* ---- small helpers ----------------------------------------------------------------- */

/* atcp_handed_ctl[0]: entries the control side removed from atcp_handed.  Only it
 * writes this (bpf(2) has no atomic add: a read-modify-write of atcp_state would undo
 * the programs' concurrent adds to handed_count and ident); the table holds
 * handed_count - removed. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);       /* the control side's writes: no syscall */
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} atcp_handed_ctl SEC(".maps");

static __always_inline void count(__u32 idx)
{
	__u64 *c = bpf_map_lookup_elem(&atcp_counters, &idx);

	if (c)
		*c += 1;
}

static __always_inline int up(const struct atcp_cfg *cfg)
{
	return cfg->host_ifindex ? bpf_redirect(cfg->host_ifindex, 0) : XDP_PASS;
}

/* the frame unchanged to the host */
static __always_inline int to_host(const struct atcp_cfg *cfg)
{
	count(C_passthrough_host);
	return up(cfg);
}

static __always_inline int malformed(const struct atcp_cfg *cfg, __u32 reason)
{
	count(reason);
	return to_host(cfg);
}

static __always_inline int drop(__u32 reason)
{
	count(C_drops);
	count(reason);
	return XDP_DROP;
}

static __always_inline __u16 csum_fold(__u64 s)
{
	s = (s & 0xFFFFFFFF) + (s >> 32);
	s = (s & 0xFFFFFFFF) + (s >> 32);
	s = (s & 0xFFFF) + (s >> 16);
	s = (s & 0xFFFF) + (s >> 16);
	return (__u16)s;
}

static __always_inline __u32 load_be32(const __u8 *p)
{
	return (__u32)p[0] << 24 | (__u32)p[1] << 16 | (__u32)p[2] << 8 | p[3];
}

static __always_inline void store_be16(__u8 *p, __u16 v)
{
	p[0] = v >> 8;
	p[1] = v;
}

static __always_inline void store_be32(__u8 *p, __u32 v)
{
	p[0] = v >> 24;
	p[1] = v >> 16;
	p[2] = v >> 8;
	p[3] = v;
}

/* floor(a / b) for b > 0 (Python's //): the counter may be negative before time 0 */
static __always_inline __s64 floordiv(__s64 a, __u32 b)
{
	if (a >= 0)
		return (__s64)((__u64)a / b);
	return -(__s64)(((__u64)(-a) + b - 1) / b);
}

/* ---- TCP checksum over the segment in the packet (RFC 1071, RFC 9293 §3.1) ------------ */

#define CSUM_STEP(sz)                                                              \
	do {                                                                       \
		if (rem >= (sz)) {                                                 \
			p = data + off;                                            \
			if ((void *)(p + (sz)) > end)                              \
				return 0;                                          \
			r = bpf_csum_diff(0, 0, (__be32 *)p, (sz), 0);                     \
			if (r < 0)                                                 \
				return 0;                                          \
			sum += (__u32)r;                                           \
			off += (sz);                                               \
			rem -= (sz);                                               \
		}                                                                  \
	} while (0)

/* 1 if the segment of `len` bytes at frame offset 34 sums (with the pseudo-header) to -0.
 * Sums are taken in the CPU's byte order (RFC 1071 §2(B): byte-order independence). */
static __always_inline int tcp_csum_ok(struct xdp_md *ctx, __u32 len, __u64 pseudo)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u64 sum = pseudo;
	__u32 off = 34, rem = len;
	__u8 *p;
	long r;

	/* 8 x 512 bytes covers the largest linear XDP buffer (one page) */
	for (int k = 0; k < 8; k++) {
		if (rem < 512)
			break;
		CSUM_STEP(512);
	}
	if (rem >= 512)
		return 0;
	CSUM_STEP(256);
	CSUM_STEP(128);
	CSUM_STEP(64);
	CSUM_STEP(32);
	CSUM_STEP(16);
	CSUM_STEP(8);
	CSUM_STEP(4);
	off &= 0xFFFF;
	p = data + off;
	if (rem >= 2) {
		if ((void *)(p + 2) > end)
			return 0;
		sum += *(__u16 *)p;
		p += 2;
		rem -= 2;
	}
	if (rem) {              /* the odd byte, padded with a zero byte (RFC 9293 §3.1) */
		if ((void *)(p + 1) > end)
			return 0;
		__u16 w = 0;

		*(__u8 *)&w = *p;
		sum += w;
	}
	return csum_fold(sum) == 0xFFFF;
}

/* ---- frames the NIC originates ---------------------------------------------------------- */

/* Ethernet + IPv4 (DF, tos 0) + TCP header, as wire/tcp.py build_tcp_frame lays them out;
 * the options (olen bytes) follow at 54 and are already in place; plen payload bytes
 * follow the header, psum their checksum sum (bpf_csum_diff over them, zero-padded to a
 * multiple of 4).  Both checksums. */
static __always_inline void build_hdr_payload(__u8 *f, const __u8 *eth_dst,
					      const struct atcp_cfg *cfg, const __u8 *ips_swapped,
					      __u16 ident, const __u8 *ports_swapped, __u32 seq,
					      __u32 ack, __u8 flags, __u16 window, __u32 olen,
					      __u32 plen, __u64 psum)
{
	__u32 hlen = 20 + olen, tcp_len = hlen + plen;
	__s64 r;

	__builtin_memcpy(f, eth_dst, 6);
	__builtin_memcpy(f + 6, cfg->mac, 6);
	f[12] = 0x08;
	f[13] = 0x00;
	f[14] = 0x45;
	f[15] = 0;
	store_be16(f + 16, 20 + tcp_len);
	store_be16(f + 18, ident);
	f[20] = 0x40;
	f[21] = 0;
	f[22] = cfg->ttl;
	f[23] = 6;
	f[24] = 0;
	f[25] = 0;
	__builtin_memcpy(f + 26, ips_swapped, 8);
	__builtin_memcpy(f + 34, ports_swapped, 4);
	store_be32(f + 38, seq);
	store_be32(f + 42, ack);
	f[46] = (hlen / 4) << 4;
	f[47] = flags;
	store_be16(f + 48, window);
	f[50] = 0;
	f[51] = 0;
	f[52] = 0;
	f[53] = 0;
	r = bpf_csum_diff(0, 0, (__be32 *)(f + 14), 20, 0);
	*(__u16 *)(f + 24) = ~csum_fold((__u32)r);
	/* pseudo-header: the addresses are in the header already; proto + TCP length */
	r = bpf_csum_diff(0, 0, (__be32 *)(f + 34), hlen, 0);
	__u64 s = (__u32)r + psum;
	for (int i = 26; i < 34; i += 2)        /* the addresses, as CPU-order words */
		s += (__u16)(f[i] | f[i + 1] << 8);
	s += bpf_htons(6 + tcp_len);
	*(__u16 *)(f + 50) = ~csum_fold(s);
}

static __always_inline void build_hdr(__u8 *f, const __u8 *eth_dst, const struct atcp_cfg *cfg,
				      const __u8 *ips_swapped, __u16 ident, const __u8 *ports_swapped,
				      __u32 seq, __u32 ack, __u8 flags, __u16 window, __u32 olen)
{
	build_hdr_payload(f, eth_dst, cfg, ips_swapped, ident, ports_swapped, seq, ack, flags,
			  window, olen, 0, 0);
}

/* Replace the frame by f[0..len): grow at the front, trim at the tail. */
static __always_inline int emit(struct xdp_md *ctx, const __u8 *f, __u32 len)
{
	__u32 have = ctx->data_end - ctx->data;
	int delta = (int)len - (int)have;

	if (delta > 0 && bpf_xdp_adjust_head(ctx, -delta))
		return -1;
	if (delta < 0 && bpf_xdp_adjust_tail(ctx, delta))
		return -1;
	if (len > 80)
		return -1;
	return bpf_xdp_store_bytes(ctx, 0, (void *)f, len) ? -1 : 0;
}

static __always_inline __u16 next_ident(void)
{
	__u32 zero = 0;
	struct atcp_state *st = bpf_map_lookup_elem(&atcp_state, &zero);

	return st ? (__u16)(__sync_fetch_and_add(&st->ident, 1) + 1) : 0;
}


/* ---- TCP options (wire/tcp.py parse_tcp, the general loop) --------------------------- */

struct opts {
	__u8 b[80];             /* option bytes (<= 40), zero-padded; indices masked & 63 */
	__u32 len;
	__u32 i;
	__u32 err;              /* 0 or a malformed_* counter */
	__u32 mss;              /* 0xFFFFFFFF: absent */
	__u32 wscale;           /* 0xFF: absent, else clamped to 14 (RFC 7323 §2.3) */
	__u32 sack_ok;
	__u32 has_ts;
	__u32 tsval;
	__u32 tsecr;
};

/* One option per call (RFC 9293 §3.2: EOL, NOP or kind-length-value); 1 ends the walk. */
static long opt_step(__u32 idx, struct opts *o)
{
	__u32 i = o->i, len = o->len, olen;
	__u8 kind;

	if (i >= len || i >= 40)
		return 1;
	kind = o->b[i & 63];
	if (kind == 1) {                        /* NOP */
		o->i = i + 1;
		return 0;
	}
	if (kind == 0)                          /* EOL: the rest is padding */
		return 1;
	if (i + 1 >= len) {
		o->err = C_malformed_tcp_option_overrun;
		return 1;
	}
	olen = o->b[(i + 1) & 63];
	if (olen < 2 || i + olen > len) {
		o->err = C_malformed_tcp_option_overrun;
		return 1;
	}
	const __u8 *v = &o->b[(i + 2) & 63];

	switch (kind) {
	case 8:                                 /* RFC 7323 §3.2 */
		if (olen != 10)
			goto bad;
		o->has_ts = 1;
		o->tsval = load_be32(v);
		o->tsecr = load_be32(v + 4);
		break;
	case 2:                                 /* RFC 9293 §3.7.1 */
		if (olen != 4)
			goto bad;
		o->mss = (__u32)v[0] << 8 | v[1];
		break;
	case 3:                                 /* RFC 7323 §2.2 */
		if (olen != 3)
			goto bad;
		o->wscale = v[0] > 14 ? 14 : v[0];
		break;
	case 4:                                 /* RFC 2018 §2 */
		if (olen != 2)
			goto bad;
		o->sack_ok = 1;
		break;
	case 5:                                 /* RFC 2018 §3: 2 + 8n bytes, n >= 1 */
		if (olen < 10 || ((olen - 2) & 7))
			goto bad;
		break;
	}
	o->i = i + olen;
	return 0;
bad:
	o->err = C_malformed_tcp_bad_option_length;
	return 1;
}

#define OPT_NOP_NOP_TS 0x0101080A
#define OPT_SACKPERM_TS 0x0402080A

/* parse_tcp's fast paths: the Linux layouts of an established segment (doff 32: NOP NOP
 * TS) and of a SYN (doff 40: MSS, SACK-perm+TS or NOP NOP TS, NOP WS) read in place, no
 * walk.  The same result as the walk; 0 when the layout is another. */
static __always_inline int fast_opts(const __u8 *f, const void *end, __u32 doff,
				     struct opts *o)
{
	if (doff == 32) {
		if ((void *)(f + 66) > end || load_be32(f + 54) != OPT_NOP_NOP_TS)
			return 0;
		o->has_ts = 1;
		o->tsval = load_be32(f + 58);
		o->tsecr = load_be32(f + 62);
		return 1;
	}
	if (doff == 40) {
		if ((void *)(f + 74) > end)
			return 0;
		__u32 w = load_be32(f + 58);

		if (f[54] != 2 || f[55] != 4 || f[70] != 1 || f[71] != 3 || f[72] != 3 ||
		    (w != OPT_SACKPERM_TS && w != OPT_NOP_NOP_TS))
			return 0;
		o->mss = (__u32)f[56] << 8 | f[57];
		o->sack_ok = w == OPT_SACKPERM_TS;
		o->has_ts = 1;
		o->tsval = load_be32(f + 62);
		o->tsecr = load_be32(f + 66);
		o->wscale = f[73] > 14 ? 14 : f[73];
		return 1;
	}
	return 0;
}

/* ---- the handed-over flows table ------------------------------------------------------- */

static __always_inline void handed_add(const struct atcp_cfg *cfg, const struct atcp_flow_key *k,
				       __u32 origin)
{
	__u32 zero = 0, *v;
	struct atcp_state *st;

	if (!cfg->handed_capacity)
		return;
	v = bpf_map_lookup_elem(&atcp_handed, k);
	if (v) {
		/* present: refresh in place.  An update would allocate a new LRU node first,
		 * and in a full map that evicts another flow. */
		*v = origin;
		return;
	}
	count(C_handed_inserted);
	st = bpf_map_lookup_elem(&atcp_state, &zero);
	if (st) {
		__u32 *removed = bpf_map_lookup_elem(&atcp_handed_ctl, &zero);
		__u32 held = st->handed_count - (removed ? *removed : 0);

		/* full: the map evicts an entry for it (the kernel's LRU choice, where the
		 * Python table evicts the oldest) */
		if (held >= cfg->handed_capacity)
			count(C_handed_evicted);
		else
			__sync_fetch_and_add(&st->handed_count, 1);
	}
	bpf_map_update_elem(&atcp_handed, k, &origin, BPF_ANY);
}

static __always_inline void handed_discard(const struct atcp_flow_key *k)
{
	__u32 zero = 0;
	struct atcp_state *st;

	if (bpf_map_delete_elem(&atcp_handed, k))
		return;
	count(C_handed_removed);
	st = bpf_map_lookup_elem(&atcp_state, &zero);
	if (st)
		__sync_fetch_and_sub(&st->handed_count, 1);
}

static __always_inline int handed_has(const struct atcp_cfg *cfg, const struct atcp_flow_key *k)
{
	return cfg->handed_capacity && bpf_map_lookup_elem(&atcp_handed, k);
}

static __always_inline const struct atcp_listener *listener(__u32 ip_be, __u16 port_be)
{
	struct atcp_listen_key k = {.ip_be = ip_be, .port_be = port_be};
	__u32 port = bpf_ntohs(port_be), word = port >> 6;
	const __u64 *bits = bpf_map_lookup_elem(&atcp_lports, &word);

	if (!bits || !((*bits >> (port & 63)) & 1))
		return 0;
	const struct atcp_listener *l = bpf_map_lookup_elem(&atcp_listen, &k);

	if (l)
		return l;
	k.ip_be = 0;                            /* the wildcard 0.0.0.0 */
	return bpf_map_lookup_elem(&atcp_listen, &k);
}

#endif
