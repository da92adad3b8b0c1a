/*
 * drivers/qemu/qemu_driver.c — the qemu driver: creation (attach or launch),
 * capabilities, physical memory, breakpoint and watchpoint tables, info,
 * dump and the invariant checker. See include/vmtrap/qemu.h.
 *
 * Physical memory: Qqemu.PhyMemMode:1 is set once at attach; 'm'/'M' then
 * address guest-physical memory. Reads are split so a reply fits the stub's
 * PacketSize; a write is split the same way (a failing chunk leaves the
 * earlier chunks written: QEMU has no transaction; range errors are found
 * before anything is written).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "drivers/qemu/qemu_internal.h"

uint64_t qemu_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

vmt_status qemu_gdb_fail(vmt_driver *d, vmt_status st, const char *what)
{
    qemu_drv *q = qemu_of(d);
    char ex[160] = "";
    if (q->gdb.dead) {
        q->gone = true;
        qemu_launch_exit_text(q, ex, sizeof ex);
    }
    return vmt_driver_fail(d, st, "%s: %s%s%s", what, gdb_client_error(&q->gdb), ex[0] ? "; " : "", ex);
}

vmt_status qemu_qmp_fail(vmt_driver *d, vmt_status st, const char *what)
{
    qemu_drv *q = qemu_of(d);
    return vmt_driver_fail(d, st, "%s: %s", what, qmp_error(&q->qmp));
}

static vmt_status check_gone(vmt_driver *d)
{
    qemu_drv *q = qemu_of(d);
    if (q->gone)
        return vmt_driver_fail(d, VMT_E_STOPPED, "QEMU is gone (%s)", gdb_client_error(&q->gdb));
    return VMT_OK;
}

static vmt_status range_check(vmt_driver *d, vmt_pa pa, size_t len)
{
    qemu_drv *q = qemu_of(d);
    if (pa > q->ram_bytes || len > q->ram_bytes - pa)
        return vmt_driver_fail(d, VMT_E_RANGE, "physical range 0x%llx+0x%zx is outside guest RAM (0x%llx bytes)",
                               (unsigned long long)pa, len, (unsigned long long)q->ram_bytes);
    return VMT_OK;
}

static size_t packet_size(const qemu_drv *q)
{
    return q->gdb.packet_size >= 256 ? q->gdb.packet_size : 256;
}

static vmt_status qemu_read_phys(vmt_driver *d, vmt_pa pa, void *buf, size_t len)
{
    qemu_drv *q = qemu_of(d);
    vmt_status st = check_gone(d);
    if (st || (st = range_check(d, pa, len)))
        return st;
    size_t chunk = (packet_size(q) - 8) / 2;
    uint8_t *out = buf;
    while (len) {
        size_t n = len < chunk ? len : chunk;
        char cmd[48];
        snprintf(cmd, sizeof cmd, "m%llx,%zx", (unsigned long long)pa, n);
        const char *r;
        size_t rn;
        st = gdb_exchange(&q->gdb, cmd, &r, &rn);
        if (st)
            return qemu_gdb_fail(d, st, "reading physical memory");
        int code;
        if (gdb_is_error(r, rn, &code))
            return vmt_driver_fail(d, VMT_E_DRIVER, "QEMU could not read physical 0x%llx+0x%zx: %.16s",
                                   (unsigned long long)pa, n, r);
        if (gdb_hex_to_bytes(r, rn, out, n))
            return vmt_driver_fail(d, VMT_E_FORMAT, "QEMU's reply to '%s' is not %zu bytes of hex (%zu digits)", cmd,
                                   n, rn);
        out += n;
        pa += n;
        len -= n;
    }
    return VMT_OK;
}

static vmt_status qemu_write_phys(vmt_driver *d, vmt_pa pa, const void *buf, size_t len)
{
    qemu_drv *q = qemu_of(d);
    vmt_status st = check_gone(d);
    if (st || (st = range_check(d, pa, len)))
        return st;
    size_t chunk = (packet_size(q) - 48) / 2;
    if (q->scratch_cap < 2 * chunk + 64) {
        char *p = realloc(q->scratch, 2 * chunk + 64);
        if (!p)
            return vmt_driver_fail(d, VMT_E_NOMEM, "out of memory");
        q->scratch = p;
        q->scratch_cap = 2 * chunk + 64;
    }
    const uint8_t *in = buf;
    while (len) {
        size_t n = len < chunk ? len : chunk;
        int h = snprintf(q->scratch, q->scratch_cap, "M%llx,%zx:", (unsigned long long)pa, n);
        gdb_bytes_to_hex(in, n, q->scratch + h);
        st = gdb_exchange_ok(&q->gdb, q->scratch);
        if (st)
            return qemu_gdb_fail(d, st, "writing physical memory");
        in += n;
        pa += n;
        len -= n;
    }
    return VMT_OK;
}

/* ---- breakpoints ---- */

