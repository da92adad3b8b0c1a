/*
 * tools/resume_cmd.c — `vmtrap run --snapshot FILE`: resume a machine from
 * a snapshot (a QEMU ELF core or a vmtrap snapshot) on the emulator with
 * the PC platform, print its console lines as `serial` events, every
 * reconstruction as a `note`, and a summary at the end.
 *
 *   vmtrap run --snapshot FILE [--state SIDECAR.json] [--instructions N]
 *              [--limit SECONDS] [--runs N] [--save-at N --save OUT.vmts]
 *              [--json] [--quiet]
 *
 * --inject-pf[=N] (with --hook): an argument found paged out gets a #PF
 * injected at the hit (the monitor's vmt_hit_inject_pf: the guest's own
 * handler pages it in, the same call hits again and is reported once,
 * decoded, with "after K injected #PF"); at most N (default 2) #PFs per
 * page per run, after which it stays "paged out" with the reason.
 * --watch-pages WHO:VA[,VA|START-END|stack|heap...] (tools/watch_pages.c): the
 * page-table monitor on user pages of the process WHO (pid or comm) under
 * its own root; every page-in/page-out/remap is printed, refusals too.
 * --runs N: N runs from the same starting point, the machine restored
 * (dirty pages, vCPU, devices, clock) between them; each run's console is
 * hashed and the summary says whether all runs printed the same. With
 * --hook (a snapshot fuzzer's loop: restore, run hooked, restore) the
 * monitor is taken down before each restore (its breakpoints and watches
 * describe the memory the run changed) and set up again on the restored
 * machine; every run must also make the same hits (hook, entry or return,
 * registers), else the runs differ.
 * --save-at N --save OUT: after N instructions of the first run, save a
 * vmtrap snapshot and go on (with --hook too: the file holds the guest's own
 * memory, never a breakpoint).
 * Exit codes: 0 the run(s) ended at a bound (instructions, time), 1 the
 * guest stopped otherwise or the runs differ, 2 usage or load errors.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "cli.h"
#include "vmtrap/image.h"
#include "vmtrap/os.h"
#include "vmtrap/resume.h"
#include "vmtrap/session.h"

typedef struct resume_opts {
    const char *snapshot, *state, *save;
    uint64_t instructions, save_at;
    double limit;
    unsigned runs;
    int json, quiet;
    int returns;              /* --returns: also the hooked functions' returns */
    unsigned inject_pf;       /* --inject-pf[=N]: #PF tries per page for not-present arguments (0: off) */
    size_t nhooks;
    char *hooks[CLI_MAX_HOOKS]; /* point into hook_buf */
    char hook_buf[1024];
    cli_watch watch;          /* --watch-pages WHO:VA[,...] (tools/watch_pages.c) */
} resume_opts;

typedef struct resume_ctx {
    cli_log log;
    cli_decoder *dec;
    int inject_pf;   /* not-present arguments ask for a #PF (vmt_hit_inject_pf) */
    uint64_t lines;
    uint64_t hash;   /* FNV-1a over this run's console lines */
    uint64_t hit_hash; /* FNV-1a over this run's hits (hook, entry/return, registers) */
    cli_watch *watch; /* --watch-pages, or NULL */
    vmt_os *task_os;  /* where --watch-pages finds its processes */
} resume_ctx;

static uint64_t fnv_u64(uint64_t h, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        h = (h ^ ((v >> (8 * i)) & 0xff)) * 0x100000001b3ull;
    return h;
}

static void usage(FILE *f)
{
    fputs("usage: vmtrap run --snapshot FILE [--state SIDECAR.json] [--instructions N] [--limit SECONDS]\n"
          "                  [--runs N] [--save-at N --save OUT.vmts] [--hook SYMBOL[,SYMBOL...]] [--returns] [--inject-pf[=N]] [--json] [--quiet]\n"
          "                  [--watch-pages PID|COMM:VA[,VA|START-END|stack|heap...]]\n",
          f);
}

