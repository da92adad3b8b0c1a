/*
 * os/linux/os.c — opening a Linux guest: kallsyms from a physical scan,
 * the kernel image's physical placement, memory readers, symbol lookups
 * and the optional System.map check. See vmtrap/os.h.
 */
#include "os/linux/os_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KERNEL_MAP 0xffffffff80000000ull
#define TEXT_LINK 0xffffffff81000000ull
#define SCAN_CHUNK (16u << 20)
#define AFTER_SIG (8u << 20)  /* window after the signature (6.4+ puts offsets there) */
#define IMAGE_MAX (1ull << 30)

static vmt_status rd_phys(void *ctx, vmt_pa pa, void *buf, size_t len)
{
    return vmt_drv_read_phys(ctx, pa, buf, len);
}

/* Read RAM [sig_pa - before, sig_pa + after) (clipped, 8-aligned start)
 * into a new buffer; *base is its first PA. */
static uint8_t *read_window(vmt_os *os, uint64_t sig_pa, uint64_t before, uint64_t after, uint64_t *base,
                            size_t *len, vmt_status *st)
{
    uint64_t lo = sig_pa > before ? (sig_pa - before) & ~7ull : 0;
    uint64_t hi = sig_pa + after < os->ram_bytes ? sig_pa + after : os->ram_bytes;
    *len = (size_t)(hi - lo);
    *base = lo;
    uint8_t *w = malloc(*len);
    if (!w) {
        *st = vmt_errbuf_set(&os->err, VMT_E_NOMEM, "os: no memory for a %zu-byte window", *len);
        return NULL;
    }
    *st = vmt_drv_read_phys(os->drv, lo, w, *len);
    if (*st) {
        vmt_errbuf_set(&os->err, *st, "os: reading RAM at 0x%" PRIx64 ": %s", lo, vmt_driver_error(os->drv));
        free(w);
        return NULL;
    }
    return w;
}

/* A digit signature at sig_pa: check its tokens in a small window first,
 * then parse with growing windows (most kernels need a few MiB). */
static vmt_status try_window(vmt_os *os, uint64_t sig_pa)
{
    static const uint64_t spans[] = { 4u << 20, 16u << 20, KSYM_MAX_SPAN };
    uint64_t base;
    size_t len;
    vmt_status st;
    uint8_t *w = read_window(os, sig_pa, 65536 + 8, 16384, &base, &len, &st);
    if (!w)
        return st;
    st = ksym_check_tokens(w, len, (size_t)(sig_pa - base), &os->err);
    free(w);
    if (st)
        return st;
    for (size_t i = 0; i < sizeof spans / sizeof spans[0]; i++) {
        uint64_t after = i + 1 < sizeof spans / sizeof spans[0] ? spans[i] / 2 : AFTER_SIG;
        if (!(w = read_window(os, sig_pa, spans[i], after, &base, &len, &st)))
            return st;
        st = ksym_parse(w, len, (size_t)(sig_pa - base), &os->ks, &os->err);
        free(w);
        if (!st) {
            os->info.kallsyms_pa = base + os->ks.off_token_table;
            return VMT_OK;
        }
        if (base == 0 && sig_pa + after >= os->ram_bytes)
            break; /* the window already held all of RAM */
    }
    return st;
}

static vmt_status find_kallsyms(vmt_os *os)
{
    uint8_t *chunk = malloc(SCAN_CHUNK + 64);
    if (!chunk)
        return vmt_errbuf_set(&os->err, VMT_E_NOMEM, "os: no memory to scan RAM");
    vmt_status last = VMT_E_NOTFOUND;
    char last_msg[VMT_ERRBUF_LEN] = "";
    for (uint64_t base = 0; base < os->ram_bytes; base += SCAN_CHUNK) {
        size_t len = (size_t)(os->ram_bytes - base < SCAN_CHUNK + 64 ? os->ram_bytes - base : SCAN_CHUNK + 64);
        if (vmt_drv_read_phys(os->drv, base, chunk, len) != VMT_OK)
            continue; /* a hole in the memory map */
        for (size_t off = ksym_find_signature(chunk, len, 0); off != (size_t)-1;
             off = ksym_find_signature(chunk, len, off + 1)) {
            if (off >= SCAN_CHUNK)
                break; /* the next chunk sees it whole */
            vmt_status st = try_window(os, base + off);
            if (st == VMT_OK) {
                free(chunk);
                return VMT_OK;
            }
            last = st;
            snprintf(last_msg, sizeof last_msg, "%s", os->err.msg);
        }
    }
    free(chunk);
    if (last == VMT_E_NOTFOUND)
        return vmt_errbuf_set(&os->err, VMT_E_NOTFOUND,
                              "os: no kallsyms token table in %" PRIu64 " MiB of RAM (not Linux, or no CONFIG_KALLSYMS)",
                              os->ram_bytes >> 20);
    return vmt_errbuf_set(&os->err, last, "%s", last_msg);
}

