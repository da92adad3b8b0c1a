/*
 * snapshot/snap_core.c — the vmt_snapshot handle: open (format chosen by
 * the first bytes), accessors, memory reads, machine config, apply into a
 * driver, fixups and the invariant checker.
 *
 * Files are mmap'ed read-only (MAP_PRIVATE): a QEMU core's RAM is read
 * straight from the mapping, so a 4 GiB core costs no 4 GiB copy; the
 * kernel pages it in as a driver copies it. Progress for big files goes to
 * the option's callback or, by default, to stderr (one line, rewritten).
 *
 * Failure atomicity: open builds the handle completely before returning it;
 * every failure path destroys the half-built handle.
 */
#include <stdarg.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zstd.h>

#include "snapshot/snapshot_internal.h"

#define SNAP_PROGRESS_MIN (64ull << 20)

vmt_snapshot *snap_new(vmt_snapshot_kind kind, const vmt_snapshot_options *opts)
{
    vmt_snapshot *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->kind = kind;
    if (opts)
        s->opts = *opts;
    s->metadata = strdup("{}");
    if (!s->metadata) {
        free(s);
        return NULL;
    }
    return s;
}

void vmt_snapshot_destroy(vmt_snapshot *s)
{
    if (!s)
        return;
    if (s->map)
        munmap(s->map, s->map_len);
    if (s->golden)
        munmap(s->golden, s->golden_len);
    if (s->dctx)
        ZSTD_freeDCtx(s->dctx);
    free(s->blocks);
    free(s->ranges);
    free(s->vcpus);
    free(s->efer_set);
    free(s->platform);
    free(s->metadata);
    free(s->fixups);
    free(s->chunks);
    free(s->chunk_done);
    free(s->dirty);
    free(s);
}

void snap_progress(const vmt_snapshot *s, uint64_t done, uint64_t total)
{
    if (s->opts.progress) {
        s->opts.progress(s->opts.progress_ctx, done, total);
        return;
    }
    if (s->opts.quiet || total < SNAP_PROGRESS_MIN)
        return;
    fprintf(stderr, "\rsnapshot: %llu / %llu MiB%s", (unsigned long long)(done >> 20),
            (unsigned long long)(total >> 20), done >= total ? "\n" : "");
}

static vmt_status open_bytes(vmt_snapshot *s, char *why, size_t why_len)
{
    static const char vmts_magic[8] = { 'V', 'M', 'T', 'S', 'N', 'A', 'P', 0 };
    if (s->file_len >= 8 && memcmp(s->file, vmts_magic, 8) == 0) {
        s->kind = VMT_SNAPSHOT_VMTS;
        return snap_load_vmts(s, why, why_len);
    }
    if (s->file_len >= 4 && memcmp(s->file, "\177ELF", 4) == 0) {
        s->kind = VMT_SNAPSHOT_QEMU_CORE;
        return snap_load_qemu_core(s, why, why_len);
    }
    if (s->file_len >= 8 && (memcmp(s->file, "KDUMP   ", 8) == 0 || memcmp(s->file, "makedumpfile", 8) == 0)) {
        vmt_why(why, why_len, "snapshot: a kdump-compressed dump is not supported: dump as ELF (QEMU "
                "dump-guest-memory without -z/-l/-s, virsh dump --memory-only --format elf)");
        return VMT_E_FORMAT;
    }
    vmt_why(why, why_len, "snapshot: %zu-byte input is neither an ELF core nor a vmtrap snapshot (bad magic)",
            s->file_len);
    return VMT_E_FORMAT;
}

vmt_status vmt_snapshot_open_mem(const void *bytes, size_t len, const vmt_snapshot_options *opts,
                                 vmt_snapshot **out, char *why, size_t why_len)
{
    if (!out || (!bytes && len)) {
        vmt_why(why, why_len, "snapshot: open_mem: NULL argument");
        return VMT_E_INVAL;
    }
    *out = NULL;
    vmt_snapshot *s = snap_new(VMT_SNAPSHOT_QEMU_CORE, opts);
    if (!s) {
        vmt_why(why, why_len, "snapshot: out of memory");
        return VMT_E_NOMEM;
    }
    s->file = bytes;
    s->file_len = len;
    vmt_status st = open_bytes(s, why, why_len);
    if (st) {
        vmt_snapshot_destroy(s);
        return st;
    }
    *out = s;
    return VMT_OK;
}

