/*
 * os/decode.c — decoding a call from a vmt_proto (see vmtrap/proto.h):
 * registers to values, strings and buffer previews read through a bounded
 * reader, struct pointers shown by their chosen fields. The struct-field
 * table and the buffer rule live here, shared by the BTF and DWARF builders.
 */
#include "vmtrap/proto.h"

#include <string.h>

typedef struct struct_fields {
    const char *name;
    const char *fields[VMT_PROTO_MAX_FIELDS];
} struct_fields;

static const struct_fields shown[] = {
    { "filename", { "name" } },
    { "open_how", { "flags", "mode", "resolve" } },
    { "kernel_clone_args", { "flags", "exit_signal", "pidfd" } },
    { "linux_binprm", { "filename" } },
    { "qstr", { "name" } },
    { "sockaddr", { "sa_family" } },
};

int vmt_proto_struct_fields(const char *struct_name, const char *const **fields, unsigned *n)
{
    if (!struct_name)
        return 0;
    for (size_t i = 0; i < sizeof shown / sizeof shown[0]; i++) {
        if (strcmp(shown[i].name, struct_name) != 0)
            continue;
        unsigned k = 0;
        while (k < VMT_PROTO_MAX_FIELDS && shown[i].fields[k])
            k++;
        *fields = shown[i].fields;
        *n = k;
        return 1;
    }
    return 0;
}

static int length_like(const char *name)
{
    static const char *const names[] = { "count", "len", "length", "size", "nbytes", "n", "bytes" };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(name, names[i]) == 0)
            return 1;
    return 0;
}

void vmt_proto_finish(vmt_proto *p)
{
    for (unsigned i = 0; i < p->nparams; i++) {
        vmt_param_desc *d = &p->params[i];
        /* Builders mark char pointers STRING and other byte pointers
         * BUFFER; followed by a length either is a buffer. */
        if (d->kind == VMT_PARAM_STRING || d->kind == VMT_PARAM_BUFFER) {
            d->len_param = -1;
            for (unsigned k = i + 1; k < p->nparams; k++) {
                const vmt_param_desc *l = &p->params[k];
                if ((l->kind == VMT_PARAM_UINT || l->kind == VMT_PARAM_INT) && length_like(l->name)) {
                    d->kind = VMT_PARAM_BUFFER;
                    d->len_param = (int)k;
                    break;
                }
            }
            if (d->kind == VMT_PARAM_BUFFER && d->len_param < 0)
                d->kind = VMT_PARAM_POINTER; /* a void * with no length */
        }
    }
}

static uint64_t fit(uint64_t v, uint32_t size, int is_signed)
{
    if (size == 0 || size >= 8)
        return v;
    uint64_t mask = (1ull << (8 * size)) - 1;
    v &= mask;
    if (is_signed && (v >> (8 * size - 1)) & 1)
        v |= ~mask;
    return v;
}

/* Read a NUL-terminated string of at most max-1 bytes. */
static void read_string(const vmt_vreader *rd, uint64_t va, char *out, size_t max, size_t *nbytes, int *truncated,
                        vmt_status *st, uint64_t *fault)
{
    size_t got = 0;
    *st = VMT_OK;
    *fault = 0;
    out[0] = 0;
    while (got < max - 1) {
        /* Read up to the end of the page, so a string ending before a
         * not-present page is still read whole. */
        uint64_t cur = va + got;
        size_t chunk = (size_t)(4096 - (cur & 4095));
        if (chunk > max - 1 - got)
            chunk = max - 1 - got;
        size_t done = 0;
        vmt_status s = rd->read(rd->ctx, cur, out + got, chunk, &done);
        if (s != VMT_OK) {
            void *z = memchr(out + got, 0, done < chunk ? done : chunk);
            if (z) {
                got = (size_t)((char *)z - out);
                break;
            }
            got += done;
            *st = s;
            *fault = va + got;
            break;
        }
        void *z = memchr(out + got, 0, chunk);
        if (z) {
            got = (size_t)((char *)z - out);
            out[got] = 0;
            *nbytes = got;
            *truncated = 0;
            return;
        }
        got += chunk;
    }
    out[got] = 0;
    *nbytes = got;
    *truncated = *st == VMT_OK && got == max - 1;
}

