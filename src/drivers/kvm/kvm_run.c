/*
 * drivers/kvm/kvm_run.c — the run loop: KVM exits in, vmtrap events out.
 *
 * Design: wait_event() runs the vCPU until an exit the caller must see,
 * handling the rest itself (serial port, unbacked MMIO, the single-step that
 * gets past a hardware breakpoint). Exits that complete on re-entry (IO,
 * MMIO) set need_completion; when a single-step is under way and the stepped
 * instruction left through such an exit, the driver re-enters once with
 * immediate_exit=1, which completes the instruction and returns, and counts
 * the step as done. That covers kvm_pvm, which gives no step exit for an
 * instruction completed through an exit, and upstream KVM, which does.
 *
 * Breakpoints: KVM_EXIT_DEBUG with #BP (upstream) or an emulation-failure
 * internal error whose instruction bytes start with 0xCC (kvm_pvm, where
 * resuming unchanged would repeat the exit forever). Any such INT3 is
 * reported; the caller decides (CONTINUE after restoring the byte, STEP,
 * FAST_STEP into another view, or REINJECT into the guest IDT).
 *
 * Memory traps: a store to a read-only slot arrives as KVM_EXIT_MMIO with
 * the exact value; KVM has dropped it, so the response decides where it
 * lands. Any data access to a frame without a slot (read denied) exits the
 * same way; a read is answered by the response. An instruction fetch from
 * such a frame fails (emulation error without bytes): the driver maps the
 * frame read-only with a temporary slot for one single-step and removes the
 * slot when the step ends (however it ends). Accesses the current view (or,
 * during a FAST_STEP, the step view) allows are served without an event.
 *
 * Time: one POSIX timer per driver sends a real-time signal to this thread;
 * the signal is blocked outside KVM_RUN and unblocked inside it
 * (KVM_SET_SIGNAL_MASK), so it interrupts KVM_RUN without a handler and is
 * never lost between the check and the ioctl. It is armed only when a
 * timeout or a time limit applies.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "drivers/kvm/kvm_internal.h"

enum { H_CONTINUE = 0, H_EVENT = 1 };

uint64_t kvm_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- timer ---- */

/* Block the signal in the calling thread and aim a (new) timer at it. */
static vmt_status timer_bind(kvm_drv *k, char *why, size_t why_len)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, k->sig);
    if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0) {
        vmt_why(why, why_len, "kvm: blocking the timer signal failed");
        return VMT_E_DRIVER;
    }
    if (k->timer_ok)
        timer_delete(k->timer);
    k->timer_ok = false;
    k->timer_expiry = 0;
    struct sigevent sev;
    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = SIGEV_THREAD_ID;
    sev.sigev_signo = k->sig;
#ifdef sigev_notify_thread_id
    sev.sigev_notify_thread_id = gettid();
#else
    sev._sigev_un._tid = gettid();
#endif
    if (timer_create(CLOCK_MONOTONIC, &sev, &k->timer) < 0) {
        vmt_why(why, why_len, "kvm: timer_create: %s", strerror(errno));
        return VMT_E_DRIVER;
    }
    k->timer_ok = true;
    k->thread = pthread_self();
    return VMT_OK;
}

vmt_status kvm_timer_init(kvm_drv *k, char *why, size_t why_len)
{
    k->sig = SIGRTMIN + 7;
    sigset_t old;
    if (pthread_sigmask(SIG_SETMASK, NULL, &old) != 0) {
        vmt_why(why, why_len, "kvm: reading the signal mask failed");
        return VMT_E_DRIVER;
    }
    /* inside KVM_RUN: the thread's mask without our signal */
    sigdelset(&old, k->sig);
    struct {
        struct kvm_signal_mask h;
        uint8_t bytes[8];
    } m;
    m.h.len = 8;
    memcpy(m.bytes, &old, 8);
    if (ioctl(k->vcpu_fd, KVM_SET_SIGNAL_MASK, &m) < 0) {
        vmt_why(why, why_len, "kvm: KVM_SET_SIGNAL_MASK: %s", strerror(errno));
        return VMT_E_DRIVER;
    }
    vmt_status st = timer_bind(k, why, why_len);
    if (st)
        return st;
    /* registers come with every exit when KVM can do it (saves two ioctls per event) */
    int sync = ioctl(k->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_SYNC_REGS);
    uint32_t want = KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS;
    if (sync > 0 && ((uint32_t)sync & want) == want) {
        k->run->kvm_valid_regs = want;
        k->run->kvm_dirty_regs = 0;
        k->sync_regs = true;
    }
    return VMT_OK;
}

