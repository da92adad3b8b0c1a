/*
 * snapshot/vmts_codec.c — the byte layout of a vCPU record in a vmts file.
 *
 * The record lists every field of vmt_vcpu_state in a fixed order, each in
 * little endian at its own width (never the in-memory struct, whose padding
 * and bool representation are the compiler's). One table drives both
 * directions so they cannot disagree. Booleans are bytes that must be 0 or
 * 1 on load.
 */
#include <stddef.h>
#include <string.h>

#include "snapshot/vmts.h"

typedef struct vfield {
    uint16_t offset;
    uint8_t size;   /* 1, 2, 4, 8 or 0 for a bool byte */
} vfield;

#define F(m, sz) { (uint16_t)offsetof(vmt_vcpu_state, m), sz }
#define R(m) F(regs.m, 8)
#define R16(m) F(regs.m, 2)
#define SEG(s) F(s.base, 8), F(s.limit, 4), F(s.selector, 2), F(s.attrib, 2)
static const vfield vfields[] = {
    F(known, 4), F(reconstructed, 4),
    R(rax), R(rbx), R(rcx), R(rdx), R(rsi), R(rdi), R(rbp), R(rsp),
    R(r8), R(r9), R(r10), R(r11), R(r12), R(r13), R(r14), R(r15),
    R(rip), R(rflags), R(cr0), R(cr2), R(cr3), R(cr4), R(cr8), R(efer),
    R(fs_base), R(gs_base), R(kernel_gs_base), R(gdtr_base), R(idtr_base),
    R16(gdtr_limit), R16(idtr_limit), R16(cs), R16(ss), R16(ds), R16(es), R16(fs), R16(gs),
    R(dr0), R(dr1), R(dr2), R(dr3), R(dr6), R(dr7),
    SEG(cs), SEG(ss), SEG(ds), SEG(es), SEG(fs), SEG(gs), SEG(tr), SEG(ldtr),
    F(star, 8), F(lstar, 8), F(cstar, 8), F(fmask, 8),
    F(sysenter_cs, 8), F(sysenter_esp, 8), F(sysenter_eip, 8),
    F(pat, 8), F(tsc_aux, 8), F(misc_enable, 8), F(spec_ctrl, 8), F(mtrr_def_type, 8),
    F(apic_base, 8), F(tsc_deadline, 8), F(xcr0, 8), F(tsc, 8),
    F(halted, 0), F(interrupt_shadow, 1), F(event_pending, 0), F(event_vector, 1), F(event_has_error, 0),
    F(event_error, 4),
};
#undef F
#undef R
#undef R16
#undef SEG

#define FPU_BYTES (512 + 256)

const char *vmts_section_name(uint32_t type)
{
    static const char *const names[VMTS_SEC_TYPES] = {
        [VMTS_SEC_META] = "metadata", [VMTS_SEC_CLOCK] = "clock", [VMTS_SEC_MEMMAP] = "memory-map",
        [VMTS_SEC_VCPUS] = "vcpus", [VMTS_SEC_PLATFORM] = "platform", [VMTS_SEC_FIXUPS] = "fixups",
        [VMTS_SEC_CHUNKS] = "memory-chunks", [VMTS_SEC_MEMDATA] = "memory-data",
    };
    return type > 0 && type < VMTS_SEC_TYPES ? names[type] : "unknown";
}

void vmts_vcpu_encode(const vmt_vcpu_state *v, uint8_t *out)
{
    const uint8_t *base = (const uint8_t *)v;
    uint8_t *p = out;
    for (size_t i = 0; i < sizeof vfields / sizeof vfields[0]; i++) {
        const vfield *f = &vfields[i];
        uint64_t x = 0;
        switch (f->size) {
        case 0: x = *(const bool *)(base + f->offset) ? 1 : 0; break;
        case 1: x = base[f->offset]; break;
        case 2: { uint16_t t; memcpy(&t, base + f->offset, 2); x = t; } break;
        case 4: { uint32_t t; memcpy(&t, base + f->offset, 4); x = t; } break;
        default: memcpy(&x, base + f->offset, 8); break;
        }
        unsigned n = f->size ? f->size : 1;
        for (unsigned k = 0; k < n; k++)
            *p++ = (uint8_t)(x >> (8 * k));
    }
    memcpy(p, v->fpu.fxsave, 512);
    memcpy(p + 512, v->fpu.ymm_hi, 256);
    p += FPU_BYTES;
    memset(p, 0, (size_t)(out + VMTS_VCPU_RECORD - p));
}

vmt_status vmts_vcpu_decode(const uint8_t *in, vmt_vcpu_state *v)
{
    memset(v, 0, sizeof *v);
    uint8_t *base = (uint8_t *)v;
    const uint8_t *p = in;
    for (size_t i = 0; i < sizeof vfields / sizeof vfields[0]; i++) {
        const vfield *f = &vfields[i];
        unsigned n = f->size ? f->size : 1;
        uint64_t x = 0;
        for (unsigned k = 0; k < n; k++)
            x |= (uint64_t)p[k] << (8 * k);
        p += n;
        switch (f->size) {
        case 0:
            if (x > 1)
                return VMT_E_FORMAT;
            *(bool *)(base + f->offset) = x != 0;
            break;
        case 1: base[f->offset] = (uint8_t)x; break;
        case 2: { uint16_t t = (uint16_t)x; memcpy(base + f->offset, &t, 2); } break;
        case 4: { uint32_t t = (uint32_t)x; memcpy(base + f->offset, &t, 4); } break;
        default: memcpy(base + f->offset, &x, 8); break;
        }
    }
    memcpy(v->fpu.fxsave, p, 512);
    memcpy(v->fpu.ymm_hi, p + 512, 256);
    p += FPU_BYTES;
    for (; p < in + VMTS_VCPU_RECORD; p++)
        if (*p)
            return VMT_E_FORMAT;
    if (v->known & ~0x1ffu || v->reconstructed & ~v->known)
        return VMT_E_FORMAT;
    return VMT_OK;
}
