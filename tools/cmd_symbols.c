/*
 * tools/cmd_symbols.c — `vmtrap symbols FILE PATTERN`: kernel symbols
 * matching a shell glob (fnmatch; a pattern with no wildcard matches
 * exactly), with addresses, nm types and, for functions BTF knows, their
 * prototypes. All from the guest's own memory.
 */
#include <fnmatch.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "cmd_os.h"

int cli_cmd_symbols(int argc, char **argv)
{
    cli_os_args a;
    vmt_driver *d;
    vmt_os *os;
    int rc = cli_os_begin(argc, argv, 1, &a, &d, &os);
    if (rc)
        return rc;
    cli_os_print_kernel(os, a.json);
    unsigned matched = 0;
    for (uint32_t i = 0; i < vmt_os_symbol_count(os); i++) {
        vmt_os_symbol s;
        if (vmt_os_symbol_at(os, i, &s) != VMT_OK || fnmatch(a.arg, s.name, 0) != 0)
            continue;
        matched++;
        char name[4 * 128 + 1], proto[512] = "", shown_proto[sizeof proto * 4];
        cli_escape_guest_text(s.name, name, sizeof name);
        if ((s.type == 'T' || s.type == 't' || s.type == 'W') && vmt_os_prototype(os, s.name, proto, sizeof proto))
            proto[0] = 0;
        cli_escape_guest_text(proto, shown_proto, sizeof shown_proto);
        if (a.json) {
            json_object *o = json_object_new_object();
            char addr[24], type[2] = { s.type, 0 };
            snprintf(addr, sizeof addr, "0x%" PRIx64, s.addr);
            json_object_object_add(o, "event", json_object_new_string("symbol"));
            json_object_object_add(o, "name", json_object_new_string(name));
            json_object_object_add(o, "address", json_object_new_string(addr));
            json_object_object_add(o, "type", json_object_new_string((s.type >= 0x20 && s.type < 0x7f) ? type : "?"));
            if (proto[0])
                json_object_object_add(o, "prototype", json_object_new_string(shown_proto));
            puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
            json_object_put(o);
        } else {
            printf("%016" PRIx64 " %c %s%s%s\n", s.addr, (s.type >= 0x20 && s.type < 0x7f) ? s.type : '?', name,
                   proto[0] ? "  " : "", shown_proto);
        }
    }
    cli_os_end(&a, d, os);
    if (!matched) {
        fprintf(stderr, "vmtrap symbols: no kernel symbol matches '%s'\n", a.arg);
        return CLI_EXIT_FAIL;
    }
    return CLI_EXIT_OK;
}
