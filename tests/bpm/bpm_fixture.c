/*
 * tests/bpm/bpm_fixture.c — see bpm_fixture.h.
 */
#include "bpm_fixture.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "vmtrap/paging.h"

void fx_init(fx *f, const vmt_mem_config *mc, vmt_bpm_controller ctl)
{
    memset(f, 0, sizeof *f);
    char why[256] = "";
    vmt_status st = vmt_mem_driver_create(mc, &f->d, why, sizeof why);
    if (st)
        fail_msg("mem driver: %s", why);
    st = vmt_session_create(f->d, NULL, &f->s);
    assert_int_equal(st, VMT_OK);
    vmt_paging_config pc = { 4, 39, 1, 0 };
    vmt_session_set_paging(f->s, &pc);
    f->next_table = 0x80;
    /* two roots: empty PML4s */
    uint8_t zero[4096] = { 0 };
    assert_int_equal(vmt_drv_write_phys(f->d, FX_ROOT_A, zero, sizeof zero), VMT_OK);
    assert_int_equal(vmt_drv_write_phys(f->d, FX_ROOT_B, zero, sizeof zero), VMT_OK);
    f->next_table = 0x82;
    if (vmt_driver_has(f->d, VMT_CAP_VIEWS)) {
        assert_int_equal(vmt_drv_view_create(f->d, VMT_ACCESS_RWX, &f->view), VMT_OK);
        assert_int_equal(f->view, 1);
    }
    vmt_bpm_config cfg = { ctl, 0 };
    st = vmt_bpm_create(f->s, &cfg, &f->b, why, sizeof why);
    if (st)
        fail_msg("bpm create: %s", why);
    vmt_mem_log_clear(f->d);
}

void fx_free(fx *f)
{
    vmt_bpm_destroy(f->b);
    if (f->d) {
        char why[256];
        if (vmt_mem_check(f->d, why, sizeof why))
            fail_msg("mem check after destroy: %s", why);
        /* every shadow frame is back */
        assert_int_equal(vmt_mem_frames_in_use(f->d), 0);
    }
    vmt_session_destroy(f->s);
    memset(f, 0, sizeof *f);
}

static uint64_t rd64(fx *f, vmt_pa pa)
{
    uint64_t v;
    assert_int_equal(vmt_drv_read_phys(f->d, pa, &v, 8), VMT_OK);
    return v;
}

static void wr64(fx *f, vmt_pa pa, uint64_t v)
{
    assert_int_equal(vmt_drv_write_phys(f->d, pa, &v, 8), VMT_OK);
}

void fx_map(fx *f, vmt_pa root, vmt_va va, vmt_pa pa)
{
    vmt_pa table = root;
    for (unsigned level = 4; level > 1; level--) {
        vmt_pa e = table + 8 * vmt_pt_index(va, level);
        uint64_t v = rd64(f, e);
        if (!(v & VMT_PTE_P)) {
            uint8_t zero[4096] = { 0 };
            vmt_pa t = f->next_table++ << 12;
            assert_true(t < 0x100000);
            assert_int_equal(vmt_drv_write_phys(f->d, t, zero, sizeof zero), VMT_OK);
            v = t | VMT_PTE_P | VMT_PTE_RW | VMT_PTE_US;
            wr64(f, e, v);
        }
        table = v & VMT_PTE_ADDR_MASK;
    }
    wr64(f, table + 8 * vmt_pt_index(va, 1), (pa & VMT_PTE_ADDR_MASK) | VMT_PTE_P | VMT_PTE_RW | VMT_PTE_US);
    vmt_session_flush_v2p(f->s);
    vmt_session_flush_frames(f->s);
}

void fx_unmap(fx *f, vmt_pa root, vmt_va va)
{
    vmt_pa table = root;
    for (unsigned level = 4; level > 1; level--) {
        uint64_t v = rd64(f, table + 8 * vmt_pt_index(va, level));
        if (!(v & VMT_PTE_P))
            return;
        table = v & VMT_PTE_ADDR_MASK;
    }
    wr64(f, table + 8 * vmt_pt_index(va, 1), 0);
    vmt_session_flush_v2p(f->s);
    vmt_session_flush_frames(f->s);
}

void fx_fill(fx *f, vmt_gfn gfn, uint8_t seed)
{
    uint8_t page[4096];
    for (unsigned i = 0; i < sizeof page; i++) {
        page[i] = (uint8_t)(seed + i);
        if (page[i] == 0xCC)
            page[i] = 0x90;
    }
    assert_int_equal(vmt_drv_write_phys(f->d, gfn << 12, page, sizeof page), VMT_OK);
}

uint8_t fx_byte(fx *f, vmt_pa pa)
{
    uint8_t v;
    assert_int_equal(vmt_drv_read_phys(f->d, pa, &v, 1), VMT_OK);
    return v;
}

void fx_page(fx *f, vmt_gfn gfn, uint8_t *out)
{
    assert_int_equal(vmt_drv_read_phys(f->d, gfn << 12, out, 4096), VMT_OK);
}

vmt_bpm_bp fx_bp(fx *f, vmt_va va, vmt_pa root, uint32_t key, uint64_t tag, bool global)
{
    vmt_bpm_bp bp;
    memset(&bp, 0, sizeof bp);
    bp.ctx = vmt_addr_ctx_make(va, root);
    bp.view = f->view;
    bp.global = global;
    bp.key = key;
    bp.tag = tag;
    return bp;
}

void fx_check(fx *f)
{
    vmt_status st = vmt_bpm_check(f->b);
    if (st)
        fail_msg("bpm check: %s", vmt_bpm_error(f->b));
    char why[256];
    if (vmt_mem_check(f->d, why, sizeof why))
        fail_msg("mem check: %s", why);
}

vmt_event fx_int3(fx *f, vmt_va va, vmt_pa pa, vmt_pa root)
{
    vmt_event ev;
    memset(&ev, 0, sizeof ev);
    ev.kind = VMT_EVENT_BREAKPOINT;
    ev.view = f->view;
    ev.regs.rip = va;
    ev.regs.cr3 = root;
    ev.u.bp.gva = va;
    ev.u.bp.gpa = pa;
    ev.u.bp.gfn = pa >> 12;
    ev.u.bp.insn_len = 1;
    return ev;
}

vmt_event fx_mem(fx *f, vmt_va va, vmt_pa pa, vmt_access acc, vmt_pa root)
{
    vmt_event ev;
    memset(&ev, 0, sizeof ev);
    ev.kind = VMT_EVENT_MEM_ACCESS;
    ev.view = f->view;
    ev.regs.rip = va;
    ev.regs.cr3 = root;
    ev.u.mem.gpa = pa;
    ev.u.mem.gva = va;
    ev.u.mem.gva_valid = true;
    ev.u.mem.access = acc;
    return ev;
}

long fx_find_call(fx *f, vmt_mem_op op, size_t from)
{
    for (size_t i = from; i < vmt_mem_log_count(f->d); i++)
        if (vmt_mem_log_at(f->d, i)->op == op)
            return (long)i;
    return -1;
}

void fx_view_state(fx *f, vmt_gfn gfn, vmt_access *acc, vmt_gfn *backing)
{
    assert_int_equal(vmt_drv_view_get_access(f->d, f->view, gfn, acc, backing), VMT_OK);
}
