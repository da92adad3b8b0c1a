/*
 * drivers/kvm/kvm_plat.c — in-kernel irqchip setup, interrupt-line
 * forwarding and TSC hiding (design and invariants: kvm_plat.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "core/errbuf.h"
#include "drivers/kvm/kvm_plat.h"

#define MSR_IA32_TSC 0x10u

int kvm_host_real_ioctl(void *ctx, int fd, unsigned long req, void *arg)
{
    (void)ctx;
    int rc;
    do
        rc = ioctl(fd, req, arg);
    while (rc < 0 && errno == EINTR);
    return rc < 0 ? -errno : rc;
}

static int hio(const kvm_host *h, int fd, unsigned long req, void *arg) { return h->ioctl(h->ctx, fd, req, arg); }

/* ---- irqchip ---- */

static void route_chip(struct kvm_irq_routing_entry *e, uint32_t gsi, uint32_t chip, uint32_t pin)
{
    memset(e, 0, sizeof *e);
    e->gsi = gsi;
    e->type = KVM_IRQ_ROUTING_IRQCHIP;
    e->u.irqchip.irqchip = chip;
    e->u.irqchip.pin = pin;
}

vmt_status kvm_irqchip_create(const kvm_host *h, int kvm_fd, int vm_fd, char *why, size_t why_len)
{
    if (hio(h, kvm_fd, KVM_CHECK_EXTENSION, (void *)(uintptr_t)KVM_CAP_IRQCHIP) <= 0) {
        vmt_why(why, why_len, "kvm: this host has no in-kernel irqchip (KVM_CAP_IRQCHIP)");
        return VMT_E_NOTSUP;
    }
    int rc = hio(h, vm_fd, KVM_CREATE_IRQCHIP, NULL);
    if (rc < 0) {
        vmt_why(why, why_len, "kvm: KVM_CREATE_IRQCHIP: %s", strerror(-rc));
        return VMT_E_DRIVER;
    }
    enum { NR = 16 * 2 + 8 };
    struct kvm_irq_routing *r = calloc(1, sizeof *r + NR * sizeof(struct kvm_irq_routing_entry));
    if (!r) {
        vmt_why(why, why_len, "kvm: out of memory");
        return VMT_E_NOMEM;
    }
    uint32_t n = 0;
    for (uint32_t gsi = 0; gsi < KVM_PLAT_IRQ_LINES; gsi++) {
        if (gsi < 16)
            route_chip(&r->entries[n++], gsi, gsi < 8 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE, gsi % 8);
        if (gsi != 2) /* pin 2 belongs to GSI 0 (the PIT/HPET legacy timer) */
            route_chip(&r->entries[n++], gsi, KVM_IRQCHIP_IOAPIC, gsi == 0 ? 2 : gsi);
    }
    r->nr = n;
    rc = hio(h, vm_fd, KVM_SET_GSI_ROUTING, r);
    free(r);
    if (rc < 0) {
        vmt_why(why, why_len, "kvm: KVM_SET_GSI_ROUTING: %s", strerror(-rc));
        return VMT_E_DRIVER;
    }
    struct kvm_pit_config pit = { .flags = KVM_PIT_SPEAKER_DUMMY };
    rc = hio(h, vm_fd, KVM_CREATE_PIT2, &pit);
    if (rc < 0) {
        vmt_why(why, why_len, "kvm: KVM_CREATE_PIT2: %s", strerror(-rc));
        return VMT_E_DRIVER;
    }
    return VMT_OK;
}

/* ---- interrupt lines ---- */

void kvm_irq_fwd_init(kvm_irq_fwd *f, const kvm_host *h, int vm_fd, bool use_status)
{
    memset(f, 0, sizeof *f);
    f->host = *h;
    f->vm_fd = vm_fd;
    f->use_status = use_status;
}

vmt_status kvm_irq_fwd_set(kvm_irq_fwd *f, unsigned irq, bool level)
{
    if (irq >= KVM_PLAT_IRQ_LINES)
        return VMT_E_INVAL;
    uint32_t bit = 1u << irq;
    if (!!(f->level & bit) == level)
        return VMT_OK;
    struct kvm_irq_level l = { .irq = irq, .level = level ? 1u : 0u };
    int rc = hio(&f->host, f->vm_fd, f->use_status ? KVM_IRQ_LINE_STATUS : KVM_IRQ_LINE, &l);
    if (rc < 0) {
        f->failures++;
        f->last_errno = -rc;
        f->last_irq = irq;
        return VMT_E_DRIVER;
    }
    if (level) {
        f->level |= bit;
        f->raised++;
        if (f->use_status) {
            if (l.status > 0)
                f->delivered++;
            else if (l.status == 0)
                f->coalesced++;
            else
                f->masked++;
        }
    } else {
        f->level &= ~bit;
        f->lowered++;
    }
    return VMT_OK;
}

vmt_status kvm_irq_fwd_check(const kvm_irq_fwd *f, char *why, size_t why_len)
{
    if (f->level >> KVM_PLAT_IRQ_LINES) {
        vmt_why(why, why_len, "kvm irq: level mask %#x has lines above %u", f->level, KVM_PLAT_IRQ_LINES - 1);
        return VMT_E_INTERNAL;
    }
    uint64_t high = (uint64_t)__builtin_popcount(f->level);
    if (f->lowered + high > f->raised || f->raised - f->lowered != high) {
        vmt_why(why, why_len, "kvm irq: %" PRIu64 " raised - %" PRIu64 " lowered != %" PRIu64 " lines high", f->raised,
                f->lowered, high);
        return VMT_E_INTERNAL;
    }
    if (f->use_status && f->delivered + f->coalesced + f->masked != f->raised) {
        vmt_why(why, why_len, "kvm irq: delivery outcomes do not add up to the raised lines");
        return VMT_E_INTERNAL;
    }
    return VMT_OK;
}

