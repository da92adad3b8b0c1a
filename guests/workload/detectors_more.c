/*
 * guests/workload/detectors_more.c — stealth detectors 9..16: what a guest
 * can try beyond detectors.c to notice (or be broken by) a monitor that
 * hooks its services (issue 14). Reference values come from plain byte
 * loads (the path detectors 1-3 already prove) or from the guest's own
 * state; every detector passes on a run without monitor.
 *    9 own-traps   the guest's INT $3 (CD 03), INT1/ICEBP (F1) and INTO (CE,
 *                  #UD in 64-bit mode), in .text and inside svc_write's
 *                  hooked page, reach the guest's IDT with the right rip
 *                  (workload_skip bit 17 leaves out ICEBP, for a driver
 *                  that cannot deliver it)
 *   10 wide-reads  svc_open's hooked page read with every width and family:
 *                  16/32/64-bit mov, SSE (movdqu, movups, movaps, lddqu,
 *                  movq, movntdqa if SSE4.1), MMX, x87 fild/fistp, AVX if the
 *                  CPU has it and the OS bit can be set, rep movsb/movsq,
 *                  repe cmpsb, lodsq, repne scasb, xlat, lock cmpxchg,
 *                  cmpxchg16b (if CX16); plus stores into the page with
 *                  movnti, movntdq, movdqu, fistp and xchg read back
 *   11 cross-page  reads crossing a page boundary into a hooked page's
 *                  entry: from svc_open's page into svc_write's, and from
 *                  an unhooked page (a scratch mapping) into svc_write's
 *   12 alias       a second virtual address for the whole kernel image
 *                  (one PDPT entry, 2 GiB below): svc_spawn's page read
 *                  through it equals the original, and svc_spawn called
 *                  through it works (a physical-address hook must see that
 *                  call: REPORT alias_calls.svc_spawn)
 *   13 pt-frame    svc_open's frame used as a page table: the hardware walk
 *                  must see the original bytes (entry 0 is its first 8)
 *   14 phys-scan   16 MiB of guest-physical space past RAM: no copy of a
 *                  service page (shadow frames must be unreachable)
 *   15 msr-cpuid   IA32_TSC advances with RDTSC; IA32_APIC_BASE is enabled,
 *                  BSP, at 0xfee00000 when CPUID says there is an APIC
 *   16 timing      svc_exit vs svc_exit_twin (same instructions, unhooked
 *                  page): RDTSC cost per call differs by at most 5%
 */
#include "guest/guest.h"
#include "guest/paging.h"
#include "guest/ucall.h"
#include "guest/x86.h"
#include "workload.h"

/* detectors_asm.S */
void rd_movdqu(const void *src, void *dst);
void rd_movups(const void *src, void *dst);
void rd_movaps(const void *src, void *dst);
void rd_lddqu(const void *src, void *dst);
void rd_movntdqa(const void *src, void *dst);
void rd_movq_xmm(const void *src, void *dst);
void rd_mmx(const void *src, void *dst);
void rd_x87(const void *src, void *dst);
void rd_avx(const void *src, void *dst);
void rd_rep_movsb(void *dst, const void *src, uint64_t n);
void rd_rep_movsq(void *dst, const void *src, uint64_t nq);
int rd_repe_cmpsb(const void *a, const void *b, uint64_t n);
uint64_t rd_lodsq(const void *src);
uint64_t rd_scasb(const void *p, uint8_t byte, uint64_t n);
uint8_t rd_xlat(const void *table, uint8_t index);
uint64_t rd_cmpxchg(void *p, uint64_t expected, uint64_t desired);
uint64_t rw_xchg(void *p, uint64_t v);
void rd_cmpxchg16b(void *p16, void *out16);
void wr_movnti(void *p, uint64_t v);
void wr_movntdq(void *p16, const void *src16);
void wr_movdqu(void *dst, const void *src16);
void wr_fistp(void *dst, const void *src8);
void trap_int3_cd03(void);
void trap_icebp(void);
void trap_into(void);
/* svc_asm.S */
void trap_cd03_in_service_page(void);
void trap_icebp_in_service_page(void);
void trap_into_in_service_page(void);
int64_t svc_exit_twin(int64_t pid);
volatile uint64_t twin_served, twin_tf_leaks;

