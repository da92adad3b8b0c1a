/*
 * platform/platform.c — the PC platform object: creation, the vmt_bus a
 * driver calls, port/MMIO dispatch, interrupt line routing, virtual time
 * glue, serial line assembly and unknown-access reports.
 *
 * Dispatch: ports go to the device that owns them; byte-wide ISA devices
 * receive wider accesses split into bytes at consecutive ports (as the ISA
 * bus does). MMIO: the accessing vCPU's LAPIC page (xAPIC mode), the IOAPIC
 * page, the HPET block. Ports in the passthrough list and the ucall ports
 * are VMT_E_NOTFOUND (the driver's); everything else unclaimed is an
 * unknown access: reported once per (space, address), reads all-ones,
 * writes ignored.
 *
 * Interrupt routing: a line is the OR of its sources (PLAT_SRC_*); a change
 * of a line's level reaches the PIC (ISA lines 0-15) and the IOAPIC (ISA IRQ
 * 0 on pin 2, others on their own pin). HPET legacy replacement disconnects
 * the PIT from IRQ 0 and the RTC from IRQ 8. The PIC's INTR reaches vCPU 0.
 *
 * Failure atomicity: accesses change only the device they reach; create
 * fails without leaving anything allocated.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "platform/platform_internal.h"

#define IOAPIC_BASE 0xfec00000ull
#define HPET_BASE 0xfed00000ull
#define DEFAULT_EPOCH 946684800ll /* 2000-01-01 00:00:00 UTC */

/* ---------- routing ---------- */

static bool src_gated(const vmt_platform *p, unsigned src)
{
    return (src == PLAT_SRC_PIT || src == PLAT_SRC_RTC) && plat_has(p, VMT_PLATFORM_DEV_HPET) &&
           vmt_hpet_legacy(p);
}

void vmt_plat_irq(vmt_platform *p, unsigned src, unsigned irq, bool level)
{
    if (irq >= PLAT_LINES || src >= PLAT_SRC_COUNT)
        return;
    if (level && src_gated(p, src))
        level = false;
    bool old = p->s.line_src[irq] != 0;
    if (level)
        p->s.line_src[irq] |= (uint8_t)(1u << src);
    else
        p->s.line_src[irq] &= (uint8_t)~(1u << src);
    bool now = p->s.line_src[irq] != 0;
    if (old == now)
        return;
    if (p->cfg.irq_out)
        p->cfg.irq_out(p->cfg.irq_out_ctx, irq, now);
    if (irq < 16 && plat_has(p, VMT_PLATFORM_DEV_PIC))
        vmt_pic_set_irq(p, irq, now);
    if (plat_has(p, VMT_PLATFORM_DEV_IOAPIC)) {
        if (irq == 0)
            vmt_ioapic_set_pin(p, 2, now);
        else if (irq != 2)
            vmt_ioapic_set_pin(p, irq, now);
    }
}

void vmt_plat_irq_pulse(vmt_platform *p, unsigned src, unsigned irq)
{
    vmt_plat_irq(p, src, irq, true);
    vmt_plat_irq(p, src, irq, false);
}

void vmt_plat_stop(vmt_platform *p, const char *why)
{
    snprintf(p->stop_reason, sizeof p->stop_reason, "%s", why);
}

uint64_t vmt_plat_tsc(const vmt_platform *p, uint64_t ns)
{
    return p->cfg.tsc_offset + plat_muldiv(ns, p->cfg.tsc_hz, 1000000000ull);
}

uint64_t vmt_plat_tsc_to_ns(const vmt_platform *p, uint64_t tsc)
{
    if (tsc <= p->cfg.tsc_offset)
        return 0;
    return plat_muldiv_up(tsc - p->cfg.tsc_offset, 1000000000ull, p->cfg.tsc_hz);
}

/* ---------- serial (host side) ---------- */

static void emit_line(vmt_platform *p)
{
    p->line[p->line_len] = 0;
    if (p->cfg.serial)
        p->cfg.serial(p->cfg.serial_ctx, p->line);
    p->line_len = 0;
}