vmt_status os_image_pa(const vmt_os *os, uint64_t va, uint64_t *pa)
{
    if (va < os->info.text_va || va - os->info.text_va >= os->image_len)
        return VMT_E_RANGE;
    *pa = os->info.text_pa + (va - os->info.text_va);
    return VMT_OK;
}

vmt_status os_read_image(vmt_os *os, uint64_t va, void *buf, size_t len)
{
    uint64_t pa;
    if (os_image_pa(os, va, &pa) || len > IMAGE_MAX)
        return vmt_errbuf_set(&os->err, VMT_E_RANGE, "os: 0x%" PRIx64 " is not in the kernel image", va);
    vmt_status st = vmt_drv_read_phys(os->drv, pa, buf, len);
    if (st)
        return vmt_errbuf_set(&os->err, st, "os: reading kernel image at 0x%" PRIx64 ": %s", va,
                              vmt_driver_error(os->drv));
    return VMT_OK;
}

vmt_status os_sym(vmt_os *os, const char *name, uint64_t *addr)
{
    int64_t i = ksym_by_name(&os->ks, name);
    if (i < 0)
        return vmt_errbuf_set(&os->err, VMT_E_NOTFOUND, "os: kallsyms has no symbol '%s'", name);
    *addr = os->ks.addr[i];
    return VMT_OK;
}

/* _text's physical address: the 2 MiB-aligned candidate below the kallsyms
 * tables under which linux_banner reads "Linux version ". */
static vmt_status place_image(vmt_os *os)
{
    uint64_t text, banner;
    if (os_sym(os, "_text", &text) && os_sym(os, "_stext", &text))
        return os->err.status;
    if (os_sym(os, "linux_banner", &banner))
        return os->err.status;
    if (banner < text || banner - text >= IMAGE_MAX)
        return vmt_errbuf_set(&os->err, VMT_E_FORMAT, "os: linux_banner 0x%" PRIx64 " is not in the image at 0x%" PRIx64,
                              banner, text);
    uint64_t top = os->info.kallsyms_pa & ~0x1fffffull;
    for (uint64_t k = 0; k <= top / 0x200000 && k < 512; k++) {
        uint64_t cand = top - k * 0x200000;
        char b[sizeof os->info.version];
        uint64_t pa = cand + (banner - text);
        if (pa + sizeof b > os->ram_bytes || vmt_drv_read_phys(os->drv, pa, b, sizeof b))
            continue;
        if (memcmp(b, "Linux version ", 14) != 0)
            continue;
        b[sizeof b - 1] = 0;
        b[strcspn(b, "\n")] = 0;
        os->info.text_va = text;
        os->info.text_pa = cand;
        uint64_t end;
        os->image_len = os_sym(os, "_end", &end) == VMT_OK && end > text && end - text < IMAGE_MAX ? end - text
                                                                                              : (64u << 20);
        snprintf(os->info.version, sizeof os->info.version, "%s", b);
        return VMT_OK;
    }
    return vmt_errbuf_set(&os->err, VMT_E_NOTFOUND,
                          "os: no 2 MiB-aligned placement of the kernel image shows linux_banner below PA 0x%" PRIx64,
                          os->info.kallsyms_pa);
}

static vmt_status setup_paging(vmt_os *os)
{
    uint64_t va, v;
    os->info.kaslr_slide = (int64_t)(os->info.text_va - TEXT_LINK);
    /* phys_base, when the kernel has it, must agree with the placement. */
    if (os_sym(os, "phys_base", &va) == VMT_OK && os_read_image(os, va, &v, 8) == VMT_OK &&
        os->info.text_va - KERNEL_MAP + v != os->info.text_pa)
        return vmt_errbuf_set(&os->err, VMT_E_FORMAT,
                              "os: phys_base 0x%" PRIx64 " disagrees with _text at PA 0x%" PRIx64, v, os->info.text_pa);
    if (os_sym(os, "init_top_pgt", &va) && os_sym(os, "init_level4_pgt", &va))
        return os->err.status;
    if (os_image_pa(os, va, &os->info.init_pgt_pa))
        return vmt_errbuf_set(&os->err, VMT_E_FORMAT, "os: init_top_pgt outside the image");
    uint32_t l5 = 0;
    if (os_sym(os, "__pgtable_l5_enabled", &va) == VMT_OK)
        (void)os_read_image(os, va, &l5, 4);
    os->info.levels = l5 ? 5 : 4;
    os->paging.levels = (uint8_t)os->info.levels;
    os->paging.maxphyaddr = vmt_driver_caps(os->drv)->maxphyaddr;
    os->paging.nxe = 1;
    if (os_sym(os, "page_offset_base", &va) == VMT_OK)
        (void)os_read_image(os, va, &os->info.page_offset_base, 8);
    vmt_errbuf_clear(&os->err);
    return VMT_OK;
}

