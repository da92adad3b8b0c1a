/*
 * os/linux/kallsyms.c — locate and decode kallsyms in a RAM window.
 * See kallsyms.h for the format and how each table is validated.
 */
#include "os/linux/kallsyms.h"

#include <stdlib.h>
#include <string.h>

static const uint8_t digit_sig[] = "0\0" "1\0" "2\0" "3\0" "4\0" "5\0" "6\0" "7\0" "8\0" "9";

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }
static size_t align8(size_t x) { return (x + 7) & ~(size_t)7; }

size_t ksym_find_signature(const uint8_t *buf, size_t len, size_t from)
{
    if (!buf || from >= len)
        return (size_t)-1;
    /* The '0' token follows a NUL (the end of token '/'). */
    const uint8_t *p = buf + from;
    size_t left = len - from;
    while (left >= sizeof digit_sig) {
        const uint8_t *h = memmem(p, left, digit_sig, sizeof digit_sig);
        if (!h)
            break;
        size_t off = (size_t)(h - buf);
        if (off > 0 && buf[off - 1] == 0)
            return off;
        left -= (size_t)(h + 1 - p);
        p = h + 1;
    }
    return (size_t)-1;
}

/* The 256 tokens: start offsets (relative to buf) and the token index. */
typedef struct tokens {
    size_t table;             /* kallsyms_token_table */
    size_t index;             /* kallsyms_token_index */
    size_t start[256];
    uint8_t len[256];
} tokens;

static vmt_status find_tokens(const uint8_t *buf, size_t len, size_t sig, tokens *tk, vmt_errbuf *e)
{
    /* Walk forward from token '0' to the end of token 255. */
    size_t p = sig;
    for (unsigned i = '0'; i < 256; i++) {
        size_t s = p;
        while (p < len && buf[p] != 0 && p - s < 256)
            p++;
        if (p >= len || buf[p] != 0 || (p == s && i <= '9'))
            return vmt_errbuf_set(e, VMT_E_FORMAT, "kallsyms: token %u after the digit signature is not a short string", i);
        p++;
    }
    size_t index = align8(p);
    if (index + 512 > len)
        return vmt_errbuf_set(e, VMT_E_FORMAT, "kallsyms: token index past the end of the window");
    uint16_t off0 = rd16(buf + index + 2 * '0');
    if (off0 > sig || off0 < 2 * '0')
        return vmt_errbuf_set(e, VMT_E_FORMAT, "kallsyms: token index entry for '0' (%u) is impossible", off0);
    size_t table = sig - off0;
    if (table + 65536 < index)
        return vmt_errbuf_set(e, VMT_E_FORMAT, "kallsyms: token table longer than 64 KiB");
    for (unsigned i = 0; i < 256; i++) {
        size_t s = table + rd16(buf + index + 2 * i);
        if (s >= index || (i > 0 && (s == 0 || buf[s - 1] != 0)) || (i > 0 && s != tk->start[i - 1] + tk->len[i - 1] + 1))
            return vmt_errbuf_set(e, VMT_E_FORMAT, "kallsyms: token index entry %u does not point at token %u", i, i);
        size_t n = 0;
        while (s + n < index && buf[s + n] != 0)
            n++;
        if (n > 255 || s + n >= index)
            return vmt_errbuf_set(e, VMT_E_FORMAT, "kallsyms: token %u is empty or unterminated", i);
        tk->start[i] = s;
        tk->len[i] = (uint8_t)n;
    }
    tk->table = table;
    tk->index = index;
    return VMT_OK;
}

/* Length prefix of one names entry at buf[p]: returns bytes of prefix (1 or
 * 2) and sets *n, or 0 past the end. */
static size_t entry_len(const uint8_t *buf, size_t end, size_t p, size_t *n)
{
    if (p >= end)
        return 0;
    if (buf[p] & 0x80) {
        if (p + 1 >= end)
            return 0;
        *n = (size_t)(buf[p] & 0x7f) | (size_t)buf[p + 1] << 7;
        return 2;
    }
    *n = buf[p];
    return 1;
}

/* Walk num entries from names (bounded by limit), recording the offset of
 * every 256th in marks. On success *names_end is the offset after the last. */
static int walk_names(const uint8_t *buf, size_t limit, size_t names, uint32_t num, uint64_t *marks,
                      size_t *names_end)
{
    size_t p = names;
    for (uint32_t i = 0; i < num; i++) {
        if ((i & 255) == 0)
            marks[i >> 8] = p - names;
        size_t n = 0;
        size_t pre = entry_len(buf, limit, p, &n);
        if (!pre || n == 0 || p + pre + n > limit)
            return 0;
        p += pre + n;
    }
    *names_end = p;
    return 1;
}

