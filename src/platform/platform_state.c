/*
 * platform/platform_state.c — the platform's state blob and invariant check.
 *
 * Blob layout (all integers little-endian):
 *   "VMTPLAT\0"  magic (8 bytes)
 *   u32          format version (PLAT_FORMAT_VERSION)
 *   u32          number of sections
 *   sections     name (8 bytes, NUL padded), u32 section version,
 *                u32 payload length, payload
 *   u64          FNV-1a 64 of every byte before it
 * Sections: "core" (virtual time, vCPU count, device mask, interrupt line
 * sources) first, then one per enabled device ("lapic" holds every vCPU's
 * LAPIC). Each device writes its fields one by one (no struct images), so
 * the blob does not depend on the compiler's layout.
 *
 * Load: structure, checksum, versions and lengths are checked first; each
 * device's loader range-checks its fields; then every device's invariant
 * checker runs on the scratch state. Only a blob that passes everything
 * replaces the live state (one struct copy): failure atomic.
 */
#include <stdlib.h>
#include <string.h>

#include "platform/platform_internal.h"

#define PLAT_FORMAT_VERSION 1u
#define SECTION_VERSION 1u
static const char plat_magic[8] = "VMTPLAT";

/* ---------- writer ---------- */

static void w_reserve(plat_w *w, size_t n)
{
    if (w->oom)
        return;
    if (w->len + n <= w->cap)
        return;
    size_t cap = w->cap ? w->cap : 4096;
    while (cap < w->len + n)
        cap *= 2;
    uint8_t *b = realloc(w->buf, cap);
    if (!b) {
        w->oom = true;
        return;
    }
    w->buf = b;
    w->cap = cap;
}

void plat_w_bytes(plat_w *w, const void *p, size_t n)
{
    w_reserve(w, n);
    if (w->oom)
        return;
    memcpy(w->buf + w->len, p, n);
    w->len += n;
}

static void w_le(plat_w *w, uint64_t v, unsigned n)
{
    uint8_t b[8];
    for (unsigned i = 0; i < n; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    plat_w_bytes(w, b, n);
}

void plat_w_u8(plat_w *w, uint8_t v) { w_le(w, v, 1); }
void plat_w_u16(plat_w *w, uint16_t v) { w_le(w, v, 2); }
void plat_w_u32(plat_w *w, uint32_t v) { w_le(w, v, 4); }
void plat_w_u64(plat_w *w, uint64_t v) { w_le(w, v, 8); }

/* ---------- reader ---------- */

void plat_r_bytes(plat_r *r, void *p, size_t n)
{
    if (r->short_read || r->left < n) {
        r->short_read = true;
        memset(p, 0, n);
        return;
    }
    memcpy(p, r->p, n);
    r->p += n;
    r->left -= n;
}

static uint64_t r_le(plat_r *r, unsigned n)
{
    uint8_t b[8];
    plat_r_bytes(r, b, n);
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++)
        v |= (uint64_t)b[i] << (8 * i);
    return v;
}

uint8_t plat_r_u8(plat_r *r) { return (uint8_t)r_le(r, 1); }
uint16_t plat_r_u16(plat_r *r) { return (uint16_t)r_le(r, 2); }
uint32_t plat_r_u32(plat_r *r) { return (uint32_t)r_le(r, 4); }
uint64_t plat_r_u64(plat_r *r) { return r_le(r, 8); }

bool plat_r_bool(plat_r *r)
{
    uint8_t v = plat_r_u8(r);
    if (v > 1)
        r->short_read = true;
    return v == 1;
}

