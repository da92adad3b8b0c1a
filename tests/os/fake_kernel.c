/*
 * tests/os/fake_kernel.c — see fake_kernel.h.
 */
#include "fake_kernel.h"

#include <bpf/btf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ksym_build.h"
#include "vmtrap/mem.h"

#define KERNEL_MAP 0xffffffff80000000ull
#define IMG(off) (FK_TEXT_VA + (off))
#define P (1ull << 0)
#define RW (1ull << 1)
#define US (1ull << 2)
#define PS (1ull << 7)

typedef struct named {
    const char *name;
    char type;
    uint64_t addr;
} named;

/* The symbols with a meaning (the rest are filler functions). */
static const named meaning[] = {
    { "current_task", 'D', 0x16d00 },
    { "_text", 'T', IMG(0) },
    { "linux_banner", 'D', IMG(0x1000) },
    { "phys_base", 'D', IMG(0x1100) },
    { "__per_cpu_offset", 'D', IMG(0x1200) },
    { "page_offset_base", 'D', IMG(0x1300) },
    { "init_task", 'D', IMG(0x2000) },
    { "do_sys_openat2", 'T', IMG(0x3000) },
    { "ksys_write", 'T', IMG(0x3100) },
    { "init_top_pgt", 'D', IMG(0x10000) },
    { "__start_BTF", 'R', IMG(FK_BTF_OFF) },
    { "__stop_BTF", 'R', 0 }, /* set from the BTF size */
    { "_end", 'B', IMG(0x800000) },
};

uint64_t fk_sym(const char *name)
{
    for (size_t i = 0; i < sizeof meaning / sizeof meaning[0]; i++)
        if (strcmp(meaning[i].name, name) == 0)
            return meaning[i].addr;
    return 0;
}

static int cmp_sym(const void *a, const void *b)
{
    const kb_sym *x = a, *y = b;
    return x->addr < y->addr ? -1 : x->addr > y->addr;
}

static void put(vmt_driver *d, uint64_t pa, const void *b, size_t n)
{
    if (vmt_drv_write_phys(d, pa, b, n) != VMT_OK)
        fprintf(stderr, "fake_kernel: write at 0x%llx failed\n", (unsigned long long)pa);
}

static void put64(vmt_driver *d, uint64_t pa, uint64_t v) { put(d, pa, &v, 8); }
static void put32(vmt_driver *d, uint64_t pa, uint32_t v) { put(d, pa, &v, 4); }

