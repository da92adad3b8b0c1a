/*
 * guests/workload/main.c — the workload guest: a small kernel that calls its
 * four services in a loop while its memory manager pages, moves, merges,
 * splits and re-tables the pages that hold them, then runs the stealth
 * detectors and reports.
 *
 * Every 8th iteration the path given to svc_open and the buffer given to
 * svc_write are in workload_user_page, paged out just before each call: a
 * monitor decoding the arguments at the hook finds them not present, and
 * the service's own read faults the page back in (STEP pagein "demand
 * fault").
 *
 * Reports, in order: REPORT iterations, REPORT detectors.skip ... (see
 * detectors.c), STEP per memory-manager operation during the loop, DETECTOR
 * 1..8, REPORT mm.* counters, REPORT calls.<svc> (calls made) for each
 * service, then DONE 0. The guest asserts (ASSERT_FAIL + halt) that every
 * service received exactly the calls it was made and returned what it must.
 */
#include "guest/guest.h"
#include "guest/paging.h"
#include "guest/ucall.h"
#include "guest/x86.h"
#include "workload.h"

/* Host-patchable parameters (see workload.h). In .data, so they are in the
 * ELF and at a fixed physical address. */
__attribute__((section(".data"))) volatile uint32_t workload_iterations = 32;
/* Detectors to leave out (bit n = detector n; bit 17 = detector 9 without
 * ICEBP). Every driver runs them all by default; a host sets bits with
 * --set workload_skip=N. */
__attribute__((section(".data"))) volatile uint32_t workload_skip = 0;

volatile uint64_t workload_calls[SVC_COUNT];

__attribute__((aligned(4096))) char workload_user_page[4096];
#define USER_PATH_TEXT "/paged/out/path.txt"
#define USER_MESSAGE_TEXT "this message was paged out\n"
_Static_assert(sizeof(USER_PATH_TEXT) <= 64, "the path fits before the message");

static const char *const paths[] = {
    "/etc/passwd", "/var/log/vmtrap.log", "/tmp/scratch.bin", "/home/guest/notes.txt",
};
static const char *const programs[] = { "init", "sh", "cron", "vmtrap-agent", "editor" };
static const char message[] = "hello from the workload guest\n";

int guest_main(uint64_t ram_size)
{
    uint32_t iterations = workload_iterations;
    if (iterations < 1)
        iterations = 1;
    if (iterations > 100000)
        iterations = 100000;
    ucall_report("iterations", iterations);
    serial_printf("workload: %u iterations, RAM %lu MiB\n", iterations, (unsigned long)(ram_size >> 20));

    strlcpy(USER_PATH, USER_PATH_TEXT, 64);
    strlcpy(USER_MESSAGE, USER_MESSAGE_TEXT, 64);
    mm_init();
    detectors_baseline();

    int64_t expected_pid = 100;
    for (uint32_t it = 0; it < iterations; it++) {
        /* every 8th iteration the strings passed are in a paged-out page */
        int paged_args = it % 8 == 7;
        const char *path = paths[it % (sizeof(paths) / sizeof(paths[0]))];
        if (paged_args) {
            mm_page_out_user();
            path = USER_PATH;
        }
        workload_calls[SVC_OPEN]++;
        int64_t fd = svc_open(path);
        GUEST_ASSERT(fd >= 3);

        const char *buf = message;
        uint64_t len = sizeof(message) - 1 - (it % 7);
        if (paged_args) {
            mm_page_out_user();
            buf = USER_MESSAGE;
            len = sizeof(USER_MESSAGE_TEXT) - 1;
        }
        workload_calls[SVC_WRITE]++;
        int64_t written = svc_write(fd, buf, len);
        GUEST_ASSERT_EQ(written, len);

        workload_calls[SVC_SPAWN]++;
        int64_t pid = svc_spawn(programs[it % (sizeof(programs) / sizeof(programs[0]))]);
        GUEST_ASSERT_EQ(pid, expected_pid);
        expected_pid++;

        workload_calls[SVC_EXIT]++;
        GUEST_ASSERT_EQ(svc_exit(pid), 0);

        mm_step(it);
    }
    mm_settle();

    unsigned failed = detectors_run(ram_size);
    mm_report();
    for (unsigned i = 0; i < SVC_COUNT; i++) {
        char key[32];
        snprintf(key, sizeof(key), "calls.%s", svc_names[i]);
        ucall_report(key, workload_calls[i]);
        GUEST_ASSERT_EQ(svc_served[i], workload_calls[i]);
    }
    ucall_report("detectors.failed", failed);
    serial_printf("workload: done, %u detector(s) failed\n", failed);
    return 0;
}
