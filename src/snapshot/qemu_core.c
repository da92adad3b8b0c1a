/*
 * snapshot/qemu_core.c — loader for QEMU `dump-guest-memory` ELF cores
 * (what `virsh dump --memory-only` writes), x86-64 guests.
 *
 * What QEMU writes (target/i386/arch_dump.c, dump/dump.c): an ELFCLASS64
 * EM_X86_64 ET_CORE file; one PT_NOTE segment holding, for every vCPU in
 * order, a "CORE" NT_PRSTATUS note (336 bytes: the Linux x86-64
 * elf_prstatus, pid = vCPU index + 1, user_regs_struct at offset 112), then
 * for every vCPU a "QEMU" note of type 0 (QEMUCPUState, version 1: version,
 * size, 16 GPRs, RIP, RFLAGS, 10 segments {selector, limit, flags, pad,
 * base} for CS DS ES FS GS SS LDTR TR GDTR IDTR, CR0-CR4; 432 bytes, 440
 * with KERNEL_GS_BASE appended by newer QEMUs); then one PT_LOAD per
 * guest RAM block with p_paddr = guest-physical address and p_filesz =
 * p_memsz (p_vaddr is 0 with paging=false).
 *
 * Segment flags are the descriptor's second dword as QEMU caches it; the
 * access-rights word of vmt_segment is bits 8-15 and 20-23 of it. Limits
 * are already expanded.
 *
 * Validation (every field from the file, before anything is kept): ELF
 * identity; program headers inside the file; each PT_LOAD inside the file,
 * filesz == memsz, 4 KiB aligned, below 2^52, at most 1024 of them, no two
 * overlapping; notes well formed (libelf walks them), note sizes exactly
 * the known ones, QEMUCPUState version 1 with a size matching the note,
 * one QEMU note per NT_PRSTATUS with the same RIP, 1..256 vCPUs, each
 * vCPU state consistent (vmt_vcpu_state_check). Unknown notes (e.g.
 * VMCOREINFO) are skipped.
 *
 * Provenance: known = REGS | SEGMENTS. Inside REGS the core has no EFER,
 * CR8, debug registers, and KERNEL_GS_BASE only with the 440-byte note;
 * efer_set stays 0 so apply() insists on a sidecar or reconstruction.
 */
#include <gelf.h>
#include <libelf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "snapshot/snapshot_internal.h"

#define PRSTATUS_SIZE 336
#define PRSTATUS_REGS 112
#define QEMU_STATE_V1 432
#define QEMU_STATE_V1_KGS 440
#define MAX_NOTE_BYTES (16u << 20)

typedef struct core_notes {
    const uint8_t *prstatus[VMT_SNAPSHOT_MAX_VCPUS];
    const uint8_t *qemu[VMT_SNAPSHOT_MAX_VCPUS];
    uint32_t qemu_size[VMT_SNAPSHOT_MAX_VCPUS];
    uint32_t nprstatus, nqemu;
} core_notes;

#define bad(why, why_len, ...) snap_format_error((why), (why_len), "QEMU core", __VA_ARGS__)