qemu_bp *qemu_bp_find(qemu_drv *q, vmt_va va)
{
    for (size_t i = 0; i < q->nbps; i++)
        if (q->bps[i].va == va)
            return &q->bps[i];
    return NULL;
}

/* Insert or remove the gdbstub breakpoint at va (not the table). */
vmt_status qemu_bp_insert(vmt_driver *d, vmt_va va, int insert)
{
    qemu_drv *q = qemu_of(d);
    char cmd[48];
    snprintf(cmd, sizeof cmd, "%c%c,%llx,1", insert ? 'Z' : 'z', q->kvm == 1 ? '1' : '0', (unsigned long long)va);
    vmt_status st = gdb_exchange_ok(&q->gdb, cmd);
    if (st)
        return qemu_gdb_fail(d, st, insert ? "setting a breakpoint" : "removing a breakpoint");
    return VMT_OK;
}

static vmt_status bp_add(vmt_driver *d, vmt_va va, uint8_t index)
{
    qemu_drv *q = qemu_of(d);
    if (qemu_bp_find(q, va))
        return vmt_driver_fail(d, VMT_E_EXISTS, "a breakpoint at 0x%llx is already set", (unsigned long long)va);
    if (q->nbps == q->capbps) {
        size_t cap = q->capbps ? 2 * q->capbps : 16;
        qemu_bp *p = realloc(q->bps, cap * sizeof *p);
        if (!p)
            return vmt_driver_fail(d, VMT_E_NOMEM, "out of memory");
        q->bps = p;
        q->capbps = cap;
    }
    vmt_status st = qemu_bp_insert(d, va, 1);
    if (st)
        return st;
    memset(&q->bps[q->nbps], 0, sizeof q->bps[0]);
    q->bps[q->nbps].va = va;
    q->bps[q->nbps].index = index;
    q->nbps++;
    return VMT_OK;
}

static vmt_status bp_del(vmt_driver *d, size_t i)
{
    qemu_drv *q = qemu_of(d);
    vmt_status st = qemu_bp_insert(d, q->bps[i].va, 0);
    if (st)
        return st;
    q->bps[i] = q->bps[--q->nbps];
    return VMT_OK;
}

static vmt_status qemu_hw_breakpoint(vmt_driver *d, vmt_vcpu vcpu, unsigned index, vmt_va va, int enable)
{
    qemu_drv *q = qemu_of(d);
    (void)vcpu; /* one vCPU; VMT_VCPU_ALL and 0 mean the same */
    vmt_status st = check_gone(d);
    if (st)
        return st;
    for (size_t i = 0; i < q->nbps; i++) {
        if (q->bps[i].index != index)
            continue;
        if (enable && q->bps[i].va == va)
            return VMT_OK;
        if ((st = bp_del(d, i)))
            return st;
        break;
    }
    if (!enable)
        return VMT_OK;
    const qemu_bp *other = qemu_bp_find(q, va);
    if (other)
        return vmt_driver_fail(d, VMT_E_CONFLICT, "0x%llx already has a breakpoint (index %u)",
                               (unsigned long long)va, other->index);
    return bp_add(d, va, (uint8_t)index);
}

