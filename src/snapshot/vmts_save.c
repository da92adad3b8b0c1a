/*
 * snapshot/vmts_save.c — writing vmtrap's own snapshot file from a driver
 * (read_phys + get_vcpu_state) or from a loaded snapshot (e.g. a QEMU core
 * with its fixups).
 *
 * Order on disk: header and table (written last, at offset 0), metadata,
 * clock, memory map, vCPUs, platform (when given), fixups, memory data
 * (zstd frames, one per 64 KiB chunk, all-zero chunks not stored), chunk
 * table. Each section's CRC-32 is computed while it is written.
 *
 * Failure atomicity: the file is written to "<path>.tmp", synced and then
 * renamed over path; on any failure the temporary file is removed and path
 * is untouched.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>
#include <zlib.h>
#include <zstd.h>

#include "snapshot/vmts.h"

typedef vmt_status (*snap_read_fn)(void *ctx, vmt_pa gpa, void *buf, size_t len);

typedef struct vmts_src {
    const vmt_ram_range *ram;
    size_t nram;
    snap_read_fn read;
    void *read_ctx;
    const vmt_vcpu_state *vcpus;
    uint32_t nvcpus;
    const vmt_snapshot_fixup *fixups;
    size_t nfixups;
    const void *platform;
    size_t platform_len;
    const char *meta_base;    /* JSON object text */
    const char *meta_extra;   /* merged over it, may be NULL */
    vmt_clock_config clock;
    int level;
    vmt_snapshot_progress_fn progress;
    void *progress_ctx;
} vmts_src;

typedef struct wr {
    FILE *f;
    uint64_t off;
    uint8_t table[VMTS_MAX_SECTIONS * VMTS_ENTRY_SIZE];
    uint32_t nsec;
    uint64_t sec_start;
    uLong crc;
    char *why;
    size_t why_len;
} wr;

static vmt_status put(wr *w, const void *p, size_t n)
{
    if (n && fwrite(p, 1, n, w->f) != n) {
        vmt_why(w->why, w->why_len, "vmtrap snapshot: write failed: %s", strerror(errno));
        return VMT_E_IO;
    }
    const uint8_t *b = p;
    for (size_t done = 0; done < n;) {
        uInt step = n - done > (1u << 30) ? (1u << 30) : (uInt)(n - done);
        w->crc = crc32(w->crc, b + done, step);
        done += step;
    }
    w->off += n;
    return VMT_OK;
}

static void begin(wr *w)
{
    w->sec_start = w->off;
    w->crc = crc32(0L, Z_NULL, 0);
}

static void end(wr *w, uint32_t type)
{
    uint8_t *e = w->table + w->nsec++ * VMTS_ENTRY_SIZE;
    memset(e, 0, VMTS_ENTRY_SIZE);
    snap_put32(e, type);
    snap_put64(e + 8, w->sec_start);
    snap_put64(e + 16, w->off - w->sec_start);
    snap_put32(e + 24, (uint32_t)w->crc);
}

static vmt_status write_meta(wr *w, const vmts_src *src)
{
    json_object *o = json_tokener_parse(src->meta_base ? src->meta_base : "{}");
    json_object *x = src->meta_extra ? json_tokener_parse(src->meta_extra) : NULL;
    if (!o || !json_object_is_type(o, json_type_object) ||
        (src->meta_extra && (!x || !json_object_is_type(x, json_type_object)))) {
        json_object_put(o);
        json_object_put(x);
        vmt_why(w->why, w->why_len, "vmtrap snapshot: metadata must be a JSON object");
        return VMT_E_INVAL;
    }
    char when[32];
    time_t now = time(NULL);
    struct tm tm;
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&now, &tm));
    json_object_object_add(o, "created", json_object_new_string(when));
    if (x) {
        json_object_object_foreach(x, k, v) json_object_object_add(o, k, json_object_get(v));
    }
    const char *text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
    begin(w);
    vmt_status st = put(w, text, strlen(text));
    end(w, VMTS_SEC_META);
    json_object_put(o);
    json_object_put(x);
    return st;
}

