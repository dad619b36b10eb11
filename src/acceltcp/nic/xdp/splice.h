/* AccelTCP XDP dataplane, splice (nic/splice.py, AccelTCP §4.3): the rule table, header
 * translation with differential checksums, SACK/TS/WS translation, FIN/RST tracking, and
 * the 0x090D closure report.  Not built yet: every hook says "not a spliced flow" (-1),
 * and the control side (splice_ctl.py) refuses Splice requests as a NicDataplane
 * without a splice table does. */
#ifndef ATCP_SPLICE_H
#define ATCP_SPLICE_H

/* atcp_wire: a frame whose 4-tuple (frame[26:38]) has a splice rule -> its XDP verdict;
 * -1 (frame untouched) otherwise.  Called after the IPv4 checks, for TCP only. */
static __always_inline int splice_wire(struct xdp_md *ctx, const struct atcp_cfg *cfg)
{
	return -1;
}

/* atcp_host: the host flushing what it held while a splice was installed (an IPv4 frame
 * whose 4-tuple is a rule's) -> its verdict; -1 otherwise. */
static __always_inline int splice_host(struct xdp_md *ctx, const struct atcp_cfg *cfg)
{
	return -1;
}

#endif
