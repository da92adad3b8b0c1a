/*
 * platform/platform_regs.c — the register views of vmtrap/platform_regs.h.
 *
 * Each set runs the device's own validating setter on the live state with a
 * copy kept aside, then the whole platform's invariant check; any failure
 * puts the copy back (failure atomic) and leaves the reason in the
 * platform's error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "platform/platform_internal.h"

static vmt_status need(vmt_platform *p, uint32_t dev, const char *name)
{
    if (!p)
        return VMT_E_INVAL;
    if (!plat_has(p, dev))
        return vmt_errbuf_set(&p->err, VMT_E_NOTSUP, "platform: no %s on this platform", name);
    return VMT_OK;
}

typedef vmt_status (*setter)(vmt_platform *p, unsigned idx, const void *in);

static vmt_status atomic_set(vmt_platform *p, setter fn, unsigned idx, const void *in)
{
    plat_state *keep = malloc(sizeof *keep);
    if (!keep)
        return vmt_errbuf_set(&p->err, VMT_E_NOMEM, "platform: out of memory");
    *keep = p->s;
    vmt_status st = fn(p, idx, in);
    if (st == VMT_OK && vmt_platform_check(p) != VMT_OK) {
        char why[VMT_ERRBUF_LEN];
        snprintf(why, sizeof why, "%s", p->err.msg);
        st = vmt_errbuf_set(&p->err, VMT_E_INVAL, "platform: the registers given are inconsistent: %.180s", why);
    }
    if (st != VMT_OK)
        p->s = *keep;
    free(keep);
    return st;
}

static vmt_status set_lapic(vmt_platform *p, unsigned idx, const void *in) { return vmt_lapic_set_regs(p, idx, in); }
static vmt_status set_ioapic(vmt_platform *p, unsigned idx, const void *in)
{
    (void)idx;
    return vmt_ioapic_set_regs(p, in);
}
static vmt_status set_uart(vmt_platform *p, unsigned idx, const void *in)
{
    (void)idx;
    return vmt_uart_set_regs(p, in);
}
static vmt_status set_hpet(vmt_platform *p, unsigned idx, const void *in)
{
    (void)idx;
    return vmt_hpet_set_regs(p, in);
}

vmt_status vmt_platform_lapic_get(vmt_platform *p, vmt_vcpu vcpu, vmt_platform_lapic_regs *out)
{
    vmt_status st = need(p, VMT_PLATFORM_DEV_LAPIC, "LAPIC");
    if (st != VMT_OK)
        return st;
    if (!out || vcpu >= p->s.vcpus)
        return vmt_errbuf_set(&p->err, VMT_E_INVAL, "platform: LAPIC of vCPU %u of %u", vcpu, p->s.vcpus);
    vmt_lapic_get_regs(p, vcpu, out);
    return VMT_OK;
}

vmt_status vmt_platform_lapic_set(vmt_platform *p, vmt_vcpu vcpu, const vmt_platform_lapic_regs *in)
{
    vmt_status st = need(p, VMT_PLATFORM_DEV_LAPIC, "LAPIC");
    if (st != VMT_OK)
        return st;
    if (!in || vcpu >= p->s.vcpus)
        return vmt_errbuf_set(&p->err, VMT_E_INVAL, "platform: LAPIC of vCPU %u of %u", vcpu, p->s.vcpus);
    return atomic_set(p, set_lapic, vcpu, in);
}

vmt_status vmt_platform_ioapic_get(vmt_platform *p, vmt_platform_ioapic_regs *out)
{
    vmt_status st = need(p, VMT_PLATFORM_DEV_IOAPIC, "IOAPIC");
    if (st == VMT_OK && !out)
        st = VMT_E_INVAL;
    if (st == VMT_OK)
        vmt_ioapic_get_regs(p, out);
    return st;
}

vmt_status vmt_platform_ioapic_set(vmt_platform *p, const vmt_platform_ioapic_regs *in)
{
    vmt_status st = need(p, VMT_PLATFORM_DEV_IOAPIC, "IOAPIC");
    if (st == VMT_OK && !in)
        st = VMT_E_INVAL;
    return st == VMT_OK ? atomic_set(p, set_ioapic, 0, in) : st;
}

vmt_status vmt_platform_uart_get(vmt_platform *p, vmt_platform_uart_regs *out)
{
    vmt_status st = need(p, VMT_PLATFORM_DEV_UART, "UART");
    if (st == VMT_OK && !out)
        st = VMT_E_INVAL;
    if (st == VMT_OK)
        vmt_uart_get_regs(p, out);
    return st;
}

vmt_status vmt_platform_uart_set(vmt_platform *p, const vmt_platform_uart_regs *in)
{
    vmt_status st = need(p, VMT_PLATFORM_DEV_UART, "UART");
    if (st == VMT_OK && !in)
        st = VMT_E_INVAL;
    return st == VMT_OK ? atomic_set(p, set_uart, 0, in) : st;
}

vmt_status vmt_platform_hpet_get(vmt_platform *p, vmt_platform_hpet_regs *out)
{
    vmt_status st = need(p, VMT_PLATFORM_DEV_HPET, "HPET");
    if (st == VMT_OK && !out)
        st = VMT_E_INVAL;
    if (st == VMT_OK)
        vmt_hpet_get_regs(p, out);
    return st;
}

vmt_status vmt_platform_hpet_set(vmt_platform *p, const vmt_platform_hpet_regs *in)
{
    vmt_status st = need(p, VMT_PLATFORM_DEV_HPET, "HPET");
    if (st == VMT_OK && !in)
        st = VMT_E_INVAL;
    return st == VMT_OK ? atomic_set(p, set_hpet, 0, in) : st;
}
