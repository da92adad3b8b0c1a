/*
 * tools/cmd_trace.c — `vmtrap run --snapshot FILE --hook F[,F...]`: resume a
 * Linux snapshot on the emulator (vmtrap/resume.h) and log every call of
 * the hooked kernel functions with pid, tgid, comm and the arguments
 * decoded from the kernel's BTF (kallsyms names, static functions too), one
 * line or JSON object per call, interleaved with the console lines.
 *
 *   vmtrap run --snapshot FILE --hook F[,F...] [--returns] [--instructions N]
 *              [--limit SECONDS] [--state SIDECAR.json] [--json] [--quiet]
 *
 * Mechanism: the emulator's debug-register breakpoints (at most
 * caps.hw_breakpoints hooks; kernel text is shared by every address space,
 * so one breakpoint per function covers all processes). Arguments are read
 * through the CR3 of the hit, so user strings resolve in the calling
 * process; a page that is not present is reported as such.
 * Returns (--returns): the debug registers the entry hooks leave free catch
 * returns: at an entry the return address is read from the stack and a
 * one-shot breakpoint put there; it reports only when the stack pointer and
 * CR3 show the same call returning (not another task passing by). With no
 * free register, or for a function BTF says returns nothing (do_exit), the
 * return is not hooked and counted as missed in the final note.
 * Exit codes: 0 the run ended at its bound, 1 the guest stopped otherwise or
 * a read failed fatally, 2 usage, unknown symbol or load errors.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cmd_os.h"
#include "vmtrap/resume.h"

#define TRACE_MAX_HOOKS 4

typedef struct trace_opts {
    const char *snapshot, *state;
    char *hooks[TRACE_MAX_HOOKS];
    size_t nhooks;
    uint64_t instructions;
    double limit;
    int json, quiet, returns;
} trace_opts;

/* A return being waited for on a free debug register. */
typedef struct pending_ret {
    int active;
    size_t hook;
    uint64_t va, rsp, cr3, count;
} pending_ret;

static void on_serial(void *ctx, const char *line)
{
    cli_log_serial(ctx, line);
}

static void on_note(void *ctx, const char *line)
{
    cli_log_note(ctx, "note", line);
}

static int usage_error(const char *msg, const char *arg)
{
    fprintf(stderr, "vmtrap run: ");
    fprintf(stderr, msg, arg);
    fprintf(stderr, "\nusage: vmtrap run --snapshot FILE --hook F[,F...] [--returns] [--instructions N]"
                    " [--limit SECONDS] [--state SIDECAR.json] [--json] [--quiet]\n");
    return CLI_EXIT_USAGE;
}

static int parse(int argc, char **argv, trace_opts *o, char *list, size_t list_len)
{
    memset(o, 0, sizeof *o);
    o->instructions = 100000000ull;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--json"))
            o->json = 1;
        else if (!strcmp(a, "--quiet"))
            o->quiet = 1;
        else if (!strcmp(a, "--returns"))
            o->returns = 1;
        else if (!strcmp(a, "--snapshot") && v)
            o->snapshot = argv[++i];
        else if (!strcmp(a, "--state") && v)
            o->state = argv[++i];
        else if (!strcmp(a, "--hook") && v) {
            snprintf(list, list_len, "%s", argv[++i]);
            for (char *save = NULL, *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                if (o->nhooks == TRACE_MAX_HOOKS)
                    return usage_error("at most 4 hooks on a snapshot run (debug registers), not '%s'", argv[i]);
                o->hooks[o->nhooks++] = t;
            }
        } else if (!strcmp(a, "--instructions") && v) {
            char *end;
            o->instructions = strtoull(argv[++i], &end, 0);
            if (*end || argv[i][0] == '-')
                return usage_error("--instructions needs a number, not '%s'", argv[i]);
        } else if (!strcmp(a, "--limit") && v) {
            char *end;
            o->limit = strtod(argv[++i], &end);
            if (*end || o->limit < 0)
                return usage_error("--limit needs seconds, not '%s'", argv[i]);
        } else
            return usage_error("unknown or incomplete option '%s'", a);
    }
    if (!o->snapshot || !o->nhooks)
        return usage_error("%s", "needs --snapshot FILE and --hook F[,F...]");
    return CLI_EXIT_OK;
}

