/*
 * os/dwarf/dwarf.c — an ELF guest's function prototypes from its DWARF
 * (libdw), as vmt_protos for the shared decoder (vmtrap/proto.h).
 *
 * A function may have several DIEs: its definition, declarations in other
 * units (parameter types, usually no names), and for assembly a bare
 * definition with no parameters at all. The DIE that says the most wins:
 * named parameters, then any parameters, then a definition. Type chains
 * (typedef, const, volatile, restrict) are followed at most 32 steps, so a
 * hostile file cannot loop. The ELF stays open while the handle lives.
 */
#include "vmtrap/proto.h"

#include <dwarf.h>
#include <elfutils/libdw.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/errbuf.h"

struct vmt_dwarf {
    int fd;
    Dwarf *dbg;
    vmt_errbuf err;
};

vmt_status vmt_dwarf_open(const char *elf_path, vmt_dwarf **out, char *why, size_t why_len)
{
    *out = NULL;
    int fd = open(elf_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        vmt_why(why, why_len, "dwarf: cannot open '%s'", elf_path);
        return VMT_E_IO;
    }
    Dwarf *dbg = dwarf_begin(fd, DWARF_C_READ);
    if (!dbg) {
        vmt_why(why, why_len, "dwarf: '%s' has no usable DWARF (%s)", elf_path, dwarf_errmsg(-1));
        close(fd);
        return VMT_E_FORMAT;
    }
    vmt_dwarf *dw = calloc(1, sizeof *dw);
    if (!dw) {
        dwarf_end(dbg);
        close(fd);
        vmt_why(why, why_len, "dwarf: no memory");
        return VMT_E_NOMEM;
    }
    dw->fd = fd;
    dw->dbg = dbg;
    *out = dw;
    return VMT_OK;
}

void vmt_dwarf_close(vmt_dwarf *dw)
{
    if (!dw)
        return;
    dwarf_end(dw->dbg);
    close(dw->fd);
    free(dw);
}

const char *vmt_dwarf_error(const vmt_dwarf *dw)
{
    return dw ? dw->err.msg : "dwarf: NULL handle";
}

static int type_of(Dwarf_Die *die, Dwarf_Die *out)
{
    Dwarf_Attribute a;
    return dwarf_attr_integrate(die, DW_AT_type, &a) && dwarf_formref_die(&a, out) ? 1 : 0;
}

static int is_qualifier(int tag)
{
    return tag == DW_TAG_typedef || tag == DW_TAG_const_type || tag == DW_TAG_volatile_type ||
           tag == DW_TAG_restrict_type || tag == DW_TAG_atomic_type;
}

/* Follow qualifiers and typedefs; 0 for void (no type). */
static int strip(Dwarf_Die *t)
{
    for (int i = 0; i < 32; i++) {
        if (!is_qualifier(dwarf_tag(t)))
            return 1;
        Dwarf_Die n;
        if (!type_of(t, &n))
            return 0; /* const void */
        *t = n;
    }
    return 0;
}

/* "const char *", "int64_t", "struct x *" (bounded). */
static void type_text(Dwarf_Die *t, int have, char *buf, size_t len, int depth)
{
    if (!have || depth > 8) {
        snprintf(buf, len, "void");
        return;
    }
    int tag = dwarf_tag(t);
    const char *name = dwarf_diename(t);
    Dwarf_Die n;
    char inner[VMT_PROTO_NAME_LEN];
    switch (tag) {
    case DW_TAG_pointer_type:
        type_text(&n, type_of(t, &n), inner, sizeof inner, depth + 1);
        snprintf(buf, len, "%.40s *", inner);
        return;
    case DW_TAG_const_type:
        type_text(&n, type_of(t, &n), inner, sizeof inner, depth + 1);
        snprintf(buf, len, "const %.40s", inner);
        return;
    case DW_TAG_volatile_type:
        type_text(&n, type_of(t, &n), inner, sizeof inner, depth + 1);
        snprintf(buf, len, "volatile %.38s", inner);
        return;
    case DW_TAG_structure_type:
        snprintf(buf, len, "struct %s", name ? name : "?");
        return;
    case DW_TAG_union_type:
        snprintf(buf, len, "union %s", name ? name : "?");
        return;
    case DW_TAG_enumeration_type:
        snprintf(buf, len, "enum %s", name ? name : "?");
        return;
    default:
        snprintf(buf, len, "%s", name ? name : "?");
    }
}