static int parse(int argc, char **argv, resume_opts *o)
{
    memset(o, 0, sizeof *o);
    o->runs = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t n = 0;
        if (strcmp(a, "run") == 0)
            continue;
        if (strcmp(a, "--json") == 0) {
            o->json = 1;
        } else if (strcmp(a, "--quiet") == 0) {
            o->quiet = 1;
        } else if (strcmp(a, "--returns") == 0) {
            o->returns = 1;
        } else if (strcmp(a, "--inject-pf") == 0) {
            o->inject_pf = 2;
        } else if (strncmp(a, "--inject-pf=", 12) == 0) {
            if (cli_parse_u64(a + 12, &n) || n < 1 || n > 16) {
                fprintf(stderr, "vmtrap: --inject-pf=N needs 1..16 tries per page, not '%s'\n", a + 12);
                return -1;
            }
            o->inject_pf = (unsigned)n;
        } else if (strcmp(a, "--snapshot") == 0 && val) {
            o->snapshot = argv[++i];
        } else if (strcmp(a, "--state") == 0 && val) {
            o->state = argv[++i];
        } else if (strcmp(a, "--hook") == 0 && val) {
            size_t used = strlen(o->hook_buf);
            if (used + strlen(val) + 2 > sizeof o->hook_buf) {
                fprintf(stderr, "vmtrap: --hook: too many symbols\n");
                return -1;
            }
            char *at = o->hook_buf + used + (used ? 1 : 0);
            memcpy(at, val, strlen(val) + 1);
            for (char *tok = strtok(at, ","); tok; tok = strtok(NULL, ",")) {
                if (o->nhooks == CLI_MAX_HOOKS) {
                    fprintf(stderr, "vmtrap: --hook: at most %d symbols\n", CLI_MAX_HOOKS);
                    return -1;
                }
                o->hooks[o->nhooks++] = tok;
            }
            i++;
        } else if (strcmp(a, "--watch-pages") == 0 && val) {
            if (cli_watch_parse(&o->watch, val))
                return -1;
            i++;
        } else if (strcmp(a, "--save") == 0 && val) {
            o->save = argv[++i];
        } else if (strcmp(a, "--instructions") == 0 && !cli_parse_u64(val, &o->instructions)) {
            i++;
        } else if (strcmp(a, "--save-at") == 0 && !cli_parse_u64(val, &o->save_at) && o->save_at) {
            i++;
        } else if (strcmp(a, "--runs") == 0 && !cli_parse_u64(val, &n) && n >= 1 && n <= 1000) {
            o->runs = (unsigned)n;
            i++;
        } else if (strcmp(a, "--limit") == 0 && val) {
            char *end = NULL;
            o->limit = strtod(val, &end);
            if (*end || o->limit < 0) {
                fprintf(stderr, "vmtrap: --limit needs seconds >= 0, not '%s'\n", val);
                return -1;
            }
            i++;
        } else {
            fprintf(stderr, "vmtrap: run --snapshot: bad or incomplete option '%s'\n", a);
            return -1;
        }
    }
    if (!o->snapshot) {
        fprintf(stderr, "vmtrap: run --snapshot needs a FILE\n");
        return -1;
    }
    if (!!o->save != !!o->save_at) {
        fprintf(stderr, "vmtrap: --save-at N and --save FILE go together\n");
        return -1;
    }
    if (!o->instructions && o->limit == 0) {
        fprintf(stderr, "vmtrap: run --snapshot needs a bound: --instructions N or --limit SECONDS\n");
        return -1;
    }
    return 0;
}

static void on_serial(void *ctx, const char *line)
{
    resume_ctx *c = ctx;
    c->lines++;
    for (const char *p = line; *p; p++)
        c->hash = (c->hash ^ (uint8_t)*p) * 0x100000001b3ull;
    c->hash = (c->hash ^ '\n') * 0x100000001b3ull;
    cli_log_serial(&c->log, line);
}