vmt_status vmt_qemu_breakpoint(vmt_driver *d, vmt_va va, int enable)
{
    if (!vmt_qemu_is_qemu(d))
        return VMT_E_INVAL;
    qemu_drv *q = qemu_of(d);
    vmt_status st = check_gone(d);
    if (st)
        return st;
    if (q->kvm == 1)
        return vmt_driver_fail(d, VMT_E_NOTSUP, "QEMU runs with KVM: only the 4 debug-register breakpoints "
                               "(hw_breakpoint) are invisible; more would write INT3 into guest memory");
    if (enable)
        return bp_add(d, va, VMT_QEMU_BP_INDEX);
    for (size_t i = 0; i < q->nbps; i++)
        if (q->bps[i].va == va && q->bps[i].index == VMT_QEMU_BP_INDEX)
            return bp_del(d, i);
    return vmt_driver_fail(d, VMT_E_NOTFOUND, "no extra breakpoint at 0x%llx", (unsigned long long)va);
}

/* ---- info, dump, check ---- */

int vmt_qemu_is_qemu(const vmt_driver *d)
{
    return d && strcmp(vmt_driver_name(d), "qemu") == 0;
}

vmt_status vmt_qemu_get_info(vmt_driver *d, vmt_qemu_info *out)
{
    if (!vmt_qemu_is_qemu(d) || !out)
        return VMT_E_INVAL;
    qemu_drv *q = qemu_of(d);
    memset(out, 0, sizeof *out);
    out->launched = q->launched;
    out->pid = q->launched ? (int)q->pid : 0;
    out->kvm = q->kvm;
    out->icount = q->icount;
    out->ram_bytes = q->ram_bytes;
    out->breakpoints = (unsigned)q->nbps;
    out->watchpoints = (unsigned)q->nwatches;
    out->packets = q->gdb.sent;
    out->nop_skips = q->nop_skips;
    out->map_base = q->map_base;
    out->protected_frames = q->nframes;
    out->stale_watch_hits = q->stale_watch_hits;
    out->watch_words = q->watch_words;
    if (q->have_qmp && !q->qmp.dead) {
        struct json_object *r = NULL, *v, *qv;
        if (qmp_execute(&q->qmp, "query-version", NULL, 0, &r) == VMT_OK && json_object_object_get_ex(r, "qemu", &qv)) {
            int maj = 0, min = 0, mic = 0;
            if (json_object_object_get_ex(qv, "major", &v))
                maj = json_object_get_int(v);
            if (json_object_object_get_ex(qv, "minor", &v))
                min = json_object_get_int(v);
            if (json_object_object_get_ex(qv, "micro", &v))
                mic = json_object_get_int(v);
            snprintf(out->qemu_version, sizeof out->qemu_version, "%d.%d.%d", maj, min, mic);
        }
        json_object_put(r);
    }
    qemu_regs_missing(q, out->regs_missing, sizeof out->regs_missing);
    return VMT_OK;
}

vmt_status vmt_qemu_dump(vmt_driver *d, const char *path)
{
    if (!vmt_qemu_is_qemu(d) || !path || !*path)
        return VMT_E_INVAL;
    qemu_drv *q = qemu_of(d);
    if (!q->have_qmp)
        return vmt_driver_fail(d, VMT_E_NOTSUP, "dump needs QMP (attach with a QMP socket too)");
    if (strchr(path, ',') || path[0] != '/')
        return vmt_driver_fail(d, VMT_E_INVAL, "dump path must be absolute and contain no ','");
    struct json_object *args = json_object_new_object();
    char proto[4200];
    snprintf(proto, sizeof proto, "file:%s", path);
    json_object_object_add(args, "paging", json_object_new_boolean(0));
    json_object_object_add(args, "protocol", json_object_new_string(proto));
    vmt_status st = qmp_execute(&q->qmp, "dump-guest-memory", args, 600000, NULL);
    json_object_put(args);
    return st ? qemu_qmp_fail(d, st, "dump-guest-memory") : VMT_OK;
}

