/*
 * core/hmap.c — entries in one array (holes reused through a free list, a
 * bitmap of live entries), open-addressing indexes of 32-bit words with
 * linear probing and tombstones. See hmap.h for the design and invariants.
 *
 * Why tombstones and holes rather than backward shift and swap-remove: in
 * a large map every touched word or entry is a cache miss. Backward shift
 * must read the entry behind every following word of the cluster (to find
 * its home) and swap-remove must find the moved entry's words; a tombstone
 * and a hole cost nothing but the word and the entry already at hand.
 * Tombstones count as used slots for the 3/4 load limit and are cleared
 * by every rebuild of the index; holes are reused first and removed by a
 * compaction when fewer than 1/4 of the entries live.
 */
#include "core/hmap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "core/errbuf.h"

#define HMAP_MIN_CAP  16
#define HMAP_MIN_ECAP 8
#define ID_BITS       27
#define ID_MASK       ((1u << ID_BITS) - 1)
#define TAG_MASK      (~ID_MASK)
#define TOMB          TAG_MASK /* a deleted word: no entry, probing goes on */
#define NO_HOLE       UINT32_MAX

static inline uint64_t hash_impl(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ (uint64_t)n;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, b, 8);
        h = (h ^ w) * 0xbf58476d1ce4e5b9ULL;
        h ^= h >> 31;
        b += 8;
        n -= 8;
    }
    if (n) {
        uint64_t w = 0;
        memcpy(&w, b, n);
        h = (h ^ w) * 0xbf58476d1ce4e5b9ULL;
        h ^= h >> 31;
    }
    h ^= h >> 30;
    h *= 0x94d049bb133111ebULL;
    h ^= h >> 27;
    return h;
}

uint64_t vmt_hash_bytes(const void *p, size_t n) { return hash_impl(p, n); }

/* One index: its words, tombstone counter, and where its key sits in an
 * entry. The primary index uses the key (offset 0); index2 the secondary. */
typedef struct ixv {
    uint32_t *w;
    size_t *tombs;
    uint32_t off, size;
} ixv;

static inline ixv primary(vmt_hmap *m) { return (ixv){ m->index, &m->tombs, 0, m->key_size }; }
static inline ixv secondary(vmt_hmap *m) { return (ixv){ m->index2, &m->tombs2, m->key2_offset, m->key2_size }; }
static inline ixv primary_c(const vmt_hmap *m) { return primary((vmt_hmap *)m); }
static inline ixv secondary_c(const vmt_hmap *m) { return secondary((vmt_hmap *)m); }

/* The common key sizes get a hash specialised by the compiler. */
static inline uint64_t hash_n(const void *key, uint32_t size)
{
    switch (size) {
    case 8: return hash_impl(key, 8);
    case 16: return hash_impl(key, 16);
    default: return hash_impl(key, size);
    }
}

static void init_common(vmt_hmap *m, size_t key_size, size_t val_size)
{
    memset(m, 0, sizeof *m);
    m->key_size = (uint32_t)key_size;
    m->val_size = (uint32_t)val_size;
    m->val_offset = (uint32_t)((key_size + 7) & ~(size_t)7);
    m->entry_size = (uint32_t)(m->val_offset + ((val_size + 7) & ~(size_t)7));
    m->free_head = NO_HOLE;
}

void vmt_hmap_init(vmt_hmap *m, size_t key_size, size_t val_size)
{
    init_common(m, key_size, val_size);
}

void vmt_hmap_init2(vmt_hmap *m, size_t key_size, size_t val_size, size_t key2_offset, size_t key2_size)
{
    init_common(m, key_size, val_size);
    m->key2_offset = m->val_offset + (uint32_t)key2_offset;
    m->key2_size = (uint32_t)key2_size;
}

void vmt_hmap_free(vmt_hmap *m)
{
    free(m->entries);
    free(m->live);
    free(m->index);
    free(m->index2);
    m->entries = NULL;
    m->live = NULL;
    m->index = NULL;
    m->index2 = NULL;
    m->cap = m->ecap = m->count = m->used = m->tombs = m->tombs2 = 0;
    m->free_head = NO_HOLE;
}

