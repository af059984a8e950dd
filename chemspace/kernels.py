"""Numba kernels behind counting and enumeration (internal; use chemspace.counting / enumeration).

Stoichiometry tuples n in 1..m per position are indexed lexicographically
(``idx = sum_i (n_i - 1) * m**(k-1-i)``, the order of ``itertools.product``) and stored as bits of
``uint64`` words.  For a charge tuple q the set N(q) of gcd-reduced n with n.q = 0 is one bitset;
the allowed stoichiometries of an element combination are the union of N(q) over the charge
tuples that pass SMACT's Pauling test (smact_filter is scale invariant, so this is exact).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True)
def popcount64(x):
    """Number of set bits of a uint64 (SWAR)."""
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return (x * np.uint64(0x0101010101010101)) >> np.uint64(56)


@njit(cache=True)
def stoich_tuples(k, m):
    """All n in 1..m per position, lexicographic, shape (m**k, k)."""
    total = m**k
    out = np.empty((total, k), dtype=np.int64)
    for idx in range(total):
        r = idx
        for i in range(k - 1, -1, -1):
            out[idx, i] = r % m + 1
            r //= m
    return out


@njit(cache=True)
def _gcd(a, b):
    while b:
        a, b = b, a % b
    return a


@njit(cache=True)
def reduced_mask(k, m):
    """Bitset of the gcd-reduced tuples and their count."""
    n = stoich_tuples(k, m)
    total = n.shape[0]
    words = (total + 63) // 64
    mask = np.zeros(words, dtype=np.uint64)
    count = 0
    for idx in range(total):
        g = n[idx, 0]
        for i in range(1, k):
            g = _gcd(g, n[idx, i])
        if g == 1:
            mask[idx >> 6] |= np.uint64(1) << np.uint64(idx & 63)
            count += 1
    return mask, count


@njit(cache=True)
def _neutral_bits(q, ntup, rmask, out):
    """out = bitset of reduced n with n.q == 0."""
    k = q.shape[0]
    for w in range(out.shape[0]):
        out[w] = 0
    for idx in range(ntup.shape[0]):
        s = 0
        for i in range(k):
            s += ntup[idx, i] * q[i]
        if s == 0:
            out[idx >> 6] |= np.uint64(1) << np.uint64(idx & 63)
    for w in range(out.shape[0]):
        out[w] &= rmask[w]


@njit(cache=True)
def _decode(code, values, k):
    nv = values.shape[0]
    q = np.empty(k, dtype=np.int64)
    r = np.int64(code)
    for i in range(k - 1, -1, -1):
        q[i] = values[r % nv]
        r //= nv
    return q


@njit(parallel=True, cache=True)
def neutral_table(values, k, m):
    """Bitsets N(q) for every charge tuple over ``values`` (mixed radix, position 0 first)."""
    nv = values.shape[0]
    ntup = stoich_tuples(k, m)
    rmask, _ = reduced_mask(k, m)
    words = rmask.shape[0]
    nq = nv**k
    table = np.zeros((nq, words), dtype=np.uint64)
    for qi in prange(nq):
        q = _decode(qi, values, k)
        _neutral_bits(q, ntup, rmask, table[qi])
    return table


@njit(cache=True)
def next_combos(state, n_pool, out):
    """Fill ``out`` (rows of k pool positions) with the next combinations after/at ``state``.

    ``state`` holds the next combination to emit (``state[0] == -1`` when exhausted) and is
    advanced in place.  Returns the number of rows written.
    """
    k = state.shape[0]
    count = 0
    while count < out.shape[0] and state[0] >= 0:
        for i in range(k):
            out[count, i] = state[i]
        count += 1
        i = k - 1
        while i >= 0 and state[i] == n_pool - k + i:
            i -= 1
        if i < 0:
            state[0] = -1
        else:
            state[i] += 1
            for j in range(i + 1, k):
                state[j] = state[j - 1] + 1
    return count


@njit(cache=True)
def _passing_charges(elems, st_val, st_vidx, st_off, en, nv, qbuf, qidx):
    """Charge tuples of one combination passing the Pauling test (and not trivially non-neutral).

    Writes the charge tuples into ``qbuf`` rows and their table indices into ``qidx``;
    returns how many.
    """
    k = elems.shape[0]
    for i in range(k):
        if np.isnan(en[elems[i]]) or st_off[elems[i] + 1] == st_off[elems[i]]:
            return 0
    pos = np.zeros(k, dtype=np.int64)
    n = 0
    while True:
        has_pos = False
        has_neg = False
        all_zero = True
        for i in range(k):
            q = st_val[st_off[elems[i]] + pos[i]]
            if q > 0:
                has_pos = True
                all_zero = False
            elif q < 0:
                has_neg = True
                all_zero = False
        ok = all_zero or (has_pos and has_neg)
        if ok:
            for a in range(k):
                qa = st_val[st_off[elems[a]] + pos[a]]
                if qa == 0:
                    continue
                ea = en[elems[a]]
                for b in range(a + 1, k):
                    qb = st_val[st_off[elems[b]] + pos[b]]
                    eb = en[elems[b]]
                    if (qa > 0 and qb < 0 and ea >= eb) or (qa < 0 and qb > 0 and ea <= eb):
                        ok = False
                        break
                if not ok:
                    break
        if ok:
            t = 0
            for i in range(k):
                qbuf[n, i] = st_val[st_off[elems[i]] + pos[i]]
                t = t * nv + st_vidx[st_off[elems[i]] + pos[i]]
            qidx[n] = t
            n += 1
        # odometer
        i = k - 1
        while i >= 0:
            pos[i] += 1
            if pos[i] < st_off[elems[i] + 1] - st_off[elems[i]]:
                break
            pos[i] = 0
            i -= 1
        if i < 0:
            return n


@njit(cache=True)
def _allowed_bits(elems, st_val, st_vidx, st_off, en, nv, table, use_table, ntup, rmask, qbuf, qidx, acc, scratch):
    """acc = union of N(q) over passing q; returns the number of passing q."""
    for w in range(acc.shape[0]):
        acc[w] = 0
    nq = _passing_charges(elems, st_val, st_vidx, st_off, en, nv, qbuf, qidx)
    for j in range(nq):
        if use_table:
            row = table[qidx[j]]
            for w in range(acc.shape[0]):
                acc[w] |= row[w]
        else:
            _neutral_bits(qbuf[j], ntup, rmask, scratch)
            for w in range(acc.shape[0]):
                acc[w] |= scratch[w]
    return nq


@njit(cache=True)
def _combo_allowed(c, combos, pool, st_val, st_vidx, st_off, en, nv, table, use_table, ntup, rmask, k, max_q):
    """Allowed-stoichiometry bits of combination row ``c``: (n passing charge tuples, the tuples,
    their table indices, the OR-ed bitset, a scratch bitset)."""
    elems = np.empty(k, dtype=np.int64)
    for i in range(k):
        elems[i] = pool[combos[c, i]]
    words = rmask.shape[0]
    qbuf = np.empty((max_q, k), dtype=np.int64)
    qidx = np.empty(max_q, dtype=np.int64)
    acc = np.empty(words, dtype=np.uint64)
    scratch = np.empty(words, dtype=np.uint64)
    nq = _allowed_bits(elems, st_val, st_vidx, st_off, en, nv, table, use_table, ntup, rmask, qbuf, qidx, acc, scratch)
    return nq, qbuf, qidx, acc, scratch


@njit(parallel=True, cache=True)
def count_allowed(combos, n, pool, st_val, st_vidx, st_off, en, nv, table, use_table, k, m, max_q):
    """Number of allowed reduced stoichiometries for each of the first ``n`` combination rows."""
    ntup = stoich_tuples(k, m) if not use_table else np.zeros((1, k), dtype=np.int64)
    rmask, _ = reduced_mask(k, m)
    words = rmask.shape[0]
    out = np.zeros(n, dtype=np.int64)
    for c in prange(n):
        nq, qbuf, qidx, acc, scratch = _combo_allowed(c, combos, pool, st_val, st_vidx, st_off, en, nv, table,
                                                      use_table, ntup, rmask, k, max_q)
        if nq == 0:
            continue
        s = 0
        for w in range(words):
            s += popcount64(acc[w])
        out[c] = s
    return out


@njit(parallel=True, cache=True)
def enumerate_chunk(combos, n, pool, st_val, st_vidx, st_off, en, nv, table, use_table, k, m, max_q, include_disallowed):
    """Rows of one chunk of combinations.

    Returns (row_combo[r], row_stoich[r] (index into stoich tuples), row_allowed[r],
    assign_offsets[r+1], assign_q[a, k]) where the passing charge assignments of row r are
    ``assign_q[assign_offsets[r]:assign_offsets[r+1]]``.
    """
    ntup_all = stoich_tuples(k, m)
    ntup = ntup_all if not use_table else np.zeros((1, k), dtype=np.int64)
    rmask, _ = reduced_mask(k, m)
    words = rmask.shape[0]
    n_rows = np.zeros(n + 1, dtype=np.int64)
    n_asg = np.zeros(n + 1, dtype=np.int64)
    # pass 1: sizes
    for c in prange(n):
        nq, qbuf, qidx, acc, scratch = _combo_allowed(c, combos, pool, st_val, st_vidx, st_off, en, nv, table,
                                                      use_table, ntup, rmask, k, max_q)
        rows = 0
        asg = 0
        for w in range(words):
            if include_disallowed:
                rows += popcount64(rmask[w])
            else:
                rows += popcount64(acc[w])
        for j in range(nq):
            if use_table:
                for w in range(words):
                    asg += popcount64(table[qidx[j], w])
            else:
                _neutral_bits(qbuf[j], ntup, rmask, scratch)
                for w in range(words):
                    asg += popcount64(scratch[w])
        n_rows[c + 1] = rows
        n_asg[c + 1] = asg
    roff = np.cumsum(n_rows)
    aoff = np.cumsum(n_asg)
    total_rows = roff[n]
    total_asg = aoff[n]
    row_combo = np.empty(total_rows, dtype=np.int64)
    row_stoich = np.empty(total_rows, dtype=np.int64)
    row_allowed = np.zeros(total_rows, dtype=np.bool_)
    row_nasg = np.zeros(total_rows, dtype=np.int64)
    assign_q = np.empty((total_asg, k), dtype=np.int8)
    # pass 2: fill (assignments grouped per row in q order)
    for c in prange(n):
        nq, qbuf, qidx, acc, scratch = _combo_allowed(c, combos, pool, st_val, st_vidx, st_off, en, nv, table,
                                                      use_table, ntup, rmask, k, max_q)
        r = roff[c]
        a = aoff[c]
        for idx in range(ntup_all.shape[0]):
            w = idx >> 6
            bit = np.uint64(1) << np.uint64(idx & 63)
            if not (rmask[w] & bit):
                continue
            allowed = (acc[w] & bit) != 0
            if not allowed and not include_disallowed:
                continue
            row_combo[r] = c
            row_stoich[r] = idx
            row_allowed[r] = allowed
            if allowed:
                for j in range(nq):
                    s = 0
                    for i in range(k):
                        s += ntup_all[idx, i] * qbuf[j, i]
                    if s == 0:
                        for i in range(k):
                            assign_q[a, i] = qbuf[j, i]
                        row_nasg[r] += 1
                        a += 1
            r += 1
    asg_off = np.zeros(total_rows + 1, dtype=np.int64)
    asg_off[1:] = np.cumsum(row_nasg)
    return row_combo, row_stoich, row_allowed, asg_off, assign_q
