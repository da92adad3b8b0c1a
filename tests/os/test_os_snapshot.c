/*
 * tests/os/test_os_snapshot.c — acceptance on the project's Debian 6.1
 * snapshot (scripts/make-linux-snapshot.sh; cache at
 * ${VMT_CACHE_DIR:-$HOME/.cache/vmtrap}/linux-snapshot): with no profile and
 * no System.map, the OS layer's view must agree with what the guest said
 * about itself on its console (serial.txt): every /proc/kallsyms line it
 * printed, the loop shell's pid; init_task is "swapper/0"; init and the
 * shell are in the process list; the BTF prototypes of the functions the
 * demo hooks read as the kernel declares them. Skipped (77) when the
 * snapshot has not been made on this machine.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vmtrap/os.h"
#include "vmtrap/snapshot.h"

static char dir[512];
static vmt_snapshot *snap;
static vmt_driver *drv; /* read-only, over the snapshot */
static vmt_os *os;

static FILE *open_serial(void)
{
    char p[600];
    snprintf(p, sizeof p, "%s/serial.txt", dir);
    return fopen(p, "r");
}

static void kallsyms_agrees_with_the_guest(void **state)
{
    (void)state;
    FILE *f = open_serial();
    assert_non_null(f);
    char line[700];
    int in = 0;
    unsigned checked = 0, total = 0;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "VMT-KALLSYMS-BEGIN", 18) == 0) {
            in = 1;
            continue;
        }
        if (strncmp(line, "VMT-KALLSYMS-END", 16) == 0) {
            sscanf(line, "VMT-KALLSYMS-END lines=%u", &total);
            break;
        }
        if (!in)
            continue;
        unsigned long long addr;
        char type, name[600];
        if (sscanf(line, "%llx %c %599s", &addr, &type, name) != 3)
            continue;
        if (strchr(line, '['))
            continue; /* module symbols are not in the kernel's own table */
        /* Some symbol at that address has that name and type. */
        vmt_os_symbol s;
        uint64_t off;
        assert_int_equal(vmt_os_symbol_by_addr(os, addr, &s, &off), VMT_OK);
        int found = 0;
        for (uint32_t i = s.index; vmt_os_symbol_at(os, i, &s) == VMT_OK && s.addr == addr; i++)
            found |= strcmp(s.name, name) == 0 && s.type == type;
        if (!found) {
            print_error("guest says %llx %c %s; kallsyms from memory disagrees\n", addr, type, name);
            fail();
        }
        checked++;
    }
    fclose(f);
    assert_true(checked >= 100);
    vmt_os_info in_;
    vmt_os_get_info(os, &in_);
    assert_int_equal(in_.nsyms, total); /* no modules in the snapshot guest */
}

static int loop_pid(void)
{
    FILE *f = open_serial();
    char line[700];
    int pid = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VMT-LOOP-PID %d", &pid) == 1)
            break;
    if (f)
        fclose(f);
    return pid;
}

typedef struct found {
    int init, shell, n;
    int shell_pid;
} found;

static int look(void *ctx, const vmt_os_task *t)
{
    found *f = ctx;
    f->n++;
    if (t->pid == 1 && t->pgd_pa)
        f->init = 1;
    if (t->pid == f->shell_pid && strcmp(t->comm, "sh") == 0 && t->ppid == 1 && t->pgd_pa)
        f->shell = 1;
    return 0;
}

static void processes_agree_with_the_guest(void **state)
{
    (void)state;
    uint64_t va;
    vmt_os_symbol s;
    char comm[17] = { 0 };
    assert_int_equal(vmt_os_symbol_by_name(os, "init_task", &s), VMT_OK);
    assert_int_equal(vmt_os_member_offset(os, "task_struct", "comm", &va), VMT_OK);
    assert_int_equal(vmt_os_read_kernel(os, s.addr + va, comm, 16, NULL), VMT_OK);
    assert_string_equal(comm, "swapper/0");
    found f = { .shell_pid = loop_pid() };
    assert_true(f.shell_pid > 1);
    assert_int_equal(vmt_os_tasks(os, look, &f), VMT_OK);
    assert_true(f.init);
    assert_true(f.shell);
    assert_true(f.n > 10);
    vmt_os_task cur;
    assert_int_equal(vmt_os_current_task(os, 0, &cur), VMT_OK);
    assert_true(cur.pid >= 0);
}

