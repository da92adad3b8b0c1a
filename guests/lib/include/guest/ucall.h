/*
 * guest/ucall.h — the guest half of the ucall protocol (vmtrap/ucall.h has
 * the wire format and the host half).
 *
 * Each call fills one static vmt_ucall_wire (single vCPU) and writes its
 * physical address to VMT_PORT_UCALL. GUEST_ASSERT* report the file, line,
 * expression and values through ASSERT_FAIL and halt, like the KVM
 * selftests' guest asserts.
 */
#ifndef GUEST_UCALL_H
#define GUEST_UCALL_H

#include <stdint.h>

#include "vmtrap/machine.h"
#include "vmtrap/ucall.h"

void ucall_print(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void ucall_report(const char *key, uint64_t value);
/* nargs uint64_t values follow (at most VMT_UCALL_MAX_ARGS). text may be NULL. */
void ucall_step(const char *name, const char *text, unsigned nargs, ...);
void ucall_detector(unsigned id, int pass, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* nvals uint64_t values follow (at most VMT_UCALL_MAX_ARGS - 1); halts. */
__attribute__((noreturn)) void ucall_assert_fail(const char *file, unsigned line, const char *expr,
                                                 unsigned nvals, ...);
void ucall_done(uint64_t exit_code);

#define GUEST_ASSERT(cond)                                                        \
    do {                                                                          \
        if (!(cond))                                                              \
            ucall_assert_fail(__FILE__, __LINE__, #cond, 0);                      \
    } while (0)

/* Shows both values on failure. */
#define GUEST_ASSERT_EQ(a, b)                                                     \
    do {                                                                          \
        uint64_t _ga = (uint64_t)(a), _gb = (uint64_t)(b);                        \
        if (_ga != _gb)                                                           \
            ucall_assert_fail(__FILE__, __LINE__, #a " == " #b, 2, _ga, _gb);     \
    } while (0)

#define GUEST_ASSERT_NE(a, b)                                                     \
    do {                                                                          \
        uint64_t _ga = (uint64_t)(a), _gb = (uint64_t)(b);                        \
        if (_ga == _gb)                                                           \
            ucall_assert_fail(__FILE__, __LINE__, #a " != " #b, 2, _ga, _gb);     \
    } while (0)

#endif
