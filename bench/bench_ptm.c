/*
 * bench/bench_ptm.c — the page-table monitor's cost per guest PT write.
 *
 * Part 1, the monitor alone: 64 VAs monitored under one page table on the
 * mem driver; events are built the way a driver reports them and handed
 * straight to vmt_ptm_handle_event (no driver round trip), the write is
 * then applied to guest RAM and the session's frame cache flushed, as the
 * event loop does after every guest run. Measured: PT-entry remaps with
 * write data (1 event each), the same through the step path (write event +
 * SINGLESTEP), writes that change nothing (A bit / duplicate), and a PD
 * entry write that re-walks all 64 VAs.
 *
 * Part 2, driver exits per monitored write: the same remaps through the mem
 * driver's event queue (push, wait_event, handle, respond), for each
 * response mechanism the monitor picks from the driver's capabilities.
 * Exits = events the driver delivered + the internal exit of each FAST_STEP
 * (the driver steps and returns on its own). Expected: 1 with write data
 * and EMULATE, 2 otherwise.
 *
 * Part 3, real drivers: the `workload` guest (tests/ptm/ptm_guest_run.c)
 * on each CPU-running driver built, with the monitor on its four service
 * pages: driver exits per monitored PT write with write data and through
 * the step path, and the run's wall time against an unmonitored run.
 *
 * Prints ratios measured in this run; no assertions about time.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vmtrap/mem.h"
#include "vmtrap/paging.h"
#include "vmtrap/ptm.h"
#include "vmtrap/session.h"
#ifdef BENCH_PTM_GUEST
#include "ptm_guest_run.h"
#endif

#define NVA 64
#define VA_BASE ((1ULL << 39) | (2ULL << 30) | (3ULL << 21))

typedef struct bench {
    vmt_driver *d;
    vmt_session *s;
    vmt_ptm *ptm;
    vmt_view view;
    vmt_gfn root, pdpt, pd, pt, pt_copy;
    uint64_t events;
    uint64_t cur[NVA];   /* PT entries 0..NVA-1 as the guest last wrote them */
    uint64_t remaps;     /* remaps done so far: entry i alternates between frames */
    uint64_t writes;
} bench;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die(const char *what, vmt_status st, const char *msg)
{
    fprintf(stderr, "bench_ptm: %s failed: %s: %s\n", what, vmt_strerror(st), msg ? msg : "");
    exit(1);
}

static void sink(void *ctx, const vmt_ptm_event *ev)
{
    (void)ev;
    ((bench *)ctx)->events++;
}

static void set_entry(bench *b, vmt_gfn table, unsigned index, uint64_t value)
{
    vmt_status st = vmt_drv_write_phys(b->d, (table << 12) + 8ULL * index, &value, 8);
    if (st != VMT_OK)
        die("write_phys", st, vmt_driver_error(b->d));
    vmt_session_flush_frames(b->s);
}

static uint64_t pte(vmt_gfn g)
{
    return (g << 12) | 0x67; /* P RW US A D */
}

/* The next remap of PT entry (remaps % NVA): the other of its two frames. */
static unsigned next_remap(bench *b, uint64_t *value)
{
    unsigned i = (unsigned)(b->remaps % NVA);
    *value = (b->cur[i] == pte(256 + i)) ? pte(512 + i) : pte(256 + i);
    b->cur[i] = *value;
    b->remaps++;
    return i;
}

static void setup(bench *b, uint64_t caps_remove)
{
    memset(b, 0, sizeof *b);
    vmt_mem_config cfg = { 0 };
    cfg.ram_frames = 1024;
    cfg.maxphyaddr = 39;
    cfg.caps_remove = caps_remove;
    char why[256];
    vmt_status st = vmt_mem_driver_create(&cfg, &b->d, why, sizeof why);
    if (st != VMT_OK)
        die("mem driver", st, why);
    if ((st = vmt_session_create(b->d, NULL, &b->s)) != VMT_OK)
        die("session", st, "");
    vmt_paging_config pc = { 4, 39, 1, 0 };
    vmt_session_set_paging(b->s, &pc);
    if ((st = vmt_drv_view_create(b->d, VMT_ACCESS_RWX, &b->view)) != VMT_OK ||
        (st = vmt_drv_view_switch(b->d, VMT_VCPU_ALL, b->view)) != VMT_OK)
        die("view", st, vmt_driver_error(b->d));
    if ((st = vmt_ptm_create(b->s, &b->ptm)) != VMT_OK)
        die("ptm create", st, "");
    b->root = 16, b->pdpt = 17, b->pd = 18, b->pt = 19, b->pt_copy = 20;
    set_entry(b, b->root, 1, pte(b->pdpt));
    set_entry(b, b->pdpt, 2, pte(b->pd));
    set_entry(b, b->pd, 3, pte(b->pt));
    for (unsigned i = 0; i < NVA; i++) {
        set_entry(b, b->pt, i, pte(256 + i));
        set_entry(b, b->pt_copy, i, pte(256 + i));
        b->cur[i] = pte(256 + i);
    }
    for (unsigned i = 0; i < NVA; i++) {
        vmt_addr_ctx ctx = vmt_addr_ctx_make(VA_BASE + ((uint64_t)i << 12), b->root << 12);
        if ((st = vmt_ptm_monitor(b->ptm, ctx, b->view, 0)) != VMT_OK)
            die("monitor", st, vmt_ptm_error(b->ptm));
    }
}

