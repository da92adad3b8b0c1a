/*
 * core/image.c — guest images: the common part (see vmtrap/image.h).
 *
 * Design: every source (ELF, raw + CPU state, segments in memory) ends in
 * vmt_image_new(), which copies and validates the segments once: sorted by
 * address, inside RAM, no overlaps, filesz <= memsz. Placing an image
 * re-validates against the RAM size the driver actually has, writes the
 * segments (and the zero fill) through the caller's writer and, for images
 * without CPU state, builds the boot-protocol page tables and GDT in a host
 * buffer and writes them in one call.
 *
 * Symbols are kept twice: sorted by value (vmt_image_symbol_at: binary
 * search, then a backward scan bounded by the running maximum of symbol
 * ends, so nested and zero-size symbols cannot hide an enclosing function)
 * and by name (vmt_image_symbol: binary search, best ranked first).
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "core/errbuf.h"
#include "core/image_internal.h"
#include "vmtrap/paging.h"

#define BOOT_GDT_CODE64 0x00af9b000000fffeULL /* limit bit 0 clear: reads as a not-present PTE */
#define BOOT_GDT_DATA   0x00cf93000000fffeULL
#define CR0_ET (1ULL << 4)
#define CR0_NE (1ULL << 5)

typedef struct seg_order {
    const vmt_image_segment *seg;
    size_t index; /* caller's index, for messages */
} seg_order;

