/*
 * drivers/emu/emu_driver.c — create/destroy, capabilities, physical memory,
 * frames, limits and the ops table of the emulator driver.
 *
 * Design: one mmap holds guest RAM (gfn 0 .. ram_frames-1) followed by the
 * extra frames (frame_alloc hands them out, zero-filled; the guest reaches
 * them only through a view remap of an in-RAM gfn). Host writes
 * (write_phys) go straight to that memory and then drop every software-TLB
 * entry walked through a written frame and the translated code of every
 * page mapped onto it. The image is placed with vmt_image_place() and its
 * registers pass the same checks as set_regs, so an image that needs what
 * Unicorn 2.0.1 cannot do (SYSCALL, LA57, debug registers) is refused with a
 * message that says so.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "core/errbuf.h"
#include "drivers/emu/emu_priv.h"
#include "vmtrap/image.h"

#define EMU_DEFAULT_RAM (64ull << 20)
#define EMU_DEFAULT_EXTRA 65536u
#define EMU_DEFAULT_VIEWS 16
#define EMU_DEFAULT_TLB 1024
#define EMU_MAXPHYADDR 40

static emu *impl(vmt_driver *d) { return vmt_driver_impl(d); }

static void emu_free(emu *e)
{
    if (!e)
        return;
    if (e->cpl_ctx)
        uc_context_free(e->cpl_ctx);
    if (e->uc)
        uc_close(e->uc);
    if (e->cs)
        cs_close(&e->cs);
    vmt_emulator_destroy(e->engine);
    emu_tlb_free(e);
    emu_views_free(e);
    if (e->mem && e->mem != MAP_FAILED)
        munmap(e->mem, e->mem_bytes);
    free(e->extra_used);
    free(e->pt_refs);
    free(e->sink);
    free(e->dirty);
    free(e->xframes);
    free(e->ranges);
    free(e);
}

static void op_destroy(vmt_driver *d) { emu_free(impl(d)); }

static vmt_status range_ok(vmt_driver *d, vmt_pa pa, size_t len)
{
    emu *e = impl(d);
    if (len == 0)
        return VMT_OK;
    uint64_t first = pa >> 12, last = (pa + len - 1) >> 12;
    if (pa + len < pa || last >= emu_total_frames(e))
        return vmt_driver_fail(d, VMT_E_RANGE, "pa 0x%" PRIx64 "+0x%zx is outside guest memory", pa, len);
    for (uint64_t f = first; f <= last; f++)
        if (f >= e->ram_frames && !e->extra_used[f - e->ram_frames])
            return vmt_driver_fail(d, VMT_E_RANGE, "frame 0x%" PRIx64 " is not an allocated extra frame", f);
    return VMT_OK;
}

static vmt_status op_read_phys(vmt_driver *d, vmt_pa pa, void *buf, size_t len)
{
    vmt_status st = range_ok(d, pa, len);
    if (!st)
        memcpy(buf, impl(d)->mem + pa, len);
    return st;
}

static vmt_status op_write_phys(vmt_driver *d, vmt_pa pa, const void *buf, size_t len)
{
    emu *e = impl(d);
    vmt_status st = range_ok(d, pa, len);
    if (st || !len)
        return st;
    const uint8_t *in = buf;
    for (uint64_t a = pa, end = pa + len; a < end;) {
        uint64_t next = (a | (EMU_PAGE - 1)) + 1, stop = next < end ? next : end;
        emu_host_write(e, a >> 12, (uint32_t)(a & (EMU_PAGE - 1)), in + (a - pa), (size_t)(stop - a));
        a = stop;
    }
    return VMT_OK;
}

static vmt_status op_get_regs(vmt_driver *d, vmt_vcpu vcpu, vmt_regs *regs)
{
    if (vcpu != 0)
        return vmt_driver_fail(d, VMT_E_NOTFOUND, "no vCPU %u (the emulator has one)", vcpu);
    return emu_regs_read(impl(d), regs);
}

static vmt_status op_set_regs(vmt_driver *d, vmt_vcpu vcpu, const vmt_regs *regs)
{
    emu *e = impl(d);
    if (vcpu != 0)
        return vmt_driver_fail(d, VMT_E_NOTFOUND, "no vCPU %u (the emulator has one)", vcpu);
    char why[224];
    vmt_status st = emu_regs_write(e, regs, why, sizeof why);
    if (st)
        return vmt_driver_fail(d, st, "%s", why);
    if (e->stopped && e->stop.reason == VMT_STOP_HALT)
        e->stopped = false; /* the caller moved the CPU on */
    return VMT_OK;
}