#define KERNEL_BASE   0xffffffff80000000ULL
#define ALIAS_DELTA   0x80000000ULL          /* the image again, 2 GiB lower (PDPT 508 = 510) */
#define PT_FRAME_VA   0xffffffffc0200000ULL  /* detector 13: PD entry -> a hooked frame */
#define CROSS_VA      0xffffffffc0400000ULL  /* detector 11: unhooked page + svc_write's frame */
#define SCAN_VA       0xffffffffc0600000ULL  /* detector 14: window of frames past RAM */
#define SCAN_WINDOW   16
#define SCAN_FRAMES   4096                   /* 16 MiB */

static inline void cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4])
{
    __asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(sub));
}
static inline uint64_t rdtsc64(void)
{
    uint32_t lo, hi;
    __asm__ volatile("lfence; rdtsc" : "=a"(lo), "=d"(hi) : : "memory");
    return ((uint64_t)hi << 32) | lo;
}
static inline uint64_t rdmsr64(uint32_t msr)
{
    uint32_t lo, hi;
    __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
    return ((uint64_t)hi << 32) | lo;
}
static inline void write_cr0(uint64_t v) { __asm__ volatile("mov %0, %%cr0" : : "r"(v) : "memory"); }
static inline void write_cr4(uint64_t v) { __asm__ volatile("mov %0, %%cr4" : : "r"(v) : "memory"); }
static inline void xsetbv0(uint64_t v)
{
    __asm__ volatile("xsetbv" : : "c"(0), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)) : "memory");
}

static void read_bytes(const volatile uint8_t *src, uint8_t *dst, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        dst[i] = src[i];
}

/* SSE on (CR0.MP, !CR0.EM, CR4.OSFXSR, OSXMMEXCPT); AVX when CPUID has it
 * and XSAVE (CR4.OSXSAVE, XCR0 x87|SSE|AVX). Returns whether AVX is usable. */
static int vector_init(void)
{
    write_cr0((read_cr0() | 2) & ~4ULL);
    uint64_t cr4 = read_cr4() | (1u << 9) | (1u << 10);
    uint32_t r[4];
    cpuid(1, 0, r);
    int avx = (r[2] >> 28) & 1, xsave = (r[2] >> 26) & 1;
    if (avx && xsave)
        cr4 |= 1u << 18;
    write_cr4(cr4);
    if (!(avx && xsave) || !(read_cr4() & (1u << 18)))
        return 0;
    xsetbv0(7);
    return 1;
}

/* ---- 9 own-traps ---- */

static volatile uint64_t trap_count[3], trap_rip[3];

static int on_trap(struct trap_frame *f)
{
    unsigned k = f->vector == 3 ? 0 : f->vector == 1 ? 1 : 2;
    trap_count[k]++;
    trap_rip[k] = f->rip;
    if (f->vector == 6)
        f->rip += 1; /* INTO is a fault (#UD): resume after its one byte */
    return 1;
}