static int cmp_seg_order(const void *a, const void *b)
{
    const seg_order *x = a, *y = b;
    if (x->seg->pa != y->seg->pa)
        return x->seg->pa < y->seg->pa ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

static vmt_status check_ram_size(uint64_t ram_size, char *why, size_t why_len)
{
    if (ram_size == 0 || ram_size % VMT_PAGE_SIZE) {
        vmt_why(why, why_len, "image: RAM size %" PRIu64 " is not a positive multiple of 4 KiB", ram_size);
        return VMT_E_INVAL;
    }
    return VMT_OK;
}

/* Validate one segment against RAM; idx names it. Empty segments (memsz 0)
 * occupy nothing and are not range-checked. */
static vmt_status check_segment(const vmt_image_segment *g, size_t idx, uint64_t ram_size, char *why,
                                size_t why_len)
{
    if (g->filesz > g->memsz) {
        vmt_why(why, why_len, "image: segment %zu at pa 0x%" PRIx64 " has file size 0x%" PRIx64
                " larger than its memory size 0x%" PRIx64, idx, g->pa, g->filesz, g->memsz);
        return VMT_E_FORMAT;
    }
    if (g->memsz && (g->pa >= ram_size || g->memsz > ram_size - g->pa)) {
        vmt_why(why, why_len, "image: segment %zu [0x%" PRIx64 ", +0x%" PRIx64 ") lies outside RAM (0x%" PRIx64
                " bytes)", idx, g->pa, g->memsz, ram_size);
        return VMT_E_RANGE;
    }
    return VMT_OK;
}

vmt_status vmt_image_check_layout(const vmt_image *img, uint64_t ram_size, char *why, size_t why_len)
{
    vmt_status st = check_ram_size(ram_size, why, why_len);
    if (st)
        return st;
    for (size_t i = 0; i < img->nsegs; i++) {
        const vmt_image_segment *g = &img->segs[i];
        if (g->memsz == 0 || (g->filesz && !g->data)) {
            vmt_why(why, why_len, "image: internal error: segment %zu is empty or has no data", i);
            return VMT_E_INTERNAL;
        }
        if ((st = check_segment(g, i, ram_size, why, why_len)))
            return st;
        if (i > 0 && img->segs[i - 1].pa + img->segs[i - 1].memsz > g->pa) {
            vmt_why(why, why_len, "image: internal error: segments %zu and %zu overlap or are unsorted", i - 1, i);
            return VMT_E_INTERNAL;
        }
    }
    return VMT_OK;
}

vmt_status vmt_image_new(const vmt_image_segment *segs, size_t n, uint64_t ram_size, vmt_image **out,
                         char *why, size_t why_len)
{
    *out = NULL;
    vmt_status st = check_ram_size(ram_size, why, why_len);
    if (st)
        return st;
    if (n && !segs) {
        vmt_why(why, why_len, "image: %zu segments but no segment array", n);
        return VMT_E_INVAL;
    }
    seg_order *order = calloc(n ? n : 1, sizeof *order);
    vmt_image *img = calloc(1, sizeof *img);
    if (!order || !img) {
        free(order);
        free(img);
        vmt_why(why, why_len, "image: out of memory");
        return VMT_E_NOMEM;
    }
    img->ram_size = ram_size;
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        if (segs[i].filesz && !segs[i].data) {
            vmt_why(why, why_len, "image: segment %zu has 0x%" PRIx64 " file bytes but no data", i, segs[i].filesz);
            st = VMT_E_INVAL;
            goto fail;
        }
        if ((st = check_segment(&segs[i], i, ram_size, why, why_len)))
            goto fail;
        if (segs[i].memsz == 0)
            continue;
        order[kept].seg = &segs[i];
        order[kept].index = i;
        kept++;
    }
    qsort(order, kept, sizeof *order, cmp_seg_order);
    for (size_t i = 1; i < kept; i++) {
        const vmt_image_segment *a = order[i - 1].seg, *b = order[i].seg;
        if (a->pa + a->memsz > b->pa) {
            vmt_why(why, why_len, "image: segments %zu [0x%" PRIx64 ", 0x%" PRIx64 ") and %zu [0x%" PRIx64 ", 0x%" PRIx64
                    ") overlap", order[i - 1].index, a->pa, a->pa + a->memsz, order[i].index, b->pa, b->pa + b->memsz);
            st = VMT_E_FORMAT;
            goto fail;
        }
    }
    img->segs = calloc(kept ? kept : 1, sizeof *img->segs);
    if (!img->segs)
        goto nomem;
    for (size_t i = 0; i < kept; i++) {
        const vmt_image_segment *g = order[i].seg;
        uint8_t *copy = NULL;
        if (g->filesz) {
            if (g->filesz > SIZE_MAX || !(copy = malloc((size_t)g->filesz)))
                goto nomem;
            memcpy(copy, g->data, (size_t)g->filesz);
        }
        img->segs[i] = *g;
        img->segs[i].data = copy;
        img->nsegs = i + 1;
    }
    free(order);
    vmt_image_boot_regs(0, ram_size, &img->regs);
    *out = img;
    return VMT_OK;
nomem:
    vmt_why(why, why_len, "image: out of memory copying segments");
    st = VMT_E_NOMEM;
fail:
    free(order);
    vmt_image_destroy(img);
    return st;
}

void vmt_image_destroy(vmt_image *img)
{
    if (!img)
        return;
    for (size_t i = 0; i < img->nsegs; i++)
        free((void *)img->segs[i].data);
    free(img->segs);
    for (size_t i = 0; i < img->nsyms; i++)
        free(img->syms[i].name);
    free(img->syms);
    free(img->syms_by_name);
    free(img->reach);
    free(img->exec);
    free(img);
}

vmt_status vmt_image_from_segments(const vmt_image_segment *segs, size_t n, const vmt_regs *regs,
                                   uint64_t ram_size, vmt_image **out, char *why, size_t why_len)
{
    if (!out) {
        vmt_why(why, why_len, "image: out is required");
        return VMT_E_INVAL;
    }
    *out = NULL;
    if (!regs && (n == 0 || !segs)) {
        vmt_why(why, why_len, "image: an image without registers needs a segment (its address is the entry point)");
        return VMT_E_INVAL;
    }
    vmt_image *img;
    vmt_status st = vmt_image_new(segs, n, ram_size, &img, why, why_len);
    if (st)
        return st;
    if (regs) {
        img->regs = *regs;
        img->has_cpu_state = 1;
    } else {
        img->entry = segs[0].pa;
        vmt_image_boot_regs(img->entry, ram_size, &img->regs);
    }
    *out = img;
    return VMT_OK;
}