void vmt_hmap_clear(vmt_hmap *m)
{
    vmt_hmap_free(m);
}

static inline uint8_t *entry_at(const vmt_hmap *m, size_t e) { return m->entries + e * m->entry_size; }
static inline bool is_live(const vmt_hmap *m, size_t e) { return (m->live[e / 64] >> (e % 64)) & 1; }
static inline void set_live(vmt_hmap *m, size_t e, bool on)
{
    if (on)
        m->live[e / 64] |= 1ULL << (e % 64);
    else
        m->live[e / 64] &= ~(1ULL << (e % 64));
}
static inline uint32_t tag_of(uint64_t h) { return (uint32_t)(h >> 59) << ID_BITS; }
static inline uint32_t word_of(uint64_t h, size_t e) { return tag_of(h) | (uint32_t)(e + 1); }
static inline bool word_live(uint32_t w) { return (w & ID_MASK) != 0; }
static inline size_t entry_of(uint32_t w) { return (size_t)(w & ID_MASK) - 1; }
static inline uint64_t entry_hash(const vmt_hmap *m, ixv x, size_t e) { return hash_n(entry_at(m, e) + x.off, x.size); }
static inline size_t live_words(size_t ecap) { return (ecap + 63) / 64; }

static inline bool key_equal(const uint8_t *a, const void *key, uint32_t size)
{
    if (size == 8) {
        uint64_t x, y;
        memcpy(&x, a, 8);
        memcpy(&y, key, 8);
        return x == y;
    }
    if (size == 16) {
        uint64_t x[2], y[2];
        memcpy(x, a, 16);
        memcpy(y, key, 16);
        return x[0] == y[0] && x[1] == y[1];
    }
    return memcmp(a, key, size) == 0;
}

/* Index slot of key (hash h) in index x, or SIZE_MAX. */
static size_t find_in(const vmt_hmap *m, ixv x, const void *key, uint64_t h)
{
    if (m->count == 0)
        return SIZE_MAX;
    const uint32_t tag = tag_of(h);
    const size_t mask = m->cap - 1;
    size_t i = (size_t)h & mask;
    uint32_t w;
    while ((w = x.w[i]) != 0) {
        if ((w & TAG_MASK) == tag && word_live(w) && key_equal(entry_at(m, entry_of(w)) + x.off, key, x.size))
            return i;
        i = (i + 1) & mask;
    }
    return SIZE_MAX;
}

/* Index slot that holds entry e (whose key hashes to h). */
static size_t slot_of_entry(const vmt_hmap *m, ixv x, size_t e, uint64_t h)
{
    const uint32_t want = word_of(h, e);
    const size_t mask = m->cap - 1;
    size_t i = (size_t)h & mask;
    while (x.w[i] != want)
        i = (i + 1) & mask;
    return i;
}

/* Store entry e's word in the first empty or deleted slot of its probe path
 * (the key is known to be absent). */
static void place(uint32_t *w, size_t cap, size_t *tombs, uint64_t h, size_t e)
{
    const size_t mask = cap - 1;
    size_t j = (size_t)h & mask;
    while (w[j] != 0 && w[j] != TOMB)
        j = (j + 1) & mask;
    if (w[j] == TOMB)
        (*tombs)--;
    w[j] = word_of(h, e);
}

/* Rebuild the indexes at new_cap (clears the tombstones). The entries are
 * read in order and their new slots are random: hashes are computed a batch
 * ahead and their slots prefetched, so the cache misses overlap. */
#define REHASH_BATCH 16
#define HUGE_UNIT    ((size_t)2 << 20)

/* A zeroed index of cap words. From 2 MiB on (always a whole number of
 * 2 MiB units: cap is a power of two) it is 2 MiB-aligned and asks for
 * transparent huge pages: every lookup in a large map probes it at random,
 * and with 4 KiB pages each probe would also miss the TLB. */
