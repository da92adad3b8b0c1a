/*
 * bench/bench_snapshot.c — snapshot load, apply, save and restore costs.
 *
 * Builds a synthetic 256 MiB QEMU core in /tmp (RAM at 0 + the BIOS ROM
 * block, one vCPU; the bytes vary so compression has work), then measures
 * in one run:
 *  - open: mmap + validation of the core (no RAM is read);
 *  - apply: every RAM byte into a mem driver (one copy from the mapping);
 *  - save as a vmts file (zstd) and open it again;
 *  - restore after a run that dirtied 1,000 random pages (mem driver dirty
 *    log; goal <= 1 ms), per page, and the ratios to a full apply and to a
 *    bare copy of 1,000 random pages (what the restore cannot beat);
 *  - the same restore from the vmts file (first restore decompresses the
 *    chunks it needs, later ones reuse them).
 * Ends with one RESULT line.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core_builder.h"
#include "vmtrap/mem.h"
#include "vmtrap/snapshot.h"

#define RAM_BYTES (256ull << 20)
#define DIRTY 1000
#define ROUNDS 30

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die(const char *what, const char *why)
{
    fprintf(stderr, "bench_snapshot: %s: %s\n", what, why);
    exit(1);
}

static vmt_driver *mem_driver(void)
{
    vmt_mem_config cfg = { .ram_frames = RAM_BYTES / 4096, .log_limit = 64 };
    vmt_driver *d = NULL;
    char why[256];
    if (vmt_mem_driver_create(&cfg, &d, why, sizeof why))
        die("mem driver", why);
    return d;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* ROUNDS runs of "dirty DIRTY random pages, restore"; median restore in s. */
static double restore_rounds(vmt_snapshot *s, vmt_driver *d, uint64_t *pages)
{
    double t[ROUNDS];
    uint64_t seed = 12345;
    uint8_t junk[8] = { 0xcc };
    for (int r = 0; r < ROUNDS; r++) {
        for (int k = 0; k < DIRTY; k++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            uint64_t gfn = (seed >> 20) % (RAM_BYTES / 4096);
            vmt_mem_write_view(d, 0, gfn * 4096 + 64, junk, sizeof junk);
        }
        vmt_snapshot_run_stats st;
        char why[256];
        if (vmt_snapshot_restore(s, d, &st)) {
            snprintf(why, sizeof why, "%s", vmt_snapshot_error(s));
            die("restore", why);
        }
        t[r] = (double)st.last_ns * 1e-9;
        *pages = st.last_dirty_pages;
    }
    qsort(t, ROUNDS, sizeof t[0], cmp_double);
    return t[ROUNDS / 2];
}

