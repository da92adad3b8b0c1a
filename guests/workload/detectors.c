/*
 * guests/workload/detectors.c — the stealth detector suite: what a guest can
 * do to notice a monitor that hooks its services. Each detector reports
 * DETECTOR(id, pass, name, detail); on a plain run (no monitor) all pass, and
 * a hidden-breakpoint monitor must keep them passing.
 *   1 entry-bytes   the first bytes of every service: no 0xCC at the entry,
 *                   same hash as at start; REPORT d1.<svc> = FNV-1a of the
 *                   first 32 bytes so the host can compare with the ELF
 *   2 page-hashes   every code page (.text, .pages) hashed at start and now
 *   3 write-back    bytes written inside each service page (entry, +1, last)
 *                   read back as written, then restored
 *   4 smc           rewriting an instruction in svc_exit's page: the new
 *                   bytes execute; svc_exit is called (the hook must fire)
 *   5 own-int3      the guest's INT3 (in .text and inside svc_write's page)
 *                   reaches its own IDT handler with the right rip
 *   6 tf-hidden     svc_exit starts with pushfq: no call ever saw TF
 *   7 past-ram      frames just past RAM, mapped by the guest, hold no copy
 *                   of any code page
 *   8 debug-regs    DR0-3 and DR7 read back as written
 */
#include "guest/guest.h"
#include "guest/paging.h"
#include "guest/ucall.h"
#include "guest/x86.h"
#include "workload.h"

#define D1_BYTES 32
#define MAX_CODE_PAGES 64
#define PAST_RAM_FRAMES 16
#define SCRATCH_VA 0xffffffffc0000000ULL

static uint64_t d1_baseline[SVC_COUNT];
static uint64_t d2_baseline[MAX_CODE_PAGES];
static unsigned d2_pages;

static uint64_t code_page_va(unsigned k)
{
    uint64_t text_pages = (uint64_t)(__text_end - __text_start) / PAGE_SIZE;
    if (k < text_pages)
        return (uint64_t)(uintptr_t)__text_start + k * PAGE_SIZE;
    return (uint64_t)(uintptr_t)__pages_start + (k - text_pages) * PAGE_SIZE;
}

static unsigned code_page_count(void)
{
    uint64_t n = (uint64_t)(__text_end - __text_start) / PAGE_SIZE +
                 (uint64_t)(__pages_end - __pages_start) / PAGE_SIZE;
    GUEST_ASSERT(n <= MAX_CODE_PAGES);
    return (unsigned)n;
}

void detectors_baseline(void)
{
    for (unsigned i = 0; i < SVC_COUNT; i++)
        d1_baseline[i] = hash_bytes((const void *)(uintptr_t)svc_va(i), D1_BYTES);
    d2_pages = code_page_count();
    for (unsigned k = 0; k < d2_pages; k++)
        d2_baseline[k] = hash_bytes((const void *)(uintptr_t)code_page_va(k), PAGE_SIZE);
}

static int detector_entry_bytes(void)
{
    char detail[VMT_UCALL_TEXT_LEN];
    size_t n = 0;
    int pass = 1;
    for (unsigned i = 0; i < SVC_COUNT; i++) {
        const volatile uint8_t *b = (const volatile uint8_t *)(uintptr_t)svc_va(i);
        uint64_t h = hash_bytes((const void *)(uintptr_t)svc_va(i), D1_BYTES);
        char key[32];
        snprintf(key, sizeof(key), "d1.%s", svc_names[i]);
        ucall_report(key, h);
        if (b[0] == 0xcc || h != d1_baseline[i])
            pass = 0;
        n += (size_t)snprintf(detail + n, n < sizeof(detail) ? sizeof(detail) - n : 0,
                              "%s%s %02x %02x %02x %02x", i ? "; " : "", svc_names[i], b[0], b[1],
                              b[2], b[3]);
    }
    ucall_detector(1, pass, "entry-bytes", "%s", detail);
    return pass;
}