typedef struct layout {
    size_t markers, num_syms, names, names_end;
    uint32_t count, nmarkers;
    unsigned msize;
} layout;

/* Does the markers array at m (element size msize) hold exactly marks? */
static int markers_match(const uint8_t *buf, size_t limit, size_t m, unsigned msize, const uint64_t *marks,
                         uint32_t nmark)
{
    if (m + (size_t)nmark * msize > limit)
        return 0;
    for (uint32_t k = 0; k < nmark; k++) {
        uint64_t v = msize == 4 ? rd32(buf + m + 4 * (size_t)k) : rd64(buf + m + 8 * (size_t)k);
        if (v != marks[k])
            return 0;
    }
    return 1;
}

/* kallsyms_num_syms (a u32 and 4 bytes of padding), kallsyms_names right
 * after it, kallsyms_markers right after the names, then the token table —
 * directly, or after kallsyms_seqs_of_names (3 bytes per symbol, 6.2 and
 * kernels that backported it). Searched backwards from the token table. */
static vmt_status find_names(const uint8_t *buf, const tokens *tk, layout *lo, vmt_errbuf *e)
{
    uint64_t *marks = malloc(sizeof(uint64_t) * (KSYM_MAX_SYMS / 256 + 1));
    if (!marks)
        return vmt_errbuf_set(e, VMT_E_NOMEM, "kallsyms: no memory");
    size_t t = tk->table & ~(size_t)7;
    size_t lowest = t > KSYM_MAX_SPAN ? t - KSYM_MAX_SPAN : 0;
    for (size_t p = t >= 16 ? t - 16 : 0; p >= lowest + 8 && p + 16 <= t; p -= 8) {
        uint32_t num = rd32(buf + p);
        if (num == 0 || num > KSYM_MAX_SYMS || rd32(buf + p + 4) != 0)
            continue;
        size_t names_end;
        if (!walk_names(buf, tk->table, p + 8, num, marks, &names_end))
            continue;
        uint32_t nmark = (num + 255) / 256;
        size_t m = align8(names_end);
        for (unsigned msize = 4; msize <= 8; msize += 4) {
            if (!markers_match(buf, tk->table, m, msize, marks, nmark))
                continue;
            size_t mend = align8(m + (size_t)nmark * msize);
            if (mend != tk->table && align8(mend + 3 * (size_t)num) != tk->table)
                continue;
            lo->markers = m;
            lo->num_syms = p;
            lo->names = p + 8;
            lo->names_end = names_end;
            lo->count = num;
            lo->nmarkers = nmark;
            lo->msize = msize;
            free(marks);
            return VMT_OK;
        }
    }
    free(marks);
    return vmt_errbuf_set(e, VMT_E_FORMAT,
                          "kallsyms: no kallsyms_num_syms/kallsyms_names/kallsyms_markers before the token table at "
                          "offset 0x%zx",
                          tk->table);
}

/* How many times the address sequence goes down (kallsyms is sorted). */
static uint32_t descents(const uint64_t *a, uint32_t n)
{
    uint32_t d = 0;
    for (uint32_t i = 1; i < n; i++)
        d += a[i] < a[i - 1];
    return d;
}

static int relative_addrs(const uint8_t *buf, size_t len, size_t offs, size_t base_at, uint32_t n, uint64_t *out,
                          uint64_t *base_out)
{
    if (offs + (size_t)n * 4 > len || base_at + 8 > len)
        return 0;
    uint64_t base = rd64(buf + base_at);
    if (base < 0xffff800000000000ull)
        return 0;
    int mixed = 0;
    for (uint32_t i = 0; i < n; i++)
        mixed |= (int32_t)rd32(buf + offs + 4 * (size_t)i) < 0;
    for (uint32_t i = 0; i < n; i++) {
        int32_t o = (int32_t)rd32(buf + offs + 4 * (size_t)i);
        if (!mixed)
            out[i] = base + (uint32_t)o;
        else
            out[i] = o >= 0 ? (uint64_t)o : base - 1 - (uint64_t)(int64_t)o;
    }
    *base_out = base;
    return descents(out, n) <= n / 256;
}