void vmt_plat_serial_tx(vmt_platform *p, uint8_t byte)
{
    if (byte == '\n') {
        emit_line(p);
        return;
    }
    if (byte == '\r' || byte == 0)
        return;
    p->line[p->line_len++] = (char)byte;
    if (p->line_len == PLAT_LINE_MAX)
        emit_line(p);
}

void vmt_platform_serial_flush(vmt_platform *p)
{
    if (p && p->line_len)
        emit_line(p);
}

int vmt_plat_serial_rx(vmt_platform *p)
{
    if (!p->input_count)
        return -1;
    uint8_t b = p->input[p->input_head];
    p->input_head = (p->input_head + 1) % PLAT_INPUT_MAX;
    p->input_count--;
    return b;
}

bool vmt_plat_serial_rx_ready(const vmt_platform *p)
{
    return p->input_count != 0;
}

vmt_status vmt_platform_serial_input(vmt_platform *p, const void *bytes, size_t len)
{
    if (!p || (!bytes && len))
        return VMT_E_INVAL;
    if (len > PLAT_INPUT_MAX - p->input_count)
        return vmt_errbuf_set(&p->err, VMT_E_RANGE,
                              "platform: serial input queue full (%zu queued, %zu more, limit %d)",
                              p->input_count, len, PLAT_INPUT_MAX);
    const uint8_t *b = bytes;
    for (size_t i = 0; i < len; i++)
        p->input[(p->input_head + p->input_count + i) % PLAT_INPUT_MAX] = b[i];
    p->input_count += len;
    if (plat_has(p, VMT_PLATFORM_DEV_UART))
        vmt_uart_input_ready(p);
    return VMT_OK;
}

/* ---------- unknown accesses ---------- */

static void report_unknown(vmt_platform *p, vmt_platform_space space, uint64_t addr, unsigned size,
                           bool write, uint64_t value, vmt_vcpu vcpu)
{
    for (size_t i = 0; i < p->unknown_count; i++)
        if (p->unknown[i].space == space && p->unknown[i].addr == addr)
            return;
    if (p->unknown_count == PLAT_UNKNOWN_MAX) {
        p->unknown_overflow = true;
        return;
    }
    vmt_platform_unknown *u = &p->unknown[p->unknown_count++];
    *u = (vmt_platform_unknown){space, addr, size, write, write ? value : 0, vcpu, p->s.now_ns};
    if (p->cfg.unknown)
        p->cfg.unknown(p->cfg.unknown_ctx, u);
}

size_t vmt_platform_unknown_count(const vmt_platform *p)
{
    return p ? p->unknown_count : 0;
}

vmt_status vmt_platform_unknown_get(const vmt_platform *p, size_t i, vmt_platform_unknown *out)
{
    if (!p || !out || i >= p->unknown_count)
        return VMT_E_INVAL;
    *out = p->unknown[i];
    return VMT_OK;
}

static uint64_t ones(unsigned size)
{
    return size >= 8 ? UINT64_MAX : (1ull << (size * 8)) - 1;
}

/* ---------- port dispatch ---------- */

static bool passthrough(const vmt_platform *p, uint16_t port)
{
    if (port >= VMT_PORT_UCALL && port < VMT_PORT_UCALL + 8)
        return true;
    for (size_t i = 0; i < p->cfg.passthrough_count; i++)
        if (p->passthrough[i] == port)
            return true;
    return false;
}

/* One byte at `port` to a byte-wide device; VMT_E_NOTFOUND: nobody. */
static vmt_status pio_byte(vmt_platform *p, uint16_t port, bool write, uint32_t *val)
{
    uint32_t d = p->s.devices;
    if ((d & VMT_PLATFORM_DEV_PIC) &&
        (port == 0x20 || port == 0x21 || port == 0xa0 || port == 0xa1 || port == 0x4d0 || port == 0x4d1))
        return vmt_pic_pio(p, port, write, val);
    if ((d & VMT_PLATFORM_DEV_PIT) && ((port >= 0x40 && port <= 0x43) || port == 0x61))
        return vmt_pit_pio(p, port, write, val);
    if ((d & VMT_PLATFORM_DEV_I8042) && (port == 0x60 || port == 0x64))
        return vmt_kbd_pio(p, port, write, val);
    if ((d & VMT_PLATFORM_DEV_RTC) && port >= 0x70 && port <= 0x73)
        return vmt_rtc_pio(p, port, write, val);
    if ((d & VMT_PLATFORM_DEV_UART) && port >= 0x3f8 && port <= 0x3ff)
        return vmt_uart_pio(p, (uint16_t)(port - 0x3f8), write, val);
    if ((d & VMT_PLATFORM_DEV_MISC) && (port == 0x80 || port == 0xcf9))
        return vmt_misc_pio(p, port, 1, write, val);
    return VMT_E_NOTFOUND;
}

