/*
 * bench/bench_emu.c — the emulator driver's costs, measured in one run:
 *   - guest instructions per second with 0, 100 and 10,000 hidden
 *     breakpoints installed (remapped shadow pages, execute-only in the
 *     current view) that the loop never hits, and the ratios to 0;
 *   - the cost of one software-TLB miss (a loop over more pages than the
 *     TLB holds vs. the same loop over pages that fit);
 *   - a bare exit round trip (an `out` loop: IO event + CONTINUE);
 *   - a hidden-breakpoint hit round trip (INT3 event + FAST_STEP in view 0,
 *     performed by the reusable engine: no Unicorn map change).
 * Prints numbers and ratios; not a test (nothing is asserted).
 */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "emu_guest.h"

#define CODE_VA 0x400000ull
#define DATA_VA 0x7f0000600000ull
#define BP_VA 0x10000000ull
#define STACK_TOP 0x7fff00000000ull

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static vmt_event next(eg_guest *g)
{
    vmt_event ev;
    if (vmt_drv_wait_event(g->d, -1, &ev)) {
        fprintf(stderr, "bench_emu: %s\n", vmt_driver_error(g->d));
        exit(1);
    }
    return ev;
}

static void respond(eg_guest *g, const vmt_event *ev, uint32_t actions, vmt_view view)
{
    vmt_response r = vmt_response_continue();
    r.actions = actions;
    r.step_view = view;
    if (vmt_drv_respond(g->d, ev, &r)) {
        fprintf(stderr, "bench_emu: %s\n", vmt_driver_error(g->d));
        exit(1);
    }
}

/* Install n hidden breakpoints on n distinct pages at BP_VA (never run). */
static void install_hidden(eg_guest *g, unsigned n, vmt_view view)
{
    static const uint8_t fn[] = { 0x48, 0xff, 0xc6, 0xc3 }; /* inc rsi; ret */
    for (unsigned i = 0; i < n; i++) {
        vmt_gfn f = eg_frame(g), s;
        eg_map(g, BP_VA + 4096ull * i, f, 0);
        eg_write(g, f << 12, fn, sizeof fn);
        uint8_t page[4096];
        vmt_drv_read_phys(g->d, f << 12, page, sizeof page);
        page[0] = 0xcc;
        if (vmt_drv_frame_alloc(g->d, &s) || vmt_drv_write_phys(g->d, s << 12, page, sizeof page) ||
            vmt_drv_view_remap(g->d, view, f, s) || vmt_drv_view_set_access(g->d, view, f, VMT_ACCESS_X)) {
            fprintf(stderr, "bench_emu: install: %s\n", vmt_driver_error(g->d));
            exit(1);
        }
    }
}

/* A loop of `iters` iterations of 6 instructions with a load and a store. */
static double loop_ips(unsigned bps, uint64_t iters)
{
    eg_guest g;
    if (eg_create(&g, 64 << 20, 0, NULL, NULL)) {
        fprintf(stderr, "bench_emu: %s\n", g.why);
        exit(1);
    }
    vmt_view v;
    vmt_drv_view_create(g.d, VMT_ACCESS_RWX, &v);
    install_hidden(&g, bps, v);
    eg_map(&g, DATA_VA, eg_frame(&g), 0);
    eg_code c = { .n = 0 };
    eg_mov_imm(&c, EG_RBX, DATA_VA);
    eg_mov_imm(&c, EG_RCX, 0);
    eg_mov_imm(&c, EG_RDX, iters);
    size_t top = c.n;
    eg_load(&c, EG_RAX, EG_RBX);
    eg_add(&c, EG_RAX, EG_RCX);
    eg_store(&c, EG_RBX, EG_RAX);
    eg_inc(&c, EG_RCX);
    eg_loop_below(&c, EG_RCX, EG_RDX, top);
    eg_hlt(&c);
    eg_place(&g, CODE_VA, &c);
    vmt_drv_view_switch(g.d, 0, v);
    eg_start(&g, CODE_VA, 0);
    double t0 = now_s();
    vmt_event ev = next(&g);
    double t = now_s() - t0;
    if (ev.kind != VMT_EVENT_STOPPED || ev.u.stop.reason != VMT_STOP_HALT) {
        fprintf(stderr, "bench_emu: loop did not halt: %s\n", vmt_event_kind_name(ev.kind));
        exit(1);
    }
    vmt_driver_stats st;
    vmt_drv_stats(g.d, &st);
    eg_destroy(&g);
    return (double)st.instructions / t;
}

/* Seconds for `rounds` passes over `pages` pages with a TLB of tlb entries;
 * *fills = TLB fills. */
static double touch_pages(unsigned pages, unsigned rounds, uint32_t tlb, uint64_t *fills)
{
    eg_guest g;
    if (eg_create(&g, 16 << 20, tlb, NULL, NULL))
        exit(1);
    for (unsigned i = 0; i < pages; i++)
        eg_map(&g, DATA_VA + 4096ull * i, eg_frame(&g), 0);
    eg_code c = { .n = 0 };
    eg_mov_imm(&c, EG_RBX, 4096);
    eg_mov_imm(&c, EG_RDI, 0);
    eg_mov_imm(&c, EG_RSI, rounds);
    size_t outer = c.n;
    eg_mov_imm(&c, EG_RAX, DATA_VA);
    eg_mov_imm(&c, EG_RCX, 0);
    eg_mov_imm(&c, EG_RDX, pages);
    size_t top = c.n;
    eg_store(&c, EG_RAX, EG_RCX);
    eg_add(&c, EG_RAX, EG_RBX);
    eg_inc(&c, EG_RCX);
    eg_loop_below(&c, EG_RCX, EG_RDX, top);
    eg_inc(&c, EG_RDI);
    eg_loop_below(&c, EG_RDI, EG_RSI, outer);
    eg_hlt(&c);
    eg_place(&g, CODE_VA, &c);
    eg_start(&g, CODE_VA, 0);
    double t0 = now_s();
    next(&g);
    double t = now_s() - t0;
    vmt_emu_tlb_stats ts;
    vmt_emu_tlb_stats_get(g.d, &ts);
    *fills = ts.fills;
    eg_destroy(&g);
    return t;
}

