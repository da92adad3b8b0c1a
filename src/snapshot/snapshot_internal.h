/*
 * snapshot/snapshot_internal.h — the vmt_snapshot object (internal).
 *
 * Layout:
 *  - file bytes: `file`/`file_len`, either an mmap we own (`map`) or the
 *    caller's buffer (open_mem);
 *  - blocks[nblocks]: RAM blocks sorted by gpa, 4 KiB aligned, never
 *    overlapping; `data` points into the file (QEMU core) or into `golden`
 *    (vmts: an anonymous mapping filled chunk by chunk on first access,
 *    chunk_done[] says which chunks are there); ranges[] repeats gpa/size
 *    as vmt_ram_range for machine configs;
 *  - vcpus[nvcpus] with efer_from_file[] (a bare core has no EFER: apply
 *    refuses a long-mode vCPU whose EFER nobody supplied);
 *  - platform blob (owned copy), metadata JSON text (owned), fixups.
 *
 * Invariants: vmt_snapshot_check (snap_core.c).
 */
#ifndef VMT_SNAPSHOT_INTERNAL_H
#define VMT_SNAPSHOT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "core/errbuf.h"
#include "vmtrap/snapshot.h"

typedef struct snap_block {
    vmt_pa gpa;
    uint64_t size;
    const uint8_t *data;   /* size bytes (vmts: inside golden, valid per chunk) */
    uint64_t first_chunk;  /* vmts: index of the block's first chunk */
} snap_block;

/* vmts: one compressed chunk of a block. */
typedef struct snap_chunk {
    uint64_t offset;       /* into the memory-data section */
    uint32_t csize;        /* compressed bytes; 0 with SNAP_CHUNK_ZERO */
    uint32_t flags;
} snap_chunk;
#define SNAP_CHUNK_ZERO 1u /* all-zero chunk, nothing stored */

struct vmt_snapshot {
    vmt_errbuf err;
    vmt_snapshot_kind kind;
    vmt_snapshot_options opts;

    const uint8_t *file;
    size_t file_len;
    void *map;             /* owned mmap of the file, or NULL */
    size_t map_len;

    snap_block *blocks;
    vmt_ram_range *ranges;
    size_t nblocks;

    uint32_t nvcpus;
    vmt_vcpu_state *vcpus;
    uint8_t *efer_set;     /* [nvcpus]: EFER came from the file, a sidecar or a fixup */

    uint8_t *platform;
    size_t platform_len;
    char *metadata;        /* JSON object text */
    vmt_clock_config clock;

    vmt_snapshot_fixup *fixups;
    size_t nfixups, fixcap;

    /* vmts lazy memory */
    uint8_t *golden;
    size_t golden_len;
    uint32_t chunk_size;
    snap_chunk *chunks;
    uint64_t nchunks;
    uint8_t *chunk_done;
    const uint8_t *memdata;
    uint64_t memdata_len;
    void *dctx;            /* ZSTD_DCtx */

    /* restore */
    vmt_snapshot_platform_reset_fn reset_fn;
    void *reset_ctx;
    vmt_snapshot_run_stats stats;
    vmt_gfn *dirty;
    size_t ndirty, dirtycap;
    int dirty_oom;
    const vmt_driver *applied_to; /* the driver the last apply/restore wrote (restore's dirty base) */
};

/* Allocate an empty handle (kind set, metadata "{}"). NULL on no memory. */
vmt_snapshot *snap_new(vmt_snapshot_kind kind, const vmt_snapshot_options *opts);
/* Progress reporting: the option's callback, else stderr for big files. */
void snap_progress(const vmt_snapshot *s, uint64_t done, uint64_t total);
/* The block holding gpa, or NULL. */
const snap_block *snap_block_of(const vmt_snapshot *s, vmt_pa gpa);
/* Sort blocks by gpa, refuse overlaps, build ranges[]. Message in why. */
vmt_status snap_blocks_finish(vmt_snapshot *s, char *why, size_t why_len);
/* Replace the metadata text (copied). */
vmt_status snap_set_metadata(vmt_snapshot *s, const char *json);

/* Loaders (file bytes already in s->file). On failure the message is in
 * why; the caller destroys s. */
/* A malformed-input failure: "<what>: <message>" into why, VMT_E_FORMAT. */
vmt_status snap_format_error(char *why, size_t why_len, const char *what, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
vmt_status snap_load_qemu_core(vmt_snapshot *s, char *why, size_t why_len);
vmt_status snap_load_vmts(vmt_snapshot *s, char *why, size_t why_len);
/* vmts: decompress the chunks covering [gpa, gpa+len) of block b. */
vmt_status snap_vmts_fill(vmt_snapshot *s, const snap_block *b, vmt_pa gpa, uint64_t len);

/* Set a named vcpu field (sidecar and fixups share the table). group gets
 * the VMT_VS_* group. VMT_E_NOTFOUND for an unknown name. */
vmt_status snap_field_set(vmt_vcpu_state *v, const char *field, uint64_t value, uint32_t *group);
/* Record a fixup (no memory: VMT_E_NOMEM). */
vmt_status snap_fixup_add(vmt_snapshot *s, uint32_t vcpu, uint32_t group, const char *field, uint64_t value,
                          const char *how);

/* Write [gpa, gpa+len) (inside one block) into the driver; set every vCPU. */
vmt_status snap_write_pages(vmt_snapshot *s, vmt_driver *d, vmt_pa gpa, uint64_t len);
vmt_status snap_set_vcpus(vmt_snapshot *s, vmt_driver *d);
/* Every vCPU can run: EFER known for long-mode vCPUs, states consistent
 * (message in s->err). */
vmt_status snap_check_runnable(vmt_snapshot *s);
/* restore.c: zero every dirty frame outside the snapshot's blocks, then
 * clear the driver's dirty log. */
vmt_status snap_zero_dirty_holes(vmt_snapshot *s, vmt_driver *d);
/* A dirty-log callback that keeps walking (to clear the log). */
int snap_dirty_ignore(void *ctx, vmt_gfn gfn);

/* Little-endian helpers for the file formats. */
static inline uint32_t snap_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t snap_le64(const uint8_t *p) { return snap_le32(p) | (uint64_t)snap_le32(p + 4) << 32; }
static inline uint16_t snap_le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline void snap_put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}
static inline void snap_put64(uint8_t *p, uint64_t v)
{
    snap_put32(p, (uint32_t)v);
    snap_put32(p + 4, (uint32_t)(v >> 32));
}
static inline void snap_put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

#endif