static vmt_status pio(vmt_platform *p, vmt_vcpu vcpu, uint16_t port, unsigned size, bool write,
                      uint32_t *val)
{
    if (vcpu >= p->s.vcpus)
        return vmt_errbuf_set(&p->err, VMT_E_INVAL, "platform: port access from vCPU %u of %u", vcpu,
                              p->s.vcpus);
    if (size != 1 && size != 2 && size != 4)
        return vmt_errbuf_set(&p->err, VMT_E_INVAL, "platform: port 0x%x access of %u bytes", port, size);
    if (passthrough(p, port))
        return VMT_E_NOTFOUND;
    /* Devices with native wide registers. */
    uint16_t pm = p->cfg.pm_timer_port;
    if ((p->s.devices & VMT_PLATFORM_DEV_PMTIMER) && port >= pm && port < pm + 4) {
        if (!write) {
            uint32_t v = vmt_pmtimer_read(p) >> ((port - pm) * 8);
            *val = (uint32_t)(v & ones(size));
        }
        return VMT_OK;
    }
    if ((p->s.devices & VMT_PLATFORM_DEV_MISC) &&
        ((port == 0xcf8 && size == 4) || (port >= 0xcfc && port <= 0xcff)))
        return vmt_misc_pio(p, port, size, write, val);
    uint32_t out = 0;
    bool any = false;
    for (unsigned i = 0; i < size; i++) {
        uint32_t b = write ? (*val >> (i * 8)) & 0xff : 0xff;
        vmt_status st = pio_byte(p, (uint16_t)(port + i), write, &b);
        if (st == VMT_E_NOTFOUND) {
            report_unknown(p, VMT_PLATFORM_PIO, (uint16_t)(port + i), size, write,
                           write ? *val : 0, vcpu);
            b = 0xff;
        } else if (st != VMT_OK) {
            return st;
        } else {
            any = true;
        }
        out |= (b & 0xff) << (i * 8);
    }
    (void)any;
    if (!write)
        *val = out;
    return VMT_OK;
}

static vmt_status bus_pio_read(void *ctx, vmt_vcpu vcpu, uint16_t port, unsigned size, uint32_t *val)
{
    return pio(ctx, vcpu, port, size, false, val);
}

static vmt_status bus_pio_write(void *ctx, vmt_vcpu vcpu, uint16_t port, unsigned size, uint32_t val)
{
    return pio(ctx, vcpu, port, size, true, &val);
}

/* ---------- MMIO dispatch ---------- */

static vmt_status mmio(vmt_platform *p, vmt_vcpu vcpu, vmt_pa gpa, unsigned size, bool write,
                       uint64_t *val)
{
    if (vcpu >= p->s.vcpus)
        return vmt_errbuf_set(&p->err, VMT_E_INVAL, "platform: MMIO access from vCPU %u of %u", vcpu,
                              p->s.vcpus);
    if (size != 1 && size != 2 && size != 4 && size != 8)
        return vmt_errbuf_set(&p->err, VMT_E_INVAL, "platform: MMIO access at 0x%llx of %u bytes",
                              (unsigned long long)gpa, size);
    uint32_t d = p->s.devices;
    if ((d & VMT_PLATFORM_DEV_LAPIC) && vmt_lapic_mmio_hit(p, vcpu, gpa))
        return vmt_lapic_mmio(p, vcpu, gpa & 0xfff, size, write, val);
    if ((d & VMT_PLATFORM_DEV_IOAPIC) && gpa >= IOAPIC_BASE && gpa < IOAPIC_BASE + 0x1000)
        return vmt_ioapic_mmio(p, gpa - IOAPIC_BASE, size, write, val);
    if ((d & VMT_PLATFORM_DEV_HPET) && gpa >= HPET_BASE && gpa < HPET_BASE + 0x400)
        return vmt_hpet_mmio(p, gpa - HPET_BASE, size, write, val);
    report_unknown(p, VMT_PLATFORM_MMIO, gpa, size, write, write ? *val : 0, vcpu);
    if (!write)
        *val = ones(size);
    return VMT_OK;
}