vmt_status vmt_snapshot_open(const char *path, const vmt_snapshot_options *opts, vmt_snapshot **out, char *why,
                             size_t why_len)
{
    if (!path || !out) {
        vmt_why(why, why_len, "snapshot: open: NULL argument");
        return VMT_E_INVAL;
    }
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        vmt_why(why, why_len, "snapshot: cannot open %s: %s", path, strerror(errno));
        return VMT_E_IO;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size <= 0) {
        vmt_why(why, why_len, "snapshot: %s is not a non-empty regular file", path);
        close(fd);
        return sb.st_size == 0 ? VMT_E_FORMAT : VMT_E_IO;
    }
    void *map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        vmt_why(why, why_len, "snapshot: cannot map %s: %s", path, strerror(errno));
        return VMT_E_IO;
    }
    vmt_snapshot *s = snap_new(VMT_SNAPSHOT_QEMU_CORE, opts);
    if (!s) {
        munmap(map, (size_t)sb.st_size);
        vmt_why(why, why_len, "snapshot: out of memory");
        return VMT_E_NOMEM;
    }
    s->map = map;
    s->map_len = (size_t)sb.st_size;
    s->file = map;
    s->file_len = (size_t)sb.st_size;
    char inner[VMT_ERRBUF_LEN];
    inner[0] = 0;
    vmt_status st = open_bytes(s, inner, sizeof inner);
    if (st) {
        vmt_why(why, why_len, "%s: %s", path, inner);
        vmt_snapshot_destroy(s);
        return st;
    }
    *out = s;
    return VMT_OK;
}

const char *vmt_snapshot_error(const vmt_snapshot *s) { return s ? s->err.msg : "no snapshot"; }
vmt_snapshot_kind vmt_snapshot_kind_of(const vmt_snapshot *s) { return s->kind; }

/* ---- blocks ---- */

static int block_cmp(const void *a, const void *b)
{
    const snap_block *x = a, *y = b;
    return x->gpa < y->gpa ? -1 : x->gpa > y->gpa;
}

vmt_status snap_blocks_finish(vmt_snapshot *s, char *why, size_t why_len)
{
    if (s->nblocks == 0) {
        vmt_why(why, why_len, "snapshot: no RAM blocks");
        return VMT_E_FORMAT;
    }
    qsort(s->blocks, s->nblocks, sizeof *s->blocks, block_cmp);
    for (size_t i = 0; i + 1 < s->nblocks; i++) {
        const snap_block *a = &s->blocks[i], *b = &s->blocks[i + 1];
        if (a->gpa + a->size > b->gpa) {
            vmt_why(why, why_len, "snapshot: RAM blocks [0x%llx, +0x%llx) and [0x%llx, +0x%llx) overlap",
                    (unsigned long long)a->gpa, (unsigned long long)a->size, (unsigned long long)b->gpa,
                    (unsigned long long)b->size);
            return VMT_E_FORMAT;
        }
    }
    s->ranges = calloc(s->nblocks, sizeof *s->ranges);
    if (!s->ranges) {
        vmt_why(why, why_len, "snapshot: out of memory");
        return VMT_E_NOMEM;
    }
    for (size_t i = 0; i < s->nblocks; i++) {
        s->ranges[i].start = s->blocks[i].gpa;
        s->ranges[i].size = s->blocks[i].size;
    }
    return VMT_OK;
}

const snap_block *snap_block_of(const vmt_snapshot *s, vmt_pa gpa)
{
    size_t lo = 0, hi = s->nblocks;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const snap_block *b = &s->blocks[mid];
        if (gpa < b->gpa)
            hi = mid;
        else if (gpa - b->gpa >= b->size)
            lo = mid + 1;
        else
            return b;
    }
    return NULL;
}

size_t vmt_snapshot_ram_count(const vmt_snapshot *s) { return s->nblocks; }

vmt_status vmt_snapshot_ram_at(const vmt_snapshot *s, size_t i, vmt_snapshot_ram *out)
{
    if (i >= s->nblocks)
        return VMT_E_RANGE;
    out->gpa = s->blocks[i].gpa;
    out->size = s->blocks[i].size;
    return VMT_OK;
}

const vmt_ram_range *vmt_snapshot_ram_ranges(const vmt_snapshot *s, size_t *count)
{
    if (count)
        *count = s->nblocks;
    return s->ranges;
}

vmt_status vmt_snapshot_ram_ptr(vmt_snapshot *s, vmt_pa gpa, uint64_t len, const uint8_t **ptr)
{
    const snap_block *b = snap_block_of(s, gpa);
    if (!b || len > b->size - (gpa - b->gpa))
        return vmt_errbuf_set(&s->err, VMT_E_RANGE, "snapshot: [0x%llx, +0x%llx) is not inside one RAM block",
                              (unsigned long long)gpa, (unsigned long long)len);
    if (s->kind == VMT_SNAPSHOT_VMTS && len) {
        vmt_status st = snap_vmts_fill(s, b, gpa, len);
        if (st)
            return st;
    }
    *ptr = b->data + (gpa - b->gpa);
    return VMT_OK;
}