static uint32_t *index_alloc(size_t cap)
{
    size_t bytes = cap * sizeof(uint32_t);
    if (bytes < HUGE_UNIT)
        return calloc(cap, sizeof(uint32_t));
    uint32_t *p = aligned_alloc(HUGE_UNIT, bytes);
    if (!p)
        return NULL;
    (void)madvise(p, bytes, MADV_HUGEPAGE); /* a hint: ignored when refused */
    memset(p, 0, bytes);
    return p;
}

static vmt_status rehash(vmt_hmap *m, size_t new_cap)
{
    uint32_t *index = index_alloc(new_cap);
    uint32_t *index2 = m->key2_size ? index_alloc(new_cap) : NULL;
    if (!index || (m->key2_size && !index2)) {
        free(index);
        free(index2);
        return VMT_E_NOMEM;
    }
    size_t none = 0, mask = new_cap - 1;
    size_t ids[REHASH_BATCH];
    uint64_t h1[REHASH_BATCH], h2[REHASH_BATCH];
    for (size_t e = 0; e < m->used;) {
        size_t n = 0;
        for (; e < m->used && n < REHASH_BATCH; e++) {
            if (!is_live(m, e))
                continue;
            ids[n] = e;
            h1[n] = entry_hash(m, primary(m), e);
            __builtin_prefetch(&index[h1[n] & mask], 1);
            if (index2) {
                h2[n] = entry_hash(m, secondary(m), e);
                __builtin_prefetch(&index2[h2[n] & mask], 1);
            }
            n++;
        }
        for (size_t k = 0; k < n; k++) {
            place(index, new_cap, &none, h1[k], ids[k]);
            if (index2)
                place(index2, new_cap, &none, h2[k], ids[k]);
        }
    }
    free(m->index);
    free(m->index2);
    m->index = index;
    m->index2 = index2;
    m->cap = new_cap;
    m->tombs = m->tombs2 = 0;
    return VMT_OK;
}

/* Entry capacity ecap (>= used): the array and the live bitmap. */
static vmt_status resize_entries(vmt_hmap *m, size_t ecap)
{
    size_t nw = live_words(ecap), ow = live_words(m->ecap);
    uint64_t *live = realloc(m->live, nw * sizeof *live);
    if (!live)
        return VMT_E_NOMEM;
    m->live = live;
    if (nw > ow)
        memset(live + ow, 0, (nw - ow) * sizeof *live);
    uint8_t *n = realloc(m->entries, ecap * m->entry_size);
    if (!n)
        return VMT_E_NOMEM; /* the larger bitmap alone changes nothing */
    m->entries = n;
    m->ecap = ecap;
    return VMT_OK;
}

vmt_status vmt_hmap_reserve(vmt_hmap *m, size_t n)
{
    if (n > VMT_HMAP_MAX_ENTRIES)
        return VMT_E_NOMEM;
    if (n > m->ecap) { /* live entries + holes + free tail >= n */
        /* grow by a quarter: amortised O(1), little unused capacity */
        size_t ecap = m->ecap + m->ecap / 4;
        if (ecap < HMAP_MIN_ECAP)
            ecap = HMAP_MIN_ECAP;
        if (ecap < n)
            ecap = n;
        if (ecap > VMT_HMAP_MAX_ENTRIES)
            ecap = VMT_HMAP_MAX_ENTRIES;
        vmt_status st = resize_entries(m, ecap);
        if (st)
            return st;
    }
    /* n live words plus the tombstones must stay within 3/4 of the slots */
    size_t extra = n > m->count ? n - m->count : 0;
    size_t tombs = m->tombs > m->tombs2 ? m->tombs : m->tombs2;
    if (m->cap && m->count + tombs + extra <= m->cap / 4 * 3)
        return VMT_OK;
    /* Rebuild: the smallest index that holds n at 3/4; when tombstones
     * forced the rebuild, at most 3/8 full, so rebuilds stay amortised. */
    size_t cap = HMAP_MIN_CAP;
    while (n > cap / 4 * 3 || (m->cap && n > cap / 8 * 3 && cap <= m->cap && tombs))
        cap *= 2;
    return rehash(m, cap); /* on failure the map only kept a larger entry array */
}

