/*
 * guests/kvmtime/kvmtime.c — a hooked function and its unhooked twin, timed
 * with RDTSC from inside (the timing class of the stealth detectors, issue
 * 14): the host puts a breakpoint on kvmtime_hooked and spends time in the
 * monitor at every hit; the guest reports the TSC ticks of kvmtime_rounds x
 * kvmtime_calls calls of each, interleaved per round so both see the same
 * host conditions:
 *   REPORT tsc.hooked, REPORT tsc.twin, REPORT calls, DONE 0.
 * Parameters (host-patchable): kvmtime_calls (per round), kvmtime_rounds.
 */
#include <stdint.h>

#include "guest/guest.h"
#include "guest/ucall.h"

__attribute__((section(".data"))) volatile uint32_t kvmtime_calls = 100;
__attribute__((section(".data"))) volatile uint32_t kvmtime_rounds = 10;

uint64_t kvmtime_hooked(uint64_t x);
uint64_t kvmtime_twin(uint64_t x);

/* noipa: neither inlined nor folded into one body with its twin */
__attribute__((noipa)) uint64_t kvmtime_hooked(uint64_t x) { return x * 3 + 1; }
__attribute__((noipa)) uint64_t kvmtime_twin(uint64_t x) { return x * 3 + 1; }

static inline uint64_t rdtsc_ordered(void)
{
    uint32_t lo, hi;
    __asm__ volatile("lfence; rdtsc" : "=a"(lo), "=d"(hi) : : "memory");
    return (uint64_t)hi << 32 | lo;
}

int guest_main(uint64_t ram_size)
{
    (void)ram_size;
    uint64_t hooked = 0, twin = 0, sum = 0;
    uint32_t calls = kvmtime_calls, rounds = kvmtime_rounds;
    for (uint32_t r = 0; r < rounds; r++) {
        uint64_t t0 = rdtsc_ordered();
        for (uint32_t i = 0; i < calls; i++)
            sum += kvmtime_hooked(i);
        uint64_t t1 = rdtsc_ordered();
        for (uint32_t i = 0; i < calls; i++)
            sum -= kvmtime_twin(i);
        uint64_t t2 = rdtsc_ordered();
        hooked += t1 - t0;
        twin += t2 - t1;
    }
    GUEST_ASSERT_EQ(sum, 0);
    ucall_report("tsc.hooked", hooked);
    ucall_report("tsc.twin", twin);
    ucall_report("calls", (uint64_t)calls * rounds);
    return 0;
}
