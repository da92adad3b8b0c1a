/*
 * bench/bench_emu.c — the emulator driver's costs, measured in one run:
 *   - guest instructions per second with 0, 100 and 10,000 hidden
 *     breakpoints installed (remapped shadow pages, execute-only in the
 *     current view) that the loop never hits, and the ratios to 0;
 *   - the cost of one TLB refill through the driver's TLB-fill hook (a loop
 *     over more pages than the translation record holds, which makes every
 *     touch refill, vs. the same stores over pages that stay translated),
 *     for the default record size and a few others;
 *   - guest instructions/s of a user/kernel loop (SYSCALL from CPL3, the
 *     driver enters the kernel, SYSRETQ back);
 *   - a bare exit round trip (an `out` loop: IO event + CONTINUE);
 *   - a hidden-breakpoint hit round trip (INT3 event + FAST_STEP in view 0,
 *     performed by the reusable engine: no Unicorn map change);
 *   - a CR3 ping-pong between two address spaces under PCIDs 1 and 2 (CR4.PCIDE,
 *     the driver's offer_pcid), each touching its pages after every switch:
 *     guest page walks and refills per switch with bit 63 set (the driver
 *     refills Unicorn's TLB from its record) and clear (walks again).
 * Prints numbers and ratios; not a test (nothing is asserted). Ends with
 * RESULT tlb_refill_us=... hit_ratio=... insns_per_s=... (hit_ratio: the
 * time of the refilling loop over the one that hits; insns_per_s: the
 * user/kernel loop).
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
#include "vmtrap/paging.h"

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
    if (eg_create(&g, 64 << 20, tlb, NULL, NULL))
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

/* A user/kernel loop: n SYSCALLs from CPL3, each answered by a one-line
 * kernel (sysretq); instructions/s of the whole run. */
static double user_kernel_ips(uint64_t n)
{
    eg_guest g;
    if (eg_create(&g, 4 << 20, 0, NULL, NULL))
        exit(1);
    const uint64_t GDT = 0x7f0000d00000ull, USER = 0x500000ull, USTACK = 0x600000ull, KSTACK = 0x7fff00000000ull;
    const uint64_t LSTAR = CODE_VA + 0x200;
    vmt_gfn gdt = eg_frame(&g);
    eg_map(&g, GDT, gdt, 0);
    const uint64_t descs[5] = { 0, 0x00209a0000000000ull, 0x0000920000000000ull, 0x0000f20000000000ull,
                                0x0020fa0000000000ull };
    eg_write(&g, gdt << 12, descs, sizeof descs);
    g.regs.gdtr_base = GDT;
    g.regs.gdtr_limit = sizeof descs - 1;
    g.regs.efer |= VMT_EFER_SCE;
    eg_stack(&g, KSTACK, 1);
    eg_map(&g, USTACK - 0x1000, eg_frame(&g), VMT_PTE_US);
    eg_code c = { .n = 0 };
    const struct { uint32_t msr; uint64_t v; } msrs[3] = {
        { 0xc0000081, 0x0010000800000000ull }, { 0xc0000082, LSTAR }, { 0xc0000084, 0x200 } };
    for (int i = 0; i < 3; i++) {
        eg_mov_imm(&c, EG_RCX, msrs[i].msr);
        eg_mov_imm(&c, EG_RAX, (uint32_t)msrs[i].v);
        eg_mov_imm(&c, EG_RDX, msrs[i].v >> 32);
        eg_bytes(&c, "\x0f\x30", 2); /* wrmsr */
    }
    const uint64_t frame[5] = { 0x1b, USTACK, 0x3202 /* IF, IOPL 3: the user reports */, 0x23, USER };
    for (int i = 0; i < 5; i++) {
        eg_mov_imm(&c, EG_RAX, frame[i]);
        eg_bytes(&c, "\x50", 1); /* push */
    }
    eg_bytes(&c, "\x48\xcf", 2); /* iretq */
    while (c.n < 0x200)
        eg_bytes(&c, "\x90", 1);
    eg_bytes(&c, "\x48\x0f\x07", 3); /* LSTAR: sysretq */
    eg_place(&g, CODE_VA, &c);
    eg_code u = { .n = 0 };
    eg_mov_imm(&u, EG_RBX, 0);
    eg_mov_imm(&u, EG_RSI, n);
    size_t top = u.n;
    eg_bytes(&u, "\x0f\x05", 2); /* syscall */
    eg_inc(&u, EG_RBX);
    eg_loop_below(&u, EG_RBX, EG_RSI, top);
    eg_out_ucall(&u, EG_RBX);
    vmt_gfn uf = eg_frame(&g);
    eg_map(&g, USER, uf, VMT_PTE_US);
    eg_write(&g, uf << 12, u.b, u.n);
    if (eg_start(&g, CODE_VA, KSTACK))
        exit(1);
    double t0 = now_s();
    vmt_event ev = next(&g);
    double t = now_s() - t0;
    if (ev.kind != VMT_EVENT_IO || ev.u.io.value != (uint32_t)n) {
        fprintf(stderr, "bench_emu: the user/kernel loop did not finish (%s)\n", vmt_event_kind_name(ev.kind));
        exit(1);
    }
    vmt_driver_stats st;
    vmt_drv_stats(g.d, &st);
    eg_destroy(&g);
    return (double)st.instructions / t;
}