static void drain_signal(kvm_drv *k)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, k->sig);
    struct timespec zero = { 0, 0 };
    while (sigtimedwait(&set, NULL, &zero) == k->sig)
        ;
}

/* The signal stays blocked in the thread: another driver in the same thread
 * may rely on it, and a blocked real-time signal costs nothing. */
void kvm_timer_fini(kvm_drv *k)
{
    if (!k->sig)
        return;
    if (k->timer_ok)
        timer_delete(k->timer);
    if (pthread_equal(k->thread, pthread_self()))
        drain_signal(k);
}

/* Make sure the timer fires no later than `at` (absolute monotonic ns). A
 * timer armed for an earlier time stays: firing early only costs one
 * interrupted KVM_RUN, and it saves two syscalls per event. */
static void timer_ensure(kvm_drv *k, uint64_t at)
{
    if (!k->timer_ok || (k->timer_expiry && k->timer_expiry <= at))
        return;
    struct itimerspec its = { .it_value = { (time_t)(at / 1000000000ull), (long)(at % 1000000000ull) } };
    if (timer_settime(k->timer, TIMER_ABSTIME, &its, NULL) == 0)
        k->timer_expiry = at;
}

/* ---- events ---- */

static void ev_begin(kvm_drv *k, vmt_event_kind kind)
{
    memset(&k->ev, 0, sizeof k->ev);
    k->ev.kind = kind;
    k->ev.vcpu = 0;
    k->ev.view = k->cur_view;
    k->ev.seq = ++k->seq;
    if (kvm_get_regs(k, &k->ev.regs) != VMT_OK) {
        /* cannot read the vCPU: report that instead */
        char msg[sizeof k->ev.u.stop.message];
        snprintf(msg, sizeof msg, "%s", vmt_driver_error(k->d));
        k->ev.kind = VMT_EVENT_STOPPED;
        k->ev.u.stop.reason = VMT_STOP_DRIVER_ERROR;
        snprintf(k->ev.u.stop.message, sizeof k->ev.u.stop.message, "%s", msg);
        k->stopped = true;
        k->stop = k->ev.u.stop;
    }
}

