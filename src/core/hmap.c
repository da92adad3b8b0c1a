/*
 * core/hmap.c — open addressing, linear probing, backward-shift deletion.
 * See hmap.h for the design and invariants.
 */
#include "core/hmap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errbuf.h"

#define HMAP_MIN_CAP 16

uint64_t vmt_hash_bytes(const void *p, size_t n)
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

void vmt_hmap_init(vmt_hmap *m, size_t key_size, size_t val_size)
{
    memset(m, 0, sizeof *m);
    m->key_size = (uint32_t)key_size;
    m->val_size = (uint32_t)val_size;
    m->val_offset = (uint32_t)((key_size + 7) & ~(size_t)7);
    m->slot_size = (uint32_t)(m->val_offset + ((val_size + 7) & ~(size_t)7));
}

void vmt_hmap_free(vmt_hmap *m)
{
    free(m->slots);
    free(m->used);
    m->slots = NULL;
    m->used = NULL;
    m->cap = 0;
    m->count = 0;
}

void vmt_hmap_clear(vmt_hmap *m)
{
    vmt_hmap_free(m);
}

static inline uint8_t *slot_at(const vmt_hmap *m, size_t i) { return m->slots + i * m->slot_size; }
static inline size_t home_of(const vmt_hmap *m, const void *key)
{
    return (size_t)vmt_hash_bytes(key, m->key_size) & (m->cap - 1);
}

/* The occupancy byte of a slot holds 7 bits of the key's hash (high bit
 * set), so a probe compares whole keys only when the tags agree. */
static inline uint8_t tag_of(uint64_t h) { return (uint8_t)(0x80u | (h >> 57)); }

static inline bool key_equal(const vmt_hmap *m, const uint8_t *slot, const void *key)
{
    if (m->key_size == 8) {
        uint64_t a, b;
        memcpy(&a, slot, 8);
        memcpy(&b, key, 8);
        return a == b;
    }
    if (m->key_size == 16) {
        uint64_t a[2], b[2];
        memcpy(a, slot, 16);
        memcpy(b, key, 16);
        return a[0] == b[0] && a[1] == b[1];
    }
    return memcmp(slot, key, m->key_size) == 0;
}

/* Index of key (hash h), or SIZE_MAX. */
static size_t find_hashed(const vmt_hmap *m, const void *key, uint64_t h)
{
    if (m->count == 0)
        return SIZE_MAX;
    uint8_t tag = tag_of(h);
    size_t i = (size_t)h & (m->cap - 1);
    while (m->used[i]) {
        if (m->used[i] == tag && key_equal(m, slot_at(m, i), key))
            return i;
        i = (i + 1) & (m->cap - 1);
    }
    return SIZE_MAX;
}

static size_t find(const vmt_hmap *m, const void *key)
{
    return find_hashed(m, key, vmt_hash_bytes(key, m->key_size));
}

static vmt_status rehash(vmt_hmap *m, size_t new_cap)
{
    uint8_t *slots = malloc(new_cap * m->slot_size);
    uint8_t *used = calloc(new_cap, 1);
    if (!slots || !used) {
        free(slots);
        free(used);
        return VMT_E_NOMEM;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->used[i])
            continue;
        const uint8_t *s = slot_at(m, i);
        size_t j = (size_t)vmt_hash_bytes(s, m->key_size) & (new_cap - 1);
        while (used[j])
            j = (j + 1) & (new_cap - 1);
        used[j] = m->used[i];
        memcpy(slots + j * m->slot_size, s, m->slot_size);
    }
    free(m->slots);
    free(m->used);
    m->slots = slots;
    m->used = used;
    m->cap = new_cap;
    return VMT_OK;
}

vmt_status vmt_hmap_reserve(vmt_hmap *m, size_t n)
{
    size_t cap = m->cap ? m->cap : HMAP_MIN_CAP;
    while (n > cap / 4 * 3)
        cap *= 2;
    if (cap == m->cap)
        return VMT_OK;
    return rehash(m, cap);
}

void *vmt_hmap_get(const vmt_hmap *m, const void *key)
{
    size_t i = find(m, key);
    return i == SIZE_MAX ? NULL : slot_at(m, i) + m->val_offset;
}

