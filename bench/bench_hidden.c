/*
 * bench/bench_hidden.c — what a hidden breakpoint costs, per driver, in
 * units of that driver's bare exit round trip (issue 6's benchmark).
 *
 * For each CPU-running driver built (emu; kvm when /dev/kvm works), in one
 * run, with the guests of tests/bpm/hidden_guest.h:
 *   - bare exit: a guest `out` loop, each I/O event answered CONTINUE by a
 *     trivial session handler (minus the same loop with a nop);
 *   - hidden hit: the guest calls a function with a shadow-INT3 breakpoint
 *     (breakpoint manager, SHADOW controller, breakpoint view active);
 *   - hidden read: the guest loads from the breakpointed page (served from
 *     the unaltered frame);
 *   - monitored PT write: the guest stores the (unchanged) PD entry of a VA
 *     the page-table monitor watches;
 *   - hidden write: the guest stores into the breakpointed page (the manager
 *     steps it in view 0 and rebuilds the shadow: two exits by design, since
 *     one instruction may store more than the event reports).
 * Each monitored cost is (monitored run - the same guest unmonitored) / N,
 * divided by the bare exit; driver exits per operation come from the
 * driver's stats (all / handled internally). Times are this thread's CPU
 * time, and every number is the best of REPS runs (the machine is shared:
 * noise only adds time). The targets are
 * issue 6's: 1.2 when the driver emulates the displaced instruction
 * (VMT_CAP_EMULATE on EMULATE-capable paths), 2.0 at most otherwise.
 *
 * The last line is machine-readable: RESULT <drv>_bare_us=... <drv>_hit_ratio=...
 * <drv>_read_ratio=... <drv>_ptw_ratio=... <drv>_write_ratio=... per driver run.
 *
 * Usage: bench_hidden [N] [emu|kvm] [hit|read]  (N default 20000 on emu,
 * 5000 on kvm; the third argument runs only that monitored loop, e.g. under
 * perf record, and prints nothing)
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hidden_guest.h"
#include "vmtrap/bpm.h"
#include "vmtrap/image.h"
#include "vmtrap/ptm.h"
#include "vmtrap/session.h"

enum { REPS = 5 };

typedef enum mon { MON_NONE, MON_BPM, MON_PTM } mon;

typedef struct run_ctx {
    mon mode;
    vmt_bpm *bpm;
    vmt_ptm *ptm;
    uint64_t hits, hidden, ptm_events, loop_ios;
    int done;
} run_ctx;

typedef struct result {
    double seconds;          /* guest run, start to halt */
    double exits, internal;  /* driver exits over the run */
    uint64_t hits, hidden, ptm_events, loop_ios;
} result;

/* CPU time of this thread (guest time on KVM included): on a shared
 * machine, time other processes take the CPU away does not count. */
static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die(const char *drv, const char *what, const char *msg)
{
    fprintf(stderr, "bench_hidden [%s]: %s: %s\n", drv, what, msg);
    exit(1);
}

static void ptm_sink(void *ctx, const vmt_ptm_event *ev)
{
    (void)ctx;
    (void)ev;
}

static vmt_status on_event(vmt_session *s, const vmt_event *ev, vmt_response *resp, void *user)
{
    (void)s;
    run_ctx *x = user;
    *resp = vmt_response_continue();
    if (x->mode == MON_BPM) {
        vmt_bpm_bp hits[2];
        vmt_bpm_verdict vd;
        vmt_status st = vmt_bpm_handle_event(x->bpm, ev, resp, hits, 2, &vd);
        if (st)
            return st;
        if (vd.disposition == VMT_BPM_HIT)
            x->hits++;
        if (vd.disposition == VMT_BPM_HIDDEN)
            x->hidden++;
        if (vd.disposition != VMT_BPM_NOT_OURS)
            return VMT_OK;
    } else if (x->mode == MON_PTM) {
        bool mine = false;
        vmt_status st = vmt_ptm_handle_event(x->ptm, ev, resp, ptm_sink, x, &mine);
        if (st)
            return st;
        if (mine) {
            x->ptm_events++;
            return VMT_OK;
        }
    }
    if (ev->kind == VMT_EVENT_IO && ev->u.io.port == HG_PORT_LOOP)
        x->loop_ios++;
    if (ev->kind == VMT_EVENT_IO && ev->u.io.port == HG_PORT_DONE)
        x->done = 1;
    return VMT_OK;
}