static vmt_status op_frame_alloc(vmt_driver *d, vmt_gfn *out)
{
    emu *e = impl(d);
    for (uint64_t i = 0; i < e->extra_frames; i++) {
        if (!e->extra_used[i]) {
            e->extra_used[i] = 1;
            memset(emu_frame_ptr(e, e->ram_frames + i), 0, EMU_PAGE);
            *out = e->ram_frames + i;
            return VMT_OK;
        }
    }
    return vmt_driver_fail(d, VMT_E_NOMEM, "all %" PRIu64 " extra frames are in use", e->extra_frames);
}

static vmt_status op_frame_free(vmt_driver *d, vmt_gfn gfn)
{
    emu *e = impl(d);
    if (gfn < e->ram_frames || gfn >= emu_total_frames(e) || !e->extra_used[gfn - e->ram_frames])
        return vmt_driver_fail(d, VMT_E_NOTFOUND, "frame 0x%" PRIx64 " is not an allocated extra frame", gfn);
    if (emu_frame_is_backing(e, gfn))
        return vmt_driver_fail(d, VMT_E_BUSY, "frame 0x%" PRIx64 " still backs a gfn in a view", gfn);
    e->extra_used[gfn - e->ram_frames] = 0;
    return VMT_OK;
}

static vmt_status op_pause(vmt_driver *d)
{
    impl(d)->paused = true; /* the CPU only runs inside wait_event */
    return VMT_OK;
}

static vmt_status op_resume(vmt_driver *d)
{
    impl(d)->paused = false;
    return VMT_OK;
}

static vmt_status op_hw_breakpoint(vmt_driver *d, vmt_vcpu vcpu, unsigned index, vmt_va va, int enable)
{
    emu *e = impl(d);
    if (vcpu != 0 && vcpu != VMT_VCPU_ALL)
        return vmt_driver_fail(d, VMT_E_NOTFOUND, "no vCPU %u (the emulator has one)", vcpu);
    if (index >= 4)
        return vmt_driver_fail(d, VMT_E_RANGE, "hardware breakpoint %u: there are 4 (0..3)", index);
    if (enable) {
        e->hwbp_va[index] = va;
        e->hwbp_mask |= (uint8_t)(1u << index);
        e->dr[index] = va;
    } else {
        e->hwbp_va[index] = 0;
        e->hwbp_mask &= (uint8_t)~(1u << index);
        e->dr[index] = 0;
    }
    e->dr[5] = (e->dr[5] & ~0xffull) | emu_hwbp_dr7(e);
    return VMT_OK;
}

static vmt_status op_monitor(vmt_driver *d, vmt_event_kind kind, int enable)
{
    emu *e = impl(d);
    if (kind == VMT_EVENT_CR_WRITE)
        e->monitor_cr = enable != 0;
    else if (kind == VMT_EVENT_IO)
        e->monitor_io = enable != 0;
    else
        return vmt_driver_fail(d, VMT_E_NOTSUP, "event kind %s cannot be switched", vmt_event_kind_name(kind));
    return VMT_OK;
}

static vmt_status op_set_limit(vmt_driver *d, double seconds, uint64_t instructions)
{
    emu *e = impl(d);
    if (seconds < 0)
        return vmt_driver_fail(d, VMT_E_INVAL, "negative time limit");
    e->time_limit_s = seconds;
    e->ns_guest_total = 0;
    e->insn_limit = instructions ? e->icount + instructions : 0;
    if (e->stopped && (e->stop.reason == VMT_STOP_TIME_LIMIT || e->stop.reason == VMT_STOP_INSN_LIMIT))
        e->stopped = false;
    return VMT_OK;
}

