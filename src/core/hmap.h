/*
 * core/hmap.h — an open-addressing hash map with fixed-size keys and values
 * (internal; used by the session, drivers, the breakpoint manager and the
 * page-table monitor).
 *
 * Design: keys and values are plain bytes of a size fixed at init (composite
 * keys are packed structs: zero their padding). Keys and values are 8-byte
 * aligned in their slots, so callers may use the returned pointers as their
 * types directly. Slots live in one array with
 * linear probing; deletion shifts later entries back (no tombstones), so a
 * lookup is O(1) expected and the table never fills with dead slots. The
 * capacity is a power of two, grown at 3/4 load and shrunk at 1/8.
 *
 * Failure atomicity: vmt_hmap_put() grows BEFORE inserting, so on
 * VMT_E_NOMEM the map is unchanged. Pointers returned by get/put are valid
 * until the next put or del on the map.
 *
 * Invariants (vmt_hmap_check): count equals the occupied slots; each
 * occupied slot's tag matches its key's hash; every entry
 * is reachable from its home slot without crossing an empty slot; load <= 3/4.
 */
#ifndef VMT_CORE_HMAP_H
#define VMT_CORE_HMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmtrap/status.h"

typedef struct vmt_hmap {
    uint8_t *slots;      /* cap * slot_size bytes: key then value */
    uint8_t *used;       /* cap bytes: 0 empty, else 0x80 | 7 bits of the key's hash */
    size_t cap;          /* 0 or a power of two */
    size_t count;
    uint32_t key_size;
    uint32_t val_size;
    uint32_t val_offset; /* key_size rounded up to 8: values are 8-byte aligned */
    uint32_t slot_size;  /* a multiple of 8, so every slot is 8-byte aligned */
} vmt_hmap;

/* key_size >= 1; val_size may be 0 (a set). */
void vmt_hmap_init(vmt_hmap *m, size_t key_size, size_t val_size);
void vmt_hmap_free(vmt_hmap *m);
static inline size_t vmt_hmap_count(const vmt_hmap *m) { return m->count; }

/* Pointer to the value stored for key (non-NULL for a present key even when
 * val_size is 0), or NULL. */
void *vmt_hmap_get(const vmt_hmap *m, const void *key);
/* Insert key -> val (val may be NULL: zero-filled) unless present. On return
 * *slot_val points at the stored value and *existed says whether the key was
 * already there (then the value is NOT overwritten). */
vmt_status vmt_hmap_put(vmt_hmap *m, const void *key, const void *val, void **slot_val, bool *existed);
/* Remove key; copies the old value to val_out when non-NULL. Returns 1 if
 * it was present. */
int vmt_hmap_del(vmt_hmap *m, const void *key, void *val_out);
/* Make room for n entries without growing later (may fail with NOMEM). */
vmt_status vmt_hmap_reserve(vmt_hmap *m, size_t n);
void vmt_hmap_clear(vmt_hmap *m);

/* Iteration: size_t it = 0; while (vmt_hmap_next(m, &it, &k, &v)) {...}
 * Do not put/del while iterating (collect keys first). */
bool vmt_hmap_next(const vmt_hmap *m, size_t *it, void **key, void **val);

/* Bytes of heap the map uses. */
size_t vmt_hmap_memory(const vmt_hmap *m);
/* Invariant checker: VMT_OK or VMT_E_INTERNAL with a reason in why. */
vmt_status vmt_hmap_check(const vmt_hmap *m, char *why, size_t why_len);

/* 64-bit hash of bytes (also for callers that want to combine hashes). */
uint64_t vmt_hash_bytes(const void *p, size_t n);

#endif