static void on_note(void *ctx, const char *line)
{
    resume_ctx *c = ctx;
    cli_log_note(&c->log, "reconstructed", line);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Device accesses no model claimed (reads gave all-ones): worth knowing
 * when a guest misbehaves. */
static void list_unknown(resume_ctx *c, vmt_resume *r, size_t *shown)
{
    vmt_platform *p = vmt_resume_platform(r);
    for (size_t i = *shown; i < vmt_platform_unknown_count(p); i++) {
        vmt_platform_unknown u;
        if (vmt_platform_unknown_get(p, i, &u))
            break;
        char msg[200];
        snprintf(msg, sizeof msg, "%s %s 0x%" PRIx64 " size %u at guest %.6f s: no device model (reads all-ones)",
                 u.write ? "write to" : "read of", u.space == VMT_PLATFORM_PIO ? "port" : "MMIO", u.addr, u.size,
                 (double)u.now_ns / 1e9);
        cli_log_note(&c->log, "unknown-device", msg);
    }
    *shown = vmt_platform_unknown_count(p);
}

static void summary(resume_ctx *c, const resume_opts *o, unsigned run, uint64_t insns, uint64_t guest_ns,
                    double wall, const vmt_stop_info *stop, vmt_resume *r)
{
    size_t notes = vmt_resume_note_count(r);
    if (c->log.json) {
        json_object *j = json_object_new_object();
        json_object_object_add(j, "event", json_object_new_string("summary"));
        json_object_object_add(j, "snapshot", json_object_new_string(o->snapshot));
        json_object_object_add(j, "run", json_object_new_int((int)run));
        json_object_object_add(j, "instructions", json_object_new_int64((int64_t)insns));
        json_object_object_add(j, "guest_ns", json_object_new_int64((int64_t)guest_ns));
        json_object_object_add(j, "wall_seconds", json_object_new_double(wall));
        json_object_object_add(j, "serial_lines", json_object_new_int64((int64_t)c->lines));
        char h[24];
        snprintf(h, sizeof h, "%016" PRIx64, c->hash);
        json_object_object_add(j, "serial_hash", json_object_new_string(h));
        json_object_object_add(j, "stop", json_object_new_string(vmt_stop_reason_name(stop->reason)));
        json_object_object_add(j, "stop_message", json_object_new_string(stop->message));
        json_object *list = json_object_new_array();
        for (size_t i = 0; i < notes; i++)
            json_object_array_add(list, json_object_new_string(vmt_resume_note_at(r, i)));
        json_object_object_add(j, "reconstructions", list);
        fprintf(c->log.out, "%s\n", json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN));
        json_object_put(j);
    } else {
        fprintf(c->log.out,
                "summary: run %u: %" PRIu64 " instructions, guest time %.3f s, wall %.2f s (%.1f M instructions/s), "
                "%" PRIu64 " console lines (hash %016" PRIx64 "), %zu reconstructions (listed above), ended: %s%s%s\n",
                run, insns, (double)guest_ns / 1e9, wall, wall > 0 ? (double)insns / wall / 1e6 : 0.0, c->lines, c->hash,
                notes, vmt_stop_reason_name(stop->reason), stop->message[0] ? ": " : "", stop->message);
    }
    fflush(c->log.out);
}

/* The first argument (or shown field) the decoder found paged out. */
static int first_not_present(const cli_call *call, vmt_va *va)
{
    for (unsigned i = 0; i < call->nargs; i++) {
        const cli_arg *a = &call->args[i];
        if (a->read_status == VMT_E_NOT_PRESENT) {
            *va = a->fault_va;
            return 1;
        }
        for (unsigned f = 0; f < a->nfields && f < CLI_MAX_FIELDS; f++)
            if (a->fields[f].read_status == VMT_E_NOT_PRESENT) {
                *va = a->fields[f].fault_va;
                return 1;
            }
    }
    return 0;
}