static int detector_own_traps(int no_icebp)
{
    static void (*const sites[2][3])(void) = {
        { trap_int3_cd03, trap_icebp, trap_into },
        { trap_cd03_in_service_page, trap_icebp_in_service_page, trap_into_in_service_page },
    };
    static const unsigned vectors[3] = { 3, 1, 6 };
    static const char *const names[3] = { "int $3", "icebp", "into" };
    trap_set_handler(3, on_trap);
    trap_set_handler(1, on_trap);
    trap_set_handler(6, on_trap);
    unsigned bad = 0;
    char detail[VMT_UCALL_TEXT_LEN];
    size_t n = 0;
    for (unsigned where = 0; where < 2; where++) {
        for (unsigned k = 0; k < 3; k++) {
            if (k == 1 && no_icebp)
                continue;
            uint64_t before = trap_count[k];
            sites[where][k]();
            uint64_t site = (uint64_t)(uintptr_t)sites[where][k];
            /* CD 03 and F1 are traps (rip after them); INTO faults at itself */
            uint64_t want = site + (k == 0 ? 2 : k == 1 ? 1 : 0);
            int ok = trap_count[k] == before + 1 && trap_rip[k] == want;
            if (!ok) {
                bad++;
                n += (size_t)snprintf(detail + n, n < sizeof(detail) ? sizeof(detail) - n : 0,
                                      "%s%s in %s: %lu delivered (vector %u), rip 0x%lx want 0x%lx", n ? "; " : "",
                                      names[k], where ? "svc_write's page" : ".text",
                                      (unsigned long)(trap_count[k] - before), vectors[k], trap_rip[k], want);
            }
        }
    }
    trap_set_handler(3, 0);
    trap_set_handler(1, 0);
    trap_set_handler(6, 0);
    if (!bad)
        snprintf(detail, sizeof(detail), "int $3%s and into in .text and in svc_write's page: all delivered",
                 no_icebp ? " (icebp skipped: workload_skip bit 17)" : ", icebp");
    ucall_detector(9, bad == 0, "own-traps", "%s", detail);
    return bad == 0;
}

/* ---- 10 wide-reads ---- */

static uint8_t ref_page[4096] __attribute__((aligned(16)));
static uint8_t got[64] __attribute__((aligned(32)));

