/*
 * tests/mem/mem_expect.h — what every mem-driver test does after a call:
 * compare the status and run the driver's invariant checker. Include after
 * <cmocka.h>.
 */
#ifndef VMT_TESTS_MEM_EXPECT_H
#define VMT_TESTS_MEM_EXPECT_H

#include "vmtrap/driver.h"
#include "vmtrap/mem.h"

/* Assert the driver's invariants hold. */
static inline void check(vmt_driver *d)
{
    char why[256] = "";
    if (vmt_mem_check(d, why, sizeof why))
        fail_msg("vmt_mem_check: %s", why);
}

/* Run a call, compare its status, then check invariants. */
#define EXPECT(d, want, call)                                                                              \
    do {                                                                                                   \
        vmt_status st_ = (call);                                                                           \
        if (st_ != (want))                                                                                 \
            fail_msg("%s: got %s (%s), want %s", #call, vmt_strerror(st_), vmt_driver_error(d),            \
                     vmt_strerror(want));                                                                  \
        check(d);                                                                                          \
    } while (0)
#define OK(d, call) EXPECT(d, VMT_OK, call)

/* A mem driver from cfg, checked. */
static inline vmt_driver *mem_make(const vmt_mem_config *cfg)
{
    vmt_driver *d = NULL;
    char why[256] = "";
    if (vmt_mem_driver_create(cfg, &d, why, sizeof why))
        fail_msg("vmt_mem_driver_create: %s", why);
    check(d);
    return d;
}

#endif
