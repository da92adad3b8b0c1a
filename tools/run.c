/*
 * tools/run.c — `vmtrap run` and `vmtrap demo`: build the stack, run, report.
 *
 * Design: image (core ELF loader) -> driver (emu or kvm, from one machine
 * config) -> session (takes the driver) -> monitor (hooks by symbol). Every
 * hook, page event, guest report and serial line goes to the log as it
 * happens; the summary comes at the end, also after SIGINT/SIGTERM (the
 * session watches them through a signalfd and the loop returns cleanly).
 * The guest's own call counts arrive as REPORT ucalls whose key names the
 * service (see guest_count_slot); the summary compares them with the hook
 * counts and a mismatch makes the exit code non-zero.
 *
 * Errors before the guest runs (missing image, unknown symbol, driver not
 * built or not available) are one line on stderr and CLI_EXIT_USAGE.
 */
#include <ctype.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "vmtrap/machine.h"
#include "vmtrap/session.h"
#ifdef VMT_CLI_HAVE_EMU
#include "vmtrap/emu.h"
#endif
#ifdef VMT_CLI_HAVE_KVM
#include "vmtrap/kvm.h"
#endif

#define DEFAULT_RAM_MB 64

static const char *const demo_hooks[] = { "svc_open", "svc_write", "svc_spawn", "svc_exit" };

typedef struct run_ctx {
    const vmtrap_options *opts;
    cli_log log;
    vmt_monitor *mon;
    const char *hooks[CLI_MAX_HOOKS];
    size_t nhooks;
    int64_t guest_counts[CLI_MAX_HOOKS];
    int assert_failed;
    int hook_errors;
    const char *guest_path;
    const vmt_image *img;
    unsigned entry_checked, entry_mismatch;
    cli_decoder *dec;         /* prototypes from the guest's DWARF, made at the first hit */
    int dec_tried;
} run_ctx;

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- finding the bundled workload guest ---- */

static int file_exists(const char *p)
{
    return access(p, R_OK) == 0;
}

static const char *find_workload(char *buf, size_t len)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = 0;
            /* build tree: build/tools/vmtrap -> build/guests/workload.elf */
            snprintf(buf, len, "%s/../guests/workload.elf", exe);
            if (file_exists(buf))
                return buf;
            /* install tree: bin/vmtrap -> share/vmtrap/guests/workload.elf */
            snprintf(buf, len, "%s/../share/vmtrap/guests/workload.elf", exe);
            if (file_exists(buf))
                return buf;
        }
    }
#ifdef VMT_CLI_GUEST_DIR
    snprintf(buf, len, "%s/workload.elf", VMT_CLI_GUEST_DIR);
    if (file_exists(buf))
        return buf;
#endif
    return NULL;
}

/* ---- callbacks ---- */

static void on_serial(void *ctx, const char *line)
{
    run_ctx *r = ctx;
    cli_log_serial(&r->log, line);
}

static vmt_status on_hit(const vmt_hit *hit, void *user)
{
    run_ctx *r = user;
    cli_call call;
    if (!r->dec && !r->dec_tried) {
        char err[256];
        r->dec_tried = 1;
        if (cli_decoder_open(r->guest_path, NULL, &r->dec, err, sizeof err) != 0)
            cli_log_note(&r->log, "decode", err);
        else if (cli_decoder_note(r->dec)[0])
            cli_log_note(&r->log, "decode", cli_decoder_note(r->dec));
    }
    cli_decode_hit(r->dec, hit, &call);
    cli_log_call(&r->log, &call);
    return VMT_OK;
}

static void on_trace(const vmt_event *ev, const vmt_response *resp, vmt_status st, void *user)
{
    run_ctx *r = user;
    cli_log_trace(&r->log, ev, resp, st);
}

static void on_page_event(const vmt_ptm_event *ev, const char *symbol, void *user)
{
    run_ctx *r = user;
    cli_log_page_event(&r->log, ev, symbol);
}