/* CR3 ping-pong: `rounds` times switch to B (PCID 2) and touch `pages`
 * pages, switch to A (PCID 1) and touch its pages (other frames, same VAs);
 * noflush sets CR3 bit 63. Per switch: guest walks, fills, microseconds. */
typedef struct pingpong_cost {
    double walks, fills, us;
} pingpong_cost;

static pingpong_cost cr3_pingpong(unsigned pages, unsigned rounds, bool noflush)
{
    vmt_emu_options o = { .offer_pcid = true };
    eg_guest g;
    if (eg_create_opt(&g, 16 << 20, &o, NULL, NULL))
        exit(1);
    vmt_gfn root_a = g.pml4, root_b = eg_frame(&g);
    const uint64_t nf = noflush ? 1ull << 63 : 0;
    eg_code c = { .n = 0 };
    eg_mov_imm(&c, EG_RDI, 0);
    eg_mov_imm(&c, EG_RSI, rounds);
    size_t top = c.n;
    for (int side = 0; side < 2; side++) {
        eg_mov_imm(&c, EG_RAX, side == 0 ? (root_b << 12) | 2 | nf : (root_a << 12) | 1 | nf);
        eg_mov_cr3(&c, EG_RAX);
        for (unsigned p = 0; p < pages; p++) {
            eg_mov_imm(&c, EG_RAX, DATA_VA + 4096ull * p);
            eg_store(&c, EG_RAX, EG_RDI);
        }
    }
    eg_inc(&c, EG_RDI);
    eg_loop_below(&c, EG_RDI, EG_RSI, top);
    eg_out_ucall(&c, EG_RDI);
    eg_place(&g, CODE_VA, &c);
    /* B: A's top level (the code) with its own tables for the data */
    uint64_t pml4[512];
    vmt_drv_read_phys(g.d, root_a << 12, pml4, sizeof pml4);
    pml4[(DATA_VA >> 39) & 511] = 0;
    eg_write(&g, root_b << 12, pml4, sizeof pml4);
    for (int side = 0; side < 2; side++) {
        g.pml4 = side ? root_b : root_a;
        for (unsigned p = 0; p < pages; p++)
            eg_map(&g, DATA_VA + 4096ull * p, eg_frame(&g), 0);
    }
    g.pml4 = root_a;
    g.regs.cr4 |= 1ull << 17; /* PCIDE (CR3 starts at PCID 0) */
    if (eg_start(&g, CODE_VA, 0))
        exit(1);
    vmt_emu_tlb_stats a, b;
    vmt_emu_tlb_stats_get(g.d, &a);
    double t0 = now_s();
    vmt_event ev = next(&g);
    double t = now_s() - t0;
    vmt_emu_tlb_stats_get(g.d, &b);
    if (ev.kind != VMT_EVENT_IO || ev.u.io.value != rounds) {
        fprintf(stderr, "bench_emu: the CR3 ping-pong did not finish (%s)\n", vmt_event_kind_name(ev.kind));
        exit(1);
    }
    eg_destroy(&g);
    double switches = 2.0 * rounds;
    pingpong_cost r = { (double)(b.walks - a.walks) / switches, (double)(b.fills - a.fills) / switches,
                        t / switches * 1e6 };
    return r;
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

    /* TLB refills with the default record (1024 translations): 4096 pages
     * make every touch refill; 48 pages stay translated (they fit even the
     * smallest size Unicorn's own TLB shrinks to, 64 entries) */
    uint64_t fills_miss, fills_hit;
    const unsigned rounds = 20;
    double t_miss = 1e9, t_hit = 1e9;
    for (int rep = 0; rep < 3; rep++) {
        double a = touch_pages(4096, rounds, 0, &fills_miss);
        double b = touch_pages(48, rounds * 4096 / 48, 0, &fills_hit);
        t_miss = a < t_miss ? a : t_miss;
        t_hit = b < t_hit ? b : t_hit;
    }
    double per_miss = (t_miss - t_hit) / (double)(fills_miss - fills_hit);
    printf("TLB refill (fill hook, default record): %.3f us (%" PRIu64 " fills vs %" PRIu64 "; the refilling loop "
           "takes %.2f x the time of the loop that hits)\n",
           per_miss * 1e6, fills_miss, fills_hit, t_miss / t_hit);
    for (uint32_t tlb = 16; tlb <= 256; tlb *= 4) {
        double tm = touch_pages(tlb * 4, 10, tlb, &fills_miss);
        double th = touch_pages(tlb / 2, 10 * 8, tlb, &fills_hit);
        printf("  record of %3u translations: %.2f us per refill\n", tlb,
               (tm - th) / (double)(fills_miss - fills_hit) * 1e6);
    }
    double uk = 0;
    for (int rep = 0; rep < 3; rep++) {
        double v = user_kernel_ips(200000);
        uk = v > uk ? v : uk;
    }
    printf("user/kernel loop (syscall from CPL3 + sysretq): %.2f M instructions/s\n", uk / 1e6);
    double rt = exit_round_trip(20000);
    printf("bare exit round trip (out + IO event + CONTINUE): %.2f us\n", rt * 1e6);
    double hit = hidden_hit_round_trip(2000);
    printf("hidden breakpoint hit (INT3 event + FAST_STEP in view 0): %.2f us = %.1f x an exit round trip, "
           "%.1f x a TLB refill\n", hit * 1e6, hit / rt, hit / per_miss);
    pingpong_cost keep = { 0, 0, 1e9 }, drop = { 0, 0, 1e9 };
    for (int rep = 0; rep < 3; rep++) {
        pingpong_cost k = cr3_pingpong(16, 5000, true), f = cr3_pingpong(16, 5000, false);
        keep = k.us < keep.us ? k : keep;
        drop = f.us < drop.us ? f : drop;
    }
    printf("CR3 ping-pong, 2 address spaces x 16 pages under PCIDs 1/2, per switch:\n");
    printf("  bit 63 set (keep):  %.2f guest walks, %.2f refills, %.2f us\n", keep.walks, keep.fills, keep.us);
    printf("  bit 63 clear:       %.2f guest walks, %.2f refills, %.2f us  (%.2f x the time of keep)\n", drop.walks,
           drop.fills, drop.us, drop.us / keep.us);
    printf("RESULT tlb_refill_us=%.3f hit_ratio=%.2f insns_per_s=%.0f loop_ips=%.0f bp100_ratio=%.3f "
           "bp10k_ratio=%.3f exit_us=%.2f hidden_hit_us=%.2f cr3_keep_walks=%.2f cr3_flush_walks=%.2f "
           "cr3_keep_refills=%.2f cr3_keep_us=%.2f cr3_flush_us=%.2f\n",
           per_miss * 1e6, t_miss / t_hit, uk, ips0, ips100 / ips0, ips10k / ips0, rt * 1e6, hit * 1e6, keep.walks,
           drop.walks, keep.fills, keep.us, drop.us);
    return 0;
}