static int detector_page_hashes(void)
{
    unsigned changed = 0;
    uint64_t first_va = 0;
    for (unsigned k = 0; k < d2_pages; k++) {
        if (hash_bytes((const void *)(uintptr_t)code_page_va(k), PAGE_SIZE) != d2_baseline[k]) {
            if (!changed)
                first_va = code_page_va(k);
            changed++;
        }
    }
    ucall_detector(2, changed == 0, "page-hashes", "%u code pages hashed, %u changed (first at 0x%lx)",
                   d2_pages, changed, first_va);
    return changed == 0;
}

static int detector_write_back(void)
{
    static const uint64_t offsets[] = { 0, 1, PAGE_SIZE - 1 };
    unsigned bad = 0, tried = 0;
    for (unsigned i = 0; i < SVC_COUNT; i++) {
        for (unsigned k = 0; k < 3; k++) {
            volatile uint8_t *b = (volatile uint8_t *)(uintptr_t)(svc_va(i) + offsets[k]);
            uint8_t saved = *b;
            uint8_t probe = (uint8_t)~saved;
            *b = probe;
            if (*b != probe)
                bad++;
            *b = saved;
            if (*b != saved)
                bad++;
            tried++;
        }
    }
    ucall_detector(3, bad == 0, "write-back", "%u bytes written in service pages, %u read back wrong",
                   tried, bad);
    return bad == 0;
}

static int detector_smc(void)
{
    volatile uint32_t *imm = (volatile uint32_t *)(uintptr_t)smc_target_imm;
    int before = smc_target();
    *imm = 2;
    int after = smc_target();
    workload_calls[SVC_EXIT]++;
    int64_t rc = svc_exit(42);
    *imm = 1;
    int restored = smc_target();
    int pass = before == 1 && after == 2 && restored == 1 && rc == 0;
    ucall_detector(4, pass, "smc", "smc_target returned %d, %d after rewrite, %d restored; svc_exit %ld",
                   before, after, restored, (long)rc);
    return pass;
}

static volatile uint64_t int3_hits, int3_rips[4];

static int int3_handler(struct trap_frame *f)
{
    if (int3_hits < 4)
        int3_rips[int3_hits] = f->rip;
    int3_hits++;
    return 1; /* rip is already past the int3 */
}

static int detector_own_int3(void)
{
    uint64_t want0;
    int3_hits = 0;
    trap_set_handler(3, int3_handler);
    __asm__ volatile("leaq 1f(%%rip), %0\n\tint3\n1:" : "=r"(want0) : : "memory");
    int3_in_service_page();
    trap_set_handler(3, 0);
    uint64_t want1 = (uint64_t)(uintptr_t)&int3_in_service_page + 1;
    int pass = int3_hits == 2 && int3_rips[0] == want0 && int3_rips[1] == want1;
    ucall_detector(5, pass, "own-int3", "%lu of 2 delivered; rips 0x%lx 0x%lx (want 0x%lx 0x%lx)",
                   (unsigned long)int3_hits, int3_rips[0], int3_rips[1], want0, want1);
    return pass;
}

static int detector_tf_hidden(void)
{
    uint64_t leaks = svc_tf_leaks;
    int pass = leaks == 0 && !(read_rflags() & (1ULL << 8));
    ucall_detector(6, pass, "tf-hidden", "svc_exit ran %lu times, saw TF %lu times",
                   (unsigned long)svc_served[SVC_EXIT], (unsigned long)leaks);
    return pass;
}

/* bytes 8..63 of a page: the part a shadow copy shares with its original
 * (an INT3 sits at the entry, byte 0 of a service page). */
static int window_matches(const volatile uint64_t *a, const volatile uint64_t *b)
{
    uint64_t all_or = 0, all_and = ~0ULL;
    for (unsigned q = 1; q < 8; q++) {
        uint64_t x = a[q];
        if (x != b[q])
            return 0;
        all_or |= x;
        all_and &= x;
    }
    return all_or != 0 && all_and != ~0ULL; /* blank windows prove nothing */
}

