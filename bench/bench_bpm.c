/*
 * bench/bench_bpm.c — breakpoint manager cost per operation and memory per
 * breakpoint, with the driver's cost excluded (mem driver in no-op mode:
 * remaps, rights and frame allocations only count).
 *
 * N breakpoints on distinct addresses (one root, shadow-INT3 controller) are
 * inserted with their physical address known (insert_pa: translation is the
 * session's cost, not the manager's), then removed. Two layouts:
 *   dense   64 breakpoints per 4 KiB frame (a function every 64 bytes);
 *   spread  one breakpoint per frame (the worst case: every breakpoint pays
 *           for a frame install and a shadow frame).
 * For N = 10k, 100k, 1M it prints ns per insert / remove and the manager's
 * heap bytes per breakpoint (vmt_bpm_stats.bytes / N, measured with all N
 * inserted), then the 1M/10k ratio of ns per operation (flat = close to 1),
 * and for the largest N of each layout where the bytes go (one line per
 * internal structure: vmt_bpm_memory_parts). Each N runs RUNS times and the
 * best insert and remove times are printed: the machine is shared, and the
 * other processes only ever add time (cache and CPU contention).
 * Targets (issue 3): < 1 us per operation, < 128 bytes per breakpoint.
 *
 * Usage: bench_bpm [max N] [dense|spread]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vmtrap/bpm.h"
#include "vmtrap/mem.h"
#include "vmtrap/session.h"

/* CPU time of this thread: the machine is shared, so wall time would
 * mostly measure the other processes. */
static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

#define RUNS 3
#define MAX_PARTS 16

typedef struct result {
    double ins_ns, rem_ns, bytes_per_bp;
    size_t frames;
    vmt_bpm_mem_part parts[MAX_PARTS];
    size_t nparts;
} result;

static int run(size_t n, unsigned per_frame, result *out)
{
    size_t frames = (n + per_frame - 1) / per_frame;
    vmt_mem_config mc;
    memset(&mc, 0, sizeof mc);
    mc.noop = true;
    mc.ram_frames = frames + 16;
    mc.extra_frames = (uint32_t)(frames + 16);
    mc.max_views = 2;
    char why[256];
    vmt_driver *d;
    if (vmt_mem_driver_create(&mc, &d, why, sizeof why)) {
        fprintf(stderr, "mem driver: %s\n", why);
        return 1;
    }
    vmt_session *s;
    if (vmt_session_create(d, NULL, &s))
        return 1;
    vmt_view view;
    if (vmt_drv_view_create(d, VMT_ACCESS_RWX, &view))
        return 1;
    vmt_bpm *b;
    vmt_bpm_config cfg = { VMT_BPM_CTL_SHADOW, 0 };
    if (vmt_bpm_create(s, &cfg, &b, why, sizeof why)) {
        fprintf(stderr, "bpm: %s\n", why);
        return 1;
    }
    const unsigned stride = 4096 / per_frame;
    vmt_bpm_bp bp;
    memset(&bp, 0, sizeof bp);
    bp.view = view;
    bp.ctx.root = 0x1000;
    bp.key = 1;

    double t0 = now_ns();
    for (size_t i = 0; i < n; i++) {
        uint64_t frame = 16 + i / per_frame, off = (i % per_frame) * stride;
        bp.ctx.va = 0xffff800000000000ULL + (frame << 12) + off;
        bp.tag = i;
        vmt_status st = vmt_bpm_insert_pa(b, &bp, (frame << 12) + off, NULL);
        if (st) {
            fprintf(stderr, "insert %zu: %s\n", i, vmt_bpm_error(b));
            return 1;
        }
    }
    double t1 = now_ns();
    vmt_bpm_stats stats;
    vmt_bpm_get_stats(b, &stats);
    out->nparts = vmt_bpm_memory_parts(b, out->parts, MAX_PARTS);
    if (out->nparts > MAX_PARTS)
        out->nparts = MAX_PARTS;
    if (n <= 100000 && vmt_bpm_check(b)) {
        fprintf(stderr, "check: %s\n", vmt_bpm_error(b));
        return 1;
    }
    double t2 = now_ns();
    for (size_t i = 0; i < n; i++) {
        uint64_t frame = 16 + i / per_frame, off = (i % per_frame) * stride;
        bp.ctx.va = 0xffff800000000000ULL + (frame << 12) + off;
        if (vmt_bpm_remove(b, &bp)) {
            fprintf(stderr, "remove %zu: %s\n", i, vmt_bpm_error(b));
            return 1;
        }
    }
    double t3 = now_ns();
    out->ins_ns = (t1 - t0) / (double)n;
    out->rem_ns = (t3 - t2) / (double)n;
    out->bytes_per_bp = (double)stats.bytes / (double)n;
    out->frames = stats.frames;
    vmt_bpm_get_stats(b, &stats);
    if (stats.breakpoints || stats.frames) {
        fprintf(stderr, "not everything was removed\n");
        return 1;
    }
    vmt_bpm_destroy(b);
    vmt_session_destroy(s);
    return 0;
}