/* The hook a REPORT key counts, or -1. A key names a hooked symbol when it
 * contains it as a whole word ("svc_open", "calls.svc_open", "svc_open_calls"
 * would be a different word: only '.', ':', '/', '=' or the ends delimit). */
static int guest_count_slot(const run_ctx *r, const char *key)
{
    for (size_t i = 0; i < r->nhooks; i++) {
        size_t n = strlen(r->hooks[i]);
        for (const char *p = strstr(key, r->hooks[i]); p; p = strstr(p + 1, r->hooks[i])) {
            int left = p == key || strchr(".:/= ", p[-1]);
            int right = p[n] == 0 || strchr(".:/= ", p[n]);
            if (left && right)
                return (int)i;
        }
    }
    return -1;
}

static void on_ucall(const vmt_ucall *uc, void *user)
{
    run_ctx *r = user;
    if (uc->cmd == VMT_UCALL_REPORT) {
        int slot = guest_count_slot(r, uc->name);
        if (slot >= 0 && uc->nargs >= 1)
            r->guest_counts[slot] = (int64_t)uc->args[0];
    }
    if (uc->cmd == VMT_UCALL_ASSERT_FAIL)
        r->assert_failed = 1;
    cli_log_ucall(&r->log, uc);
    /* The workload reports d1.<symbol> = FNV-1a of the 32 entry bytes it
     * read: compare with the ELF file, which no monitor can alter. */
    if (uc->cmd == VMT_UCALL_REPORT && strncmp(uc->name, "d1.", 3) == 0 && uc->nargs >= 1) {
        vmt_va va;
        uint8_t bytes[32];
        if (vmt_image_symbol(r->img, uc->name + 3, &va, NULL) == VMT_OK &&
            cli_elf_read_va(r->guest_path, va, bytes, sizeof bytes) == 0) {
            uint64_t h = vmt_ucall_fnv1a(bytes, sizeof bytes);
            r->entry_checked++;
            r->entry_mismatch += h != uc->args[0];
            cli_log_entry_check(&r->log, uc->name + 3, uc->args[0], h);
        }
    }
}

/* ---- the stack ---- */

typedef enum driver_kind { DRV_EMU, DRV_KVM } driver_kind;

static int driver_built(driver_kind k)
{
#ifdef VMT_CLI_HAVE_EMU
    if (k == DRV_EMU)
        return 1;
#endif
#ifdef VMT_CLI_HAVE_KVM
    if (k == DRV_KVM)
        return 1;
#endif
    (void)k;
    return 0;
}

static vmt_status create_driver(driver_kind k, const vmt_machine_config *cfg, vmt_driver **out, char *why,
                                size_t why_len)
{
    *out = NULL;
#ifdef VMT_CLI_HAVE_EMU
    if (k == DRV_EMU)
        return vmt_emu_driver_create(cfg, out, why, why_len);
#endif
#ifdef VMT_CLI_HAVE_KVM
    if (k == DRV_KVM)
        return vmt_kvm_driver_create(cfg, out, why, why_len);
#endif
    (void)cfg;
    snprintf(why, why_len, "driver '%s' is not built into this vmtrap", k == DRV_EMU ? "emu" : "kvm");
    return VMT_E_NOTSUP;
}

/* demo: the emulator when built (it traps reads, writes and execution, so
 * the breakpoints are fully hidden); else KVM. */
static driver_kind pick_driver(const vmtrap_options *o, const char **reason)
{
    if (o->driver) {
        *reason = "chosen with --driver";
        return strcmp(o->driver, "kvm") == 0 ? DRV_KVM : DRV_EMU;
    }
    if (driver_built(DRV_EMU)) {
        *reason = "best available: the emulator traps reads, writes and execution per page, so every "
                  "breakpoint can be hidden";
        return DRV_EMU;
    }
    *reason = "the only driver built";
    return DRV_KVM;
}

/* Is name one of the comma-separated list's entries? */
static int in_list(const char *list, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = list; p && *p;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len == n && strncmp(p, name, n) == 0)
            return 1;
        p = comma ? comma + 1 : NULL;
    }
    return 0;
}

