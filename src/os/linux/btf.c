/*
 * os/linux/btf.c — the kernel's BTF, read from RAM and parsed by libbpf.
 *
 * The bytes between __start_BTF and __stop_BTF (kernel image, so read
 * through the image placement) must start with the BTF magic 0xeB9F and be
 * at most BTF_MAX bytes; libbpf's btf__new() validates the rest. Without
 * BTF the handle keeps its symbols and info.btf_note says why types are
 * missing. Member lookups descend into anonymous structs/unions.
 */
#include "os/linux/os_internal.h"

#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BTF_MAX (64u << 20)

int os_btf_parse(const uint8_t *b, size_t len, struct btf **out, char *note, size_t note_len)
{
    *out = NULL;
    if (len < 24 || len > BTF_MAX) {
        snprintf(note, note_len, "no types: BTF size %zu is not plausible", len);
        return -1;
    }
    if (b[0] != 0x9f || b[1] != 0xeb) {
        snprintf(note, note_len, "no types: __start_BTF does not hold the BTF magic 0xeB9F");
        return -1;
    }
    /* Types are read as 32-bit words: like the kernel's own verifier,
     * refuse a type section that is not 4-byte aligned (libbpf 1.1 accepts
     * it, and every later read of a type would be misaligned). */
    uint32_t hdr_len = (uint32_t)b[4] | (uint32_t)b[5] << 8 | (uint32_t)b[6] << 16 | (uint32_t)b[7] << 24;
    uint32_t type_off = (uint32_t)b[8] | (uint32_t)b[9] << 8 | (uint32_t)b[10] << 16 | (uint32_t)b[11] << 24;
    uint32_t type_len = (uint32_t)b[12] | (uint32_t)b[13] << 8 | (uint32_t)b[14] << 16 | (uint32_t)b[15] << 24;
    if ((hdr_len | type_off | type_len) & 3u) {
        snprintf(note, note_len, "no types: BTF type section not 4-byte aligned (hdr_len %u, type_off %u, type_len %u)",
                 hdr_len, type_off, type_len);
        return -1;
    }
    /* libbpf validates the header, every type and the string section. */
    struct btf *btf = btf__new(b, (uint32_t)len);
    if (!btf || libbpf_get_error(btf)) {
        snprintf(note, note_len, "no types: libbpf refused the BTF (%s)", strerror(errno));
        return -1;
    }
    *out = btf;
    return 0;
}

void os_btf_load(vmt_os *os)
{
    uint64_t start, stop;
    vmt_os_info *in = &os->info;
    if (os_sym(os, "__start_BTF", &start) || os_sym(os, "__stop_BTF", &stop)) {
        snprintf(in->btf_note, sizeof in->btf_note, "no types: the kernel has no BTF (no __start_BTF/__stop_BTF; "
                                                    "CONFIG_DEBUG_INFO_BTF is off)");
        return;
    }
    if (stop <= start || stop - start > BTF_MAX || stop - start < 24) {
        snprintf(in->btf_note, sizeof in->btf_note, "no types: BTF size %" PRIu64 " is not plausible",
                 stop > start ? stop - start : 0);
        return;
    }
    size_t len = (size_t)(stop - start);
    uint8_t *b = malloc(len);
    if (!b) {
        snprintf(in->btf_note, sizeof in->btf_note, "no types: no memory for %zu bytes of BTF", len);
        return;
    }
    if (os_read_image(os, start, b, len)) {
        snprintf(in->btf_note, sizeof in->btf_note, "no types: %.140s", os->err.msg);
        free(b);
        return;
    }
    struct btf *btf;
    if (os_btf_parse(b, len, &btf, in->btf_note, sizeof in->btf_note) != 0) {
        free(b);
        return;
    }
    os->btf = btf;
    os->btf_bytes = b;
    in->has_btf = 1;
    in->btf_size = len;
    in->btf_types = btf__type_cnt(btf);
    in->btf_note[0] = 0;
}

void os_btf_free(vmt_os *os)
{
    if (os->btf)
        btf__free(os->btf);
    free(os->btf_bytes);
    os->btf = NULL;
    os->btf_bytes = NULL;
}

const struct btf *vmt_os_btf(const vmt_os *os)
{
    return os ? os->btf : NULL;
}

/* Find member `name` in struct/union `id`, descending into anonymous
 * members; bit offset and type id. depth bounds hostile nesting. */
