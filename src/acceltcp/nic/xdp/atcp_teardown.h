/* The teardown path's map layouts and counters (teardown.h; mirrored by teardown_ctl.py).
 * Conventions as in atcp.h. */
#ifndef ATCP_TEARDOWN_LAYOUT_H
#define ATCP_TEARDOWN_LAYOUT_H

/* counters of the teardown path, appended to atcp.h's and atcp_splice.h's (one X entry each) */
#define ATCP_TEARDOWN_COUNTERS(X)

#endif
