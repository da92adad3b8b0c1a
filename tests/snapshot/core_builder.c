/*
 * tests/snapshot/core_builder.c — see core_builder.h. The byte layout
 * follows QEMU's dump code (note order, note sizes, QEMUCPUState fields);
 * nothing is taken from vmtrap's loader, so the two can disagree.
 */
#include "core_builder.h"

#include <stdlib.h>
#include <string.h>

void core_put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

void core_put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

uint8_t core_byte_at(uint64_t gpa)
{
    return (uint8_t)((gpa >> 12) * 31 + (gpa & 0xfff) * 7 + (gpa >> 32) * 13 + 1);
}

void core_default_vcpu(core_vcpu *v, unsigned index)
{
    memset(v, 0, sizeof *v);
    v->rip = 0xffffffff81e3a0aeull + index * 0x10;
    v->rsp = 0xffffffff82603e90ull - index * 0x4000;
    v->rax = 0x1234 + index;
    v->r15 = 0xf15f15 + index;
    v->rflags = 0x246;
    v->cr0 = 0x80050033;
    v->cr2 = 0x7f0000001000ull;
    v->cr3 = 0x2000 + index * 0x1000;
    v->cr4 = 0x6f0;
    v->kernel_gs_base = 0;
}

void core_default_spec(core_spec *s, uint64_t ram)
{
    memset(s, 0, sizeof *s);
    s->nblocks = 2;
    s->blocks[0] = (core_block){ 0, ram };
    s->blocks[1] = (core_block){ 0xfffc0000ull, 0x40000 };
    s->nvcpus = 1;
    core_default_vcpu(&s->vcpu[0], 0);
    s->qemu_size = 440;
}

#define NOTE_HDR 12
#define PRSTATUS_SIZE 336

static size_t note_bytes(size_t desc) { return NOTE_HDR + 8 + ((desc + 3) & ~(size_t)3); }

/* One QEMU segment: selector, limit, flags (descriptor high dword), base. */
static void qseg(uint8_t *p, uint32_t sel, uint32_t limit, uint32_t flags, uint64_t base)
{
    core_put32(p, sel);
    core_put32(p + 4, limit);
    core_put32(p + 8, flags);
    core_put32(p + 12, 0);
    core_put64(p + 16, base);
}

static size_t put_note(uint8_t *p, const char *name, uint32_t type, size_t desc)
{
    core_put32(p, 5);
    core_put32(p + 4, (uint32_t)desc);
    core_put32(p + 8, type);
    memcpy(p + 12, name, 5);
    return NOTE_HDR + 8;
}