static vmt_status on_hit(const vmt_hit *hit, void *user)
{
    resume_ctx *c = user;
    cli_call call;
    cli_decode_hit(c->dec, hit, &call);
    vmt_va fault = 0;
    if (!hit->is_return && first_not_present(&call, &fault)) {
        if (c->inject_pf &&
            vmt_hit_inject_pf(hit, fault, call.pf_refused, sizeof call.pf_refused) == VMT_OK)
            return VMT_OK; /* reported when the same call hits again, paged in */
    }
    call.pf_injected = hit->pf_retry;
    uint64_t h = fnv_u64(c->hit_hash, hit->hook_index);
    h = fnv_u64(h, (uint64_t)hit->is_return);
    const vmt_regs *g = &hit->regs;
    const uint64_t regs[] = { g->rip, g->rsp, g->rax, g->rdi, g->rsi, g->rdx, g->rcx, g->r8, g->r9, g->cr3 };
    for (size_t i = 0; i < sizeof regs / sizeof regs[0]; i++)
        h = fnv_u64(h, regs[i]);
    c->hit_hash = h;
    cli_log_call(&c->log, &call);
    return VMT_OK;
}

static void on_page(const vmt_ptm_event *ev, const char *symbol, void *user)
{
    (void)symbol;
    resume_ctx *c = user;
    if (c->watch)
        (void)cli_watch_on_event(c->watch, ev);
}

/* A monitor on the session with every --hook (and --returns) armed, and
 * the --watch-pages watches in its page-table monitor (its view). */
static int setup_monitor(resume_ctx *c, const resume_opts *o, vmt_os *os, vmt_session *s, vmt_image *img,
                         vmt_monitor **out)
{
    char why[512] = "";
    vmt_monitor_config mcfg = { .inject_pf_tries = o->inject_pf };
    if (vmt_monitor_create_ex(s, img, &mcfg, out, why, sizeof why) != VMT_OK) {
        fprintf(stderr, "vmtrap: monitor: %s\n", why);
        return CLI_EXIT_USAGE;
    }
    vmt_monitor *m = *out;
    for (size_t i = 0; i < o->nhooks; i++) {
        if (vmt_monitor_hook(m, o->hooks[i], on_hit, c) != VMT_OK) {
            fprintf(stderr, "vmtrap: hook '%s': %s\n", o->hooks[i], vmt_monitor_error(m));
            return CLI_EXIT_USAGE;
        }
        /* --returns: a function BTF says returns nothing (do_exit never
         * returns) gets no return hook. */
        vmt_proto p;
        if (o->returns && !(vmt_os_proto(os, o->hooks[i], &p) == VMT_OK && !p.has_ret) &&
            vmt_monitor_hook_return(m, o->hooks[i], on_hit, c) != VMT_OK) {
            fprintf(stderr, "vmtrap: return hook '%s': %s\n", o->hooks[i], vmt_monitor_error(m));
            return CLI_EXIT_USAGE;
        }
    }
    if (c->watch) {
        vmt_monitor_on_page_event(m, on_page, c);
        if (cli_watch_arm(c->watch, c->task_os, vmt_monitor_ptm(m), vmt_monitor_view(m)) == 0) {
            fprintf(stderr, "vmtrap: --watch-pages: no page could be watched (see the refused lines)\n");
            return CLI_EXIT_FAIL;
        }
    }
    return CLI_EXIT_OK;
}

/* The monitor's loop until `instructions` more retired (0: no bound) or
 * `seconds` of wall time (0: none) or the guest stops. */
static vmt_status run_bounded(vmt_driver *drv, vmt_monitor *m, double seconds, uint64_t instructions)
{
    vmt_status st = vmt_drv_set_limit(drv, seconds, instructions);
    if (st) {
        fprintf(stderr, "vmtrap: %s\n", vmt_driver_error(drv));
        return st;
    }
    return vmt_monitor_run(m);
}

/* One run with hidden breakpoints on kernel functions named by kallsyms
 * (the OS layer over the snapshot's memory), arguments decoded from BTF,
 * and/or the page-table monitor on user pages (--watch-pages) through the
 * monitor's own ptm in its view. */