/* One run of guest `kind` with monitor `mode`. */
static result run_once(const char *drv, hg_kind kind, mon mode, uint32_t n)
{
    char why[256];
    vmt_driver *d;
    if (hg_driver(drv, kind, n, &d, why, sizeof why))
        die(drv, "driver", why);
    vmt_session *s;
    if (vmt_session_create(d, NULL, &s))
        die(drv, "session", "cannot create");
    run_ctx x = { .mode = mode };
    vmt_addr_ctx ctx = { .va = HG_FUNC_VA, .root = vmt_boot_pt_base(HG_RAM) };
    if (mode != MON_NONE) {
        vmt_view v;
        if (vmt_drv_view_create(d, VMT_ACCESS_RWX, &v) || vmt_drv_view_switch(d, 0, v))
            die(drv, "view", vmt_driver_error(d));
        if (mode == MON_BPM) {
            vmt_bpm_config cfg = { .controller = VMT_BPM_CTL_SHADOW };
            if (vmt_bpm_create(s, &cfg, &x.bpm, why, sizeof why))
                die(drv, "bpm", why);
            vmt_bpm_bp bp = { .ctx = ctx, .view = v, .key = 1 };
            if (vmt_bpm_insert(x.bpm, &bp, NULL))
                die(drv, "bpm insert", vmt_bpm_error(x.bpm));
        } else {
            if (vmt_ptm_create(s, &x.ptm))
                die(drv, "ptm", "cannot create");
            ctx.va = HG_PT_VA;
            if (vmt_ptm_monitor(x.ptm, ctx, v, 1))
                die(drv, "ptm monitor", vmt_ptm_error(x.ptm));
        }
    }
    vmt_driver_stats st0, st1;
    vmt_drv_stats(d, &st0);
    double t0 = now_s();
    vmt_status st = vmt_session_run(s, on_event, &x);
    double t = now_s() - t0;
    if (st)
        die(drv, "run", vmt_session_error(s));
    const vmt_stop_info *stop = vmt_session_last_stop(s);
    if (!x.done || !stop || stop->reason != VMT_STOP_HALT)
        die(drv, "run", stop ? stop->message : "the guest did not finish");
    vmt_drv_stats(d, &st1);
    result r = { .seconds = t,
                 .exits = (double)(st1.exits - st0.exits),
                 .internal = (double)(st1.internal_exits - st0.internal_exits),
                 .hits = x.hits,
                 .hidden = x.hidden,
                 .ptm_events = x.ptm_events,
                 .loop_ios = x.loop_ios };
    if (x.bpm)
        vmt_bpm_destroy(x.bpm);
    if (x.ptm)
        vmt_ptm_destroy(x.ptm);
    vmt_session_destroy(s);
    return r;
}

static result best(const char *drv, hg_kind kind, mon mode, uint32_t n)
{
    result b = { .seconds = 1e30 };
    for (int i = 0; i < REPS; i++) {
        result r = run_once(drv, kind, mode, n);
        if (r.seconds < b.seconds)
            b = r;
    }
    return b;
}

static void check_count(const char *drv, const char *what, uint64_t got, uint32_t n)
{
    if (got != n) {
        char msg[128];
        snprintf(msg, sizeof msg, "%" PRIu64 " seen, %u expected", got, n);
        die(drv, what, msg);
    }
}

static void line(const char *what, double per_op, double bare, double target, const result *r, uint32_t n)
{
    double ratio = per_op / bare;
    printf("  %-34s %9.2f us  ratio %5.2f  (target %s%.1f: %s)  exits/op %5.2f (internal %4.2f)\n", what,
           per_op * 1e6, ratio, target > 1.5 ? "<= " : "", target, ratio <= target ? "met" : "MISSED",
           r->exits / n, r->internal / n);
}

