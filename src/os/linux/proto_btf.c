/*
 * os/linux/proto_btf.c — a kernel function's vmt_proto from BTF: FUNC ->
 * FUNC_PROTO -> parameters, each type resolved through typedefs and
 * modifiers to a decoder kind (vmtrap/proto.h), through libbpf's accessors;
 * nothing here parses BTF bytes.
 */
#include "os/linux/os_internal.h"

#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int os_btf_member(const struct btf *btf, uint32_t struct_id, const char *name, uint64_t *byte_off, uint32_t *type);
int os_btf_format_func(const struct btf *btf, int32_t func_id, char *buf, size_t len);

/* Skip typedefs and modifiers (bounded: a hostile loop ends). */
static const struct btf_type *skip(const struct btf *btf, uint32_t id, uint32_t *out_id)
{
    const struct btf_type *t = NULL;
    for (int i = 0; i < 32; i++) {
        *out_id = id;
        if (id == 0)
            return NULL;
        t = btf__type_by_id(btf, id);
        if (!t)
            return NULL;
        if (!btf_is_mod(t) && !btf_is_typedef(t))
            return t;
        id = t->type;
    }
    return NULL;
}

void os_btf_type_text(const struct btf *btf, uint32_t id, const char *name, char *buf, size_t len);

/* A name from the string section; "" when the offset is bad (hostile BTF). */
static const char *bname(const struct btf *btf, uint32_t off)
{
    const char *n = btf__name_by_offset(btf, off);
    return n ? n : "";
}

static void type_name(const struct btf *btf, uint32_t id, char *buf, size_t len)
{
    os_btf_type_text(btf, id, "", buf, len);
}

static void field_desc(const struct btf *btf, uint32_t struct_id, const char *name, vmt_param_desc *d)
{
    uint64_t off;
    uint32_t tid;
    if (d->nfields >= VMT_PROTO_MAX_FIELDS || !os_btf_member(btf, struct_id, name, &off, &tid))
        return;
    vmt_field_desc *f = &d->fields[d->nfields];
    uint32_t rid;
    const struct btf_type *t = skip(btf, tid, &rid);
    if (!t)
        return;
    snprintf(f->name, sizeof f->name, "%s", name);
    f->offset = (uint32_t)off;
    if (btf_is_int(t) || btf_is_any_enum(t)) {
        f->size = t->size;
        f->kind = btf_is_int(t) && (btf_int_encoding(t) & BTF_INT_SIGNED) ? VMT_PARAM_INT
                  : btf_is_any_enum(t)                                    ? VMT_PARAM_INT
                                                                          : VMT_PARAM_UINT;
    } else if (btf_is_ptr(t)) {
        uint32_t pid;
        const struct btf_type *pt = skip(btf, t->type, &pid);
        f->size = 8;
        f->kind = pt && btf_is_int(pt) && pt->size == 1 ? VMT_PARAM_STRING : VMT_PARAM_POINTER;
    } else if (btf_is_array(t)) {
        uint32_t eid;
        const struct btf_type *et = skip(btf, btf_array(t)->type, &eid);
        if (!et || !btf_is_int(et) || et->size != 1)
            return;
        f->kind = VMT_PARAM_CHARS;
        f->size = btf_array(t)->nelems;
    } else {
        return;
    }
    d->nfields++;
}