/* ---- boot protocol ---- */

static uint64_t boot_mapped_bytes(uint64_t ram_size)
{
    uint64_t m = ram_size < (4ULL << 30) ? ram_size : (4ULL << 30);
    return (m + VMT_SIZE_2M - 1) & ~(VMT_SIZE_2M - 1);
}

void vmt_image_boot_regs(vmt_va entry, uint64_t ram_size, vmt_regs *r)
{
    vmt_pa base = vmt_boot_pt_base(ram_size);
    memset(r, 0, sizeof *r);
    r->rip = entry;
    r->rsp = base;
    r->rdi = ram_size;
    r->rsi = 0;
    r->rflags = 0x2;
    r->cr0 = VMT_CR0_PE | CR0_ET | CR0_NE | VMT_CR0_WP | VMT_CR0_PG;
    r->cr3 = base;
    r->cr4 = VMT_CR4_PAE;
    r->efer = VMT_EFER_LME | VMT_EFER_LMA;
    r->cs = VMT_BOOT_CS;
    r->ss = r->ds = r->es = r->fs = r->gs = VMT_BOOT_DS;
    r->gdtr_base = base + VMT_BOOT_GDT_OFFSET;
    r->gdtr_limit = 3 * 8 - 1;
}

/* Fill buf (VMT_BOOT_PT_FRAMES frames, zeroed) with the boot tables for ram_size. */
static void build_boot_tables(uint64_t ram_size, uint8_t *buf)
{
    vmt_pa base = vmt_boot_pt_base(ram_size);
    uint64_t *pml4 = (uint64_t *)buf;
    uint64_t *pdpt = (uint64_t *)(buf + VMT_PAGE_SIZE);
    uint64_t mapped = boot_mapped_bytes(ram_size);
    uint64_t n2m = mapped / VMT_SIZE_2M;
    uint64_t npd = (mapped + VMT_SIZE_1G - 1) / VMT_SIZE_1G;
    pml4[0] = (base + VMT_PAGE_SIZE) | VMT_PTE_P | VMT_PTE_RW;
    pml4[VMT_BOOT_GDT_OFFSET / 8 + 1] = BOOT_GDT_CODE64;
    pml4[VMT_BOOT_GDT_OFFSET / 8 + 2] = BOOT_GDT_DATA;
    for (uint64_t i = 0; i < npd; i++)
        pdpt[i] = (base + (2 + i) * VMT_PAGE_SIZE) | VMT_PTE_P | VMT_PTE_RW;
    for (uint64_t k = 0; k < n2m; k++) {
        uint64_t *pd = (uint64_t *)(buf + (2 + k / 512) * VMT_PAGE_SIZE);
        pd[k % 512] = (k * VMT_SIZE_2M) | VMT_PTE_P | VMT_PTE_RW | VMT_PTE_PS;
    }
}