static int member_in(const struct btf *btf, uint32_t id, const char *name, uint64_t *bitoff, uint32_t *type, int depth)
{
    const struct btf_type *t = btf__type_by_id(btf, id);
    if (!t || depth > 8 || !(btf_is_struct(t) || btf_is_union(t)))
        return 0;
    const struct btf_member *m = btf_members(t);
    for (uint16_t i = 0; i < btf_vlen(t); i++, m++) {
        uint64_t off = btf_member_bit_offset(t, i);
        if (m->name_off) {
            const char *n = btf__name_by_offset(btf, m->name_off);
            if (n && strcmp(n, name) == 0) {
                *bitoff = off;
                *type = m->type;
                return 1;
            }
            continue;
        }
        int inner = btf__resolve_type(btf, m->type);
        uint64_t sub;
        if (inner > 0 && member_in(btf, (uint32_t)inner, name, &sub, type, depth + 1)) {
            *bitoff = off + sub;
            return 1;
        }
    }
    return 0;
}

/* Internal: member lookup on a struct id for the decoder. */
int os_btf_member(const struct btf *btf, uint32_t struct_id, const char *name, uint64_t *byte_off, uint32_t *type);
int os_btf_member(const struct btf *btf, uint32_t struct_id, const char *name, uint64_t *byte_off, uint32_t *type)
{
    uint64_t bit;
    if (!member_in(btf, struct_id, name, &bit, type, 0))
        return 0;
    *byte_off = bit / 8;
    return 1;
}

static vmt_status need_btf(vmt_os *os)
{
    if (!os->btf)
        return vmt_errbuf_set(&os->err, VMT_E_NOTSUP, "os: %s", os->info.btf_note);
    return VMT_OK;
}

static vmt_status find_struct(vmt_os *os, const char *name, int32_t *id)
{
    *id = btf__find_by_name_kind(os->btf, name, BTF_KIND_STRUCT);
    if (*id <= 0)
        *id = btf__find_by_name_kind(os->btf, name, BTF_KIND_UNION);
    if (*id <= 0)
        return vmt_errbuf_set(&os->err, VMT_E_NOTFOUND, "os: BTF has no struct '%s'", name);
    return VMT_OK;
}

vmt_status vmt_os_type_size(vmt_os *os, const char *struct_name, uint64_t *size)
{
    int32_t id;
    vmt_status st = need_btf(os);
    if (st || (st = find_struct(os, struct_name, &id)))
        return st;
    int64_t s = btf__resolve_size(os->btf, (uint32_t)id);
    if (s < 0)
        return vmt_errbuf_set(&os->err, VMT_E_FORMAT, "os: BTF cannot size '%s'", struct_name);
    *size = (uint64_t)s;
    return VMT_OK;
}

vmt_status vmt_os_member_offset(vmt_os *os, const char *struct_name, const char *member, uint64_t *offset)
{
    int32_t id;
    uint32_t type;
    vmt_status st = need_btf(os);
    if (st || (st = find_struct(os, struct_name, &id)))
        return st;
    if (!os_btf_member(os->btf, (uint32_t)id, member, offset, &type))
        return vmt_errbuf_set(&os->err, VMT_E_NOTFOUND, "os: struct %s has no member '%s'", struct_name, member);
    return VMT_OK;
}

/* ---- prototypes as text ----
 * Written here from libbpf's type accessors, not with libbpf's btf_dump:
 * fuzzing found BTF that btf__new() accepts and btf_dump__new() then
 * crashes on (an out-of-bounds write in libbpf 1.1), and the BTF comes
 * from the guest. Declarator syntax is kept simple: pointers to functions
 * print as "ret (*)(...)", arrays as "T[n]"; every chain is bounded. */

typedef struct strbuf {
    char *p;
    size_t len, used;
} strbuf;

