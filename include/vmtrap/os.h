/*
 * vmtrap/os.h — Linux awareness with no profile: the kernel's symbols,
 * types and processes read from the guest's own memory.
 *
 * Design: vmt_os_open() needs only a paused machine through the driver
 * contract (vmt_drv_read_phys; registers are optional): it scans physical
 * memory for the kernel's kallsyms tables (found by their structure, see
 * src/os/linux/kallsyms.h), decodes every symbol (static ones included),
 * then finds where the kernel image lies in physical memory by checking
 * `linux_banner` at each 2 MiB-aligned candidate (so KASLR, physical or
 * virtual, needs no guess), and cross-checks `phys_base`. Other kernel
 * addresses (direct map, vmalloc, per-CPU areas, slab) go through the
 * kernel's own page tables (`init_top_pgt`) with the paging walker; user
 * memory through a task's mm->pgd. BTF is read from RAM between
 * `__start_BTF` and `__stop_BTF` and parsed by libbpf; a kernel without it
 * still has symbols, and vmt_os_info().btf_note says why types are missing.
 *
 * Identity: symbols are named by kallsyms; the first symbol of a name in the
 * kernel's order wins a lookup by name (static duplicates exist).
 *
 * Bounds: every guest read is bounded (strings, lists: at most
 * VMT_OS_MAX_TASKS tasks, a cycle ends the walk with an error); guest data
 * is adversarial: a corrupt table or list gives VMT_E_FORMAT naming what
 * failed, never a crash or an unbounded loop.
 *
 * Failure atomicity: vmt_os_open either returns a usable handle or nothing.
 * Later calls change nothing but the handle's error message.
 *
 * Threading: one thread per handle. The driver must stay alive and paused
 * (or stopped at an event) while the handle reads through it.
 */
#ifndef VMTRAP_OS_H
#define VMTRAP_OS_H

#include <stddef.h>
#include <stdint.h>

#include "vmtrap/driver.h"
#include "vmtrap/proto.h"
#include "vmtrap/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vmt_os vmt_os;
struct btf;

#define VMT_OS_MAX_TASKS 32768
#define VMT_OS_COMM_LEN 16

typedef struct vmt_os_config {
    const char *system_map; /* optional System.map that must agree with kallsyms */
    int no_btf;             /* do not load BTF (symbols only) */
} vmt_os_config;

typedef struct vmt_os_info {
    uint64_t text_va;          /* _text (runtime) */
    uint64_t text_pa;          /* its physical address */
    int64_t kaslr_slide;       /* text_va - 0xffffffff81000000 */
    uint64_t page_offset_base; /* direct map base (0 when not found) */
    uint64_t init_pgt_pa;      /* init_top_pgt */
    unsigned levels;           /* 4 or 5 */
    uint32_t nsyms;
    uint64_t kallsyms_pa;      /* kallsyms_token_table */
    char version[256];         /* linux_banner, first line */
    int has_btf;
    size_t btf_size;
    uint32_t btf_types;
    char btf_note[160];        /* why there are no types ("" when has_btf) */
} vmt_os_info;

typedef struct vmt_os_symbol {
    const char *name;  /* owned by the handle */
    uint64_t addr;
    char type;         /* nm type: T t D d R r B b A ... */
    uint32_t index;    /* position in the kernel's table */
} vmt_os_symbol;

typedef struct vmt_os_task {
    uint64_t va;            /* task_struct */
    int32_t pid, tgid;
    char comm[VMT_OS_COMM_LEN + 1];
    uint64_t parent_va;     /* real_parent */
    int32_t ppid;           /* real_parent->tgid (-1 unknown) */
    uint64_t mm_va;         /* 0 for kernel threads */
    uint64_t pgd_pa;        /* mm->pgd as a physical address (a CR3), 0 for kernel threads */
} vmt_os_task;

vmt_status vmt_os_open(vmt_driver *d, const vmt_os_config *cfg, vmt_os **out, char *why, size_t why_len);
void vmt_os_close(vmt_os *os);
const char *vmt_os_error(const vmt_os *os);
void vmt_os_get_info(const vmt_os *os, vmt_os_info *out);
/* Invariant checker (symbol indices, sorted tables, BTF range). */
vmt_status vmt_os_check(const vmt_os *os, char *why, size_t why_len);

