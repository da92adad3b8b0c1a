/*
 * guests/smoke/smoke.c — the smallest testbed guest: proves the boot path,
 * the guest's own page tables, serial output and every ucall command.
 * Host tests (tests/guests) check exactly this sequence:
 *   PRINT "smoke: hello", serial line "smoke: serial ok",
 *   REPORT ram_size = <RAM>, STEP "smoke" (1, 2, 3),
 *   DETECTOR 0 pass "smoke", DONE 0.
 */
#include "guest/guest.h"
#include "guest/paging.h"
#include "guest/ucall.h"
#include "guest/x86.h"

int guest_main(uint64_t ram_size)
{
    ucall_print("smoke: hello");
    serial_write("smoke: serial ok\n");
    ucall_report("ram_size", ram_size);
    /* running on our own tables, at KERNEL_VMA */
    GUEST_ASSERT_EQ(read_cr3() & PTE_ADDR, kpt_root());
    GUEST_ASSERT((uint64_t)(uintptr_t)&guest_main >= KERNEL_VMA);
    ucall_step("smoke", "three numbers", 3, (uint64_t)1, (uint64_t)2, (uint64_t)3);
    ucall_detector(0, 1, "smoke", "always passes");
    return 0;
}