/* BTF types for the fields the OS layer reads, written by libbpf. */
static struct btf *make_btf(void)
{
    struct btf *b = btf__new_empty();
    int t_int = btf__add_int(b, "int", 4, BTF_INT_SIGNED);            /* 1 */
    int t_char = btf__add_int(b, "char", 1, BTF_INT_SIGNED);          /* 2 */
    int t_ulong = btf__add_int(b, "long unsigned int", 8, 0);         /* 3 */
    int t_long = btf__add_int(b, "long int", 8, BTF_INT_SIGNED);      /* 4 */
    int t_lh_ptr = btf__add_ptr(b, 6);                                /* 5 */
    int t_lh = btf__add_struct(b, "list_head", 16);                   /* 6 */
    btf__add_field(b, "next", t_lh_ptr, 0, 0);
    btf__add_field(b, "prev", t_lh_ptr, 64, 0);
    int t_task_ptr = btf__add_ptr(b, 9);                              /* 7 */
    int t_mm_ptr = btf__add_ptr(b, 13);                               /* 8 */
    int t_task = btf__add_struct(b, "task_struct", 256);              /* 9 */
    btf__add_field(b, "tasks", t_lh, 0x10 * 8, 0);
    btf__add_field(b, "pid", t_int, 0x40 * 8, 0);
    btf__add_field(b, "tgid", t_int, 0x44 * 8, 0);
    btf__add_field(b, "real_parent", t_task_ptr, 0x48 * 8, 0);
    btf__add_field(b, "mm", t_mm_ptr, 0x50 * 8, 0);
    btf__add_field(b, NULL, 11, 0x60 * 8, 0);
    int t_comm = btf__add_array(b, t_int, t_char, 16);                /* 10 */
    btf__add_struct(b, NULL, 16);                                     /* 11: anonymous */
    btf__add_field(b, "comm", t_comm, 0, 0);
    int t_ulong_ptr = btf__add_ptr(b, t_ulong);                       /* 12 */
    btf__add_struct(b, "mm_struct", 0x80);                            /* 13 */
    btf__add_field(b, "pgd", t_ulong_ptr, 0x50 * 8, 0);
    int t_cchar = btf__add_const(b, t_char);
    int t_cchar_ptr = btf__add_ptr(b, t_cchar);
    int t_u64 = btf__add_int(b, "long long unsigned int", 8, 0);
    int t_how = btf__add_struct(b, "open_how", 24);
    btf__add_field(b, "flags", t_u64, 0, 0);
    btf__add_field(b, "mode", t_u64, 64, 0);
    btf__add_field(b, "resolve", t_u64, 128, 0);
    int t_how_ptr = btf__add_ptr(b, t_how);
    int fp = btf__add_func_proto(b, t_long);
    btf__add_func_param(b, "dfd", t_int);
    btf__add_func_param(b, "filename", t_cchar_ptr);
    btf__add_func_param(b, "how", t_how_ptr);
    btf__add_func(b, "do_sys_openat2", BTF_FUNC_GLOBAL, fp);
    int t_uint = btf__add_int(b, "unsigned int", 4, 0);
    int t_size = btf__add_typedef(b, "size_t", t_ulong);
    fp = btf__add_func_proto(b, t_long);
    btf__add_func_param(b, "fd", t_uint);
    btf__add_func_param(b, "buf", t_cchar_ptr);
    btf__add_func_param(b, "count", t_size);
    btf__add_func(b, "ksys_write", BTF_FUNC_GLOBAL, fp);
    int t_enum = btf__add_enum(b, "pid_type", 4);
    btf__add_enum_value(b, "PIDTYPE_PID", 0);
    btf__add_enum_value(b, "PIDTYPE_TGID", 1);
    btf__add_enum_value(b, "PIDTYPE_PGID", 2);
    fp = btf__add_func_proto(b, t_int);
    btf__add_func_param(b, "task", t_task_ptr);
    btf__add_func_param(b, "type", t_enum);
    btf__add_func(b, "__task_pid_nr_ns", BTF_FUNC_GLOBAL, fp);
    if (t_lh != 6 || t_task != 9 || t_comm != 10 || t_ulong_ptr != 12) {
        fprintf(stderr, "fake_kernel: BTF ids moved (%d %d %d %d)\n", t_lh, t_task, t_comm, t_ulong_ptr);
        btf__free(b);
        return NULL;
    }
    return b;
}

static void task(vmt_driver *d, uint64_t pa, int pid, const char *comm, uint64_t parent, uint64_t mm, uint64_t next,
                 uint64_t prev)
{
    char c[16] = { 0 };
    snprintf(c, sizeof c, "%s", comm);
    put64(d, pa + 0x10, next);
    put64(d, pa + 0x18, prev);
    put32(d, pa + 0x40, (uint32_t)pid);
    put32(d, pa + 0x44, (uint32_t)pid);
    put64(d, pa + 0x48, parent);
    put64(d, pa + 0x50, mm);
    put(d, pa + 0x60, c, 16);
}

