/*
 * guests/pfinject/pfinject.c — a guest whose hooked call has its argument in
 * memory that is not present until the guest's own #PF handler maps it
 * (host side: tests/guests/test_pfinject.c, the monitor's page-fault
 * injection, vmt_hit_inject_pf).
 *
 * Two pages in the lower (user) half, neither mapped at the start:
 *   LAZY_VA  — backed by a frame that already holds LAZY_TEXT; the #PF
 *              handler maps it on the first fault (demand paging);
 *   NEVER_VA — the handler counts faults there and maps nothing (a page
 *              that cannot be brought in: the host's tries must run out);
 *   CLI_VA   — passed with interrupts disabled: not a safe point, the host
 *              must not inject (cli_faults stays 0).
 * pf_consume(name) is the hooked function; it never reads *name, so every
 * fault the handler counts came from the host's injection. With interrupts
 * enabled (the monitor injects only then) the guest calls
 * pf_consume(LAZY_VA) and pf_consume(NEVER_VA), then reports: lazy_faults,
 * never_faults, other_faults (must be 0), last_error (error code of the
 * last fault), lazy_cr2 (CR2 of the first LAZY fault), consume_calls (the
 * body ran once per call, however many #PFs went in at its entry), and
 * lazy_present (1: the page is mapped at the end iff a fault mapped it).
 */
#include <stdint.h>

#include "guest/guest.h"
#include "guest/paging.h"
#include "guest/ucall.h"
#include "guest/x86.h"

#define LAZY_VA 0x0000000040001000ULL
#define NEVER_VA 0x0000000040203000ULL
#define CLI_VA 0x0000000040405000ULL
#define LAZY_TEXT "/etc/pfinject/lazy.conf"

static volatile uint64_t lazy_faults, never_faults, cli_faults, other_faults, last_error, lazy_cr2;
static volatile uint64_t consume_calls;
static uint64_t lazy_frame;

/* The hooked function: the host decodes `name`; the guest never reads it. */
__attribute__((noinline, used)) uint64_t pf_consume(const char *name);
__attribute__((noinline, used)) uint64_t pf_consume(const char *name)
{
    consume_calls++;
    __asm__ volatile("" : : "r"(name) : "memory");
    return (uint64_t)(uintptr_t)name;
}

static int on_page_fault(struct trap_frame *f)
{
    uint64_t cr2 = read_cr2();
    last_error = f->error;
    if ((cr2 & ~0xfffULL) == LAZY_VA) {
        if (!lazy_faults++)
            lazy_cr2 = cr2;
        pt_map_4k(kpt_root(), LAZY_VA, lazy_frame, PTE_LEAF | PTE_US);
        invlpg(LAZY_VA);
        return 1;
    }
    if ((cr2 & ~0xfffULL) == NEVER_VA) {
        never_faults++;
        return 1; /* nothing to bring in; the faulting code never touches it */
    }
    if ((cr2 & ~0xfffULL) == CLI_VA) {
        cli_faults++;
        return 1;
    }
    other_faults++;
    return 0; /* report and halt */
}

int guest_main(uint64_t ram_size)
{
    (void)ram_size;
    lazy_frame = pmm_alloc();
    strlcpy(phys_ptr(lazy_frame), LAZY_TEXT, 4096);
    int ok = 1;
    pt_translate(kpt_root(), LAZY_VA, &ok);
    GUEST_ASSERT(!ok);
    pt_translate(kpt_root(), NEVER_VA, &ok);
    GUEST_ASSERT(!ok);
    trap_set_handler(14, on_page_fault);

    __asm__ volatile("sti" ::: "memory");
    uint64_t r1 = pf_consume((const char *)LAZY_VA);
    uint64_t r2 = pf_consume((const char *)NEVER_VA);
    __asm__ volatile("cli" ::: "memory");
    uint64_t r3 = pf_consume((const char *)CLI_VA);
    GUEST_ASSERT_EQ(r3, CLI_VA);
    GUEST_ASSERT_EQ(r1, LAZY_VA);
    GUEST_ASSERT_EQ(r2, NEVER_VA);

    pt_translate(kpt_root(), LAZY_VA, &ok);
    ucall_report("lazy_faults", lazy_faults);
    ucall_report("never_faults", never_faults);
    ucall_report("cli_faults", cli_faults);
    ucall_report("other_faults", other_faults);
    ucall_report("last_error", last_error);
    ucall_report("lazy_cr2", lazy_cr2);
    ucall_report("consume_calls", consume_calls);
    ucall_report("lazy_present", (uint64_t)ok);
    GUEST_ASSERT_EQ((uint64_t)ok, lazy_faults ? 1u : 0u);
    ucall_done(0);
    return 0;
}