uint8_t *core_build(const core_spec *s, size_t *len, core_layout *layout)
{
    core_layout lay;
    memset(&lay, 0, sizeof lay);
    size_t phnum = 1 + s->nblocks;
    lay.phoff = 64;
    size_t notes_off = lay.phoff + phnum * 56;
    size_t notes_len = s->nvcpus * (note_bytes(PRSTATUS_SIZE) + note_bytes(s->qemu_size));
    lay.notes_end = notes_off + notes_len;
    size_t off = (lay.notes_end + 4095) & ~(size_t)4095;
    for (size_t i = 0; i < s->nblocks; i++) {
        lay.data[i] = off;
        off += s->blocks[i].size;
    }
    uint8_t *f = calloc(1, off);
    if (!f)
        return NULL;
    /* ELF header */
    memcpy(f, "\177ELF", 4);
    f[4] = 2; /* ELFCLASS64 */
    f[5] = 1; /* little endian */
    f[6] = 1; /* EV_CURRENT */
    put16(f + 16, 4);   /* ET_CORE */
    put16(f + 18, 62);  /* EM_X86_64 */
    core_put32(f + 20, 1);
    core_put64(f + 32, lay.phoff);
    put16(f + 52, 64);
    put16(f + 54, 56);
    put16(f + 56, (uint16_t)phnum);
    put16(f + 58, 64);
    /* PT_NOTE */
    lay.note_phdr = lay.phoff;
    uint8_t *ph = f + lay.note_phdr;
    core_put32(ph, 4);
    core_put64(ph + 8, notes_off);
    core_put64(ph + 32, notes_len);
    core_put64(ph + 40, notes_len);
    /* PT_LOADs */
    for (size_t i = 0; i < s->nblocks; i++) {
        lay.load_phdr[i] = lay.phoff + (1 + i) * 56;
        ph = f + lay.load_phdr[i];
        core_put32(ph, 1);
        core_put32(ph + 4, 7);
        core_put64(ph + 8, lay.data[i]);
        core_put64(ph + 24, s->blocks[i].gpa);
        core_put64(ph + 32, s->blocks[i].size);
        core_put64(ph + 40, s->blocks[i].size);
        for (uint64_t a = 0; a < s->blocks[i].size; a++)
            f[lay.data[i] + a] = core_byte_at(s->blocks[i].gpa + a);
    }
    /* notes: every NT_PRSTATUS, then every QEMU note */
    size_t n = notes_off;
    for (unsigned c = 0; c < s->nvcpus; c++) {
        const core_vcpu *v = &s->vcpu[c];
        lay.prstatus[c] = n;
        uint8_t *d = f + n + put_note(f + n, "CORE", 1, PRSTATUS_SIZE);
        core_put32(d + 32, c + 1);
        uint8_t *r = d + 112;
        core_put64(r + 0 * 8, v->r15);
        core_put64(r + 10 * 8, v->rax);
        core_put64(r + 16 * 8, v->rip);
        core_put64(r + 17 * 8, 0x10);
        core_put64(r + 18 * 8, v->rflags);
        core_put64(r + 19 * 8, v->rsp);
        core_put64(r + 20 * 8, 0x18);
        n += note_bytes(PRSTATUS_SIZE);
    }
    for (unsigned c = 0; c < s->nvcpus; c++) {
        const core_vcpu *v = &s->vcpu[c];
        lay.qemu[c] = n;
        uint8_t *d = f + n + put_note(f + n, "QEMU", 0, s->qemu_size);
        core_put32(d, 1);
        core_put32(d + 4, s->qemu_size);
        core_put64(d + 8 + 0 * 8, v->rax);
        core_put64(d + 8 + 6 * 8, v->rsp);
        core_put64(d + 8 + 15 * 8, v->r15);
        core_put64(d + 136, v->rip);
        core_put64(d + 144, v->rflags);
        uint8_t *sg = d + 152;
        qseg(sg + 0 * 24, 0x10, 0xffffffff, 0x00af9b00, 0);                         /* cs: 64-bit code */
        qseg(sg + 1 * 24, 0, 0xffffffff, 0, 0);                                      /* ds */
        qseg(sg + 2 * 24, 0, 0xffffffff, 0, 0);                                      /* es */
        qseg(sg + 3 * 24, 0, 0xffffffff, 0, 0);                                      /* fs */
        qseg(sg + 4 * 24, 0, 0xffffffff, 0, 0xffff88800f600000ull + c * 0x40000);   /* gs */
        qseg(sg + 5 * 24, 0x18, 0xffffffff, 0x00cf9300, 0);                          /* ss */
        qseg(sg + 6 * 24, 0, 0xffff, 0x00008200, 0);                                 /* ldtr */
        qseg(sg + 7 * 24, 0x40, 0x4087, 0x00008b00, 0xfffffe0000003000ull + c * 0x1000); /* tr */
        qseg(sg + 8 * 24, 0, 0x7f, 0, 0xfffffe0000001000ull);                        /* gdtr */
        qseg(sg + 9 * 24, 0, 0xfff, 0, 0xfffffe0000000000ull);                       /* idtr */
        core_put64(d + 392, v->cr0);
        core_put64(d + 392 + 16, v->cr2);
        core_put64(d + 392 + 24, v->cr3);
        core_put64(d + 392 + 32, v->cr4);
        if (s->qemu_size >= 440)
            core_put64(d + 432, v->kernel_gs_base);
        n += note_bytes(s->qemu_size);
    }
    if (layout)
        *layout = lay;
    *len = off;
    return f;
}
