/*
 * guests/smoke/smoke.c — the smallest testbed guest: proves the boot path,
 * the guest's own page tables, serial output and every ucall command.
 * Host tests (tests/guests) check exactly this sequence:
 *   PRINT "smoke: hello", PRINT of a formatted line (the guest's printf),
 *   serial line "smoke: serial ok",
 *   REPORT ram_size = <RAM>, STEP "smoke" (1, 2, 3),
 *   DETECTOR 0 pass "smoke", DONE 0.
 * Parameter smoke_fault (host-patchable, default 0) instead ends the guest
 * in an exception nobody handles, to prove that path: 1 = ud2 (#UD),
 * 2 = read of an unmapped address (#PF with cr2 = SMOKE_UNMAPPED_VA),
 * 3 = GUEST_ASSERT_EQ(1, 2) failing.
 */
#include "guest/guest.h"
#include "guest/paging.h"
#include "guest/ucall.h"
#include "guest/x86.h"

#define SMOKE_UNMAPPED_VA 0x0000700000000000ULL

__attribute__((section(".data"))) volatile uint32_t smoke_fault = 0;

int guest_main(uint64_t ram_size)
{
    ucall_print("smoke: hello");
    ucall_print("fmt: %d %u %x %08lx %s|%-4s|%3d|%c %% %lld", -42, 42u, 0xbeefu, 0x1234UL, "str", "ab", 7, 'z',
                (long long)-9000000000LL);
    serial_write("smoke: serial ok\n");
    ucall_report("ram_size", ram_size);
    /* running on our own tables, at KERNEL_VMA */
    GUEST_ASSERT_EQ(read_cr3() & PTE_ADDR, kpt_root());
    GUEST_ASSERT((uint64_t)(uintptr_t)&guest_main >= KERNEL_VMA);
    switch (smoke_fault) {
    case 1:
        __asm__ volatile("ud2");
        break;
    case 2:
        (void)*(volatile uint64_t *)(uintptr_t)SMOKE_UNMAPPED_VA;
        break;
    case 3:
        GUEST_ASSERT_EQ(1, 2);
        break;
    default:
        break;
    }
    ucall_step("smoke", "three numbers", 3, (uint64_t)1, (uint64_t)2, (uint64_t)3);
    ucall_detector(0, 1, "smoke", "always passes");
    return 0;
}
