/*
 * drivers/kvm/kvm_bus.c — the KVM driver with a vmt_bus: KVM's irqchip for
 * LAPIC/IOAPIC/PIC/PIT, the bus (normally the platform module created
 * without those four) for every port and MMIO exit the kernel leaves to
 * user space, the bus's interrupt lines into KVM_IRQ_LINE_STATUS, and the
 * guest clock both share.
 *
 * Time: guest ns = start_ns + (host monotonic ns since creation) - (time
 * stopped for the monitor: from an event's delivery to the next KVM_RUN).
 * The bus is advanced to it before every access and before every KVM_RUN;
 * its next deadline arms the driver's timer (kvm_run.c), so a deadline is
 * honoured within the timer's latency while the guest runs. The same
 * stopped time goes off the guest TSC (kvm_plat.c), so TSC, HPET and PM
 * timer agree. Limits: the bus's irq_pending/irq_ack/nmi_take are not used
 * (the interrupt controllers are KVM's); one vCPU.
 * Threading: the driver's thread; vmt_kvm_irq_line must be called there too
 * (the platform calls irq_out from inside bus accesses, i.e. from it).
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "drivers/kvm/kvm_internal.h"

vmt_status kvm_bus_pre_vcpu(kvm_drv *k, const vmt_machine_config *cfg, char *why, size_t why_len)
{
    k->host.ioctl = kvm_host_real_ioctl;
    k->t0 = kvm_now_ns();
    k->start_ns = cfg->clock.start_ns;
    k->bus = cfg->bus;
    k->bus_deadline = UINT64_MAX;
    if (!k->bus.ops)
        return VMT_OK;
    vmt_status st = kvm_irqchip_create(&k->host, k->kvm_fd, k->vm_fd, why, why_len);
    if (st)
        return st;
    k->irqchip = true;
    bool status = k->host.ioctl(k->host.ctx, k->kvm_fd, KVM_CHECK_EXTENSION,
                                (void *)(uintptr_t)KVM_CAP_IRQ_INJECT_STATUS) > 0;
    kvm_irq_fwd_init(&k->irq, &k->host, k->vm_fd, status);
    return VMT_OK;
}

void kvm_bus_post_vcpu(kvm_drv *k, const vmt_machine_config *cfg)
{
    kvm_tsc_init(&k->tsc, &k->host, k->vcpu_fd, cfg->clock.tsc_hz);
}

uint64_t kvm_guest_now(const kvm_drv *k)
{
    uint64_t host = kvm_now_ns() - k->t0;
    return k->start_ns + (host > k->stopped_ns ? host - k->stopped_ns : 0);
}

uint64_t kvm_bus_advance(kvm_drv *k)
{
    if (!k->bus.ops || !k->bus.ops->advance)
        return 0;
    uint64_t now = kvm_guest_now(k);
    k->bus_deadline = k->bus.ops->advance(k->bus.ctx, now);
    if (k->bus_deadline == UINT64_MAX)
        return 0;
    /* guest ns -> host monotonic ns, at the current stopped time */
    uint64_t lead = k->bus_deadline > now ? k->bus_deadline - now : 0;
    return kvm_now_ns() + lead;
}

/* The stop starts when KVM_RUN returned with the exit behind the event
 * (the driver's own handling is monitor time too), but never before the
 * end of the last stop already hidden. */
void kvm_event_delivered(kvm_drv *k)
{
    if (k->t_event)
        return;
    uint64_t start = k->t_last_exit > k->t_run ? k->t_last_exit : k->t_run;
    k->t_event = start ? start : kvm_now_ns();
}

void kvm_before_run(kvm_drv *k)
{
    uint64_t now = kvm_now_ns();
    uint64_t start = k->t_event;
    k->t_run = now;
    if (!start)
        return;
    uint64_t stopped = now > start ? now - start : 0;
    k->t_event = 0;
    k->stopped_ns += stopped;
    /* a TSC that cannot go back is reported by vmt_kvm_tsc_info */
    (void)kvm_tsc_hide(&k->tsc, stopped);
}

static vmt_status bus_result(kvm_drv *k, vmt_status st, const char **msg)
{
    if (st == VMT_OK || st == VMT_E_NOTFOUND)
        return st;
    if (st == VMT_E_INVAL) /* #GP-worthy for MSRs; for ports/MMIO: ignored, reads all-ones */
        return VMT_E_INVAL;
    const char *why = k->bus.ops->stop_reason ? k->bus.ops->stop_reason(k->bus.ctx) : NULL;
    *msg = why && *why ? why : vmt_strerror(st);
    return st;
}

vmt_status kvm_bus_pio(kvm_drv *k, uint16_t port, unsigned size, bool write, uint8_t *data, const char **msg)
{
    const vmt_bus_ops *o = k->bus.ops;
    if (!o || (write ? !o->pio_write : !o->pio_read))
        return VMT_E_NOTFOUND;
    (void)kvm_bus_advance(k);
    vmt_status st;
    uint32_t v = 0;
    if (write) {
        memcpy(&v, data, size);
        st = o->pio_write(k->bus.ctx, 0, port, size, v);
    } else {
        v = UINT32_MAX;
        st = o->pio_read(k->bus.ctx, 0, port, size, &v);
        if (st == VMT_OK || st == VMT_E_INVAL)
            memcpy(data, &v, size);
    }
    st = bus_result(k, st, msg);
    return st == VMT_E_INVAL ? VMT_OK : st;
}

