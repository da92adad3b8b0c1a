/*
 * snapshot/sidecar.c — the JSON sidecar (what a bare core lacks) and the
 * table of named vCPU fields that sidecars and fixups share.
 *
 * Format (docs/snapshot.md): a JSON object with optional "source" (a
 * short text naming where the values come from, shown in each fixup's
 * reason), "tsc_hz", "insns_per_sec", "start_ns" and "vcpus": an array (index = vCPU) of
 * objects whose members are field names of the table below (numbers or
 * "0x..." strings), plus "halted" (boolean) and "fxsave" (1024 hex digits:
 * the 512-byte FXSAVE image). Parsing uses json-c.
 *
 * Atomicity: the whole document is applied to copies of the vCPU states;
 * only when every member is valid are the copies stored and the fixups
 * ("sidecar") recorded. An unknown member, a wrong type, a negative or
 * non-hex number, a vCPU index past the snapshot: VMT_E_FORMAT naming it.
 *
 * Groups: giving any field of a group marks the whole group known (the
 * group's other fields keep their defaults, vmt_vcpu_state_init).
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "core/hex.h"
#include "snapshot/snapshot_internal.h"

typedef struct field_desc {
    const char *name;
    size_t offset;   /* of a uint64_t inside vmt_vcpu_state */
    uint32_t group;
} field_desc;

#define VS(f, g) { #f, offsetof(vmt_vcpu_state, f), g }
#define RG(f) { #f, offsetof(vmt_vcpu_state, regs) + offsetof(vmt_regs, f), VMT_VS_REGS }
static const field_desc fields[] = {
    RG(efer), RG(cr8), RG(kernel_gs_base), RG(dr0), RG(dr1), RG(dr2), RG(dr3), RG(dr6), RG(dr7),
    VS(star, VMT_VS_SYSCALL), VS(lstar, VMT_VS_SYSCALL), VS(cstar, VMT_VS_SYSCALL), VS(fmask, VMT_VS_SYSCALL),
    VS(sysenter_cs, VMT_VS_SYSENTER), VS(sysenter_esp, VMT_VS_SYSENTER), VS(sysenter_eip, VMT_VS_SYSENTER),
    VS(pat, VMT_VS_MSRS), VS(tsc_aux, VMT_VS_MSRS), VS(misc_enable, VMT_VS_MSRS), VS(spec_ctrl, VMT_VS_MSRS),
    VS(mtrr_def_type, VMT_VS_MSRS),
    VS(apic_base, VMT_VS_APIC_BASE), VS(tsc_deadline, VMT_VS_APIC_BASE),
    VS(xcr0, VMT_VS_FPU),
    VS(tsc, VMT_VS_TSC),
};
#undef VS
#undef RG

vmt_status snap_field_set(vmt_vcpu_state *v, const char *field, uint64_t value, uint32_t *group)
{
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        if (strcmp(fields[i].name, field) == 0) {
            memcpy((uint8_t *)v + fields[i].offset, &value, sizeof value);
            *group = fields[i].group;
            return VMT_OK;
        }
    }
    if (strcmp(field, "mxcsr") == 0 && value <= 0xffffffffu) {
        snap_put32(v->fpu.fxsave + 24, (uint32_t)value);
        *group = VMT_VS_FPU;
        return VMT_OK;
    }
    if (strcmp(field, "fcw") == 0 && value <= 0xffffu) {
        snap_put16(v->fpu.fxsave, (uint16_t)value);
        *group = VMT_VS_FPU;
        return VMT_OK;
    }
    if (strcmp(field, "halted") == 0 && value <= 1) {
        v->halted = value != 0;
        *group = VMT_VS_EVENTS;
        return VMT_OK;
    }
    if (strcmp(field, "interrupt_shadow") == 0 && value <= 1) {
        v->interrupt_shadow = (uint8_t)value;
        *group = VMT_VS_EVENTS;
        return VMT_OK;
    }
    return VMT_E_NOTFOUND;
}

