/*
 * core/hmap.h — a compact hash map with fixed-size keys and values
 * (internal; used by the session, drivers, the breakpoint manager and the
 * page-table monitor).
 *
 * Design (like CPython's compact dict): the entries (key then value, plain
 * bytes of sizes fixed at init; composite keys are packed structs: zero
 * their padding) are stored in one array, in no particular order; a
 * separate open-addressing index of 32-bit words maps a hash to an entry
 * number. An index word holds the entry number + 1 (0: empty) in its low
 * 27 bits and 5 bits of the key's hash in its high bits, so a probe looks at
 * an entry only when those bits agree. Empty index slots cost 4 bytes, not a
 * whole entry: at N entries the map uses about entry_size * N (entries grow
 * by 1/4) + 4 * (1.33..2.67) * N bytes + a bit per entry. Linear probing;
 * a deletion leaves a tombstone word and a hole in the entries (reused by
 * the next put, through a free list), so it touches no other entry: in a
 * map larger than the caches that saves several misses per deletion (see
 * hmap.c). Entries are 8-byte aligned (values too: the value starts at
 * key_size rounded up to 8), so callers may use the returned pointers as
 * their types directly. The index is a power of two, rebuilt (without
 * tombstones) when live + deleted words pass 3/4, halved below 1/8 use;
 * the entries are compacted and shrunk below 1/4 use. At most
 * VMT_HMAP_MAX_ENTRIES entries.
 *
 * Secondary key (vmt_hmap_init2): a map may also index its entries by a
 * second unique key stored inside the value (e.g. a frame's shadow gfn), in
 * a second index of the same shape, so one record is reachable by two keys
 * without a second map holding copies. Never change the key2 bytes of a
 * stored value in place (delete and put again).
 *
 * Failure atomicity: vmt_hmap_put() grows BEFORE inserting, so on
 * VMT_E_NOMEM the map is unchanged. Pointers returned by get/put/next are
 * valid until the next put or del on the map (a del may compact).
 *
 * Invariants (vmt_hmap_check): count live entries (bitmap) below the used
 * mark, every other entry below it on the free list; the index holds
 * exactly count live words, one per live entry, each with its entry's hash
 * bits and reachable from the entry's home slot without crossing an empty
 * slot, and `tombs` tombstones; live + tombstones <= 3/4 of the slots; with a secondary key, the same holds for index2 and the
 * key2 bytes of each entry.
 */
#ifndef VMT_CORE_HMAP_H
#define VMT_CORE_HMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmtrap/status.h"

#define VMT_HMAP_MAX_ENTRIES ((1u << 27) - 2)

typedef struct vmt_hmap {
    uint8_t *entries;    /* ecap * entry_size bytes; 0..used-1 live or holes */
    uint64_t *live;      /* a bit per entry: live */
    uint32_t *index;     /* cap words: 0 empty, all tag bits deleted, else hash bits | (entry + 1) */
    size_t cap;          /* index slots: 0 or a power of two */
    size_t ecap;         /* entry capacity */
    size_t count;        /* live entries */
    size_t used;         /* entries ever handed out since the last compaction */
    size_t tombs, tombs2;/* deleted words in index, index2 */
    uint32_t free_head;  /* first hole (its first 4 bytes link the next), or UINT32_MAX */
    uint32_t key_size;
    uint32_t val_size;
    uint32_t val_offset; /* key_size rounded up to 8: values are 8-byte aligned */
    uint32_t entry_size; /* a multiple of 8, so every entry is 8-byte aligned */
    uint32_t *index2;    /* cap words over key2 (only when key2_size) */
    uint32_t key2_offset;/* of key2 inside the entry */
    uint32_t key2_size;  /* 0: no secondary key */
} vmt_hmap;

/* key_size >= 1; val_size may be 0 (a set). */
void vmt_hmap_init(vmt_hmap *m, size_t key_size, size_t val_size);
/* A map whose values also hold a unique secondary key of key2_size bytes at
 * key2_offset inside the value (key2_offset + key2_size <= val_size). */
void vmt_hmap_init2(vmt_hmap *m, size_t key_size, size_t val_size, size_t key2_offset, size_t key2_size);
void vmt_hmap_free(vmt_hmap *m);
static inline size_t vmt_hmap_count(const vmt_hmap *m) { return m->count; }

/* Pointer to the value stored for key (non-NULL for a present key even when
 * val_size is 0), or NULL. */
void *vmt_hmap_get(const vmt_hmap *m, const void *key);
/* Insert key -> val (val may be NULL: zero-filled) unless present. On return
 * *slot_val points at the stored value and *existed says whether the key was
 * already there (then the value is NOT overwritten). */
vmt_status vmt_hmap_put(vmt_hmap *m, const void *key, const void *val, void **slot_val, bool *existed);
/* Start loading the index slot where key's search begins (a hint: lets the
 * cache misses of lookups in several large maps overlap). */
void vmt_hmap_prefetch(const vmt_hmap *m, const void *key);
/* The same for a secondary key. */
void vmt_hmap_prefetch2(const vmt_hmap *m, const void *key2);
/* Value of the entry whose secondary key is key2, or NULL; *key (when key
 * is non-NULL) points at that entry's primary key. */
void *vmt_hmap_get2(const vmt_hmap *m, const void *key2, void **key);
/* (put: with a secondary key, a new entry whose key2 another entry already
 * has is refused with VMT_E_CONFLICT and the map is unchanged.) */
/* Remove key; copies the old value to val_out when non-NULL. Returns 1 if
 * it was present. */
int vmt_hmap_del(vmt_hmap *m, const void *key, void *val_out);
/* Make room for n entries without growing later (may fail with NOMEM). */
vmt_status vmt_hmap_reserve(vmt_hmap *m, size_t n);
void vmt_hmap_clear(vmt_hmap *m);

/* Iteration: size_t it = 0; while (vmt_hmap_next(m, &it, &k, &v)) {...}
 * Do not put/del while iterating (collect keys first). */
bool vmt_hmap_next(const vmt_hmap *m, size_t *it, void **key, void **val);

/* Bytes of heap the map uses (entry array and index, by capacity). */
size_t vmt_hmap_memory(const vmt_hmap *m);
/* Invariant checker: VMT_OK or VMT_E_INTERNAL with a reason in why. */
vmt_status vmt_hmap_check(const vmt_hmap *m, char *why, size_t why_len);

/* 64-bit hash of bytes (also for callers that want to combine hashes). */
uint64_t vmt_hash_bytes(const void *p, size_t n);

#endif