vmt_status kvm_bus_mmio(kvm_drv *k, uint64_t gpa, unsigned len, bool write, uint8_t *data, const char **msg)
{
    const vmt_bus_ops *o = k->bus.ops;
    if (!o || (write ? !o->mmio_write : !o->mmio_read))
        return VMT_E_NOTFOUND;
    (void)kvm_bus_advance(k);
    /* naturally aligned pieces of 1, 2, 4 or 8 bytes (bus.h) */
    for (unsigned off = 0; off < len;) {
        unsigned piece = 8;
        while (piece > len - off || ((gpa + off) & (piece - 1)))
            piece >>= 1;
        uint64_t v = 0;
        vmt_status st;
        if (write) {
            memcpy(&v, data + off, piece);
            st = o->mmio_write(k->bus.ctx, 0, gpa + off, piece, v);
        } else {
            v = UINT64_MAX;
            st = o->mmio_read(k->bus.ctx, 0, gpa + off, piece, &v);
            if (st == VMT_OK || st == VMT_E_INVAL)
                memcpy(data + off, &v, piece);
        }
        st = bus_result(k, st, msg);
        if (st == VMT_E_NOTFOUND && off == 0)
            return st;
        if (st != VMT_OK && st != VMT_E_INVAL && st != VMT_E_NOTFOUND)
            return st;
        if (st == VMT_E_NOTFOUND && !write)
            memset(data + off, 0xff, piece);
        off += piece;
    }
    return VMT_OK;
}

vmt_status kvm_bus_check(kvm_drv *k)
{
    char why[160];
    if (k->irqchip && kvm_irq_fwd_check(&k->irq, why, sizeof why))
        return vmt_driver_fail(k->d, VMT_E_INTERNAL, "%s", why);
    if (k->tsc.method != KVM_TSC_NONE && k->tsc.hidden_ticks != kvm_ns_to_ticks(k->tsc.hidden_ns, k->tsc.khz))
        return vmt_driver_fail(k->d, VMT_E_INTERNAL, "TSC: %" PRIu64 " ticks hidden for %" PRIu64 " ns at %" PRIu64
                               " kHz", k->tsc.hidden_ticks, k->tsc.hidden_ns, k->tsc.khz);
    if (k->tsc.hidden_ns + k->tsc.pending_ns > k->stopped_ns)
        return vmt_driver_fail(k->d, VMT_E_INTERNAL, "TSC hides more time than the vCPU was stopped");
    return VMT_OK;
}

/* ---- public: interrupt lines ---- */

vmt_status vmt_kvm_irq_line(vmt_driver *d, unsigned irq, bool level)
{
    if (!vmt_kvm_is_kvm(d))
        return VMT_E_INVAL;
    kvm_drv *k = vmt_driver_impl(d);
    if (!k->irqchip)
        return vmt_driver_fail(d, VMT_E_NOTSUP, "no in-kernel irqchip: the driver was created without a bus");
    vmt_status st = kvm_irq_fwd_set(&k->irq, irq, level);
    if (st == VMT_E_INVAL)
        return vmt_driver_fail(d, st, "interrupt line %u is out of range (0..%u)", irq, KVM_PLAT_IRQ_LINES - 1);
    if (st)
        return vmt_driver_fail(d, st, "KVM_IRQ_LINE for line %u: %s", irq, strerror(k->irq.last_errno));
    return VMT_OK;
}

struct vmt_kvm_irq_link {
    vmt_driver *d;
    uint32_t level;      /* lines high, also before a driver is attached */
    uint64_t failures;
};

vmt_status vmt_kvm_irq_link_create(vmt_kvm_irq_link **out)
{
    if (!out)
        return VMT_E_INVAL;
    *out = calloc(1, sizeof **out);
    return *out ? VMT_OK : VMT_E_NOMEM;
}

void vmt_kvm_irq_link_destroy(vmt_kvm_irq_link *l) { free(l); }

void vmt_kvm_irq_link_out(void *link, unsigned irq, bool level)
{
    vmt_kvm_irq_link *l = link;
    if (!l || irq >= KVM_PLAT_IRQ_LINES)
        return;
    l->level = level ? l->level | (1u << irq) : l->level & ~(1u << irq);
    if (l->d && vmt_kvm_irq_line(l->d, irq, level))
        l->failures++;
}

vmt_status vmt_kvm_irq_link_attach(vmt_kvm_irq_link *l, vmt_driver *d)
{
    if (!l || (d && !vmt_kvm_is_kvm(d)))
        return VMT_E_INVAL;
    l->d = d;
    for (unsigned i = 0; d && i < KVM_PLAT_IRQ_LINES; i++) {
        if (!(l->level & (1u << i)))
            continue;
        vmt_status st = vmt_kvm_irq_line(d, i, true);
        if (st)
            return st;
    }
    return VMT_OK;
}

uint64_t vmt_kvm_irq_link_failures(const vmt_kvm_irq_link *l) { return l ? l->failures : 0; }

vmt_status vmt_kvm_time_info(vmt_driver *d, vmt_kvm_time *out)
{
    if (!vmt_kvm_is_kvm(d) || !out)
        return VMT_E_INVAL;
    kvm_drv *k = vmt_driver_impl(d);
    memset(out, 0, sizeof *out);
    out->guest_ns = kvm_guest_now(k);
    out->stopped_ns = k->stopped_ns;
    out->tsc_khz = k->tsc.khz;
    out->tsc_hidden_ns = k->tsc.hidden_ns;
    out->tsc_hidden_ticks = k->tsc.hidden_ticks;
    out->tsc_failures = k->tsc.failures;
    out->tsc_method = kvm_tsc_method_name(k->tsc.method);
    out->tsc_why_none = k->tsc.why_none;
    out->irqchip = k->irqchip;
    out->irq_raised = k->irq.raised;
    out->irq_coalesced = k->irq.coalesced;
    out->irq_masked = k->irq.masked;
    return VMT_OK;
}
