/*
 * tests/os/ksym_build.c — see ksym_build.h.
 */
#include "ksym_build.h"

#include <string.h>

static size_t al8(size_t x) { return (x + 7) & ~(size_t)7; }
static void w16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void w32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static void w64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i)); }

static const char *token_of(unsigned i, char one[2])
{
    if (i == 1)
        return "fn_";
    if (i == 2)
        return "sys_";
    if (i >= 0x20 && i < 0x7f) {
        one[0] = (char)i;
        one[1] = 0;
        return one;
    }
    return "zz";
}

/* Encode "T" + name into token bytes. */
static size_t encode(char type, const char *name, uint8_t *out)
{
    size_t o = 0;
    out[o++] = (uint8_t)type;
    for (const char *p = name; *p;) {
        if (strncmp(p, "fn_", 3) == 0) {
            out[o++] = 1;
            p += 3;
        } else if (strncmp(p, "sys_", 4) == 0) {
            out[o++] = 2;
            p += 4;
        } else {
            out[o++] = (uint8_t)*p++;
        }
    }
    return o;
}

size_t kb_build(uint8_t *buf, size_t cap, size_t at, const kb_sym *syms, size_t n, uint64_t base, kb_layout *lo)
{
    size_t p = at;
    kb_layout l;
    l.offsets = p;
    if (p + al8(4 * n) + 16 > cap)
        return 0;
    for (size_t i = 0; i < n; i++) {
        int32_t off = syms[i].addr >= base ? (int32_t)(-(int64_t)(syms[i].addr - base) - 1) : (int32_t)syms[i].addr;
        w32(buf + p + 4 * i, (uint32_t)off);
    }
    p = al8(p + 4 * n);
    l.relative_base = p;
    w64(buf + p, base);
    p += 8;
    l.num_syms = p;
    w32(buf + p, (uint32_t)n);
    p = al8(p + 4);
    l.names = p;
    size_t nmark = (n + 255) / 256;
    uint32_t markers[4096];
    if (nmark > 4096)
        return 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t enc[1100];
        size_t e = encode(syms[i].type, syms[i].name, enc);
        if (i % 256 == 0)
            markers[i / 256] = (uint32_t)(p - l.names);
        if (p + e + 2 > cap)
            return 0;
        if (e >= 128) {
            buf[p++] = (uint8_t)(0x80 | (e & 0x7f));
            buf[p++] = (uint8_t)(e >> 7);
        } else {
            buf[p++] = (uint8_t)e;
        }
        memcpy(buf + p, enc, e);
        p += e;
    }
    p = al8(p);
    l.markers = p;
    if (p + 4 * nmark + 8 > cap)
        return 0;
    for (size_t i = 0; i < nmark; i++)
        w32(buf + p + 4 * i, markers[i]);
    p = al8(p + 4 * nmark);
    l.token_table = p;
    uint16_t idx[256];
    for (unsigned i = 0; i < 256; i++) {
        char one[2];
        const char *t = token_of(i, one);
        size_t tl = strlen(t);
        if (p + tl + 1 > cap)
            return 0;
        idx[i] = (uint16_t)(p - l.token_table);
        memcpy(buf + p, t, tl + 1);
        p += tl + 1;
    }
    p = al8(p);
    l.token_index = p;
    if (p + 512 > cap)
        return 0;
    for (unsigned i = 0; i < 256; i++)
        w16(buf + p + 2 * i, idx[i]);
    p += 512;
    l.end = p;
    if (lo)
        *lo = l;
    return p - at;
}