/* More distinct hook addresses than the mechanism holds (debug registers):
 * a usage error naming every hook that does not fit. */
static int hooks_over_limit(const run_ctx *r, const vmt_image *img, unsigned limit, char *why, size_t why_len)
{
    vmt_va seen[CLI_MAX_HOOKS];
    size_t nseen = 0, nextra = 0;
    char extra[400] = "";
    size_t el = 0;
    for (size_t i = 0; i < r->nhooks; i++) {
        vmt_va va = 0;
        (void)vmt_image_symbol(img, r->hooks[i], &va, NULL);
        bool dup = false;
        for (size_t j = 0; j < nseen; j++)
            dup |= seen[j] == va;
        if (dup)
            continue;
        seen[nseen++] = va;
        if (nseen > limit) {
            nextra++;
            if (el < sizeof extra)
                el += (size_t)snprintf(extra + el, sizeof extra - el, "%s%s", nextra > 1 ? ", " : "", r->hooks[i]);
        }
    }
    if (!nextra)
        return 0;
    snprintf(why, why_len,
             "--breakpoints debug: %zu hooked addresses need %zu debug registers, the driver has %u; %s %s not fit "
             "(hook fewer symbols, or use --breakpoints shadow or exec)",
             nseen, nseen, limit, extra, nextra > 1 ? "do" : "does");
    return 1;
}

static int fail_line(const char *fmt, const char *a, const char *b)
{
    fputs("vmtrap: ", stderr);
    fprintf(stderr, fmt, a, b);
    fputc('\n', stderr);
    return CLI_EXIT_USAGE;
}

static const char *end_reason_text(vmt_session *s, vmt_status run_status, const run_ctx *r, char *buf,
                                   size_t len)
{
    const vmt_monitor_stats *st = vmt_monitor_stats_get(r->mon);
    const vmt_stop_info *stop = vmt_session_last_stop(s);
    if (run_status != VMT_OK)
        snprintf(buf, len, "the run failed: %s", vmt_session_error(s));
    else if (!stop || stop->reason == 0)
        snprintf(buf, len, "stopped on request (signal)");
    else if (stop->reason == VMT_STOP_HALT && st->guest_done)
        snprintf(buf, len, "the guest finished");
    else
        snprintf(buf, len, "guest stopped: %s%s%s", vmt_stop_reason_name(stop->reason),
                 stop->message[0] ? ": " : "", stop->message);
    return buf;
}