vmt_status vmt_snapshot_read(vmt_snapshot *s, vmt_pa gpa, void *buf, size_t len)
{
    uint8_t *out = buf;
    if (gpa + len < gpa)
        return vmt_errbuf_set(&s->err, VMT_E_RANGE, "snapshot: read of [0x%llx, +0x%zx) wraps around",
                              (unsigned long long)gpa, len);
    /* Check the whole range first: a failing read fills nothing. */
    for (vmt_pa a = gpa; a < gpa + len;) {
        const snap_block *b = snap_block_of(s, a);
        if (!b)
            return vmt_errbuf_set(&s->err, VMT_E_RANGE, "snapshot: read of [0x%llx, +0x%zx) reaches 0x%llx, not RAM",
                                  (unsigned long long)gpa, len, (unsigned long long)a);
        a = b->gpa + b->size;
    }
    while (len) {
        const snap_block *b = snap_block_of(s, gpa);
        uint64_t n = b->size - (gpa - b->gpa);
        if (n > len)
            n = len;
        const uint8_t *p;
        vmt_status st = vmt_snapshot_ram_ptr(s, gpa, n, &p);
        if (st)
            return st;
        memcpy(out, p, n);
        out += n;
        gpa += n;
        len -= n;
    }
    return VMT_OK;
}

/* ---- vCPUs, clock, platform, metadata ---- */

uint32_t vmt_snapshot_vcpu_count(const vmt_snapshot *s) { return s->nvcpus; }

const vmt_vcpu_state *vmt_snapshot_vcpu(const vmt_snapshot *s, uint32_t i)
{
    return i < s->nvcpus ? &s->vcpus[i] : NULL;
}

void vmt_snapshot_clock(const vmt_snapshot *s, vmt_clock_config *out) { *out = s->clock; }

const void *vmt_snapshot_platform(const vmt_snapshot *s, size_t *len)
{
    if (len)
        *len = s->platform_len;
    return s->platform_len ? s->platform : NULL;
}

const char *vmt_snapshot_metadata(const vmt_snapshot *s) { return s->metadata; }

vmt_status snap_set_metadata(vmt_snapshot *s, const char *json)
{
    char *m = strdup(json);
    if (!m)
        return VMT_E_NOMEM;
    free(s->metadata);
    s->metadata = m;
    return VMT_OK;
}

/* ---- fixups ---- */

vmt_status snap_fixup_add(vmt_snapshot *s, uint32_t vcpu, uint32_t group, const char *field, uint64_t value,
                          const char *how)
{
    if (s->nfixups == s->fixcap) {
        size_t cap = s->fixcap ? s->fixcap * 2 : 16;
        vmt_snapshot_fixup *n = realloc(s->fixups, cap * sizeof *n);
        if (!n)
            return VMT_E_NOMEM;
        s->fixups = n;
        s->fixcap = cap;
    }
    vmt_snapshot_fixup *f = &s->fixups[s->nfixups++];
    memset(f, 0, sizeof *f);
    f->vcpu = vcpu;
    f->group = group;
    f->value = value;
    snprintf(f->field, sizeof f->field, "%s", field);
    snprintf(f->how, sizeof f->how, "%s", how ? how : "");
    return VMT_OK;
}

size_t vmt_snapshot_fixup_count(const vmt_snapshot *s) { return s->nfixups; }

const vmt_snapshot_fixup *vmt_snapshot_fixup_at(const vmt_snapshot *s, size_t i)
{
    return i < s->nfixups ? &s->fixups[i] : NULL;
}

vmt_status vmt_snapshot_fixup_set(vmt_snapshot *s, uint32_t vcpu, const char *field, uint64_t value, const char *how)
{
    if (vcpu >= s->nvcpus || !field)
        return vmt_errbuf_set(&s->err, VMT_E_INVAL, "snapshot: fixup of %s on vCPU %u (snapshot has %u)",
                              field ? field : "(null)", vcpu, s->nvcpus);
    vmt_vcpu_state tmp = s->vcpus[vcpu];
    uint32_t group = 0;
    vmt_status st = snap_field_set(&tmp, field, value, &group);
    if (st)
        return vmt_errbuf_set(&s->err, st, "snapshot: fixup names unknown field '%s'", field);
    if (snap_fixup_add(s, vcpu, group, field, value, how))
        return vmt_errbuf_set(&s->err, VMT_E_NOMEM, "snapshot: out of memory");
    tmp.known |= group;
    tmp.reconstructed |= group;
    s->vcpus[vcpu] = tmp;
    if (strcmp(field, "efer") == 0)
        s->efer_set[vcpu] = 1;
    return VMT_OK;
}