void *vmt_hmap_get(const vmt_hmap *m, const void *key)
{
    size_t i = find_in(m, primary_c(m), key, hash_n(key, m->key_size));
    return i == SIZE_MAX ? NULL : entry_at(m, entry_of(m->index[i])) + m->val_offset;
}

void vmt_hmap_prefetch(const vmt_hmap *m, const void *key)
{
    if (m->cap)
        __builtin_prefetch(&m->index[hash_n(key, m->key_size) & (m->cap - 1)]);
}

void vmt_hmap_prefetch2(const vmt_hmap *m, const void *key2)
{
    if (m->cap && m->key2_size)
        __builtin_prefetch(&m->index2[hash_n(key2, m->key2_size) & (m->cap - 1)]);
}

void *vmt_hmap_get2(const vmt_hmap *m, const void *key2, void **key)
{
    if (!m->key2_size)
        return NULL;
    size_t i = find_in(m, secondary_c(m), key2, hash_n(key2, m->key2_size));
    if (i == SIZE_MAX)
        return NULL;
    uint8_t *ent = entry_at(m, entry_of(m->index2[i]));
    if (key)
        *key = ent;
    return ent + m->val_offset;
}

vmt_status vmt_hmap_put(vmt_hmap *m, const void *key, const void *val, void **slot_val, bool *existed)
{
    uint64_t h = hash_n(key, m->key_size);
    size_t i = find_in(m, primary(m), key, h);
    if (i != SIZE_MAX) {
        if (existed)
            *existed = true;
        if (slot_val)
            *slot_val = entry_at(m, entry_of(m->index[i])) + m->val_offset;
        return VMT_OK;
    }
    uint64_t h2 = 0;
    if (m->key2_size) {
        static const uint8_t zero2[64];
        if (!val && m->key2_size > sizeof zero2)
            return VMT_E_INVAL;
        const uint8_t *k2 = val ? (const uint8_t *)val + (m->key2_offset - m->val_offset) : zero2;
        h2 = hash_n(k2, m->key2_size);
        if (find_in(m, secondary(m), k2, h2) != SIZE_MAX)
            return VMT_E_CONFLICT;
    }
    vmt_status st = vmt_hmap_reserve(m, m->count + 1);
    if (st)
        return st;
    size_t e;
    if (m->free_head != NO_HOLE) {
        e = m->free_head;
        memcpy(&m->free_head, entry_at(m, e), sizeof m->free_head);
    } else {
        e = m->used++;
    }
    uint8_t *ent = entry_at(m, e);
    memset(ent, 0, m->entry_size); /* padding is zero: entries compare and hash as bytes */
    memcpy(ent, key, m->key_size);
    if (val)
        memcpy(ent + m->val_offset, val, m->val_size);
    set_live(m, e, true);
    place(m->index, m->cap, &m->tombs, h, e);
    if (m->key2_size)
        place(m->index2, m->cap, &m->tombs2, h2, e);
    m->count++;
    if (existed)
        *existed = false;
    if (slot_val)
        *slot_val = ent + m->val_offset;
    return VMT_OK;
}

/* Move the live entries to 0..count-1 and rebuild the index at cap. */
static vmt_status compact(vmt_hmap *m, size_t cap)
{
    size_t to = 0;
    for (size_t e = 0; e < m->used; e++) {
        if (!is_live(m, e))
            continue;
        if (e != to)
            memcpy(entry_at(m, to), entry_at(m, e), m->entry_size);
        to++;
    }
    memset(m->live, 0, live_words(m->ecap) * sizeof *m->live);
    for (size_t e = 0; e < to; e++)
        set_live(m, e, true);
    m->used = to;
    m->free_head = NO_HOLE;
    vmt_status st = rehash(m, cap);
    if (st) {
        /* keep the indexes usable: rebuild in place at the old size */
        memset(m->index, 0, m->cap * sizeof *m->index);
        if (m->index2)
            memset(m->index2, 0, m->cap * sizeof *m->index2);
        size_t none = 0;
        for (size_t e = 0; e < m->used; e++) {
            place(m->index, m->cap, &none, entry_hash(m, primary(m), e), e);
            if (m->index2)
                place(m->index2, m->cap, &none, entry_hash(m, secondary(m), e), e);
        }
        m->tombs = m->tombs2 = 0;
    }
    return st;
}