vmt_status vmt_image_place(vmt_image *img, uint64_t ram_size, vmt_phys_write_fn write, void *ctx,
                           vmt_regs *regs_out, char *why, size_t why_len)
{
    static const uint8_t zeros[4096];
    if (!img || !write || !regs_out) {
        vmt_why(why, why_len, "image: place needs an image, a writer and regs_out");
        return VMT_E_INVAL;
    }
    vmt_status st = vmt_image_check_layout(img, ram_size, why, why_len);
    if (st)
        return st;
    vmt_pa base = 0;
    if (!img->has_cpu_state) {
        if (ram_size < (VMT_BOOT_PT_FRAMES + 1) * VMT_PAGE_SIZE) {
            vmt_why(why, why_len, "image: RAM of 0x%" PRIx64 " bytes is too small for the boot tables", ram_size);
            return VMT_E_RANGE;
        }
        base = vmt_boot_pt_base(ram_size);
        for (size_t i = 0; i < img->nsegs; i++) {
            const vmt_image_segment *g = &img->segs[i];
            if (g->pa + g->memsz > base) {
                vmt_why(why, why_len, "image: segment at [0x%" PRIx64 ", 0x%" PRIx64 ") overlaps the boot page tables "
                        "at [0x%" PRIx64 ", 0x%" PRIx64 ")", g->pa, g->pa + g->memsz, base, ram_size);
                return VMT_E_RANGE;
            }
        }
    }
    for (size_t i = 0; i < img->nsegs; i++) {
        const vmt_image_segment *g = &img->segs[i];
        if (g->filesz && (st = write(ctx, g->pa, g->data, (size_t)g->filesz))) {
            vmt_why(why, why_len, "image: writing segment at pa 0x%" PRIx64 " (0x%" PRIx64 " bytes) failed: %s", g->pa,
                    g->filesz, vmt_strerror(st));
            return st;
        }
        for (uint64_t off = g->filesz; off < g->memsz;) {
            uint64_t chunk = g->memsz - off < sizeof zeros ? g->memsz - off : sizeof zeros;
            if ((st = write(ctx, g->pa + off, zeros, (size_t)chunk))) {
                vmt_why(why, why_len, "image: zero-filling pa 0x%" PRIx64 " failed: %s", g->pa + off, vmt_strerror(st));
                return st;
            }
            off += chunk;
        }
    }
    if (img->has_cpu_state) {
        *regs_out = img->regs;
        return VMT_OK;
    }
    uint8_t *tables = calloc(VMT_BOOT_PT_FRAMES, VMT_PAGE_SIZE);
    if (!tables) {
        vmt_why(why, why_len, "image: out of memory building the boot tables");
        return VMT_E_NOMEM;
    }
    build_boot_tables(ram_size, tables);
    st = write(ctx, base, tables, VMT_BOOT_PT_FRAMES * VMT_PAGE_SIZE);
    free(tables);
    if (st) {
        vmt_why(why, why_len, "image: writing the boot tables at pa 0x%" PRIx64 " failed: %s", base, vmt_strerror(st));
        return st;
    }
    vmt_image_boot_regs(img->entry, ram_size, regs_out);
    return VMT_OK;
}

/* ---- accessors ---- */

size_t vmt_image_segment_count(const vmt_image *img) { return img->nsegs; }

const vmt_image_segment *vmt_image_segment_at(const vmt_image *img, size_t i)
{
    return i < img->nsegs ? &img->segs[i] : NULL;
}

const vmt_regs *vmt_image_regs(const vmt_image *img) { return &img->regs; }
int vmt_image_has_cpu_state(const vmt_image *img) { return img->has_cpu_state; }

/* ---- symbols ---- */

static int cmp_sym_value(const void *a, const void *b)
{
    const vmt_image_sym *x = a, *y = b;
    if (x->value != y->value)
        return x->value < y->value ? -1 : 1;
    if (x->rank != y->rank) /* best last: symbol_at scans backwards */
        return x->rank < y->rank ? -1 : 1;
    return strcmp(y->name, x->name);
}

static int cmp_sym_name(const void *a, const void *b)
{
    const vmt_image_sym *x = *(const vmt_image_sym *const *)a, *y = *(const vmt_image_sym *const *)b;
    int c = strcmp(x->name, y->name);
    if (c)
        return c;
    if (x->rank != y->rank) /* best first: symbol() takes the first match */
        return x->rank > y->rank ? -1 : 1;
    return x->value < y->value ? -1 : x->value > y->value;
}

static uint64_t sym_end(const vmt_image_sym *s)
{
    uint64_t span = s->size ? s->size : 1;
    return s->value + span < s->value ? UINT64_MAX : s->value + span;
}