static int detector_wide_reads(int avx)
{
    const uint8_t *page = (const uint8_t *)(uintptr_t)svc_va(SVC_OPEN); /* entry at offset 0 */
    read_bytes(page, ref_page, sizeof(ref_page));
    uint32_t r[4];
    cpuid(1, 0, r);
    int sse41 = (r[2] >> 19) & 1, cx16 = (r[2] >> 13) & 1;
    unsigned bad = 0, tried = 0;
    char failed[VMT_UCALL_TEXT_LEN] = "";
    size_t fn = 0;
#define CHECK(name, ok)                                                                                          \
    do {                                                                                                         \
        tried++;                                                                                                 \
        if (!(ok)) {                                                                                             \
            bad++;                                                                                               \
            fn += (size_t)snprintf(failed + fn, fn < sizeof(failed) ? sizeof(failed) - fn : 0, " %s", name);     \
        }                                                                                                        \
    } while (0)
#define VEC(fn_, name, len)                                                                                      \
    do {                                                                                                         \
        memset(got, 0x5a, sizeof(got));                                                                          \
        fn_(page, got);                                                                                          \
        CHECK(name, memcmp(got, ref_page, len) == 0);                                                            \
    } while (0)
    CHECK("mov16", *(const volatile uint16_t *)page == (uint16_t)(ref_page[0] | ref_page[1] << 8));
    CHECK("mov32", *(const volatile uint32_t *)page == *(const uint32_t *)ref_page);
    CHECK("mov64", *(const volatile uint64_t *)page == *(const uint64_t *)ref_page);
    VEC(rd_movdqu, "movdqu", 16);
    VEC(rd_movups, "movups", 16);
    VEC(rd_movaps, "movaps", 16);
    VEC(rd_lddqu, "lddqu", 16);
    VEC(rd_movq_xmm, "movq-xmm", 8);
    VEC(rd_mmx, "mmx", 8);
    VEC(rd_x87, "x87", 8);
    if (sse41)
        VEC(rd_movntdqa, "movntdqa", 16);
    if (avx)
        VEC(rd_avx, "avx", 32);
    static uint8_t copy[4096] __attribute__((aligned(16)));
    memset(copy, 0, sizeof(copy));
    rd_rep_movsb(copy, page, 4096);
    CHECK("rep-movsb", memcmp(copy, ref_page, 4096) == 0);
    memset(copy, 0, sizeof(copy));
    rd_rep_movsq(copy, page, 512);
    CHECK("rep-movsq", memcmp(copy, ref_page, 4096) == 0);
    CHECK("repe-cmpsb", rd_repe_cmpsb(page, ref_page, 4096) == 1);
    CHECK("lodsq", rd_lodsq(page) == *(const uint64_t *)ref_page);
    uint64_t want_scas = 0;
    for (unsigned i = 0; i < 64 && !want_scas; i++)
        if (ref_page[i] == 0xcc)
            want_scas = i + 1;
    CHECK("repne-scasb", rd_scasb(page, 0xcc, 64) == want_scas); /* the INT3 byte must not be found */
    CHECK("xlat", rd_xlat(page, 0) == ref_page[0] && rd_xlat(page, 3) == ref_page[3]);
    uint64_t q0 = *(const uint64_t *)ref_page;
    CHECK("lock-cmpxchg", rd_cmpxchg((void *)(uintptr_t)page, ~q0, 0) == q0);
    if (cx16) {
        memset(got, 0, 16);
        rd_cmpxchg16b((void *)(uintptr_t)page, got);
        CHECK("cmpxchg16b", memcmp(got, ref_page, 16) == 0);
    }
    /* stores into the hooked page (its last 16 bytes), read back byte by byte */
    volatile uint8_t *tail = (volatile uint8_t *)(uintptr_t)(page + 4096 - 16);
    static const uint8_t pattern[16] __attribute__((aligned(16))) = { 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88,
                                                                      0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xf0, 0x01 };
    uint8_t back[16];
    wr_movntdq((void *)(uintptr_t)tail, pattern);
    read_bytes(tail, back, 16);
    CHECK("movntdq-store", memcmp(back, pattern, 16) == 0);
    wr_movnti((void *)(uintptr_t)tail, 0x0102030405060708ULL);
    read_bytes(tail, back, 8);
    CHECK("movnti-store", *(uint64_t *)back == 0x0102030405060708ULL);
    wr_movdqu((void *)(uintptr_t)(tail + 1), pattern);
    read_bytes(tail + 1, back, 15);
    CHECK("movdqu-store", memcmp(back, pattern, 15) == 0);
    wr_fistp((void *)(uintptr_t)tail, pattern);
    read_bytes(tail, back, 8);
    CHECK("fistp-store", memcmp(back, pattern, 8) == 0);
    CHECK("xchg", rw_xchg((void *)(uintptr_t)tail, 0x4242) == *(const uint64_t *)pattern &&
                      *(volatile uint64_t *)tail == 0x4242);
    for (unsigned i = 0; i < 16; i++)
        tail[i] = ref_page[4096 - 16 + i];
    read_bytes(page, copy, 4096);
    CHECK("restored", memcmp(copy, ref_page, 4096) == 0);
#undef VEC
    ucall_detector(10, bad == 0, "wide-reads", "%u of %u reads/stores of svc_open's page wrong:%s (sse4.1 %d, cx16 %d, avx %d)",
                   bad, tried, bad ? failed : " none", sse41, cx16, avx);
    return bad == 0;
}

/* ---- 11 cross-page ---- */

static uint8_t cross_data[4096] __attribute__((aligned(4096)));

static int cross_reads(const uint8_t *end_of_first, const uint8_t *want16, const char *name, char *failed,
                       size_t *fn)
{
    unsigned bad = 0;
    uint8_t buf[16];
    const uint8_t *p8 = end_of_first - 4, *p16 = end_of_first - 8;
    bad += *(const volatile uint64_t *)p8 != *(const uint64_t *)(want16 + 4);
    memset(buf, 0, 16);
    rd_movdqu(p16, buf);
    bad += memcmp(buf, want16, 16) != 0;
    memset(buf, 0, 16);
    rd_rep_movsb(buf, p16, 16);
    bad += memcmp(buf, want16, 16) != 0;
    if (bad)
        *fn += (size_t)snprintf(failed + *fn, *fn < VMT_UCALL_TEXT_LEN ? VMT_UCALL_TEXT_LEN - *fn : 0, " %s(%u)",
                                name, bad);
    return bad == 0;
}

