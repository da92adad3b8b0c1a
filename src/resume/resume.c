/*
 * resume/resume.c — open a snapshot as a running machine: snapshot ->
 * reconstructions -> platform -> emu driver -> RAM and vCPU state; save,
 * restore, notes.
 *
 * Order of the reconstructions (each listed as a note, never silent):
 *   1. the sidecar (user-supplied facts win over everything derived);
 *   2. OS knowledge (resume_linux.c): LSTAR & co., the TSC rate, the TSC
 *      and the HPET counter the kernel's clocks expect;
 *   3. the symbol-free reconstruction of the snapshot module (EFER from
 *      paging and NX use, APIC base, XCR0, PAT, TSC when still unknown);
 *   4. `halted` when the instruction before RIP is HLT and IF = 1 (a
 *      kernel paused in its idle loop; QEMU's dump does not say);
 *   5. the platform: the snapshot's device state, or the kernel's device
 *      programming rebuilt (resume_platform.c).
 * The starting point for restores is the platform blob right after step 5
 * and the virtual time of the snapshot.
 *
 * Virtual clock: 1 instruction = 1 ns unless configured; the TSC the
 * guest reads is tsc + elapsed * tsc_hz (the emu driver's clock), the
 * platform gets the same rate and offset so TSC-deadline timers agree.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "resume/resume_internal.h"
#include "vmtrap/emu.h"
#include "vmtrap/paging.h"

#define DEFAULT_IPS 1000000000ull
#define DEFAULT_TSC_HZ 2600000000ull /* QEMU TCG's TSC on the reference host */

void resume_note(vmt_resume *r, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (r->nnotes == r->notecap) {
        size_t cap = r->notecap ? 2 * r->notecap : 32;
        char **n = realloc(r->notes, cap * sizeof *n);
        if (n) {
            r->notes = n;
            r->notecap = cap;
        }
    }
    char *copy = r->nnotes < r->notecap ? strdup(line) : NULL;
    if (copy)
        r->notes[r->nnotes++] = copy;
    else
        r->notes_oom = true;
    if (r->cfg.note)
        r->cfg.note(r->cfg.note_ctx, line);
}

size_t vmt_resume_note_count(const vmt_resume *r) { return r->nnotes; }
const char *vmt_resume_note_at(const vmt_resume *r, size_t i) { return i < r->nnotes ? r->notes[i] : NULL; }
const char *vmt_resume_error(const vmt_resume *r) { return r->err.msg; }
vmt_driver *vmt_resume_driver(vmt_resume *r) { return r->drv; }
void vmt_resume_release_driver(vmt_resume *r) { r->drv_released = true; }
vmt_platform *vmt_resume_platform(vmt_resume *r) { return r->plat; }
vmt_snapshot *vmt_resume_snapshot(vmt_resume *r) { return r->snap; }

void vmt_resume_close(vmt_resume *r)
{
    if (!r)
        return;
    if (r->drv && !r->drv_released)
        vmt_driver_destroy(r->drv);
    vmt_platform_destroy(r->plat);
    vmt_snapshot_destroy(r->snap);
    free(r->platform0);
    for (size_t i = 0; i < r->nnotes; i++)
        free(r->notes[i]);
    free(r->notes);
    free(r);
}

static vmt_status snap_reader(void *ctx, vmt_pa pa, void *buf, size_t len)
{
    return vmt_snapshot_read(ctx, pa, buf, len);
}

/* A vCPU paused right after HLT with IF = 1 was waiting for an interrupt. */
static void reconstruct_halted(vmt_resume *r)
{
    const vmt_vcpu_state *v = vmt_snapshot_vcpu(r->snap, 0);
    if (!v || (v->known & VMT_VS_EVENTS) || !(v->regs.rflags & VMT_RFLAGS_IF) || !(v->regs.cr0 & VMT_CR0_PG))
        return;
    vmt_phys_reader rd = { snap_reader, r->snap };
    vmt_paging_config pc = { .levels = (v->regs.cr4 & VMT_CR4_LA57) ? 5 : 4, .maxphyaddr = 40,
                             .nxe = (v->regs.efer & VMT_EFER_NXE) != 0 };
    vmt_walk w;
    uint8_t b = 0;
    if (vmt_paging_walk(&rd, &pc, v->regs.cr3 & ~0xfffull, v->regs.rip - 1, &w, NULL, 0) != VMT_OK ||
        vmt_snapshot_read(r->snap, w.pa, &b, 1) != VMT_OK || b != 0xf4)
        return;
    (void)vmt_snapshot_fixup_set(r->snap, 0, "halted", 1,
                                 "the instruction before RIP is HLT and IF = 1: the vCPU was idle, waiting for an interrupt");
}