int main(void)
{
    char core_path[128], vmts_path[128];
    snprintf(core_path, sizeof core_path, "/tmp/vmt_bench_core_%d.elf", (int)getpid());
    snprintf(vmts_path, sizeof vmts_path, "/tmp/vmt_bench_core_%d.vmts", (int)getpid());
    core_spec spec;
    core_default_spec(&spec, RAM_BYTES);
    spec.nblocks = 1; /* the mem driver's RAM is one block from 0 */
    size_t len;
    uint8_t *f = core_build(&spec, &len, NULL);
    if (!f)
        die("core", "out of memory");
    /* zero a quarter of RAM, as an idle guest has free memory */
    memset(f + len - RAM_BYTES / 4, 0, RAM_BYTES / 4);
    FILE *o = fopen(core_path, "wb");
    if (!o || fwrite(f, 1, len, o) != len || fclose(o) != 0)
        die("write core", core_path);
    free(f);
    printf("synthetic core: %s, %zu MiB\n", core_path, len >> 20);

    char why[256];
    vmt_snapshot_options quiet = { .quiet = true };
    double t0 = now();
    vmt_snapshot *s = NULL;
    if (vmt_snapshot_open(core_path, &quiet, &s, why, sizeof why))
        die("open", why);
    double t_open = now() - t0;
    vmt_snapshot_reconstruct(s, NULL, NULL);

    /* baseline: one plain copy of 256 MiB into fresh memory (what apply
     * cannot beat: it is one copy from the mapping into the driver) */
    uint8_t *src = malloc(RAM_BYTES), *dst = calloc(1, RAM_BYTES);
    if (!src || !dst)
        die("baseline", "out of memory");
    memset(src, 1, RAM_BYTES);
    t0 = now();
    memcpy(dst, src, RAM_BYTES);
    double t_memcpy = now() - t0;
    unsigned sum = 0;
    for (size_t i = 0; i < RAM_BYTES; i += 4096)
        sum += dst[i];
    if (sum != RAM_BYTES / 4096)
        die("baseline", "copy lost bytes");
    free(src);
    free(dst);

    vmt_driver *d = mem_driver();
    t0 = now();
    if (vmt_snapshot_apply(s, d))
        die("apply", vmt_snapshot_error(s));
    double t_apply = now() - t0;
    printf("open (mmap + validate):   %10.3f ms\n", t_open * 1e3);
    printf("apply 256 MiB into mem:   %10.3f ms  (%.0f MiB/s; %.2fx a plain memcpy into fresh memory, %.1f ms)\n",
           t_apply * 1e3, 256.0 / t_apply, t_apply / t_memcpy, t_memcpy * 1e3);

    /* baseline for the restore: copying the same number of random pages
     * between two buffers already in memory (no driver, no dirty log) */
    double t_pages_copy = 0;
    {
        uint8_t *a = malloc(RAM_BYTES), *b = malloc(RAM_BYTES);
        if (!a || !b)
            die("baseline", "out of memory");
        memset(a, 2, RAM_BYTES);
        memset(b, 3, RAM_BYTES);
        double tc[ROUNDS];
        uint64_t seed = 999;
        for (int r = 0; r < ROUNDS; r++) {
            t0 = now();
            for (int k = 0; k < DIRTY; k++) {
                seed = seed * 6364136223846793005ull + 1442695040888963407ull;
                uint64_t off = ((seed >> 20) % (RAM_BYTES / 4096)) * 4096;
                memcpy(b + off, a + off, 4096);
            }
            tc[r] = now() - t0;
        }
        qsort(tc, ROUNDS, sizeof tc[0], cmp_double);
        t_pages_copy = tc[ROUNDS / 2];
        unsigned bsum = 0; /* b is read: its memset and copies stay */
        for (size_t i = 0; i < RAM_BYTES; i += 4096)
            bsum += b[i];
        if (bsum < RAM_BYTES / 4096 * 2)
            die("baseline", "copy lost bytes");
        free(a);
        free(b);
    }

    uint64_t pages = 0;
    double t_restore = restore_rounds(s, d, &pages);
    printf("restore %" PRIu64 " dirty pages:   %10.3f ms median of %d  (%.0f ns/page, %.1fx faster than a full apply)\n",
           pages, t_restore * 1e3, ROUNDS, t_restore * 1e9 / (double)pages, t_apply / t_restore);
    printf("copy %d random pages:     %10.3f ms  (median of %d, no driver: restore is %.1fx that)\n", DIRTY,
           t_pages_copy * 1e3, ROUNDS, t_restore / t_pages_copy);

    t0 = now();
    if (vmt_snapshot_save(s, NULL, vmts_path))
        die("save", vmt_snapshot_error(s));
    double t_save = now() - t0;
    struct stat sb;
    stat(vmts_path, &sb);
    t0 = now();
    vmt_snapshot *v = NULL;
    if (vmt_snapshot_open(vmts_path, &quiet, &v, why, sizeof why))
        die("open vmts", why);
    double t_vopen = now() - t0;
    printf("save vmts (zstd 3):       %10.3f ms  -> %.1f MiB (%.1f%% of the core)\n", t_save * 1e3,
           (double)sb.st_size / (1 << 20), 100.0 * (double)sb.st_size / (double)len);
    printf("open vmts (validate all): %10.3f ms\n", t_vopen * 1e3);
    vmt_driver *d2 = mem_driver();
    t0 = now();
    if (vmt_snapshot_restore(v, d2, NULL))
        die("vmts first restore", vmt_snapshot_error(v));
    double t_vfull = now() - t0;
    uint64_t vpages = 0;
    double t_vrestore = restore_rounds(v, d2, &vpages);
    printf("vmts first restore (all): %10.3f ms  (decompresses every chunk)\n", t_vfull * 1e3);
    printf("vmts restore %" PRIu64 " pages:   %10.3f ms median\n", vpages, t_vrestore * 1e3);

    vmt_driver_destroy(d);
    vmt_driver_destroy(d2);
    vmt_snapshot_destroy(s);
    vmt_snapshot_destroy(v);
    unlink(core_path);
    unlink(vmts_path);
    printf("RESULT core_mib=256 open_ms=%.3f apply_ms=%.1f apply_vs_memcpy=%.2f restore_%d_ms=%.3f restore_ns_per_page=%.0f "
           "restore_vs_apply=%.0f restore_vs_page_copy=%.1f goal_restore_le_1ms=%s vmts_save_ms=%.0f vmts_mib=%.1f vmts_open_ms=%.1f "
           "vmts_restore_%d_ms=%.3f\n",
           t_open * 1e3, t_apply * 1e3, t_apply / t_memcpy, DIRTY, t_restore * 1e3, t_restore * 1e9 / (double)pages, t_apply / t_restore,
           t_restore / t_pages_copy, t_restore <= 1e-3 ? "yes" : "no", t_save * 1e3, (double)sb.st_size / (1 << 20), t_vopen * 1e3, DIRTY,
           t_vrestore * 1e3);
    return 0;
}