int cli_run(const vmtrap_options *o, const char *argv0)
{
    (void)argv0;
    run_ctx r;
    memset(&r, 0, sizeof r);
    r.opts = o;
    r.log.out = stdout;
    r.log.json = o->json;
    r.log.quiet = o->quiet;
    for (size_t i = 0; i < CLI_MAX_HOOKS; i++)
        r.guest_counts[i] = -1;
    int demo = o->command == CLI_CMD_DEMO;
    if (demo) {
        r.nhooks = sizeof demo_hooks / sizeof demo_hooks[0];
        for (size_t i = 0; i < r.nhooks; i++)
            r.hooks[i] = demo_hooks[i];
    } else {
        r.nhooks = o->nhooks;
        for (size_t i = 0; i < r.nhooks; i++)
            r.hooks[i] = o->hooks[i];
    }

    /* The image. */
    char pathbuf[PATH_MAX + 64];
    const char *guest = o->guest;
    char realbuf[PATH_MAX];
    if (!guest && demo) {
        guest = find_workload(pathbuf, sizeof pathbuf);
        if (guest && realpath(guest, realbuf))
            guest = realbuf;
    }
    if (!guest)
        return fail_line("%s%s", "cannot find the bundled workload guest (workload.elf); build the guests or "
                                 "give --guest IMAGE",
                         "");
    if (!file_exists(guest))
        return fail_line("guest image '%s': %s", guest, "no such readable file");
    uint64_t ram = (o->ram_mb ? o->ram_mb : DEFAULT_RAM_MB) << 20;
    char why[512] = "";
    vmt_image *img = NULL;
    if (vmt_image_load_elf(guest, ram, &img, why, sizeof why) != VMT_OK)
        return fail_line("guest image '%s': %s", guest, why);
    r.img = img;
    r.guest_path = guest;

    /* Symbols first: an unknown one, or one that is not code (a data
     * object, outside every executable segment), is a usage error before
     * anything runs. */
    for (size_t i = 0; i < r.nhooks; i++) {
        vmt_va va;
        vmt_status cs = vmt_image_code_symbol(img, r.hooks[i], &va, why, sizeof why);
        if (cs == VMT_E_NOTFOUND) {
            vmt_image_destroy(img);
            return fail_line("unknown symbol '%s' in %s", r.hooks[i], guest);
        }
        if (cs != VMT_OK) {
            vmt_image_destroy(img);
            return fail_line("--hook %s: %s", r.hooks[i], why);
        }
    }

    /* --set: each variable must be a symbol of 1, 2, 4 or 8 bytes in a loaded segment. */
    uint64_t set_pa[CLI_MAX_SETS];
    unsigned set_size[CLI_MAX_SETS];
    for (size_t i = 0; i < o->nsets; i++) {
        vmt_va va;
        uint64_t size = 0;
        if (vmt_image_symbol(img, o->sets[i].symbol, &va, &size) != VMT_OK) {
            vmt_image_destroy(img);
            return fail_line("--set: unknown symbol '%s' in %s", o->sets[i].symbol, guest);
        }
        if ((size != 1 && size != 2 && size != 4 && size != 8) ||
            (size < 8 && o->sets[i].value >> (8 * size)) ||
            cli_elf_va_to_pa(guest, va, (size_t)size, &set_pa[i]) != 0 || set_pa[i] + size > ram) {
            vmt_image_destroy(img);
            return fail_line("--set %s: not a 1/2/4/8-byte variable in guest RAM, or the value does not fit%s",
                             o->sets[i].symbol, "");
        }
        set_size[i] = (unsigned)size;
    }

    /* --breakpoints debug: x86 has 4 debug address registers (DR0-DR3);
     * more hooked addresses is a usage error before a driver is made
     * (checked again against the driver's count once it exists). */
    if (o->controller == VMT_BPM_CTL_DEBUG && o->overflow == VMT_BPM_CTL_AUTO &&
        hooks_over_limit(&r, img, 4, why, sizeof why)) {
        vmt_image_destroy(img);
        return fail_line("%s%s", why, "");
    }

    const char *pick_reason = "";
    driver_kind dk = pick_driver(o, &pick_reason);
    const char *dname = dk == DRV_EMU ? "emu" : "kvm";
    if (!driver_built(dk)) {
        vmt_image_destroy(img);
        return fail_line("unsupported driver '%s': %s", dname, "not built into this vmtrap");
    }
    vmt_machine_config mc;
    memset(&mc, 0, sizeof mc);
    mc.ram_size = ram;
    mc.vcpus = 1;
    mc.image = img;
    mc.serial = on_serial;
    mc.serial_ctx = &r;
    vmt_driver *drv = NULL;
    if (create_driver(dk, &mc, &drv, why, sizeof why) != VMT_OK) {
        vmt_image_destroy(img);
        return fail_line("driver '%s' unavailable: %s", dname, why);
    }
    for (size_t i = 0; i < o->nsets; i++) {
        uint64_t v = o->sets[i].value; /* little-endian: the low set_size bytes */
        if (vmt_drv_write_phys(drv, set_pa[i], &v, set_size[i]) != VMT_OK) {
            fail_line("--set %s: %s", o->sets[i].symbol, vmt_driver_error(drv));
            vmt_driver_destroy(drv);
            vmt_image_destroy(img);
            return CLI_EXIT_FAIL;
        }
    }
    vmt_session *s = NULL;
    if (vmt_session_create(drv, NULL, &s) != VMT_OK) {
        vmt_image_destroy(img);
        return fail_line("%s%s", "cannot create the session", "");
    }
    int rc = CLI_EXIT_FAIL;
    vmt_monitor_config mcfg = { .controller = o->controller };
    if (vmt_monitor_create_ex(s, img, &mcfg, &r.mon, why, sizeof why) != VMT_OK) {
        fail_line("monitor: %s%s", why, "");
        rc = CLI_EXIT_USAGE; /* e.g. --breakpoints asks for a mechanism the driver lacks */
        goto out;
    }
    vmt_monitor_on_page_event(r.mon, on_page_event, &r);
    vmt_monitor_on_ucall(r.mon, on_ucall, &r);
    if (o->trace)
        vmt_monitor_on_event(r.mon, on_trace, &r);
    unsigned dr_limit = vmt_monitor_breakpoint_limit(r.mon);
    if (dr_limit && hooks_over_limit(&r, img, dr_limit, why, sizeof why)) {
        if (o->overflow == VMT_BPM_CTL_AUTO) {
            fail_line("%s%s", why, "");
            rc = CLI_EXIT_USAGE;
            goto out;
        }
        /* --overflow: every hook on the other mechanism, said first. */
        vmt_monitor_destroy(r.mon);
        r.mon = NULL;
        mcfg.controller = o->overflow;
        char why2[512];
        if (vmt_monitor_create_ex(s, img, &mcfg, &r.mon, why2, sizeof why2) != VMT_OK) {
            fail_line("--overflow: %s%s", why2, "");
            rc = CLI_EXIT_USAGE;
            goto out;
        }
        vmt_monitor_on_page_event(r.mon, on_page_event, &r);
        vmt_monitor_on_ucall(r.mon, on_ucall, &r);
        if (o->trace)
            vmt_monitor_on_event(r.mon, on_trace, &r);
        char note[700];
        snprintf(note, sizeof note, "the hooks do not fit the debug registers (%s); --overflow: ALL hooks use %s "
                 "breakpoints instead", why, vmt_bpm_controller_name(o->overflow));
        cli_log_note(&r.log, "breakpoints", note);
    }
    /* The demo reports fd and pid returns when the mechanism has room for
     * the extra return breakpoints (debug registers: 4 on x86). */
    unsigned limit = vmt_monitor_breakpoint_limit(r.mon);
    int demo_returns = demo && (limit == 0 || limit >= r.nhooks + 2);
    if (demo && !demo_returns) {
        char msg[200];
        snprintf(msg, sizeof msg,
                 "return values not hooked: the %u breakpoint addresses of this mechanism are taken by the %zu entry hooks",
                 limit, r.nhooks);
        cli_log_note(&r.log, "demo", msg);
    }
    for (size_t i = 0; i < r.nhooks; i++) {
        if (vmt_monitor_hook(r.mon, r.hooks[i], on_hit, &r) != VMT_OK) {
            fail_line("hook '%s': %s", r.hooks[i], vmt_monitor_error(r.mon));
            rc = CLI_EXIT_USAGE;
            goto out;
        }
        int want_return = (o->returns && (!o->return_list || in_list(o->return_list, r.hooks[i]))) ||
                          (demo_returns && (strcmp(r.hooks[i], "svc_open") == 0 || strcmp(r.hooks[i], "svc_spawn") == 0));
        if (want_return && vmt_monitor_hook_return(r.mon, r.hooks[i], on_hit, &r) != VMT_OK) {
            fail_line("return hook '%s': %s", r.hooks[i], vmt_monitor_error(r.mon));
            goto out;
        }
    }
    if (o->limit_seconds > 0 && vmt_drv_set_limit(drv, o->limit_seconds, 0) != VMT_OK) {
        fail_line("--limit: %s%s", vmt_driver_error(drv), "");
        rc = CLI_EXIT_USAGE;
        goto out;
    }
    if (vmt_session_stop_on_signals(s) != VMT_OK)
        cli_log_note(&r.log, "warning", "SIGINT/SIGTERM will not end the run cleanly");

    if (demo)
        cli_log_note(&r.log, "demo",
                     "the workload guest calls svc_open(path), svc_write(fd, buf, len), svc_spawn(name) and "
                     "svc_exit(pid) in a loop while its memory manager pages out, moves, splits, merges and "
                     "re-tables the pages that hold them, then runs 16 stealth detectors. Below: 'call'/'return' "
                     "= a hidden breakpoint hit, decoded from the guest's registers and memory; 'page' = the "
                     "page-table monitor following a hooked page; 'guest'/'detect'/'serial' = the guest's own "
                     "reports; then the summary.");
    char note[PATH_MAX + 2048];
    char hooklist[768] = "";
    size_t hl = 0;
    for (size_t i = 0; i < r.nhooks && hl < sizeof hooklist; i++) {
        vmt_va va = 0;
        (void)vmt_image_symbol(img, r.hooks[i], &va, NULL);
        hl += (size_t)snprintf(hooklist + hl, sizeof hooklist - hl, "%s%s@0x%" PRIx64 "%s", i ? ", " : "", r.hooks[i],
                               va, vmt_monitor_hook_has_return(r.mon, i) ? "+ret" : "");
    }
    snprintf(note, sizeof note, "guest %s on driver %s (%s); hooks %s; %s", guest, dname, pick_reason, hooklist,
             vmt_monitor_describe(r.mon));
    cli_log_note(&r.log, demo ? "demo" : "run", note);

    double t0 = now_seconds();
    vmt_status run_status = vmt_monitor_run(r.mon);
    double t1 = now_seconds();

    cli_summary sum;
    memset(&sum, 0, sizeof sum);
    sum.driver = dname;
    sum.guest = guest;
    sum.mechanism = vmt_monitor_describe(r.mon);
    sum.wall_seconds = t1 - t0;
    sum.opts = o;
    sum.monitor = r.mon;
    sum.stats = vmt_monitor_stats_get(r.mon);
    sum.have_driver_stats = vmt_drv_stats(drv, &sum.dstats) == VMT_OK;
    char endbuf[320];
    sum.end_reason = end_reason_text(s, run_status, &r, endbuf, sizeof endbuf);
    sum.counts_match = 1;
    sum.entry_checked = r.entry_checked;
    sum.entry_mismatch = r.entry_mismatch;
    sum.controller = vmt_monitor_controller(r.mon);
    for (size_t i = 0; i < r.nhooks; i++) {
        sum.guest_counts[i] = r.guest_counts[i];
        if (r.guest_counts[i] >= 0 && (uint64_t)r.guest_counts[i] != vmt_monitor_hook_hits(r.mon, i))
            sum.counts_match = 0;
    }
    cli_log_summary(&r.log, &sum);

    const vmt_stop_info *stop = vmt_session_last_stop(s);
    int abnormal = stop && stop->reason != 0 && stop->reason != VMT_STOP_HALT &&
                   stop->reason != VMT_STOP_TIME_LIMIT && stop->reason != VMT_STOP_SHUTDOWN;
    int guest_failed = sum.stats->guest_done && sum.stats->guest_exit_code != 0;
    if (run_status != VMT_OK)
        fprintf(stderr, "vmtrap: run failed: %s\n", vmt_session_error(s));
    /* A hook refused under every root it could run under is lost: fail. */
    int hooks_lost = 0;
    for (size_t i = 0; i < r.nhooks; i++) {
        vmt_hook_status hs;
        hooks_lost |= vmt_monitor_hook_status(r.mon, i, &hs) == VMT_OK && hs.state == VMT_HOOK_REFUSED;
    }
    rc = (run_status == VMT_OK && !abnormal && !guest_failed && !r.assert_failed && sum.counts_match &&
          r.entry_mismatch == 0 && sum.stats->errors == 0 && !hooks_lost)
             ? CLI_EXIT_OK
             : CLI_EXIT_FAIL;
out:
    cli_decoder_close(r.dec);
    vmt_monitor_destroy(r.mon);
    vmt_session_destroy(s);
    vmt_image_destroy(img);
    return rc;
}