static vmt_status walk_notes(Elf *e, size_t idx, const GElf_Phdr *ph, size_t file_len, core_notes *n, char *why,
                             size_t why_len)
{
    if (ph->p_filesz > MAX_NOTE_BYTES)
        return bad(why, why_len, "PT_NOTE %zu is 0x%llx bytes (absurd)", idx, (unsigned long long)ph->p_filesz);
    if (ph->p_offset > file_len || ph->p_filesz > file_len - ph->p_offset)
        return bad(why, why_len, "PT_NOTE %zu [0x%llx, +0x%llx) ends past the end of the 0x%zx-byte file (truncated?)",
                   idx, (unsigned long long)ph->p_offset, (unsigned long long)ph->p_filesz, file_len);
    if (ph->p_filesz == 0)
        return VMT_OK;
    Elf_Data *d = elf_getdata_rawchunk(e, (int64_t)ph->p_offset, ph->p_filesz, ELF_T_NHDR);
    if (!d)
        return bad(why, why_len, "PT_NOTE %zu cannot be read: %s", idx, elf_errmsg(-1));
    size_t off = 0;
    while (off < d->d_size) {
        GElf_Nhdr nh;
        size_t name_off, desc_off;
        size_t next = gelf_getnote(d, off, &nh, &name_off, &desc_off);
        if (next == 0)
            return bad(why, why_len, "PT_NOTE %zu: malformed note at offset 0x%zx (sizes run past the segment)", idx,
                       off);
        const char *name = (const char *)d->d_buf + name_off;
        const uint8_t *desc = (const uint8_t *)d->d_buf + desc_off;
        bool is_core = nh.n_namesz == 5 && memcmp(name, "CORE", 5) == 0;
        bool is_qemu = nh.n_namesz == 5 && memcmp(name, "QEMU", 5) == 0;
        if (is_core && nh.n_type == NT_PRSTATUS) {
            if (nh.n_descsz != PRSTATUS_SIZE)
                return bad(why, why_len, "NT_PRSTATUS note %u has %u bytes, expected %u (not an x86-64 core?)",
                           n->nprstatus, nh.n_descsz, PRSTATUS_SIZE);
            if (n->nprstatus == VMT_SNAPSHOT_MAX_VCPUS)
                return bad(why, why_len, "more than %u NT_PRSTATUS notes", VMT_SNAPSHOT_MAX_VCPUS);
            n->prstatus[n->nprstatus++] = desc;
        } else if (is_qemu && nh.n_type == 0) {
            if (nh.n_descsz < 8)
                return bad(why, why_len, "QEMU note %u has %u bytes, too short for its header", n->nqemu,
                           nh.n_descsz);
            uint32_t version = snap_le32(desc), size = snap_le32(desc + 4);
            if (version != 1)
                return bad(why, why_len, "QEMU note %u: QEMUCPUState version %u (only version 1 is known)", n->nqemu,
                           version);
            if (size != nh.n_descsz || (size != QEMU_STATE_V1 && size != QEMU_STATE_V1_KGS))
                return bad(why, why_len, "QEMU note %u: QEMUCPUState size %u in a %u-byte note (expected %u or %u)",
                           n->nqemu, size, nh.n_descsz, QEMU_STATE_V1, QEMU_STATE_V1_KGS);
            if (n->nqemu == VMT_SNAPSHOT_MAX_VCPUS)
                return bad(why, why_len, "more than %u QEMU notes", VMT_SNAPSHOT_MAX_VCPUS);
            n->qemu_size[n->nqemu] = size;
            n->qemu[n->nqemu++] = desc;
        }
        off = next;
    }
    return VMT_OK;
}

static void seg_from_qemu(const uint8_t *p, vmt_segment *seg, uint32_t *selector)
{
    *selector = snap_le32(p);
    seg->selector = (uint16_t)*selector;
    seg->limit = snap_le32(p + 4);
    uint32_t flags = snap_le32(p + 8);
    seg->attrib = (uint16_t)(((flags >> 8) & 0xffu) | (((flags >> 20) & 0xfu) << 12));
    seg->base = snap_le64(p + 16);
}

static vmt_status vcpu_from_notes(uint32_t i, const uint8_t *pr, const uint8_t *q, uint32_t qsize,
                                  vmt_vcpu_state *v, char *why, size_t why_len)
{
    vmt_vcpu_state_init(v);
    vmt_regs *r = &v->regs;
    uint64_t g[18];
    for (int k = 0; k < 18; k++)
        g[k] = snap_le64(q + 8 + 8 * k);
    r->rax = g[0], r->rbx = g[1], r->rcx = g[2], r->rdx = g[3];
    r->rsi = g[4], r->rdi = g[5], r->rsp = g[6], r->rbp = g[7];
    r->r8 = g[8], r->r9 = g[9], r->r10 = g[10], r->r11 = g[11];
    r->r12 = g[12], r->r13 = g[13], r->r14 = g[14], r->r15 = g[15];
    r->rip = g[16], r->rflags = g[17];

    static const char *const seg_names[10] = { "cs", "ds", "es", "fs", "gs", "ss", "ldtr", "tr", "gdtr", "idtr" };
    vmt_segment *segs[8] = { &v->cs, &v->ds, &v->es, &v->fs, &v->gs, &v->ss, &v->ldtr, &v->tr };
    vmt_segment table[2];
    for (int k = 0; k < 10; k++) {
        uint32_t sel;
        seg_from_qemu(q + 152 + 24 * k, k < 8 ? segs[k] : &table[k - 8], &sel);
        if (sel > 0xffff)
            return bad(why, why_len, "vCPU %u: %s selector 0x%x does not fit 16 bits", i, seg_names[k], sel);
    }
    for (int k = 8; k < 10; k++)
        if (table[k - 8].limit > 0xffff)
            return bad(why, why_len, "vCPU %u: %s limit 0x%x does not fit 16 bits", i, seg_names[k],
                       table[k - 8].limit);
    r->cs = v->cs.selector, r->ds = v->ds.selector, r->es = v->es.selector;
    r->fs = v->fs.selector, r->gs = v->gs.selector, r->ss = v->ss.selector;
    r->fs_base = v->fs.base;
    r->gs_base = v->gs.base;
    r->gdtr_base = table[0].base;
    r->gdtr_limit = (uint16_t)table[0].limit;
    r->idtr_base = table[1].base;
    r->idtr_limit = (uint16_t)table[1].limit;
    r->cr0 = snap_le64(q + 392);
    r->cr2 = snap_le64(q + 392 + 16);
    r->cr3 = snap_le64(q + 392 + 24);
    r->cr4 = snap_le64(q + 392 + 32);
    if (qsize >= QEMU_STATE_V1_KGS)
        r->kernel_gs_base = snap_le64(q + 432);

    /* NT_PRSTATUS carries the same registers: a pair that disagrees means
     * the notes are not what QEMU writes (or are paired wrongly). */
    uint64_t pr_rip = snap_le64(pr + PRSTATUS_REGS + 16 * 8), pr_rsp = snap_le64(pr + PRSTATUS_REGS + 19 * 8);
    if (pr_rip != r->rip || pr_rsp != r->rsp)
        return bad(why, why_len, "vCPU %u: NT_PRSTATUS (rip 0x%llx, rsp 0x%llx) and QEMU note (rip 0x%llx, rsp 0x%llx) "
                   "disagree", i, (unsigned long long)pr_rip, (unsigned long long)pr_rsp, (unsigned long long)r->rip,
                   (unsigned long long)r->rsp);
    v->known = VMT_VS_REGS | VMT_VS_SEGMENTS;
    char w[160];
    if (vmt_vcpu_state_check(v, w, sizeof w))
        return bad(why, why_len, "vCPU %u: %s", i, w);
    return VMT_OK;
}

