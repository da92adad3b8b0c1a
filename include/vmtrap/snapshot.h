/*
 * vmtrap/snapshot.h — machine snapshots: load a memory dump a user already
 * has, save and load vmtrap's own snapshot file, restore fast for repeated
 * runs.
 *
 * Design: a vmt_snapshot is an immutable-once-loaded picture of a machine:
 * a physical memory map (RAM blocks, holes between them), the bytes of each
 * block, one vmt_vcpu_state per vCPU (with `known`/`reconstructed` groups),
 * an opaque platform blob (device state, written and read by the platform
 * module), metadata (a JSON object: source, os, kernel, created) and the
 * list of fixups (every value not taken from the file, with the reason).
 *
 * Sources:
 *  - a QEMU `dump-guest-memory` / `virsh dump --memory-only` ELF core
 *    (ELFCLASS64, EM_X86_64): RAM from the PT_LOADs by physical address,
 *    vCPUs from NT_PRSTATUS + "QEMU" notes (QEMUCPUState version 1). The
 *    file is mmap'ed read-only; block data points into the mapping (no
 *    second copy). A core holds no EFER, MSRs, FPU, TSC or APIC state:
 *    those groups stay unknown until a sidecar or a reconstruction fills
 *    them (docs/snapshot.md lists them).
 *  - a JSON sidecar (docs/snapshot.md) for what a core lacks;
 *  - vmtrap's own file (".vmts", format in docs/snapshot.md): header,
 *    checksummed sections, memory as zstd chunks that are decompressed on
 *    first access (a single page read decompresses one chunk).
 *
 * Failure atomicity: every loader validates the whole file before the
 * handle exists; a bad file gives VMT_E_FORMAT with a one-line message in
 * `why` and no handle. Calls on a handle that fail change nothing in it
 * (apply/restore into a driver may have written part of the driver: they
 * say so in the message).
 *
 * Threading: a handle is used from one thread.
 */
#ifndef VMTRAP_SNAPSHOT_H
#define VMTRAP_SNAPSHOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmtrap/addr.h"
#include "vmtrap/driver.h"
#include "vmtrap/machine.h"
#include "vmtrap/status.h"
#include "vmtrap/vcpu_state.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vmt_snapshot vmt_snapshot;

typedef enum vmt_snapshot_kind {
    VMT_SNAPSHOT_QEMU_CORE = 1, /* QEMU dump-guest-memory ELF core */
    VMT_SNAPSHOT_VMTS = 2,      /* vmtrap's own format */
} vmt_snapshot_kind;

/* Progress of a long load or save: bytes done of total. */
typedef void (*vmt_snapshot_progress_fn)(void *ctx, uint64_t done, uint64_t total);

typedef struct vmt_snapshot_options {
    /* NULL: files of 64 MiB and more report progress on stderr (unless
     * quiet). */
    vmt_snapshot_progress_fn progress;
    void *progress_ctx;
    bool quiet;
} vmt_snapshot_options;

/* Limits a loader enforces (a file claiming more is VMT_E_FORMAT). */
#define VMT_SNAPSHOT_MAX_VCPUS 256
#define VMT_SNAPSHOT_MAX_BLOCKS 1024
#define VMT_SNAPSHOT_MAX_PA (1ull << 52)

/* Open a snapshot file of either kind (chosen by its first bytes). opts may
 * be NULL. */
vmt_status vmt_snapshot_open(const char *path, const vmt_snapshot_options *opts, vmt_snapshot **out, char *why,
                             size_t why_len);
/* The same from bytes in memory (not copied: they must outlive the handle). */
vmt_status vmt_snapshot_open_mem(const void *bytes, size_t len, const vmt_snapshot_options *opts,
                                 vmt_snapshot **out, char *why, size_t why_len);
void vmt_snapshot_destroy(vmt_snapshot *s);
/* Message of the last failure on this handle ("" if none). */
const char *vmt_snapshot_error(const vmt_snapshot *s);
vmt_snapshot_kind vmt_snapshot_kind_of(const vmt_snapshot *s);

/* ---- memory ---- */

/* One RAM block: [gpa, gpa + size); its bytes through ram_ptr / read. */
typedef struct vmt_snapshot_ram {
    vmt_pa gpa;          /* 4 KiB aligned */
    uint64_t size;       /* multiple of 4 KiB */
} vmt_snapshot_ram;

