/* The splice path's map layouts and counters (splice.h; mirrored by splice_ctl.py).
 * Conventions as in atcp.h. */
#ifndef ATCP_SPLICE_LAYOUT_H
#define ATCP_SPLICE_LAYOUT_H

/* counters of the splice path, appended to atcp.h's (one X entry each) */
#define ATCP_SPLICE_COUNTERS(X)

#endif