int cli_cmd_trace(int argc, char **argv)
{
    trace_opts o;
    char list[1024], why[512];
    int rc = parse(argc, argv, &o, list, sizeof list);
    if (rc)
        return rc;
    cli_log log = { .out = stdout, .json = o.json, .quiet = o.quiet };
    vmt_resume_config rcfg = { .sidecar = o.state, .serial = on_serial, .serial_ctx = &log, .note = on_note,
                               .note_ctx = &log, .quiet = true };
    vmt_resume *r;
    if (vmt_resume_open(o.snapshot, &rcfg, &r, why, sizeof why) != VMT_OK) {
        fprintf(stderr, "vmtrap run: %s\n", why);
        return CLI_EXIT_USAGE;
    }
    vmt_driver *d = vmt_resume_driver(r);
    vmt_os *os = NULL;
    cli_decoder *dec = NULL;
    uint64_t va[TRACE_MAX_HOOKS], counts[TRACE_MAX_HOOKS] = { 0 }, returns = 0, missed = 0;
    pending_ret pend[TRACE_MAX_HOOKS];
    memset(pend, 0, sizeof pend);
    rc = CLI_EXIT_USAGE;
    if (vmt_os_open(d, NULL, &os, why, sizeof why) != VMT_OK) {
        fprintf(stderr, "vmtrap run: %s\n", why);
        goto out;
    }
    if (o.nhooks > vmt_driver_caps(d)->hw_breakpoints) {
        fprintf(stderr, "vmtrap run: driver '%s' has %u debug-register breakpoints for %zu hooks\n",
                vmt_driver_name(d), vmt_driver_caps(d)->hw_breakpoints, o.nhooks);
        goto out;
    }
    for (size_t i = 0; i < o.nhooks; i++) {
        vmt_os_symbol s;
        if (vmt_os_symbol_by_name(os, o.hooks[i], &s) != VMT_OK) {
            fprintf(stderr, "vmtrap run: unknown kernel symbol '%s' (not in the guest's kallsyms)\n", o.hooks[i]);
            goto out;
        }
        va[i] = s.addr;
        if (vmt_drv_hw_breakpoint(d, 0, (unsigned)i, s.addr, 1) != VMT_OK) {
            fprintf(stderr, "vmtrap run: hook '%s': %s\n", o.hooks[i], vmt_driver_error(d));
            goto out;
        }
    }
    if (cli_decoder_open(NULL, os, &dec, why, sizeof why) != 0) {
        fprintf(stderr, "vmtrap run: %s\n", why);
        goto out;
    }
    if (cli_decoder_note(dec)[0])
        cli_log_note(&log, "decode", cli_decoder_note(dec));
    if (vmt_drv_set_limit(d, o.limit, o.instructions) != VMT_OK) {
        fprintf(stderr, "vmtrap run: %s\n", vmt_driver_error(d));
        goto out;
    }
    rc = CLI_EXIT_FAIL;
    for (;;) {
        vmt_event ev;
        vmt_status st = vmt_drv_wait_event(d, -1, &ev);
        if (st == VMT_E_TIMEOUT)
            continue;
        if (st) {
            fprintf(stderr, "vmtrap run: %s\n", vmt_driver_error(d));
            break;
        }
        if (ev.kind == VMT_EVENT_STOPPED) {
            vmt_stop_reason why_stop = ev.u.stop.reason;
            cli_log_note(&log, "stopped", vmt_stop_reason_name(why_stop));
            rc = why_stop == VMT_STOP_INSN_LIMIT || why_stop == VMT_STOP_TIME_LIMIT ? CLI_EXIT_OK : CLI_EXIT_FAIL;
            break;
        }
        if (ev.kind == VMT_EVENT_HW_BREAKPOINT) {
            uint64_t cr3 = ev.regs.cr3 & VMT_CR3_ADDR_MASK;
            vmt_os_vreader_slot slot;
            vmt_vreader rd = vmt_os_vreader(os, cr3, &slot);
            for (size_t k = o.nhooks; k < vmt_driver_caps(d)->hw_breakpoints && k < TRACE_MAX_HOOKS; k++) {
                pending_ret *pr = &pend[k];
                if (!pr->active || pr->va != ev.u.hwbp.address || pr->rsp != ev.regs.rsp || pr->cr3 != cr3)
                    continue; /* not this call's return (another task, a nested call) */
                cli_call c;
                memset(&c, 0, sizeof c);
                c.is_return = 1;
                c.count = pr->count;
                cli_decode_regs(dec, o.hooks[pr->hook], ev.vcpu, &ev.regs, &rd, &c);
                cli_log_call(&log, &c);
                pr->active = 0;
                returns++;
                (void)vmt_drv_hw_breakpoint(d, 0, (unsigned)k, 0, 0);
            }
            for (size_t i = 0; i < o.nhooks; i++) {
                if (va[i] != ev.u.hwbp.address)
                    continue;
                cli_call c;
                memset(&c, 0, sizeof c);
                c.count = ++counts[i];
                cli_decode_regs(dec, o.hooks[i], ev.vcpu, &ev.regs, &rd, &c);
                cli_log_call(&log, &c);
                vmt_proto p;
                if (!o.returns || vmt_os_proto(os, o.hooks[i], &p) != VMT_OK || !p.has_ret)
                    continue; /* no return to wait for (do_exit never returns) */
                size_t k = o.nhooks;
                while (k < vmt_driver_caps(d)->hw_breakpoints && k < TRACE_MAX_HOOKS && pend[k].active)
                    k++;
                uint64_t ret_va;
                if (k >= vmt_driver_caps(d)->hw_breakpoints || k >= TRACE_MAX_HOOKS ||
                    vmt_os_read_virt(os, cr3, ev.regs.rsp, &ret_va, 8, NULL) != VMT_OK ||
                    vmt_drv_hw_breakpoint(d, 0, (unsigned)k, ret_va, 1) != VMT_OK) {
                    missed++;
                    continue;
                }
                pend[k] = (pending_ret){ .active = 1, .hook = i, .va = ret_va, .rsp = ev.regs.rsp + 8, .cr3 = cr3,
                                         .count = counts[i] };
            }
        }
        vmt_response resp = vmt_response_continue();
        if (vmt_drv_respond(d, &ev, &resp) != VMT_OK) {
            fprintf(stderr, "vmtrap run: answering a %s event: %s\n", vmt_event_kind_name(ev.kind),
                    vmt_driver_error(d));
            break;
        }
    }
    char line[512];
    size_t n = 0;
    for (size_t i = 0; i < o.nhooks && n < sizeof line; i++)
        n += (size_t)snprintf(line + n, sizeof line - n, "%s%s=%" PRIu64, i ? " " : "", o.hooks[i], counts[i]);
    if (o.returns && n < sizeof line)
        snprintf(line + n, sizeof line - n, " returns=%" PRIu64 " returns_missed=%" PRIu64, returns, missed);
    cli_log_note(&log, "calls", line);
out:
    cli_decoder_close(dec);
    vmt_os_close(os);
    vmt_resume_close(r);
    return rc;
}
