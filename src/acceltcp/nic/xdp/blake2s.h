/* The last BLAKE2s compression of a cookie hash (RFC 7693 §3.2), straight-line code.
 *
 * tcp/syncookie.py hashes a 22-byte message with BLAKE2s(key=K_g, digest_size=3,
 * person="acctcpsc").  Everything before the message is fixed per key generation: the
 * parameter block and the key block (the key padded to 64 bytes, compressed with t = 64,
 * f0 = 0).  The control side computes that chaining value h[0..7] in Python
 * (xdp/blake2s.py) and writes it to atcp_clock; this file compresses the one remaining
 * block -- the message padded with zeros, t = 64 + 22, f0 = ~0 (last block) -- and
 * returns the 3 digest bytes as syncookie.py reads them (big-endian int of bytes 0..2 of
 * the little-endian h'[0]).  10 rounds x 8 G = ~1300 instructions, no loops, no maps. */
#ifndef ATCP_BLAKE2S_H
#define ATCP_BLAKE2S_H

#define B2_IV0 0x6A09E667u
#define B2_IV1 0xBB67AE85u
#define B2_IV2 0x3C6EF372u
#define B2_IV3 0xA54FF53Au
#define B2_IV4 0x510E527Fu
#define B2_IV5 0x9B05688Cu
#define B2_IV6 0x1F83D9ABu
#define B2_IV7 0x5BE0CD19u

static __always_inline __u32 b2_rotr(__u32 x, int n)
{
	return (x >> n) | (x << (32 - n));
}

/* RFC 7693 §3.1, G with R1..R4 = 16, 12, 8, 7 */
#define B2_G(a, b, c, d, x, y)                                                   \
	do {                                                                     \
		v[a] = v[a] + v[b] + (x);                                        \
		v[d] = b2_rotr(v[d] ^ v[a], 16);                                 \
		v[c] = v[c] + v[d];                                              \
		v[b] = b2_rotr(v[b] ^ v[c], 12);                                 \
		v[a] = v[a] + v[b] + (y);                                        \
		v[d] = b2_rotr(v[d] ^ v[a], 8);                                  \
		v[c] = v[c] + v[d];                                              \
		v[b] = b2_rotr(v[b] ^ v[c], 7);                                  \
	} while (0)

/* one round with the message schedule SIGMA[r] (RFC 7693 §2.7) */
#define B2_ROUND(s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, s12, s13, s14, s15) \
	do {                                                                     \
		B2_G(0, 4, 8, 12, m[s0], m[s1]);                                 \
		B2_G(1, 5, 9, 13, m[s2], m[s3]);                                 \
		B2_G(2, 6, 10, 14, m[s4], m[s5]);                                \
		B2_G(3, 7, 11, 15, m[s6], m[s7]);                                \
		B2_G(0, 5, 10, 15, m[s8], m[s9]);                                \
		B2_G(1, 6, 11, 12, m[s10], m[s11]);                              \
		B2_G(2, 7, 8, 13, m[s12], m[s13]);                               \
		B2_G(3, 4, 9, 14, m[s14], m[s15]);                               \
	} while (0)

/* h: the keyed chaining value; msg: m[0..5] = the 22 message bytes as little-endian words
 * (bytes 22, 23 zero).  Returns the 24-bit cookie hash. */
static __always_inline __u32 b2_cookie_hash(const __u32 *h, const __u32 *msg)
{
	__u32 m[16] = {msg[0], msg[1], msg[2], msg[3], msg[4], msg[5]};
	__u32 v[16];

	v[0] = h[0]; v[1] = h[1]; v[2] = h[2]; v[3] = h[3];
	v[4] = h[4]; v[5] = h[5]; v[6] = h[6]; v[7] = h[7];
	v[8] = B2_IV0; v[9] = B2_IV1; v[10] = B2_IV2; v[11] = B2_IV3;
	v[12] = B2_IV4 ^ (64 + 22);     /* t0: key block + message bytes */
	v[13] = B2_IV5;                 /* t1 */
	v[14] = ~B2_IV6;                /* f0 = 0xFFFFFFFF: the last block */
	v[15] = B2_IV7;

	B2_ROUND(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
	B2_ROUND(14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3);
	B2_ROUND(11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4);
	B2_ROUND(7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8);
	B2_ROUND(9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13);
	B2_ROUND(2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9);
	B2_ROUND(12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11);
	B2_ROUND(13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10);
	B2_ROUND(6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5);
	B2_ROUND(10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0);

	__u32 out = h[0] ^ v[0] ^ v[8];  /* digest bytes 0..3, little-endian */
	return (out & 0xFF) << 16 | (out & 0xFF00) | ((out >> 16) & 0xFF);
}

#endif
