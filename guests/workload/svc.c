/*
 * guests/workload/svc.c — the services a monitor hooks. Each one sits alone
 * at the start of its own 4 KiB page in .pages (GUEST_PAGE_FUNC), so the
 * memory manager can page it out, move it, or map its region with a 2 MiB
 * page, and a hook at its entry must survive all of that. Arguments follow
 * the SysV ABI (rdi, rsi, rdx) so a monitor can decode them; strings are
 * NUL-terminated in guest memory.
 */
#include "guest/guest.h"
#include "workload.h"

volatile uint64_t svc_served[SVC_COUNT];
volatile uint64_t svc_tf_leaks;
static uint64_t svc_last_path_hash, svc_write_sum, svc_next_pid = 100;

const char *const svc_names[SVC_COUNT] = { "svc_open", "svc_write", "svc_spawn", "svc_exit" };

GUEST_PAGE_FUNC(1_open) int64_t svc_open(const char *path)
{
    uint64_t h = 0;
    for (const char *p = path; *p; p++)
        h = h * 31 + (unsigned char)*p;
    svc_last_path_hash = h;
    svc_served[SVC_OPEN]++;
    return 3 + (int64_t)(svc_served[SVC_OPEN] % 61);
}

GUEST_PAGE_FUNC(2_write) int64_t svc_write(int64_t fd, const void *buf, uint64_t len)
{
    const unsigned char *b = buf;
    if (fd < 3)
        return -9; /* EBADF */
    for (uint64_t i = 0; i < len; i++)
        svc_write_sum += b[i];
    svc_served[SVC_WRITE]++;
    return (int64_t)len;
}

GUEST_PAGE_FUNC(3_spawn) int64_t svc_spawn(const char *name)
{
    svc_served[SVC_SPAWN]++;
    return name && *name ? (int64_t)svc_next_pid++ : -22;
}

uint64_t svc_va(unsigned svc)
{
    switch (svc) {
    case SVC_OPEN: return (uint64_t)(uintptr_t)&svc_open;
    case SVC_WRITE: return (uint64_t)(uintptr_t)&svc_write;
    case SVC_SPAWN: return (uint64_t)(uintptr_t)&svc_spawn;
    default: return (uint64_t)(uintptr_t)&svc_exit;
    }
}