static vmt_status find_addrs(const uint8_t *buf, size_t len, const tokens *tk, const layout *lo, ksym_table *t,
                             vmt_errbuf *e)
{
    uint32_t n = lo->count;
    size_t offs_size = align8((size_t)n * 4);
    /* Up to 6.3: offsets, relative_base, num_syms. */
    if (lo->num_syms >= 8 + offs_size &&
        relative_addrs(buf, len, lo->num_syms - 8 - offs_size, lo->num_syms - 8, n, t->addr, &t->relative_base)) {
        t->off_addrs = lo->num_syms - 8 - offs_size;
        return VMT_OK;
    }
    /* 6.4 on: token_index, offsets, relative_base. */
    size_t after = align8(tk->index + 512);
    if (relative_addrs(buf, len, after, after + offs_size, n, t->addr, &t->relative_base)) {
        t->off_addrs = after;
        return VMT_OK;
    }
    /* No KALLSYMS_BASE_RELATIVE: absolute addresses before num_syms. */
    if (lo->num_syms >= (size_t)n * 8) {
        size_t a = lo->num_syms - (size_t)n * 8;
        for (uint32_t i = 0; i < n; i++)
            t->addr[i] = rd64(buf + a + 8 * (size_t)i);
        if (descents(t->addr, n) <= n / 256 && t->addr[n - 1] >= 0xffff800000000000ull) {
            t->relative_base = 0;
            t->off_addrs = a;
            return VMT_OK;
        }
    }
    return vmt_errbuf_set(e, VMT_E_FORMAT,
                          "kallsyms: names decode (%u symbols) but no address table (offsets + relative base, or "
                          "absolute) fits them",
                          n);
}

static vmt_status expand_names(const uint8_t *buf, const tokens *tk, const layout *lo, ksym_table *t, vmt_errbuf *e)
{
    size_t cap = (lo->names_end - lo->names) * 4 + (size_t)lo->count + 16, used = 0;
    t->names = malloc(cap);
    if (!t->names)
        return vmt_errbuf_set(e, VMT_E_NOMEM, "kallsyms: no memory for names");
    size_t p = lo->names;
    for (uint32_t i = 0; i < lo->count; i++) {
        size_t n = 0;
        p += entry_len(buf, lo->names_end, p, &n);
        char tmp[KSYM_NAME_MAX + 2];
        size_t o = 0;
        for (size_t k = 0; k < n; k++) {
            uint8_t tok = buf[p + k];
            if (o + tk->len[tok] > KSYM_NAME_MAX + 1)
                return vmt_errbuf_set(e, VMT_E_FORMAT, "kallsyms: symbol %u is longer than %u bytes", i,
                                      KSYM_NAME_MAX);
            memcpy(tmp + o, buf + tk->start[tok], tk->len[tok]);
            o += tk->len[tok];
        }
        p += n;
        if (o < 2)
            return vmt_errbuf_set(e, VMT_E_FORMAT, "kallsyms: symbol %u has an empty name", i);
        if (used + o + 1 > cap) {
            size_t ncap = cap * 2 + o;
            char *nn = realloc(t->names, ncap);
            if (!nn)
                return vmt_errbuf_set(e, VMT_E_NOMEM, "kallsyms: no memory for names");
            t->names = nn;
            cap = ncap;
        }
        t->type[i] = tmp[0];
        t->name_off[i] = (uint32_t)used;
        memcpy(t->names + used, tmp + 1, o - 1);
        used += o - 1;
        t->names[used++] = 0;
    }
    t->names_len = used;
    return VMT_OK;
}

static int cmp_name(const void *a, const void *b, void *ctx)
{
    const ksym_table *t = ctx;
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    int c = strcmp(ksym_name(t, x), ksym_name(t, y));
    return c ? c : (x > y) - (x < y);
}

static int cmp_addr(const void *a, const void *b, void *ctx)
{
    const ksym_table *t = ctx;
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    if (t->addr[x] != t->addr[y])
        return t->addr[x] < t->addr[y] ? -1 : 1;
    return (x > y) - (x < y);
}

vmt_status ksym_check_tokens(const uint8_t *buf, size_t len, size_t sig, vmt_errbuf *e)
{
    if (!buf || sig >= len || len - sig < sizeof digit_sig || memcmp(buf + sig, digit_sig, sizeof digit_sig))
        return vmt_errbuf_set(e, VMT_E_INVAL, "kallsyms: no digit signature at offset 0x%zx", sig);
    tokens tk = { 0 };
    return find_tokens(buf, len, sig, &tk, e);
}

