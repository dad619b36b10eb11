/* AccelTCP XDP dataplane, teardown (nic/teardown.py, AccelTCP §4.2): flows the host hands
 * over with 0x090B, their data and FIN, the peer's ACKs, duplicate ACKs, FIN and RST,
 * TIME-WAIT, the timer wheel's state in maps (walked by the control side, which also
 * retransmits: XDP never sends on a timer).  Not built yet: every hook says "not mine"
 * (-1), and the control side (teardown_ctl.py) refuses Teardown requests as a
 * NicDataplane without a teardown table does. */
#ifndef ATCP_TEARDOWN_H
#define ATCP_TEARDOWN_H

/* atcp_wire: a segment of a flow in the teardown table -> its XDP verdict; -1 (frame
 * untouched) otherwise.  Called after the IPv4 checks and splice_wire, for TCP only;
 * `total` is the IPv4 total length (already checked against the frame). */
static __always_inline int teardown_wire(struct xdp_md *ctx, const struct atcp_cfg *cfg,
					 __u32 total)
{
	return -1;
}

/* atcp_host: a 0x090B Teardown frame -> its verdict if the program takes the handover
 * itself; -1 to pass it to the control side (XDP_PASS, teardown_ctl.py). */
static __always_inline int teardown_host(struct xdp_md *ctx, const struct atcp_cfg *cfg)
{
	return -1;
}

#endif