size_t vmt_snapshot_ram_count(const vmt_snapshot *s);
/* Block i in increasing gpa order (blocks never overlap). */
vmt_status vmt_snapshot_ram_at(const vmt_snapshot *s, size_t i, vmt_snapshot_ram *out);
/* The memory map as vmt_ram_range records (for vmt_machine_config). */
const vmt_ram_range *vmt_snapshot_ram_ranges(const vmt_snapshot *s, size_t *count);
/* Pointer to the bytes of [gpa, gpa+len) when the range is inside one
 * block (for a vmts file the chunks it covers are decompressed now). Valid
 * until destroy. VMT_E_RANGE outside RAM or across a hole. */
vmt_status vmt_snapshot_ram_ptr(vmt_snapshot *s, vmt_pa gpa, uint64_t len, const uint8_t **ptr);
/* Copy [gpa, gpa+len) out (may span blocks; not across holes). */
vmt_status vmt_snapshot_read(vmt_snapshot *s, vmt_pa gpa, void *buf, size_t len);

/* ---- vCPUs ---- */

uint32_t vmt_snapshot_vcpu_count(const vmt_snapshot *s);
/* NULL when i is out of range. */
const vmt_vcpu_state *vmt_snapshot_vcpu(const vmt_snapshot *s, uint32_t i);

/* ---- what the file lacks ---- */

/* Every value a snapshot's vCPU state got from somewhere other than the
 * file's CPU records: a sidecar (`how` is "sidecar" or "sidecar (<its
 * source>)"), or a reconstruction (`how` says from what). Kept in the
 * order applied; a vmts file stores them. `value` is 0 for "fxsave". */
typedef struct vmt_snapshot_fixup {
    uint32_t vcpu;
    uint32_t group;      /* VMT_VS_* group the field belongs to */
    char field[24];      /* "efer", "lstar", "apic_base", ... */
    uint64_t value;
    char how[200];
} vmt_snapshot_fixup;

size_t vmt_snapshot_fixup_count(const vmt_snapshot *s);
const vmt_snapshot_fixup *vmt_snapshot_fixup_at(const vmt_snapshot *s, size_t i);
/* Set one named field of vCPU `vcpu` (names as in the sidecar, e.g.
 * "lstar", "efer", "tsc"), mark its group known and reconstructed, and
 * record the fixup with `how`. VMT_E_NOTFOUND for an unknown field name.
 * For OS layers (e.g. LSTAR = kallsyms entry_SYSCALL_64). */
vmt_status vmt_snapshot_fixup_set(vmt_snapshot *s, uint32_t vcpu, const char *field, uint64_t value,
                                  const char *how);

/* A reconstruction step an OS layer provides: called with the snapshot
 * (read guest memory with vmt_snapshot_read, set fields with
 * vmt_snapshot_fixup_set). */
typedef vmt_status (*vmt_snapshot_reconstruct_fn)(void *ctx, vmt_snapshot *s);

/* Reconstruct, for every vCPU, what can be derived without OS symbols and
 * is not known yet: EFER (LME/LMA from CR0.PG+CR4.PAE+CS.L, NXE when a
 * present page-table entry reachable from CR3 has NX set, SCE assumed for
 * a 64-bit kernel), the APIC base (0xfee00000, enabled, BSP for vCPU 0),
 * the TSC (from tsc_hz and the virtual start time, 0 if none), PAT default.
 * Each value is recorded as a fixup. `os_fn` (may be NULL) runs first:
 * what it sets is known and the defaults leave it alone. */
vmt_status vmt_snapshot_reconstruct(vmt_snapshot *s, vmt_snapshot_reconstruct_fn os_fn, void *os_ctx);

/* Apply a JSON sidecar (format in docs/snapshot.md) to the vCPUs. The
 * whole text is checked first: an unknown field, a value of the wrong type
 * or range is VMT_E_FORMAT naming it, and nothing is changed. */
vmt_status vmt_snapshot_apply_sidecar(vmt_snapshot *s, const char *json_text);
vmt_status vmt_snapshot_apply_sidecar_file(vmt_snapshot *s, const char *path);

/* A sidecar (JSON text, malloc'ed into *json_out) from QEMU's `info
 * registers -a` output taken at the dump's pause: EFER, DR0-3/6/7, HLT and
 * the interrupt shadow, and the live x87/SSE registers as an FXSAVE image.
 * VMT_E_FORMAT naming the vCPU and field when something is missing. */
vmt_status vmt_snapshot_sidecar_from_qemu_registers(const char *text, char **json_out, char *why, size_t why_len);

/* Clock of the machine: tsc_hz (0 = unknown) and guest ns at the snapshot. */
void vmt_snapshot_clock(const vmt_snapshot *s, vmt_clock_config *out);

/* ---- platform device state and metadata ---- */

