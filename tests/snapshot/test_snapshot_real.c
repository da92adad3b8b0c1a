/*
 * tests/snapshot/test_snapshot_real.c — the project's real Linux snapshot
 * (scripts/make-linux-snapshot.sh, cached in
 * ${VMT_CACHE_DIR:-~/.cache/vmtrap}/linux-snapshot/): the ELF core QEMU
 * wrote loads, its memory map is the pc machine's (RAM at 0 + BIOS ROM at
 * 0xfffc0000), and the vCPU state agrees with what QEMU's own
 * `info registers -a` printed at the same pause (registers.txt): RIP, RSP,
 * CR0/CR3/CR4, segments with base/limit/flags, TR, GDTR/IDTR. The EFER
 * that vmtrap reconstructs from the paging mode and the page tables equals
 * QEMU's EFER. Skipped (77) when the cache is absent.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "vmtrap/snapshot.h"

static char core_path[512], regs_path[512];

typedef struct qseg {
    unsigned sel;
    uint64_t base;
    uint32_t limit, flags;
    int found;
} qseg;

typedef struct qregs {
    uint64_t rip, rsp, rax, r15, cr0, cr2, cr3, cr4, efer, gdt_base, idt_base;
    uint32_t gdt_limit, idt_limit;
    qseg cs, ss, ds, gs, tr, ldt;
} qregs;

static int hexfield(const char *text, const char *name, uint64_t *out)
{
    const char *p = strstr(text, name);
    if (!p)
        return 0;
    return sscanf(p + strlen(name), "%" SCNx64, out) == 1;
}

static void segline(const char *text, const char *name, qseg *s)
{
    const char *p = strstr(text, name);
    if (!p)
        return;
    s->found = sscanf(p + strlen(name), "%x %" SCNx64 " %x %x", &s->sel, &s->base, &s->limit, &s->flags) == 4;
}

static int parse(qregs *q)
{
    FILE *f = fopen(regs_path, "r");
    if (!f)
        return 0;
    static char text[65536];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = 0;
    memset(q, 0, sizeof *q);
    uint64_t gl = 0, il = 0;
    int ok = hexfield(text, "RIP=", &q->rip) && hexfield(text, "RSP=", &q->rsp) && hexfield(text, "RAX=", &q->rax) &&
             hexfield(text, "R15=", &q->r15) && hexfield(text, "CR0=", &q->cr0) && hexfield(text, "CR2=", &q->cr2) &&
             hexfield(text, "CR3=", &q->cr3) && hexfield(text, "CR4=", &q->cr4) && hexfield(text, "EFER=", &q->efer);
    const char *g = strstr(text, "GDT=");
    const char *i = strstr(text, "IDT=");
    ok = ok && g && i && sscanf(g + 4, "%" SCNx64 " %" SCNx64, &q->gdt_base, &gl) == 2 &&
         sscanf(i + 4, "%" SCNx64 " %" SCNx64, &q->idt_base, &il) == 2;
    q->gdt_limit = (uint32_t)gl;
    q->idt_limit = (uint32_t)il;
    segline(text, "\nCS =", &q->cs);
    segline(text, "\nSS =", &q->ss);
    segline(text, "\nDS =", &q->ds);
    segline(text, "\nGS =", &q->gs);
    segline(text, "\nTR =", &q->tr);
    segline(text, "\nLDT=", &q->ldt);
    return ok && q->cs.found && q->ss.found && q->gs.found && q->tr.found && q->ldt.found;
}

static void same_seg(const char *name, const vmt_segment *s, const qseg *q)
{
    uint16_t attrib = (uint16_t)(((q->flags >> 8) & 0xff) | (((q->flags >> 20) & 0xf) << 12));
    if (s->selector != q->sel || s->base != q->base || s->limit != q->limit || s->attrib != attrib)
        fail_msg("%s: core sel 0x%x base 0x%llx limit 0x%x attrib 0x%x, QEMU 0x%x 0x%llx 0x%x 0x%x", name, s->selector,
                 (unsigned long long)s->base, s->limit, s->attrib, q->sel, (unsigned long long)q->base, q->limit,
                 attrib);
}

static void test_real_core_matches_qemu(void **state)
{
    (void)state;
    qregs q;
    assert_true(parse(&q));
    vmt_snapshot *s = NULL;
    char why[256] = "";
    vmt_snapshot_options o = { .quiet = true };
    if (vmt_snapshot_open(core_path, &o, &s, why, sizeof why))
        fail_msg("%s", why);
    char w[256];
    assert_int_equal(vmt_snapshot_check(s, w, sizeof w), VMT_OK);
    /* the pc machine with 256 MiB: RAM at 0, BIOS ROM below 4 GiB */
    size_t n;
    const vmt_ram_range *r = vmt_snapshot_ram_ranges(s, &n);
    assert_int_equal(n, 2);
    assert_int_equal(r[0].start, 0);
    assert_int_equal(r[0].size, 0x10000000);
    assert_int_equal(r[1].start, 0xfffc0000ull);
    assert_int_equal(r[1].size, 0x40000);
    assert_int_equal(vmt_snapshot_vcpu_count(s), 1);
    const vmt_vcpu_state *v = vmt_snapshot_vcpu(s, 0);
    assert_int_equal(v->regs.rip, q.rip);
    assert_int_equal(v->regs.rsp, q.rsp);
    assert_int_equal(v->regs.rax, q.rax);
    assert_int_equal(v->regs.r15, q.r15);
    assert_int_equal(v->regs.cr0, q.cr0);
    assert_int_equal(v->regs.cr2, q.cr2);
    assert_int_equal(v->regs.cr3, q.cr3);
    assert_int_equal(v->regs.cr4, q.cr4);
    assert_int_equal(v->regs.gdtr_base, q.gdt_base);
    assert_int_equal(v->regs.gdtr_limit, q.gdt_limit);
    assert_int_equal(v->regs.idtr_base, q.idt_base);
    assert_int_equal(v->regs.idtr_limit, q.idt_limit);
    same_seg("cs", &v->cs, &q.cs);
    same_seg("ss", &v->ss, &q.ss);
    same_seg("gs", &v->gs, &q.gs);
    same_seg("tr", &v->tr, &q.tr);
    same_seg("ldtr", &v->ldtr, &q.ldt);
    assert_int_equal(v->regs.gs_base, q.gs.base);
    assert_true(v->regs.rip >= 0xffffffff81000000ull); /* kernel text */
    /* kernel text VA 0xffffffff81000000 = PA 0x1000000 (nokaslr): code is there */
    uint8_t text[64], zero[64] = { 0 };
    assert_int_equal(vmt_snapshot_read(s, 0x1000000, text, sizeof text), VMT_OK);
    assert_memory_not_equal(text, zero, sizeof text);
    /* reconstruction without symbols finds QEMU's EFER */
    assert_int_equal(vmt_snapshot_reconstruct(s, NULL, NULL), VMT_OK);
    assert_int_equal(v->regs.efer, q.efer);
    assert_true(v->reconstructed & VMT_VS_REGS);

    /* QEMU's own registers text as a sidecar: the halted vCPU and its live FPU */
    FILE *rf = fopen(regs_path, "r");
    static char rtext[65536];
    size_t rn = fread(rtext, 1, sizeof rtext - 1, rf);
    fclose(rf);
    rtext[rn] = 0;
    char *json = NULL;
    if (vmt_snapshot_sidecar_from_qemu_registers(rtext, &json, why, sizeof why))
        fail_msg("%s", why);
    assert_int_equal(vmt_snapshot_apply_sidecar(s, json), VMT_OK);
    free(json);
    assert_true(v->halted == (strstr(rtext, "HLT=1") != NULL));
    assert_int_equal(v->regs.efer, q.efer);
    assert_true(v->known & VMT_VS_FPU);

    /* as a vmtrap snapshot: much smaller, every RAM byte and the vCPU kept */
    char path[128];
    snprintf(path, sizeof path, "/tmp/vmt_real_%d.vmts", (int)getpid());
    vmt_snapshot_save_options so = { .metadata_json = "{\"os\":\"linux\"}" };
    assert_int_equal(vmt_snapshot_save(s, &so, path), VMT_OK);
    vmt_snapshot *t = NULL;
    if (vmt_snapshot_open(path, &o, &t, why, sizeof why))
        fail_msg("%s", why);
    unlink(path);
    const vmt_ram_range *r2 = vmt_snapshot_ram_ranges(t, &n);
    assert_int_equal(n, 2);
    for (size_t i = 0; i < n; i++) {
        const uint8_t *a, *b;
        assert_int_equal(r2[i].start, r[i].start);
        assert_int_equal(vmt_snapshot_ram_ptr(s, r[i].start, r[i].size, &a), VMT_OK);
        assert_int_equal(vmt_snapshot_ram_ptr(t, r[i].start, r[i].size, &b), VMT_OK);
        assert_memory_equal(a, b, r[i].size);
    }
    assert_memory_equal(&vmt_snapshot_vcpu(t, 0)->regs, &v->regs, sizeof v->regs);
    assert_int_equal(vmt_snapshot_fixup_count(t), vmt_snapshot_fixup_count(s));
    vmt_snapshot_destroy(t);
    vmt_snapshot_destroy(s);
}

int main(void)
{
    const char *cache = getenv("VMT_CACHE_DIR");
    const char *home = getenv("HOME");
    char dir[400];
    if (cache && *cache)
        snprintf(dir, sizeof dir, "%s/linux-snapshot", cache);
    else
        snprintf(dir, sizeof dir, "%s/.cache/vmtrap/linux-snapshot", home ? home : "/root");
    snprintf(core_path, sizeof core_path, "%s/core.elf", dir);
    snprintf(regs_path, sizeof regs_path, "%s/registers.txt", dir);
    if (access(core_path, R_OK) != 0 || access(regs_path, R_OK) != 0) {
        printf("skip: no Linux snapshot at %s (scripts/make-linux-snapshot.sh makes it)\n", dir);
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_real_core_matches_qemu),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