/* A register of the target description as a number (0 when absent or wider than 64 bits). */
static uint64_t raw_reg(const qemu_drv *q, const char *name)
{
    const gdb_reg_desc *r = gdb_tdesc_find(&q->td, name);
    uint64_t v = 0;
    if (r && r->bits <= 64 && r->offset + r->bits / 8 <= q->td.g_bytes)
        memcpy(&v, q->gbuf + r->offset, r->bits / 8);
    return v;
}

vmt_status vmt_qemu_write_state(vmt_driver *d, const char *path)
{
    if (!vmt_qemu_is_qemu(d) || !path)
        return VMT_E_INVAL;
    qemu_drv *q = qemu_of(d);
    q->regs_valid = false; /* gbuf must hold this stop's registers */
    vmt_status st = qemu_fetch_regs(d);
    if (st)
        return st;
    FILE *f = fopen(path, "w");
    if (!f)
        return vmt_driver_fail(d, VMT_E_IO, "cannot write %s: %s", path, strerror(errno));
    fprintf(f, "{\n  \"vcpus\": [\n    {\n      \"efer\": \"0x%llx\",\n      \"cr8\": %llu,\n"
               "      \"kernel_gs_base\": \"0x%llx\"",
            (unsigned long long)q->regs.efer, (unsigned long long)q->regs.cr8,
            (unsigned long long)q->regs.kernel_gs_base);
    if (gdb_tdesc_find(&q->td, "fctrl") && gdb_tdesc_find(&q->td, "mxcsr"))
        fprintf(f, ",\n      \"fcw\": \"0x%llx\",\n      \"mxcsr\": \"0x%llx\"",
                (unsigned long long)(raw_reg(q, "fctrl") & 0xffff), (unsigned long long)(raw_reg(q, "mxcsr") & 0xffffffff));
    fprintf(f, "\n    }\n  ]\n}\n");
    if (fclose(f) != 0)
        return vmt_driver_fail(d, VMT_E_IO, "writing %s failed", path);
    return VMT_OK;
}