static vmt_status op_stats(vmt_driver *d, vmt_driver_stats *out)
{
    emu *e = impl(d);
    *out = e->stats;
    out->instructions = e->icount;
    return VMT_OK;
}

static const vmt_driver_ops emu_ops = {
    .name = "emu",
    .destroy = op_destroy,
    .read_phys = op_read_phys,
    .write_phys = op_write_phys,
    .get_regs = op_get_regs,
    .set_regs = op_set_regs,
    .view_create = emu_op_view_create,
    .view_destroy = emu_op_view_destroy,
    .view_switch = emu_op_view_switch,
    .view_current = emu_op_view_current,
    .view_remap = emu_op_view_remap,
    .view_set_access = emu_op_view_set_access,
    .view_get_access = emu_op_view_get_access,
    .frame_alloc = op_frame_alloc,
    .frame_free = op_frame_free,
    .inject = emu_op_inject,
    .pause = op_pause,
    .resume = op_resume,
    .hw_breakpoint = op_hw_breakpoint,
    .monitor = op_monitor,
    .wait_event = emu_op_wait_event,
    .respond = emu_op_respond,
    .set_limit = op_set_limit,
    .stats = op_stats,
    .get_vcpu_state = emu_op_get_vcpu_state,
    .set_vcpu_state = emu_op_set_vcpu_state,
    .dirty_log = emu_op_dirty_log,
};

static vmt_status place_write(void *ctx, vmt_pa pa, const void *buf, size_t len)
{
    emu *e = ctx;
    if (pa + len < pa || pa + len > e->ram_frames * EMU_PAGE)
        return VMT_E_RANGE;
    memcpy(e->mem + pa, buf, len);
    return VMT_OK;
}

/* Unicorn's physical memory, mapped once: each RAM block at its address,
 * the holes below MAXPHYADDR as MMIO, the extra frames and the sink page
 * high above (only the fill hook hands them out). */
static vmt_status map_memory(emu *e, char *why, size_t why_len)
{
    uc_err err = uc_ctl_tlb_mode(e->uc, UC_TLB_VIRTUAL);
    vmt_ram_range one = { 0, e->ram_frames * EMU_PAGE };
    const vmt_ram_range *r = e->nranges ? e->ranges : &one;
    size_t n = e->nranges ? e->nranges : 1;
    uint64_t at = 0;
    for (size_t i = 0; i < n && err == UC_ERR_OK; i++) {
        if (r[i].start > at && emu_mmio_map(e, at, r[i].start - at) != VMT_OK)
            err = UC_ERR_NOMEM;
        if (err == UC_ERR_OK)
            err = uc_mem_map_ptr(e->uc, r[i].start, r[i].size, UC_PROT_ALL, e->mem + r[i].start);
        at = r[i].start + r[i].size;
    }
    uint64_t top = 1ull << e->maxphyaddr;
    if (err == UC_ERR_OK && at < top && emu_mmio_map(e, at, top - at) != VMT_OK)
        err = UC_ERR_NOMEM;
    if (err == UC_ERR_OK && e->extra_frames)
        err = uc_mem_map_ptr(e->uc, EMU_EXTRA_PA, e->extra_frames * EMU_PAGE, UC_PROT_ALL,
                             e->mem + e->ram_frames * EMU_PAGE);
    if (err == UC_ERR_OK)
        err = uc_mem_map_ptr(e->uc, EMU_SINK_PA, EMU_PAGE, UC_PROT_ALL, e->sink);
    if (err != UC_ERR_OK) {
        vmt_why(why, why_len, "emu: cannot map guest memory into unicorn: %s", uc_strerror(err));
        return VMT_E_DRIVER;
    }
    return VMT_OK;
}

