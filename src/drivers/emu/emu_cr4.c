/*
 * drivers/emu/emu_cr4.c — CR4 as the presented CPU defines it, and SMAP
 * (SDM vol. 3, 2.5 "Control registers", 4.6 "Access rights").
 *
 * Reserved bits: a CR4 bit is reserved (MOV to CR4 raises #GP(0); set_regs
 * and set_vcpu_state refuse with a message) when CPUID, as this driver
 * presents it (the Unicorn model's leaves 1 and 7.0 + the driver's offers,
 * emu_pcid.c), lacks its feature — the rule KVM applies too:
 *   UMIP (11) 7.ECX[2]   LA57 (12) 7.ECX[16]  VMXE (13) 1.ECX[5]
 *   SMXE (14) 1.ECX[6]   FSGSBASE (16) 7.EBX[0]  PCIDE (17) offer_pcid
 *   OSXSAVE (18) 1.ECX[26]  SMEP (20) 7.EBX[7]  SMAP (21) 7.EBX[20];
 * PKE (22) always (the driver's walk has no protection keys, so PKU is
 * taken out of CPUID as well), bits 15, 19 and 23-63 always (KL, CET, PKS
 * ... no model here has them). Bits 0-10 are every x86-64 CPU's and stay
 * allowed (qemu64 reports no VME, but KVM and QEMU do not refuse it
 * either). Measured on Unicorn 2.1.1 (leaf 7 only where the model's last
 * leaf reaches 7): qemu64, kvm64, Core 2, Nehalem, Westmere, Opteron G1-G3:
 * none of them; Sandy Bridge, Opteron G4/G5: XSAVE; Ivy Bridge, Haswell,
 * Knights Mill: + FSGSBASE, SMEP; Broadwell, Skylake-Client, Denverton,
 * Snowridge, EPYC (Rome), Dhyana: + SMAP; Skylake-Server, Cascadelake,
 * Cooperlake, Icelake-Client: + PKU (hidden); Icelake-Server: + LA57.
 * No model has UMIP, VMX, SMX, PCID or INVPCID.
 *
 * SMAP: CR4.SMAP reaches Unicorn's CR4 (it keeps it when its model has
 * SMAP, i.e. whenever the guest could set it). Unicorn then picks QEMU's
 * MMU index per access: CPL3 → user, CPL0-2 with SMAP and EFLAGS.AC = 0 →
 * "kernel SMAP", otherwise "kernel no-SMAP" (qemu/target/i386/cpu.h
 * cpu_mmu_index; translated blocks are keyed by AC, and STAC, CLAC, POPF
 * and IRET end a block), each index with its own TLB. So the fill hook
 * (emu_mmu.c), which does not learn the index, reads EFLAGS.AC and answers
 * for the state the index stands for: a translation handed out with AC = 1
 * is never used with AC = 0. STAC/CLAC (#UD without CPUID.SMAP or at CPL >
 * 0) and POPF run natively. The driver's own accesses follow the same rule:
 * the engine's (EMULATE, FAST_STEP: one guest instruction) as explicit
 * accesses at the current CPL, exception delivery's IDT and TSS reads as
 * implicit ones (at CPL3 SMAP applies whatever AC is; at CPL0 QEMU and the
 * SDM let AC = 1 lift it), its stack pushes as explicit accesses at the new
 * CPL. Limits: a delivery the driver cannot complete that way escalates to
 * #DF (not a nested #PF, as for any IDT/stack fault); Unicorn's native
 * implicit accesses at CPL3 (a segment load's descriptor read) reach the
 * fill hook as CPL3 accesses.
 *
 * Threading: the driver's. No state of its own but e->cr4_reserved (set
 * once at creation).
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "drivers/emu/emu_priv.h"

#define CR4_UMIP (1ull << 11)
#define CR4_LA57 (1ull << 12)
#define CR4_VMXE (1ull << 13)
#define CR4_SMXE (1ull << 14)
#define CR4_FSGSBASE (1ull << 16)
#define CR4_OSXSAVE (1ull << 18)
#define CR4_PKE (1ull << 22)
#define CR4_ALWAYS_RESERVED (~((1ull << 23) - 1) | (1ull << 15) | (1ull << 19) | CR4_PKE)

static const char *const model_names[] = {
    "qemu64",         "phenom",      "core2duo",       "kvm64",         "qemu32",          "kvm32",
    "coreduo",        "486",         "pentium",        "pentium2",      "pentium3",        "athlon",
    "n270",           "conroe",      "penryn",         "nehalem",       "westmere",        "sandybridge",
    "ivybridge",      "haswell",     "broadwell",      "skylake-client", "skylake-server", "cascadelake-server",
    "cooperlake",     "icelake-client", "icelake-server", "denverton",  "snowridge",       "knightsmill",
    "opteron-g1",     "opteron-g2",  "opteron-g3",     "opteron-g4",    "opteron-g5",      "epyc",
    "dhyana",         "epyc-rome",
};

const char *vmt_emu_cpu_model_name(int model) { return emu_cpu_model_name(model); }

const char *emu_cpu_model_name(int model)
{
    if (model < 0 || (size_t)model >= sizeof model_names / sizeof model_names[0])
        return "unknown";
    return model_names[model];
}

static const char *bit_name(unsigned bit);

/* CR4's reserved bits for CPUID.1:ECX, CPUID.7.0:EBX/ECX as presented. */
static uint64_t reserved_for(uint32_t ecx1, uint32_t ebx7, uint32_t ecx7)
{
    const struct {
        uint64_t bit;
        bool have;
    } f[] = {
        { CR4_UMIP, ecx7 >> 2 & 1 },      { CR4_LA57, ecx7 >> 16 & 1 }, { CR4_VMXE, ecx1 >> 5 & 1 },
        { CR4_SMXE, ecx1 >> 6 & 1 },      { CR4_FSGSBASE, ebx7 & 1 },   { EMU_CR4_PCIDE, ecx1 >> 17 & 1 },
        { CR4_OSXSAVE, ecx1 >> 26 & 1 },  { EMU_CR4_SMEP, ebx7 >> 7 & 1 }, { EMU_CR4_SMAP, ebx7 >> 20 & 1 },
    };
    uint64_t r = CR4_ALWAYS_RESERVED;
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        if (!f[i].have)
            r |= f[i].bit;
    return r;
}