static uint64_t fnv1a(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* ---------- sections ---------- */

static size_t section_begin(plat_w *w, const char *name)
{
    char n[8] = {0};
    memcpy(n, name, strnlen(name, 8));
    plat_w_bytes(w, n, 8);
    plat_w_u32(w, SECTION_VERSION);
    size_t at = w->len;
    plat_w_u32(w, 0);
    return at;
}

static void section_end(plat_w *w, size_t at)
{
    if (w->oom)
        return;
    uint32_t len = (uint32_t)(w->len - at - 4);
    for (unsigned i = 0; i < 4; i++)
        w->buf[at + i] = (uint8_t)(len >> (8 * i));
}

static const struct {
    const char *name;
    uint32_t dev;
} section_devs[] = {
    {"lapic", VMT_PLATFORM_DEV_LAPIC}, {"ioapic", VMT_PLATFORM_DEV_IOAPIC},
    {"pic", VMT_PLATFORM_DEV_PIC},     {"pit", VMT_PLATFORM_DEV_PIT},
    {"hpet", VMT_PLATFORM_DEV_HPET},   {"rtc", VMT_PLATFORM_DEV_RTC},
    {"uart", VMT_PLATFORM_DEV_UART},   {"i8042", VMT_PLATFORM_DEV_I8042},
    {"misc", VMT_PLATFORM_DEV_MISC},
};
#define SECTION_DEVS (sizeof section_devs / sizeof section_devs[0])

static void save_device(const plat_state *s, uint32_t dev, plat_w *w)
{
    switch (dev) {
    case VMT_PLATFORM_DEV_LAPIC:
        plat_w_u32(w, s->vcpus);
        for (uint32_t i = 0; i < s->vcpus; i++)
            vmt_lapic_save(&s->lapic[i], w);
        break;
    case VMT_PLATFORM_DEV_IOAPIC: vmt_ioapic_save(&s->ioapic, w); break;
    case VMT_PLATFORM_DEV_PIC:
        vmt_pic_save(&s->pic[0], w);
        vmt_pic_save(&s->pic[1], w);
        break;
    case VMT_PLATFORM_DEV_PIT: vmt_pit_save(&s->pit, w); break;
    case VMT_PLATFORM_DEV_HPET: vmt_hpet_save(&s->hpet, w); break;
    case VMT_PLATFORM_DEV_RTC: vmt_rtc_save(&s->rtc, w); break;
    case VMT_PLATFORM_DEV_UART: vmt_uart_save(&s->uart, w); break;
    case VMT_PLATFORM_DEV_I8042: vmt_kbd_save(&s->kbd, w); break;
    case VMT_PLATFORM_DEV_MISC: vmt_misc_save(&s->misc, w); break;
    default: break;
    }
}

static vmt_status load_device(plat_state *s, uint32_t dev, plat_r *r, vmt_errbuf *e)
{
    switch (dev) {
    case VMT_PLATFORM_DEV_LAPIC: {
        uint32_t n = plat_r_u32(r);
        if (n != s->vcpus)
            return vmt_errbuf_set(e, VMT_E_FORMAT, "platform state: lapic section has %u LAPICs for %u vCPUs",
                                  n, s->vcpus);
        for (uint32_t i = 0; i < n; i++) {
            vmt_status st = vmt_lapic_load(&s->lapic[i], r, e);
            if (st != VMT_OK)
                return st;
        }
        return VMT_OK;
    }
    case VMT_PLATFORM_DEV_IOAPIC: return vmt_ioapic_load(&s->ioapic, r, e);
    case VMT_PLATFORM_DEV_PIC: {
        vmt_status st = vmt_pic_load(&s->pic[0], r, e);
        return st != VMT_OK ? st : vmt_pic_load(&s->pic[1], r, e);
    }
    case VMT_PLATFORM_DEV_PIT: return vmt_pit_load(&s->pit, r, e);
    case VMT_PLATFORM_DEV_HPET: return vmt_hpet_load(&s->hpet, r, e);
    case VMT_PLATFORM_DEV_RTC: return vmt_rtc_load(&s->rtc, r, e);
    case VMT_PLATFORM_DEV_UART: return vmt_uart_load(&s->uart, r, e);
    case VMT_PLATFORM_DEV_I8042: return vmt_kbd_load(&s->kbd, r, e);
    case VMT_PLATFORM_DEV_MISC: return vmt_misc_load(&s->misc, r, e);
    default: return vmt_errbuf_set(e, VMT_E_INTERNAL, "platform state: no loader for device 0x%x", dev);
    }
}

static vmt_status check_state(const plat_state *s, vmt_errbuf *e)
{
    if (s->vcpus == 0 || s->vcpus > VMT_PLATFORM_MAX_VCPUS)
        return vmt_errbuf_set(e, VMT_E_INTERNAL, "platform: %u vCPUs", s->vcpus);
    for (unsigned i = 0; i < PLAT_LINES; i++)
        if (s->line_src[i] >> PLAT_SRC_COUNT)
            return vmt_errbuf_set(e, VMT_E_INTERNAL, "platform: line %u has unknown sources 0x%x", i,
                                  s->line_src[i]);
    vmt_status st = VMT_OK;
    uint32_t d = s->devices;
    if (d & VMT_PLATFORM_DEV_LAPIC)
        for (uint32_t i = 0; i < s->vcpus && st == VMT_OK; i++)
            st = vmt_lapic_check(&s->lapic[i], i, s->now_ns, e);
    if (st == VMT_OK && (d & VMT_PLATFORM_DEV_IOAPIC))
        st = vmt_ioapic_check(&s->ioapic, e);
    if (st == VMT_OK && (d & VMT_PLATFORM_DEV_PIC)) {
        st = vmt_pic_check(&s->pic[0], e);
        if (st == VMT_OK)
            st = vmt_pic_check(&s->pic[1], e);
    }
    if (st == VMT_OK && (d & VMT_PLATFORM_DEV_PIT))
        st = vmt_pit_check(&s->pit, s->now_ns, e);
    if (st == VMT_OK && (d & VMT_PLATFORM_DEV_HPET))
        st = vmt_hpet_check(&s->hpet, s->now_ns, e);
    if (st == VMT_OK && (d & VMT_PLATFORM_DEV_RTC))
        st = vmt_rtc_check(&s->rtc, s->now_ns, e);
    if (st == VMT_OK && (d & VMT_PLATFORM_DEV_UART))
        st = vmt_uart_check(&s->uart, e);
    if (st == VMT_OK && (d & VMT_PLATFORM_DEV_I8042))
        st = vmt_kbd_check(&s->kbd, e);
    if (st == VMT_OK && (d & VMT_PLATFORM_DEV_MISC))
        st = vmt_misc_check(&s->misc, e);
    return st;
}

vmt_status vmt_platform_check(vmt_platform *p)
{
    if (!p)
        return VMT_E_INVAL;
    if (p->line_len > PLAT_LINE_MAX || p->input_count > PLAT_INPUT_MAX || p->input_head >= PLAT_INPUT_MAX ||
        p->unknown_count > PLAT_UNKNOWN_MAX)
        return vmt_errbuf_set(&p->err, VMT_E_INTERNAL, "platform: host buffers out of range");
    vmt_errbuf e = {0};
    vmt_status st = check_state(&p->s, &e);
    if (st != VMT_OK)
        return vmt_errbuf_set(&p->err, VMT_E_INTERNAL, "%s", e.msg);
    return VMT_OK;
}

vmt_status vmt_platform_save(vmt_platform *p, uint8_t **out, size_t *out_len)
{
    if (!p || !out || !out_len)
        return VMT_E_INVAL;
    plat_w w = {0};
    plat_w_bytes(&w, plat_magic, 8);
    plat_w_u32(&w, PLAT_FORMAT_VERSION);
    uint32_t n = 1;
    for (size_t i = 0; i < SECTION_DEVS; i++)
        if (p->s.devices & section_devs[i].dev)
            n++;
    plat_w_u32(&w, n);
    size_t at = section_begin(&w, "core");
    plat_w_u64(&w, p->s.now_ns);
    plat_w_u32(&w, p->s.vcpus);
    plat_w_u32(&w, p->s.devices);
    plat_w_bytes(&w, p->s.line_src, PLAT_LINES);
    section_end(&w, at);
    for (size_t i = 0; i < SECTION_DEVS; i++) {
        if (!(p->s.devices & section_devs[i].dev))
            continue;
        at = section_begin(&w, section_devs[i].name);
        save_device(&p->s, section_devs[i].dev, &w);
        section_end(&w, at);
    }
    if (!w.oom)
        plat_w_u64(&w, fnv1a(w.buf, w.len));
    if (w.oom) {
        free(w.buf);
        return vmt_errbuf_set(&p->err, VMT_E_NOMEM, "platform: out of memory saving state");
    }
    *out = w.buf;
    *out_len = w.len;
    return VMT_OK;
}

static vmt_status load_into(const vmt_platform *p, plat_state *s, const uint8_t *blob, size_t len,
                            vmt_errbuf *e)
{
    if (len < 8 + 4 + 4 + 8)
        return vmt_errbuf_set(e, VMT_E_FORMAT, "platform state: %zu bytes is too short", len);
    if (memcmp(blob, plat_magic, 8) != 0)
        return vmt_errbuf_set(e, VMT_E_FORMAT, "platform state: bad magic (not a vmtrap platform state)");
    plat_r r = {blob + 8, len - 8 - 8, false};
    uint32_t version = plat_r_u32(&r);
    if (version != PLAT_FORMAT_VERSION)
        return vmt_errbuf_set(e, VMT_E_FORMAT, "platform state: format version %u, this build reads %u",
                              version, PLAT_FORMAT_VERSION);
    uint64_t want = 0;
    for (unsigned i = 0; i < 8; i++)
        want |= (uint64_t)blob[len - 8 + i] << (8 * i);
    if (fnv1a(blob, len - 8) != want)
        return vmt_errbuf_set(e, VMT_E_FORMAT, "platform state: checksum mismatch (corrupt or truncated)");
    uint32_t count = plat_r_u32(&r);
    uint32_t seen = 0;
    for (uint32_t k = 0; k < count; k++) {
        char name[9] = {0};
        plat_r_bytes(&r, name, 8);
        uint32_t sver = plat_r_u32(&r);
        uint32_t slen = plat_r_u32(&r);
        if (r.short_read || slen > r.left)
            return vmt_errbuf_set(e, VMT_E_FORMAT, "platform state: section %u overruns the blob", k);
        if (sver != SECTION_VERSION)
            return vmt_errbuf_set(e, VMT_E_FORMAT, "platform state: section '%s' version %u, this build reads %u",
                                  name, sver, SECTION_VERSION);
        plat_r sr = {r.p, slen, false};
        r.p += slen;
        r.left -= slen;
        vmt_status st;
        if (k == 0) {
            if (strcmp(name, "core") != 0)
                return vmt_errbuf_set(e, VMT_E_FORMAT, "platform state: first section is '%s', not 'core'", name);
            s->now_ns = plat_r_u64(&sr);
            s->vcpus = plat_r_u32(&sr);
            s->devices = plat_r_u32(&sr);
            plat_r_bytes(&sr, s->line_src, PLAT_LINES);
            if (!sr.short_read && (s->vcpus != p->s.vcpus || s->devices != p->s.devices))
                return vmt_errbuf_set(e, VMT_E_CONFLICT,
                                      "platform state: saved with %u vCPUs and devices 0x%x; this platform has %u and 0x%x",
                                      s->vcpus, s->devices, p->s.vcpus, p->s.devices);
            st = VMT_OK;
        } else {
            size_t i = 0;
            while (i < SECTION_DEVS && strcmp(name, section_devs[i].name) != 0)
                i++;
            if (i == SECTION_DEVS)
                return vmt_errbuf_set(e, VMT_E_FORMAT, "platform state: unknown section '%s'", name);
            uint32_t dev = section_devs[i].dev;
            if (!(s->devices & dev))
                return vmt_errbuf_set(e, VMT_E_FORMAT, "platform state: section '%s' for a device not present", name);
            if (seen & dev)
                return vmt_errbuf_set(e, VMT_E_FORMAT, "platform state: section '%s' appears twice", name);
            seen |= dev;
            st = load_device(s, dev, &sr, e);
        }
        if (st != VMT_OK)
            return st;
        if (sr.short_read || sr.left != 0)
            return vmt_errbuf_set(e, VMT_E_FORMAT,
                                  "platform state: section '%s' is malformed (%s)", name,
                                  sr.short_read ? "truncated or a flag not 0/1" : "trailing bytes");
    }
    if (count == 0)
        return vmt_errbuf_set(e, VMT_E_FORMAT, "platform state: no sections");
    if (r.left != 0)
        return vmt_errbuf_set(e, VMT_E_FORMAT, "platform state: %zu bytes after the last section", r.left);
    uint32_t with_state = 0;
    for (size_t i = 0; i < SECTION_DEVS; i++)
        with_state |= section_devs[i].dev;
    if (seen != (s->devices & with_state))
        return vmt_errbuf_set(e, VMT_E_FORMAT, "platform state: sections missing for devices 0x%x",
                              s->devices & with_state & ~seen);
    vmt_errbuf why = {0};
    if (check_state(s, &why) != VMT_OK)
        return vmt_errbuf_set(e, VMT_E_FORMAT, "platform state: inconsistent: %s", why.msg);
    return VMT_OK;
}

vmt_status vmt_platform_load(vmt_platform *p, const uint8_t *blob, size_t len)
{
    if (!p || (!blob && len))
        return VMT_E_INVAL;
    plat_state *s = calloc(1, sizeof *s);
    if (!s)
        return vmt_errbuf_set(&p->err, VMT_E_NOMEM, "platform: out of memory loading state");
    vmt_errbuf e = {0};
    vmt_status st = blob ? load_into(p, s, blob, len, &e)
                         : vmt_errbuf_set(&e, VMT_E_FORMAT, "platform state: empty");
    if (st == VMT_OK) {
        p->s = *s;
        p->stop_reason[0] = 0;
        p->line_len = 0; /* a partial line of the abandoned timeline */
    } else {
        vmt_errbuf_set(&p->err, st, "%s", e.msg);
    }
    free(s);
    return st;
}