static void list_fixups(vmt_resume *r, size_t from)
{
    for (size_t i = from; i < vmt_snapshot_fixup_count(r->snap); i++) {
        const vmt_snapshot_fixup *f = vmt_snapshot_fixup_at(r->snap, i);
        resume_note(r, "vcpu%u %s=0x%" PRIx64 ": %s", f->vcpu, f->field, f->value, f->how);
    }
}

static vmt_status fail(vmt_resume *r, char *why, size_t why_len, vmt_status st, const char *fmt, const char *a)
{
    vmt_why(why, why_len, fmt, a);
    vmt_resume_close(r);
    return st;
}

/* A file vmt_resume_save wrote names the reconstructions its state was
 * derived from (metadata "reconstructions"): list them again. */
static void carried_notes(vmt_resume *r)
{
    const char *meta = vmt_snapshot_metadata(r->snap);
    json_object *j = meta ? json_tokener_parse(meta) : NULL, *list = NULL;
    if (j && json_object_object_get_ex(j, "reconstructions", &list) && json_object_is_type(list, json_type_array)) {
        for (size_t i = 0; i < json_object_array_length(list); i++) {
            json_object *n = json_object_array_get_idx(list, i);
            if (json_object_is_type(n, json_type_string))
                resume_note(r, "carried: %s", json_object_get_string(n));
        }
    }
    json_object_put(j);
}

static vmt_status platform_reset(void *ctx, const void *blob, size_t len)
{
    (void)blob;
    (void)len;
    vmt_resume *r = ctx;
    return vmt_platform_load(r->plat, r->platform0, r->platform0_len);
}