void emu_cr4_init(emu *e) { e->cr4_reserved = reserved_for(e->cpuid1[2], e->cpuid7[1], e->cpuid7[2]); }

vmt_status vmt_emu_options_for_cr4(uint64_t cr4, vmt_emu_options *opt, char *why, size_t why_len)
{
    /* oldest first: the least CPU that has everything */
    static const int models[] = { UC_CPU_X86_QEMU64, UC_CPU_X86_SANDYBRIDGE, UC_CPU_X86_IVYBRIDGE,
                                  UC_CPU_X86_BROADWELL, UC_CPU_X86_ICELAKE_SERVER };
    bool pcid = (cr4 & EMU_CR4_PCIDE) != 0;
    for (size_t i = 0; i < sizeof models / sizeof models[0]; i++) {
        uint32_t l1[4], l7[4], max = 0;
        if (emu_probe_cpuid(models[i], l1, l7, &max) != VMT_OK)
            continue;
        if (max < 7)
            memset(l7, 0, sizeof l7);
        if (pcid)
            l1[2] |= 1u << 17;
        if (cr4 & reserved_for(l1[2], l7[1], l7[2]))
            continue;
        opt->set_cpu_model = models[i] != UC_CPU_X86_QEMU64 || opt->set_cpu_model;
        opt->cpu_model = models[i];
        if (pcid) /* a kernel that uses PCIDs had INVPCID too, or flushes without it */
            opt->offer_pcid = opt->offer_invpcid = true;
        return VMT_OK;
    }
    char names[160] = "";
    size_t n = 0;
    uint64_t bad = cr4 & (CR4_ALWAYS_RESERVED | CR4_UMIP | CR4_VMXE | CR4_SMXE); /* no model has these */
    for (unsigned b = 0; b < 64 && n < sizeof names; b++)
        if (bad >> b & 1)
            n += (size_t)snprintf(names + n, sizeof names - n, "%s%s (bit %u)", n ? ", " : "", bit_name(b), b);
    if (!n)
        snprintf(names, sizeof names, "bits");
    snprintf(why, why_len, "CR4 0x%" PRIx64 " sets %s: no CPU model of the emulator has it", cr4, names);
    return VMT_E_NOTSUP;
}

