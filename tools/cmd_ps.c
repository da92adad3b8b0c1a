/*
 * tools/cmd_ps.c — `vmtrap ps FILE`: the guest's processes from its own
 * memory (init_task.tasks), the task on each CPU marked; plus the shared
 * open/argument code of the OS commands (cmd_os.h).
 */
#include <json-c/json.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "cmd_os.h"
#include "vmtrap/snapshot.h"

int cli_os_begin(int argc, char **argv, int want_arg, cli_os_args *a, vmt_driver **drv, vmt_os **os)
{
    memset(a, 0, sizeof *a);
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            a->json = 1;
        else if (strcmp(argv[i], "--no-btf") == 0)
            a->cfg.no_btf = 1;
        else if (strcmp(argv[i], "--system-map") == 0 && i + 1 < argc)
            a->cfg.system_map = argv[++i];
        else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "vmtrap %s: unknown option '%s'\n", argv[1], argv[i]);
            return CLI_EXIT_USAGE;
        } else if (!a->file)
            a->file = argv[i];
        else if (want_arg && !a->arg)
            a->arg = argv[i];
        else {
            fprintf(stderr, "vmtrap %s: unexpected argument '%s'\n", argv[1], argv[i]);
            return CLI_EXIT_USAGE;
        }
    }
    if (!a->file || (want_arg && !a->arg)) {
        fprintf(stderr, "vmtrap %s: usage: vmtrap %s CORE.elf%s [--json] [--system-map MAP] [--no-btf]\n", argv[1],
                argv[1], want_arg ? " PATTERN" : "");
        return CLI_EXIT_USAGE;
    }
    char err[512];
    vmt_snapshot_options so = { .quiet = true };
    if (vmt_snapshot_open(a->file, &so, &a->snap, err, sizeof err) != VMT_OK) {
        fprintf(stderr, "vmtrap %s: %s\n", argv[1], err);
        return CLI_EXIT_USAGE;
    }
    if (vmt_os_open_snapshot(a->snap, &a->cfg, os, drv, err, sizeof err) != VMT_OK) {
        fprintf(stderr, "vmtrap %s: %s\n", argv[1], err);
        vmt_snapshot_destroy(a->snap);
        return CLI_EXIT_FAIL;
    }
    return CLI_EXIT_OK;
}

void cli_os_end(cli_os_args *a, vmt_driver *drv, vmt_os *os)
{
    vmt_os_close(os);
    vmt_driver_destroy(drv);
    vmt_snapshot_destroy(a->snap);
    a->snap = NULL;
}

static void emit(json_object *o)
{
    puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(o);
}

static json_object *hexj(uint64_t v)
{
    char b[24];
    snprintf(b, sizeof b, "0x%" PRIx64, v);
    return json_object_new_string(b);
}

void cli_os_print_kernel(const vmt_os *os, int json)
{
    vmt_os_info in;
    vmt_os_get_info(os, &in);
    char version[sizeof in.version * 4];
    cli_escape_guest_text(in.version, version, sizeof version);
    if (json) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "event", json_object_new_string("kernel"));
        json_object_object_add(o, "version", json_object_new_string(version));
        json_object_object_add(o, "text_va", hexj(in.text_va));
        json_object_object_add(o, "text_pa", hexj(in.text_pa));
        json_object_object_add(o, "kaslr_slide", json_object_new_int64(in.kaslr_slide));
        json_object_object_add(o, "symbols", json_object_new_int64(in.nsyms));
        json_object_object_add(o, "btf_types", json_object_new_int64(in.btf_types));
        if (!in.has_btf)
            json_object_object_add(o, "note", json_object_new_string(in.btf_note));
        emit(o);
        return;
    }
    printf("# %s\n# _text 0x%" PRIx64 " at PA 0x%" PRIx64 ", KASLR slide %+" PRId64 ", %u symbols, ", version,
           in.text_va, in.text_pa, in.kaslr_slide, in.nsyms);
    if (in.has_btf)
        printf("BTF %zu bytes, %u types\n", in.btf_size, in.btf_types);
    else
        printf("%s\n", in.btf_note);
}

typedef struct ps_ctx {
    int json;
    uint64_t current[64];
    unsigned ncur;
    unsigned count;
} ps_ctx;

static int print_task(void *ctx, const vmt_os_task *t)
{
    ps_ctx *c = ctx;
    char comm[VMT_OS_COMM_LEN * 4 + 1];
    cli_escape_guest_text(t->comm, comm, sizeof comm);
    int cpu = -1;
    for (unsigned i = 0; i < c->ncur; i++)
        if (c->current[i] == t->va)
            cpu = (int)i;
    c->count++;
    if (c->json) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "event", json_object_new_string("task"));
        json_object_object_add(o, "pid", json_object_new_int(t->pid));
        json_object_object_add(o, "tgid", json_object_new_int(t->tgid));
        json_object_object_add(o, "ppid", json_object_new_int(t->ppid));
        json_object_object_add(o, "comm", json_object_new_string(comm));
        json_object_object_add(o, "task", hexj(t->va));
        if (t->pgd_pa)
            json_object_object_add(o, "pgd", hexj(t->pgd_pa));
        if (cpu >= 0)
            json_object_object_add(o, "cpu", json_object_new_int(cpu));
        emit(o);
    } else {
        char pgd[24] = "-", on[16] = "";
        if (t->pgd_pa)
            snprintf(pgd, sizeof pgd, "0x%" PRIx64, t->pgd_pa);
        if (cpu >= 0)
            snprintf(on, sizeof on, "cpu%d", cpu);
        printf("%7d %7d %7d  %-16s %-18" PRIx64 " %-12s %s\n", t->pid, t->tgid, t->ppid, comm, t->va, pgd, on);
    }
    return 0;
}

int cli_cmd_ps(int argc, char **argv)
{
    cli_os_args a;
    vmt_driver *d;
    vmt_os *os;
    int rc = cli_os_begin(argc, argv, 0, &a, &d, &os);
    if (rc)
        return rc;
    ps_ctx c = { .json = a.json };
    vmt_os_task cur;
    for (unsigned cpu = 0; cpu < vmt_driver_caps(d)->vcpus && cpu < 64; cpu++)
        c.current[c.ncur++] = vmt_os_current_task(os, cpu, &cur) == VMT_OK ? cur.va : 0;
    /* The core does not say how many CPUs the guest had: ask the kernel's
     * per-CPU table for more only while a CPU has a current task. */
    for (unsigned cpu = c.ncur; cpu < 64 && vmt_os_current_task(os, cpu, &cur) == VMT_OK; cpu++)
        c.current[c.ncur++] = cur.va;
    cli_os_print_kernel(os, a.json);
    if (!a.json)
        printf("%7s %7s %7s  %-16s %-18s %-12s %s\n", "PID", "TGID", "PPID", "COMM", "TASK", "PGD", "ON");
    vmt_status st = vmt_os_tasks(os, print_task, &c);
    if (st)
        fprintf(stderr, "vmtrap ps: %s (after %u tasks)\n", vmt_os_error(os), c.count);
    cli_os_end(&a, d, os);
    return st ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}
