/*
 * snapshot/qemu_registers.c — a JSON sidecar from QEMU's `info registers
 * -a` text (HMP; `virsh qemu-monitor-command --hmp DOMAIN 'info registers
 * -a'`), taken at the same pause as the dump.
 *
 * That text has what an ELF core lacks and the guest cannot tell us: EFER,
 * the debug registers, whether the vCPU was halted (HLT=1) or in an
 * interrupt shadow (II=1), and the live x87/SSE registers (FCW, FSW, FTW,
 * MXCSR, FPR0-7, XMM0-15). The live FPU state matters: a kernel that
 * skips reloading a task's FPU registers when they still belong to it
 * (Linux's fpregs_state_valid) would otherwise hand the task zeros.
 * Not in the text: SYSCALL/SYSENTER MSRs, PAT, TSC (the OS layer or a
 * sidecar supplies those).
 *
 * Format assumed (QEMU 2.x-9.x x86_cpu_dump_state): one block per vCPU
 * starting "CPU#n"; `NAME=hex` tokens; "FPRi=<mantissa 16 hex> <exponent 4
 * hex>"; "XMMnn=<high 16 hex> <low 16 hex>" (or 32 hex digits without a
 * space in older QEMUs). FTW is the abridged tag byte FXSAVE stores.
 *
 * Failure: a block without EFER, FCW/FSW/FTW/MXCSR, all eight FPRs and
 * all sixteen XMMs (or with a value that is not hex of the right width) is
 * VMT_E_FORMAT naming the vCPU and the field; nothing is produced.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "snapshot/snapshot_internal.h"

/* `name` (e.g. "II=") at the start of the block or after whitespace. */
static const char *find_key(const char *block, const char *end, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = block; p && p + n <= end; p++) {
        p = strstr(p, name);
        if (!p || p + n > end)
            return NULL;
        if (p == block || isspace((unsigned char)p[-1]))
            return p + n;
    }
    return NULL;
}

/* Exactly `digits` hex digits at p (digits == 0: 1..16 of them). */
static int hex_at(const char *p, const char *end, unsigned digits, uint64_t *out, const char **after)
{
    uint64_t v = 0;
    unsigned k = 0;
    while (p + k < end && isxdigit((unsigned char)p[k]) && k < 16) {
        int c = p[k];
        v = v << 4 | (uint64_t)(isdigit(c) ? c - '0' : (tolower(c) - 'a' + 10));
        k++;
    }
    if (k == 0 || (digits && k != digits) || (p + k < end && isxdigit((unsigned char)p[k])))
        return 0;
    *out = v;
    if (after)
        *after = p + k;
    return 1;
}

static vmt_status field(const char *b, const char *e, const char *name, unsigned digits, uint64_t *out,
                        unsigned cpu, char *why, size_t why_len)
{
    const char *p = find_key(b, e, name);
    if (!p || !hex_at(p, e, digits, out, NULL)) {
        vmt_why(why, why_len, "QEMU registers: CPU#%u has no readable %.*s value", cpu, (int)strlen(name) - 1, name);
        return VMT_E_FORMAT;
    }
    return VMT_OK;
}

