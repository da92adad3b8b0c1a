/*
 * tests/ptm/ptm_guest_run.h — run the `workload` testbed guest on a
 * CPU-running driver with the page-table monitor watching its four service
 * pages, and check every page-table change the guest reports against the
 * monitor's events. Shared by test_ptm_guest (asserts) and bench_ptm
 * (exits per write and time). No cmocka here.
 *
 * Monitoring starts at the guest's first ucall (its own CR3 is live by
 * then) and the vCPU is switched into the monitored view. At every STEP
 * ucall (what the guest's memory manager just did):
 *  - the translation of each service VA (walked by the session) equals the
 *    one the events say (start + every PAGE_IN/OUT/REMAP), and the monitor's
 *    own query agrees;
 *  - pageout / pagein / move produced that event for that VA with those
 *    frames; cmpxchg-fail, replace-pt and split-2m produced none;
 *  - every event is consistent with the state before it (no duplicates);
 *  - vmt_ptm_check() holds.
 * The first violation stops the run and is reported in `error`.
 */
#ifndef VMT_TESTS_PTM_GUEST_RUN_H
#define VMT_TESTS_PTM_GUEST_RUN_H

#include <stdbool.h>
#include <stdint.h>

#include "vmtrap/ptm.h"

#define PTM_GUEST_RAM (64ULL << 20)

typedef enum ptm_guest_mode {
    PTM_GUEST_WITH_DATA,   /* write events as the driver reports them */
    PTM_GUEST_STEP_SIZE,   /* value stripped (like Xen): the monitor steps */
    PTM_GUEST_STEP_BLIND,  /* value and size stripped */
    PTM_GUEST_UNMONITORED, /* no monitor at all (a baseline) */
} ptm_guest_mode;

typedef struct ptm_guest_result {
    bool skipped;          /* the driver is not built or cannot run here */
    char error[512];       /* skip reason, or the first failure ("" if none) */
    char driver[16];
    bool done;             /* DONE received */
    int64_t exit_code;
    uint64_t steps;        /* STEP ucalls checked */
    uint64_t ptm_exits;    /* driver events the monitor handled */
    uint64_t events[4];    /* page events by kind */
    vmt_ptm_stats stats;
    vmt_status check;      /* vmt_ptm_check at the end */
    bool data_and_emulate; /* the driver has WRITE_DATA and EMULATE */
    uint64_t driver_exits; /* the driver's own exit counter */
    double seconds;        /* wall time of the run */
} ptm_guest_result;

/* driver: "emu" or "kvm" (those built in: PTM_GUEST_HAVE_EMU/_KVM). */
void ptm_guest_run(const char *driver, const char *elf_path, ptm_guest_mode mode, ptm_guest_result *out);
const char *ptm_guest_mode_name(ptm_guest_mode mode);

#endif
