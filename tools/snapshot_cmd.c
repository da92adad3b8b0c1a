/*
 * tools/snapshot_cmd.c — `vmtrap snapshot`: look at and convert snapshots.
 *
 *   vmtrap snapshot info FILE [--state SIDECAR.json] [--qemu-registers TXT] [--reconstruct] [--json]
 *   vmtrap snapshot convert FILE OUT.vmts [--state SIDECAR.json] [--qemu-registers TXT] [--meta JSON]
 *   vmtrap snapshot sidecar TXT      (QEMU `info registers -a` text -> sidecar JSON on stdout)
 *   vmtrap snapshot save FILE OUT.vmts (--at-instructions N | --at-time S | --at-hit SYM[:N]) ...
 *                                    (tools/savepoint_cmd.c: resume, run to the point, save)
 *
 * FILE is a QEMU dump-guest-memory ELF core or a vmtrap snapshot. `info`
 * prints the memory map, each vCPU (RIP, CR3, mode, known and
 * reconstructed groups) and every fixup with its reason (so no value a run
 * uses is silent); `--json` prints one JSON object instead. `convert`
 * applies the sidecar, reconstructs what is still missing and saves a
 * vmtrap snapshot. Exit codes: 0 ok, 1 a bad or unreadable snapshot, 2 a
 * usage error; one line on stderr for every failure.
 */
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>

#include "cli.h"
#include "vmtrap/snapshot.h"

static int usage(const char *msg)
{
    fprintf(stderr, "vmtrap snapshot: %s (usage: vmtrap snapshot info FILE [--state SIDECAR.json] "
                    "[--qemu-registers TXT] [--reconstruct] [--json] | vmtrap snapshot convert FILE OUT.vmts "
                    "[--state SIDECAR.json] [--qemu-registers TXT] [--meta JSON] | vmtrap snapshot sidecar TXT | "
                    "vmtrap snapshot save FILE OUT.vmts (--at-instructions N | --at-time SECONDS | --at-hit SYMBOL[:COUNT]))\n",
            msg);
    return CLI_EXIT_USAGE;
}

/* The whole text of a small file (malloc'ed), or NULL with why. */
static char *read_text(const char *path, char *why, size_t why_len)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(why, why_len, "cannot open %s", path);
        return NULL;
    }
    size_t cap = 1 << 20;
    char *t = malloc(cap);
    size_t n = t ? fread(t, 1, cap - 1, f) : 0;
    int big = t && n == cap - 1;
    fclose(f);
    if (!t || big) {
        free(t);
        snprintf(why, why_len, "%s is larger than 1 MiB", path);
        return NULL;
    }
    t[n] = 0;
    return t;
}

/* Apply QEMU's `info registers -a` text as a sidecar. */
static int apply_qemu_registers(vmt_snapshot *s, const char *path)
{
    char why[512];
    char *text = read_text(path, why, sizeof why), *json = NULL;
    int rc = CLI_EXIT_OK;
    if (!text || vmt_snapshot_sidecar_from_qemu_registers(text, &json, why, sizeof why)) {
        fprintf(stderr, "vmtrap snapshot: %s\n", why);
        rc = CLI_EXIT_FAIL;
    } else if (vmt_snapshot_apply_sidecar(s, json)) {
        fprintf(stderr, "vmtrap snapshot: %s: %s\n", path, vmt_snapshot_error(s));
        rc = CLI_EXIT_FAIL;
    }
    free(text);
    free(json);
    return rc;
}

static int sidecar_cmd(int argc, char **argv)
{
    if (argc != 3 || argv[2][0] == '-')
        return usage("sidecar takes one file: QEMU's `info registers -a` text");
    char why[512];
    char *text = read_text(argv[2], why, sizeof why), *json = NULL;
    if (!text || vmt_snapshot_sidecar_from_qemu_registers(text, &json, why, sizeof why)) {
        fprintf(stderr, "vmtrap snapshot: %s\n", why);
        free(text);
        return CLI_EXIT_FAIL;
    }
    puts(json);
    free(text);
    free(json);
    return CLI_EXIT_OK;
}

static void print_text(vmt_snapshot *s)
{
    printf("kind: %s\n", vmt_snapshot_kind_of(s) == VMT_SNAPSHOT_VMTS ? "vmtrap snapshot" : "QEMU ELF core");
    printf("metadata: %s\n", vmt_snapshot_metadata(s));
    size_t n;
    const vmt_ram_range *r = vmt_snapshot_ram_ranges(s, &n);
    for (size_t i = 0; i < n; i++)
        printf("ram: 0x%llx +0x%llx\n", (unsigned long long)r[i].start, (unsigned long long)r[i].size);
    for (uint32_t i = 0; i < vmt_snapshot_vcpu_count(s); i++) {
        const vmt_vcpu_state *v = vmt_snapshot_vcpu(s, i);
        char known[128], rec[128];
        vmt_vcpu_state_groups(v->known, known, sizeof known);
        vmt_vcpu_state_groups(v->reconstructed, rec, sizeof rec);
        printf("vcpu %u: rip 0x%llx rsp 0x%llx cr0 0x%llx cr3 0x%llx cr4 0x%llx efer 0x%llx cs 0x%x%s\n", i,
               (unsigned long long)v->regs.rip, (unsigned long long)v->regs.rsp, (unsigned long long)v->regs.cr0,
               (unsigned long long)v->regs.cr3, (unsigned long long)v->regs.cr4, (unsigned long long)v->regs.efer,
               v->regs.cs, (v->cs.attrib & VMT_SEG_ATTR_L) ? " (64-bit)" : "");
        printf("vcpu %u: known %s; reconstructed %s\n", i, known[0] ? known : "-", rec[0] ? rec : "-");
    }
    for (size_t i = 0; i < vmt_snapshot_fixup_count(s); i++) {
        const vmt_snapshot_fixup *f = vmt_snapshot_fixup_at(s, i);
        printf("fixup: vcpu %u %s = 0x%llx (%s)\n", f->vcpu, f->field, (unsigned long long)f->value, f->how);
    }
}

