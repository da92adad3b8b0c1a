/*
 * snapshot/vmts_load.c — reading vmtrap's own snapshot file (format in
 * snapshot/vmts.h and docs/snapshot.md).
 *
 * Validation happens completely before the handle is returned: header
 * (magic, version, flags, sizes, CRC, file size = actual size), section
 * table (inside the file, CRC, known types, each at most once, required
 * ones present, sections inside the file and not overlapping the header,
 * the table or each other, and tiling the rest of the file so that every
 * byte is under a checksum), every section's CRC-32, then each section's
 * contents (memory map aligned and non-overlapping, chunk table matching
 * it with every frame inside the data section and declaring exactly the
 * chunk's size, vCPU records decodable and consistent, metadata a JSON
 * object, fixups naming existing vCPUs). Any failure: VMT_E_FORMAT with
 * one line naming the section and the problem.
 *
 * Memory: an anonymous mapping the size of all RAM blocks ("golden"),
 * filled one chunk at a time on first access (snap_vmts_fill); pages never
 * accessed cost nothing.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <json-c/json.h>
#include <zlib.h>
#include <zstd.h>

#include "snapshot/vmts.h"

typedef struct sec {
    uint64_t offset, length;
    bool present;
} sec;

#define bad(why, why_len, ...) snap_format_error((why), (why_len), "vmtrap snapshot", __VA_ARGS__)

static uint32_t crc(const uint8_t *p, uint64_t n)
{
    uLong c = crc32(0L, Z_NULL, 0);
    while (n) {
        uInt step = n > (1u << 30) ? (1u << 30) : (uInt)n;
        c = crc32(c, p, step);
        p += step;
        n -= step;
    }
    return (uint32_t)c;
}

static vmt_status read_table(vmt_snapshot *s, sec secs[VMTS_SEC_TYPES], char *why, size_t why_len)
{
    const uint8_t *f = s->file;
    if (s->file_len < VMTS_HEADER_SIZE)
        return bad(why, why_len, "%zu bytes is shorter than the 64-byte header (truncated)", s->file_len);
    uint32_t version = snap_le32(f + 8), flags = snap_le32(f + 12), hsize = snap_le32(f + 16);
    uint32_t count = snap_le32(f + 20);
    uint64_t table = snap_le64(f + 24), fsize = snap_le64(f + 32);
    if (version != VMTS_VERSION)
        return bad(why, why_len, "format version %u (this vmtrap reads version %u)", version, VMTS_VERSION);
    if (crc(f, 56) != snap_le32(f + 56) || snap_le32(f + 60) != 0)
        return bad(why, why_len, "header checksum mismatch (corrupt header)");
    if (flags != 0 || hsize != VMTS_HEADER_SIZE || table != VMTS_HEADER_SIZE)
        return bad(why, why_len, "header has flags 0x%x, size %u, table at 0x%llx (expected 0, 64, 0x40)", flags,
                   hsize, (unsigned long long)table);
    for (int i = 40; i < 56; i++)
        if (f[i])
            return bad(why, why_len, "header reserved byte %d is not zero", i);
    if (fsize != s->file_len)
        return bad(why, why_len, "header says %llu bytes but the file has %zu (truncated or padded)",
                   (unsigned long long)fsize, s->file_len);
    if (count == 0 || count > VMTS_MAX_SECTIONS)
        return bad(why, why_len, "%u sections (1..%u expected)", count, VMTS_MAX_SECTIONS);
    uint64_t table_end = table + (uint64_t)count * VMTS_ENTRY_SIZE + 8;
    if (table_end > s->file_len)
        return bad(why, why_len, "section table runs past the end of the file (truncated)");
    const uint8_t *t = f + table;
    if (crc(t, (uint64_t)count * VMTS_ENTRY_SIZE) != snap_le32(t + count * VMTS_ENTRY_SIZE) ||
        snap_le32(t + count * VMTS_ENTRY_SIZE + 4) != 0)
        return bad(why, why_len, "section table checksum mismatch (corrupt table)");
    uint64_t spans[VMTS_MAX_SECTIONS][2];
    for (uint32_t i = 0; i < count; i++) {
        const uint8_t *e = t + i * VMTS_ENTRY_SIZE;
        uint32_t type = snap_le32(e), eflags = snap_le32(e + 4);
        uint64_t off = snap_le64(e + 8), len = snap_le64(e + 16);
        if (type == 0 || type >= VMTS_SEC_TYPES)
            return bad(why, why_len, "section %u has unknown type %u", i, type);
        const char *name = vmts_section_name(type);
        if (eflags != 0 || snap_le32(e + 28) != 0)
            return bad(why, why_len, "section '%s' has flags 0x%x (none are defined)", name, eflags);
        if (secs[type].present)
            return bad(why, why_len, "section '%s' appears twice", name);
        if (off < table_end || off > s->file_len || len > s->file_len - off)
            return bad(why, why_len, "section '%s' [0x%llx, +0x%llx) is outside the file's data area (truncated?)",
                       name, (unsigned long long)off, (unsigned long long)len);
        for (uint32_t k = 0; k < i; k++)
            if (off < spans[k][1] && spans[k][0] < off + len)
                return bad(why, why_len, "section '%s' overlaps another section", name);
        spans[i][0] = off;
        spans[i][1] = off + len;
        if (crc(f + off, len) != snap_le32(e + 24))
            return bad(why, why_len, "section '%s' checksum mismatch (corrupt data)", name);
        secs[type] = (sec){ off, len, true };
    }
    /* Sections tile the rest of the file: every byte is under a checksum. */
    uint64_t covered = table_end;
    for (uint32_t pass = 0; pass < count; pass++) {
        bool advanced = false;
        for (uint32_t k = 0; k < count; k++)
            if (spans[k][0] == covered && spans[k][1] > covered) {
                covered = spans[k][1];
                advanced = true;
            }
        if (!advanced)
            break;
    }
    if (covered != s->file_len)
        return bad(why, why_len, "bytes 0x%llx.. are in no section (sections must follow the table without gaps)",
                   (unsigned long long)covered);
    static const uint32_t required[] = { VMTS_SEC_META, VMTS_SEC_CLOCK, VMTS_SEC_MEMMAP, VMTS_SEC_VCPUS,
                                         VMTS_SEC_FIXUPS, VMTS_SEC_CHUNKS, VMTS_SEC_MEMDATA };
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++)
        if (!secs[required[i]].present)
            return bad(why, why_len, "section '%s' is missing", vmts_section_name(required[i]));
    return VMT_OK;
}