static vmt_status bus_mmio_read(void *ctx, vmt_vcpu vcpu, vmt_pa gpa, unsigned size, uint64_t *val)
{
    return mmio(ctx, vcpu, gpa, size, false, val);
}

static vmt_status bus_mmio_write(void *ctx, vmt_vcpu vcpu, vmt_pa gpa, unsigned size, uint64_t val)
{
    return mmio(ctx, vcpu, gpa, size, true, &val);
}

/* ---------- MSRs ---------- */

static vmt_status msr(vmt_platform *p, vmt_vcpu vcpu, uint32_t index, bool write, uint64_t *val)
{
    if (!plat_has(p, VMT_PLATFORM_DEV_LAPIC))
        return VMT_E_NOTFOUND;
    if (index != 0x1b && index != 0x6e0 && !(index >= 0x800 && index <= 0x8ff))
        return VMT_E_NOTFOUND;
    if (vcpu >= p->s.vcpus)
        return vmt_errbuf_set(&p->err, VMT_E_INVAL, "platform: MSR access from vCPU %u of %u", vcpu,
                              p->s.vcpus);
    return vmt_lapic_msr(p, vcpu, index, write, val);
}

static vmt_status bus_msr_read(void *ctx, vmt_vcpu vcpu, uint32_t index, uint64_t *val)
{
    return msr(ctx, vcpu, index, false, val);
}

static vmt_status bus_msr_write(void *ctx, vmt_vcpu vcpu, uint32_t index, uint64_t val)
{
    return msr(ctx, vcpu, index, true, &val);
}

/* ---------- interrupts ---------- */

static bool pic_reaches(const vmt_platform *p, vmt_vcpu vcpu)
{
    if (vcpu != 0 || !plat_has(p, VMT_PLATFORM_DEV_PIC))
        return false;
    return !plat_has(p, VMT_PLATFORM_DEV_LAPIC) || vmt_lapic_extint_ok(p, 0);
}

static int bus_irq_pending(void *ctx, vmt_vcpu vcpu)
{
    vmt_platform *p = ctx;
    if (vcpu >= p->s.vcpus)
        return -1;
    if (plat_has(p, VMT_PLATFORM_DEV_LAPIC)) {
        int v = vmt_lapic_pending(p, vcpu);
        if (v >= 0)
            return v;
    }
    if (pic_reaches(p, vcpu))
        return vmt_pic_peek(p);
    return -1;
}

static void bus_irq_ack(void *ctx, vmt_vcpu vcpu, uint8_t vector)
{
    vmt_platform *p = ctx;
    if (vcpu >= p->s.vcpus)
        return;
    if (plat_has(p, VMT_PLATFORM_DEV_LAPIC)) {
        int v = vmt_lapic_pending(p, vcpu);
        if (v >= 0) {
            if (v == vector)
                vmt_lapic_ack(p, vcpu, vector);
            return;
        }
    }
    if (pic_reaches(p, vcpu) && vmt_pic_peek(p) == vector)
        vmt_pic_ack(p);
}

static bool bus_nmi_take(void *ctx, vmt_vcpu vcpu)
{
    vmt_platform *p = ctx;
    if (vcpu >= p->s.vcpus || !plat_has(p, VMT_PLATFORM_DEV_LAPIC) || !p->s.lapic[vcpu].nmi_pending)
        return false;
    p->s.lapic[vcpu].nmi_pending = false;
    return true;
}

/* ---------- time ---------- */