static void prototypes_from_btf(void **state)
{
    (void)state;
    static const char *const want[][2] = {
        { "do_sys_openat2", "long int do_sys_openat2(int dfd, const char *filename, struct open_how *how)" },
        { "ksys_write", "ssize_t ksys_write(unsigned int fd, const char *buf, size_t count)" },
        { "kernel_clone", "pid_t kernel_clone(struct kernel_clone_args *args)" },
        { "do_exit", "void do_exit(long int code)" },
    };
    char text[320];
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(vmt_os_prototype(os, want[i][0], text, sizeof text), VMT_OK);
        assert_string_equal(text, want[i][1]);
    }
    vmt_proto p;
    assert_int_equal(vmt_os_proto(os, "do_sys_openat2", &p), VMT_OK);
    assert_int_equal(p.params[1].kind, VMT_PARAM_STRING);
    assert_int_equal(p.params[2].kind, VMT_PARAM_STRUCT);
    assert_string_equal(p.params[2].fields[0].name, "flags");
    assert_string_equal(p.params[2].fields[1].name, "mode");
    assert_int_equal(vmt_os_proto(os, "ksys_write", &p), VMT_OK);
    assert_int_equal(p.params[1].kind, VMT_PARAM_BUFFER);
    assert_int_equal(p.params[1].len_param, 2);
    assert_int_equal(vmt_os_proto(os, "kernel_clone", &p), VMT_OK);
    assert_int_equal(p.params[0].kind, VMT_PARAM_STRUCT);
    assert_string_equal(p.params[0].fields[0].name, "flags");
    assert_string_equal(p.params[0].fields[1].name, "exit_signal");
    assert_int_equal(vmt_os_proto(os, "do_exit", &p), VMT_OK);
    assert_int_equal(p.params[0].kind, VMT_PARAM_INT);
    assert_false(p.has_ret);
    /* task_struct.pid/tgid are adjacent ints, as the kernel declares them. */
    uint64_t pid, tgid;
    assert_int_equal(vmt_os_member_offset(os, "task_struct", "pid", &pid), VMT_OK);
    assert_int_equal(vmt_os_member_offset(os, "task_struct", "tgid", &tgid), VMT_OK);
    assert_int_equal(tgid, pid + 4);
}

static void system_map_from_the_sample(void **state)
{
    (void)state;
    /* The guest's own sample is a (partial) System.map: it must agree; the
     * same map with one address moved must not, naming that symbol. */
    char path[] = "/tmp/vmt_snapmap_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *out = fdopen(fd, "w"), *f = open_serial();
    char line[700];
    int in = 0;
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "VMT-KALLSYMS-BEGIN", 18)) { in = 1; continue; }
        if (!strncmp(line, "VMT-KALLSYMS-END", 16)) break;
        if (in && !strchr(line, '['))
            fputs(line, out);
    }
    fclose(out);
    fclose(f);
    assert_int_equal(vmt_os_check_system_map(os, path), VMT_OK);
    out = fopen(path, "a");
    fprintf(out, "ffffffff81000010 T do_exit\n");
    fclose(out);
    vmt_status st = vmt_os_check_system_map(os, path);
    if (st != VMT_E_CONFLICT || !strstr(vmt_os_error(os), "'do_exit'"))
        print_error("status %d: %s\n", st, vmt_os_error(os));
    assert_int_equal(st, VMT_E_CONFLICT);
    assert_non_null(strstr(vmt_os_error(os), "'do_exit'"));
    unlink(path);
}

static void reconstruct_syscall_msrs(void **state)
{
    (void)state;
    /* The core lacks the SYSCALL MSRs; the OS step sets them from kallsyms
     * as Linux's syscall_init writes them. */
    assert_int_equal(vmt_snapshot_reconstruct(snap, vmt_os_snapshot_reconstruct, NULL), VMT_OK);
    vmt_os_symbol entry;
    assert_int_equal(vmt_os_symbol_by_name(os, "entry_SYSCALL_64", &entry), VMT_OK);
    const vmt_vcpu_state *vs = vmt_snapshot_vcpu(snap, 0);
    assert_non_null(vs);
    assert_true(vs->known & VMT_VS_SYSCALL);
    assert_true(vs->lstar == entry.addr);
    assert_true(vs->star == 0x0023001000000000ull);
    assert_true(vs->fmask == 0x257fd5);
    int named = 0;
    for (size_t i = 0; i < vmt_snapshot_fixup_count(snap); i++)
        named |= strstr(vmt_snapshot_fixup_at(snap, i)->how, "entry_SYSCALL_64") != NULL;
    assert_true(named);
}

int main(void)
{
    const char *c = getenv("VMT_CACHE_DIR");
    const char *home = getenv("HOME");
    if (c && *c)
        snprintf(dir, sizeof dir, "%s/linux-snapshot", c);
    else
        snprintf(dir, sizeof dir, "%s/.cache/vmtrap/linux-snapshot", home ? home : "/root");
    char core[600], err[512];
    snprintf(core, sizeof core, "%s/core.elf", dir);
    FILE *s = open_serial();
    if (access(core, R_OK) != 0 || !s) {
        printf("SKIP: no Linux snapshot at %s (make it with scripts/make-linux-snapshot.sh)\n", dir);
        return 77;
    }
    fclose(s);
    vmt_snapshot_options so = { .quiet = true };
    if (vmt_snapshot_open(core, &so, &snap, err, sizeof err) != VMT_OK) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    if (vmt_os_open_snapshot(snap, NULL, &os, &drv, err, sizeof err) != VMT_OK) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(kallsyms_agrees_with_the_guest),
        cmocka_unit_test(processes_agree_with_the_guest),
        cmocka_unit_test(prototypes_from_btf),
        cmocka_unit_test(system_map_from_the_sample),
        cmocka_unit_test(reconstruct_syscall_msrs),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    char why[256];
    if (vmt_os_check(os, why, sizeof why) != VMT_OK) {
        fprintf(stderr, "invariant: %s\n", why);
        rc = 1;
    }
    vmt_os_close(os);
    vmt_driver_destroy(drv);
    vmt_snapshot_destroy(snap);
    return rc;
}