static vmt_status load_meta(vmt_snapshot *s, const sec *m, char *why, size_t why_len)
{
    if (m->length == 0 || m->length > (1u << 20))
        return bad(why, why_len, "metadata is %llu bytes (1 byte .. 1 MiB)", (unsigned long long)m->length);
    char *text = malloc(m->length + 1);
    if (!text)
        return bad(why, why_len, "out of memory");
    memcpy(text, s->file + m->offset, m->length);
    text[m->length] = 0;
    json_tokener *tok = json_tokener_new();
    json_object *o = tok ? json_tokener_parse_ex(tok, text, (int)m->length) : NULL;
    bool ok = o && json_tokener_get_error(tok) == json_tokener_success &&
              json_tokener_get_parse_end(tok) == m->length && json_object_is_type(o, json_type_object);
    json_object_put(o);
    if (tok)
        json_tokener_free(tok);
    if (!ok) {
        free(text);
        return bad(why, why_len, "metadata is not one JSON object");
    }
    free(s->metadata);
    s->metadata = text;
    return VMT_OK;
}

static vmt_status load_memmap(vmt_snapshot *s, const sec *m, const sec *c, const sec *d, char *why, size_t why_len)
{
    const uint8_t *p = s->file + m->offset;
    if (m->length < 8)
        return bad(why, why_len, "memory map too short");
    uint32_t n = snap_le32(p), chunk = snap_le32(p + 4);
    if (n == 0 || n > VMT_SNAPSHOT_MAX_BLOCKS || m->length != 8 + (uint64_t)n * 16)
        return bad(why, why_len, "memory map: %u blocks in %llu bytes", n, (unsigned long long)m->length);
    if (chunk < 4096 || chunk > (16u << 20) || (chunk & (chunk - 1)))
        return bad(why, why_len, "memory map: chunk size %u is not a power of 2 in 4 KiB..16 MiB", chunk);
    s->blocks = calloc(n, sizeof *s->blocks);
    if (!s->blocks)
        return bad(why, why_len, "out of memory");
    uint64_t total = 0, chunks = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t gpa = snap_le64(p + 8 + 16 * i), size = snap_le64(p + 16 + 16 * i);
        if (!size || (gpa | size) & (VMT_PAGE_SIZE - 1) || gpa >= VMT_SNAPSHOT_MAX_PA ||
            size > VMT_SNAPSHOT_MAX_PA - gpa)
            return bad(why, why_len, "memory map: block %u [0x%llx, +0x%llx) is empty, unaligned or past 2^52", i,
                       (unsigned long long)gpa, (unsigned long long)size);
        if (i && gpa < s->blocks[i - 1].gpa + s->blocks[i - 1].size)
            return bad(why, why_len, "memory map: block %u overlaps or precedes block %u", i, i - 1);
        s->blocks[i].gpa = gpa;
        s->blocks[i].size = size;
        s->blocks[i].first_chunk = chunks;
        chunks += (size + chunk - 1) / chunk;
        total += size;
        if (total > VMT_SNAPSHOT_MAX_PA)
            return bad(why, why_len, "memory map: more than 2^52 bytes of RAM");
    }
    s->nblocks = n;
    s->chunk_size = chunk;
    if (c->length != chunks * VMTS_CHUNK_ENTRY)
        return bad(why, why_len, "memory chunks: %llu bytes for %llu chunks", (unsigned long long)c->length,
                   (unsigned long long)chunks);
    s->nchunks = chunks;
    s->chunks = calloc(chunks, sizeof *s->chunks);
    s->chunk_done = calloc(chunks, 1);
    if (!s->chunks || !s->chunk_done)
        return bad(why, why_len, "out of memory");
    s->memdata = s->file + d->offset;
    s->memdata_len = d->length;
    const uint8_t *q = s->file + c->offset;
    for (uint32_t b = 0; b < n; b++) {
        const snap_block *blk = &s->blocks[b];
        for (uint64_t k = 0; k * chunk < blk->size; k++) {
            uint64_t idx = blk->first_chunk + k;
            const uint8_t *e = q + idx * VMTS_CHUNK_ENTRY;
            snap_chunk ch = { snap_le64(e), snap_le32(e + 8), snap_le32(e + 12) };
            uint64_t want = blk->size - k * chunk < chunk ? blk->size - k * chunk : chunk;
            if (ch.flags & ~SNAP_CHUNK_ZERO)
                return bad(why, why_len, "memory chunk %llu has unknown flags 0x%x", (unsigned long long)idx, ch.flags);
            if (ch.flags & SNAP_CHUNK_ZERO) {
                if (ch.csize || ch.offset)
                    return bad(why, why_len, "memory chunk %llu is marked zero but has data", (unsigned long long)idx);
            } else {
                if (ch.offset > d->length || ch.csize > d->length - ch.offset || ch.csize == 0)
                    return bad(why, why_len, "memory chunk %llu [0x%llx, +0x%x) is outside the memory data",
                               (unsigned long long)idx, (unsigned long long)ch.offset, ch.csize);
                unsigned long long cs = ZSTD_getFrameContentSize(s->memdata + ch.offset, ch.csize);
                if (cs != want)
                    return bad(why, why_len, "memory chunk %llu declares %lld bytes, its block needs %llu",
                               (unsigned long long)idx, (long long)cs, (unsigned long long)want);
            }
            s->chunks[idx] = ch;
        }
    }
    s->golden_len = (size_t)total;
    void *g = mmap(NULL, s->golden_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (g == MAP_FAILED) {
        s->golden_len = 0;
        return bad(why, why_len, "cannot reserve %llu bytes for RAM", (unsigned long long)total);
    }
    s->golden = g;
    uint64_t at = 0;
    for (uint32_t i = 0; i < n; i++) {
        s->blocks[i].data = s->golden + at;
        at += s->blocks[i].size;
    }
    return snap_blocks_finish(s, why, why_len);
}