int vmt_hmap_del(vmt_hmap *m, const void *key, void *val_out)
{
    size_t i = find_in(m, primary(m), key, hash_n(key, m->key_size));
    if (i == SIZE_MAX)
        return 0;
    const size_t e = entry_of(m->index[i]);
    uint8_t *ent = entry_at(m, e);
    if (val_out)
        memcpy(val_out, ent + m->val_offset, m->val_size);
    m->index[i] = TOMB;
    m->tombs++;
    if (m->key2_size) {
        m->index2[slot_of_entry(m, secondary(m), e, entry_hash(m, secondary(m), e))] = TOMB;
        m->tombs2++;
    }
    set_live(m, e, false);
    uint32_t next = m->free_head;
    memcpy(ent, &next, sizeof next); /* the hole links the free list */
    m->free_head = (uint32_t)e;
    m->count--;
    if (m->count == 0) {
        vmt_hmap_free(m);
        return 1;
    }
    bool shrink_index = m->cap > HMAP_MIN_CAP && m->count < m->cap / 8;
    if (m->ecap > HMAP_MIN_ECAP && m->count < m->ecap / 4) {
        /* few live entries: compact them and give memory back */
        if (compact(m, shrink_index ? m->cap / 2 : m->cap) == VMT_OK)
            shrink_index = false;
        size_t ecap = m->ecap / 2 > HMAP_MIN_ECAP ? m->ecap / 2 : HMAP_MIN_ECAP;
        if (ecap >= m->used)
            (void)resize_entries(m, ecap); /* on NOMEM keep the larger array */
    }
    if (shrink_index)
        (void)rehash(m, m->cap / 2);
    return 1;
}

bool vmt_hmap_next(const vmt_hmap *m, size_t *it, void **key, void **val)
{
    while (*it < m->used) {
        size_t e = (*it)++;
        if (!is_live(m, e))
            continue;
        uint8_t *ent = entry_at(m, e);
        if (key)
            *key = ent;
        if (val)
            *val = ent + m->val_offset;
        return true;
    }
    return false;
}

size_t vmt_hmap_memory(const vmt_hmap *m)
{
    return m->ecap * (size_t)m->entry_size + live_words(m->ecap) * sizeof(uint64_t) +
           m->cap * sizeof *m->index * (m->key2_size ? 2 : 1);
}