static int run_hooked(resume_ctx *c, resume_opts *o, vmt_resume *r)
{
    char why[512] = "";
    vmt_os *os = NULL, *live = NULL;
    vmt_driver *ro = NULL;
    vmt_os_config oc;
    memset(&oc, 0, sizeof oc);
    if (vmt_os_open_snapshot(vmt_resume_snapshot(r), &oc, &os, &ro, why, sizeof why) != VMT_OK) {
        fprintf(stderr, "vmtrap: --hook needs the guest's kernel symbols: %s\n", why);
        return CLI_EXIT_USAGE;
    }
    size_t nr = 0;
    const vmt_ram_range *rr = vmt_snapshot_ram_ranges(vmt_resume_snapshot(r), &nr);
    vmt_image *img = NULL;
    vmt_session *s = NULL;
    vmt_monitor *m = NULL;
    int rc = CLI_EXIT_USAGE;
    /* The monitor needs an image; with --watch-pages alone it holds _text and no hook is placed. */
    static const char *const no_hooks[] = { "_text" };
    if (vmt_os_symbols_image(os, o->nhooks ? (const char *const *)o->hooks : no_hooks, o->nhooks ? o->nhooks : 1,
                             rr[0].start + rr[0].size, &img, why, sizeof why) != VMT_OK) {
        fprintf(stderr, "vmtrap: --hook: %s\n", why);
        goto out;
    }
    /* The decoder reads the running machine (current task, arguments):
     * an OS handle over the live driver. */
    vmt_driver *drv = vmt_resume_driver(r);
    if (vmt_os_open(drv, &oc, &live, why, sizeof why) != VMT_OK)
        cli_log_note(&c->log, "decode", why);
    if (cli_decoder_open(NULL, live ? live : os, &c->dec, why, sizeof why) != 0)
        cli_log_note(&c->log, "decode", why);
    vmt_resume_release_driver(r);
    if (vmt_session_create(drv, NULL, &s) != VMT_OK) {
        vmt_driver_destroy(drv);
        fprintf(stderr, "vmtrap: cannot create the session\n");
        goto out;
    }
    c->inject_pf = o->inject_pf != 0;
    if (o->watch.ngroups) {
        c->watch = &o->watch;
        c->watch->log = &c->log;
        c->task_os = live ? live : os;
    }
    uint64_t first_serial = 0, first_hits = 0;
    uint64_t *hits1 = calloc(o->nhooks ? o->nhooks : 1, sizeof *hits1);
    if (!hits1) {
        fprintf(stderr, "vmtrap: out of memory\n");
        goto out;
    }
    rc = CLI_EXIT_OK;
    for (unsigned run = 1; run <= o->runs && rc == CLI_EXIT_OK; run++) {
        if (run > 1) {
            /* the monitor's breakpoints and watches describe the memory this
             * run changed: take them down, restore, set them up again */
            vmt_monitor_destroy(m);
            m = NULL;
            vmt_snapshot_run_stats rs;
            if (vmt_resume_restore(r, &rs) != VMT_OK) {
                fprintf(stderr, "vmtrap: %s\n", vmt_resume_error(r));
                rc = CLI_EXIT_FAIL;
                break;
            }
            vmt_session_flush_frames(s);
            vmt_session_flush_v2p(s);
            char msg[160];
            snprintf(msg, sizeof msg, "run %u: restored %" PRIu64 " dirty pages in %.3f ms", run, rs.last_dirty_pages,
                     (double)rs.last_ns / 1e6);
            cli_log_note(&c->log, "restore", msg);
        }
        c->lines = 0;
        c->hash = 0xcbf29ce484222325ull;
        c->hit_hash = 0xcbf29ce484222325ull;
        if ((rc = setup_monitor(c, o, os, s, img, &m)) != CLI_EXIT_OK)
            break;
        if (run == 1)
            cli_log_note(&c->log, "run", vmt_monitor_describe(m));
        vmt_driver_stats d0, d1;
        vmt_drv_stats(drv, &d0);
        uint64_t ns0 = vmt_resume_now_ns(r);
        double t0 = now_s();
        vmt_status st;
        bool save_here = run == 1 && o->save_at && (!o->instructions || o->save_at < o->instructions);
        if (save_here) {
            st = run_bounded(drv, m, o->limit, o->save_at);
            const vmt_stop_info *ls = vmt_session_last_stop(s);
            if (st == VMT_OK && ls && ls->reason == VMT_STOP_INSN_LIMIT) {
                if (vmt_resume_save(r, o->save) != VMT_OK) {
                    fprintf(stderr, "vmtrap: %s\n", vmt_resume_error(r));
                    rc = CLI_EXIT_FAIL;
                    break;
                }
                cli_log_note(&c->log, "saved", o->save);
                double left = o->limit > 0 ? o->limit - (now_s() - t0) : 0;
                if (o->limit == 0 || left > 0)
                    st = run_bounded(drv, m, o->limit > 0 ? left : 0,
                                     o->instructions ? o->instructions - o->save_at : 0);
            }
        } else {
            st = run_bounded(drv, m, o->limit, o->instructions);
        }
        double wall = now_s() - t0;
        vmt_drv_stats(drv, &d1);
        vmt_platform_serial_flush(vmt_resume_platform(r));
        vmt_stop_info stop = { 0 };
        const vmt_stop_info *ls = vmt_session_last_stop(s);
        if (ls)
            stop = *ls;
        if (st != VMT_OK)
            snprintf(stop.message, sizeof stop.message, "the run failed: %s", vmt_session_error(s));
        bool same_hits = true;
        for (size_t i = 0; i < o->nhooks; i++) {
            char msg[160];
            uint64_t n = vmt_monitor_hook_hits(m, i);
            if (vmt_monitor_hook_has_return(m, i))
                snprintf(msg, sizeof msg, "%s: %" PRIu64 " hits, %" PRIu64 " returns", o->hooks[i], n,
                         vmt_monitor_hook_returns(m, i));
            else
                snprintf(msg, sizeof msg, "%s: %" PRIu64 " hits", o->hooks[i], n);
            cli_log_note(&c->log, "hooks", msg);
            if (run == 1)
                hits1[i] = n;
            else
                same_hits &= hits1[i] == n;
        }
        if (o->inject_pf) {
            const vmt_monitor_stats *ms = vmt_monitor_stats_get(m);
            char msg[160];
            snprintf(msg, sizeof msg,
                     "%" PRIu64 " #PF injected for not-present arguments, %" PRIu64 " refused (%u tries per page)",
                     ms->pf_injected, ms->pf_refused, o->inject_pf);
            cli_log_note(&c->log, "inject-pf", msg);
        }
        if (c->watch)
            cli_watch_summary(c->watch, vmt_monitor_ptm(m));
        summary(c, o, run, d1.instructions - d0.instructions, vmt_resume_now_ns(r) - ns0, wall, &stop, r);
        if (st != VMT_OK || (stop.reason != VMT_STOP_INSN_LIMIT && stop.reason != VMT_STOP_TIME_LIMIT))
            rc = CLI_EXIT_FAIL;
        if (run == 1) {
            first_serial = c->hash;
            first_hits = c->hit_hash;
        } else if (c->hash != first_serial || c->hit_hash != first_hits || !same_hits) {
            cli_log_note(&c->log, "runs",
                         c->hash != first_serial ? "this run's console differs from run 1"
                                                 : "this run's hits differ from run 1");
            rc = CLI_EXIT_FAIL;
        }
    }
    if (o->runs > 1 && rc == CLI_EXIT_OK) {
        char msg[96];
        snprintf(msg, sizeof msg, "%u runs printed identical consoles and made identical hits", o->runs);
        cli_log_note(&c->log, "runs", msg);
    }
    free(hits1);
out:
    vmt_monitor_destroy(m);
    vmt_session_destroy(s);
    vmt_image_destroy(img);
    cli_decoder_close(c->dec);
    c->dec = NULL;
    vmt_os_close(live);
    vmt_os_close(os);
    vmt_driver_destroy(ro);
    return rc;
}

