/*
 * drivers/qemu/qemu_regs.c — vmt_regs through the gdbstub's register set:
 * 'g' (all registers, laid out by the target description) to read, 'P'
 * (one register) to write. Fields the description lacks read as 0 and
 * cannot be changed (VMT_E_NOTSUP, checked before anything is written, so
 * a refused set changes nothing). Every set is read back: QEMU accepts a
 * write it does not fully perform (general registers outside 64-bit mode
 * keep only 32 bits), which is VMT_E_NOTSUP naming the register.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "drivers/qemu/qemu_internal.h"

#define F(name, field) { name, offsetof(vmt_regs, field), (uint8_t)sizeof(((vmt_regs *)0)->field), -1 }

static const qemu_regmap map_template[QEMU_NREGMAP] = {
    F("rax", rax), F("rbx", rbx), F("rcx", rcx), F("rdx", rdx), F("rsi", rsi), F("rdi", rdi),
    F("rbp", rbp), F("rsp", rsp), F("r8", r8), F("r9", r9), F("r10", r10), F("r11", r11),
    F("r12", r12), F("r13", r13), F("r14", r14), F("r15", r15), F("rip", rip), F("eflags", rflags),
    F("cs", cs), F("ss", ss), F("ds", ds), F("es", es), F("fs", fs), F("gs", gs),
    F("fs_base", fs_base), F("gs_base", gs_base), F("k_gs_base", kernel_gs_base),
    F("cr0", cr0), F("cr2", cr2), F("cr3", cr3), F("cr4", cr4), F("cr8", cr8), F("efer", efer),
    /* Not in QEMU 7.2's i386-64bit.xml; kept so a richer stub is used when it offers them. */
    F("gdtr_base", gdtr_base), F("idtr_base", idtr_base),
};

/* Fields no mapping can fill (no gdb names for them in any QEMU). */
static const struct {
    const char *name;
    size_t off;
    uint8_t size;
} unmapped[] = {
    { "gdtr_limit", offsetof(vmt_regs, gdtr_limit), 2 }, { "idtr_limit", offsetof(vmt_regs, idtr_limit), 2 },
    { "dr0", offsetof(vmt_regs, dr0), 8 }, { "dr1", offsetof(vmt_regs, dr1), 8 },
    { "dr2", offsetof(vmt_regs, dr2), 8 }, { "dr3", offsetof(vmt_regs, dr3), 8 },
    { "dr6", offsetof(vmt_regs, dr6), 8 }, { "dr7", offsetof(vmt_regs, dr7), 8 },
};