uint64_t vmt_platform_next_deadline(const vmt_platform *p)
{
    uint64_t next = UINT64_MAX;
    if (plat_has(p, VMT_PLATFORM_DEV_LAPIC))
        for (uint32_t i = 0; i < p->s.vcpus; i++)
            next = plat_min(next, vmt_lapic_deadline(p, &p->s.lapic[i]));
    if (plat_has(p, VMT_PLATFORM_DEV_PIT))
        next = plat_min(next, vmt_pit_deadline(p));
    if (plat_has(p, VMT_PLATFORM_DEV_HPET))
        next = plat_min(next, vmt_hpet_deadline(p));
    if (plat_has(p, VMT_PLATFORM_DEV_RTC))
        next = plat_min(next, vmt_rtc_deadline(p));
    return next;
}

uint64_t vmt_platform_now(const vmt_platform *p)
{
    return p->s.now_ns;
}

static uint64_t bus_advance(void *ctx, uint64_t now_ns)
{
    vmt_platform *p = ctx;
    if (now_ns > p->s.now_ns)
        p->s.now_ns = now_ns;
    if (plat_has(p, VMT_PLATFORM_DEV_LAPIC))
        for (uint32_t i = 0; i < p->s.vcpus; i++)
            vmt_lapic_advance(p, i);
    if (plat_has(p, VMT_PLATFORM_DEV_PIT))
        vmt_pit_advance(p);
    if (plat_has(p, VMT_PLATFORM_DEV_HPET))
        vmt_hpet_advance(p);
    if (plat_has(p, VMT_PLATFORM_DEV_RTC))
        vmt_rtc_advance(p);
    return vmt_platform_next_deadline(p);
}

static const char *bus_stop_reason(void *ctx)
{
    vmt_platform *p = ctx;
    return p->stop_reason[0] ? p->stop_reason : p->err.msg;
}

static const vmt_bus_ops platform_bus_ops = {
    .pio_read = bus_pio_read,
    .pio_write = bus_pio_write,
    .mmio_read = bus_mmio_read,
    .mmio_write = bus_mmio_write,
    .msr_read = bus_msr_read,
    .msr_write = bus_msr_write,
    .irq_pending = bus_irq_pending,
    .irq_ack = bus_irq_ack,
    .nmi_take = bus_nmi_take,
    .advance = bus_advance,
    .stop_reason = bus_stop_reason,
};

vmt_bus vmt_platform_bus(vmt_platform *p)
{
    return (vmt_bus){p ? &platform_bus_ops : NULL, p};
}

/* ---------- lifecycle ---------- */

static void reset_all(vmt_platform *p)
{
    memset(p->s.line_src, 0, sizeof p->s.line_src);
    if (plat_has(p, VMT_PLATFORM_DEV_LAPIC))
        for (uint32_t i = 0; i < p->s.vcpus; i++)
            vmt_lapic_reset(p, i);
    if (plat_has(p, VMT_PLATFORM_DEV_IOAPIC))
        vmt_ioapic_reset(p);
    if (plat_has(p, VMT_PLATFORM_DEV_PIC))
        vmt_pic_reset(p);
    if (plat_has(p, VMT_PLATFORM_DEV_PIT))
        vmt_pit_reset(p);
    if (plat_has(p, VMT_PLATFORM_DEV_HPET))
        vmt_hpet_reset(p);
    if (plat_has(p, VMT_PLATFORM_DEV_RTC))
        vmt_rtc_reset(p);
    if (plat_has(p, VMT_PLATFORM_DEV_UART))
        vmt_uart_reset(p);
    if (plat_has(p, VMT_PLATFORM_DEV_I8042))
        vmt_kbd_reset(p);
    if (plat_has(p, VMT_PLATFORM_DEV_MISC))
        vmt_misc_reset(p);
}

void vmt_platform_reset(vmt_platform *p)
{
    if (!p)
        return;
    reset_all(p);
    p->stop_reason[0] = 0;
}