vmt_status vmt_qemu_check(vmt_driver *d)
{
    if (!vmt_qemu_is_qemu(d))
        return VMT_E_INVAL;
    qemu_drv *q = qemu_of(d);
    char why[200];
    if (gdb_client_check(&q->gdb, why, sizeof why))
        return vmt_driver_fail(d, VMT_E_INTERNAL, "%s", why);
    unsigned slots[QEMU_SLOTS] = { 0 };
    for (size_t i = 0; i < q->nbps; i++) {
        if (q->bps[i].index != VMT_QEMU_BP_INDEX && q->bps[i].index >= QEMU_SLOTS)
            return vmt_driver_fail(d, VMT_E_INTERNAL, "breakpoint %zu has index %u", i, q->bps[i].index);
        if (q->bps[i].index < QEMU_SLOTS && slots[q->bps[i].index]++)
            return vmt_driver_fail(d, VMT_E_INTERNAL, "slot %u is used twice", q->bps[i].index);
        for (size_t j = i + 1; j < q->nbps; j++)
            if (q->bps[j].va == q->bps[i].va)
                return vmt_driver_fail(d, VMT_E_INTERNAL, "two breakpoints at 0x%llx", (unsigned long long)q->bps[i].va);
    }
    if (q->nbps > q->capbps || q->nwatches > q->capwatches)
        return vmt_driver_fail(d, VMT_E_INTERNAL, "table counts exceed their capacity");
    if (q->event_pending && q->last.seq != q->seq)
        return vmt_driver_fail(d, VMT_E_INTERNAL, "pending event seq %llu is not the last (%llu)",
                               (unsigned long long)q->last.seq, (unsigned long long)q->seq);
    unsigned frames = 0;
    for (size_t i = 0; i < q->nwatches; i++) {
        const qemu_watch *w = &q->watches[i];
        if (!w->frame)
            continue;
        frames++;
        if (!q->map_base || w->len != 4096 || w->va < q->map_base || ((w->va - q->map_base) & 0xfff) || !w->shadow)
            return vmt_driver_fail(d, VMT_E_INTERNAL, "frame watch at 0x%llx is not a shadowed page of the map",
                                   (unsigned long long)w->va);
        for (size_t j = i + 1; j < q->nwatches; j++)
            if (q->watches[j].frame && q->watches[j].va == w->va)
                return vmt_driver_fail(d, VMT_E_INTERNAL, "frame 0x%llx is watched twice", (unsigned long long)w->va);
    }
    if (frames != q->nframes)
        return vmt_driver_fail(d, VMT_E_INTERNAL, "%u frame watches, counted %u", frames, q->nframes);
    if (q->qhead + q->qlen > QEMU_QUEUE_MAX || (q->qlen && !q->queue))
        return vmt_driver_fail(d, VMT_E_INTERNAL, "watch-hit queue %zu+%zu is out of bounds", q->qhead, q->qlen);
    if (q->ram_bytes == 0 || q->ram_bytes % 4096)
        return vmt_driver_fail(d, VMT_E_INTERNAL, "RAM size 0x%llx is not whole pages", (unsigned long long)q->ram_bytes);
    return VMT_OK;
}

static vmt_status qemu_stats(vmt_driver *d, vmt_driver_stats *out)
{
    *out = qemu_of(d)->stats;
    return VMT_OK;
}

static void qemu_destroy(vmt_driver *d)
{
    qemu_drv *q = qemu_of(d);
    if (!q)
        return;
    if (q->have_gdb && !q->gdb.dead && !q->gone) {
        q->gdb.timeout_ms = q->gdb.timeout_ms < 2000 ? q->gdb.timeout_ms : 2000;
        for (size_t i = 0; i < q->nbps && !q->gdb.dead; i++)
            (void)qemu_bp_insert(d, q->bps[i].va, 0);
        for (size_t i = 0; i < q->nwatches && !q->gdb.dead; i++) {
            char cmd[64];
            snprintf(cmd, sizeof cmd, "z2,%llx,%llx", (unsigned long long)q->watches[i].va,
                     (unsigned long long)q->watches[i].len);
            (void)gdb_exchange_ok(&q->gdb, cmd);
        }
        if (!q->launched && !q->gdb.dead) {
            /* Detach (with the process id: we negotiated multiprocess, and
             * QEMU refuses a bare "D" then). QEMU lets the VM run; a VM that
             * was not running when we attached is stopped again. */
            (void)gdb_exchange_ok(&q->gdb, "Qqemu.PhyMemMode:0");
            if (gdb_exchange_ok(&q->gdb, "D;1") != VMT_OK && !q->gdb.dead)
                (void)gdb_exchange_ok(&q->gdb, "D");
            if (q->was_running == 0 && q->have_qmp && !q->qmp.dead)
                (void)qmp_execute(&q->qmp, "stop", NULL, 2000, NULL);
        }
    }
    if (q->launched)
        qemu_launch_stop(q);
    if (q->have_gdb)
        gdb_client_fini(&q->gdb);
    if (q->have_qmp)
        qmp_close(&q->qmp);
    free(q->bps);
    for (size_t i = 0; i < q->nwatches; i++)
        qemu_watch_free(&q->watches[i]);
    free(q->watches);
    free(q->queue);
    free(q->scratch);
    free(q->gbuf);
    qemu_nop_fini(q);
    free(q);
}

