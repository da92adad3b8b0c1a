/*
 * resume/resume_until.c — run a resumed machine up to a point that is not
 * an instruction count: a guest virtual time, or the N-th execution of an
 * instruction address (a kernel function's entry), so callers can save a
 * snapshot exactly there.
 *
 * Design: both loops are vmt_resume_run's event loop with a different end.
 * The time loop runs in chunks of at most TIME_CHUNK instructions, fewer
 * when the virtual clock (guest ns per instruction) says the target is
 * nearer, so it never runs past the target except when an idle HLT moves
 * time forward to the next device deadline: it ends at the first
 * instruction boundary at or after the target. The address loop
 * arms debug-register breakpoint 0 of the emu driver: guest memory is never
 * changed (the bytes a snapshot saves are the guest's own), and the event
 * comes before the instruction at the address runs (RIP = that address).
 * The breakpoint is disarmed before returning, whatever the outcome, so
 * the vCPU state (DR7) that a save writes holds no trace of it.
 *
 * Failure atomicity: a driver failure ends the loop with the error; the
 * machine has run up to where it failed.
 * Threading: one thread per handle.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "resume/resume_internal.h"

enum { TIME_CHUNK = 1 << 20 };

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t retired_now(vmt_resume *r)
{
    vmt_driver_stats s;
    return vmt_drv_stats(r->drv, &s) == VMT_OK ? s.instructions : 0;
}

vmt_status vmt_resume_run_until_time(vmt_resume *r, uint64_t target_ns, uint64_t instructions, double seconds,
                                     bool *reached, vmt_stop_info *stop, uint64_t *retired)
{
    *reached = false;
    memset(stop, 0, sizeof *stop);
    const uint64_t ips = r->clock.insns_per_sec ? r->clock.insns_per_sec : 1000000000u;
    const uint64_t start = retired_now(r);
    const double t0 = wall_now();
    vmt_status st = VMT_OK;
    while (!st) {
        uint64_t now = vmt_resume_now_ns(r);
        if (now >= target_ns) {
            *reached = true;
            break;
        }
        uint64_t done = retired_now(r) - start;
        if (instructions && done >= instructions) {
            stop->reason = VMT_STOP_INSN_LIMIT;
            snprintf(stop->message, sizeof stop->message, "%" PRIu64 " instructions ran before guest time %" PRIu64 " ns",
                     done, target_ns);
            break;
        }
        double left_s = seconds > 0 ? seconds - (wall_now() - t0) : 0;
        if (seconds > 0 && left_s <= 0) {
            stop->reason = VMT_STOP_TIME_LIMIT;
            snprintf(stop->message, sizeof stop->message, "%.1f s of wall time before guest time %" PRIu64 " ns",
                     seconds, target_ns);
            break;
        }
        /* every retired instruction takes at least 1e9/ips ns of guest time */
        unsigned __int128 chunk = (unsigned __int128)(target_ns - now) * ips / 1000000000u;
        if (chunk == 0)
            chunk = 1;
        if (instructions && chunk > instructions - done)
            chunk = instructions - done;
        /* an idle HLT inside a chunk skips to the next device deadline:
         * small chunks keep the overshoot to that skip */
        if (chunk > TIME_CHUNK)
            chunk = TIME_CHUNK;
        st = vmt_resume_run(r, (uint64_t)chunk, seconds > 0 ? left_s : 0, stop, NULL);
        if (!st && stop->reason != VMT_STOP_INSN_LIMIT)
            break; /* halted, faulted, out of wall time: *stop says so */
        if (!st)
            memset(stop, 0, sizeof *stop);
    }
    if (retired)
        *retired += retired_now(r) - start;
    return st;
}

vmt_status vmt_resume_run_until_address(vmt_resume *r, uint64_t va, uint64_t count, uint64_t instructions,
                                        double seconds, bool *reached, uint64_t *hits, vmt_stop_info *stop,
                                        uint64_t *retired)
{
    *reached = false;
    *hits = 0;
    memset(stop, 0, sizeof *stop);
    if (count == 0)
        return vmt_errbuf_set(&r->err, VMT_E_INVAL, "resume run until 0x%" PRIx64 ": the count must be >= 1", va);
    const uint64_t start = retired_now(r);
    vmt_status st = vmt_drv_set_limit(r->drv, seconds, instructions);
    if (!st)
        st = vmt_drv_hw_breakpoint(r->drv, 0, 0, va, 1);
    if (st)
        return vmt_errbuf_set(&r->err, st, "resume run until 0x%" PRIx64 ": %s", va, vmt_driver_error(r->drv));
    while (!st) {
        vmt_event ev;
        st = vmt_drv_wait_event(r->drv, -1, &ev);
        if (st == VMT_E_TIMEOUT) {
            st = VMT_OK;
            continue;
        }
        if (st) {
            vmt_errbuf_set(&r->err, st, "resume run until 0x%" PRIx64 ": %s", va, vmt_driver_error(r->drv));
            break;
        }
        if (ev.kind == VMT_EVENT_STOPPED) {
            *stop = ev.u.stop;
            break;
        }
        if (ev.kind == VMT_EVENT_HW_BREAKPOINT && ev.u.hwbp.address == va && ++*hits == count) {
            *reached = true;
            /* disarm first: the answer below only records CONTINUE (the CPU
             * runs in wait_event), so RIP stays at va */
            st = vmt_drv_hw_breakpoint(r->drv, 0, 0, va, 0);
        }
        vmt_response resp = vmt_response_continue();
        if (!st && (st = vmt_drv_respond(r->drv, &ev, &resp)))
            vmt_errbuf_set(&r->err, st, "resume run until 0x%" PRIx64 ": answering a %s event: %s", va,
                           vmt_event_kind_name(ev.kind), vmt_driver_error(r->drv));
        else if (st)
            vmt_errbuf_set(&r->err, st, "resume run until 0x%" PRIx64 ": %s", va, vmt_driver_error(r->drv));
        if (*reached)
            break;
    }
    if (!*reached)
        (void)vmt_drv_hw_breakpoint(r->drv, 0, 0, va, 0);
    if (retired)
        *retired += retired_now(r) - start;
    return st;
}