static vmt_status add_load(vmt_snapshot *s, size_t idx, const GElf_Phdr *ph, char *why, size_t why_len)
{
    if (ph->p_memsz == 0 && ph->p_filesz == 0)
        return VMT_OK;
    if (ph->p_filesz != ph->p_memsz)
        return bad(why, why_len, "PT_LOAD %zu: p_filesz 0x%llx != p_memsz 0x%llx (partial dumps are not supported)",
                   idx, (unsigned long long)ph->p_filesz, (unsigned long long)ph->p_memsz);
    if (ph->p_offset > s->file_len || ph->p_filesz > s->file_len - ph->p_offset)
        return bad(why, why_len, "PT_LOAD %zu [offset 0x%llx, +0x%llx) ends past the end of the 0x%zx-byte file "
                   "(truncated core?)", idx, (unsigned long long)ph->p_offset, (unsigned long long)ph->p_filesz,
                   s->file_len);
    if (ph->p_paddr >= VMT_SNAPSHOT_MAX_PA || ph->p_memsz > VMT_SNAPSHOT_MAX_PA - ph->p_paddr)
        return bad(why, why_len, "PT_LOAD %zu [paddr 0x%llx, +0x%llx) reaches past 2^52 (absurd size)", idx,
                   (unsigned long long)ph->p_paddr, (unsigned long long)ph->p_memsz);
    if ((ph->p_paddr | ph->p_memsz) & (VMT_PAGE_SIZE - 1))
        return bad(why, why_len, "PT_LOAD %zu [paddr 0x%llx, +0x%llx) is not 4 KiB aligned", idx,
                   (unsigned long long)ph->p_paddr, (unsigned long long)ph->p_memsz);
    if (s->nblocks == VMT_SNAPSHOT_MAX_BLOCKS)
        return bad(why, why_len, "more than %u PT_LOAD blocks", VMT_SNAPSHOT_MAX_BLOCKS);
    snap_block *b = &s->blocks[s->nblocks++];
    b->gpa = ph->p_paddr;
    b->size = ph->p_memsz;
    b->data = s->file + ph->p_offset;
    return VMT_OK;
}

