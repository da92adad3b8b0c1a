/*
 * drivers/qemu/qemu_run.c — running the guest: wait_event, respond, pause,
 * resume (see include/vmtrap/qemu.h).
 *
 * One wait_event: (step over our own breakpoint at rip, with it removed: a
 * gdbstub continue at a breakpoint address reports the same breakpoint
 * again without executing anything — measured on QEMU 7.2) then 'c' and
 * wait for the stop reply. On timeout the driver interrupts QEMU (0x03) and
 * waits for the stop; a breakpoint that raced the interrupt is still
 * reported. A T05 at one of our breakpoints is VMT_EVENT_HW_BREAKPOINT, a
 * watch:ADDR stop VMT_EVENT_MEM_ACCESS (after the write), a W/X reply or a
 * lost connection VMT_EVENT_STOPPED (QEMU is then gone), a T02 we did not
 * ask for means QEMU was paused from outside (the driver then counts as
 * paused).
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "drivers/qemu/qemu_internal.h"

/* Wait for a stop reply, skipping console output. VMT_E_TIMEOUT keeps the client alive. */
static vmt_status wait_stop(vmt_driver *d, int timeout_ms, gdb_stop *stop)
{
    qemu_drv *q = qemu_of(d);
    for (;;) {
        const char *r;
        size_t n;
        vmt_status st = gdb_recv(&q->gdb, timeout_ms, &r, &n);
        if (st)
            return st;
        char why[200];
        if (gdb_parse_stop(r, n, stop, why, sizeof why)) {
            q->gdb.dead = true;
            vmt_errbuf_set(&q->gdb.err, VMT_E_FORMAT, "%s (reply '%.32s')", why, r);
            return VMT_E_FORMAT;
        }
        if (stop->type != 'O')
            return VMT_OK;
    }
}

static void fill_event(qemu_drv *q, vmt_event *ev, vmt_event_kind kind)
{
    memset(ev, 0, sizeof *ev);
    ev->kind = kind;
    ev->vcpu = 0;
    ev->view = 0;
    ev->seq = ++q->seq;
    ev->regs = q->regs;
    q->stats.events[kind]++;
}

/* QEMU is gone (connection lost, exited): a STOPPED event that says why. */
static vmt_status gone_event(vmt_driver *d, vmt_event *ev, vmt_stop_reason reason, const char *what)
{
    qemu_drv *q = qemu_of(d);
    q->gone = true;
    char ex[160] = "";
    /* A QEMU that closed the socket as it died is reaped a moment later. */
    for (int i = 0; i < 50 && q->launched && q->pid > 0 && !ex[0]; i++) {
        qemu_launch_exit_text(q, ex, sizeof ex);
        if (!ex[0]) {
            struct timespec ts = { 0, 10 * 1000 * 1000 };
            nanosleep(&ts, NULL);
        }
    }
    fill_event(q, ev, VMT_EVENT_STOPPED);
    ev->regs = q->regs; /* the last known registers */
    ev->u.stop.reason = reason;
    snprintf(ev->u.stop.message, sizeof ev->u.stop.message, "%s%s%s", what, ex[0] ? "; " : "", ex);
    vmt_driver_fail(d, VMT_E_STOPPED, "%s", ev->u.stop.message);
    return VMT_OK;
}

/* Turn a stop reply into an event. *internal: nothing for the caller. */
static vmt_status classify(vmt_driver *d, const gdb_stop *stop, bool we_interrupted, vmt_event *ev, bool *reported)
{
    qemu_drv *q = qemu_of(d);
    *reported = false;
    if (stop->type == 'W' || stop->type == 'X') {
        char msg[96];
        snprintf(msg, sizeof msg, "QEMU ended the session (%s %u)", stop->type == 'W' ? "exit status" : "signal",
                 stop->signal);
        *reported = true;
        return gone_event(d, ev, VMT_STOP_SHUTDOWN, msg);
    }
    q->regs_valid = false;
    vmt_status st = qemu_fetch_regs(d);
    if (st)
        return st;
    if (stop->has_watch) {
        vmt_event hit;
        memset(&hit, 0, sizeof hit);
        if (!qemu_watch_hit(d, stop->watch_addr, &hit))
            return VMT_OK; /* a watch we no longer have: internal, the guest goes on */
        fill_event(q, ev, VMT_EVENT_MEM_ACCESS);
        ev->u.mem = hit.u.mem;
        ev->u.mem.gva_valid = true;
        ev->u.mem.access = VMT_ACCESS_W;
        *reported = true;
        return VMT_OK;
    }
    const qemu_bp *bp = qemu_bp_find(q, q->regs.rip);
    if (bp && stop->signal == 5) {
        fill_event(q, ev, VMT_EVENT_HW_BREAKPOINT);
        ev->u.hwbp.index = bp->index;
        ev->u.hwbp.address = bp->va;
        *reported = true;
        return VMT_OK;
    }
    if (stop->signal == 2 && !we_interrupted) {
        q->paused = true;
        return vmt_driver_fail(d, VMT_E_BUSY, "QEMU was paused from outside (QMP 'stop' or its monitor) at rip "
                               "0x%llx; vmt_drv_resume() goes on", (unsigned long long)q->regs.rip);
    }
    if (we_interrupted)
        return VMT_OK; /* our own interrupt: nothing to report */
    fill_event(q, ev, VMT_EVENT_STOPPED);
    ev->u.stop.reason = VMT_STOP_DRIVER_ERROR;
    snprintf(ev->u.stop.message, sizeof ev->u.stop.message,
             "QEMU stopped with signal %u at rip 0x%llx, not at a breakpoint of ours", stop->signal,
             (unsigned long long)q->regs.rip);
    *reported = true;
    return VMT_OK;
}