static vmt_status load_vcpus(vmt_snapshot *s, const sec *v, char *why, size_t why_len)
{
    const uint8_t *p = s->file + v->offset;
    if (v->length < 8)
        return bad(why, why_len, "vcpus section too short");
    uint32_t n = snap_le32(p), rec = snap_le32(p + 4);
    if (n == 0 || n > VMT_SNAPSHOT_MAX_VCPUS || rec != VMTS_VCPU_RECORD || v->length != 8 + (uint64_t)n * rec)
        return bad(why, why_len, "vcpus: %u records of %u bytes in %llu bytes (1..%u records of %u)", n, rec,
                   (unsigned long long)v->length, VMT_SNAPSHOT_MAX_VCPUS, VMTS_VCPU_RECORD);
    s->vcpus = calloc(n, sizeof *s->vcpus);
    s->efer_set = calloc(n, 1);
    if (!s->vcpus || !s->efer_set)
        return bad(why, why_len, "out of memory");
    s->nvcpus = n;
    for (uint32_t i = 0; i < n; i++) {
        if (vmts_vcpu_decode(p + 8 + (uint64_t)i * rec, &s->vcpus[i]))
            return bad(why, why_len, "vcpu %u: record has invalid flags, booleans or padding", i);
        char w[160];
        if (vmt_vcpu_state_check(&s->vcpus[i], w, sizeof w))
            return bad(why, why_len, "vcpu %u: %s", i, w);
        s->efer_set[i] = 1; /* a saved state says what EFER is */
    }
    return VMT_OK;
}