static vmt_status get_u64(json_object *o, const char *where, uint64_t *out, char *why, size_t why_len)
{
    if (json_object_is_type(o, json_type_int)) {
        errno = 0;
        int64_t sv = json_object_get_int64(o);
        if (sv < 0) {
            vmt_why(why, why_len, "sidecar: %s is negative", where);
            return VMT_E_FORMAT;
        }
        *out = sv == INT64_MAX ? json_object_get_uint64(o) : (uint64_t)sv;
        return VMT_OK;
    }
    if (json_object_is_type(o, json_type_string)) {
        const char *t = json_object_get_string(o);
        char *end = NULL;
        errno = 0;
        unsigned long long v = strtoull(t, &end, 0);
        if (t[0] && t[0] != '-' && end && !*end && errno == 0) {
            *out = v;
            return VMT_OK;
        }
    }
    vmt_why(why, why_len, "sidecar: %s must be a non-negative number or a \"0x...\" string", where);
    return VMT_E_FORMAT;
}


/* Apply one vCPU object to *v; fixups are collected into the caller's list. */
static vmt_status apply_vcpu(vmt_snapshot *s, uint32_t idx, json_object *o, vmt_vcpu_state *v, uint8_t *efer_set,
                             const char *how, char *why, size_t why_len)
{
    if (!json_object_is_type(o, json_type_object)) {
        vmt_why(why, why_len, "sidecar: vcpus[%u] is not an object", idx);
        return VMT_E_FORMAT;
    }
    json_object_object_foreach(o, key, val)
    {
        char where[96];
        snprintf(where, sizeof where, "vcpus[%u].%s", idx, key);
        uint32_t group = 0;
        uint64_t value = 0;
        if (strcmp(key, "fxsave") == 0) {
            const char *t = json_object_is_type(val, json_type_string) ? json_object_get_string(val) : NULL;
            if (!t || strlen(t) != 1024) {
                vmt_why(why, why_len, "sidecar: %s must be a string of 1024 hex digits", where);
                return VMT_E_FORMAT;
            }
            for (int i = 0; i < 512; i++) {
                int hi = vmt_hex_digit(t[2 * i]), lo = vmt_hex_digit(t[2 * i + 1]);
                if (hi < 0 || lo < 0) {
                    vmt_why(why, why_len, "sidecar: %s has a non-hex digit at %d", where, 2 * i);
                    return VMT_E_FORMAT;
                }
                v->fpu.fxsave[i] = (uint8_t)(hi << 4 | lo);
            }
            group = VMT_VS_FPU;
        } else if (strcmp(key, "halted") == 0) {
            if (!json_object_is_type(val, json_type_boolean)) {
                vmt_why(why, why_len, "sidecar: %s must be true or false", where);
                return VMT_E_FORMAT;
            }
            value = json_object_get_boolean(val) ? 1 : 0;
            snap_field_set(v, key, value, &group);
        } else {
            vmt_status st = get_u64(val, where, &value, why, why_len);
            if (st)
                return st;
            if (snap_field_set(v, key, value, &group)) {
                vmt_why(why, why_len, "sidecar: unknown field %s (or value out of range)", where);
                return VMT_E_FORMAT;
            }
            if (strcmp(key, "efer") == 0)
                *efer_set = 1;
        }
        v->known |= group;
        if (snap_fixup_add(s, idx, group, key, value, how)) {
            vmt_why(why, why_len, "sidecar: out of memory");
            return VMT_E_NOMEM;
        }
    }
    char w[160];
    if (vmt_vcpu_state_check(v, w, sizeof w)) {
        vmt_why(why, why_len, "sidecar: vcpus[%u] gives an inconsistent state: %s", idx, w);
        return VMT_E_FORMAT;
    }
    return VMT_OK;
}

static vmt_status apply_doc(vmt_snapshot *s, json_object *doc, vmt_vcpu_state *vs, uint8_t *efer, vmt_clock_config *clk,
                            char *why, size_t why_len)
{
    if (!json_object_is_type(doc, json_type_object)) {
        vmt_why(why, why_len, "sidecar: the document is not a JSON object");
        return VMT_E_FORMAT;
    }
    char how[200] = "sidecar";
    json_object *src = NULL;
    if (json_object_object_get_ex(doc, "source", &src)) {
        if (!json_object_is_type(src, json_type_string) || json_object_get_string_len(src) > 150) {
            vmt_why(why, why_len, "sidecar: source must be a string of at most 150 characters");
            return VMT_E_FORMAT;
        }
        snprintf(how, sizeof how, "sidecar (%s)", json_object_get_string(src));
    }
    json_object_object_foreach(doc, key, val)
    {
        vmt_status st = VMT_OK;
        if (strcmp(key, "source") == 0)
            continue;
        if (strcmp(key, "tsc_hz") == 0)
            st = get_u64(val, key, &clk->tsc_hz, why, why_len);
        else if (strcmp(key, "insns_per_sec") == 0)
            st = get_u64(val, key, &clk->insns_per_sec, why, why_len);
        else if (strcmp(key, "start_ns") == 0)
            st = get_u64(val, key, &clk->start_ns, why, why_len);
        else if (strcmp(key, "vcpus") == 0) {
            if (!json_object_is_type(val, json_type_array)) {
                vmt_why(why, why_len, "sidecar: vcpus must be an array");
                return VMT_E_FORMAT;
            }
            size_t n = json_object_array_length(val);
            if (n > s->nvcpus) {
                vmt_why(why, why_len, "sidecar: %zu vcpus given but the snapshot has %u", n, s->nvcpus);
                return VMT_E_FORMAT;
            }
            for (size_t i = 0; i < n && !st; i++)
                st = apply_vcpu(s, (uint32_t)i, json_object_array_get_idx(val, i), &vs[i], &efer[i], how, why,
                                why_len);
        } else {
            vmt_why(why, why_len, "sidecar: unknown field %s", key);
            return VMT_E_FORMAT;
        }
        if (st)
            return st;
    }
    return VMT_OK;
}