static vmt_status write_small(wr *w, const vmts_src *src)
{
    uint8_t b[24];
    vmt_status st;
    begin(w);
    snap_put64(b, src->clock.tsc_hz);
    snap_put64(b + 8, src->clock.insns_per_sec);
    snap_put64(b + 16, src->clock.start_ns);
    if ((st = put(w, b, 24)))
        return st;
    end(w, VMTS_SEC_CLOCK);

    begin(w);
    snap_put32(b, (uint32_t)src->nram);
    snap_put32(b + 4, VMTS_CHUNK_SIZE);
    if ((st = put(w, b, 8)))
        return st;
    for (size_t i = 0; i < src->nram; i++) {
        snap_put64(b, src->ram[i].start);
        snap_put64(b + 8, src->ram[i].size);
        if ((st = put(w, b, 16)))
            return st;
    }
    end(w, VMTS_SEC_MEMMAP);

    begin(w);
    snap_put32(b, src->nvcpus);
    snap_put32(b + 4, VMTS_VCPU_RECORD);
    if ((st = put(w, b, 8)))
        return st;
    uint8_t rec[VMTS_VCPU_RECORD];
    for (uint32_t i = 0; i < src->nvcpus; i++) {
        vmts_vcpu_encode(&src->vcpus[i], rec);
        if ((st = put(w, rec, sizeof rec)))
            return st;
    }
    end(w, VMTS_SEC_VCPUS);

    if (src->platform_len) {
        begin(w);
        if ((st = put(w, src->platform, src->platform_len)))
            return st;
        end(w, VMTS_SEC_PLATFORM);
    }

    begin(w);
    snap_put32(b, (uint32_t)src->nfixups);
    snap_put32(b + 4, 0);
    if ((st = put(w, b, 8)))
        return st;
    for (size_t i = 0; i < src->nfixups; i++) {
        uint8_t e[VMTS_FIXUP_ENTRY];
        memset(e, 0, sizeof e);
        const vmt_snapshot_fixup *f = &src->fixups[i];
        snap_put32(e, f->vcpu);
        snap_put32(e + 4, f->group);
        memcpy(e + 8, f->field, strnlen(f->field, 23));
        snap_put64(e + 32, f->value);
        memcpy(e + 40, f->how, strnlen(f->how, 199));
        if ((st = put(w, e, sizeof e)))
            return st;
    }
    end(w, VMTS_SEC_FIXUPS);
    return VMT_OK;
}

static bool all_zero(const uint8_t *p, size_t n)
{
    uint64_t acc = 0;
    for (size_t i = 0; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, p + i, 8);
        acc |= v;
    }
    return acc == 0;
}

static vmt_status write_memory(wr *w, const vmts_src *src)
{
    uint64_t nchunks = 0, total = 0;
    for (size_t i = 0; i < src->nram; i++) {
        nchunks += (src->ram[i].size + VMTS_CHUNK_SIZE - 1) / VMTS_CHUNK_SIZE;
        total += src->ram[i].size;
    }
    uint8_t *entries = calloc(nchunks ? nchunks : 1, VMTS_CHUNK_ENTRY);
    uint8_t *raw = malloc(VMTS_CHUNK_SIZE);
    size_t cap = ZSTD_compressBound(VMTS_CHUNK_SIZE);
    uint8_t *comp = malloc(cap);
    ZSTD_CCtx *cc = ZSTD_createCCtx();
    vmt_status st = VMT_OK;
    if (!entries || !raw || !comp || !cc) {
        vmt_why(w->why, w->why_len, "vmtrap snapshot: out of memory");
        st = VMT_E_NOMEM;
        goto out;
    }
    ZSTD_CCtx_setParameter(cc, ZSTD_c_compressionLevel, src->level ? src->level : 3);
    ZSTD_CCtx_setParameter(cc, ZSTD_c_checksumFlag, 1);
    begin(w);
    uint64_t idx = 0, done = 0;
    for (size_t i = 0; i < src->nram && !st; i++) {
        for (uint64_t off = 0; off < src->ram[i].size && !st; off += VMTS_CHUNK_SIZE, idx++) {
            size_t n = src->ram[i].size - off < VMTS_CHUNK_SIZE ? (size_t)(src->ram[i].size - off) : VMTS_CHUNK_SIZE;
            if ((st = src->read(src->read_ctx, src->ram[i].start + off, raw, n))) {
                vmt_why(w->why, w->why_len, "vmtrap snapshot: reading RAM at 0x%llx failed",
                        (unsigned long long)(src->ram[i].start + off));
                break;
            }
            uint8_t *e = entries + idx * VMTS_CHUNK_ENTRY;
            if (all_zero(raw, n)) {
                snap_put32(e + 12, SNAP_CHUNK_ZERO);
            } else {
                size_t c = ZSTD_compress2(cc, comp, cap, raw, n);
                if (ZSTD_isError(c)) {
                    vmt_why(w->why, w->why_len, "vmtrap snapshot: zstd: %s", ZSTD_getErrorName(c));
                    st = VMT_E_INTERNAL;
                    break;
                }
                snap_put64(e, w->off - w->sec_start);
                snap_put32(e + 8, (uint32_t)c);
                st = put(w, comp, c);
            }
            done += n;
            if (src->progress)
                src->progress(src->progress_ctx, done, total);
        }
    }
    if (st)
        goto out;
    end(w, VMTS_SEC_MEMDATA);
    begin(w);
    st = put(w, entries, nchunks * VMTS_CHUNK_ENTRY);
    end(w, VMTS_SEC_CHUNKS);
out:
    ZSTD_freeCCtx(cc);
    free(entries);
    free(raw);
    free(comp);
    return st;
}

