/*
 * drivers/emu/emu_msr.c — model-specific registers and the virtual clock.
 *
 * Design: RDMSR/WRMSR are performed by the driver (the code hook stops in
 * front of them). Every MSR is first offered to the bus (vmtrap/bus.h:
 * VMT_E_NOTFOUND = not the bus's, VMT_E_INVAL = #GP). Otherwise:
 *   - EFER: the driver's value (long mode must stay on), mirrored into
 *     Unicorn so its native SYSRET sees SCE;
 *   - the MSRs Unicorn's own instructions use (STAR, LSTAR, CSTAR, FMASK,
 *     FS/GS/KERNEL_GS base, SYSENTER_*, TSC_AUX, PAT): stored in Unicorn,
 *     address MSRs checked for canonical values like hardware;
 *   - IA32_TSC reads the virtual clock (a write moves the TSC offset);
 *     APIC_BASE and TSC_DEADLINE keep the value written when no bus takes
 *     them (APIC_BASE starts as the BSP's 0xfee00900);
 *   - a table of MSRs that read back what was written (MTRRs, MISC_ENABLE,
 *     SPEC_CTRL, ...) or are read-only (MTRRCAP, MCG_CAP, ...); machine
 *     check banks as QEMU's qemu64 has them (10 banks that never report an
 *     error: a kernel that booted on QEMU polls them);
 *   - anything else raises #GP, as on a CPU that does not have it: a
 *     read never silently returns 0.
 * Virtual time (vmt_machine_config.clock): guest ns = start_ns + retired
 * instructions * 1e9 / insns_per_sec + time skipped over HLT; TSC =
 * tsc_offset + ns * tsc_hz / 1e9. Time the monitor spends is invisible.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "drivers/emu/emu_priv.h"

#define EMU_DEFAULT_IPS 1000000000ull   /* 1 ns per instruction */
#define EMU_DEFAULT_TSC_HZ 2000000000ull
#define EMU_MCG_CAP (0x1000000ull | 0x100ull | EMU_MCE_BANKS)

void emu_clock_init(emu *e, const vmt_clock_config *c)
{
    e->ips = c && c->insns_per_sec ? c->insns_per_sec : EMU_DEFAULT_IPS;
    e->tsc_hz = c && c->tsc_hz ? c->tsc_hz : EMU_DEFAULT_TSC_HZ;
    e->start_ns = c ? c->start_ns : 0;
    e->apic_base = 0xfee00900ull;
    static const uint32_t ids[EMU_NSTORED] = {
        0x2ff, 0x200, 0x201, 0x202, 0x203, 0x204, 0x205, 0x206, 0x207, 0x208, 0x209, 0x20a, 0x20b, 0x20c,
        0x20d, 0x20e, 0x20f, 0x250, 0x258, 0x259, 0x268, 0x269, 0x26a, 0x26b, 0x26c, 0x26d, 0x26e, 0x26f,
        0x1a0, 0x48, 0x3a, 0x8b, 0x17a, 0x1d9,
    };
    for (unsigned i = 0; i < EMU_NSTORED; i++) {
        e->msr_ids[i] = ids[i];
        e->msr_vals[i] = 0;
    }
    e->msr_vals[28] = 1;      /* MISC_ENABLE: fast strings */
    e->msr_vals[0] = 0xc00;   /* MTRR_DEF_TYPE: enabled, fixed enabled, UC */
}

uint64_t emu_now_ns(const emu *e)
{
    return e->start_ns + (uint64_t)((unsigned __int128)(e->icount - e->clock_icount) * 1000000000u / e->ips) + e->skip_ns;
}

uint64_t emu_tsc_now(const emu *e)
{
    return e->tsc_offset + (uint64_t)((unsigned __int128)emu_now_ns(e) * e->tsc_hz / 1000000000u);
}

vmt_status vmt_emu_clock_get(vmt_driver *d, uint64_t *now_ns)
{
    if (!d || strcmp(vmt_driver_name(d), "emu") != 0)
        return VMT_E_INVAL;
    *now_ns = emu_now_ns(vmt_driver_impl(d));
    return VMT_OK;
}

vmt_status vmt_emu_clock_set(vmt_driver *d, uint64_t now_ns)
{
    if (!d || strcmp(vmt_driver_name(d), "emu") != 0)
        return VMT_E_INVAL;
    emu *e = vmt_driver_impl(d);
    uint64_t tsc = emu_tsc_now(e);
    e->clock_icount = e->icount;
    e->start_ns = now_ns;
    e->skip_ns = 0;
    emu_tsc_set(e, tsc); /* the TSC does not jump; set_vcpu_state moves it */
    e->irq_check_at = e->icount;
    return VMT_OK;
}

void emu_tsc_set(emu *e, uint64_t tsc)
{
    e->tsc_offset = tsc - (uint64_t)((unsigned __int128)emu_now_ns(e) * e->tsc_hz / 1000000000u);
}