vmt_status vmt_snapshot_apply_sidecar(vmt_snapshot *s, const char *json_text)
{
    json_tokener *tok = json_tokener_new();
    if (!tok)
        return vmt_errbuf_set(&s->err, VMT_E_NOMEM, "sidecar: out of memory");
    json_object *doc = json_tokener_parse_ex(tok, json_text, (int)strlen(json_text));
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    size_t consumed = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    if (!doc || jerr != json_tokener_success) {
        json_object_put(doc);
        return vmt_errbuf_set(&s->err, VMT_E_FORMAT, "sidecar: not valid JSON: %s", json_tokener_error_desc(jerr));
    }
    for (const char *p = json_text + consumed; *p; p++)
        if (*p != ' ' && *p != '\n' && *p != '\t' && *p != '\r') {
            json_object_put(doc);
            return vmt_errbuf_set(&s->err, VMT_E_FORMAT, "sidecar: text after the JSON object");
        }
    vmt_vcpu_state *vs = malloc(s->nvcpus * sizeof *vs);
    uint8_t *efer = malloc(s->nvcpus);
    vmt_clock_config clk = s->clock;
    size_t fix_before = s->nfixups;
    char why[VMT_ERRBUF_LEN] = "";
    vmt_status st = VMT_E_NOMEM;
    if (vs && efer) {
        memcpy(vs, s->vcpus, s->nvcpus * sizeof *vs);
        memcpy(efer, s->efer_set, s->nvcpus);
        st = apply_doc(s, doc, vs, efer, &clk, why, sizeof why);
    } else {
        snprintf(why, sizeof why, "sidecar: out of memory");
    }
    if (st == VMT_OK) {
        memcpy(s->vcpus, vs, s->nvcpus * sizeof *vs);
        memcpy(s->efer_set, efer, s->nvcpus);
        s->clock = clk;
    } else {
        s->nfixups = fix_before; /* nothing half-applied */
        vmt_errbuf_set(&s->err, st, "%s", why);
    }
    free(vs);
    free(efer);
    json_object_put(doc);
    return st;
}

vmt_status vmt_snapshot_apply_sidecar_file(vmt_snapshot *s, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return vmt_errbuf_set(&s->err, VMT_E_IO, "sidecar: cannot open %s: %s", path, strerror(errno));
    char *text = NULL;
    size_t len = 0, cap = 0;
    vmt_status st = VMT_OK;
    for (;;) {
        if (len + 4097 > cap) {
            if (cap >= (1u << 24)) {
                st = vmt_errbuf_set(&s->err, VMT_E_FORMAT, "sidecar: %s is larger than 16 MiB", path);
                break;
            }
            cap = cap ? cap * 2 : 8192;
            char *n = realloc(text, cap);
            if (!n) {
                st = vmt_errbuf_set(&s->err, VMT_E_NOMEM, "sidecar: out of memory");
                break;
            }
            text = n;
        }
        size_t got = fread(text + len, 1, cap - len - 1, f);
        len += got;
        if (got == 0)
            break;
    }
    fclose(f);
    if (!st) {
        text[len] = 0;
        if (strlen(text) != len)
            st = vmt_errbuf_set(&s->err, VMT_E_FORMAT, "sidecar: %s contains a NUL byte", path);
        else
            st = vmt_snapshot_apply_sidecar(s, text);
    }
    free(text);
    return st;
}
