/* AccelTCP XDP dataplane: the map layouts shared by the programs and the Python control
 * side (src/acceltcp/nic/xdp/control.py reads this file for the counter names and mirrors
 * the structs with struct.Struct; tests/xdp checks the sizes).  All multi-byte fields are
 * host order unless the name ends in _be (network order, as on the wire). */
#ifndef ATCP_H
#define ATCP_H

#include "atcp_splice.h"
#include "atcp_teardown.h"

/* Per-CPU counters, one u64 each, in this order (index = position).  The names are
 * NicDataplane.counters' names; the xdp_* ones exist only here (they count what the
 * Python NIC cannot run into).  The splice and teardown paths add theirs, after these,
 * from atcp_splice.h and atcp_teardown.h (control.py reads the three files in order). */
#define ATCP_COUNTERS(X)                                                              \
	X(passthrough_host) X(passthrough_wire) X(syn_cookies_sent) X(syn_to_host)      \
	X(cookie_ack_ok) X(cookie_ack_bad) X(cookie_ack_deferred) X(rst_sent) X(drops)   \
	X(drop_offload_ethertype) X(drop_cookie_bad)                                     \
	X(handed_inserted) X(handed_removed) X(handed_evicted)                           \
	X(handed_ack_to_host) X(handed_syn_to_host)                                      \
	X(malformed_ip_short) X(malformed_ip_bad_version) X(malformed_ip_bad_ihl)        \
	X(malformed_ip_options) X(malformed_ip_bad_length) X(malformed_ip_bad_checksum)  \
	X(malformed_ip_fragment) X(malformed_tcp_short) X(malformed_tcp_bad_offset)      \
	X(malformed_tcp_bad_checksum) X(malformed_tcp_option_overrun)                    \
	X(malformed_tcp_bad_option_length)                                               \
	X(xdp_key_missing) X(xdp_adjust_failed) X(xdp_to_control)                      \
	ATCP_SPLICE_COUNTERS(X) ATCP_TEARDOWN_COUNTERS(X)

#define ATCP_ENUM(n) C_##n,
enum atcp_counter { ATCP_COUNTERS(ATCP_ENUM) C_MAX };
#undef ATCP_ENUM

/* atcp_cfg[0]: written by the control side before traffic (and on option changes). */
struct atcp_cfg {
	__u8 mac[6];            /* the NIC's MAC: source of the frames it originates */
	__u16 syn_window;       /* window field of the cookie SYN-ACK */
	__u8 ttl;
	__u8 rst_on_bad_cookie;
	__u8 verify_csum;       /* 0: the port vouches for TCP checksums (csum_ok) */
	__u8 window;            /* cookie validity, counter steps 1..32 */
	__u32 steps;            /* counter steps per key generation (period / tick) */
	__u32 handed_capacity;  /* 0: no handed-over table */
	__u32 host_ifindex;     /* wire program: redirect to-host frames here; 0: XDP_PASS */
	__u32 wire_ifindex;     /* host program: redirect to-wire frames here (XDP_PASS there
	                         * means "to the control side": offload EtherTypes) */
};

/* atcp_clock[0]: the cookie clock and keys, written by the control side each tick (the
 * Python SynCookieJar takes `now`; so does the control side, which turns it into these
 * integers with the jar's own expressions). */
struct atcp_clock {
	__s64 count;            /* floor(now / tick) */
	__s64 gen;              /* count // steps (floor): the generation of h_cur */
	__u32 ts;               /* (int(now * ts_hz) + ts_offset) mod 2**32 */
	__u32 pad;
	__u32 h_cur[8];         /* keyed BLAKE2s state after the key block, generation gen */
	__u32 h_prev[8];        /* the same for generation gen - 1 */
};

/* atcp_state[0]: shared mutable state (atomic adds). */
struct atcp_state {
	__u32 ident;            /* IPv4 ident of the last frame the NIC originated */
	__u32 handed_count;     /* entries in atcp_handed as far as the programs know */
};

/* atcp_listen: key (ip, port) as on the wire, ip 0 = any local address. */
struct atcp_listen_key {
	__u32 ip_be;
	__u16 port_be;
	__u16 pad;
};

#define ATCP_WS_NONE 0xFF
#define ATCP_F_SACK 0x01
#define ATCP_F_TS 0x02
#define ATCP_F_DEFER 0x04       /* defer accept: a bare cookie ACK is absorbed */

struct atcp_listener {
	__u16 mss;              /* offered in the SYN-ACK */
	__u8 wscale;            /* our shift, ATCP_WS_NONE = no WS option */
	__u8 flags;             /* ATCP_F_SACK | ATCP_F_TS | ATCP_F_DEFER, as in Listen */
};

/* atcp_handed: key = frame[26:38] of a client frame (client ip | local ip | client port |
 * local port), value = origin. */
struct atcp_flow_key {
	__u8 b[12];
};

#define ATCP_HANDED_COOKIE 1
#define ATCP_HANDED_HOST 2

#endif
