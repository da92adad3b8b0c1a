/*
 * fuzz/fuzz_ucall.c — the ucall decoder against hostile guest memory.
 *
 * Input: 12 header bytes (port, size, direction, the record's pa, RAM size
 * in pages) then guest RAM. The decoder must refuse or decode without
 * reading outside the reader's RAM; a decoded record must satisfy what
 * vmt_ucall promises (known command, nargs in range, args past nargs zero,
 * terminated strings) and format into any buffer size without overflow.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vmtrap/event.h"
#include "vmtrap/machine.h"
#include "vmtrap/ucall.h"

typedef struct ram {
    const uint8_t *bytes;
    size_t len;
} ram;

static vmt_status ram_read(void *ctx, vmt_pa pa, void *buf, size_t len)
{
    const ram *r = ctx;
    if (pa > r->len || len > r->len - pa)
        return VMT_E_RANGE;
    memcpy(buf, r->bytes + pa, len);
    return VMT_OK;
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 12)
        return 0;
    vmt_event ev;
    memset(&ev, 0, sizeof ev);
    ev.kind = (data[0] & 0x80) ? VMT_EVENT_MEM_ACCESS : VMT_EVENT_IO;
    ev.u.io.port = (data[0] & 0x40) ? (uint16_t)(0x5e0 ^ data[1]) : VMT_PORT_UCALL;
    ev.u.io.size = (data[0] & 0x20) ? data[2] : 4;
    ev.u.io.is_write = !(data[0] & 0x10);
    ev.u.io.value = le32(data + 4);
    /* RAM as the reader sees it vs the size the decoder is told: a lie in
     * either direction must stay safe. */
    ram r = { data + 12, size - 12 };
    uint64_t ram_size = (data[0] & 0x08) ? (uint64_t)le32(data + 8) : r.len;
    vmt_phys_reader rd = { ram_read, &r };
    vmt_ucall uc;
    char why[160];
    vmt_status st = vmt_ucall_decode(&rd, ram_size, &ev, &uc, why, sizeof why);
    if (memchr(why, 0, sizeof why) == NULL)
        abort();
    if (st != VMT_OK) {
        static const vmt_ucall zero;
        if (memcmp(&uc, &zero, sizeof uc) != 0)
            abort(); /* out must be zeroed on failure */
        if (st != VMT_E_INVAL && st != VMT_E_RANGE && st != VMT_E_FORMAT)
            abort();
        return 0;
    }
    if (!vmt_ucall_is_ucall(&ev) || uc.pa != ev.u.io.value || uc.nargs > VMT_UCALL_MAX_ARGS)
        abort();
    if (strcmp(vmt_ucall_cmd_name((int)uc.cmd), "?") == 0)
        abort();
    for (unsigned i = uc.nargs; i < VMT_UCALL_MAX_ARGS; i++)
        if (uc.args[i] != 0)
            abort();
    if (!memchr(uc.name, 0, sizeof uc.name) || !memchr(uc.text, 0, sizeof uc.text))
        abort();
    char line[600];
    for (size_t n = 0; n <= sizeof line; n += 37) {
        size_t len = n < sizeof line ? n : sizeof line;
        memset(line, 0x55, sizeof line);
        vmt_ucall_format(&uc, line, len);
        if (len && !memchr(line, 0, len))
            abort();
        for (size_t i = len; i < sizeof line; i++)
            if ((unsigned char)line[i] != 0x55)
                abort();
    }
    return 0;
}
