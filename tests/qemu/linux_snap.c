/*
 * tests/qemu/linux_snap.c — see linux_snap.h.
 */
#include "linux_snap.h"

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vmtrap/paging.h"

int snap_have_qemu(void)
{
    const char *path = getenv("PATH");
    if (!path)
        return 0;
    char *copy = strdup(path), *save = NULL;
    int found = 0;
    for (char *dir = strtok_r(copy, ":", &save); dir && !found; dir = strtok_r(NULL, ":", &save)) {
        char p[1024];
        snprintf(p, sizeof p, "%s/qemu-system-x86_64", dir);
        found = access(p, X_OK) == 0;
    }
    free(copy);
    return found;
}

static int cache_dir(char *out, size_t len)
{
    const char *c = getenv("VMT_CACHE_DIR");
    const char *home = getenv("HOME");
    if (c && *c)
        snprintf(out, len, "%s/linux-snapshot", c);
    else if (home && *home)
        snprintf(out, len, "%s/.cache/vmtrap/linux-snapshot", home);
    else
        return -1;
    return 0;
}

int snap_open(linux_snap *s, const char *source_dir, char *why, size_t why_len)
{
    memset(s, 0, sizeof *s);
    if (cache_dir(s->dir, sizeof s->dir)) {
        snprintf(why, why_len, "neither VMT_CACHE_DIR nor HOME is set");
        return -1;
    }
    char info[600];
    snprintf(info, sizeof info, "%s/info.json", s->dir);
    if (access(info, R_OK) != 0) {
        char cmd[1200];
        snprintf(cmd, sizeof cmd, "'%s/scripts/make-linux-snapshot.sh' >&2", source_dir);
        fprintf(stderr, "building the Linux snapshot: %s\n", cmd);
        if (system(cmd) != 0) {
            snprintf(why, why_len, "scripts/make-linux-snapshot.sh failed (see its message above)");
            return -1;
        }
    }
    struct json_object *j = json_object_from_file(info);
    struct json_object *v;
    if (!j || !json_object_object_get_ex(j, "qemu_resume_args", &v) || !json_object_is_type(v, json_type_array)) {
        snprintf(why, why_len, "%s has no qemu_resume_args array", info);
        json_object_put(j);
        return -1;
    }
    size_t n = json_object_array_length(v);
    for (size_t i = 0; i < n && s->nargs < SNAP_MAX_ARGS - 1; i++)
        s->args[s->nargs++] = strdup(json_object_get_string(json_object_array_get_idx(v, i)));
    if (json_object_object_get_ex(j, "loop_pid", &v))
        s->loop_pid = json_object_get_int(v);
    if (json_object_object_get_ex(j, "tick_at_pause", &v))
        s->tick_at_pause = json_object_get_int(v);
    if (json_object_object_get_ex(j, "kernel_release", &v))
        snprintf(s->kernel_release, sizeof s->kernel_release, "%s", json_object_get_string(v));
    json_object_put(j);
    return 0;
}

void snap_close(linux_snap *s)
{
    for (size_t i = 0; i < s->nargs; i++)
        free(s->args[i]);
    s->nargs = 0;
    if (s->serial_out[0])
        unlink(s->serial_out);
}

uint64_t snap_symbol(const linux_snap *s, const char *name)
{
    char p[600], line[512];
    snprintf(p, sizeof p, "%s/serial.txt", s->dir);
    FILE *f = fopen(p, "r");
    if (!f)
        return 0;
    uint64_t addr = 0;
    int in = 0;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "VMT-KALLSYMS-BEGIN", 18) == 0) {
            in = 1;
            continue;
        }
        if (strncmp(line, "VMT-KALLSYMS-END", 16) == 0)
            break;
        unsigned long long a;
        char type[8], sym[256];
        if (in && sscanf(line, "%llx %7s %255s", &a, type, sym) == 3 && strcmp(sym, name) == 0) {
            addr = a;
            break;
        }
    }
    fclose(f);
    return addr;
}

vmt_status snap_launch(linux_snap *s, int icount, int nop_skip, vmt_driver **out, char *why, size_t why_len)
{
    snprintf(s->serial_out, sizeof s->serial_out, "/tmp/vmt-qemu-serial-%d-%p.txt", (int)getpid(), (void *)out);
    char serial_arg[300];
    snprintf(serial_arg, sizeof serial_arg, "file:%s", s->serial_out);
    const char *argv[SNAP_MAX_ARGS + 4];
    size_t k = 0;
    argv[k++] = "qemu-system-x86_64";
    for (size_t i = 0; i < s->nargs; i++)
        argv[k++] = s->args[i];
    argv[k++] = "-serial";
    argv[k++] = serial_arg;
    argv[k] = NULL;
    vmt_qemu_config cfg = { .qemu_argv = argv, .no_icount = !icount, .timeout_ms = 10000,
                            .start_timeout_ms = 60000, .no_nop_skip = !nop_skip };
    return vmt_qemu_driver_create(&cfg, out, why, why_len);
}

int snap_console_tick(const linux_snap *s)
{
    FILE *f = fopen(s->serial_out, "r");
    if (!f)
        return 0;
    char line[256];
    int best = 0, n, pid;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "tick %d pid %d", &n, &pid) == 2 && n > best)
            best = n;
    fclose(f);
    return best;
}

static vmt_status reader(void *ctx, vmt_pa pa, void *buf, size_t len)
{
    return vmt_drv_read_phys(ctx, pa, buf, len);
}

vmt_status snap_translate(vmt_driver *d, const vmt_regs *r, uint64_t va, uint64_t *pa, uint64_t *table_pa)
{
    vmt_phys_reader rd = { reader, d };
    vmt_paging_config pc = { .levels = (r->cr4 & VMT_CR4_LA57) ? 5 : 4, .maxphyaddr = 40,
                             .nxe = (r->efer & VMT_EFER_NXE) != 0 };
    vmt_walk w;
    vmt_status st = vmt_paging_walk(&rd, &pc, r->cr3 & VMT_PTE_ADDR_MASK, va, &w, NULL, 0);
    if (st)
        return st;
    *pa = w.pa;
    if (table_pa)
        *table_pa = w.leaf_level == 1 ? w.steps[w.nsteps - 1].table_pa : 0;
    return VMT_OK;
}

vmt_status snap_read_string(vmt_driver *d, const vmt_regs *r, uint64_t va, char *out, size_t cap)
{
    size_t n = 0;
    while (n + 1 < cap) {
        uint64_t pa;
        vmt_status st = snap_translate(d, r, va + n, &pa, NULL);
        if (st)
            return st;
        size_t in_page = 4096 - (size_t)((va + n) & 4095);
        size_t want = cap - 1 - n < in_page ? cap - 1 - n : in_page;
        if ((st = vmt_drv_read_phys(d, pa, out + n, want)))
            return st;
        void *nul = memchr(out + n, '\0', want);
        if (nul)
            return VMT_OK;
        n += want;
    }
    out[cap - 1] = '\0';
    return VMT_OK;
}