vmt_status vmt_resume_open(const char *path, const vmt_resume_config *cfg, vmt_resume **out, char *why,
                           size_t why_len)
{
    *out = NULL;
    vmt_resume *r = calloc(1, sizeof *r);
    if (!r) {
        vmt_why(why, why_len, "resume: out of memory");
        return VMT_E_NOMEM;
    }
    if (cfg)
        r->cfg = *cfg;
    vmt_snapshot_options so = { .quiet = r->cfg.quiet };
    char inner[512] = "";
    vmt_status st = vmt_snapshot_open(path, &so, &r->snap, inner, sizeof inner);
    if (st)
        return fail(r, why, why_len, st, "%s", inner);
    if (vmt_snapshot_vcpu_count(r->snap) != 1) {
        snprintf(inner, sizeof inner, "resume: the snapshot has %u vCPUs; the emulator runs one",
                 vmt_snapshot_vcpu_count(r->snap));
        return fail(r, why, why_len, VMT_E_NOTSUP, "%s", inner);
    }
    carried_notes(r);
    size_t nfix = vmt_snapshot_fixup_count(r->snap);
    list_fixups(r, 0); /* a vmtrap snapshot carries the reconstructions of its source */
    nfix = vmt_snapshot_fixup_count(r->snap);
    if (r->cfg.sidecar && (st = vmt_snapshot_apply_sidecar_file(r->snap, r->cfg.sidecar)))
        return fail(r, why, why_len, st, "%s", vmt_snapshot_error(r->snap));
    list_fixups(r, nfix);
    nfix = vmt_snapshot_fixup_count(r->snap);

    vmt_snapshot_clock(r->snap, &r->clock);
    resume_linux lx;
    memset(&lx, 0, sizeof lx);
    bool from_core = vmt_snapshot_kind_of(r->snap) == VMT_SNAPSHOT_QEMU_CORE;
    if (from_core && (st = resume_linux_reconstruct(r, &lx, inner, sizeof inner)))
        return fail(r, why, why_len, st, "%s", inner);
    list_fixups(r, nfix);
    nfix = vmt_snapshot_fixup_count(r->snap);
    if (!r->clock.tsc_hz && lx.tsc_hz)
        r->clock.tsc_hz = lx.tsc_hz;
    if (!r->clock.tsc_hz) {
        r->clock.tsc_hz = DEFAULT_TSC_HZ;
        resume_note(r, "clock tsc_hz=%" PRIu64 ": unknown, QEMU TCG's usual TSC rate assumed", r->clock.tsc_hz);
    }
    if (!r->clock.insns_per_sec)
        r->clock.insns_per_sec = r->cfg.insns_per_sec ? r->cfg.insns_per_sec : DEFAULT_IPS;
    const vmt_vcpu_state *v0 = vmt_snapshot_vcpu(r->snap, 0);
    if (lx.tsc && !(v0->known & VMT_VS_TSC))
        (void)vmt_snapshot_fixup_set(r->snap, 0, "tsc", lx.tsc, lx.how_tsc);
    if ((st = vmt_snapshot_reconstruct(r->snap, NULL, NULL)))
        return fail(r, why, why_len, st, "%s", vmt_snapshot_error(r->snap));
    reconstruct_halted(r);
    list_fixups(r, nfix);
    v0 = vmt_snapshot_vcpu(r->snap, 0);

    /* The platform. */
    vmt_platform_config pc;
    memset(&pc, 0, sizeof pc);
    pc.vcpus = 1;
    pc.tsc_hz = r->clock.tsc_hz;
    pc.start_ns = r->clock.start_ns;
    pc.tsc_offset = v0->tsc - (uint64_t)((unsigned __int128)r->clock.start_ns * r->clock.tsc_hz / 1000000000u);
    pc.serial = r->cfg.serial;
    pc.serial_ctx = r->cfg.serial_ctx;
    if ((st = vmt_platform_create(&pc, &r->plat, inner, sizeof inner)))
        return fail(r, why, why_len, st, "resume: %s", inner);
    size_t blob_len = 0;
    const void *blob = vmt_snapshot_platform(r->snap, &blob_len);
    if (blob) {
        if ((st = vmt_platform_load(r->plat, blob, blob_len)))
            return fail(r, why, why_len, st, "resume: the snapshot's device state: %s", vmt_platform_error(r->plat));
    } else if ((st = resume_platform_reconstruct(r, &lx, inner, sizeof inner))) {
        return fail(r, why, why_len, st, "resume: %s", inner);
    }
    if ((st = vmt_platform_save(r->plat, &r->platform0, &r->platform0_len)))
        return fail(r, why, why_len, st, "resume: saving the starting device state: %s", vmt_platform_error(r->plat));

    /* The CPU. */
    vmt_machine_config mc;
    memset(&mc, 0, sizeof mc);
    vmt_snapshot_machine_config(r->snap, &mc);
    mc.clock = r->clock;
    mc.bus = vmt_platform_bus(r->plat);
    mc.serial = r->cfg.serial;
    mc.serial_ctx = r->cfg.serial_ctx;
    /* a CPU with what the snapshot's CR4 uses (SMEP, SMAP, LA57, PCIDE ...) */
    vmt_emu_options eo;
    memset(&eo, 0, sizeof eo);
    if ((st = vmt_emu_options_for_cr4(v0->regs.cr4, &eo, inner, sizeof inner)))
        return fail(r, why, why_len, st, "resume: vcpu0: %s", inner);
    if (eo.set_cpu_model || eo.offer_pcid)
        resume_note(r, "vcpu0 cr4=0x%" PRIx64 ": CPU model %s%s (qemu64 lacks what it uses)", v0->regs.cr4,
                    vmt_emu_cpu_model_name(eo.cpu_model), eo.offer_pcid ? " + PCID/INVPCID" : "");
    if ((st = vmt_emu_driver_create_ex(&mc, &eo, &r->drv, inner, sizeof inner)))
        return fail(r, why, why_len, st, "resume: %s", inner);
    if ((st = vmt_snapshot_apply(r->snap, r->drv)))
        return fail(r, why, why_len, st, "resume: %s", vmt_snapshot_error(r->snap));
    vmt_snapshot_set_platform_reset(r->snap, platform_reset, r);
    *out = r;
    return VMT_OK;
}

uint64_t vmt_resume_now_ns(const vmt_resume *r)
{
    uint64_t ns = 0;
    if (vmt_emu_clock_get(r->drv, &ns) != VMT_OK)
        return vmt_platform_now(r->plat);
    return ns;
}