static int detector_cross_page(void)
{
    char failed[VMT_UCALL_TEXT_LEN] = "";
    size_t fn = 0;
    const uint8_t *w = (const uint8_t *)(uintptr_t)svc_va(SVC_WRITE);
    uint8_t want[16];
    /* 1: svc_open's page (hooked) into svc_write's entry: 8 bytes each side */
    read_bytes(w - 8, want, 16);
    int ok = cross_reads(w, want, "hooked-to-hooked", failed, &fn);
    /* 2: an unhooked page (scratch data) into svc_write's frame */
    uint64_t root = read_cr3() & PTE_ADDR;
    int present = 0;
    uint64_t data_pa = pt_translate(root, (uint64_t)(uintptr_t)cross_data, &present);
    uint64_t w_pa = pt_translate(root, (uint64_t)(uintptr_t)w, &present);
    memset(cross_data, 0xa5, sizeof(cross_data));
    pt_map_4k(root, CROSS_VA, data_pa, PTE_LEAF);
    pt_map_4k(root, CROSS_VA + 4096, w_pa, PTE_LEAF);
    invlpg(CROSS_VA);
    invlpg(CROSS_VA + 4096);
    memset(want, 0xa5, 8);
    read_bytes(w, want + 8, 8);
    ok &= cross_reads((const uint8_t *)(uintptr_t)(CROSS_VA + 4096), want, "unhooked-to-hooked", failed, &fn);
    *pt_entry(root, CROSS_VA, 1, 0) = 0;
    *pt_entry(root, CROSS_VA + 4096, 1, 0) = 0;
    invlpg(CROSS_VA);
    invlpg(CROSS_VA + 4096);
    ucall_detector(11, ok, "cross-page", "8/16-byte and rep movsb reads across into svc_write's entry:%s",
                   ok ? " all equal" : failed);
    return ok;
}

/* ---- 12 alias ---- */

static int detector_alias(void)
{
    uint64_t root = read_cr3() & PTE_ADDR;
    volatile uint64_t *orig = pt_entry(root, KERNEL_BASE, 3, 0), *alias = pt_entry(root, KERNEL_BASE - ALIAS_DELTA, 3, 0);
    GUEST_ASSERT(orig && alias && !(*alias & PTE_P));
    *alias = *orig;
    reload_cr3();
    uint64_t spawn = svc_va(SVC_SPAWN);
    const uint8_t *a = (const uint8_t *)(uintptr_t)(spawn - ALIAS_DELTA);
    static uint8_t via_orig[4096], via_alias[4096];
    read_bytes((const uint8_t *)(uintptr_t)spawn, via_orig, 4096);
    read_bytes(a, via_alias, 4096);
    uint8_t v16[16];
    rd_movdqu(a, v16);
    int reads_ok = memcmp(via_orig, via_alias, 4096) == 0 && memcmp(v16, via_orig, 16) == 0;
    /* execute through the alias: rip-relative data resolves to the alias of
     * the same frames, so the service works as usual */
    int64_t (*spawn_alias)(const char *) = (int64_t (*)(const char *))(uintptr_t)(spawn - ALIAS_DELTA);
    uint64_t served = svc_served[SVC_SPAWN];
    workload_calls[SVC_SPAWN]++;
    int64_t pid = spawn_alias("alias");
    int exec_ok = pid >= 100 && svc_served[SVC_SPAWN] == served + 1;
    *alias = 0;
    reload_cr3();
    ucall_report("alias_calls.svc_spawn", 1);
    int pass = reads_ok && exec_ok;
    ucall_detector(12, pass, "alias", "svc_spawn's page through va 0x%lx: reads %s, call returned %ld (%s)",
                   (uint64_t)(uintptr_t)a, reads_ok ? "equal" : "DIFFER", (long)pid, exec_ok ? "ok" : "wrong");
    return pass;
}