int main(int argc, char **argv)
{
    size_t max = 1000000;
    const char *only = NULL; /* "dense" or "spread": one layout (for perf) */
    if (argc > 1)
        max = strtoull(argv[1], NULL, 0);
    if (argc > 2)
        only = argv[2];
    static const size_t ns[] = { 10000, 100000, 1000000 };
    static const struct { const char *name; unsigned per_frame; } layouts[] = {
        { "dense (64/frame)", 64 },
        { "spread (1/frame)", 1 },
    };
    printf("bench_bpm: shadow-INT3 manager, mem driver in no-op mode, insert_pa + remove (thread CPU time, best of %d)\n",
           RUNS);
    printf("%-18s %9s %9s %12s %12s %10s\n", "layout", "N", "frames", "insert ns", "remove ns", "bytes/bp");
    char res[256] = "";
    for (size_t l = 0; l < 2; l++) {
        if (only && strncmp(layouts[l].name, only, strlen(only)) != 0)
            continue;
        result r[3];
        size_t done = 0;
        for (size_t i = 0; i < 3 && ns[i] <= max; i++, done++) {
            for (int k = 0; k < RUNS; k++) {
                result one;
                if (run(ns[i], layouts[l].per_frame, &one))
                    return 1;
                if (k == 0) {
                    r[i] = one;
                } else {
                    r[i].ins_ns = one.ins_ns < r[i].ins_ns ? one.ins_ns : r[i].ins_ns;
                    r[i].rem_ns = one.rem_ns < r[i].rem_ns ? one.rem_ns : r[i].rem_ns;
                }
            }
            printf("%-18s %9zu %9zu %12.1f %12.1f %10.1f\n", layouts[l].name, ns[i], r[i].frames, r[i].ins_ns,
                   r[i].rem_ns, r[i].bytes_per_bp);
        }
        if (done == 3)
            printf("%-18s growth 10k -> 1M: insert x%.2f, remove x%.2f, bytes/bp x%.2f\n", layouts[l].name,
                   r[2].ins_ns / r[0].ins_ns, r[2].rem_ns / r[0].rem_ns, r[2].bytes_per_bp / r[0].bytes_per_bp);
        if (done) {
            const result *last = &r[done - 1];
            size_t n = ns[done - 1];
            size_t used = strlen(res);
            snprintf(res + used, sizeof res - used, " %s_n=%zu %s_insert_ns=%.1f %s_remove_ns=%.1f %s_bytes_per_bp=%.1f",
                     l == 0 ? "dense" : "spread", n, l == 0 ? "dense" : "spread", last->ins_ns,
                     l == 0 ? "dense" : "spread", last->rem_ns, l == 0 ? "dense" : "spread", last->bytes_per_bp);
            printf("  where the bytes go at N = %zu (bytes per breakpoint, entries):\n", n);
            for (size_t p = 0; p < last->nparts; p++)
                if (last->parts[p].bytes)
                    printf("    %-44s %8.1f %10zu\n", last->parts[p].name, (double)last->parts[p].bytes / (double)n,
                           last->parts[p].entries);
        }
    }
    printf("targets: < 1000 ns per operation, < 128 bytes per breakpoint\n");
    printf("RESULT%s\n", res[0] ? res : " layouts=0");
    return 0;
}