static vmt_status load_fixups(vmt_snapshot *s, const sec *fx, char *why, size_t why_len)
{
    const uint8_t *p = s->file + fx->offset;
    if (fx->length < 8)
        return bad(why, why_len, "fixups section too short");
    uint32_t n = snap_le32(p);
    if (snap_le32(p + 4) != 0 || fx->length != 8 + (uint64_t)n * VMTS_FIXUP_ENTRY)
        return bad(why, why_len, "fixups: %u records in %llu bytes", n, (unsigned long long)fx->length);
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *e = p + 8 + (uint64_t)i * VMTS_FIXUP_ENTRY;
        uint32_t vcpu = snap_le32(e), group = snap_le32(e + 4);
        const char *field = (const char *)e + 8, *how = (const char *)e + 40;
        if (vcpu >= s->nvcpus || group & ~0x1ffu || !memchr(field, 0, 24) || !memchr(how, 0, 200))
            return bad(why, why_len, "fixup %u: bad vCPU, group or unterminated text", i);
        if (snap_fixup_add(s, vcpu, group, field, snap_le64(e + 32), how))
            return bad(why, why_len, "out of memory");
    }
    return VMT_OK;
}

vmt_status snap_load_vmts(vmt_snapshot *s, char *why, size_t why_len)
{
    sec secs[VMTS_SEC_TYPES];
    memset(secs, 0, sizeof secs);
    vmt_status st = read_table(s, secs, why, why_len);
    if (st)
        return st;
    const sec *clk = &secs[VMTS_SEC_CLOCK];
    if (clk->length != 24)
        return bad(why, why_len, "clock section is %llu bytes (24 expected)", (unsigned long long)clk->length);
    s->clock.tsc_hz = snap_le64(s->file + clk->offset);
    s->clock.insns_per_sec = snap_le64(s->file + clk->offset + 8);
    s->clock.start_ns = snap_le64(s->file + clk->offset + 16);
    if ((st = load_meta(s, &secs[VMTS_SEC_META], why, why_len)) ||
        (st = load_memmap(s, &secs[VMTS_SEC_MEMMAP], &secs[VMTS_SEC_CHUNKS], &secs[VMTS_SEC_MEMDATA], why,
                          why_len)) ||
        (st = load_vcpus(s, &secs[VMTS_SEC_VCPUS], why, why_len)) ||
        (st = load_fixups(s, &secs[VMTS_SEC_FIXUPS], why, why_len)))
        return st;
    const sec *pl = &secs[VMTS_SEC_PLATFORM];
    if (pl->present && pl->length) {
        s->platform = malloc(pl->length);
        if (!s->platform)
            return bad(why, why_len, "out of memory");
        memcpy(s->platform, s->file + pl->offset, pl->length);
        s->platform_len = pl->length;
    }
    return VMT_OK;
}

vmt_status snap_vmts_fill(vmt_snapshot *s, const snap_block *b, vmt_pa gpa, uint64_t len)
{
    uint64_t first = (gpa - b->gpa) / s->chunk_size, last = (gpa - b->gpa + len - 1) / s->chunk_size;
    for (uint64_t k = first; k <= last; k++) {
        uint64_t idx = b->first_chunk + k;
        if (s->chunk_done[idx])
            continue;
        const snap_chunk *c = &s->chunks[idx];
        uint8_t *dst = (uint8_t *)b->data + k * s->chunk_size;
        uint64_t want = b->size - k * s->chunk_size < s->chunk_size ? b->size - k * s->chunk_size : s->chunk_size;
        if (!(c->flags & SNAP_CHUNK_ZERO)) { /* zero chunks: the anonymous mapping is already zero */
            if (!s->dctx && !(s->dctx = ZSTD_createDCtx()))
                return vmt_errbuf_set(&s->err, VMT_E_NOMEM, "vmtrap snapshot: out of memory for zstd");
            size_t got = ZSTD_decompressDCtx(s->dctx, dst, want, s->memdata + c->offset, c->csize);
            if (ZSTD_isError(got) || got != want)
                return vmt_errbuf_set(&s->err, VMT_E_FORMAT, "vmtrap snapshot: memory chunk %llu does not decompress: %s",
                                      (unsigned long long)idx, ZSTD_isError(got) ? ZSTD_getErrorName(got) : "short");
        }
        s->chunk_done[idx] = 1;
    }
    return VMT_OK;
}