/* ---- 13 pt-frame ---- */

static volatile uint64_t pf_count, pf_error;

static int on_pf(struct trap_frame *f)
{
    pf_count++;
    pf_error = f->error;
    f->rip += 3; /* the probe's load below: movzbl (%rax), %eax */
    return 1;
}

static int detector_pt_frame(void)
{
    uint64_t root = read_cr3() & PTE_ADDR;
    int present = 0;
    uint64_t open_pa = pt_translate(root, svc_va(SVC_OPEN), &present);
    uint64_t q = *(const volatile uint64_t *)(uintptr_t)svc_va(SVC_OPEN); /* entry 0 as the guest wrote it */
    volatile uint64_t *pde = pt_entry(root, PT_FRAME_VA, 2, 1);
    GUEST_ASSERT(pde && !(*pde & PTE_P));
    *pde = (open_pa & PTE_ADDR) | PTE_TABLE;
    invlpg(PT_FRAME_VA);
    pf_count = 0;
    trap_set_handler(14, on_pf);
    uint32_t v;
    __asm__ volatile("movzbl (%1), %0" : "=d"(v) : "a"(PT_FRAME_VA) : "memory"); /* 0f b6 10: 3 bytes */
    trap_set_handler(14, mm_page_fault);
    (void)v;
    *pde = 0;
    invlpg(PT_FRAME_VA);
    int want_fault = !(q & PTE_P);
    int reserved = pf_count && (pf_error & 8); /* reserved bits in that "entry": faults for everyone */
    int pass = (pf_count != 0) == want_fault || reserved;
    ucall_detector(13, pass, "pt-frame", "svc_open's frame as a page table: entry 0x%lx (present %d), walk %s",
                   q, !want_fault, pf_count ? (reserved ? "faulted (reserved bits)" : "faulted") : "went through");
    return pass;
}

/* ---- 14 phys-scan ---- */

static int window_equal(const volatile uint64_t *a, const volatile uint64_t *b)
{
    for (unsigned q = 1; q < 8; q++)
        if (a[q] != b[q])
            return 0;
    return 1;
}

static int detector_phys_scan(uint64_t ram_size)
{
    uint64_t root = read_cr3() & PTE_ADDR;
    static uint64_t windows[SVC_COUNT][8];
    for (unsigned s = 0; s < SVC_COUNT; s++)
        read_bytes((const uint8_t *)(uintptr_t)svc_va(s), (uint8_t *)windows[s], 64);
    unsigned copies = 0;
    uint64_t first_copy = 0;
    for (unsigned base = 0; base < SCAN_FRAMES; base += SCAN_WINDOW) {
        for (unsigned f = 0; f < SCAN_WINDOW; f++) {
            pt_map_4k(root, SCAN_VA + f * PAGE_SIZE, ram_size + (uint64_t)(base + f) * PAGE_SIZE, PTE_LEAF);
            invlpg(SCAN_VA + f * PAGE_SIZE);
        }
        for (unsigned f = 0; f < SCAN_WINDOW; f++) {
            const volatile uint64_t *frame = (const volatile uint64_t *)(uintptr_t)(SCAN_VA + f * PAGE_SIZE);
            for (unsigned s = 0; s < SVC_COUNT; s++) {
                if (!window_equal(frame, windows[s]))
                    continue;
                const volatile uint64_t *code = (const volatile uint64_t *)(uintptr_t)svc_va(s);
                unsigned q = 8;
                while (q < PAGE_SIZE / 8 && frame[q] == code[q])
                    q++;
                if (q == PAGE_SIZE / 8 && !copies++)
                    first_copy = ram_size + (uint64_t)(base + f) * PAGE_SIZE;
            }
        }
    }
    for (unsigned f = 0; f < SCAN_WINDOW; f++) {
        *pt_entry(root, SCAN_VA + f * PAGE_SIZE, 1, 0) = 0;
        invlpg(SCAN_VA + f * PAGE_SIZE);
    }
    ucall_detector(14, copies == 0, "phys-scan", "%u frames past RAM (0x%lx..) scanned for the 4 service pages: %u copies (first at 0x%lx)",
                   SCAN_FRAMES, ram_size, copies, first_copy);
    return copies == 0;
}