vmt_driver *fk_create(const fk_options *o)
{
    fk_options none = { 0 };
    if (!o)
        o = &none;
    vmt_mem_config cfg = { .ram_frames = FK_RAM_MB * 256, .vcpus = 2, .maxphyaddr = 46 };
    vmt_driver *d;
    char why[256];
    if (vmt_mem_driver_create(&cfg, &d, why, sizeof why) != VMT_OK) {
        fprintf(stderr, "fake_kernel: %s\n", why);
        return NULL;
    }
    struct btf *btf = make_btf();
    if (!btf) {
        vmt_driver_destroy(d);
        return NULL;
    }
    uint32_t btf_size;
    const uint8_t *raw = btf__raw_data(btf, &btf_size);
    uint64_t img = FK_IMG_PA;
    /* Symbols: the meaningful ones plus filler functions, sorted. */
    kb_sym *syms = calloc(FK_NSYMS, sizeof *syms);
    char(*names)[24] = calloc(FK_NSYMS, sizeof *names);
    size_t n = 0;
    for (size_t i = 0; i < sizeof meaning / sizeof meaning[0]; i++, n++) {
        syms[n].name = meaning[i].name;
        syms[n].type = meaning[i].type;
        syms[n].addr = strcmp(meaning[i].name, "__stop_BTF") ? meaning[i].addr : IMG(FK_BTF_OFF) + btf_size;
    }
    for (; n < FK_NSYMS; n++) {
        snprintf(names[n], sizeof names[n], "fn_filler_%zu", n);
        syms[n].name = names[n];
        syms[n].type = 't';
        syms[n].addr = IMG(0x4000 + 0x40 * n);
    }
    qsort(syms, n, sizeof *syms, cmp_sym);
    size_t cap = 1 << 20;
    uint8_t *tab = calloc(1, cap);
    size_t used = kb_build(tab, cap, 0, syms, n, FK_TEXT_VA, NULL);
    put(d, img + 0x400000, tab, used);
    free(tab);
    free(syms);
    free(names);

    static const char banner[] = "Linux version 6.1.0-fake (test@vmtrap) #1 SMP\n";
    put(d, img + 0x1000, banner, sizeof banner);
    put64(d, img + 0x1100, img - (FK_TEXT_VA - KERNEL_MAP));
    put64(d, img + 0x1200, FK_DM + 0x300000);
    put64(d, img + 0x1208, FK_DM + 0x340000);
    put64(d, img + 0x1300, FK_DM);
    /* init_top_pgt: the direct map (2 MiB pages) of all RAM. */
    put64(d, img + 0x10000 + 8 * 273, (img + 0x11000) | P | RW);
    put64(d, img + 0x11000, (img + 0x12000) | P | RW);
    for (uint64_t i = 0; i < FK_RAM_MB / 2; i++)
        put64(d, img + 0x12000 + 8 * i, (i << 21) | P | RW | PS);
    if (!o->no_btf)
        put(d, img + FK_BTF_OFF, raw, btf_size);
    else
        put(d, img + FK_BTF_OFF + 2, raw + 2, btf_size - 2); /* no magic */
    btf__free(btf);

    /* Tasks: init_task (image) -> A (pid 1) -> B (pid 42) -> init_task. */
    uint64_t it = FK_INIT_TASK, a = FK_DM + FK_TASK_A_PA, b = FK_DM + FK_TASK_B_PA;
    task(d, img + 0x2000, 0, "swapper/0", it, 0, a + 0x10, b + 0x10);
    task(d, FK_TASK_A_PA, 1, "init", it, 0, b + 0x10, it + 0x10);
    task(d, FK_TASK_B_PA, 42, "sh", a, FK_DM + 0x210000, it + 0x10, o->broken_list ? it + 0x10 : a + 0x10);
    put64(d, 0x210000 + 0x50, FK_DM + FK_USER_PGD_PA);
    /* Per-CPU current_task: cpu 0 runs B, cpu 1 init_task. */
    put64(d, 0x300000 + 0x16d00, b);
    put64(d, 0x340000 + 0x16d00, it);
    /* B's page tables: the kernel half shared, user VA 0x400000 mapped. */
    put64(d, FK_USER_PGD_PA + 8 * 273, (img + 0x11000) | P | RW);
    put64(d, FK_USER_PGD_PA, 0x221000 | P | RW | US);
    put64(d, 0x221000, 0x222000 | P | RW | US);
    put64(d, 0x222000 + 8 * 2, 0x223000 | P | RW | US);
    put64(d, 0x223000, 0x230000 | P | RW | US);
    put(d, 0x230000, "hello from user", 16);
    uint64_t how[3] = { 0x241, 0644, 0 };
    put(d, FK_OPEN_HOW_PA, how, sizeof how);
    return d;
}