static void decode_fields(const vmt_param_desc *d, const vmt_vreader *rd, vmt_value *v)
{
    v->nfields = d->nfields;
    v->read_status = VMT_OK;
    for (unsigned i = 0; i < d->nfields; i++) {
        const vmt_field_desc *f = &d->fields[i];
        vmt_field_value *fv = &v->fields[i];
        memset(fv, 0, sizeof *fv);
        fv->name = f->name;
        fv->kind = f->kind;
        uint64_t va = v->raw + f->offset;
        if (f->kind == VMT_PARAM_CHARS) {
            size_t n = f->size < sizeof fv->text - 1 ? f->size : sizeof fv->text - 1;
            size_t done = 0;
            fv->read_status = rd->read(rd->ctx, va, fv->text, n, &done);
            fv->nbytes = strnlen(fv->text, fv->read_status ? done : n);
            fv->text[fv->nbytes] = 0;
            fv->fault_va = fv->read_status ? va + done : 0;
            fv->truncated = f->size > n && fv->nbytes == n;
        } else {
            uint64_t raw = 0;
            size_t done = 0, n = f->size && f->size <= 8 ? f->size : 8;
            fv->read_status = rd->read(rd->ctx, va, &raw, n, &done);
            if (fv->read_status) {
                fv->fault_va = va + done;
            } else {
                fv->raw = fit(raw, (uint32_t)n, f->kind == VMT_PARAM_INT);
                if (f->kind == VMT_PARAM_STRING && fv->raw)
                    read_string(rd, fv->raw, fv->text, sizeof fv->text, &fv->nbytes, &fv->truncated,
                                &fv->read_status, &fv->fault_va);
            }
        }
        if (fv->read_status && v->read_status == VMT_OK) {
            v->read_status = fv->read_status;
            v->fault_va = fv->fault_va;
        }
    }
}

static void decode_one(const vmt_proto *p, const vmt_param_desc *d, vmt_param_kind kind, uint64_t raw,
                       const uint64_t *all, const vmt_vreader *rd, vmt_value *v)
{
    memset(v, 0, sizeof *v);
    v->name = d->name;
    v->kind = kind;
    v->raw = fit(raw, d->size, kind == VMT_PARAM_INT || kind == VMT_PARAM_ENUM);
    switch (kind) {
    case VMT_PARAM_ENUM:
        for (unsigned i = 0; i < d->nenums; i++)
            if ((uint64_t)d->enums[i].value == v->raw)
                v->enum_name = d->enums[i].name;
        break;
    case VMT_PARAM_STRING:
        if (v->raw)
            read_string(rd, v->raw, v->text, sizeof v->text, &v->nbytes, &v->truncated, &v->read_status, &v->fault_va);
        break;
    case VMT_PARAM_BUFFER: {
        uint64_t len = all && d->len_param >= 0 && (unsigned)d->len_param < p->nparams ? all[d->len_param] : 0;
        size_t want = len < VMT_VALUE_PREVIEW ? (size_t)len : VMT_VALUE_PREVIEW;
        size_t done = 0;
        if (want && v->raw) {
            v->read_status = rd->read(rd->ctx, v->raw, v->text, want, &done);
            if (v->read_status == VMT_OK)
                done = want;
            else
                v->fault_va = v->raw + done;
        }
        v->nbytes = done;
        v->text[done] = 0;
        v->truncated = len > want;
        break;
    }
    case VMT_PARAM_STRUCT:
        if (v->raw)
            decode_fields(d, rd, v);
        break;
    default:
        break;
    }
}

void vmt_proto_decode_args(const vmt_proto *p, const vmt_regs *regs, const vmt_vreader *rd,
                           vmt_value out[VMT_PROTO_MAX_PARAMS])
{
    uint64_t all[VMT_PROTO_MAX_PARAMS];
    for (unsigned i = 0; i < VMT_PROTO_MAX_PARAMS; i++)
        all[i] = vmt_regs_sysv_arg(regs, i);
    for (unsigned i = 0; i < p->nparams && i < VMT_PROTO_MAX_PARAMS; i++)
        decode_one(p, &p->params[i], p->params[i].kind, all[i], all, rd, &out[i]);
}

void vmt_proto_decode_ret(const vmt_proto *p, const vmt_regs *regs, const vmt_vreader *rd, vmt_value *out)
{
    /* A returned buffer has no length: show it as a pointer. */
    vmt_param_kind k = p->ret.kind == VMT_PARAM_BUFFER ? VMT_PARAM_POINTER : p->ret.kind;
    decode_one(p, &p->ret, k, regs->rax, NULL, rd, out);
}