static void fields_of(Dwarf_Die *st, vmt_param_desc *d)
{
    const char *const *want;
    unsigned nwant;
    if (!vmt_proto_struct_fields(d->struct_name, &want, &nwant))
        return;
    for (unsigned w = 0; w < nwant; w++) {
        Dwarf_Die m;
        if (dwarf_child(st, &m) != 0)
            return;
        do {
            const char *mn = dwarf_diename(&m);
            if (dwarf_tag(&m) != DW_TAG_member || !mn || strcmp(mn, want[w]) != 0)
                continue;
            Dwarf_Attribute a;
            Dwarf_Word off = 0;
            if (!dwarf_attr(&m, DW_AT_data_member_location, &a) || dwarf_formudata(&a, &off) != 0)
                break;
            Dwarf_Die mt;
            if (!type_of(&m, &mt) || !strip(&mt))
                break;
            vmt_field_desc *f = &d->fields[d->nfields];
            snprintf(f->name, sizeof f->name, "%s", mn);
            f->offset = (uint32_t)off;
            int tag = dwarf_tag(&mt);
            if (tag == DW_TAG_base_type || tag == DW_TAG_enumeration_type) {
                Dwarf_Word enc = 0;
                Dwarf_Attribute ea;
                if (dwarf_attr(&mt, DW_AT_encoding, &ea))
                    dwarf_formudata(&ea, &enc);
                int sz = dwarf_bytesize(&mt);
                f->size = sz > 0 ? (uint32_t)sz : 8;
                f->kind = enc == DW_ATE_signed || enc == DW_ATE_signed_char ? VMT_PARAM_INT : VMT_PARAM_UINT;
            } else if (tag == DW_TAG_pointer_type) {
                Dwarf_Die pt;
                int have = type_of(&mt, &pt) && strip(&pt);
                f->size = 8;
                f->kind = have && dwarf_tag(&pt) == DW_TAG_base_type && dwarf_bytesize(&pt) == 1 ? VMT_PARAM_STRING
                                                                                                 : VMT_PARAM_POINTER;
            } else {
                break;
            }
            d->nfields++;
            break;
        } while (dwarf_siblingof(&m, &m) == 0);
    }
}

static void describe(Dwarf_Die *t0, int have, const char *name, vmt_param_desc *d)
{
    memset(d, 0, sizeof *d);
    d->len_param = -1;
    snprintf(d->name, sizeof d->name, "%s", name);
    Dwarf_Die t = *t0;
    type_text(&t, have, d->type, sizeof d->type, 0);
    d->size = 8;
    if (!have || !strip(&t)) {
        d->kind = VMT_PARAM_OTHER;
        return;
    }
    int tag = dwarf_tag(&t);
    if (tag == DW_TAG_base_type) {
        Dwarf_Word enc = 0;
        Dwarf_Attribute a;
        if (dwarf_attr(&t, DW_AT_encoding, &a))
            dwarf_formudata(&a, &enc);
        int sz = dwarf_bytesize(&t);
        d->size = sz > 0 && sz <= 8 ? (uint32_t)sz : 8;
        if (enc == DW_ATE_signed || enc == DW_ATE_signed_char)
            d->kind = VMT_PARAM_INT;
        else if (enc == DW_ATE_unsigned || enc == DW_ATE_unsigned_char || enc == DW_ATE_boolean)
            d->kind = VMT_PARAM_UINT;
        else
            d->kind = VMT_PARAM_OTHER;
    } else if (tag == DW_TAG_enumeration_type) {
        int sz = dwarf_bytesize(&t);
        d->size = sz > 0 && sz <= 8 ? (uint32_t)sz : 4;
        d->kind = VMT_PARAM_ENUM;
        Dwarf_Die e;
        if (dwarf_child(&t, &e) == 0) {
            do {
                Dwarf_Attribute a;
                Dwarf_Sword v;
                if (dwarf_tag(&e) != DW_TAG_enumerator || !dwarf_attr(&e, DW_AT_const_value, &a) ||
                    dwarf_formsdata(&a, &v) != 0 || d->nenums >= VMT_PROTO_MAX_ENUMS)
                    continue;
                d->enums[d->nenums].value = v;
                snprintf(d->enums[d->nenums].name, sizeof d->enums[0].name, "%s", dwarf_diename(&e) ? dwarf_diename(&e) : "?");
                d->nenums++;
            } while (dwarf_siblingof(&e, &e) == 0);
        }
    } else if (tag == DW_TAG_pointer_type) {
        Dwarf_Die p;
        int hp = type_of(&t, &p) && strip(&p);
        if (!hp) {
            d->kind = VMT_PARAM_BUFFER; /* void *: a buffer if a length follows */
        } else if (dwarf_tag(&p) == DW_TAG_base_type && dwarf_bytesize(&p) == 1) {
            const char *pn = dwarf_diename(&p);
            d->kind = pn && strcmp(pn, "char") == 0 ? VMT_PARAM_STRING : VMT_PARAM_BUFFER;
        } else if (dwarf_tag(&p) == DW_TAG_structure_type && dwarf_diename(&p)) {
            const char *const *f;
            unsigned n;
            snprintf(d->struct_name, sizeof d->struct_name, "%s", dwarf_diename(&p));
            if (vmt_proto_struct_fields(d->struct_name, &f, &n)) {
                d->kind = VMT_PARAM_STRUCT;
                fields_of(&p, d);
            } else {
                d->kind = VMT_PARAM_POINTER;
            }
        } else {
            d->kind = VMT_PARAM_POINTER;
        }
    } else {
        d->kind = VMT_PARAM_OTHER;
    }
}