static uint64_t field_get(const vmt_regs *r, size_t off, uint8_t size)
{
    const uint8_t *p = (const uint8_t *)r + off;
    if (size == 2) {
        uint16_t v;
        memcpy(&v, p, 2);
        return v;
    }
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static void field_set(vmt_regs *r, size_t off, uint8_t size, uint64_t v)
{
    uint8_t *p = (uint8_t *)r + off;
    if (size == 2) {
        uint16_t w = (uint16_t)v;
        memcpy(p, &w, 2);
    } else {
        memcpy(p, &v, 8);
    }
}

vmt_status qemu_regs_setup(vmt_driver *d)
{
    qemu_drv *q = qemu_of(d);
    memcpy(q->map, map_template, sizeof q->map);
    for (unsigned i = 0; i < QEMU_NREGMAP; i++) {
        const gdb_reg_desc *r = gdb_tdesc_find(&q->td, q->map[i].gdb_name);
        if (r && r->bits <= 64)
            q->map[i].td_index = (int)(r - q->td.regs);
    }
    /* Without these nothing works: say which is missing. */
    static const char *const needed[] = { "rip", "rsp", "cr3", "eflags" };
    for (unsigned i = 0; i < sizeof needed / sizeof needed[0]; i++) {
        const gdb_reg_desc *r = gdb_tdesc_find(&q->td, needed[i]);
        if (!r || r->bits > 64)
            return vmt_driver_fail(d, VMT_E_NOTSUP,
                                   "the gdbstub's target description (%s) has no usable register '%s' "
                                   "(not an x86-64 QEMU?)", q->td.arch[0] ? q->td.arch : "no architecture",
                                   needed[i]);
    }
    free(q->gbuf);
    q->gbuf = malloc(q->td.g_bytes ? q->td.g_bytes : 1);
    return q->gbuf ? VMT_OK : vmt_driver_fail(d, VMT_E_NOMEM, "out of memory");
}

void qemu_regs_missing(const qemu_drv *q, char *out, size_t len)
{
    size_t n = 0;
    out[0] = '\0';
    for (unsigned i = 0; i < QEMU_NREGMAP && n < len; i++)
        if (q->map[i].td_index < 0)
            n += (size_t)snprintf(out + n, len - n, "%s%s", n ? " " : "", q->map[i].gdb_name);
    for (unsigned i = 0; i < sizeof unmapped / sizeof unmapped[0] && n < len; i++)
        n += (size_t)snprintf(out + n, len - n, "%s%s", n ? " " : "", unmapped[i].name);
}

vmt_status qemu_fetch_regs(vmt_driver *d)
{
    qemu_drv *q = qemu_of(d);
    if (q->regs_valid)
        return VMT_OK;
    const char *r;
    size_t n;
    vmt_status st = gdb_exchange(&q->gdb, "g", &r, &n);
    if (st)
        return qemu_gdb_fail(d, st, "reading registers ('g')");
    int code;
    if (gdb_is_error(r, n, &code))
        return vmt_driver_fail(d, VMT_E_DRIVER, "the gdbstub refused to read registers: %.16s", r);
    /* Every mapped register must be inside the reply. */
    size_t need = 0;
    for (unsigned i = 0; i < QEMU_NREGMAP; i++) {
        if (q->map[i].td_index < 0)
            continue;
        const gdb_reg_desc *rd = &q->td.regs[q->map[i].td_index];
        if (rd->offset + rd->bits / 8 > need)
            need = rd->offset + rd->bits / 8;
    }
    if (n % 2 || n / 2 < need || n / 2 > q->td.g_bytes)
        return vmt_driver_fail(d, VMT_E_FORMAT,
                               "the gdbstub's register reply has %zu hex digits; the target description "
                               "needs %zu..%u bytes", n, need, q->td.g_bytes);
    if (gdb_hex_to_bytes(r, n, q->gbuf, n / 2))
        return vmt_driver_fail(d, VMT_E_FORMAT, "the gdbstub's register reply is not hex");
    memset(&q->regs, 0, sizeof q->regs);
    for (unsigned i = 0; i < QEMU_NREGMAP; i++) {
        if (q->map[i].td_index < 0)
            continue;
        const gdb_reg_desc *rd = &q->td.regs[q->map[i].td_index];
        uint64_t v = 0;
        memcpy(&v, q->gbuf + rd->offset, rd->bits / 8); /* little-endian target, little-endian host */
        field_set(&q->regs, q->map[i].field_off, q->map[i].field_size, v);
    }
    q->regs_valid = true;
    return VMT_OK;
}

vmt_status qemu_get_regs(vmt_driver *d, vmt_vcpu vcpu, vmt_regs *regs)
{
    qemu_drv *q = qemu_of(d);
    if (vcpu != 0)
        return vmt_driver_fail(d, VMT_E_INVAL, "vCPU %u does not exist (the qemu driver drives vCPU 0)", vcpu);
    vmt_status st = qemu_fetch_regs(d);
    if (st)
        return st;
    *regs = q->regs;
    return VMT_OK;
}

vmt_status qemu_set_regs(vmt_driver *d, vmt_vcpu vcpu, const vmt_regs *regs)
{
    qemu_drv *q = qemu_of(d);
    if (vcpu != 0)
        return vmt_driver_fail(d, VMT_E_INVAL, "vCPU %u does not exist (the qemu driver drives vCPU 0)", vcpu);
    vmt_status st = qemu_fetch_regs(d);
    if (st)
        return st;
    /* Refuse before writing anything. */
    for (unsigned i = 0; i < QEMU_NREGMAP; i++)
        if (q->map[i].td_index < 0 && field_get(regs, q->map[i].field_off, q->map[i].field_size) !=
                                          field_get(&q->regs, q->map[i].field_off, q->map[i].field_size))
            return vmt_driver_fail(d, VMT_E_NOTSUP, "QEMU's gdbstub cannot set %s (not in its target description)",
                                   q->map[i].gdb_name);
    for (unsigned i = 0; i < sizeof unmapped / sizeof unmapped[0]; i++)
        if (field_get(regs, unmapped[i].off, unmapped[i].size) != field_get(&q->regs, unmapped[i].off, unmapped[i].size))
            return vmt_driver_fail(d, VMT_E_NOTSUP, "QEMU's gdbstub cannot set %s", unmapped[i].name);
    for (unsigned i = 0; i < QEMU_NREGMAP; i++) {
        if (q->map[i].td_index < 0)
            continue;
        uint64_t v = field_get(regs, q->map[i].field_off, q->map[i].field_size);
        if (v == field_get(&q->regs, q->map[i].field_off, q->map[i].field_size))
            continue;
        const gdb_reg_desc *rd = &q->td.regs[q->map[i].td_index];
        uint8_t bytes[8];
        memcpy(bytes, &v, 8);
        char hex[17], cmd[48];
        gdb_bytes_to_hex(bytes, rd->bits / 8, hex);
        snprintf(cmd, sizeof cmd, "P%x=%s", rd->regnum, hex);
        st = gdb_exchange_ok(&q->gdb, cmd);
        if (st) {
            q->regs_valid = false;
            return qemu_gdb_fail(d, st, "writing a register ('P')");
        }
    }
    /* QEMU answers OK but may keep less than asked (outside 64-bit mode its
     * gdbstub writes only the low 32 bits of general registers): read back. */
    vmt_regs want = *regs;
    q->regs_valid = false;
    if ((st = qemu_fetch_regs(d)))
        return st;
    for (unsigned i = 0; i < QEMU_NREGMAP; i++) {
        if (q->map[i].td_index < 0)
            continue;
        uint64_t w = field_get(&want, q->map[i].field_off, q->map[i].field_size);
        uint64_t g = field_get(&q->regs, q->map[i].field_off, q->map[i].field_size);
        if (w != g)
            return vmt_driver_fail(d, VMT_E_NOTSUP,
                                   "QEMU kept 0x%llx in %s where 0x%llx was set (its gdbstub writes only 32 bits of "
                                   "general registers outside 64-bit mode, and some registers not at all); "
                                   "registers before it in the target description were written",
                                   (unsigned long long)g, q->map[i].gdb_name, (unsigned long long)w);
    }
    return VMT_OK;
}