static bool canonical(uint64_t v) { return (uint64_t)((int64_t)(v << 16) >> 16) == v; }

static const uint32_t unicorn_msrs[] = { 0xc0000081, 0xc0000082, 0xc0000083, 0xc0000084, 0xc0000100,
                                         0xc0000101, 0xc0000102, 0xc0000103, 0x174,      0x175,
                                         0x176,      0x277 };

static int stored_slot(const emu *e, uint32_t index)
{
    for (unsigned i = 0; i < EMU_NSTORED; i++)
        if (e->msr_ids[i] == index)
            return (int)i;
    return -1;
}

emu_msr_result emu_msr_access(emu *e, uint32_t index, bool is_write, uint64_t *value)
{
    if (e->bus.ops) {
        vmt_status st = VMT_E_NOTFOUND;
        if (is_write && e->bus.ops->msr_write)
            st = e->bus.ops->msr_write(e->bus.ctx, 0, index, *value);
        else if (!is_write && e->bus.ops->msr_read)
            st = e->bus.ops->msr_read(e->bus.ctx, 0, index, value);
        emu_irq_after_bus(e);
        if (st == VMT_OK)
            return EMU_MSR_OK;
        if (st == VMT_E_INVAL)
            return EMU_MSR_GP;
        if (st == VMT_E_STOPPED)
            return EMU_MSR_SHUTDOWN;
        if (st != VMT_E_NOTFOUND) {
            e->bus_error = st;
            return EMU_MSR_BUS_ERROR;
        }
    }
    switch (index) {
    case 0xc0000080: { /* EFER */
        if (!is_write) {
            *value = e->efer;
            return EMU_MSR_OK;
        }
        uint64_t v = *value;
        if (v & ~(uint64_t)(VMT_EFER_SCE | VMT_EFER_LME | VMT_EFER_LMA | VMT_EFER_NXE))
            return EMU_MSR_GP;
        if (!(v & VMT_EFER_LME))
            return EMU_MSR_UNSUPPORTED;
        if ((v ^ e->efer) & VMT_EFER_NXE)
            emu_tlb_flush(e);
        e->efer = v | VMT_EFER_LMA;
        emu_msr_set(e, 0xc0000080, e->efer);
        return EMU_MSR_OK;
    }
    case 0x10: /* IA32_TSC */
        if (is_write)
            emu_tsc_set(e, *value);
        else
            *value = emu_tsc_now(e);
        return EMU_MSR_OK;
    case 0x1b: /* APIC_BASE without a bus: kept */
        if (is_write)
            e->apic_base = *value;
        else
            *value = e->apic_base;
        return EMU_MSR_OK;
    case 0x6e0: /* TSC_DEADLINE without a bus: kept */
        if (is_write)
            e->tsc_deadline = *value;
        else
            *value = e->tsc_deadline;
        return EMU_MSR_OK;
    case 0xfe: /* MTRRCAP: 8 variable ranges, fixed ranges, WC */
    case 0x179: /* MCG_CAP: QEMU's (MCG_CTL_P, MCG_SER_P, 10 banks) */
        if (is_write)
            return EMU_MSR_GP;
        *value = index == 0xfe ? 0x508 : EMU_MCG_CAP;
        return EMU_MSR_OK;
    case 0x17b: /* MCG_CTL */
        if (is_write)
            e->mcg_ctl = *value;
        else
            *value = e->mcg_ctl;
        return EMU_MSR_OK;
    case 0x49: /* PRED_CMD: write-only */
        return is_write ? EMU_MSR_OK : EMU_MSR_GP;
    default:
        break;
    }
    for (size_t i = 0; i < sizeof unicorn_msrs / sizeof unicorn_msrs[0]; i++) {
        if (unicorn_msrs[i] != index)
            continue;
        if (!is_write) {
            *value = emu_msr_get(e, index);
            return EMU_MSR_OK;
        }
        bool address = index == 0xc0000082 || index == 0xc0000083 || index == 0xc0000100 || index == 0xc0000101 ||
                       index == 0xc0000102 || index == 0x175 || index == 0x176;
        if (address && !canonical(*value))
            return EMU_MSR_GP;
        if (index == 0xc0000103 && (*value >> 32))
            return EMU_MSR_GP;
        emu_msr_set(e, index, *value);
        return EMU_MSR_OK;
    }
    if (index >= 0x400 && index < 0x400 + 4 * EMU_MCE_BANKS) { /* MCi_CTL/STATUS/ADDR/MISC: no errors ever */
        if (is_write) {
            if ((index & 3) == 1 && *value)
                return EMU_MSR_GP; /* STATUS takes only 0 */
            e->mce[index - 0x400] = *value;
        } else {
            *value = e->mce[index - 0x400];
        }
        return EMU_MSR_OK;
    }
    int s = stored_slot(e, index);
    if (s < 0)
        return EMU_MSR_GP;
    if (is_write)
        e->msr_vals[s] = *value;
    else
        *value = e->msr_vals[s];
    return EMU_MSR_OK;
}