vmt_status vmt_resume_run(vmt_resume *r, uint64_t instructions, double seconds, vmt_stop_info *stop,
                          uint64_t *retired)
{
    memset(stop, 0, sizeof *stop);
    vmt_driver_stats s0, s1;
    vmt_status st = vmt_drv_stats(r->drv, &s0);
    if (!st)
        st = vmt_drv_set_limit(r->drv, seconds, instructions);
    if (st)
        return vmt_errbuf_set(&r->err, st, "resume run: %s", vmt_driver_error(r->drv));
    for (;;) {
        vmt_event ev;
        st = vmt_drv_wait_event(r->drv, -1, &ev);
        if (st == VMT_E_TIMEOUT)
            continue;
        if (st)
            return vmt_errbuf_set(&r->err, st, "resume run: %s", vmt_driver_error(r->drv));
        if (ev.kind == VMT_EVENT_STOPPED) {
            *stop = ev.u.stop;
            break;
        }
        vmt_response resp = vmt_response_continue();
        if ((st = vmt_drv_respond(r->drv, &ev, &resp)))
            return vmt_errbuf_set(&r->err, st, "resume run: answering a %s event: %s", vmt_event_kind_name(ev.kind),
                                  vmt_driver_error(r->drv));
    }
    if (retired && !vmt_drv_stats(r->drv, &s1))
        *retired += s1.instructions - s0.instructions;
    return VMT_OK;
}

vmt_status vmt_resume_save(vmt_resume *r, const char *path)
{
    uint8_t *blob = NULL;
    size_t len = 0;
    vmt_status st = vmt_platform_save(r->plat, &blob, &len);
    if (st)
        return vmt_errbuf_set(&r->err, st, "resume save: device state: %s", vmt_platform_error(r->plat));
    vmt_snapshot_save_options o;
    memset(&o, 0, sizeof o);
    o.ram = vmt_snapshot_ram_ranges(r->snap, &o.ram_count);
    o.platform = blob;
    o.platform_len = len;
    o.clock = r->clock;
    o.clock.start_ns = vmt_resume_now_ns(r);
    /* The reconstructions travel in the metadata: the saved state holds
     * derived values, and whoever resumes the file is told which
     * (vmt_resume_open lists them again as "carried: ..."). */
    json_object *meta = json_object_new_object();
    json_object *list = json_object_new_array();
    json_object_object_add(meta, "saved_by", json_object_new_string("vmt_resume_save"));
    json_object_object_add(meta, "guest_ns", json_object_new_int64((int64_t)o.clock.start_ns));
    for (size_t i = 0; i < r->nnotes; i++) {
        /* a note carried from the file this run resumed is stored as the
         * original reconstruction, so a file saved from a saved file lists
         * "carried: X", never "carried: carried: X" */
        const char *n = r->notes[i];
        if (strncmp(n, "carried: ", 9) == 0)
            n += 9;
        json_object_array_add(list, json_object_new_string(n));
    }
    json_object_object_add(meta, "reconstructions", list);
    o.metadata_json = json_object_to_json_string_ext(meta, JSON_C_TO_STRING_PLAIN);
    char why[512] = "";
    st = o.metadata_json ? vmt_snapshot_save_driver(r->drv, &o, path, why, sizeof why) : VMT_E_NOMEM;
    json_object_put(meta);
    free(blob);
    if (st)
        return vmt_errbuf_set(&r->err, st, "resume save: %s", why);
    return VMT_OK;
}

vmt_status vmt_resume_restore(vmt_resume *r, vmt_snapshot_run_stats *stats)
{
    vmt_status st = vmt_emu_clock_set(r->drv, r->clock.start_ns);
    if (st)
        return vmt_errbuf_set(&r->err, st, "resume restore: clock: %s", vmt_driver_error(r->drv));
    if ((st = vmt_snapshot_restore(r->snap, r->drv, stats)))
        return vmt_errbuf_set(&r->err, st, "resume restore: %s", vmt_snapshot_error(r->snap));
    return VMT_OK;
}

vmt_status vmt_resume_check(vmt_resume *r)
{
    char why[256];
    if (!r->snap || !r->plat || !r->drv || !r->platform0)
        return vmt_errbuf_set(&r->err, VMT_E_INTERNAL, "resume: a part is missing");
    if (r->nnotes > r->notecap || r->notes_oom)
        return vmt_errbuf_set(&r->err, VMT_E_INTERNAL, "resume: the list of reconstructions is incomplete");
    if (vmt_snapshot_check(r->snap, why, sizeof why))
        return vmt_errbuf_set(&r->err, VMT_E_INTERNAL, "resume: snapshot: %s", why);
    if (vmt_platform_check(r->plat))
        return vmt_errbuf_set(&r->err, VMT_E_INTERNAL, "resume: platform: %s", vmt_platform_error(r->plat));
    if (vmt_emu_check(r->drv))
        return vmt_errbuf_set(&r->err, VMT_E_INTERNAL, "resume: driver: %s", vmt_driver_error(r->drv));
    return VMT_OK;
}