static vmt_status finish(wr *w)
{
    uint8_t h[VMTS_HEADER_SIZE];
    memset(h, 0, sizeof h);
    memcpy(h, VMTS_MAGIC, 8);
    snap_put32(h + 8, VMTS_VERSION);
    snap_put32(h + 16, VMTS_HEADER_SIZE);
    snap_put32(h + 20, w->nsec);
    snap_put64(h + 24, VMTS_HEADER_SIZE);
    snap_put64(h + 32, w->off);
    snap_put32(h + 56, (uint32_t)crc32(crc32(0L, Z_NULL, 0), h, 56));
    uint8_t trailer[8] = { 0 };
    snap_put32(trailer, (uint32_t)crc32(crc32(0L, Z_NULL, 0), w->table, w->nsec * VMTS_ENTRY_SIZE));
    if (fseek(w->f, 0, SEEK_SET) != 0 || fwrite(h, 1, sizeof h, w->f) != sizeof h ||
        fwrite(w->table, 1, w->nsec * VMTS_ENTRY_SIZE, w->f) != w->nsec * VMTS_ENTRY_SIZE ||
        fwrite(trailer, 1, 8, w->f) != 8 || fflush(w->f) != 0 || fsync(fileno(w->f)) != 0) {
        vmt_why(w->why, w->why_len, "vmtrap snapshot: write failed: %s", strerror(errno));
        return VMT_E_IO;
    }
    return VMT_OK;
}

static vmt_status vmts_write(const vmts_src *src, const char *path, char *why, size_t why_len)
{
    if (!src->nram || src->nram > VMT_SNAPSHOT_MAX_BLOCKS || !src->nvcpus || src->nvcpus > VMT_SNAPSHOT_MAX_VCPUS) {
        vmt_why(why, why_len, "vmtrap snapshot: %zu RAM blocks and %u vCPUs cannot be saved", src->nram, src->nvcpus);
        return VMT_E_INVAL;
    }
    for (size_t i = 0; i < src->nram; i++) {
        const vmt_ram_range *r = &src->ram[i];
        if (!r->size || (r->start | r->size) & (VMT_PAGE_SIZE - 1) || (i && r->start < r[-1].start + r[-1].size)) {
            vmt_why(why, why_len, "vmtrap snapshot: RAM range %zu is empty, unaligned or out of order", i);
            return VMT_E_INVAL;
        }
    }
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 5);
    if (!tmp) {
        vmt_why(why, why_len, "vmtrap snapshot: out of memory");
        return VMT_E_NOMEM;
    }
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", 5);
    wr w = { .why = why, .why_len = why_len };
    w.f = fopen(tmp, "wb");
    if (!w.f) {
        vmt_why(why, why_len, "vmtrap snapshot: cannot create %s: %s", tmp, strerror(errno));
        free(tmp);
        return VMT_E_IO;
    }
    /* room for the header and the largest table; both are written last */
    uint8_t zero[VMTS_HEADER_SIZE + 8 * VMTS_ENTRY_SIZE + 8];
    memset(zero, 0, sizeof zero);
    uint32_t nsec = src->platform_len ? 8 : 7;
    vmt_status st = put(&w, zero, VMTS_HEADER_SIZE + nsec * VMTS_ENTRY_SIZE + 8);
    if (!st)
        st = write_meta(&w, src);
    if (!st)
        st = write_small(&w, src);
    if (!st)
        st = write_memory(&w, src);
    if (!st)
        st = finish(&w);
    if (fclose(w.f) != 0 && !st) {
        vmt_why(why, why_len, "vmtrap snapshot: closing %s failed: %s", tmp, strerror(errno));
        st = VMT_E_IO;
    }
    if (!st && rename(tmp, path) != 0) {
        vmt_why(why, why_len, "vmtrap snapshot: cannot rename %s to %s: %s", tmp, path, strerror(errno));
        st = VMT_E_IO;
    }
    if (st)
        unlink(tmp);
    free(tmp);
    return st;
}