static int stop_event(kvm_drv *k, vmt_stop_reason reason, bool fatal, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int stop_event(kvm_drv *k, vmt_stop_reason reason, bool fatal, const char *fmt, ...)
{
    ev_begin(k, VMT_EVENT_STOPPED);
    if (k->ev.kind != VMT_EVENT_STOPPED || k->stopped)
        return H_EVENT;
    k->ev.u.stop.reason = reason;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(k->ev.u.stop.message, sizeof k->ev.u.stop.message, fmt, ap);
    va_end(ap);
    if (fatal) {
        k->stopped = true;
        k->stop = k->ev.u.stop;
    }
    return H_EVENT;
}

/* End the current step. Returns H_EVENT when it was a user STEP. */
static int step_end(kvm_drv *k, bool report_allowed)
{
    kvm_step s = k->step;
    k->step = (kvm_step){ .fast_view = VMT_VIEW_INVALID };
    if (!s.active)
        return H_CONTINUE;
    if (k->nexec && kvm_exec_unmap_all(k) != VMT_OK)
        return stop_event(k, VMT_STOP_DRIVER_ERROR, true, "removing a temporary execute slot: %s",
                          vmt_driver_error(k->d));
    if (k->map_view != k->cur_view && kvm_map_view(k, k->cur_view) != VMT_OK)
        return stop_event(k, VMT_STOP_DRIVER_ERROR, true, "mapping view %u back after a step: %s", k->cur_view,
                          vmt_driver_error(k->d));
    if (kvm_apply_debug(k) != VMT_OK)
        return stop_event(k, VMT_STOP_DRIVER_ERROR, true, "%s", vmt_driver_error(k->d));
    if (s.report && report_allowed) {
        ev_begin(k, VMT_EVENT_SINGLESTEP);
        return H_EVENT;
    }
    return H_CONTINUE;
}

/* known_gpa: the INT3's guest-physical address when the driver walked it
 * already (else KVM_TRANSLATE). */
static int bp_event(kvm_drv *k, kvm_bp_source src, const uint64_t *known_gpa)
{
    step_end(k, false);
    k->bp_source = src;
    ev_begin(k, VMT_EVENT_BREAKPOINT);
    if (k->ev.kind != VMT_EVENT_BREAKPOINT)
        return H_EVENT;
    vmt_breakpoint_info *b = &k->ev.u.bp;
    b->gva = k->ev.regs.rip;
    b->insn_len = 1;
    uint64_t pa;
    if (known_gpa || kvm_translate(k, b->gva, &pa) == VMT_OK) {
        if (known_gpa)
            pa = *known_gpa;
        b->gpa = pa;
        b->gfn = pa >> VMT_PAGE_SHIFT;
    }
    return H_EVENT;
}

/* ---- serial ---- */

static void serial_flush(kvm_drv *k)
{
    if (!k->line_len)
        return;
    k->line[k->line_len] = 0;
    if (k->serial)
        k->serial(k->serial_ctx, k->line);
    k->line_len = 0;
}

static void serial_putc(kvm_drv *k, uint8_t c)
{
    if (c == '\n') {
        if (k->line_len == 0 && k->serial)
            k->serial(k->serial_ctx, "");
        serial_flush(k);
        return;
    }
    if (c == '\r')
        return;
    k->line[k->line_len++] = (char)c;
    if (k->line_len == sizeof k->line - 1)
        serial_flush(k);
}

void kvm_serial_fini(kvm_drv *k) { serial_flush(k); }

/* ---- exits ---- */

void kvm_io_event(kvm_drv *k)
{
    const struct kvm_run *r = k->run;
    ev_begin(k, VMT_EVENT_IO);
    if (k->ev.kind != VMT_EVENT_IO)
        return;
    vmt_io_info *io = &k->ev.u.io;
    io->port = r->io.port;
    io->size = r->io.size;
    io->is_write = r->io.direction == KVM_EXIT_IO_OUT;
    if (io->is_write) {
        uint32_t v = 0;
        memcpy(&v, kvm_io_data(k) + (size_t)k->io_index * r->io.size, r->io.size);
        io->value = v;
    }
}

static int handle_io(kvm_drv *k)
{
    const struct kvm_run *r = k->run;
    uint32_t sz = r->io.size, n = r->io.count;
    if ((sz != 1 && sz != 2 && sz != 4) || n == 0 || r->io.data_offset > k->run_size ||
        (uint64_t)sz * n > k->run_size - r->io.data_offset)
        return stop_event(k, VMT_STOP_DRIVER_ERROR, true, "malformed KVM_EXIT_IO (size %u count %u offset %llu)", sz, n,
                          (unsigned long long)r->io.data_offset);
    k->need_completion = true;
    if (k->bus.ops) {
        uint8_t *data = kvm_io_data(k);
        const char *msg = NULL;
        vmt_status st = VMT_OK;
        for (uint32_t i = 0; i < n && st == VMT_OK; i++)
            st = kvm_bus_pio(k, r->io.port, sz, r->io.direction == KVM_EXIT_IO_OUT, data + (size_t)i * sz, &msg);
        if (st == VMT_OK)
            return H_CONTINUE;
        if (st == VMT_E_STOPPED)
            return stop_event(k, VMT_STOP_SHUTDOWN, true, "%s", msg ? msg : "the platform stopped the guest");
        if (st != VMT_E_NOTFOUND)
            return stop_event(k, VMT_STOP_DRIVER_ERROR, true, "port %#x: %s", r->io.port, msg ? msg : "bus failure");
    }
    if (r->io.port >= VMT_PORT_SERIAL && r->io.port <= VMT_PORT_SERIAL + 7) {
        uint8_t *data = kvm_io_data(k);
        for (uint32_t i = 0; i < n; i++) {
            if (r->io.direction == KVM_EXIT_IO_OUT) {
                if (r->io.port == VMT_PORT_SERIAL)
                    serial_putc(k, data[i * sz]);
            } else {
                memset(data + i * sz, 0, sz);
                if (r->io.port == VMT_PORT_SERIAL + 5)
                    data[i * sz] = 0x60; /* LSR: transmitter empty */
            }
        }
        return H_CONTINUE;
    }
    k->io_index = 0;
    kvm_io_event(k);
    return H_EVENT;
}

/* Can view v make this access without a trap? (view 0 always can) */
static bool view_allows(const kvm_drv *k, vmt_view v, uint64_t gfn, vmt_access acc)
{
    return v == VMT_VIEW_DEFAULT || (k->views[v].access[gfn] & acc);
}

static int handle_mmio(kvm_drv *k)
{
    struct kvm_run *r = k->run;
    uint64_t gpa = r->mmio.phys_addr, gfn = gpa >> VMT_PAGE_SHIFT;
    uint32_t len = r->mmio.len;
    if (len == 0 || len > 8)
        return stop_event(k, VMT_STOP_DRIVER_ERROR, true, "malformed KVM_EXIT_MMIO (len %u)", len);
    k->need_completion = true;
    vmt_access acc = r->mmio.is_write ? VMT_ACCESS_W : VMT_ACCESS_R;
    if (gfn >= k->ram_frames && k->bus.ops) {
        const char *msg = NULL;
        vmt_status st = kvm_bus_mmio(k, gpa, len, r->mmio.is_write, r->mmio.data, &msg);
        if (st == VMT_E_STOPPED)
            return stop_event(k, VMT_STOP_SHUTDOWN, true, "%s", msg ? msg : "the platform stopped the guest");
        if (st != VMT_OK && st != VMT_E_NOTFOUND)
            return stop_event(k, VMT_STOP_DRIVER_ERROR, true, "MMIO %#llx: %s", (unsigned long long)gpa,
                              msg ? msg : "bus failure");
        if (st == VMT_OK)
            return H_CONTINUE;
    }
    if (gfn >= k->ram_frames) { /* no RAM: reads see all-ones, writes vanish */
        if (!r->mmio.is_write)
            memset(r->mmio.data, 0xff, len);
        return H_CONTINUE;
    }
    /* Served without an event: a FAST_STEP's access that its step view
     * allows (through that view's mapping), and what the current view allows
     * (a frame without a slot may still allow writes; in view 0 on another
     * view's layout everything is allowed). */
    vmt_view through = k->map_view != k->cur_view && view_allows(k, k->map_view, gfn, acc) ? k->map_view
                       : view_allows(k, k->cur_view, gfn, acc)                            ? k->cur_view
                                                                                          : VMT_VIEW_INVALID;
    if (through != VMT_VIEW_INVALID) {
        if (r->mmio.is_write)
            kvm_write_through(k, through, gpa, r->mmio.data, len);
        else
            kvm_read_through(k, through, gpa, r->mmio.data, len);
        return H_CONTINUE;
    }
    ev_begin(k, VMT_EVENT_MEM_ACCESS);
    if (k->ev.kind != VMT_EVENT_MEM_ACCESS)
        return H_EVENT;
    vmt_mem_access_info *m = &k->ev.u.mem;
    m->gpa = gpa;
    m->access = acc;
    m->size = (uint8_t)len;
    if (r->mmio.is_write) {
        m->has_data = true;
        memcpy(&m->value, r->mmio.data, len);
    }
    return H_EVENT;
}

static int handle_debug(kvm_drv *k)
{
    const struct kvm_debug_exit_arch *a = &k->run->debug.arch;
    if (a->exception == 3)
        return bp_event(k, BP_FROM_DEBUG_EXIT, NULL);
    if (a->exception != 1)
        return stop_event(k, VMT_STOP_DRIVER_ERROR, true, "debug exit with exception %u at pc 0x%llx", a->exception,
                          (unsigned long long)a->pc);
    unsigned hits = (unsigned)(a->dr6 & 0xf) & (k->step.active && k->step.hw_off ? 0u : k->hwbp_on);
    if (k->step.active && ((a->dr6 & (1ull << 14)) || !hits))
        return step_end(k, true);
    if (hits) {
        unsigned idx = (unsigned)__builtin_ctz(hits);
        step_end(k, false);
        ev_begin(k, VMT_EVENT_HW_BREAKPOINT);
        if (k->ev.kind == VMT_EVENT_HW_BREAKPOINT) {
            k->ev.u.hwbp.index = (uint8_t)idx;
            k->ev.u.hwbp.address = k->hwbp_addr[idx];
        }
        return H_EVENT;
    }
    return H_CONTINUE; /* a stale step exit: nothing to do */
}

static int handle_internal(kvm_drv *k)
{
    const struct kvm_run *r = k->run;
    if (r->emulation_failure.suberror == KVM_INTERNAL_ERROR_EMULATION && r->emulation_failure.ndata >= 2 &&
        (r->emulation_failure.flags & KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES) &&
        r->emulation_failure.insn_size >= 1 && r->emulation_failure.insn_bytes[0] == 0xCC)
        return bp_event(k, BP_FROM_EMULATION_EXIT, NULL);
    /* Code in a frame without a memslot (its view denies reads) cannot be
     * fetched: the engine runs it in the monitor when it can (not during a
     * step, which must end after one instruction); else map the frame
     * read-only for one step, then take it away. */
    uint64_t int3_gpa;
    if (kvm_unfetchable_int3(k, &int3_gpa))
        return bp_event(k, BP_FROM_EMULATION_EXIT, &int3_gpa);
    if (!k->step.active && kvm_engine_run_unfetchable(k))
        return H_CONTINUE;
    struct kvm_regs cur;
    if (ioctl(k->vcpu_fd, KVM_GET_REGS, &cur) == 0) {
        for (uint64_t va = cur.rip; va <= cur.rip + 15; va = (va | (VMT_PAGE_SIZE - 1)) + 1) {
            uint64_t fetch_pa;
            if (kvm_translate(k, va, &fetch_pa) != VMT_OK)
                break;
            uint64_t gfn = fetch_pa >> VMT_PAGE_SHIFT;
            if (gfn >= k->ram_frames || k->state[gfn] != KVM_SLOT_NONE || kvm_exec_mapped(k, gfn))
                continue;
            if (kvm_exec_map(k, gfn) != VMT_OK)
                return stop_event(k, VMT_STOP_DRIVER_ERROR, true, "%s", vmt_driver_error(k->d));
            if (!k->step.active)
                k->step = (kvm_step){ .active = true, .fast_view = VMT_VIEW_INVALID };
            return H_CONTINUE;
        }
    }
    step_end(k, false);
    char bytes[64] = "";
    size_t off = 0;
    uint8_t buf[15];
    size_t nb = 0;
    if (r->emulation_failure.suberror == KVM_INTERNAL_ERROR_EMULATION && r->emulation_failure.ndata >= 2 &&
        (r->emulation_failure.flags & KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES)) {
        nb = r->emulation_failure.insn_size < 8 ? r->emulation_failure.insn_size : 8;
        memcpy(buf, r->emulation_failure.insn_bytes, nb);
    }
    ev_begin(k, VMT_EVENT_STOPPED);
    if (k->stopped)
        return H_EVENT;
    if (!nb) { /* read them from guest memory when KVM gave none */
        uint64_t pa;
        if (kvm_translate(k, k->ev.regs.rip, &pa) == VMT_OK && (pa >> VMT_PAGE_SHIFT) < k->ram_frames) {
            nb = 8;
            if (pa + nb > k->ram_size)
                nb = k->ram_size - pa;
            memcpy(buf, k->gmem + pa, nb);
        }
    }
    for (size_t i = 0; i < nb && off + 4 < sizeof bytes; i++)
        off += (size_t)snprintf(bytes + off, sizeof bytes - off, " %02x", buf[i]);
    k->ev.u.stop.reason = VMT_STOP_GUEST_ERROR;
    snprintf(k->ev.u.stop.message, sizeof k->ev.u.stop.message,
             "KVM internal error (suberror %u) at rip 0x%" PRIx64 ", bytes:%s", r->internal.suberror, k->ev.regs.rip,
             nb ? bytes : " (unreadable)");
    k->stopped = true;
    k->stop = k->ev.u.stop;
    return H_EVENT;
}

static int handle_exit(kvm_drv *k)
{
    const struct kvm_run *r = k->run;
    uint32_t reason = r->exit_reason;
    if (reason < KVM_EXIT_REASONS)
        k->exit_counts[reason]++;
    switch (reason) {
    case KVM_EXIT_IO: return handle_io(k);
    case KVM_EXIT_MMIO: return handle_mmio(k);
    case KVM_EXIT_DEBUG: return handle_debug(k);
    case KVM_EXIT_INTERNAL_ERROR: return handle_internal(k);
    case KVM_EXIT_INTR: return H_CONTINUE;
    case KVM_EXIT_HLT:
        step_end(k, false);
        return stop_event(k, VMT_STOP_HALT, true, "hlt with nothing to wake the vCPU");
    case KVM_EXIT_SHUTDOWN:
        step_end(k, false);
        return stop_event(k, VMT_STOP_TRIPLE_FAULT, true, "triple fault (KVM_EXIT_SHUTDOWN): the guest could not "
                          "deliver an exception");
    case KVM_EXIT_FAIL_ENTRY:
        return stop_event(k, VMT_STOP_DRIVER_ERROR, true, "VM entry failed, hardware reason 0x%llx",
                          (unsigned long long)r->fail_entry.hardware_entry_failure_reason);
    case KVM_EXIT_SYSTEM_EVENT:
        return stop_event(k, VMT_STOP_SHUTDOWN, true, "system event %u (shutdown or reset)", r->system_event.type);
    default:
        return stop_event(k, VMT_STOP_DRIVER_ERROR, true, "unexpected KVM exit reason %u", reason);
    }
}

/* Re-enter once with immediate_exit so a pending IO/MMIO instruction
 * completes. *exited: KVM returned with a new exit (to be handled). */
vmt_status kvm_complete_pending(kvm_drv *k, bool *exited)
{
    *exited = false;
    kvm_before_run(k);
    k->run->immediate_exit = 1;
    k->regs_fresh = false;
    uint64_t t0 = kvm_now_ns();
    int rc = ioctl(k->vcpu_fd, KVM_RUN, 0);
    int err = errno;
    uint64_t t1 = kvm_now_ns();
    k->run->immediate_exit = 0;
    k->stats.ns_guest += t1 - t0;
    k->need_completion = false;
    if (rc == 0) {
        k->stats.exits++;
        k->regs_fresh = k->sync_regs;
        *exited = true;
        return VMT_OK;
    }
    if (err == EINTR || err == EAGAIN)
        return VMT_OK;
    return vmt_driver_fail(k->d, VMT_E_DRIVER, "KVM_RUN (completing an I/O exit): %s", strerror(err));
}

static void deliver(kvm_drv *k, vmt_event *out)
{
    k->stats.events[k->ev.kind]++;
    k->in_event = k->ev.kind != VMT_EVENT_STOPPED;
    if (k->in_event)
        kvm_event_delivered(k);
    *out = k->ev;
}

vmt_status kvm_wait_event(vmt_driver *d, int timeout_ms, vmt_event *out)
{
    kvm_drv *k = vmt_driver_impl(d);
    if (k->in_event)
        return vmt_driver_fail(d, VMT_E_BUSY, "event %" PRIu64 " (%s) awaits its response", k->ev.seq,
                               vmt_event_kind_name(k->ev.kind));
    if (k->stopped)
        return vmt_driver_fail(d, VMT_E_STOPPED, "the guest has stopped (%s): %s", vmt_stop_reason_name(k->stop.reason),
                               k->stop.message);
    if (k->queued_event) {
        k->queued_event = false;
        deliver(k, out);
        return VMT_OK;
    }
    if (k->paused) {
        if (timeout_ms < 0)
            return vmt_driver_fail(d, VMT_E_BUSY, "the VM is paused and no timeout was given; resume it first");
        struct timespec ts = { timeout_ms / 1000, (long)(timeout_ms % 1000) * 1000000L };
        nanosleep(&ts, NULL);
        return vmt_driver_fail(d, VMT_E_TIMEOUT, "the VM is paused: no event within %d ms", timeout_ms);
    }
    if (k->timer_ok && !pthread_equal(k->thread, pthread_self())) {
        /* driven from another thread now: the timer must interrupt this one */
        char why[200];
        if (timer_bind(k, why, sizeof why))
            return vmt_driver_fail(d, VMT_E_DRIVER, "%s", why);
    }
    uint64_t start = kvm_now_ns();
    uint64_t deadline = timeout_ms >= 0 ? start + (uint64_t)timeout_ms * 1000000ull : 0;
    vmt_status st = VMT_OK;
    for (;;) {
        int h;
        if (k->exit_pending) {
            k->exit_pending = false;
            h = handle_exit(k);
        } else if (k->step.active && (k->need_completion || k->step.complete)) {
            bool exited = false;
            if (!k->step.complete && (st = kvm_complete_pending(k, &exited)))
                break;
            if (!exited) {
                if (step_end(k, true) == H_EVENT)
                    goto event;
                continue;
            }
            h = handle_exit(k);
        } else {
            uint64_t now = kvm_now_ns();
            if (k->limit_guest_ns && k->stats.ns_guest >= k->limit_guest_ns) {
                uint64_t over = k->stats.ns_guest - k->limit_guest_ns;
                k->limit_guest_ns = 0;
                stop_event(k, VMT_STOP_TIME_LIMIT, false, "time limit reached (guest time over by %" PRIu64 " us)",
                           over / 1000);
                goto event;
            }
            if (timeout_ms == 0 || (deadline && now >= deadline)) {
                st = VMT_E_TIMEOUT;
                break;
            }
            if (deadline || k->limit_guest_ns) {
                uint64_t at = deadline ? deadline : UINT64_MAX;
                if (k->limit_guest_ns && now + (k->limit_guest_ns - k->stats.ns_guest) < at)
                    at = now + (k->limit_guest_ns - k->stats.ns_guest);
                timer_ensure(k, at);
            }
            if (k->step.active && k->step.fast_view != VMT_VIEW_INVALID && k->map_view != k->step.fast_view &&
                (st = kvm_map_view(k, k->step.fast_view)))
                break;
            /* a long stay in view 0 on another view's layout: make it exact */
            if (k->cur_view != k->layout_view && ++k->lazy_runs > KVM_LAZY_RUNS &&
                (st = kvm_layout_to(k, k->cur_view)))
                break;
            if ((st = kvm_apply_debug(k)))
                break;
            if (k->irqchip && k->irq.failures) {
                stop_event(k, VMT_STOP_DRIVER_ERROR, true, "KVM_IRQ_LINE for line %u failed: %s", k->irq.last_irq,
                           strerror(k->irq.last_errno));
                goto event;
            }
            kvm_before_run(k);
            uint64_t bus_at = kvm_bus_advance(k);
            if (bus_at)
                timer_ensure(k, bus_at);
            if (k->t_last_exit)
                k->stats.ns_monitor += now - k->t_last_exit;
            k->regs_fresh = false;
            int rc = ioctl(k->vcpu_fd, KVM_RUN, 0);
            int err = errno;
            uint64_t t1 = kvm_now_ns();
            k->stats.ns_guest += t1 - now;
            k->t_last_exit = t1;
            k->need_completion = false;
            if (rc < 0) {
                if (err == EINTR || err == EAGAIN) {
                    drain_signal(k);
                    if (k->timer_expiry && t1 >= k->timer_expiry)
                        k->timer_expiry = 0;
                    continue;
                }
                stop_event(k, VMT_STOP_DRIVER_ERROR, true, "KVM_RUN failed: %s", strerror(err));
                goto event;
            }
            k->stats.exits++;
            k->regs_fresh = k->sync_regs;
            h = handle_exit(k);
        }
        if (h == H_EVENT)
            goto event;
        k->stats.internal_exits++;
    }
    if (st == VMT_E_TIMEOUT)
        return vmt_driver_fail(d, VMT_E_TIMEOUT, "no event within %d ms", timeout_ms);
    return st;
event:
    deliver(k, out);
    return VMT_OK;
}