static vmt_status one_cpu(const char *b, const char *e, unsigned cpu, json_object *out, char *why, size_t why_len)
{
    uint8_t fx[512];
    memset(fx, 0, sizeof fx);
    uint64_t v;
    vmt_status st;
    static const char *const plain[] = { "EFER=", "DR0=", "DR1=", "DR2=", "DR3=", "DR6=", "DR7=" };
    for (size_t i = 0; i < sizeof plain / sizeof plain[0]; i++) {
        if ((st = field(b, e, plain[i], 0, &v, cpu, why, why_len)))
            return st;
        char key[8], hex[24];
        snprintf(key, sizeof key, "%.*s", (int)strlen(plain[i]) - 1, plain[i]);
        for (char *k = key; *k; k++)
            *k = (char)tolower((unsigned char)*k);
        snprintf(hex, sizeof hex, "0x%llx", (unsigned long long)v);
        json_object_object_add(out, key, json_object_new_string(hex));
    }
    if ((st = field(b, e, "HLT=", 1, &v, cpu, why, why_len)))
        return st;
    json_object_object_add(out, "halted", json_object_new_boolean(v != 0));
    if ((st = field(b, e, "II=", 1, &v, cpu, why, why_len)))
        return st;
    json_object_object_add(out, "interrupt_shadow", json_object_new_int((int)v));
    if ((st = field(b, e, "FCW=", 4, &v, cpu, why, why_len)))
        return st;
    snap_put16(fx, (uint16_t)v);
    if ((st = field(b, e, "FSW=", 4, &v, cpu, why, why_len)))
        return st;
    snap_put16(fx + 2, (uint16_t)v);
    if ((st = field(b, e, "FTW=", 2, &v, cpu, why, why_len)))
        return st;
    fx[4] = (uint8_t)v;
    if ((st = field(b, e, "MXCSR=", 8, &v, cpu, why, why_len)))
        return st;
    snap_put32(fx + 24, (uint32_t)v);
    snap_put32(fx + 28, 0xffff); /* MXCSR_MASK of SSE2 CPUs: not shown, any valid value */
    for (int i = 0; i < 8; i++) {
        char name[8];
        snprintf(name, sizeof name, "FPR%d=", i);
        const char *p = find_key(b, e, name), *q;
        uint64_t mant, exp;
        if (!p || !hex_at(p, e, 16, &mant, &q) || *q != ' ' || !hex_at(q + 1, e, 4, &exp, NULL)) {
            vmt_why(why, why_len, "QEMU registers: CPU#%u has no readable FPR%d", cpu, i);
            return VMT_E_FORMAT;
        }
        snap_put64(fx + 32 + 16 * i, mant);
        snap_put16(fx + 40 + 16 * i, (uint16_t)exp);
    }
    for (int i = 0; i < 16; i++) {
        char name[8];
        snprintf(name, sizeof name, "XMM%02d=", i);
        const char *p = find_key(b, e, name), *q;
        uint64_t hi, lo;
        int ok = p && hex_at(p, e, 16, &hi, &q);
        if (ok && *q == ' ')
            ok = hex_at(q + 1, e, 16, &lo, NULL);
        else if (ok)
            ok = hex_at(q, e, 16, &lo, NULL);
        if (!ok) {
            vmt_why(why, why_len, "QEMU registers: CPU#%u has no readable XMM%02d", cpu, i);
            return VMT_E_FORMAT;
        }
        snap_put64(fx + 160 + 16 * i, lo);
        snap_put64(fx + 168 + 16 * i, hi);
    }
    char hex[1025];
    for (int i = 0; i < 512; i++)
        snprintf(hex + 2 * i, 3, "%02x", fx[i]);
    json_object_object_add(out, "fxsave", json_object_new_string(hex));
    return VMT_OK;
}

vmt_status vmt_snapshot_sidecar_from_qemu_registers(const char *text, char **json_out, char *why, size_t why_len)
{
    *json_out = NULL;
    json_object *doc = json_object_new_object(), *vcpus = json_object_new_array();
    json_object_object_add(doc, "source", json_object_new_string("QEMU info registers"));
    json_object_object_add(doc, "vcpus", vcpus);
    vmt_status st = VMT_OK;
    unsigned cpu = 0;
    const char *p = strstr(text, "CPU#");
    if (!p) {
        vmt_why(why, why_len, "QEMU registers: no \"CPU#\" block (not `info registers -a` output)");
        st = VMT_E_FORMAT;
    }
    while (!st && p) {
        const char *next = strstr(p + 4, "CPU#");
        const char *end = next ? next : p + strlen(p);
        unsigned long n = strtoul(p + 4, NULL, 10);
        if (n != cpu || cpu >= VMT_SNAPSHOT_MAX_VCPUS) {
            vmt_why(why, why_len, "QEMU registers: block CPU#%lu where CPU#%u was expected", n, cpu);
            st = VMT_E_FORMAT;
            break;
        }
        json_object *c = json_object_new_object();
        json_object_array_add(vcpus, c);
        st = one_cpu(p, end, cpu, c, why, why_len);
        cpu++;
        p = next;
    }
    if (!st) {
        *json_out = strdup(json_object_to_json_string_ext(doc, JSON_C_TO_STRING_PRETTY));
        if (!*json_out) {
            vmt_why(why, why_len, "QEMU registers: out of memory");
            st = VMT_E_NOMEM;
        }
    }
    json_object_put(doc);
    return st;
}