vmt_status ksym_parse(const uint8_t *buf, size_t len, size_t sig, ksym_table *out, vmt_errbuf *e)
{
    memset(out, 0, sizeof *out);
    if (!buf || sig >= len || len - sig < sizeof digit_sig || memcmp(buf + sig, digit_sig, sizeof digit_sig))
        return vmt_errbuf_set(e, VMT_E_INVAL, "kallsyms: no digit signature at offset 0x%zx", sig);
    tokens tk = { 0 };
    vmt_status st = find_tokens(buf, len, sig, &tk, e);
    if (st)
        return st;
    layout lo = { 0 };
    if ((st = find_names(buf, &tk, &lo, e)))
        return st;
    ksym_table t = { 0 };
    t.count = lo.count;
    t.addr = calloc(lo.count, sizeof *t.addr);
    t.type = calloc(lo.count, 1);
    t.name_off = calloc(lo.count, sizeof *t.name_off);
    t.by_name = calloc(lo.count, sizeof *t.by_name);
    t.by_addr = calloc(lo.count, sizeof *t.by_addr);
    if (!t.addr || !t.type || !t.name_off || !t.by_name || !t.by_addr) {
        ksym_free(&t);
        return vmt_errbuf_set(e, VMT_E_NOMEM, "kallsyms: no memory for %u symbols", lo.count);
    }
    if ((st = find_addrs(buf, len, &tk, &lo, &t, e)) || (st = expand_names(buf, &tk, &lo, &t, e))) {
        ksym_free(&t);
        return st;
    }
    for (uint32_t i = 0; i < t.count; i++)
        t.by_name[i] = t.by_addr[i] = i;
    qsort_r(t.by_name, t.count, sizeof *t.by_name, cmp_name, &t);
    qsort_r(t.by_addr, t.count, sizeof *t.by_addr, cmp_addr, &t);
    t.marker_size = lo.msize;
    t.off_token_table = tk.table;
    t.off_token_index = tk.index;
    t.off_markers = lo.markers;
    t.off_names = lo.names;
    t.off_num_syms = lo.num_syms;
    *out = t;
    return VMT_OK;
}

void ksym_free(ksym_table *t)
{
    if (!t)
        return;
    free(t->addr);
    free(t->type);
    free(t->name_off);
    free(t->names);
    free(t->by_name);
    free(t->by_addr);
    memset(t, 0, sizeof *t);
}

int64_t ksym_by_name(const ksym_table *t, const char *name)
{
    int64_t pos = ksym_name_pos(t, name);
    return pos < 0 ? -1 : (int64_t)t->by_name[pos];
}

int64_t ksym_name_pos(const ksym_table *t, const char *name)
{
    size_t lo = 0, hi = t->count;
    while (lo < hi) { /* first entry >= name */
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(ksym_name(t, t->by_name[mid]), name) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < t->count && strcmp(ksym_name(t, t->by_name[lo]), name) == 0)
        return (int64_t)lo;
    return -1;
}

int64_t ksym_by_addr(const ksym_table *t, uint64_t addr)
{
    size_t lo = 0, hi = t->count;
    while (lo < hi) { /* first entry > addr */
        size_t mid = lo + (hi - lo) / 2;
        if (t->addr[t->by_addr[mid]] <= addr)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0)
        return -1;
    uint64_t a = t->addr[t->by_addr[lo - 1]];
    size_t k = lo - 1;
    while (k > 0 && t->addr[t->by_addr[k - 1]] == a)
        k--;
    return t->by_addr[k];
}

vmt_status ksym_check(const ksym_table *t, char *why, size_t why_len)
{
    if (t->count > KSYM_MAX_SYMS) {
        vmt_why(why, why_len, "kallsyms: %u symbols exceed the limit", t->count);
        return VMT_E_INTERNAL;
    }
    uint8_t *seen = calloc(t->count ? t->count : 1, 2);
    if (!seen) {
        vmt_why(why, why_len, "kallsyms: no memory to check");
        return VMT_E_INTERNAL;
    }
    vmt_status st = VMT_OK;
    for (uint32_t i = 0; i < t->count && !st; i++) {
        uint32_t n = t->by_name[i], a = t->by_addr[i];
        if (n >= t->count || a >= t->count || seen[2 * n] || seen[2 * a + 1]) {
            vmt_why(why, why_len, "kallsyms: sorted index %u is not a permutation", i);
            st = VMT_E_INTERNAL;
            break;
        }
        seen[2 * n] = seen[2 * a + 1] = 1;
        if (t->name_off[i] >= t->names_len || memchr(t->names + t->name_off[i], 0, t->names_len - t->name_off[i]) == NULL) {
            vmt_why(why, why_len, "kallsyms: name of symbol %u is outside the name pool", i);
            st = VMT_E_INTERNAL;
        } else if (i > 0 && (strcmp(ksym_name(t, t->by_name[i - 1]), ksym_name(t, n)) > 0 ||
                             t->addr[t->by_addr[i - 1]] > t->addr[a])) {
            vmt_why(why, why_len, "kallsyms: sorted index out of order at %u", i);
            st = VMT_E_INTERNAL;
        }
    }
    free(seen);
    return st;
}