/* The platform blob (NULL, 0 when none). */
const void *vmt_snapshot_platform(const vmt_snapshot *s, size_t *len);
/* Metadata as JSON text ({"source": ..., "os": ..., ...}); never NULL. */
const char *vmt_snapshot_metadata(const vmt_snapshot *s);

/* ---- into a driver ---- */

/* Fill the machine fields a snapshot decides: ram_ranges, ram_size (end
 * of the highest block), vcpus, vcpu_state (vCPU 0), clock. The pointers
 * stay valid until destroy. Other fields are left as they are. */
void vmt_snapshot_machine_config(const vmt_snapshot *s, vmt_machine_config *cfg);
/* Write every RAM block into the driver (write_phys, one copy from the
 * mapping) and set each vCPU's state (VCPU_STATE). With DIRTY_LOG, frames
 * the driver logged outside the snapshot's RAM are zeroed and the log is
 * cleared (restore's starting point). A failure leaves the driver partly
 * written (the message says so). */
vmt_status vmt_snapshot_apply(vmt_snapshot *s, vmt_driver *d);

/* A read-only driver over the snapshot (READ_PHYS + REGS_GET; RAM read
 * from the mapping, no copy), for code written against the driver contract
 * such as the OS layer: e.g. open the OS on a core to find symbols for
 * vmt_snapshot_fixup_set. The driver borrows s: destroy it first. */
vmt_status vmt_snapshot_driver_create(vmt_snapshot *s, vmt_driver **out, char *why, size_t why_len);

/* ---- restore for repeated runs ---- */

typedef struct vmt_snapshot_run_stats {
    uint64_t restores;          /* restores done */
    uint64_t last_dirty_pages;  /* pages rewritten by the last restore */
    uint64_t total_dirty_pages;
    uint64_t last_ns;           /* wall time of the last restore */
    uint64_t total_ns;
    uint64_t max_ns;
} vmt_snapshot_run_stats;

/* Called by restore to put the platform back (blob = vmt_snapshot_platform). */
typedef vmt_status (*vmt_snapshot_platform_reset_fn)(void *ctx, const void *blob, size_t len);
void vmt_snapshot_set_platform_reset(vmt_snapshot *s, vmt_snapshot_platform_reset_fn fn, void *ctx);

/* Put the driver back to the snapshot: with DIRTY_LOG only the frames
 * written since the last restore (or apply) are rewritten, without it all
 * RAM; then every vCPU state and the platform (callback). The driver's
 * dirty log is cleared. A driver other than the one last applied or
 * restored (told apart by handle: apply again after replacing a driver)
 * gets a full apply. Statistics in *stats (may be NULL). */
vmt_status vmt_snapshot_restore(vmt_snapshot *s, vmt_driver *d, vmt_snapshot_run_stats *stats);
/* Statistics since the handle was made. */
void vmt_snapshot_stats(const vmt_snapshot *s, vmt_snapshot_run_stats *out);

/* ---- saving vmtrap's own format ---- */

typedef struct vmt_snapshot_save_options {
    const vmt_ram_range *ram;   /* memory map; NULL: 0 .. caps.ram_frames */
    size_t ram_count;
    const void *platform;       /* platform blob, may be NULL */
    size_t platform_len;
    const char *metadata_json;  /* a JSON object merged into the metadata, may be NULL */
    vmt_clock_config clock;     /* save_driver: the machine's clock (start_ns = guest ns now) */
    const vmt_snapshot *fixups_from; /* save_driver: keep this snapshot's fixups listed (the
                                        machine was resumed from it), may be NULL */
    int zstd_level;             /* 0: 3 */
    vmt_snapshot_progress_fn progress;
    void *progress_ctx;
} vmt_snapshot_save_options;

/* Save a paused driver's machine (read_phys + get_vcpu_state for each
 * vCPU) into `path`. Written to path + ".tmp" and renamed: a failed save
 * leaves no file. */
vmt_status vmt_snapshot_save_driver(vmt_driver *d, const vmt_snapshot_save_options *opts, const char *path,
                                    char *why, size_t why_len);
/* Save a loaded snapshot (e.g. a QEMU core with its fixups) as a vmts file;
 * opts->ram is ignored, its platform/metadata replace the snapshot's when
 * given. */
vmt_status vmt_snapshot_save(vmt_snapshot *s, const vmt_snapshot_save_options *opts, const char *path);

/* Invariant checker: blocks sorted, aligned, non-overlapping, inside
 * VMT_SNAPSHOT_MAX_PA, data present; vCPU states consistent; fixups name
 * valid vCPUs. VMT_E_INTERNAL with the reason in why. */
vmt_status vmt_snapshot_check(const vmt_snapshot *s, char *why, size_t why_len);

#ifdef __cplusplus
}
#endif
#endif
