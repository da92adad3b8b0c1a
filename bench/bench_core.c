/*
 * bench/bench_core.c — what the session's caches buy.
 *
 * Over the in-memory driver (so no hypervisor cost is included), measures
 * in one run: raw walker speed over a host buffer, session translations
 * with the V2P cache hitting vs. flushed before every call (frame cache
 * still warm) vs. both caches flushed, and 8-byte virtual reads hitting vs.
 * missing. Prints rates and the ratios between them.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vmtrap/mem.h"
#include "vmtrap/session.h"

#define PRW (VMT_PTE_P | VMT_PTE_RW)
#define N 200000

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void put64(uint8_t *ram, vmt_pa pa, uint64_t v) { memcpy(ram + pa, &v, 8); }

/* Tables mapping 512 pages at va 0x400000.. onto frames 0x100.. */
static void build(uint8_t *ram)
{
    put64(ram, 0x1000, 0x2000 | PRW);
    put64(ram, 0x2000, 0x3000 | PRW);
    put64(ram, 0x3000 + 16, 0x4000 | PRW);
    for (unsigned i = 0; i < 512; i++)
        put64(ram, 0x4000 + 8 * i, ((0x100ULL + i) << 12) | PRW);
}

static vmt_status host_read(void *ctx, vmt_pa pa, void *buf, size_t len)
{
    memcpy(buf, (uint8_t *)ctx + pa, len);
    return VMT_OK;
}

int main(void)
{
    const uint64_t frames = 1024;
    uint8_t *ram = calloc(frames, 4096);
    build(ram);
    vmt_paging_config cfg = { .levels = 4, .maxphyaddr = 40, .nxe = 1 };
    vmt_phys_reader rd = { host_read, ram };
    vmt_walk w;
    double t0 = now();
    for (unsigned i = 0; i < N; i++)
        if (vmt_paging_walk(&rd, &cfg, 0x1000, 0x400000 + (uint64_t)(i & 511) * 4096, &w, NULL, 0) != VMT_OK)
            return 1;
    double raw = N / (now() - t0);

    vmt_mem_config mc = { .ram_frames = frames };
    vmt_driver *d;
    char why[256];
    if (vmt_mem_driver_create(&mc, &d, why, sizeof why) != VMT_OK) {
        fprintf(stderr, "%s\n", why);
        return 1;
    }
    vmt_session *s;
    vmt_session_config sc = { .frame_cache_frames = 64, .v2p_cache_entries = 1024 };
    if (vmt_session_create(d, &sc, &s) != VMT_OK)
        return 1;
    vmt_session_set_paging(s, &cfg);
    for (vmt_pa pa = 0x1000; pa < 0x5000; pa += 4096)
        if (vmt_session_write_pa(s, pa, ram + pa, 4096) != VMT_OK)
            return 1;

    double rates[5];
    const char *names[5] = { "translate, V2P hit", "translate, V2P flushed (frames warm)",
                             "translate, both caches flushed", "read_va 8 B, caches warm",
                             "read_va 8 B, caches flushed" };
    for (int mode = 0; mode < 5; mode++) {
        uint64_t v;
        t0 = now();
        for (unsigned i = 0; i < N; i++) {
            vmt_addr_ctx ctx = vmt_addr_ctx_make(0x400000 + (uint64_t)(i & 31) * 4096 + 8, 0x1000);
            if (mode == 1)
                vmt_session_flush_v2p(s);
            if (mode == 2 || mode == 4) {
                vmt_session_flush_v2p(s);
                vmt_session_flush_frames(s);
            }
            vmt_status st = mode < 3 ? vmt_session_translate(s, ctx, &w) : vmt_session_read_va(s, ctx, &v, 8, NULL);
            if (st != VMT_OK) {
                fprintf(stderr, "%s\n", vmt_session_error(s));
                return 1;
            }
        }
        rates[mode] = N / (now() - t0);
    }
    printf("bench_core: %d operations each, mem driver (no hypervisor cost)\n", N);
    printf("  %-40s %12.0f /s\n", "raw walker over a host buffer", raw);
    for (int i = 0; i < 5; i++)
        printf("  %-40s %12.0f /s\n", names[i], rates[i]);
    printf("ratios: V2P hit / V2P miss = %.1fx, V2P hit / all flushed = %.1fx, warm read / cold read = %.1fx\n",
           rates[0] / rates[1], rates[0] / rates[2], rates[3] / rates[4]);
    printf("RESULT v2p_hit_vs_miss=%.2f v2p_hit_vs_flushed=%.2f warm_vs_cold_read=%.2f\n", rates[0] / rates[1],
           rates[0] / rates[2], rates[3] / rates[4]);
    vmt_session_destroy(s);
    free(ram);
    return 0;
}