/* ---- TSC ---- */

uint64_t kvm_ns_to_ticks(uint64_t ns, uint64_t khz)
{
    return (uint64_t)((unsigned __int128)ns * khz / 1000000u);
}

const char *kvm_tsc_method_name(kvm_tsc_method m)
{
    switch (m) {
    case KVM_TSC_OFFSET_ATTR: return "tsc-offset-attr";
    case KVM_TSC_MSR: return "ia32-tsc-write";
    default: return "none";
    }
}

static int tsc_attr(kvm_tsc *t, unsigned long req, uint64_t *val)
{
    struct kvm_device_attr a = { .group = KVM_VCPU_TSC_CTRL, .attr = KVM_VCPU_TSC_OFFSET, .addr = (uintptr_t)val };
    return hio(&t->host, t->vcpu_fd, req, &a);
}

static int tsc_msr(kvm_tsc *t, unsigned long req, uint64_t *val)
{
    struct {
        struct kvm_msrs h;
        struct kvm_msr_entry e;
    } m;
    memset(&m, 0, sizeof m);
    m.h.nmsrs = 1;
    m.e.index = MSR_IA32_TSC;
    m.e.data = *val;
    int rc = hio(&t->host, t->vcpu_fd, req, &m);
    if (rc == 1 && req == KVM_GET_MSRS)
        *val = m.e.data;
    return rc == 1 ? 0 : rc < 0 ? rc : -EIO;
}

void kvm_tsc_init(kvm_tsc *t, const kvm_host *h, int vcpu_fd, uint64_t want_hz)
{
    memset(t, 0, sizeof *t);
    t->host = *h;
    t->vcpu_fd = vcpu_fd;
    if (want_hz >= 1000)
        (void)hio(h, vcpu_fd, KVM_SET_TSC_KHZ, (void *)(uintptr_t)(want_hz / 1000)); /* a rate KVM refuses keeps the host's */
    int khz = hio(h, vcpu_fd, KVM_GET_TSC_KHZ, NULL);
    if (khz <= 0) {
        snprintf(t->why_none, sizeof t->why_none, "KVM_GET_TSC_KHZ gave no rate (%d)", khz);
        return;
    }
    t->khz = (uint64_t)khz;
    struct kvm_device_attr a = { .group = KVM_VCPU_TSC_CTRL, .attr = KVM_VCPU_TSC_OFFSET };
    if (hio(h, vcpu_fd, KVM_HAS_DEVICE_ATTR, &a) == 0) {
        t->method = KVM_TSC_OFFSET_ATTR;
        return;
    }
    uint64_t v = 0;
    if (tsc_msr(t, KVM_GET_MSRS, &v) == 0) {
        t->method = KVM_TSC_MSR;
        return;
    }
    snprintf(t->why_none, sizeof t->why_none, "neither KVM_VCPU_TSC_OFFSET nor KVM_GET_MSRS(IA32_TSC) works");
}

vmt_status kvm_tsc_hide(kvm_tsc *t, uint64_t ns)
{
    if (t->method == KVM_TSC_NONE || ns == 0)
        return VMT_OK;
    t->pending_ns += ns;
    uint64_t want = kvm_ns_to_ticks(t->hidden_ns + t->pending_ns, t->khz);
    uint64_t delta = want - t->hidden_ticks;
    /* the MSR path needs a rewind well above the time between its read and
     * read-back to tell "taken" from "synchronised": collect >= 100 us */
    if (delta == 0 || (t->method == KVM_TSC_MSR && delta < t->khz / 10))
        return VMT_OK;
    uint64_t v = 0;
    int rc;
    if (t->method == KVM_TSC_OFFSET_ATTR) {
        if ((rc = tsc_attr(t, KVM_GET_DEVICE_ATTR, &v)) == 0) {
            v -= delta;
            rc = tsc_attr(t, KVM_SET_DEVICE_ATTR, &v);
        }
    } else {
        uint64_t before = 0, after = 0;
        if ((rc = tsc_msr(t, KVM_GET_MSRS, &before)) == 0) {
            v = before - delta;
            if ((rc = tsc_msr(t, KVM_SET_MSRS, &v)) == 0 && (rc = tsc_msr(t, KVM_GET_MSRS, &after)) == 0 &&
                after >= before - delta / 2) {
                /* KVM took the write for a synchronisation and kept its offset */
                t->method = KVM_TSC_NONE;
                snprintf(t->why_none, sizeof t->why_none,
                         "a host IA32_TSC write did not move the TSC back (KVM synchronised it)");
                t->failures++;
                return VMT_E_NOTSUP;
            }
        }
    }
    if (rc < 0) {
        t->failures++;
        t->last_errno = -rc;
        return VMT_E_DRIVER;
    }
    t->hidden_ns += t->pending_ns;
    t->pending_ns = 0;
    t->hidden_ticks = want;
    return VMT_OK;
}