static void param_desc(const struct btf *btf, uint32_t tid, const char *name, vmt_param_desc *d)
{
    memset(d, 0, sizeof *d);
    d->len_param = -1;
    snprintf(d->name, sizeof d->name, "%s", name);
    type_name(btf, tid, d->type, sizeof d->type);
    uint32_t rid;
    const struct btf_type *t = skip(btf, tid, &rid);
    if (!t) {
        d->kind = VMT_PARAM_OTHER;
        d->size = 8;
        return;
    }
    d->size = 8;
    if (btf_is_int(t)) {
        d->size = t->size;
        d->kind = btf_int_encoding(t) & BTF_INT_SIGNED ? VMT_PARAM_INT : VMT_PARAM_UINT;
    } else if (btf_is_any_enum(t)) {
        d->size = t->size;
        d->kind = VMT_PARAM_ENUM;
        uint16_t n = btf_vlen(t);
        for (uint16_t i = 0; i < n && d->nenums < VMT_PROTO_MAX_ENUMS; i++) {
            vmt_enum_name *e = &d->enums[d->nenums++];
            if (btf_is_enum(t)) {
                e->value = btf_enum(t)[i].val;
                snprintf(e->name, sizeof e->name, "%s", bname(btf, btf_enum(t)[i].name_off));
            } else {
                e->value = (int64_t)btf_enum64_value(&btf_enum64(t)[i]);
                snprintf(e->name, sizeof e->name, "%s", bname(btf, btf_enum64(t)[i].name_off));
            }
        }
    } else if (btf_is_ptr(t)) {
        uint32_t pid;
        const struct btf_type *pt = skip(btf, t->type, &pid);
        const char *const *fields;
        unsigned nf;
        if (!pt) {
            d->kind = pid == 0 ? VMT_PARAM_BUFFER : VMT_PARAM_POINTER; /* void * */
        } else if (btf_is_int(pt) && pt->size == 1) {
            const char *tn = bname(btf, pt->name_off);
            d->kind = tn && strcmp(tn, "char") == 0 ? VMT_PARAM_STRING : VMT_PARAM_BUFFER;
        } else if ((btf_is_struct(pt) || btf_is_union(pt)) &&
                   vmt_proto_struct_fields(bname(btf, pt->name_off), &fields, &nf)) {
            d->kind = VMT_PARAM_STRUCT;
            snprintf(d->struct_name, sizeof d->struct_name, "%s", bname(btf, pt->name_off));
            for (unsigned i = 0; i < nf; i++)
                field_desc(btf, pid, fields[i], d);
        } else {
            d->kind = VMT_PARAM_POINTER;
        }
    } else {
        d->kind = VMT_PARAM_OTHER;
    }
}

/* 0; -1 no such function; -2 no FUNC_PROTO. */
int os_btf_proto(const struct btf *btf, const char *function, vmt_proto *out)
{
    memset(out, 0, sizeof *out);
    int32_t id = btf__find_by_name_kind(btf, function, BTF_KIND_FUNC);
    if (id <= 0)
        return -1;
    const struct btf_type *f = btf__type_by_id(btf, (uint32_t)id);
    const struct btf_type *fp = f ? btf__type_by_id(btf, f->type) : NULL;
    if (!fp || !btf_is_func_proto(fp))
        return -2;
    snprintf(out->name, sizeof out->name, "%s", function);
    snprintf(out->source, sizeof out->source, "btf");
    (void)os_btf_format_func(btf, id, out->text, sizeof out->text);
    const struct btf_param *p = btf_params(fp);
    uint16_t n = btf_vlen(fp);
    for (uint16_t i = 0; i < n; i++, p++) {
        if (p->type == 0)
            break; /* variadic */
        if (out->nparams == VMT_PROTO_MAX_PARAMS) {
            snprintf(out->note, sizeof out->note, "parameters after the 6th are on the stack and not decoded");
            break;
        }
        const char *pn = bname(btf, p->name_off);
        char fallback[16];
        if (!pn || !*pn) {
            snprintf(fallback, sizeof fallback, "arg%u", (unsigned)i);
            pn = fallback;
        }
        param_desc(btf, p->type, pn, &out->params[out->nparams++]);
    }
    if (fp->type) {
        out->has_ret = 1;
        param_desc(btf, fp->type, "ret", &out->ret);
    }
    vmt_proto_finish(out);
    return 0;
}

vmt_status vmt_os_proto(vmt_os *os, const char *function, vmt_proto *out)
{
    memset(out, 0, sizeof *out);
    if (!os->btf)
        return vmt_errbuf_set(&os->err, VMT_E_NOTSUP, "os: %s", os->info.btf_note);
    int r = os_btf_proto(os->btf, function, out);
    if (r == -1)
        return vmt_errbuf_set(&os->err, VMT_E_NOTFOUND, "os: BTF has no function '%s'", function);
    if (r)
        return vmt_errbuf_set(&os->err, VMT_E_FORMAT, "os: BTF function '%s' has no FUNC_PROTO", function);
    return VMT_OK;
}

static vmt_status os_vread(void *ctx, uint64_t va, void *buf, size_t len, size_t *done)
{
    vmt_os_vreader_slot *s = ctx;
    if (s->root_pa)
        return vmt_os_read_virt(s->os, s->root_pa, va, buf, len, done);
    return vmt_os_read_kernel(s->os, va, buf, len, done);
}

vmt_vreader vmt_os_vreader(vmt_os *os, uint64_t root_pa, vmt_os_vreader_slot *slot)
{
    slot->os = os;
    slot->root_pa = root_pa;
    vmt_vreader r = { os_vread, slot };
    return r;
}