/* ---- symbols ---- */
uint32_t vmt_os_symbol_count(const vmt_os *os);
vmt_status vmt_os_symbol_at(const vmt_os *os, uint32_t index, vmt_os_symbol *out);
vmt_status vmt_os_symbol_by_name(vmt_os *os, const char *name, vmt_os_symbol *out);
/* The symbol containing va (nearest at or below); *offset = va - addr. */
vmt_status vmt_os_symbol_by_addr(vmt_os *os, uint64_t va, vmt_os_symbol *out, uint64_t *offset);
/* Compare a System.map with kallsyms (after the KASLR slide); a symbol at
 * another address is VMT_E_CONFLICT naming the first that differs. */
vmt_status vmt_os_check_system_map(vmt_os *os, const char *path);

/* ---- memory ---- */
/* Kernel virtual memory (through init_top_pgt). *done (may be NULL) says how
 * many bytes were read before a failure. */
vmt_status vmt_os_read_kernel(vmt_os *os, uint64_t va, void *buf, size_t len, size_t *done);
/* Virtual memory under the page tables at root_pa (a CR3 or mm->pgd). */
vmt_status vmt_os_read_virt(vmt_os *os, uint64_t root_pa, uint64_t va, void *buf, size_t len, size_t *done);

/* ---- types (BTF) ---- */
/* libbpf's handle (NULL without BTF); owned by os. */
const struct btf *vmt_os_btf(const vmt_os *os);
vmt_status vmt_os_type_size(vmt_os *os, const char *struct_name, uint64_t *size);
/* Byte offset of a member (found through anonymous structs/unions). */
vmt_status vmt_os_member_offset(vmt_os *os, const char *struct_name, const char *member, uint64_t *offset);
/* "long do_exit(long code)" for a function BTF knows. */
vmt_status vmt_os_prototype(vmt_os *os, const char *function, char *buf, size_t len);

/* The BTF prototype of a kernel function, ready for vmt_proto_decode_*. */
vmt_status vmt_os_proto(vmt_os *os, const char *function, vmt_proto *out);
/* A reader of kernel memory, or of memory under root_pa (0: the kernel's
 * own tables) for the decoder; valid while os lives. `slot` holds its state. */
typedef struct vmt_os_vreader_slot {
    vmt_os *os;
    uint64_t root_pa;
} vmt_os_vreader_slot;
vmt_vreader vmt_os_vreader(vmt_os *os, uint64_t root_pa, vmt_os_vreader_slot *slot);

/* ---- hooking kernel functions ---- */
struct vmt_image;
/* An image whose symbols are the named kernel functions at their runtime
 * addresses (kallsyms, static ones included), for vmt_monitor_create and
 * vmt_monitor_hook by name: symbols only, never to be placed in guest
 * memory. VMT_E_NOTFOUND names a symbol kallsyms lacks. */
vmt_status vmt_os_symbols_image(vmt_os *os, const char *const *names, size_t n, uint64_t ram_size,
                                struct vmt_image **out, char *why, size_t why_len);

/* ---- snapshots (module os_snapshot; needs the snapshot module) ---- */
struct vmt_snapshot;
/* The OS layer straight over a snapshot file's memory: *drv is the
 * snapshot module's read-only driver over it (vmt_snapshot_driver_create).
 * Destroy os, then drv; the snapshot outlives both. */
vmt_status vmt_os_open_snapshot(struct vmt_snapshot *s, const vmt_os_config *cfg, vmt_os **out, vmt_driver **drv,
                                char *why, size_t why_len);
/* A vmt_snapshot_reconstruct_fn (ctx unused): sets every vCPU's SYSCALL
 * MSRs as Linux's syscall_init does (LSTAR = entry_SYSCALL_64, STAR,
 * CSTAR, FMASK), each recorded as a fixup naming its source. */
vmt_status vmt_os_snapshot_reconstruct(void *ctx, struct vmt_snapshot *s);

/* ---- tasks ---- */
vmt_status vmt_os_task_at(vmt_os *os, uint64_t task_va, vmt_os_task *out);
/* The task running on a vCPU (per-CPU current_task or pcpu_hot). */
vmt_status vmt_os_current_task(vmt_os *os, unsigned cpu, vmt_os_task *out);
/* Every task on init_task.tasks, init_task first; fn returning non-zero
 * stops the walk. */
vmt_status vmt_os_tasks(vmt_os *os, int (*fn)(void *ctx, const vmt_os_task *t), void *ctx);

#ifdef __cplusplus
}
#endif
#endif