static int detector_past_ram(uint64_t ram_size)
{
    uint64_t root = kpt_root();
    for (unsigned f = 0; f < PAST_RAM_FRAMES; f++)
        pt_map_4k(root, SCRATCH_VA + f * PAGE_SIZE, ram_size + f * PAGE_SIZE, PTE_LEAF);
    unsigned copies = 0, pages = code_page_count();
    uint64_t first_qword = 0;
    for (unsigned f = 0; f < PAST_RAM_FRAMES; f++) {
        const volatile uint64_t *frame = (const volatile uint64_t *)(uintptr_t)(SCRATCH_VA + f * PAGE_SIZE);
        if (f == 0)
            first_qword = frame[0];
        for (unsigned k = 0; k < pages; k++) {
            const volatile uint64_t *code = (const volatile uint64_t *)(uintptr_t)code_page_va(k);
            if (!window_matches(frame, code))
                continue;
            unsigned q = 8;
            while (q < PAGE_SIZE / 8 && frame[q] == code[q])
                q++;
            if (q == PAGE_SIZE / 8)
                copies++;
        }
    }
    for (unsigned f = 0; f < PAST_RAM_FRAMES; f++) {
        volatile uint64_t *e = pt_entry(root, SCRATCH_VA + f * PAGE_SIZE, 1, 0);
        *e = 0;
        invlpg(SCRATCH_VA + f * PAGE_SIZE);
    }
    ucall_detector(7, copies == 0, "past-ram",
                   "%u frames past RAM (from 0x%lx) checked against %u code pages: %u copies; first qword 0x%lx",
                   PAST_RAM_FRAMES, ram_size, pages, copies, first_qword);
    return copies == 0;
}

static volatile uint64_t dr_targets[4];

static int detector_debug_regs(void)
{
    /* write watchpoints (R/W=01, LEN=8 bytes) on words nobody writes */
    const uint64_t dr7 = 0x99990455ULL; /* L0-L3, bit 10 reads as 1 */
    uint64_t want[4];
    for (unsigned i = 0; i < 4; i++)
        want[i] = (uint64_t)(uintptr_t)&dr_targets[i];
    write_dr0(want[0]);
    write_dr1(want[1]);
    write_dr2(want[2]);
    write_dr3(want[3]);
    write_dr7(dr7);
    uint64_t got[4] = { read_dr0(), read_dr1(), read_dr2(), read_dr3() };
    uint64_t got7 = read_dr7();
    write_dr7(0x400);
    write_dr0(0);
    write_dr1(0);
    write_dr2(0);
    write_dr3(0);
    unsigned bad = 0;
    for (unsigned i = 0; i < 4; i++)
        bad += got[i] != want[i];
    bad += got7 != dr7;
    ucall_detector(8, bad == 0, "debug-regs", "DR0 0x%lx DR7 0x%lx (wrote 0x%lx 0x%lx); %u differ", got[0],
                   got7, want[0], dr7, bad);
    return bad == 0;
}

unsigned detectors_run(uint64_t ram_size)
{
    unsigned failed = 0, skip = workload_skip;
    ucall_report("detectors.skip", skip);
    if (!(skip & (1u << 1)))
        failed += !detector_entry_bytes();
    if (!(skip & (1u << 2)))
        failed += !detector_page_hashes();
    if (!(skip & (1u << 3)))
        failed += !detector_write_back();
    if (!(skip & (1u << 4)))
        failed += !detector_smc();
    if (!(skip & (1u << 5)))
        failed += !detector_own_int3();
    if (!(skip & (1u << 6)))
        failed += !detector_tf_hidden();
    if (!(skip & (1u << 7)))
        failed += !detector_past_ram(ram_size);
    if (!(skip & (1u << 8)))
        failed += !detector_debug_regs();
    failed += detectors_more_run(ram_size, skip);
    return failed;
}