bool emu_cr4_write_faults(const emu *e, uint64_t old, uint64_t v)
{
    if (v & e->cr4_reserved)
        return true;
    /* PCIDE may be set only with PCID 0 in CR3 */
    return (v & EMU_CR4_PCIDE) && !(old & EMU_CR4_PCIDE) && (e->cr3 & 0xfff) != 0;
}

static const char *bit_name(unsigned bit)
{
    switch (bit) {
    case 11: return "UMIP";
    case 12: return "LA57";
    case 13: return "VMXE";
    case 14: return "SMXE";
    case 16: return "FSGSBASE";
    case 17: return "PCIDE";
    case 18: return "OSXSAVE";
    case 19: return "KL";
    case 20: return "SMEP";
    case 21: return "SMAP";
    case 22: return "PKE";
    case 23: return "CET";
    case 24: return "PKS";
    default: return "reserved";
    }
}

vmt_status emu_cr4_supported(const emu *e, uint64_t cr4, char *why, size_t why_len)
{
    uint64_t bad = cr4 & e->cr4_reserved;
    if (!bad)
        return VMT_OK;
    char names[160] = "";
    size_t n = 0;
    for (unsigned b = 0; b < 64 && n < sizeof names; b++)
        if (bad >> b & 1)
            n += (size_t)snprintf(names + n, sizeof names - n, "%s%s (bit %u)", n ? ", " : "", bit_name(b), b);
    const char *hint;
    if (bad & EMU_CR4_PCIDE)
        hint = "PCID is offered only with vmt_emu_options.offer_pcid";
    else if (bad & CR4_PKE)
        hint = "the emulator has no protection keys";
    else if (bad & (EMU_CR4_SMEP | EMU_CR4_SMAP | CR4_FSGSBASE | CR4_OSXSAVE))
        hint = "pick a model with it (vmt_emu_options.cpu_model): SMAP from Broadwell, SMEP/FSGSBASE from Ivy "
               "Bridge, XSAVE from Sandy Bridge";
    else if (bad & CR4_LA57)
        hint = "of Unicorn's models only Icelake-Server has 5-level paging";
    else
        hint = "no Unicorn 2.1.1 model has it";
    snprintf(why, why_len, "CR4 0x%" PRIx64 " sets %s, which this CPU (model %s) lacks: %s", cr4,
             names, emu_cpu_model_name(e->cpu_model), hint);
    return VMT_E_NOTSUP;
}

static bool eflags_ac(const emu *e)
{
    uint64_t f = 0;
    uc_reg_read(e->uc, UC_X86_REG_EFLAGS, &f);
    return (f & EMU_RFLAGS_AC) != 0;
}

bool emu_smap_explicit(const emu *e, uint8_t cpl)
{
    return (e->cr4 & EMU_CR4_SMAP) && cpl < 3 && !eflags_ac(e);
}

bool emu_smap_implicit(const emu *e, uint8_t cpl)
{
    return (e->cr4 & EMU_CR4_SMAP) && (cpl == 3 || !eflags_ac(e));
}