/* How much a subprogram DIE says about its parameters. */
static int score(Dwarf_Die *sp)
{
    int s = dwarf_hasattr(sp, DW_AT_declaration) ? 0 : 1;
    Dwarf_Die c;
    if (dwarf_child(sp, &c) == 0) {
        do {
            if (dwarf_tag(&c) != DW_TAG_formal_parameter)
                continue;
            s += 2;
            if (dwarf_diename(&c))
                s += 4;
        } while (dwarf_siblingof(&c, &c) == 0);
    }
    return s;
}

vmt_status vmt_dwarf_proto(vmt_dwarf *dw, const char *function, vmt_proto *out)
{
    memset(out, 0, sizeof *out);
    Dwarf_Off off = 0, next;
    size_t hsize;
    Dwarf_Die best;
    int best_score = -1;
    while (dwarf_nextcu(dw->dbg, off, &next, &hsize, NULL, NULL, NULL) == 0) {
        Dwarf_Die cu, die;
        if (dwarf_offdie(dw->dbg, off + hsize, &cu) && dwarf_child(&cu, &die) == 0) {
            do {
                const char *n;
                if (dwarf_tag(&die) != DW_TAG_subprogram || !(n = dwarf_diename(&die)) || strcmp(n, function) != 0)
                    continue;
                int s = score(&die);
                if (s > best_score) {
                    best_score = s;
                    best = die;
                }
            } while (dwarf_siblingof(&die, &die) == 0);
        }
        off = next;
    }
    if (best_score < 0)
        return vmt_errbuf_set(&dw->err, VMT_E_NOTFOUND, "dwarf: no function '%s'", function);
    snprintf(out->name, sizeof out->name, "%s", function);
    snprintf(out->source, sizeof out->source, "dwarf");
    Dwarf_Die c, rt;
    int have_rt = type_of(&best, &rt);
    if (have_rt) {
        out->has_ret = 1;
        describe(&rt, 1, "ret", &out->ret);
    }
    size_t o = (size_t)snprintf(out->text, sizeof out->text, "%s %s(", have_rt ? out->ret.type : "void", function);
    if (dwarf_child(&best, &c) == 0) {
        do {
            if (dwarf_tag(&c) != DW_TAG_formal_parameter)
                continue;
            if (out->nparams == VMT_PROTO_MAX_PARAMS) {
                snprintf(out->note, sizeof out->note, "parameters after the 6th are on the stack and not decoded");
                break;
            }
            char fallback[16];
            const char *pn = dwarf_diename(&c);
            if (!pn) {
                snprintf(fallback, sizeof fallback, "arg%u", out->nparams);
                pn = fallback;
            }
            Dwarf_Die pt;
            int have = type_of(&c, &pt);
            vmt_param_desc *d = &out->params[out->nparams++];
            describe(&pt, have, pn, d);
            if (o < sizeof out->text)
                o += (size_t)snprintf(out->text + o, sizeof out->text - o, "%s%s %s", out->nparams > 1 ? ", " : "",
                                      d->type, d->name);
        } while (dwarf_siblingof(&c, &c) == 0);
    }
    if (o < sizeof out->text)
        snprintf(out->text + o, sizeof out->text - o, ")");
    vmt_proto_finish(out);
    return VMT_OK;
}