static double exit_round_trip(unsigned n)
{
    eg_guest g;
    if (eg_create(&g, 4 << 20, 0, NULL, NULL))
        exit(1);
    eg_code c = { .n = 0 };
    eg_mov_imm(&c, EG_RCX, 0);
    eg_mov_imm(&c, EG_RSI, n);
    eg_mov_imm(&c, EG_RDX, 0x5e0);
    size_t top = c.n;
    eg_bytes(&c, "\xef", 1); /* out dx, eax */
    eg_inc(&c, EG_RCX);
    eg_loop_below(&c, EG_RCX, EG_RSI, top);
    eg_hlt(&c);
    eg_place(&g, CODE_VA, &c);
    eg_start(&g, CODE_VA, 0);
    double t0 = now_s();
    for (;;) {
        vmt_event ev = next(&g);
        if (ev.kind != VMT_EVENT_IO)
            break;
        respond(&g, &ev, VMT_RESP_CONTINUE, 0);
    }
    double t = now_s() - t0;
    eg_destroy(&g);
    return t / n;
}

static double hidden_hit_round_trip(unsigned n)
{
    eg_guest g;
    if (eg_create(&g, 16 << 20, 0, NULL, NULL))
        exit(1);
    vmt_view v;
    vmt_drv_view_create(g.d, VMT_ACCESS_RWX, &v);
    install_hidden(&g, 1, v);
    eg_stack(&g, STACK_TOP, 1);
    eg_code c = { .n = 0 };
    eg_mov_imm(&c, EG_RAX, BP_VA);
    eg_mov_imm(&c, EG_RCX, 0);
    eg_mov_imm(&c, EG_RDX, n);
    size_t top = c.n;
    eg_call(&c, EG_RAX);
    eg_inc(&c, EG_RCX);
    eg_loop_below(&c, EG_RCX, EG_RDX, top);
    eg_hlt(&c);
    eg_place(&g, CODE_VA, &c);
    vmt_drv_view_switch(g.d, 0, v);
    eg_start(&g, CODE_VA, STACK_TOP);
    double t0 = now_s();
    unsigned hits = 0;
    for (;;) {
        vmt_event ev = next(&g);
        if (ev.kind != VMT_EVENT_BREAKPOINT)
            break;
        hits++;
        respond(&g, &ev, VMT_RESP_FAST_STEP, VMT_VIEW_DEFAULT);
    }
    double t = now_s() - t0;
    eg_destroy(&g);
    if (hits != n)
        fprintf(stderr, "bench_emu: %u hits, expected %u\n", hits, n);
    return t / n;
}

int main(void)
{
    const uint64_t iters = 5000000;
    /* best of 5, interleaved, after a warm-up: the machine is shared */
    (void)loop_ips(0, iters / 5);
    double ips0 = 0, ips100 = 0, ips10k = 0;
    for (int rep = 0; rep < 5; rep++) {
        double a = loop_ips(0, iters), b = loop_ips(100, iters), c = loop_ips(10000, iters);
        ips0 = a > ips0 ? a : ips0;
        ips100 = b > ips100 ? b : ips100;
        ips10k = c > ips10k ? c : ips10k;
    }
    printf("guest instructions/s, load+add+store loop, %" PRIu64 " iterations:\n", iters);
    printf("  0 breakpoints:      %8.1f M/s\n", ips0 / 1e6);
    printf("  100 breakpoints:    %8.1f M/s  (%.3f of 0; cost %.1f%%)\n", ips100 / 1e6, ips100 / ips0,
           100.0 * (1 - ips100 / ips0));
    printf("  10,000 breakpoints: %8.1f M/s  (%.3f of 0)\n", ips10k / 1e6, ips10k / ips0);

    uint64_t fills_miss, fills_hit;
    const unsigned rounds = 200;
    double t_miss = touch_pages(256, rounds, 64, &fills_miss);  /* 256 pages, TLB 64: every touch misses */
    double t_hit = touch_pages(48, rounds * 256 / 48, 64, &fills_hit); /* same stores, 48 pages fit */
    double per_miss = (t_miss - t_hit) / (double)(fills_miss - fills_hit);
    printf("software-TLB miss: %.2f us (%" PRIu64 " fills vs %" PRIu64 "; %.0f x the time of the loop that hits)\n",
           per_miss * 1e6, fills_miss, fills_hit, t_miss / t_hit);

    for (uint32_t tlb = 16; tlb <= 256; tlb *= 4) {
        double tm = touch_pages(tlb * 4, 10, tlb, &fills_miss);
        double th = touch_pages(tlb / 2, 10 * 8, tlb, &fills_hit);
        printf("  TLB of %3u entries: %.2f us per miss\n", tlb, (tm - th) / (double)(fills_miss - fills_hit) * 1e6);
    }
    double rt = exit_round_trip(20000);
    printf("bare exit round trip (out + IO event + CONTINUE): %.2f us\n", rt * 1e6);
    double hit = hidden_hit_round_trip(2000);
    printf("hidden breakpoint hit (INT3 event + FAST_STEP in view 0): %.2f us = %.1f x an exit round trip, "
           "%.1f x a TLB miss\n", hit * 1e6, hit / rt, hit / per_miss);
    return 0;
}