vmt_status vmt_os_open(vmt_driver *d, const vmt_os_config *cfg, vmt_os **out, char *why, size_t why_len)
{
    if (!d || !out) {
        vmt_why(why, why_len, "os: NULL driver or result");
        return VMT_E_INVAL;
    }
    *out = NULL;
    if (!vmt_driver_has(d, VMT_CAP_READ_PHYS)) {
        vmt_why(why, why_len, "os: driver '%s' cannot read physical memory", vmt_driver_name(d));
        return VMT_E_NOTSUP;
    }
    vmt_os *os = calloc(1, sizeof *os);
    if (!os) {
        vmt_why(why, why_len, "os: no memory");
        return VMT_E_NOMEM;
    }
    os->drv = d;
    os->ram_bytes = vmt_driver_caps(d)->ram_frames * 4096;
    vmt_status st = find_kallsyms(os);
    if (!st)
        st = place_image(os);
    if (!st)
        st = setup_paging(os);
    if (!st && cfg && cfg->system_map)
        st = vmt_os_check_system_map(os, cfg->system_map);
    if (st) {
        vmt_why(why, why_len, "%s", os->err.msg);
        vmt_os_close(os);
        return st;
    }
    os->info.nsyms = os->ks.count;
    if (cfg && cfg->no_btf)
        snprintf(os->info.btf_note, sizeof os->info.btf_note, "types not loaded: BTF was turned off");
    else
        os_btf_load(os);
    os_offsets_load(os);
    vmt_errbuf_clear(&os->err);
    *out = os;
    return VMT_OK;
}

void vmt_os_close(vmt_os *os)
{
    if (!os)
        return;
    ksym_free(&os->ks);
    os_btf_free(os);
    free(os);
}

const char *vmt_os_error(const vmt_os *os)
{
    return os ? os->err.msg : "os: NULL handle";
}

void vmt_os_get_info(const vmt_os *os, vmt_os_info *out)
{
    *out = os->info;
}

vmt_status vmt_os_check(const vmt_os *os, char *why, size_t why_len)
{
    vmt_status st = ksym_check(&os->ks, why, why_len);
    if (st)
        return st;
    if (os->info.nsyms != os->ks.count || (os->info.has_btf && !os->btf) || (!os->info.has_btf && os->btf)) {
        vmt_why(why, why_len, "os: info disagrees with the tables");
        return VMT_E_INTERNAL;
    }
    if (os->info.text_pa & 0x1fffff || os->info.levels < 4 || os->info.levels > 5) {
        vmt_why(why, why_len, "os: image placement or paging levels invalid");
        return VMT_E_INTERNAL;
    }
    return VMT_OK;
}

/* ---- symbols ---- */

uint32_t vmt_os_symbol_count(const vmt_os *os)
{
    return os->ks.count;
}

static void fill_sym(const vmt_os *os, uint32_t i, vmt_os_symbol *out)
{
    out->name = ksym_name(&os->ks, i);
    out->addr = os->ks.addr[i];
    out->type = os->ks.type[i];
    out->index = i;
}

vmt_status vmt_os_symbol_at(const vmt_os *os, uint32_t index, vmt_os_symbol *out)
{
    if (index >= os->ks.count)
        return VMT_E_RANGE;
    fill_sym(os, index, out);
    return VMT_OK;
}

vmt_status vmt_os_symbol_by_name(vmt_os *os, const char *name, vmt_os_symbol *out)
{
    int64_t i = name ? ksym_by_name(&os->ks, name) : -1;
    if (i < 0)
        return vmt_errbuf_set(&os->err, VMT_E_NOTFOUND, "os: kallsyms has no symbol '%s'", name ? name : "(null)");
    fill_sym(os, (uint32_t)i, out);
    return VMT_OK;
}