static vmt_status lost(vmt_driver *d, vmt_status st, vmt_event *ev, const char *what)
{
    qemu_drv *q = qemu_of(d);
    if (q->gdb.dead && st != VMT_E_FORMAT) {
        char msg[160];
        snprintf(msg, sizeof msg, "%s: %s", what, gdb_client_error(&q->gdb));
        return gone_event(d, ev, VMT_STOP_DRIVER_ERROR, msg);
    }
    return qemu_gdb_fail(d, st, what);
}

/* One instruction with interrupts and timers off (Qqemu.sstep=7). */
static vmt_status step(vmt_driver *d, gdb_stop *stop)
{
    qemu_drv *q = qemu_of(d);
    vmt_status st = gdb_send(&q->gdb, "s");
    if (!st)
        st = wait_stop(d, q->gdb.timeout_ms, stop);
    if (st == VMT_E_TIMEOUT) {
        q->gdb.dead = true;
        vmt_errbuf_set(&q->gdb.err, VMT_E_TIMEOUT, "gdb: a single step did not finish within %d ms (QEMU hung?)",
                       q->gdb.timeout_ms);
    }
    q->regs_valid = false;
    q->stats.exits++;
    return st;
}

vmt_status qemu_wait_event(vmt_driver *d, int timeout_ms, vmt_event *ev)
{
    qemu_drv *q = qemu_of(d);
    if (q->gone)
        return vmt_driver_fail(d, VMT_E_STOPPED, "QEMU is gone (%s)", vmt_driver_error(d));
    if (q->event_pending)
        return vmt_driver_fail(d, VMT_E_BUSY, "event %llu has no response yet (vmt_drv_respond first)",
                               (unsigned long long)q->last.seq);
    if (q->paused) {
        if (timeout_ms < 0)
            return vmt_driver_fail(d, VMT_E_BUSY, "the VM is paused and no timeout was given: it could never return");
        return VMT_E_TIMEOUT;
    }
    vmt_status st = qemu_fetch_regs(d);
    if (st)
        return st;
    if (q->qlen) {
        /* Further words the last watch hit changed: reported before the guest runs. */
        vmt_event hit = q->queue[q->qhead++];
        q->qlen--;
        if (!q->qlen)
            q->qhead = 0;
        fill_event(q, ev, VMT_EVENT_MEM_ACCESS);
        ev->u.mem = hit.u.mem;
        goto report;
    }
    uint64_t t0 = qemu_now_ns();
    uint64_t deadline = timeout_ms < 0 ? UINT64_MAX : t0 + (uint64_t)timeout_ms * 1000000ull;
    q->stats.ns_monitor += t0 - q->t_stop_ns;
    gdb_stop stop;
    bool reported;
    vmt_va rip = q->regs.rip;
    qemu_bp *at = qemu_bp_find(q, rip);
    unsigned nop_len;
    if (at && !q->step_next && qemu_nop_at(d, at, &nop_len)) {
        /* Executing a NOP is moving rip: no gdbstub step, no breakpoint
         * removal (each would flush QEMU's translation cache). */
        vmt_regs r = q->regs;
        r.rip += nop_len;
        if ((st = qemu_set_regs(d, 0, &r)))
            return st;
        q->nop_skips++;
        q->stats.internal_exits++;
        if (qemu_bp_find(q, r.rip)) {
            /* The next instruction has a breakpoint too: report it now. */
            if ((st = qemu_fetch_regs(d)))
                return st;
            const qemu_bp *nb = qemu_bp_find(q, q->regs.rip);
            fill_event(q, ev, VMT_EVENT_HW_BREAKPOINT);
            ev->u.hwbp.index = nb->index;
            ev->u.hwbp.address = nb->va;
            goto report;
        }
        at = NULL;
    }
    if (q->step_next || at) {
        bool was_step = q->step_next;
        q->step_next = false;
        if (at && (st = qemu_bp_insert(d, rip, 0)))
            return lost(d, st, ev, "removing a breakpoint to step over it");
        st = step(d, &stop);
        if (st)
            return lost(d, st, ev, "single-stepping");
        if (at && (st = qemu_bp_insert(d, rip, 1)))
            return lost(d, st, ev, "re-inserting a breakpoint after stepping over it");
        q->stats.ns_guest += qemu_now_ns() - t0;
        if (was_step) {
            q->regs_valid = false;
            if ((st = qemu_fetch_regs(d)))
                return st;
            fill_event(q, ev, VMT_EVENT_SINGLESTEP);
            goto report;
        }
        q->stats.internal_exits++;
        if ((st = classify(d, &stop, true, ev, &reported)))
            return st;
        if (reported)
            goto report;
        t0 = qemu_now_ns();
    }
again:
    if ((st = gdb_send(&q->gdb, "c")))
        return lost(d, st, ev, "continuing");
    q->regs_valid = false;
    bool interrupted = false;
    st = wait_stop(d, timeout_ms, &stop);
    if (st == VMT_E_TIMEOUT) {
        interrupted = true;
        if ((st = gdb_interrupt(&q->gdb)))
            return lost(d, st, ev, "interrupting QEMU");
        st = wait_stop(d, q->gdb.timeout_ms, &stop);
        if (st == VMT_E_TIMEOUT) {
            q->gdb.dead = true;
            vmt_errbuf_set(&q->gdb.err, VMT_E_TIMEOUT, "gdb: QEMU did not stop within %d ms of an interrupt (hung?)",
                           q->gdb.timeout_ms);
        }
    }
    q->t_stop_ns = qemu_now_ns();
    q->stats.ns_guest += q->t_stop_ns - t0;
    q->stats.exits++;
    if (st)
        return lost(d, st, ev, "waiting for the guest to stop");
    if ((st = classify(d, &stop, interrupted, ev, &reported)))
        return st;
    if (!reported && !interrupted && stop.has_watch) {
        /* A hit nobody asked for any more (stale watch): go on until the timeout. */
        q->stats.internal_exits++;
        t0 = qemu_now_ns();
        if (t0 < deadline) {
            uint64_t left_ms = deadline == UINT64_MAX ? 0 : (deadline - t0) / 1000000ull + 1;
            timeout_ms = deadline == UINT64_MAX ? -1 : (int)left_ms;
            goto again;
        }
    }
    if (!reported)
        return VMT_E_TIMEOUT;
report:
    q->t_stop_ns = qemu_now_ns();
    if (ev->kind != VMT_EVENT_STOPPED || !q->gone) {
        q->event_pending = true;
        q->last = *ev;
    }
    return VMT_OK;
}