static void teardown(bench *b)
{
    if (vmt_ptm_check(b->ptm) != VMT_OK)
        die("ptm check", VMT_E_INTERNAL, vmt_ptm_error(b->ptm));
    vmt_ptm_destroy(b->ptm);
    vmt_session_destroy(b->s);
}

static vmt_event write_event(vmt_pa pa, bool with_data, uint64_t value)
{
    vmt_event ev;
    memset(&ev, 0, sizeof ev);
    ev.kind = VMT_EVENT_MEM_ACCESS;
    ev.u.mem.gpa = pa;
    ev.u.mem.access = VMT_ACCESS_W;
    ev.u.mem.has_data = with_data;
    ev.u.mem.size = with_data ? 8 : 0;
    ev.u.mem.value = with_data ? value : 0;
    return ev;
}

/* One guest write straight through the monitor. */
static void direct_write(bench *b, vmt_gfn table, unsigned index, uint64_t value, bool with_data)
{
    vmt_event ev = write_event((table << 12) + 8ULL * index, with_data, value);
    ev.view = b->view;
    vmt_response resp;
    bool handled;
    vmt_status st = vmt_ptm_handle_event(b->ptm, &ev, &resp, sink, b, &handled);
    if (st != VMT_OK || !handled)
        die("handle write", st, vmt_ptm_error(b->ptm));
    set_entry(b, table, index, value); /* the write lands */
    if ((++b->writes & 1023) == 0)
        vmt_mem_log_clear(b->d); /* the mem driver logs every call: keep it short */
    if (resp.actions & VMT_RESP_STEP) {
        vmt_event ss;
        memset(&ss, 0, sizeof ss);
        ss.kind = VMT_EVENT_SINGLESTEP;
        ss.view = VMT_VIEW_DEFAULT;
        st = vmt_ptm_handle_event(b->ptm, &ss, &resp, sink, b, &handled);
        if (st != VMT_OK || !handled)
            die("handle step", st, vmt_ptm_error(b->ptm));
    }
}

static double run_remaps(bench *b, unsigned n, bool with_data)
{
    uint64_t before = b->events;
    double t0 = now_s();
    for (unsigned k = 0; k < n; k++) {
        uint64_t value;
        unsigned i = next_remap(b, &value);
        direct_write(b, b->pt, i, value, with_data);
    }
    double dt = now_s() - t0;
    if (b->events - before != n)
        die("remap events", VMT_E_INTERNAL, "one event per remap expected");
    return n / dt;
}

static double part1(double *data_writes_s)
{
    bench b;
    const unsigned n = 200000;
    printf("part 1: the monitor alone (%u VAs under one PT, mem driver)\n", NVA);

    setup(&b, 0);
    double data = run_remaps(&b, n, true);
    printf("  PTE remap, write data          %10.0f writes/s (1 event each)\n", data);
    double step = run_remaps(&b, n, false);
    printf("  PTE remap, step path           %10.0f writes/s (write + singlestep)\n", step);
    double t0 = now_s();
    for (unsigned k = 0; k < n; k++) {
        unsigned i = k % NVA;
        b.cur[i] ^= (k / NVA) & 1 ? 0 : VMT_PTE_A; /* toggle A, then write it twice */
        direct_write(&b, b.pt, i, b.cur[i], true);
    }
    double same = n / (now_s() - t0);
    printf("  A-bit / duplicate writes       %10.0f writes/s (no event)\n", same);
    vmt_ptm_stats st0, st1;
    vmt_ptm_get_stats(b.ptm, &st0);
    const unsigned npd = 20000;
    t0 = now_s();
    for (unsigned k = 0; k < npd; k++)
        direct_write(&b, b.pd, 3, pte((k & 1) ? b.pt : b.pt_copy), true);
    double pd = npd / (now_s() - t0);
    vmt_ptm_get_stats(b.ptm, &st1);
    printf("  PDE swap (%u VAs re-walked)    %10.0f writes/s, %.0f re-walks/s\n", NVA, pd,
           pd * (double)(st1.rewalks - st0.rewalks) / npd);
    printf("  ratio step/data cost           %10.2f\n", data / step);
    teardown(&b);
    *data_writes_s = data;
    return data / step;
}

typedef struct exit_case {
    const char *name;
    uint64_t caps_remove;
    bool with_data;
} exit_case;