static const vmt_driver_ops qemu_ops = {
    .name = "qemu",
    .destroy = qemu_destroy,
    .read_phys = qemu_read_phys,
    .write_phys = qemu_write_phys,
    .get_regs = qemu_get_regs,
    .set_regs = qemu_set_regs,
    .pause = qemu_pause,
    .resume = qemu_resume,
    .view_set_access = qemu_view_set_access,
    .view_get_access = qemu_view_get_access,
    .hw_breakpoint = qemu_hw_breakpoint,
    .wait_event = qemu_wait_event,
    .respond = qemu_respond,
    .stats = qemu_stats,
};

/* ---- attach ---- */

static vmt_status fetch_tdesc(qemu_drv *q, char *why, size_t why_len)
{
    char names[1 + GDB_MAX_INCLUDES][64];
    unsigned nnames = 1, done = 0;
    snprintf(names[0], sizeof names[0], "target.xml");
    size_t cap = 1 << 16, len;
    char *doc = malloc(cap);
    if (!doc)
        return VMT_E_NOMEM;
    vmt_status st = VMT_OK;
    for (; done < nnames && !st; done++) {
        len = 0;
        for (;;) {
            char cmd[128];
            snprintf(cmd, sizeof cmd, "qXfer:features:read:%s:%zx,%zx", names[done], len, packet_size(q) - 8);
            const char *r;
            size_t n;
            st = gdb_exchange(&q->gdb, cmd, &r, &n);
            if (st) {
                vmt_why(why, why_len, "reading the target description: %s", gdb_client_error(&q->gdb));
                break;
            }
            if (n == 0 || (r[0] != 'm' && r[0] != 'l')) {
                vmt_why(why, why_len, "the gdbstub did not send %s (reply '%.16s')", names[done], r);
                st = VMT_E_NOTSUP;
                break;
            }
            if (len + n - 1 > (size_t)GDB_MAX_PAYLOAD * 4) {
                vmt_why(why, why_len, "%s is larger than %u bytes", names[done], GDB_MAX_PAYLOAD * 4);
                st = VMT_E_FORMAT;
                break;
            }
            if (len + n > cap) {
                size_t nc = 2 * (len + n);
                char *p = realloc(doc, nc);
                if (!p) {
                    st = VMT_E_NOMEM;
                    break;
                }
                doc = p;
                cap = nc;
            }
            memcpy(doc + len, r + 1, n - 1);
            len += n - 1;
            if (r[0] == 'l' || n == 1)
                break;
        }
        if (st)
            break;
        unsigned before = q->td.nincludes;
        st = gdb_tdesc_parse(&q->td, doc, len, why, why_len);
        for (unsigned i = before; !st && i < q->td.nincludes; i++) {
            if (nnames >= 1 + GDB_MAX_INCLUDES) {
                vmt_why(why, why_len, "the target description includes too many files");
                st = VMT_E_FORMAT;
                break;
            }
            snprintf(names[nnames++], sizeof names[0], "%s", q->td.includes[i]);
        }
    }
    free(doc);
    if (!st)
        st = gdb_tdesc_layout(&q->td, why, why_len);
    return st;
}

static vmt_status ram_from_qmp(qemu_drv *q, char *why, size_t why_len)
{
    struct json_object *r = NULL, *v;
    vmt_status st = qmp_execute(&q->qmp, "query-memory-size-summary", NULL, 0, &r);
    if (st) {
        vmt_why(why, why_len, "%s", qmp_error(&q->qmp));
        return st;
    }
    int64_t base = json_object_object_get_ex(r, "base-memory", &v) ? json_object_get_int64(v) : 0;
    json_object_put(r);
    if (base <= 0 || base % 4096) {
        vmt_why(why, why_len, "qmp: query-memory-size-summary gave no usable base-memory");
        return VMT_E_FORMAT;
    }
    /* Below 4 GiB the pc and q35 machines place RAM contiguously from 0 up to
     * 2 GiB at least; above 0xb0000000 they split it around the PCI hole
     * (machine-dependent), so only the first 2 GiB are exposed then. */
    q->ram_bytes = (uint64_t)base < 0xb0000000ull ? (uint64_t)base : 0x80000000ull;
    r = NULL;
    if (qmp_execute(&q->qmp, "query-kvm", NULL, 0, &r) == VMT_OK && json_object_object_get_ex(r, "enabled", &v))
        q->kvm = json_object_get_boolean(v) ? 1 : 0;
    json_object_put(r);
    return VMT_OK;
}