vmt_status qemu_respond(vmt_driver *d, const vmt_event *ev, const vmt_response *resp)
{
    qemu_drv *q = qemu_of(d);
    if (!q->event_pending || ev->seq != q->last.seq)
        return vmt_driver_fail(d, VMT_E_INVAL, "event %llu is not the pending event", (unsigned long long)ev->seq);
    uint32_t known = VMT_RESP_STEP | VMT_RESP_SET_REGS;
    if (resp->actions & ~known)
        return vmt_driver_fail(d, VMT_E_NOTSUP, "the qemu driver supports only CONTINUE, STEP and SET_REGS "
                               "responses (asked for 0x%x)", resp->actions);
    if (resp->actions & VMT_RESP_SET_REGS) {
        vmt_status st = qemu_set_regs(d, 0, &resp->regs);
        if (st)
            return st;
    }
    q->step_next = (resp->actions & VMT_RESP_STEP) != 0;
    q->event_pending = false;
    return VMT_OK;
}

vmt_status qemu_pause(vmt_driver *d)
{
    qemu_drv *q = qemu_of(d);
    if (q->gone)
        return vmt_driver_fail(d, VMT_E_STOPPED, "QEMU is gone");
    q->paused = true; /* QEMU is already stopped between calls: the guest stays stopped */
    return VMT_OK;
}

vmt_status qemu_resume(vmt_driver *d)
{
    qemu_drv *q = qemu_of(d);
    if (q->gone)
        return vmt_driver_fail(d, VMT_E_STOPPED, "QEMU is gone");
    q->paused = false;
    return VMT_OK;
}