static vmt_status check_index(const vmt_hmap *m, ixv x, const char *name, char *why, size_t why_len)
{
    size_t n = 0, tombs = 0;
    for (size_t i = 0; i < m->cap; i++) {
        uint32_t w = x.w[i];
        if (!w)
            continue;
        if (w == TOMB) {
            tombs++;
            continue;
        }
        if (!word_live(w)) {
            vmt_why(why, why_len, "hmap: %s slot %zu holds the bad word 0x%x", name, i, w);
            return VMT_E_INTERNAL;
        }
        n++;
        size_t e = entry_of(w);
        if (e >= m->used || !is_live(m, e)) {
            vmt_why(why, why_len, "hmap: %s slot %zu names entry %zu, which is not live", name, i, e);
            return VMT_E_INTERNAL;
        }
        uint64_t h = entry_hash(m, x, e);
        if ((w & TAG_MASK) != tag_of(h)) {
            vmt_why(why, why_len, "hmap: %s slot %zu has hash bits 0x%x, its entry's key has 0x%x", name, i,
                    w >> ID_BITS, tag_of(h) >> ID_BITS);
            return VMT_E_INTERNAL;
        }
        size_t home = (size_t)h & (m->cap - 1);
        for (size_t k = home; k != i; k = (k + 1) & (m->cap - 1)) {
            if (!x.w[k]) {
                vmt_why(why, why_len, "hmap: entry %zu (%s slot %zu) unreachable from home %zu (empty slot %zu)", e,
                        name, i, home, k);
                return VMT_E_INTERNAL;
            }
        }
    }
    if (n != m->count || tombs != *x.tombs) {
        vmt_why(why, why_len, "hmap: count %zu and %zu tombstones, but %zu %s words and %zu tombstones", m->count,
                *x.tombs, n, name, tombs);
        return VMT_E_INTERNAL;
    }
    if (m->count + tombs > m->cap / 4 * 3) {
        vmt_why(why, why_len, "hmap: %s load (%zu live + %zu deleted of %zu) above 3/4", name, m->count, tombs, m->cap);
        return VMT_E_INTERNAL;
    }
    /* n words for n live entries: each entry is found at its own word, so
     * the words name every live entry exactly once (and no key repeats). */
    for (size_t e = 0; e < m->used; e++) {
        if (!is_live(m, e))
            continue;
        const uint8_t *k = entry_at(m, e) + x.off;
        size_t i = find_in(m, x, k, hash_n(k, x.size));
        if (i == SIZE_MAX || entry_of(x.w[i]) != e) {
            vmt_why(why, why_len, "hmap: entry %zu is not found by its %s key (duplicate key or lost word)", e, name);
            return VMT_E_INTERNAL;
        }
    }
    return VMT_OK;
}

/* live bits == count; the free list holds exactly the holes below used. */
static vmt_status check_entries(const vmt_hmap *m, char *why, size_t why_len)
{
    if (m->used > m->ecap || m->count > m->used) {
        vmt_why(why, why_len, "hmap: %zu live of %zu used entries, capacity %zu", m->count, m->used, m->ecap);
        return VMT_E_INTERNAL;
    }
    size_t live = 0;
    for (size_t e = 0; e < m->ecap; e++) {
        if (!is_live(m, e))
            continue;
        if (e >= m->used) {
            vmt_why(why, why_len, "hmap: entry %zu is live beyond the %zu used", e, m->used);
            return VMT_E_INTERNAL;
        }
        live++;
    }
    if (live != m->count) {
        vmt_why(why, why_len, "hmap: %zu live bits for a count of %zu", live, m->count);
        return VMT_E_INTERNAL;
    }
    size_t holes = 0;
    for (uint32_t e = m->free_head; e != NO_HOLE; holes++) {
        if (e >= m->used || is_live(m, e) || holes >= m->used - m->count) {
            vmt_why(why, why_len, "hmap: the free list is corrupt at entry %u", e);
            return VMT_E_INTERNAL;
        }
        memcpy(&e, entry_at(m, e), sizeof e);
    }
    if (holes != m->used - m->count) {
        vmt_why(why, why_len, "hmap: %zu holes on the free list, %zu below the used mark", holes, m->used - m->count);
        return VMT_E_INTERNAL;
    }
    return VMT_OK;
}

vmt_status vmt_hmap_check(const vmt_hmap *m, char *why, size_t why_len)
{
    if (m->cap == 0) {
        if (m->count != 0 || m->used != 0) {
            vmt_why(why, why_len, "hmap: count %zu with no index", m->count);
            return VMT_E_INTERNAL;
        }
        return VMT_OK;
    }
    if (m->cap & (m->cap - 1)) {
        vmt_why(why, why_len, "hmap: index capacity %zu is not a power of two", m->cap);
        return VMT_E_INTERNAL;
    }
    vmt_status st = check_entries(m, why, why_len);
    if (!st)
        st = check_index(m, primary_c(m), "index", why, why_len);
    if (!st && m->key2_size)
        st = check_index(m, secondary_c(m), "index2", why, why_len);
    return st;
}