static vmt_status attach(qemu_drv *q, const char *gdb_path, const char *qmp_path, const vmt_qemu_config *cfg,
                         char *why, size_t why_len)
{
    int timeout = cfg->timeout_ms > 0 ? cfg->timeout_ms : 5000;
    vmt_status st;
    q->kvm = -1;
    q->was_running = -1;
    if (qmp_path) {
        st = qmp_open(&q->qmp, qmp_path, timeout);
        q->have_qmp = true;
        if (st) {
            vmt_why(why, why_len, "qemu: %s", qmp_error(&q->qmp));
            return st;
        }
        /* An incoming migration must finish before the gdbstub can stop the VM. */
        for (int i = 0;; i++) {
            bool running;
            char status[32];
            if ((st = qmp_status(&q->qmp, &running, status, sizeof status))) {
                vmt_why(why, why_len, "qemu: %s", qmp_error(&q->qmp));
                return st;
            }
            if (strcmp(status, "inmigrate") != 0) {
                q->was_running = running;
                break;
            }
            if (i * 20 > (cfg->start_timeout_ms > 0 ? cfg->start_timeout_ms : 30000)) {
                vmt_why(why, why_len, "qemu: the incoming migration did not finish in time");
                return VMT_E_TIMEOUT;
            }
            struct timespec ts = { 0, 20 * 1000 * 1000 };
            nanosleep(&ts, NULL);
        }
        if ((st = ram_from_qmp(q, why, why_len)))
            return st;
    } else {
        if (!cfg->ram_bytes || cfg->ram_bytes % 4096) {
            vmt_why(why, why_len, "qemu: without a QMP socket the RAM size must be given (whole pages)");
            return VMT_E_INVAL;
        }
        q->ram_bytes = cfg->ram_bytes;
    }
    if (cfg->ram_bytes && cfg->ram_bytes < q->ram_bytes)
        q->ram_bytes = cfg->ram_bytes;
    int fd;
    char w[200];
    if ((st = gdb_connect_unix(gdb_path, timeout, &fd, w, sizeof w))) {
        vmt_why(why, why_len, "qemu: gdbstub: %s", w);
        return st;
    }
    if ((st = gdb_client_init(&q->gdb, fd, timeout))) {
        vmt_why(why, why_len, "qemu: out of memory");
        return st;
    }
    q->have_gdb = true;
    const char *r;
    size_t n;
    if ((st = gdb_exchange(&q->gdb, "qSupported:multiprocess+;swbreak+;hwbreak+;vContSupported+", &r, &n))) {
        vmt_why(why, why_len, "qemu: gdbstub handshake: %s", gdb_client_error(&q->gdb));
        return st;
    }
    const char *ps = strstr(r, "PacketSize=");
    uint64_t psz = 0;
    if (ps) {
        ps += 11;
        size_t l = strcspn(ps, ";");
        if (gdb_parse_u64(ps, l, &psz) || psz < 256)
            psz = 0;
    }
    q->gdb.packet_size = psz ? (psz > GDB_MAX_PAYLOAD ? GDB_MAX_PAYLOAD : (size_t)psz) : 1024;
    if ((st = gdb_exchange(&q->gdb, "?", &r, &n))) {
        vmt_why(why, why_len, "qemu: gdbstub: %s", gdb_client_error(&q->gdb));
        return st;
    }
    gdb_stop stop;
    if (gdb_parse_stop(r, n, &stop, w, sizeof w) || (stop.type != 'T' && stop.type != 'S')) {
        vmt_why(why, why_len, "qemu: the gdbstub's answer to '?' is not a stop reply: %.32s", r);
        return VMT_E_FORMAT;
    }
    if ((st = fetch_tdesc(q, w, sizeof w))) {
        vmt_why(why, why_len, "qemu: %s", w);
        return st;
    }
    if ((st = gdb_exchange_ok(&q->gdb, "Qqemu.PhyMemMode:1"))) {
        vmt_why(why, why_len, "qemu: the gdbstub has no physical-memory mode (Qqemu.PhyMemMode, QEMU >= 4.1): %s",
                gdb_client_error(&q->gdb));
        return st;
    }
    if ((st = gdb_exchange_ok(&q->gdb, "Qqemu.sstep=7"))) {
        vmt_why(why, why_len, "qemu: cannot make single steps run with interrupts and timers off: %s",
                gdb_client_error(&q->gdb));
        return st;
    }
    return VMT_OK;
}