vmt_status vmt_platform_create(const vmt_platform_config *cfg, vmt_platform **out, char *why,
                               size_t why_len)
{
    if (!cfg || !out) {
        vmt_why(why, why_len, "platform: config and out are required");
        return VMT_E_INVAL;
    }
    *out = NULL;
    uint32_t vcpus = cfg->vcpus ? cfg->vcpus : 1;
    if (vcpus > VMT_PLATFORM_MAX_VCPUS) {
        vmt_why(why, why_len, "platform: %u vCPUs, at most %d", vcpus, VMT_PLATFORM_MAX_VCPUS);
        return VMT_E_INVAL;
    }
    uint32_t devices = cfg->devices ? cfg->devices : VMT_PLATFORM_DEV_ALL;
    if (devices & ~(uint32_t)VMT_PLATFORM_DEV_ALL) {
        vmt_why(why, why_len, "platform: unknown device bits 0x%x", devices & ~(uint32_t)VMT_PLATFORM_DEV_ALL);
        return VMT_E_INVAL;
    }
    if ((cfg->passthrough_count && !cfg->passthrough_ports) || (cfg->pci_count && !cfg->pci)) {
        vmt_why(why, why_len, "platform: a list count without its array");
        return VMT_E_INVAL;
    }
    for (size_t i = 0; i < cfg->pci_count; i++) {
        if (cfg->pci[i].device > 31 || cfg->pci[i].function > 7) {
            vmt_why(why, why_len, "platform: PCI function %zu at %u.%u is out of range", i,
                    cfg->pci[i].device, cfg->pci[i].function);
            return VMT_E_INVAL;
        }
    }
    uint16_t pm = cfg->pm_timer_port ? cfg->pm_timer_port : 0xb008;
    if (pm > 0xfffc || (pm & 3)) {
        vmt_why(why, why_len, "platform: PM timer port 0x%x is not a 4-byte aligned port", pm);
        return VMT_E_INVAL;
    }
    if (cfg->rtc_epoch_s < -62167219200ll || cfg->rtc_epoch_s > 253402300799ll) {
        vmt_why(why, why_len, "platform: RTC epoch %lld is outside years 0-9999", (long long)cfg->rtc_epoch_s);
        return VMT_E_INVAL;
    }
    vmt_platform *p = calloc(1, sizeof *p);
    if (!p) {
        vmt_why(why, why_len, "platform: out of memory");
        return VMT_E_NOMEM;
    }
    p->cfg = *cfg;
    p->cfg.vcpus = vcpus;
    p->cfg.devices = devices;
    p->cfg.pm_timer_port = pm;
    if (!p->cfg.tsc_hz)
        p->cfg.tsc_hz = 1000000000ull;
    if (!p->cfg.apic_bus_hz)
        p->cfg.apic_bus_hz = 1000000000ull;
    if (!p->cfg.rtc_epoch_s)
        p->cfg.rtc_epoch_s = DEFAULT_EPOCH;
    p->input = malloc(PLAT_INPUT_MAX);
    if (cfg->passthrough_count)
        p->passthrough = malloc(cfg->passthrough_count * sizeof *p->passthrough);
    if (cfg->pci_count)
        p->pci = malloc(cfg->pci_count * sizeof *p->pci);
    if (!p->input || (cfg->passthrough_count && !p->passthrough) || (cfg->pci_count && !p->pci)) {
        vmt_platform_destroy(p);
        vmt_why(why, why_len, "platform: out of memory");
        return VMT_E_NOMEM;
    }
    if (cfg->passthrough_count)
        memcpy(p->passthrough, cfg->passthrough_ports, cfg->passthrough_count * sizeof *p->passthrough);
    if (cfg->pci_count)
        memcpy(p->pci, cfg->pci, cfg->pci_count * sizeof *p->pci);
    p->cfg.passthrough_ports = p->passthrough;
    p->cfg.pci = p->pci;
    p->s.vcpus = vcpus;
    p->s.devices = devices;
    p->s.now_ns = cfg->start_ns;
    reset_all(p);
    *out = p;
    return VMT_OK;
}

void vmt_platform_destroy(vmt_platform *p)
{
    if (!p)
        return;
    free(p->input);
    free(p->passthrough);
    free(p->pci);
    free(p);
}

const char *vmt_platform_error(const vmt_platform *p)
{
    return p ? p->err.msg : "no platform";
}

vmt_status vmt_platform_set_irq(vmt_platform *p, unsigned irq, bool level)
{
    if (!p)
        return VMT_E_INVAL;
    if (irq >= PLAT_LINES)
        return vmt_errbuf_set(&p->err, VMT_E_INVAL, "platform: interrupt line %u (0..23)", irq);
    vmt_plat_irq(p, PLAT_SRC_EXT, irq, level);
    return VMT_OK;
}