static void print_json(vmt_snapshot *s)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "kind", json_object_new_string(vmt_snapshot_kind_of(s) == VMT_SNAPSHOT_VMTS ? "vmts"
                                                                                                         : "qemu-core"));
    json_object_object_add(o, "metadata", json_tokener_parse(vmt_snapshot_metadata(s)));
    json_object *ram = json_object_new_array();
    size_t n;
    const vmt_ram_range *r = vmt_snapshot_ram_ranges(s, &n);
    for (size_t i = 0; i < n; i++) {
        json_object *b = json_object_new_object();
        json_object_object_add(b, "start", json_object_new_uint64(r[i].start));
        json_object_object_add(b, "size", json_object_new_uint64(r[i].size));
        json_object_array_add(ram, b);
    }
    json_object_object_add(o, "ram", ram);
    json_object *vcpus = json_object_new_array();
    for (uint32_t i = 0; i < vmt_snapshot_vcpu_count(s); i++) {
        const vmt_vcpu_state *v = vmt_snapshot_vcpu(s, i);
        json_object *c = json_object_new_object();
        char buf[128];
        json_object_object_add(c, "rip", json_object_new_uint64(v->regs.rip));
        json_object_object_add(c, "cr3", json_object_new_uint64(v->regs.cr3));
        json_object_object_add(c, "efer", json_object_new_uint64(v->regs.efer));
        vmt_vcpu_state_groups(v->known, buf, sizeof buf);
        json_object_object_add(c, "known", json_object_new_string(buf));
        vmt_vcpu_state_groups(v->reconstructed, buf, sizeof buf);
        json_object_object_add(c, "reconstructed", json_object_new_string(buf));
        json_object_array_add(vcpus, c);
    }
    json_object_object_add(o, "vcpus", vcpus);
    json_object *fx = json_object_new_array();
    for (size_t i = 0; i < vmt_snapshot_fixup_count(s); i++) {
        const vmt_snapshot_fixup *f = vmt_snapshot_fixup_at(s, i);
        json_object *x = json_object_new_object();
        json_object_object_add(x, "vcpu", json_object_new_int((int)f->vcpu));
        json_object_object_add(x, "field", json_object_new_string(f->field));
        json_object_object_add(x, "value", json_object_new_uint64(f->value));
        json_object_object_add(x, "how", json_object_new_string(f->how));
        json_object_array_add(fx, x);
    }
    json_object_object_add(o, "fixups", fx);
    puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
    json_object_put(o);
}

int cli_snapshot_main(int argc, char **argv)
{
    if (argc < 2)
        return usage("missing sub-command");
    if (strcmp(argv[1], "sidecar") == 0)
        return sidecar_cmd(argc, argv);
#ifdef VMT_CLI_HAVE_RESUME
    if (strcmp(argv[1], "save") == 0)
        return cli_snapshot_save_main(argc, argv); /* tools/savepoint_cmd.c */
#endif
    bool convert = strcmp(argv[1], "convert") == 0;
    if (!convert && strcmp(argv[1], "info") != 0)
        return usage("unknown sub-command");
    const char *in = NULL, *out = NULL, *state = NULL, *meta = NULL, *qregs = NULL;
    bool json = false, reconstruct = convert;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--state") == 0 && i + 1 < argc)
            state = argv[++i];
        else if (strcmp(argv[i], "--qemu-registers") == 0 && i + 1 < argc)
            qregs = argv[++i];
        else if (strcmp(argv[i], "--meta") == 0 && i + 1 < argc && convert)
            meta = argv[++i];
        else if (strcmp(argv[i], "--json") == 0 && !convert)
            json = true;
        else if (strcmp(argv[i], "--reconstruct") == 0 && !convert)
            reconstruct = true;
        else if (argv[i][0] == '-')
            return usage("unknown option or missing value");
        else if (!in)
            in = argv[i];
        else if (convert && !out)
            out = argv[i];
        else
            return usage("too many files");
    }
    if (!in || (convert && !out))
        return usage("missing file");
    vmt_snapshot *s = NULL;
    char why[512];
    if (vmt_snapshot_open(in, NULL, &s, why, sizeof why)) {
        fprintf(stderr, "vmtrap snapshot: %s\n", why);
        return CLI_EXIT_FAIL;
    }
    int rc = qregs ? apply_qemu_registers(s, qregs) : CLI_EXIT_OK;
    if (rc != CLI_EXIT_OK) {
        /* said on stderr already */
    } else if ((state && vmt_snapshot_apply_sidecar_file(s, state)) ||
        (reconstruct && vmt_snapshot_reconstruct(s, NULL, NULL))) {
        fprintf(stderr, "vmtrap snapshot: %s\n", vmt_snapshot_error(s));
        rc = CLI_EXIT_FAIL;
    } else if (convert) {
        vmt_snapshot_save_options so = { .metadata_json = meta };
        if (vmt_snapshot_save(s, &so, out)) {
            fprintf(stderr, "vmtrap snapshot: %s\n", vmt_snapshot_error(s));
            rc = CLI_EXIT_FAIL;
        }
    } else if (json) {
        print_json(s);
    } else {
        print_text(s);
    }
    vmt_snapshot_destroy(s);
    return rc;
}