/* ---- from a driver ---- */

static vmt_status drv_read(void *ctx, vmt_pa gpa, void *buf, size_t len)
{
    return vmt_drv_read_phys(ctx, gpa, buf, len);
}

vmt_status vmt_snapshot_save_driver(vmt_driver *d, const vmt_snapshot_save_options *opts, const char *path, char *why,
                                    size_t why_len)
{
    vmt_snapshot_save_options o;
    memset(&o, 0, sizeof o);
    if (opts)
        o = *opts;
    if (!d || !path) {
        vmt_why(why, why_len, "vmtrap snapshot: save: NULL argument");
        return VMT_E_INVAL;
    }
    if (!vmt_driver_has(d, VMT_CAP_READ_PHYS | VMT_CAP_VCPU_STATE)) {
        vmt_why(why, why_len, "vmtrap snapshot: driver '%s' cannot read RAM and vCPU state (read-phys, vcpu-state)",
                vmt_driver_name(d));
        return VMT_E_NOTSUP;
    }
    const vmt_caps *caps = vmt_driver_caps(d);
    vmt_ram_range whole = { 0, caps->ram_frames * VMT_PAGE_SIZE };
    vmts_src src = {
        .ram = o.ram ? o.ram : &whole,
        .nram = o.ram ? o.ram_count : 1,
        .read = drv_read,
        .read_ctx = d,
        .nvcpus = caps->vcpus,
        .platform = o.platform,
        .platform_len = o.platform ? o.platform_len : 0,
        .meta_extra = o.metadata_json,
        .clock = o.clock,
        .fixups = o.fixups_from ? o.fixups_from->fixups : NULL,
        .nfixups = o.fixups_from ? o.fixups_from->nfixups : 0,
        .level = o.zstd_level,
        .progress = o.progress,
        .progress_ctx = o.progress_ctx,
    };
    vmt_vcpu_state *vs = calloc(caps->vcpus ? caps->vcpus : 1, sizeof *vs);
    if (!vs) {
        vmt_why(why, why_len, "vmtrap snapshot: out of memory");
        return VMT_E_NOMEM;
    }
    vmt_status st = VMT_OK;
    for (size_t i = 0; i < src.nfixups; i++)
        if (src.fixups[i].vcpu >= caps->vcpus) {
            vmt_why(why, why_len, "vmtrap snapshot: fixup %zu names vCPU %u but the driver has %u", i,
                    src.fixups[i].vcpu, caps->vcpus);
            st = VMT_E_INVAL;
        }
    for (uint32_t i = 0; i < caps->vcpus && !st; i++)
        if ((st = vmt_drv_get_vcpu_state(d, i, &vs[i])))
            vmt_why(why, why_len, "vmtrap snapshot: vCPU %u state: %s", i, vmt_driver_error(d));
    if (!st) {
        json_object *base = json_object_new_object();
        json_object_object_add(base, "source", json_object_new_string(vmt_driver_name(d)));
        src.meta_base = json_object_to_json_string(base);
        src.vcpus = vs;
        st = vmts_write(&src, path, why, why_len);
        json_object_put(base);
    }
    free(vs);
    return st;
}

/* ---- from a loaded snapshot ---- */

static vmt_status snap_read(void *ctx, vmt_pa gpa, void *buf, size_t len)
{
    return vmt_snapshot_read(ctx, gpa, buf, len);
}

vmt_status vmt_snapshot_save(vmt_snapshot *s, const vmt_snapshot_save_options *opts, const char *path)
{
    vmt_snapshot_save_options o;
    memset(&o, 0, sizeof o);
    if (opts)
        o = *opts;
    vmts_src src = {
        .ram = s->ranges,
        .nram = s->nblocks,
        .read = snap_read,
        .read_ctx = s,
        .vcpus = s->vcpus,
        .nvcpus = s->nvcpus,
        .fixups = s->fixups,
        .nfixups = s->nfixups,
        .platform = o.platform ? o.platform : s->platform,
        .platform_len = o.platform ? o.platform_len : s->platform_len,
        .meta_base = s->metadata,
        .meta_extra = o.metadata_json,
        .clock = s->clock,
        .level = o.zstd_level,
        .progress = o.progress,
        .progress_ctx = o.progress_ctx,
    };
    vmt_status st = snap_check_runnable(s);
    if (st)
        return st;
    char why[VMT_ERRBUF_LEN] = "";
    st = vmts_write(&src, path, why, sizeof why);
    if (st)
        vmt_errbuf_set(&s->err, st, "%s", why);
    return st;
}