static void part2(void)
{
    static const exit_case cases[] = {
        { "write data + EMULATE (CONTINUE)", 0, true },
        { "write data, no EMULATE (FAST_STEP)", VMT_CAP_EMULATE, true },
        { "write data, step only (STEP)", VMT_CAP_EMULATE | VMT_CAP_FAST_STEP, true },
        { "no write data (STEP + re-read)", 0, false },
    };
    const unsigned n = 2000;
    printf("part 2: driver exits per monitored write (mem driver event queue, %u remaps)\n", n);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        bench b;
        setup(&b, cases[c].caps_remove);
        vmt_driver_stats ds0, ds1;
        vmt_drv_stats(b.d, &ds0);
        uint64_t fast_steps = 0, ev0 = b.events;
        for (unsigned k = 0; k < n; k++) {
            uint64_t value;
            unsigned i = next_remap(&b, &value);
            vmt_pa pa = (b.pt << 12) + 8ULL * i;
            vmt_event ev = write_event(pa, cases[c].with_data, value);
            vmt_event got;
            vmt_response resp;
            bool handled;
            vmt_mem_push_event(b.d, &ev);
            if (vmt_drv_wait_event(b.d, 0, &got) != VMT_OK)
                die("wait", VMT_E_INTERNAL, vmt_driver_error(b.d));
            vmt_session_flush_frames(b.s);
            vmt_status st = vmt_ptm_handle_event(b.ptm, &got, &resp, sink, &b, &handled);
            if (st != VMT_OK || !handled || vmt_drv_respond(b.d, &got, &resp) != VMT_OK)
                die("write event", st, vmt_ptm_error(b.ptm));
            set_entry(&b, b.pt, i, value); /* the CPU performs the store */
            if (resp.actions & VMT_RESP_FAST_STEP)
                fast_steps++;
            if (resp.actions & VMT_RESP_STEP) {
                vmt_event ss;
                memset(&ss, 0, sizeof ss);
                ss.kind = VMT_EVENT_SINGLESTEP;
                vmt_mem_push_event(b.d, &ss);
                if (vmt_drv_wait_event(b.d, 0, &got) != VMT_OK)
                    die("wait", VMT_E_INTERNAL, vmt_driver_error(b.d));
                vmt_session_flush_frames(b.s);
                st = vmt_ptm_handle_event(b.ptm, &got, &resp, sink, &b, &handled);
                if (st != VMT_OK || !handled || vmt_drv_respond(b.d, &got, &resp) != VMT_OK)
                    die("step event", st, vmt_ptm_error(b.ptm));
            }
        }
        vmt_drv_stats(b.d, &ds1);
        uint64_t exits = ds1.exits - ds0.exits + fast_steps;
        printf("  %-38s %.2f exits/write (%" PRIu64 " events, %" PRIu64 " page events)\n", cases[c].name,
               (double)exits / n, ds1.exits - ds0.exits, b.events - ev0);
        teardown(&b);
    }
}

#ifdef BENCH_PTM_GUEST
static void part3(void)
{
    static const char *const drivers[] = { "kvm", "emu" };
    static const ptm_guest_mode modes[] = { PTM_GUEST_UNMONITORED, PTM_GUEST_WITH_DATA, PTM_GUEST_STEP_SIZE };
    printf("part 3: the workload guest on real drivers (monitor on its 4 service pages)\n");
    for (size_t d = 0; d < sizeof drivers / sizeof drivers[0]; d++) {
        double base = 0;
        for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++) {
            ptm_guest_result r;
            ptm_guest_run(drivers[d], BENCH_GUEST_DIR "/workload.elf", modes[m], &r);
            if (r.skipped) {
                printf("  %-4s skipped: %s\n", drivers[d], r.error);
                break;
            }
            if (r.error[0] || !r.done) {
                printf("  %-4s %-22s FAILED: %s\n", drivers[d], ptm_guest_mode_name(modes[m]),
                       r.error[0] ? r.error : "no DONE");
                continue;
            }
            if (modes[m] == PTM_GUEST_UNMONITORED) {
                base = r.seconds;
                printf("  %-4s %-22s %8.4f s\n", drivers[d], ptm_guest_mode_name(modes[m]), r.seconds);
                continue;
            }
            printf("  %-4s %-22s %8.4f s (x%.2f of unmonitored), %" PRIu64 " PT writes, %.2f exits/write, %" PRIu64
                   " page events\n",
                   drivers[d], ptm_guest_mode_name(modes[m]), r.seconds, base > 0 ? r.seconds / base : 0.0,
                   r.stats.writes, r.stats.writes ? (double)r.ptm_exits / (double)r.stats.writes : 0.0,
                   r.events[1] + r.events[2] + r.events[3]);
        }
    }
}
#endif

int main(void)
{
    double data_writes_s = 0;
    double step_vs_data = part1(&data_writes_s);
    part2();
#ifdef BENCH_PTM_GUEST
    part3();
#endif
    printf("RESULT pte_remap_writes_per_s=%.0f step_vs_data_cost=%.2f\n", data_writes_s, step_vs_data);
    return 0;
}
