"""Redis glob patterns (KEYS, CONFIG GET) compiled to predicates."""

import re

__all__ = ["compile_pattern"]


def _glob_tokens(p):
    """Redis's stringmatchlen reading of a pattern -> tokens: None for a run of '*', else
    a regex fragment matching exactly one byte. Quirks kept: '[' without ']' runs to the
    end of the pattern, '[a-]' is the range a..']' and the class goes on, a reversed
    range is swapped, '\\' escapes inside and outside classes, a final '\\' is literal,
    '[!' is not a negation ('^' is)."""
    toks = []
    i = 0
    n = len(p)
    while i < n:
        c = p[i]
        if c == 42:                                   # '*'
            if not toks or toks[-1] is not None:
                toks.append(None)
        elif c == 63:                                 # '?'
            toks.append(b".")
        elif c == 91:                                 # '['
            i += 1
            negate = i < n and p[i] == 94             # '^'
            if negate:
                i += 1
            ranges = []
            while True:
                if i < n and p[i] == 92 and n - i >= 2:
                    i += 1
                    ranges.append((p[i], p[i]))
                elif i < n and p[i] == 93:            # ']'
                    break
                elif i >= n:                          # unterminated: the class ends here
                    i -= 1
                    break
                elif n - i >= 3 and p[i + 1] == 45:   # 'x-y'
                    lo, hi = p[i], p[i + 2]
                    ranges.append((lo, hi) if lo <= hi else (hi, lo))
                    i += 2
                else:
                    ranges.append((p[i], p[i]))
                i += 1
            body = b"".join(b"\\x%02x" % lo if lo == hi else b"\\x%02x-\\x%02x" % (lo, hi)
                            for lo, hi in ranges)
            if not body:
                toks.append(b"." if negate else b"(?!)")
            else:
                toks.append(b"[" + (b"^" if negate else b"") + body + b"]")
        else:
            if c == 92 and n - i >= 2:                # '\x': a literal x
                i += 1
                c = p[i]
            toks.append(b"\\x%02x" % c)
        i += 1
    return toks


def compile_pattern(pattern):
    """A Redis glob (KEYS, CONFIG GET) -> predicate(key: bytes) -> bool, matching exactly
    as Redis's stringmatchlen: ``* ? [abc] [^a] [a-z] \\x``, case-sensitive, any byte.

    The pattern is cut at its stars into fixed-width segments, each one compiled regex:
    the first must match at the start, the last at the end, the others are found left to
    right at their leftmost place (exact for fixed-width pieces), so matching is linear
    in the key for any pattern, with no backtracking blow-up. As in Redis, an empty key
    matches only the empty pattern (KEYS special-cases a lone '*')."""
    toks = _glob_tokens(bytes(pattern))
    if not toks:
        return lambda key: not key
    segs = [[]]
    for t in toks:
        if t is None:
            segs.append([])
        else:
            segs[-1].append(t)
    if len(segs) == 1:
        whole = re.compile(b"".join(segs[0]), re.S).fullmatch
        return lambda key: whole(key) is not None
    first_n = len(segs[0])
    last_n = len(segs[-1])
    first = re.compile(b"".join(segs[0]), re.S).match if first_n else None
    last = re.compile(b"".join(segs[-1]), re.S).fullmatch if last_n else None
    mids = [re.compile(b"".join(s), re.S).search for s in segs[1:-1]]
    least = sum(map(len, segs))

    def match(key):
        n = len(key)
        if n < least or not n:
            return False
        if first is not None and first(key) is None:
            return False
        end = n - last_n
        if last is not None and last(key, end) is None:
            return False
        pos = first_n
        for search in mids:
            m = search(key, pos, end)
            if m is None:
                return False
            pos = m.end()
        return True

    return match