/* ---- into a driver ---- */

void vmt_snapshot_machine_config(const vmt_snapshot *s, vmt_machine_config *cfg)
{
    cfg->ram_ranges = s->ranges;
    cfg->ram_range_count = s->nblocks;
    const snap_block *last = &s->blocks[s->nblocks - 1];
    cfg->ram_size = last->gpa + last->size;
    cfg->vcpus = s->nvcpus;
    cfg->vcpu_state = &s->vcpus[0];
    if (s->clock.tsc_hz)
        cfg->clock.tsc_hz = s->clock.tsc_hz;
    if (s->clock.insns_per_sec)
        cfg->clock.insns_per_sec = s->clock.insns_per_sec;
    cfg->clock.start_ns = s->clock.start_ns;
}

/* A long-mode vCPU whose EFER nobody supplied cannot run: say what to do. */
vmt_status snap_check_runnable(vmt_snapshot *s)
{
    for (uint32_t i = 0; i < s->nvcpus; i++) {
        const vmt_vcpu_state *v = &s->vcpus[i];
        if (!s->efer_set[i] && (v->regs.cr0 & VMT_CR0_PG) && (v->cs.attrib & VMT_SEG_ATTR_L))
            return vmt_errbuf_set(&s->err, VMT_E_INVAL,
                                  "snapshot: vCPU %u runs 64-bit code but its EFER is unknown (a bare core has "
                                  "none): apply a sidecar or call vmt_snapshot_reconstruct first", i);
        char why[160];
        if (vmt_vcpu_state_check(v, why, sizeof why))
            return vmt_errbuf_set(&s->err, VMT_E_FORMAT, "snapshot: vCPU %u: %s", i, why);
    }
    return VMT_OK;
}

vmt_status snap_write_pages(vmt_snapshot *s, vmt_driver *d, vmt_pa gpa, uint64_t len)
{
    const uint8_t *p;
    vmt_status st = vmt_snapshot_ram_ptr(s, gpa, len, &p);
    if (st)
        return st;
    st = vmt_drv_write_phys(d, gpa, p, len);
    if (st)
        return vmt_errbuf_set(&s->err, st, "snapshot: writing [0x%llx, +0x%llx) into the driver failed (driver "
                              "partly written): %s", (unsigned long long)gpa, (unsigned long long)len,
                              vmt_driver_error(d));
    return VMT_OK;
}

vmt_status snap_set_vcpus(vmt_snapshot *s, vmt_driver *d)
{
    for (uint32_t i = 0; i < s->nvcpus; i++) {
        vmt_status st = vmt_drv_set_vcpu_state(d, i, &s->vcpus[i]);
        if (st)
            return vmt_errbuf_set(&s->err, st, "snapshot: setting vCPU %u state failed: %s", i, vmt_driver_error(d));
    }
    return VMT_OK;
}

int snap_dirty_ignore(void *ctx, vmt_gfn gfn)
{
    (void)ctx;
    (void)gfn;
    return 0;
}

vmt_status vmt_snapshot_apply(vmt_snapshot *s, vmt_driver *d)
{
    s->applied_to = NULL; /* until this apply completes */
    vmt_status st = snap_check_runnable(s);
    if (st)
        return st;
    if (vmt_driver_caps(d)->vcpus < s->nvcpus)
        return vmt_errbuf_set(&s->err, VMT_E_INVAL, "snapshot: %u vCPUs but the driver has %u", s->nvcpus,
                              vmt_driver_caps(d)->vcpus);
    uint64_t total = 0, done = 0;
    for (size_t i = 0; i < s->nblocks; i++)
        total += s->blocks[i].size;
    const uint64_t step = 16ull << 20;
    for (size_t i = 0; i < s->nblocks; i++) {
        const snap_block *b = &s->blocks[i];
        for (uint64_t off = 0; off < b->size; off += step) {
            uint64_t n = b->size - off < step ? b->size - off : step;
            if ((st = snap_write_pages(s, d, b->gpa + off, n)))
                return st;
            done += n;
            snap_progress(s, done, total);
        }
    }
    if ((st = snap_set_vcpus(s, d)))
        return st;
    /* Frames written outside the snapshot's RAM (a run before this apply)
     * go back to zero; then the log starts empty. */
    if (vmt_driver_has(d, VMT_CAP_DIRTY_LOG) && (st = snap_zero_dirty_holes(s, d)))
        return st;
    s->applied_to = d;
    return VMT_OK;
}

