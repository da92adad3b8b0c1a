/*
 * core/hmap.c — dense entries + open-addressing index of 32-bit words,
 * linear probing, backward-shift deletion, swap-remove of entries.
 * See hmap.h for the design and invariants.
 */
#include "core/hmap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errbuf.h"

#define HMAP_MIN_CAP  16
#define HMAP_MIN_ECAP 8
#define ID_BITS       27
#define ID_MASK       ((1u << ID_BITS) - 1)
#define TAG_MASK      (~ID_MASK)

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

/* One index: its words, and where its key sits in an entry. The primary
 * index uses the key (offset 0); index2 the secondary key. */
typedef struct ixv {
    uint32_t *w;
    uint32_t off, size;
} ixv;

static inline ixv primary(const vmt_hmap *m) { return (ixv){ m->index, 0, m->key_size }; }
static inline ixv secondary(const vmt_hmap *m) { return (ixv){ m->index2, m->key2_offset, m->key2_size }; }

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
    free(m->index);
    free(m->index2);
    m->entries = NULL;
    m->index = NULL;
    m->index2 = NULL;
    m->cap = 0;
    m->ecap = 0;
    m->count = 0;
}

void vmt_hmap_clear(vmt_hmap *m)
{
    vmt_hmap_free(m);
}

static inline uint8_t *entry_at(const vmt_hmap *m, size_t e) { return m->entries + e * m->entry_size; }
static inline uint32_t tag_of(uint64_t h) { return (uint32_t)(h >> 59) << ID_BITS; }
static inline uint32_t word_of(uint64_t h, size_t e) { return tag_of(h) | (uint32_t)(e + 1); }
static inline size_t entry_of(uint32_t w) { return (size_t)(w & ID_MASK) - 1; }
static inline uint64_t entry_hash(const vmt_hmap *m, ixv x, size_t e) { return hash_n(entry_at(m, e) + x.off, x.size); }

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
        if ((w & TAG_MASK) == tag && key_equal(entry_at(m, entry_of(w)) + x.off, key, x.size))
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

static void place(const vmt_hmap *m, uint32_t *w, size_t cap, uint64_t h, size_t e)
{
    (void)m;
    const size_t mask = cap - 1;
    size_t j = (size_t)h & mask;
    while (w[j])
        j = (j + 1) & mask;
    w[j] = word_of(h, e);
}

static vmt_status rehash(vmt_hmap *m, size_t new_cap)
{
    uint32_t *index = calloc(new_cap, sizeof *index);
    uint32_t *index2 = m->key2_size ? calloc(new_cap, sizeof *index2) : NULL;
    if (!index || (m->key2_size && !index2)) {
        free(index);
        free(index2);
        return VMT_E_NOMEM;
    }
    for (size_t e = 0; e < m->count; e++) {
        place(m, index, new_cap, entry_hash(m, primary(m), e), e);
        if (index2)
            place(m, index2, new_cap, entry_hash(m, secondary(m), e), e);
    }
    free(m->index);
    free(m->index2);
    m->index = index;
    m->index2 = index2;
    m->cap = new_cap;
    return VMT_OK;
}

static vmt_status resize_entries(vmt_hmap *m, size_t ecap)
{
    uint8_t *n = realloc(m->entries, ecap * m->entry_size);
    if (!n)
        return VMT_E_NOMEM;
    m->entries = n;
    m->ecap = ecap;
    return VMT_OK;
}

vmt_status vmt_hmap_reserve(vmt_hmap *m, size_t n)
{
    if (n > VMT_HMAP_MAX_ENTRIES)
        return VMT_E_NOMEM;
    if (n > m->ecap) {
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
    size_t cap = m->cap ? m->cap : HMAP_MIN_CAP;
    while (n > cap / 4 * 3)
        cap *= 2;
    if (cap == m->cap)
        return VMT_OK;
    return rehash(m, cap); /* on failure the map only kept a larger entry array */
}

void *vmt_hmap_get(const vmt_hmap *m, const void *key)
{
    size_t i = find_in(m, primary(m), key, hash_n(key, m->key_size));
    return i == SIZE_MAX ? NULL : entry_at(m, entry_of(m->index[i])) + m->val_offset;
}

void *vmt_hmap_get2(const vmt_hmap *m, const void *key2, void **key)
{
    if (!m->key2_size)
        return NULL;
    size_t i = find_in(m, secondary(m), key2, hash_n(key2, m->key2_size));
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
        uint8_t zero2[64] = { 0 };
        const uint8_t *k2 = val ? (const uint8_t *)val + (m->key2_offset - m->val_offset) : zero2;
        if (!val && m->key2_size > sizeof zero2)
            return VMT_E_INVAL;
        h2 = hash_n(k2, m->key2_size);
        if (find_in(m, secondary(m), k2, h2) != SIZE_MAX)
            return VMT_E_CONFLICT;
    }
    vmt_status st = vmt_hmap_reserve(m, m->count + 1);
    if (st)
        return st;
    size_t e = m->count;
    uint8_t *ent = entry_at(m, e);
    memset(ent, 0, m->entry_size); /* padding is zero: entries compare and hash as bytes */
    memcpy(ent, key, m->key_size);
    if (val)
        memcpy(ent + m->val_offset, val, m->val_size);
    place(m, m->index, m->cap, h, e);
    if (m->key2_size)
        place(m, m->index2, m->cap, h2, e);
    m->count++;
    if (existed)
        *existed = false;
    if (slot_val)
        *slot_val = ent + m->val_offset;
    return VMT_OK;
}

