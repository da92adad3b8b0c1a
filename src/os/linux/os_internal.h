/*
 * os/linux/os_internal.h — the vmt_os handle (internal to src/os/linux).
 */
#ifndef VMT_OS_LINUX_INTERNAL_H
#define VMT_OS_LINUX_INTERNAL_H

#include <stddef.h>

#include "core/errbuf.h"
#include "os/linux/kallsyms.h"
#include "vmtrap/os.h"
#include "vmtrap/paging.h"

/* Offsets read from BTF once at open (UINT64_MAX: unknown). */
typedef struct os_offsets {
    uint64_t task_tasks, task_pid, task_tgid, task_comm, task_parent, task_mm;
    uint64_t mm_pgd;
    uint64_t pcpu_hot_current; /* offset of current_task in pcpu_hot */
} os_offsets;

struct vmt_os {
    vmt_driver *drv;
    vmt_errbuf err;
    ksym_table ks;
    vmt_os_info info;
    uint64_t ram_bytes;
    uint64_t image_len;      /* _end - _text */
    vmt_paging_config paging;
    struct btf *btf;
    uint8_t *btf_bytes;
    os_offsets off;
};

/* Physical address of a kernel-image VA (_text.._end mapping), or
 * VMT_E_RANGE when outside it. */
vmt_status os_image_pa(const vmt_os *os, uint64_t va, uint64_t *pa);
vmt_status os_read_image(vmt_os *os, uint64_t va, void *buf, size_t len);
/* Symbol address by name or VMT_E_NOTFOUND (message set). */
vmt_status os_sym(vmt_os *os, const char *name, uint64_t *addr);

/* btf.c */
/* Validate and parse BTF bytes (kept by the caller while the btf lives):
 * 0, or -1 with a one-line note. */
int os_btf_parse(const uint8_t *b, size_t len, struct btf **out, char *note, size_t note_len);
/* A kernel function's vmt_proto from a parsed BTF (proto_btf.c). */
int os_btf_proto(const struct btf *btf, const char *function, vmt_proto *out);
void os_btf_load(vmt_os *os);
void os_btf_free(vmt_os *os);
void os_offsets_load(vmt_os *os);

#endif
