/*
 * core/vcpu_state.c — defaults, consistency check and group names for
 * vmt_vcpu_state (vmtrap/vcpu_state.h). Pure functions, no state.
 */
#include "vmtrap/vcpu_state.h"

#include <stdio.h>
#include <string.h>

#include "core/errbuf.h"

void vmt_vcpu_state_init(vmt_vcpu_state *s)
{
    memset(s, 0, sizeof *s);
    s->regs.rflags = 0x2;
    s->pat = 0x0007040600070406ull;
    s->xcr0 = 1;
    s->apic_base = 0xfee00000ull | (1u << 11) | (1u << 8);
    s->fpu.fxsave[0] = 0x7f;  /* FCW 0x037f */
    s->fpu.fxsave[1] = 0x03;
    s->fpu.fxsave[24] = 0x80; /* MXCSR 0x1f80 */
    s->fpu.fxsave[25] = 0x1f;
    s->ldtr.attrib = 0x82;    /* LDT, present */
    s->tr.attrib = 0x8b;      /* busy 64-bit TSS, present */
}

vmt_status vmt_vcpu_state_check(const vmt_vcpu_state *s, char *why, size_t why_len)
{
    const vmt_regs *r = &s->regs;
    if (s->known & VMT_VS_SEGMENTS) {
        const struct {
            const char *name;
            uint16_t reg_sel;
            const vmt_segment *seg;
        } segs[] = {
            { "cs", r->cs, &s->cs }, { "ss", r->ss, &s->ss }, { "ds", r->ds, &s->ds },
            { "es", r->es, &s->es }, { "fs", r->fs, &s->fs }, { "gs", r->gs, &s->gs },
        };
        for (size_t i = 0; i < sizeof segs / sizeof segs[0]; i++) {
            if (segs[i].reg_sel != segs[i].seg->selector) {
                vmt_why(why, why_len, "vcpu state: %s selector 0x%x in regs but 0x%x in the segment",
                        segs[i].name, segs[i].reg_sel, segs[i].seg->selector);
                return VMT_E_FORMAT;
            }
        }
        if (s->fs.base != r->fs_base || s->gs.base != r->gs_base) {
            vmt_why(why, why_len, "vcpu state: FS/GS base in regs and segments disagree");
            return VMT_E_FORMAT;
        }
        if ((r->efer & VMT_EFER_LMA) && (!(s->cs.attrib & VMT_SEG_ATTR_P) || !(s->cs.attrib & 0x8))) {
            vmt_why(why, why_len, "vcpu state: long mode but CS (attrib 0x%x) is not a present code segment",
                    s->cs.attrib);
            return VMT_E_FORMAT;
        }
    }
    if ((r->cr0 & VMT_CR0_PG) && !(r->cr0 & VMT_CR0_PE)) {
        vmt_why(why, why_len, "vcpu state: CR0 0x%llx has PG without PE", (unsigned long long)r->cr0);
        return VMT_E_FORMAT;
    }
    if ((r->efer & VMT_EFER_LMA) && (!(r->cr0 & VMT_CR0_PG) || !(r->cr4 & VMT_CR4_PAE))) {
        vmt_why(why, why_len, "vcpu state: EFER.LMA without CR0.PG and CR4.PAE");
        return VMT_E_FORMAT;
    }
    return VMT_OK;
}

size_t vmt_vcpu_state_groups(uint32_t mask, char *buf, size_t len)
{
    static const char *const names[] = {
        "regs", "segments", "syscall-msrs", "sysenter-msrs", "msrs",
        "apic-base", "fpu", "tsc", "events",
    };
    size_t used = 0;
    if (len)
        buf[0] = 0;
    for (unsigned i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (!(mask & (1u << i)))
            continue;
        int n = snprintf(buf + (used < len ? used : len), used < len ? len - used : 0, "%s%s",
                         used ? "," : "", names[i]);
        if (n > 0)
            used += (size_t)n;
    }
    return used;
}