/* The RAM blocks of cfg: sorted, page aligned, not overlapping. */
static vmt_status take_ranges(emu *e, const vmt_machine_config *cfg, uint64_t *ram, char *why, size_t why_len)
{
    if (!cfg->ram_ranges || !cfg->ram_range_count)
        return VMT_OK;
    e->ranges = calloc(cfg->ram_range_count, sizeof *e->ranges);
    if (!e->ranges)
        return VMT_E_NOMEM;
    uint64_t end = 0;
    for (size_t i = 0; i < cfg->ram_range_count; i++) {
        const vmt_ram_range *r = &cfg->ram_ranges[i];
        if (r->start % EMU_PAGE || r->size % EMU_PAGE || !r->size || r->start < end ||
            r->start + r->size > (1ull << 36)) {
            vmt_why(why, why_len, "emu: RAM range %zu (0x%" PRIx64 "+0x%" PRIx64 ") is not page aligned, sorted and below 64 GiB", i,
                    r->start, r->size);
            return VMT_E_INVAL;
        }
        e->ranges[i] = *r;
        end = r->start + r->size;
    }
    e->nranges = cfg->ram_range_count;
    *ram = end;
    return VMT_OK;
}

vmt_status vmt_emu_driver_create_ex(const vmt_machine_config *cfg, const vmt_emu_options *opt,
                                    vmt_driver **out, char *why, size_t why_len)
{
    *out = NULL;
    if (!cfg) {
        vmt_why(why, why_len, "emu: no machine config");
        return VMT_E_INVAL;
    }
    uint64_t ram = cfg->ram_size ? cfg->ram_size : EMU_DEFAULT_RAM;
    uint32_t tlb = opt && opt->tlb_entries ? opt->tlb_entries : EMU_DEFAULT_TLB;
    uint16_t views = cfg->max_views ? cfg->max_views : EMU_DEFAULT_VIEWS;
    uint64_t extra = cfg->extra_frames ? cfg->extra_frames : EMU_DEFAULT_EXTRA;
    if (ram % EMU_PAGE || ram < 16 * EMU_PAGE || ram > (1ull << 36)) {
        vmt_why(why, why_len, "emu: RAM size 0x%" PRIx64 " must be a multiple of 4 KiB between 64 KiB and 64 GiB", ram);
        return VMT_E_INVAL;
    }
    if (cfg->vcpus > 1) {
        vmt_why(why, why_len, "emu: the emulator driver runs one vCPU, %u requested", cfg->vcpus);
        return VMT_E_NOTSUP;
    }
    if (tlb < 8 || tlb > 2048) {
        vmt_why(why, why_len, "emu: software TLB size %u is outside 8..2048", tlb);
        return VMT_E_INVAL;
    }
    if (views < 2 || views == 0xffff) {
        vmt_why(why, why_len, "emu: max_views %u must be 2..65534", views);
        return VMT_E_INVAL;
    }
    emu *e = calloc(1, sizeof *e);
    if (!e) {
        vmt_why(why, why_len, "emu: out of memory");
        return VMT_E_NOMEM;
    }
    vmt_status rst = take_ranges(e, cfg, &ram, why, why_len);
    if (rst) {
        emu_free(e);
        return rst;
    }
    e->ram_frames = ram / EMU_PAGE;
    e->no_engine = opt && opt->no_engine;
    e->extra_frames = extra;
    e->maxphyaddr = EMU_MAXPHYADDR;
    e->mem_bytes = (size_t)(e->ram_frames + extra) * EMU_PAGE;
    e->mem = mmap(NULL, e->mem_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    e->extra_used = calloc(extra ? extra : 1, 1);
    e->pt_refs = calloc(e->ram_frames + extra, sizeof *e->pt_refs);
    e->sink = aligned_alloc(EMU_PAGE, EMU_PAGE);
    e->dirty = calloc((size_t)((e->ram_frames + 7) / 8) + 1, 1);
    e->xframes = calloc((size_t)((e->ram_frames + extra + 7) / 8) + 1, 1);
    vmt_status st = VMT_E_NOMEM;
    if (e->mem == MAP_FAILED || !e->extra_used || !e->pt_refs || !e->sink || !e->dirty || !e->xframes || emu_views_init(e, views) ||
        emu_tlb_init(e, tlb)) {
        vmt_why(why, why_len, "emu: out of memory for %" PRIu64 " MiB of guest memory", (uint64_t)(e->mem_bytes >> 20));
        goto fail;
    }
    e->serial = cfg->serial;
    e->bus = cfg->bus;
    e->serial_ctx = cfg->serial_ctx;
    uc_err uerr = uc_open(UC_ARCH_X86, UC_MODE_64, &e->uc);
    if (uerr != UC_ERR_OK) {
        e->uc = NULL;
        vmt_why(why, why_len, "emu: uc_open failed: %s", uc_strerror(uerr));
        st = VMT_E_DRIVER;
        goto fail;
    }
    /* Unicorn 2.1's default x86-64 model is not qemu64 (it reports family 6) */
    int model = opt && opt->set_cpu_model ? opt->cpu_model : UC_CPU_X86_QEMU64;
    if (uc_ctl_set_cpu_model(e->uc, model) != UC_ERR_OK) {
        vmt_why(why, why_len, "emu: unicorn has no x86-64 CPU model %d", model);
        st = VMT_E_INVAL;
        goto fail;
    }
    if (map_memory(e, why, why_len)) {
        st = VMT_E_DRIVER;
        goto fail;
    }
    {
        char inner2[160];
        st = emu_cpl_init(e, inner2, sizeof inner2);
        if (st) {
            vmt_why(why, why_len, "emu: %s", inner2);
            goto fail;
        }
    }
    emu_clock_init(e, &cfg->clock);
    if (cs_open(CS_ARCH_X86, CS_MODE_64, &e->cs) != CS_ERR_OK ||
        cs_option(e->cs, CS_OPT_DETAIL, CS_OPT_ON) != CS_ERR_OK) {
        e->cs = 0;
        vmt_why(why, why_len, "emu: capstone cannot be opened");
        st = VMT_E_DRIVER;
        goto fail;
    }
    if (emu_cpu_init(e)) {
        vmt_why(why, why_len, "emu: cannot install the unicorn hooks");
        st = VMT_E_DRIVER;
        goto fail;
    }
    {
        char inner3[160];
        st = emu_pcid_init(e, opt, inner3, sizeof inner3);
        if (st) {
            vmt_why(why, why_len, "emu: %s", inner3);
            goto fail;
        }
    }
    vmt_regs regs;
    memset(&regs, 0, sizeof regs);
    regs.cr0 = VMT_CR0_PG | VMT_CR0_PE | VMT_CR0_WP | 0x10;
    regs.cr4 = VMT_CR4_PAE;
    regs.efer = VMT_EFER_LME | VMT_EFER_LMA;
    regs.rflags = 2;
    regs.cs = 0x08;
    regs.ss = 0x10;
    if (cfg->image) {
        char inner[200];
        st = vmt_image_place((vmt_image *)cfg->image, ram, place_write, e, &regs, inner, sizeof inner);
        if (st) {
            vmt_why(why, why_len, "emu: cannot place the image: %s", inner);
            goto fail;
        }
    }
    char inner[200];
    st = emu_regs_write(e, &regs, inner, sizeof inner);
    if (st) {
        vmt_why(why, why_len, "emu: the guest cannot run here: %s", inner);
        goto fail;
    }
    vmt_caps caps;
    memset(&caps, 0, sizeof caps);
    caps.flags = VMT_CAP_READ_PHYS | VMT_CAP_WRITE_PHYS | VMT_CAP_REGS_GET | VMT_CAP_REGS_SET | VMT_CAP_VIEWS |
                 VMT_CAP_VIEW_PER_VCPU | VMT_CAP_VIEW_REMAP | VMT_CAP_VIEW_PERM | VMT_CAP_WRITE_DATA |
                 VMT_CAP_SINGLESTEP | VMT_CAP_FAST_STEP | VMT_CAP_EMULATE | VMT_CAP_FRAMES | VMT_CAP_INJECT_PF |
                 VMT_CAP_INJECT_BP | VMT_CAP_EVENTS | VMT_CAP_BREAKPOINT_EVENTS | VMT_CAP_CR3_EVENTS |
                 VMT_CAP_IO_EVENTS | VMT_CAP_TIME_LIMIT | VMT_CAP_INSN_LIMIT | VMT_CAP_DETERMINISTIC |
                 VMT_CAP_PT_AD_BITS | VMT_CAP_PAUSE | VMT_CAP_HW_BREAKPOINTS | VMT_CAP_VCPU_STATE |
                 VMT_CAP_DIRTY_LOG;
    caps.trap_access = VMT_ACCESS_RWX;
    caps.max_views = views;
    caps.hw_breakpoints = 4;
    caps.vcpus = 1;
    caps.ram_frames = e->ram_frames;
    caps.maxphyaddr = e->maxphyaddr;
    st = vmt_driver_create(&emu_ops, e, &caps, out, why, why_len);
    if (st)
        goto fail;
    e->drv = *out;
    if (cfg->vcpu_state) {
        st = emu_op_set_vcpu_state(*out, 0, cfg->vcpu_state);
        if (st) {
            vmt_why(why, why_len, "emu: %s", vmt_driver_error(*out));
            vmt_driver_destroy(*out);
            *out = NULL;
            return st;
        }
    }
    return VMT_OK;
fail:
    emu_free(e);
    return st;
}

vmt_status vmt_emu_driver_create(const vmt_machine_config *cfg, vmt_driver **out, char *why, size_t why_len)
{
    return vmt_emu_driver_create_ex(cfg, NULL, out, why, why_len);
}

static emu *emu_of(vmt_driver *d)
{
    if (!d || strcmp(vmt_driver_name(d), "emu") != 0)
        return NULL;
    return impl(d);
}

vmt_status vmt_emu_tlb_stats_get(vmt_driver *d, vmt_emu_tlb_stats *out)
{
    emu *e = emu_of(d);
    if (!e)
        return VMT_E_INVAL;
    *out = e->tstats;
    out->used = e->tlb_used;
    out->interrupts = e->irqs_delivered;
    out->hlt_skipped_ns = e->hlt_skipped_ns;
    out->guest_ns = emu_now_ns(e);
    return VMT_OK;
}

vmt_status vmt_emu_check(vmt_driver *d)
{
    emu *e = emu_of(d);
    if (!e)
        return VMT_E_INVAL;
    char why[200];
    vmt_status st = emu_mmu_check(e, why, sizeof why);
    if (st)
        return vmt_driver_fail(d, st, "invariant: %s", why);
    for (uint16_t v = 0; v < e->max_views; v++) {
        if (!e->views[v].live)
            continue;
        if (v == 0 && vmt_hmap_count(&e->views[0].gfns))
            return vmt_driver_fail(d, VMT_E_INTERNAL, "invariant: view 0 has overrides");
        size_t it = 0;
        void *k, *val;
        while (vmt_hmap_next(&e->views[v].gfns, &it, &k, &val)) {
            vmt_gfn g;
            memcpy(&g, k, sizeof g);
            const emu_gfn_ov *ov = val;
            bool ok = g < e->ram_frames &&
                      (ov->backing < e->ram_frames ||
                       (ov->backing < emu_total_frames(e) && e->extra_used[ov->backing - e->ram_frames]));
            if (!ok)
                return vmt_driver_fail(d, VMT_E_INTERNAL, "invariant: view %u gfn 0x%" PRIx64 " backed by bad frame 0x%" PRIx64,
                                       v, g, ov->backing);
        }
    }
    if (e->cur_view >= e->max_views || !e->views[e->cur_view].live)
        return vmt_driver_fail(d, VMT_E_INTERNAL, "invariant: current view %u is not live", e->cur_view);
    if (e->engine && vmt_emulator_check(e->engine) != VMT_OK)
        return vmt_driver_fail(d, VMT_E_INTERNAL, "invariant: %s", vmt_emulator_error(e->engine));
    return VMT_OK;
}

void vmt_emu_library_versions(char *buf, size_t len)
{
    unsigned umaj = 0, umin = 0;
    int cmaj = 0, cmin = 0;
    uint32_t uv = uc_version(&umaj, &umin);
    cs_version(&cmaj, &cmin);
    snprintf(buf, len, "unicorn %u.%u.%u, capstone %d.%d", umaj, umin, (uv >> 8) & 0xff, cmaj, cmin);
}