vmt_status vmt_image_set_symbols(vmt_image *img, vmt_image_sym *syms, size_t n, char *why, size_t why_len)
{
    img->syms = syms;
    img->nsyms = n;
    if (n == 0)
        return VMT_OK;
    qsort(syms, n, sizeof *syms, cmp_sym_value);
    img->syms_by_name = malloc(n * sizeof *img->syms_by_name);
    img->reach = malloc(n * sizeof *img->reach);
    if (!img->syms_by_name || !img->reach) {
        vmt_why(why, why_len, "image: out of memory indexing %zu symbols", n);
        return VMT_E_NOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        img->syms_by_name[i] = &syms[i];
        uint64_t end = sym_end(&syms[i]);
        img->reach[i] = i && img->reach[i - 1] > end ? img->reach[i - 1] : end;
    }
    qsort(img->syms_by_name, n, sizeof *img->syms_by_name, cmp_sym_name);
    return VMT_OK;
}

vmt_status vmt_image_symbol(const vmt_image *img, const char *name, vmt_va *va, uint64_t *size)
{
    if (!img || !name)
        return VMT_E_INVAL;
    size_t lo = 0, hi = img->nsyms;
    while (lo < hi) { /* first entry with name >= `name` */
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(img->syms_by_name[mid]->name, name) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == img->nsyms || strcmp(img->syms_by_name[lo]->name, name) != 0)
        return VMT_E_NOTFOUND;
    if (va)
        *va = img->syms_by_name[lo]->value;
    if (size)
        *size = img->syms_by_name[lo]->size;
    return VMT_OK;
}

vmt_status vmt_image_code_symbol(const vmt_image *img, const char *name, vmt_va *va, char *why, size_t why_len)
{
    if (!img || !name) {
        vmt_why(why, why_len, "image: image and name are required");
        return VMT_E_INVAL;
    }
    size_t lo = 0, hi = img->nsyms;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(img->syms_by_name[mid]->name, name) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == img->nsyms || strcmp(img->syms_by_name[lo]->name, name) != 0) {
        vmt_why(why, why_len, "unknown symbol '%s'%s", name, img->nsyms ? "" : " (the image has no symbol table)");
        return VMT_E_NOTFOUND;
    }
    const vmt_image_sym *sym = img->syms_by_name[lo];
    /* A function says it is code (also in symbol-only images, e.g. kernel
     * symbols from kallsyms, whose addresses lie outside their one stub
     * segment); an untyped symbol is code only inside an executable
     * segment. */
    if (sym->type == 2 /* STT_FUNC */) {
        if (va)
            *va = sym->value;
        return VMT_OK;
    }
    if (sym->type == 0 /* STT_NOTYPE */) {
        for (size_t i = 0; i < img->nexec; i++) {
            if (sym->value >= img->exec[i].start && sym->value < img->exec[i].end) {
                if (va)
                    *va = sym->value;
                return VMT_OK;
            }
        }
        vmt_why(why, why_len, "symbol '%s' at 0x%" PRIx64 " is not code: it is not inside an executable segment",
                name, sym->value);
        return VMT_E_INVAL;
    }
    vmt_why(why, why_len, "symbol '%s' at 0x%" PRIx64 " is not code: it is a data object (STT_OBJECT)", name,
            sym->value);
    return VMT_E_INVAL;
}

const char *vmt_image_symbol_at(const vmt_image *img, vmt_va va, uint64_t *offset)
{
    if (!img || img->nsyms == 0)
        return NULL;
    size_t lo = 0, hi = img->nsyms;
    while (lo < hi) { /* first entry with value > va */
        size_t mid = lo + (hi - lo) / 2;
        if (img->syms[mid].value <= va)
            lo = mid + 1;
        else
            hi = mid;
    }
    /* Candidates: entries before lo, nearest (and best ranked) first; stop
     * when no earlier symbol reaches va. */
    for (size_t i = lo; i-- > 0;) {
        if (img->reach[i] <= va)
            break;
        const vmt_image_sym *s = &img->syms[i];
        if (va < sym_end(s)) {
            if (offset)
                *offset = va - s->value;
            return s->name;
        }
    }
    return NULL;
}