static vmt_status set_core_metadata(vmt_snapshot *s, uint32_t qsize)
{
    json_object *o = json_object_new_object();
    if (!o)
        return VMT_E_NOMEM;
    uint64_t ram = 0;
    for (size_t i = 0; i < s->nblocks; i++)
        ram += s->blocks[i].size;
    json_object_object_add(o, "source", json_object_new_string("qemu-core"));
    json_object_object_add(o, "file_bytes", json_object_new_int64((int64_t)s->file_len));
    json_object_object_add(o, "ram_bytes", json_object_new_int64((int64_t)ram));
    json_object_object_add(o, "vcpus", json_object_new_int((int)s->nvcpus));
    json_object_object_add(o, "qemu_cpu_state_size", json_object_new_int((int)qsize));
    vmt_status st = snap_set_metadata(s, json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
    json_object_put(o);
    return st;
}

static vmt_status load(vmt_snapshot *s, Elf *e, core_notes *notes, char *why, size_t why_len)
{
    GElf_Ehdr eh;
    if (elf_kind(e) != ELF_K_ELF || !gelf_getehdr(e, &eh))
        return bad(why, why_len, "not an ELF file: %s", elf_errmsg(-1));
    if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_ident[EI_DATA] != ELFDATA2LSB)
        return bad(why, why_len, "only ELFCLASS64 little-endian cores are supported (class %u, data %u)",
                   eh.e_ident[EI_CLASS], eh.e_ident[EI_DATA]);
    if (eh.e_type != ET_CORE || eh.e_machine != EM_X86_64)
        return bad(why, why_len, "e_type %u / e_machine %u is not an x86-64 core (ET_CORE %u, EM_X86_64 %u)",
                   eh.e_type, eh.e_machine, ET_CORE, EM_X86_64);
    size_t phnum;
    if (elf_getphdrnum(e, &phnum) != 0)
        return bad(why, why_len, "program header count unreadable: %s", elf_errmsg(-1));
    if (phnum == 0)
        return bad(why, why_len, "no program headers");
    if (eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phoff > s->file_len ||
        phnum > (s->file_len - eh.e_phoff) / sizeof(Elf64_Phdr))
        return bad(why, why_len, "%zu program headers at 0x%llx do not fit the 0x%zx-byte file (truncated?)", phnum,
                   (unsigned long long)eh.e_phoff, s->file_len);
    size_t nload = 0;
    for (size_t i = 0; i < phnum; i++) {
        GElf_Phdr ph;
        if (!gelf_getphdr(e, (int)i, &ph))
            return bad(why, why_len, "program header %zu unreadable: %s", i, elf_errmsg(-1));
        if (ph.p_type == PT_LOAD)
            nload++;
    }
    if (nload > VMT_SNAPSHOT_MAX_BLOCKS)
        return bad(why, why_len, "%zu PT_LOAD blocks (at most %u)", nload, VMT_SNAPSHOT_MAX_BLOCKS);
    s->blocks = calloc(nload ? nload : 1, sizeof *s->blocks);
    if (!s->blocks)
        return bad(why, why_len, "out of memory");
    vmt_status st;
    bool any_vaddr = false;
    for (size_t i = 0; i < phnum; i++) {
        GElf_Phdr ph;
        gelf_getphdr(e, (int)i, &ph);
        if (ph.p_type == PT_LOAD && ph.p_vaddr)
            any_vaddr = true;
        if (ph.p_type == PT_NOTE)
            st = walk_notes(e, i, &ph, s->file_len, notes, why, why_len);
        else if (ph.p_type == PT_LOAD)
            st = add_load(s, i, &ph, why, why_len);
        else
            st = VMT_OK;
        if (st)
            return st;
    }
    if (notes->nprstatus == 0)
        return bad(why, why_len, "no NT_PRSTATUS note (no vCPU)");
    if (notes->nqemu != notes->nprstatus)
        return bad(why, why_len, "%u NT_PRSTATUS notes but %u QEMU CPU notes (a QEMU dump-guest-memory core has one "
                   "of each per vCPU)", notes->nprstatus, notes->nqemu);
    if (s->nblocks == 0)
        return bad(why, why_len, "no PT_LOAD with RAM");
    if ((st = snap_blocks_finish(s, why, why_len))) {
        if (st == VMT_E_FORMAT && any_vaddr) {
            char inner[VMT_ERRBUF_LEN];
            snprintf(inner, sizeof inner, "%s", why);
            return bad(why, why_len, "%s; its PT_LOADs carry virtual addresses: written with paging=true "
                       "(dump-guest-memory -p)? dump without -p", inner);
        }
        return st;
    }
    s->nvcpus = notes->nprstatus;
    s->vcpus = calloc(s->nvcpus, sizeof *s->vcpus);
    s->efer_set = calloc(s->nvcpus, 1);
    if (!s->vcpus || !s->efer_set)
        return bad(why, why_len, "out of memory");
    for (uint32_t i = 0; i < s->nvcpus; i++)
        if ((st = vcpu_from_notes(i, notes->prstatus[i], notes->qemu[i], notes->qemu_size[i], &s->vcpus[i], why,
                                  why_len)))
            return st;
    if (set_core_metadata(s, notes->qemu_size[0]))
        return bad(why, why_len, "out of memory");
    return VMT_OK;
}

vmt_status snap_load_qemu_core(vmt_snapshot *s, char *why, size_t why_len)
{
    if (elf_version(EV_CURRENT) == EV_NONE)
        return bad(why, why_len, "libelf is unusable: %s", elf_errmsg(-1));
    if (s->file_len < sizeof(Elf64_Ehdr))
        return bad(why, why_len, "%zu bytes is shorter than an ELF header (truncated)", s->file_len);
    /* libelf reads the bytes in place (native byte order, no conversion
     * needed) and never writes them. */
    Elf *e = elf_memory((char *)(uintptr_t)s->file, s->file_len);
    if (!e)
        return bad(why, why_len, "libelf refuses the file: %s", elf_errmsg(-1));
    core_notes *notes = calloc(1, sizeof *notes);
    vmt_status st = notes ? load(s, e, notes, why, why_len) : bad(why, why_len, "out of memory");
    free(notes);
    elf_end(e);
    return st;
}