vmt_status vmt_os_symbol_by_addr(vmt_os *os, uint64_t va, vmt_os_symbol *out, uint64_t *offset)
{
    int64_t i = ksym_by_addr(&os->ks, va);
    if (i < 0)
        return vmt_errbuf_set(&os->err, VMT_E_NOTFOUND, "os: no symbol at or below 0x%" PRIx64, va);
    fill_sym(os, (uint32_t)i, out);
    if (offset)
        *offset = va - out->addr;
    return VMT_OK;
}

vmt_status vmt_os_check_system_map(vmt_os *os, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return vmt_errbuf_set(&os->err, VMT_E_IO, "os: cannot open System.map '%s'", path);
    char line[600], name[KSYM_NAME_MAX + 1];
    uint64_t slide = 0;
    int have_slide = 0;
    unsigned lineno = 0, compared = 0;
    vmt_status st = VMT_OK;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        unsigned long long a;
        char type;
        if (sscanf(line, "%llx %c %512s", &a, &type, name) != 3) {
            st = vmt_errbuf_set(&os->err, VMT_E_FORMAT, "os: System.map line %u is not 'address type name'", lineno);
            break;
        }
        int64_t i = ksym_by_name(&os->ks, name);
        if (i < 0 || type == 'a' || type == 'A')
            continue; /* kallsyms leaves some symbols out */
        if (!have_slide) {
            uint64_t text;
            if (strcmp(name, "_text") != 0 || os_sym(os, "_text", &text))
                continue;
            slide = text - a;
            have_slide = 1;
        }
        /* Static duplicates: any kallsyms entry of that name may match. */
        int found = 0;
        int64_t pos = ksym_name_pos(&os->ks, name);
        for (uint32_t k = (uint32_t)pos; k < os->ks.count; k++) {
            uint32_t idx = os->ks.by_name[k];
            if (strcmp(ksym_name(&os->ks, idx), name) != 0)
                break;
            if (os->ks.addr[idx] == a + slide) {
                found = 1;
                break;
            }
        }
        if (!found) {
            st = vmt_errbuf_set(&os->err, VMT_E_CONFLICT,
                                "os: System.map disagrees with the guest's kallsyms at '%s': map 0x%llx (+slide "
                                "0x%" PRIx64 "), kallsyms 0x%" PRIx64,
                                name, a, slide, os->ks.addr[i]);
            break;
        }
        compared++;
    }
    fclose(f);
    if (!st && compared == 0)
        st = vmt_errbuf_set(&os->err, VMT_E_FORMAT, "os: System.map '%s' has no symbol kallsyms knows (no _text?)", path);
    return st;
}

/* ---- memory ---- */

vmt_status vmt_os_read_virt(vmt_os *os, uint64_t root_pa, uint64_t va, void *buf, size_t len, size_t *done)
{
    vmt_phys_reader rd = { rd_phys, os->drv };
    size_t got = 0;
    vmt_status st = VMT_OK;
    while (got < len) {
        vmt_walk w;
        char why[160];
        uint64_t cur = va + got;
        st = vmt_paging_walk(&rd, &os->paging, root_pa, cur, &w, why, sizeof why);
        if (st) {
            vmt_errbuf_set(&os->err, st, "os: %s at VA 0x%" PRIx64 "%s%s",
                           st == VMT_E_NOT_PRESENT ? "not present" : "cannot translate", cur, why[0] ? ": " : "",
                           st == VMT_E_NOT_PRESENT ? "" : why);
            break;
        }
        uint64_t in_page = w.page_size - (w.pa & (w.page_size - 1));
        size_t n = len - got < in_page ? len - got : (size_t)in_page;
        if ((st = vmt_drv_read_phys(os->drv, w.pa, (uint8_t *)buf + got, n))) {
            vmt_errbuf_set(&os->err, st, "os: reading PA 0x%" PRIx64 " (VA 0x%" PRIx64 "): %s", w.pa, cur,
                           vmt_driver_error(os->drv));
            break;
        }
        got += n;
    }
    if (done)
        *done = got;
    return st;
}

vmt_status vmt_os_read_kernel(vmt_os *os, uint64_t va, void *buf, size_t len, size_t *done)
{
    uint64_t pa;
    if (os_image_pa(os, va, &pa) == VMT_OK && os_image_pa(os, va + len - 1, &pa) == VMT_OK && len) {
        vmt_status st = os_read_image(os, va, buf, len);
        if (done)
            *done = st ? 0 : len;
        return st;
    }
    return vmt_os_read_virt(os, os->info.init_pgt_pa, va, buf, len, done);
}
