/*
 * fuzz/gdb_proto.c — libFuzzer target for the qemu driver's GDB remote
 * protocol parser (src/drivers/qemu/gdb_proto.c): everything a gdbstub could
 * send. The input is scanned as a byte stream (acks, naks, packets with
 * escapes and run lengths, garbage); every decoded packet goes through the
 * stop-reply, error and hex parsers; the whole input is also parsed as a
 * target description (expat) and laid out. Invariants checked: consumed
 * bytes never exceed the input, decoded lengths never exceed the buffer,
 * a parsed description's offsets are increasing and inside g_bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "drivers/qemu/gdb_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char out[GDB_MAX_PAYLOAD + 1];
    char why[200];
    size_t off = 0;
    while (off < size) {
        gdb_scan_kind kind;
        size_t used, olen;
        vmt_status st = gdb_scan(data + off, size - off, &kind, &used, out, sizeof out, &olen, why, sizeof why);
        if (used > size - off || olen > GDB_MAX_PAYLOAD)
            abort();
        if (st == VMT_OK && kind == GDB_SCAN_MORE)
            break;
        if (used == 0)
            abort(); /* no progress would loop forever */
        off += used;
        if (st == VMT_OK && kind == GDB_SCAN_PACKET) {
            gdb_stop stop;
            (void)gdb_parse_stop(out, olen, &stop, why, sizeof why);
            int code;
            (void)gdb_is_error(out, olen, &code);
            uint8_t bytes[64];
            size_t n = olen / 2 < sizeof bytes ? olen / 2 : sizeof bytes;
            (void)gdb_hex_to_bytes(out, 2 * n, bytes, n);
            uint64_t v;
            (void)gdb_parse_u64(out, olen < 16 ? olen : 16, &v);
            char framed[512];
            if (olen < 200 && gdb_frame(out, olen, framed, sizeof framed) == 0)
                abort(); /* 200 bytes always fit escaped in 512 */
        }
    }
    gdb_tdesc *td = malloc(sizeof *td);
    if (!td)
        return 0;
    gdb_tdesc_init(td);
    if (gdb_tdesc_parse(td, (const char *)data, size, why, sizeof why) == VMT_OK &&
        gdb_tdesc_layout(td, why, sizeof why) == VMT_OK) {
        uint32_t prev = 0;
        for (unsigned i = 0; i < td->nregs; i++) {
            if (td->regs[i].offset < prev || td->regs[i].offset + td->regs[i].bits / 8 > td->g_bytes)
                abort();
            prev = td->regs[i].offset;
        }
        (void)gdb_tdesc_find(td, "rip");
    }
    free(td);
    return 0;
}