/* ---- invariants ---- */

vmt_status vmt_snapshot_check(const vmt_snapshot *s, char *why, size_t why_len)
{
    if (!s->nblocks || !s->blocks || !s->ranges || !s->nvcpus || !s->vcpus || !s->metadata) {
        vmt_why(why, why_len, "snapshot: empty memory map or vCPU list");
        return VMT_E_INTERNAL;
    }
    for (size_t i = 0; i < s->nblocks; i++) {
        const snap_block *b = &s->blocks[i];
        if (!b->size || (b->gpa | b->size) & (VMT_PAGE_SIZE - 1) || b->gpa >= VMT_SNAPSHOT_MAX_PA ||
            b->size > VMT_SNAPSHOT_MAX_PA - b->gpa || !b->data) {
            vmt_why(why, why_len, "snapshot: block %zu [0x%llx, +0x%llx) is empty, unaligned, too high or has no data",
                    i, (unsigned long long)b->gpa, (unsigned long long)b->size);
            return VMT_E_INTERNAL;
        }
        if (i && s->blocks[i - 1].gpa + s->blocks[i - 1].size > b->gpa) {
            vmt_why(why, why_len, "snapshot: blocks %zu and %zu are unsorted or overlap", i - 1, i);
            return VMT_E_INTERNAL;
        }
        if (s->ranges[i].start != b->gpa || s->ranges[i].size != b->size) {
            vmt_why(why, why_len, "snapshot: range %zu disagrees with block %zu", i, i);
            return VMT_E_INTERNAL;
        }
        if (s->kind == VMT_SNAPSHOT_QEMU_CORE && s->file &&
            (b->data < s->file || b->size > s->file_len || (size_t)(b->data - s->file) > s->file_len - b->size)) {
            vmt_why(why, why_len, "snapshot: block %zu data is outside the file", i);
            return VMT_E_INTERNAL;
        }
    }
    if (s->kind == VMT_SNAPSHOT_VMTS) {
        uint64_t chunk = 0, golden = 0;
        for (size_t i = 0; i < s->nblocks; i++) {
            const snap_block *b = &s->blocks[i];
            if (b->first_chunk != chunk || b->data != s->golden + golden) {
                vmt_why(why, why_len, "snapshot: block %zu's chunks or memory are not where the blocks before it end", i);
                return VMT_E_INTERNAL;
            }
            chunk += (b->size + s->chunk_size - 1) / s->chunk_size;
            golden += b->size;
        }
        if (chunk != s->nchunks || golden != s->golden_len) {
            vmt_why(why, why_len, "snapshot: %llu chunks / %llu bytes for blocks needing %llu / %llu",
                    (unsigned long long)s->nchunks, (unsigned long long)s->golden_len, (unsigned long long)chunk,
                    (unsigned long long)golden);
            return VMT_E_INTERNAL;
        }
        for (uint64_t k = 0; k < s->nchunks; k++) {
            const snap_chunk *c = &s->chunks[k];
            bool zero = c->flags & SNAP_CHUNK_ZERO;
            if (s->chunk_done[k] > 1 || (c->flags & ~SNAP_CHUNK_ZERO) || (zero && c->csize) ||
                (!zero && (c->offset > s->memdata_len || c->csize > s->memdata_len - c->offset))) {
                vmt_why(why, why_len, "snapshot: chunk %llu is inconsistent", (unsigned long long)k);
                return VMT_E_INTERNAL;
            }
        }
    }
    for (uint32_t i = 0; i < s->nvcpus; i++) {
        char w[160];
        if ((s->vcpus[i].known & VMT_VS_REGS) && vmt_vcpu_state_check(&s->vcpus[i], w, sizeof w)) {
            vmt_why(why, why_len, "snapshot: vCPU %u: %s", i, w);
            return VMT_E_INTERNAL;
        }
    }
    for (size_t i = 0; i < s->nfixups; i++) {
        if (s->fixups[i].vcpu >= s->nvcpus) {
            vmt_why(why, why_len, "snapshot: fixup %zu names vCPU %u of %u", i, s->fixups[i].vcpu, s->nvcpus);
            return VMT_E_INTERNAL;
        }
    }
    return VMT_OK;
}

vmt_status snap_format_error(char *why, size_t why_len, const char *what, const char *fmt, ...)
{
    char msg[VMT_ERRBUF_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    vmt_why(why, why_len, "%s: %s", what, msg);
    return VMT_E_FORMAT;
}
