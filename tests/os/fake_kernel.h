/*
 * tests/os/fake_kernel.h — a tiny Linux "kernel" in a mem driver's RAM:
 * kallsyms (ksym_build), linux_banner, phys_base, page tables with a direct
 * map, per-CPU areas, three tasks on init_task.tasks, an mm with user page
 * tables, and BTF written by libbpf's own writer (btf__add_*), placed with
 * a KASLR slide so nothing can assume the default layout.
 */
#ifndef VMT_TESTS_OS_FAKE_KERNEL_H
#define VMT_TESTS_OS_FAKE_KERNEL_H

#include <stdint.h>

#include "vmtrap/driver.h"

#define FK_RAM_MB 64
#define FK_IMG_PA 0x2000000ull
#define FK_TEXT_VA 0xffffffff82e00000ull
#define FK_SLIDE 0x1e00000ll
#define FK_DM 0xffff888000000000ull
#define FK_INIT_TASK (FK_TEXT_VA + 0x2000)
#define FK_TASK_A_PA 0x200000ull   /* pid 1 "init" */
#define FK_TASK_B_PA 0x200400ull   /* pid 42 "sh", current on cpu 0 */
#define FK_USER_PGD_PA 0x220000ull
#define FK_USER_STR_VA 0x400000ull /* "hello from user"; 0x401000 is not present */
#define FK_OPEN_HOW_PA 0x240000ull /* struct open_how {0x241, 0644, 0} */
#define FK_BTF_OFF 0x100000ull
#define FK_NSYMS 700

typedef struct fk_options {
    int no_btf;          /* leave the BTF magic out */
    int broken_list;     /* task B's tasks.prev points elsewhere */
} fk_options;

/* Make a mem driver holding the fake kernel; NULL on failure (printed). */
vmt_driver *fk_create(const fk_options *o);

/* Address of one of the fake kernel's symbols (the table it was built from). */
uint64_t fk_sym(const char *name);

#endif