static void sb_printf(strbuf *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(strbuf *s, const char *fmt, ...)
{
    if (s->used + 1 >= s->len)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(s->p + s->used, s->len - s->used, fmt, ap);
    va_end(ap);
    if (n > 0)
        s->used = s->used + (size_t)n < s->len ? s->used + (size_t)n : s->len - 1;
}

static const char *name_of(const struct btf *btf, const struct btf_type *t)
{
    const char *n = btf__name_by_offset(btf, t->name_off);
    return n && *n ? n : NULL;
}

static void type_text(const struct btf *btf, uint32_t id, strbuf *sb, int depth)
{
    const struct btf_type *t = id ? btf__type_by_id(btf, id) : NULL;
    if (id == 0) {
        sb_printf(sb, "void");
        return;
    }
    if (!t || depth > 16) {
        sb_printf(sb, "?");
        return;
    }
    const char *n = name_of(btf, t);
    switch (btf_kind(t)) {
    case BTF_KIND_CONST:
        sb_printf(sb, "const ");
        type_text(btf, t->type, sb, depth + 1);
        return;
    case BTF_KIND_VOLATILE:
        sb_printf(sb, "volatile ");
        type_text(btf, t->type, sb, depth + 1);
        return;
    case BTF_KIND_RESTRICT:
    case BTF_KIND_TYPE_TAG:
        type_text(btf, t->type, sb, depth + 1);
        return;
    case BTF_KIND_PTR: {
        const struct btf_type *pt = t->type ? btf__type_by_id(btf, t->type) : NULL;
        if (pt && btf_is_func_proto(pt)) {
            type_text(btf, pt->type, sb, depth + 1);
            sb_printf(sb, " (*)(...)");
            return;
        }
        type_text(btf, t->type, sb, depth + 1);
        sb_printf(sb, sb->used && sb->p[sb->used - 1] == '*' ? "*" : " *");
        return;
    }
    case BTF_KIND_STRUCT: sb_printf(sb, "struct %s", n ? n : "{...}"); return;
    case BTF_KIND_UNION: sb_printf(sb, "union %s", n ? n : "{...}"); return;
    case BTF_KIND_ENUM:
    case BTF_KIND_ENUM64: sb_printf(sb, "enum %s", n ? n : "{...}"); return;
    case BTF_KIND_FWD: sb_printf(sb, "%s %s", btf_kflag(t) ? "union" : "struct", n ? n : "?"); return;
    case BTF_KIND_ARRAY:
        type_text(btf, btf_array(t)->type, sb, depth + 1);
        sb_printf(sb, "[%u]", btf_array(t)->nelems);
        return;
    default: sb_printf(sb, "%s", n ? n : "?"); return;
    }
}

/* Internal: "T name" for a type (name may be ""). */
void os_btf_type_text(const struct btf *btf, uint32_t id, const char *name, char *buf, size_t len);
void os_btf_type_text(const struct btf *btf, uint32_t id, const char *name, char *buf, size_t len)
{
    if (!len)
        return;
    buf[0] = 0;
    strbuf sb = { buf, len, 0 };
    type_text(btf, id, &sb, 0);
    if (name && *name)
        sb_printf(&sb, sb.used && buf[sb.used - 1] == '*' ? "%s" : " %s", name);
}

/* Internal: "ret name(type a, type b)" for FUNC id into buf. */
int os_btf_format_func(const struct btf *btf, int32_t func_id, char *buf, size_t len);
int os_btf_format_func(const struct btf *btf, int32_t func_id, char *buf, size_t len)
{
    if (!len)
        return -1;
    buf[0] = 0;
    const struct btf_type *f = btf__type_by_id(btf, (uint32_t)func_id);
    if (!f || !btf_is_func(f))
        return -1;
    const struct btf_type *proto = btf__type_by_id(btf, f->type);
    if (!proto || !btf_is_func_proto(proto))
        return -1;
    const char *fname = btf__name_by_offset(btf, f->name_off);
    strbuf sb = { buf, len, 0 };
    char part[256];
    os_btf_type_text(btf, proto->type, fname ? fname : "?", part, sizeof part);
    sb_printf(&sb, "%s(", part);
    const struct btf_param *p = btf_params(proto);
    uint16_t n = btf_vlen(proto);
    for (uint16_t i = 0; i < n; i++, p++) {
        if (p->type == 0) {
            sb_printf(&sb, "%s...", i ? ", " : "");
            continue;
        }
        os_btf_type_text(btf, p->type, btf__name_by_offset(btf, p->name_off), part, sizeof part);
        sb_printf(&sb, "%s%s", i ? ", " : "", part);
    }
    sb_printf(&sb, n ? ")" : "void)");
    return 0;
}

vmt_status vmt_os_prototype(vmt_os *os, const char *function, char *buf, size_t len)
{
    vmt_status st = need_btf(os);
    if (st)
        return st;
    int32_t id = btf__find_by_name_kind(os->btf, function, BTF_KIND_FUNC);
    if (id <= 0)
        return vmt_errbuf_set(&os->err, VMT_E_NOTFOUND, "os: BTF has no function '%s'", function);
    if (os_btf_format_func(os->btf, id, buf, len))
        return vmt_errbuf_set(&os->err, VMT_E_FORMAT, "os: BTF function '%s' has no usable prototype", function);
    return VMT_OK;
}

static uint64_t member_or_unknown(vmt_os *os, const char *s, const char *m)
{
    uint64_t off;
    return vmt_os_member_offset(os, s, m, &off) == VMT_OK ? off : UINT64_MAX;
}

void os_offsets_load(vmt_os *os)
{
    os_offsets *o = &os->off;
    memset(o, 0xff, sizeof *o);
    if (!os->btf)
        return;
    o->task_tasks = member_or_unknown(os, "task_struct", "tasks");
    o->task_pid = member_or_unknown(os, "task_struct", "pid");
    o->task_tgid = member_or_unknown(os, "task_struct", "tgid");
    o->task_comm = member_or_unknown(os, "task_struct", "comm");
    o->task_parent = member_or_unknown(os, "task_struct", "real_parent");
    o->task_mm = member_or_unknown(os, "task_struct", "mm");
    o->mm_pgd = member_or_unknown(os, "mm_struct", "pgd");
    o->pcpu_hot_current = member_or_unknown(os, "pcpu_hot", "current_task");
    vmt_errbuf_clear(&os->err);
}