int cli_resume_main(int argc, char **argv)
{
    resume_opts o;
    if (parse(argc, argv, &o)) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    resume_ctx c;
    memset(&c, 0, sizeof c);
    c.log.out = stdout;
    c.log.json = o.json;
    c.log.quiet = o.quiet;
    c.hash = 0xcbf29ce484222325ull;
    vmt_resume_config rc = { .sidecar = o.state, .serial = on_serial, .serial_ctx = &c, .note = on_note, .note_ctx = &c };
    vmt_resume *r = NULL;
    char why[512] = "";
    if (vmt_resume_open(o.snapshot, &rc, &r, why, sizeof why) != VMT_OK) {
        fprintf(stderr, "vmtrap: %s\n", why);
        return CLI_EXIT_USAGE;
    }
    if (o.nhooks || o.watch.ngroups) {
        int hrc = run_hooked(&c, &o, r);
        vmt_resume_close(r);
        return hrc;
    }
    int rc_exit = CLI_EXIT_OK;
    uint64_t first_hash = 0;
    size_t unknown_shown = 0;
    for (unsigned run = 1; run <= o.runs; run++) {
        if (run > 1) {
            vmt_snapshot_run_stats rs;
            if (vmt_resume_restore(r, &rs) != VMT_OK) {
                fprintf(stderr, "vmtrap: %s\n", vmt_resume_error(r));
                rc_exit = CLI_EXIT_FAIL;
                break;
            }
            char msg[160];
            snprintf(msg, sizeof msg, "run %u: restored %" PRIu64 " dirty pages in %.3f ms", run, rs.last_dirty_pages,
                     (double)rs.last_ns / 1e6);
            cli_log_note(&c.log, "restore", msg);
        }
        c.lines = 0;
        c.hash = 0xcbf29ce484222325ull;
        uint64_t ns0 = vmt_resume_now_ns(r), insns = 0;
        double t0 = now_s();
        vmt_stop_info stop;
        vmt_status st = VMT_OK;
        if (run == 1 && o.save_at && (!o.instructions || o.save_at < o.instructions)) {
            st = vmt_resume_run(r, o.save_at, o.limit, &stop, &insns);
            if (!st && stop.reason == VMT_STOP_INSN_LIMIT) {
                if (vmt_resume_save(r, o.save) != VMT_OK) {
                    fprintf(stderr, "vmtrap: %s\n", vmt_resume_error(r));
                    rc_exit = CLI_EXIT_FAIL;
                    break;
                }
                cli_log_note(&c.log, "saved", o.save);
                double left = o.limit > 0 ? o.limit - (now_s() - t0) : 0;
                if (o.limit == 0 || left > 0)
                    st = vmt_resume_run(r, o.instructions ? o.instructions - o.save_at : 0, o.limit > 0 ? left : 0,
                                        &stop, &insns);
            }
        } else {
            st = vmt_resume_run(r, o.instructions, o.limit, &stop, &insns);
        }
        double wall = now_s() - t0;
        if (st) {
            fprintf(stderr, "vmtrap: %s\n", vmt_resume_error(r));
            rc_exit = CLI_EXIT_FAIL;
            break;
        }
        vmt_platform_serial_flush(vmt_resume_platform(r));
        list_unknown(&c, r, &unknown_shown);
        summary(&c, &o, run, insns, vmt_resume_now_ns(r) - ns0, wall, &stop, r);
        if (stop.reason != VMT_STOP_INSN_LIMIT && stop.reason != VMT_STOP_TIME_LIMIT)
            rc_exit = CLI_EXIT_FAIL;
        if (run == 1)
            first_hash = c.hash;
        else if (c.hash != first_hash) {
            cli_log_note(&c.log, "runs", "this run's console differs from run 1");
            rc_exit = CLI_EXIT_FAIL;
        }
    }
    if (o.runs > 1 && rc_exit == CLI_EXIT_OK) {
        char msg[96];
        snprintf(msg, sizeof msg, "%u runs printed identical consoles", o.runs);
        cli_log_note(&c.log, "runs", msg);
    }
    vmt_resume_close(r);
    return rc_exit;
}
