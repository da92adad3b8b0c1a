/*
 * fuzz/snapshot_qemu_registers.c — QEMU `info registers -a` text to a
 * sidecar: any text either gives an error with a message and no output,
 * or JSON text that parses as one object.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "vmtrap/snapshot.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > (1u << 16))
        return 0;
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = 0;
    char *json = NULL, why[256];
    vmt_status st = vmt_snapshot_sidecar_from_qemu_registers(text, &json, why, sizeof why);
    if (st == VMT_OK) {
        json_object *o = json_tokener_parse(json);
        if (!o || !json_object_is_type(o, json_type_object))
            abort();
        json_object_put(o);
    } else if (json || !why[0]) {
        abort();
    }
    free(json);
    free(text);
    return 0;
}