vmt_status vmt_qemu_driver_create(const vmt_qemu_config *cfg, vmt_driver **out, char *why, size_t why_len)
{
    if (!cfg || !out) {
        vmt_why(why, why_len, "qemu: NULL argument");
        return VMT_E_INVAL;
    }
    *out = NULL;
    if (!cfg->qemu_argv && !cfg->gdb_socket) {
        vmt_why(why, why_len, "qemu: give a gdbstub socket (attach) or QEMU's command line (launch)");
        return VMT_E_INVAL;
    }
    qemu_drv *q = calloc(1, sizeof *q);
    if (!q) {
        vmt_why(why, why_len, "qemu: out of memory");
        return VMT_E_NOMEM;
    }
    q->qmp.fd = -1;
    q->gdb.fd = -1;
    vmt_status st;
    char gpath[160], qpath[160];
    const char *gp = cfg->gdb_socket, *qp = cfg->qmp_socket;
    if (cfg->qemu_argv) {
        if ((st = qemu_launch(q, cfg, why, why_len)))
            goto fail;
        snprintf(gpath, sizeof gpath, "%s/gdb.sock", q->tmpdir);
        snprintf(qpath, sizeof qpath, "%s/qmp.sock", q->tmpdir);
        gp = gpath;
        qp = qpath;
    }
    if ((st = attach(q, gp, qp, cfg, why, why_len))) {
        if (q->launched) {
            char ex[200];
            qemu_launch_exit_text(q, ex, sizeof ex);
            if (ex[0]) {
                size_t l = strlen(why);
                snprintf(why + l, why_len > l ? why_len - l : 0, "; %s", ex);
            }
        }
        goto fail;
    }
    if (cfg->map_base & 0xfff) {
        vmt_why(why, why_len, "qemu: map base 0x%llx is not page-aligned", (unsigned long long)cfg->map_base);
        st = VMT_E_INVAL;
        goto fail;
    }
    q->map_base = cfg->map_base;
    vmt_caps c;
    qemu_caps(q, &c);
    vmt_driver *d;
    if ((st = vmt_driver_create(&qemu_ops, q, &c, &d, why, why_len)))
        goto fail;
    if ((st = qemu_regs_setup(d))) {
        vmt_why(why, why_len, "%s", vmt_driver_error(d));
        vmt_driver_destroy(d);
        return st;
    }
    if (!cfg->no_nop_skip)
        qemu_nop_init(q);
    q->t_stop_ns = qemu_now_ns();
    *out = d;
    return VMT_OK;
fail:
    if (q->launched)
        qemu_launch_stop(q);
    if (q->have_gdb)
        gdb_client_fini(&q->gdb);
    if (q->have_qmp)
        qmp_close(&q->qmp);
    free(q);
    return st;
}