vmt_status vmt_hmap_put(vmt_hmap *m, const void *key, const void *val, void **slot_val, bool *existed)
{
    uint64_t h = vmt_hash_bytes(key, m->key_size);
    size_t i = find_hashed(m, key, h);
    if (i != SIZE_MAX) {
        if (existed)
            *existed = true;
        if (slot_val)
            *slot_val = slot_at(m, i) + m->val_offset;
        return VMT_OK;
    }
    vmt_status st = vmt_hmap_reserve(m, m->count + 1);
    if (st)
        return st;
    i = (size_t)h & (m->cap - 1);
    while (m->used[i])
        i = (i + 1) & (m->cap - 1);
    uint8_t *s = slot_at(m, i);
    memset(s, 0, m->slot_size); /* padding is zero: slots compare and hash as bytes */
    memcpy(s, key, m->key_size);
    if (val)
        memcpy(s + m->val_offset, val, m->val_size);
    m->used[i] = tag_of(h);
    m->count++;
    if (existed)
        *existed = false;
    if (slot_val)
        *slot_val = s + m->val_offset;
    return VMT_OK;
}

int vmt_hmap_del(vmt_hmap *m, const void *key, void *val_out)
{
    size_t i = find(m, key);
    if (i == SIZE_MAX)
        return 0;
    if (val_out)
        memcpy(val_out, slot_at(m, i) + m->val_offset, m->val_size);
    /* Backward shift: move later entries of the cluster into the hole when
     * the hole lies on their probe path (between home and position). */
    size_t mask = m->cap - 1, hole = i, j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (!m->used[j])
            break;
        size_t home = home_of(m, slot_at(m, j));
        if (((j - home) & mask) >= ((j - hole) & mask)) {
            memcpy(slot_at(m, hole), slot_at(m, j), m->slot_size);
            m->used[hole] = m->used[j];
            hole = j;
        }
    }
    m->used[hole] = 0;
    m->count--;
    if (m->count == 0) {
        vmt_hmap_free(m);
    } else if (m->cap > HMAP_MIN_CAP && m->count < m->cap / 8) {
        (void)rehash(m, m->cap / 2); /* on NOMEM keep the larger table */
    }
    return 1;
}

bool vmt_hmap_next(const vmt_hmap *m, size_t *it, void **key, void **val)
{
    while (*it < m->cap) {
        size_t i = (*it)++;
        if (m->used[i]) {
            if (key)
                *key = slot_at(m, i);
            if (val)
                *val = slot_at(m, i) + m->val_offset;
            return true;
        }
    }
    return false;
}

size_t vmt_hmap_memory(const vmt_hmap *m)
{
    return m->cap * ((size_t)m->slot_size + 1);
}

vmt_status vmt_hmap_check(const vmt_hmap *m, char *why, size_t why_len)
{
    if (m->cap == 0) {
        if (m->count != 0) {
            vmt_why(why, why_len, "hmap: count %zu with no table", m->count);
            return VMT_E_INTERNAL;
        }
        return VMT_OK;
    }
    if (m->cap & (m->cap - 1)) {
        vmt_why(why, why_len, "hmap: capacity %zu is not a power of two", m->cap);
        return VMT_E_INTERNAL;
    }
    size_t n = 0;
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->used[i])
            continue;
        n++;
        uint64_t h = vmt_hash_bytes(slot_at(m, i), m->key_size);
        if (m->used[i] != tag_of(h)) {
            vmt_why(why, why_len, "hmap: slot %zu has tag 0x%02x, its key hashes to tag 0x%02x", i, m->used[i], tag_of(h));
            return VMT_E_INTERNAL;
        }
        size_t home = (size_t)h & (m->cap - 1);
        for (size_t k = home; k != i; k = (k + 1) & (m->cap - 1)) {
            if (!m->used[k]) {
                vmt_why(why, why_len, "hmap: entry at slot %zu unreachable from home %zu (empty slot %zu)", i, home, k);
                return VMT_E_INTERNAL;
            }
        }
    }
    if (n != m->count) {
        vmt_why(why, why_len, "hmap: count %zu but %zu occupied slots", m->count, n);
        return VMT_E_INTERNAL;
    }
    if (m->count > m->cap / 4 * 3) {
        vmt_why(why, why_len, "hmap: load %zu/%zu above 3/4", m->count, m->cap);
        return VMT_E_INTERNAL;
    }
    return VMT_OK;
}