static void bench_driver(const char *drv, uint32_t n, const char *profile, char *res, size_t res_len)
{
    char why[256];
    vmt_driver *probe;
    if (hg_driver(drv, HG_NOP_LOOP, 1, &probe, why, sizeof why)) {
        printf("%s: skipped (%s)\n", drv, why);
        return;
    }
    int emulate = vmt_driver_has(probe, VMT_CAP_EMULATE);
    vmt_driver_destroy(probe);
    if (profile) {
        for (int i = 0; i < REPS; i++)
            run_once(drv, strcmp(profile, "read") == 0 ? HG_READS : HG_CALLS, MON_BPM, n);
        return;
    }

    result out = best(drv, HG_OUT_LOOP, MON_NONE, n), nop = best(drv, HG_NOP_LOOP, MON_NONE, n);
    check_count(drv, "loop I/O events", out.loop_ios, n);
    result calls = best(drv, HG_CALLS, MON_NONE, n), hit = best(drv, HG_CALLS, MON_BPM, n);
    check_count(drv, "hidden hits", hit.hits, n);
    result reads = best(drv, HG_READS, MON_NONE, n), hread = best(drv, HG_READS, MON_BPM, n);
    check_count(drv, "hidden reads", hread.hidden, n);
    result writes = best(drv, HG_WRITES, MON_NONE, n), hwrite = best(drv, HG_WRITES, MON_BPM, n);
    check_count(drv, "hidden writes", hwrite.hidden, n);
    result ptw = best(drv, HG_PT_WRITES, MON_NONE, n), mptw = best(drv, HG_PT_WRITES, MON_PTM, n);
    check_count(drv, "monitored PT writes", mptw.ptm_events, n);

    double bare = (out.seconds - nop.seconds) / n;
    double t_hit = (hit.seconds - calls.seconds) / n;
    double t_read = (hread.seconds - reads.seconds) / n;
    double t_ptw = (mptw.seconds - ptw.seconds) / n;
    double t_write = (hwrite.seconds - writes.seconds) / n;
    double target = emulate ? 1.2 : 2.0;
    printf("%s: N=%u, best of %d, per operation (unmonitored guest loop subtracted); driver %s EMULATE\n", drv, n, REPS,
           emulate ? "declares" : "lacks");
    printf("  %-34s %9.2f us  ratio %5.2f  %33s exits/op %5.2f (internal %4.2f)\n", "bare exit round trip (out loop)",
           bare * 1e6, 1.0, "", out.exits / n, out.internal / n);
    line("hidden breakpoint hit (shadow INT3)", t_hit, bare, target, &hit, n);
    line("hidden read of a breakpointed page", t_read, bare, target, &hread, n);
    line("monitored page-table write", t_ptw, bare, target, &mptw, n);
    line("hidden write (stepped, rebuilt)", t_write, bare, 2.0, &hwrite, n);
    printf("  (unmonitored loops per iteration: nop %.2f us, call %.2f us, read %.2f us, PT store %.2f us, "
           "store %.2f us)\n",
           nop.seconds / n * 1e6, calls.seconds / n * 1e6, reads.seconds / n * 1e6, ptw.seconds / n * 1e6,
           writes.seconds / n * 1e6);
    size_t used = strlen(res);
    snprintf(res + used, res_len - used,
             " %s_bare_us=%.3f %s_hit_ratio=%.3f %s_read_ratio=%.3f %s_ptw_ratio=%.3f %s_write_ratio=%.3f", drv,
             bare * 1e6, drv, t_hit / bare, drv, t_read / bare, drv, t_ptw / bare, drv, t_write / bare);
}

int main(int argc, char **argv)
{
    uint32_t n = argc > 1 ? (uint32_t)strtoul(argv[1], NULL, 0) : 0;
    const char *only = argc > 2 ? argv[2] : NULL;
    const char *profile = argc > 3 ? argv[3] : NULL;
    if (argc > 1 && (n == 0 || n > 10000000)) {
        fprintf(stderr, "usage: bench_hidden [N (1..10000000)] [emu|kvm]\n");
        return 2;
    }
    const char *drivers[] = { "emu", "kvm" };
    char res[512] = "";
    for (size_t i = 0; i < 2; i++) {
        if (only && strcmp(only, drivers[i]) != 0)
            continue;
        if (!hg_driver_built(drivers[i])) {
            printf("%s: not built\n", drivers[i]);
            continue;
        }
        bench_driver(drivers[i], n ? n : (i == 0 ? 20000 : 5000), profile, res, sizeof res);
    }
    if (!profile)
        printf("RESULT%s\n", res[0] ? res : " drivers=0");
    return 0;
}