/* ---- 15 msr-cpuid ---- */

static int detector_msr_cpuid(void)
{
    uint32_t r[4];
    cpuid(1, 0, r);
    int has_tsc = (r[3] >> 4) & 1, has_msr = (r[3] >> 5) & 1, has_apic = (r[3] >> 9) & 1;
    int pass = has_tsc && has_msr;
    uint64_t t0 = 0, m = 0, t1 = 0, apic = 0;
    if (pass) {
        t0 = rdtsc64();
        m = rdmsr64(0x10);
        t1 = rdtsc64();
        pass = t0 <= m && m <= t1 && t1 > t0;
    }
    int apic_ok = 1;
    if (has_msr && has_apic) {
        apic = rdmsr64(0x1b);
        apic_ok = (apic & (1u << 11)) && (apic & (1u << 8)) && (apic & 0xfffff000ULL) == 0xfee00000ULL;
    }
    pass = pass && apic_ok;
    ucall_detector(15, pass, "msr-cpuid", "cpuid tsc %d msr %d apic %d; rdtsc 0x%lx <= IA32_TSC 0x%lx <= rdtsc 0x%lx; APIC_BASE 0x%lx",
                   has_tsc, has_msr, has_apic, t0, m, t1, apic);
    return pass;
}

/* ---- 16 timing ---- */

static uint64_t time_calls(int64_t (*fn)(int64_t), unsigned n)
{
    uint64_t t0 = rdtsc64();
    for (unsigned i = 0; i < n; i++)
        fn(1);
    return rdtsc64() - t0;
}

static int detector_timing(void)
{
    enum { CALLS = 64, ROUNDS = 7 };
    uint64_t best_hooked = ~0ULL, best_twin = ~0ULL;
    for (unsigned r = 0; r < ROUNDS; r++) {
        workload_calls[SVC_EXIT] += CALLS;
        uint64_t h = time_calls(svc_exit, CALLS);
        uint64_t t = time_calls(svc_exit_twin, CALLS);
        if (h < best_hooked)
            best_hooked = h;
        if (t < best_twin)
            best_twin = t;
    }
    GUEST_ASSERT_EQ(twin_served, (uint64_t)CALLS * ROUNDS);
    /* |hooked - twin| <= 5% of twin, in integers */
    uint64_t diff = best_hooked > best_twin ? best_hooked - best_twin : best_twin - best_hooked;
    int pass = best_twin > 0 && diff * 100 <= best_twin * 5;
    uint64_t permille = best_twin ? best_hooked * 1000 / best_twin : 0;
    ucall_detector(16, pass, "timing", "%u calls: svc_exit %lu cycles, unhooked twin %lu (ratio %lu.%03lu, limit 1.050)",
                   CALLS, best_hooked, best_twin, permille / 1000, permille % 1000);
    return pass;
}

unsigned detectors_more_run(uint64_t ram_size, unsigned skip)
{
    unsigned failed = 0;
    int avx = vector_init();
    if (!(skip & (1u << 9)))
        failed += !detector_own_traps((skip >> 17) & 1);
    if (!(skip & (1u << 10)))
        failed += !detector_wide_reads(avx);
    if (!(skip & (1u << 11)))
        failed += !detector_cross_page();
    if (!(skip & (1u << 12)))
        failed += !detector_alias();
    if (!(skip & (1u << 13)))
        failed += !detector_pt_frame();
    if (!(skip & (1u << 14)))
        failed += !detector_phys_scan(ram_size);
    if (!(skip & (1u << 15)))
        failed += !detector_msr_cpuid();
    if (!(skip & (1u << 16)))
        failed += !detector_timing();
    return failed;
}