/* Take the word at slot i out of index x: backward shift of the later words
 * of the cluster whose probe path (home..position) crosses the hole. */
static void unplace(const vmt_hmap *m, ixv x, size_t i)
{
    const size_t mask = m->cap - 1;
    size_t hole = i, j = i;
    for (;;) {
        j = (j + 1) & mask;
        uint32_t w = x.w[j];
        if (!w)
            break;
        size_t home = (size_t)entry_hash(m, x, entry_of(w)) & mask;
        if (((j - home) & mask) >= ((j - hole) & mask)) {
            x.w[hole] = w;
            hole = j;
        }
    }
    x.w[hole] = 0;
}

int vmt_hmap_del(vmt_hmap *m, const void *key, void *val_out)
{
    size_t i = find_in(m, primary(m), key, hash_n(key, m->key_size));
    if (i == SIZE_MAX)
        return 0;
    const size_t e = entry_of(m->index[i]);
    if (val_out)
        memcpy(val_out, entry_at(m, e) + m->val_offset, m->val_size);
    unplace(m, primary(m), i);
    if (m->key2_size)
        unplace(m, secondary(m), slot_of_entry(m, secondary(m), e, entry_hash(m, secondary(m), e)));
    /* Swap-remove: the last entry moves into e; its index words follow. */
    const size_t last = m->count - 1;
    if (e != last) {
        uint64_t h = entry_hash(m, primary(m), last);
        m->index[slot_of_entry(m, primary(m), last, h)] = word_of(h, e);
        if (m->key2_size) {
            h = entry_hash(m, secondary(m), last);
            m->index2[slot_of_entry(m, secondary(m), last, h)] = word_of(h, e);
        }
        memcpy(entry_at(m, e), entry_at(m, last), m->entry_size);
    }
    m->count--;
    if (m->count == 0) {
        vmt_hmap_free(m);
        return 1;
    }
    if (m->ecap > HMAP_MIN_ECAP && m->count < m->ecap / 4)
        (void)resize_entries(m, m->ecap / 2); /* on NOMEM keep the larger array */
    if (m->cap > HMAP_MIN_CAP && m->count < m->cap / 8)
        (void)rehash(m, m->cap / 2);
    return 1;
}

bool vmt_hmap_next(const vmt_hmap *m, size_t *it, void **key, void **val)
{
    if (*it >= m->count)
        return false;
    uint8_t *ent = entry_at(m, (*it)++);
    if (key)
        *key = ent;
    if (val)
        *val = ent + m->val_offset;
    return true;
}

size_t vmt_hmap_memory(const vmt_hmap *m)
{
    return m->ecap * (size_t)m->entry_size + m->cap * sizeof *m->index * (m->key2_size ? 2 : 1);
}

static vmt_status check_index(const vmt_hmap *m, ixv x, const char *name, char *why, size_t why_len)
{
    size_t n = 0;
    for (size_t i = 0; i < m->cap; i++) {
        uint32_t w = x.w[i];
        if (!w)
            continue;
        n++;
        size_t e = entry_of(w);
        if (e >= m->count) {
            vmt_why(why, why_len, "hmap: %s slot %zu names entry %zu of %zu", name, i, e, m->count);
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
    if (n != m->count) {
        vmt_why(why, why_len, "hmap: count %zu but %zu %s words", m->count, n, name);
        return VMT_E_INTERNAL;
    }
    /* n words for n entries: each entry is found at its own word, so the
     * words name every entry exactly once (and no key repeats). */
    for (size_t e = 0; e < m->count; e++) {
        const uint8_t *k = entry_at(m, e) + x.off;
        size_t i = find_in(m, x, k, hash_n(k, x.size));
        if (i == SIZE_MAX || entry_of(x.w[i]) != e) {
            vmt_why(why, why_len, "hmap: entry %zu is not found by its %s key (duplicate key or lost word)", e, name);
            return VMT_E_INTERNAL;
        }
    }
    return VMT_OK;
}

vmt_status vmt_hmap_check(const vmt_hmap *m, char *why, size_t why_len)
{
    if (m->cap == 0) {
        if (m->count != 0) {
            vmt_why(why, why_len, "hmap: count %zu with no index", m->count);
            return VMT_E_INTERNAL;
        }
        return VMT_OK;
    }
    if (m->cap & (m->cap - 1)) {
        vmt_why(why, why_len, "hmap: index capacity %zu is not a power of two", m->cap);
        return VMT_E_INTERNAL;
    }
    if (m->count > m->ecap || m->count > m->cap / 4 * 3) {
        vmt_why(why, why_len, "hmap: %zu entries for %zu entry slots and %zu index slots (load above 3/4)", m->count,
                m->ecap, m->cap);
        return VMT_E_INTERNAL;
    }
    vmt_status st = check_index(m, primary(m), "index", why, why_len);
    if (!st && m->key2_size)
        st = check_index(m, secondary(m), "index2", why, why_len);
    return st;
}
