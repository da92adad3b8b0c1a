/*
 * drivers/qemu/gdb_proto.h — the GDB remote serial protocol, as pure
 * functions over bytes (internal to the qemu driver).
 *
 * Design: no I/O here. gdb_scan() looks at the front of a receive buffer and
 * says what is there (an ack, a nak, a whole packet, or "need more bytes");
 * the client (gdb_client.c) owns the socket, the timeouts and the buffer.
 * Everything a stub sends is untrusted input: framing ($...#cc), checksums,
 * escapes (}x), run-length encoding (x*n), hex fields, stop replies
 * (T/S/W/X/O), and the XML target description (parsed with expat) are
 * checked and a malformed one is VMT_E_FORMAT with a message naming what was
 * wrong, never a crash or an unbounded loop (fuzz/gdb_proto.c runs all of
 * them). Limits: a decoded payload is at most GDB_MAX_PAYLOAD bytes; a raw
 * packet (before decoding) at most GDB_MAX_RAW bytes; a target description at
 * most GDB_MAX_REGS registers and GDB_MAX_INCLUDES included files.
 *
 * Threading: pure functions; no state.
 */
#ifndef VMT_DRIVERS_QEMU_GDB_PROTO_H
#define VMT_DRIVERS_QEMU_GDB_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "vmtrap/status.h"

#define GDB_MAX_PAYLOAD (1u << 17) /* decoded bytes of one packet */
#define GDB_MAX_RAW (1u << 18)     /* raw bytes between '$' and '#' */
#define GDB_MAX_REGS 160
#define GDB_MAX_INCLUDES 8
#define GDB_REG_NAME_MAX 24

typedef enum gdb_scan_kind {
    GDB_SCAN_MORE = 0, /* the buffer holds only a prefix of something: read more */
    GDB_SCAN_ACK,      /* '+' */
    GDB_SCAN_NAK,      /* '-' */
    GDB_SCAN_PACKET,   /* $payload#cc with a good checksum, decoded into out */
    GDB_SCAN_NOTIFY,   /* %payload#cc (a non-stop notification; decoded, unused by QEMU all-stop) */
} gdb_scan_kind;

/* Scan the front of in[0..len). On VMT_OK: *kind says what is there and
 * *consumed how many bytes it took (0 for MORE); for PACKET/NOTIFY the
 * decoded payload is in out (NUL-terminated; cap must be >= 1) and its length
 * in *out_len. VMT_E_FORMAT (with why) for a byte that starts nothing, a bad
 * checksum, a bad escape or run length, or a payload longer than cap - 1 or
 * GDB_MAX_PAYLOAD; *consumed then says how much to drop. */
vmt_status gdb_scan(const uint8_t *in, size_t len, gdb_scan_kind *kind, size_t *consumed, char *out, size_t cap,
                    size_t *out_len, char *why, size_t why_len);

/* Frame payload as "$<escaped payload>#cc" into out (NUL-terminated).
 * Returns the framed length, or 0 when it does not fit in cap. */
size_t gdb_frame(const char *payload, size_t len, char *out, size_t cap);

/* Strict hex: exactly 2*n digits into n bytes. VMT_E_FORMAT otherwise. */
vmt_status gdb_hex_to_bytes(const char *hex, size_t hexlen, uint8_t *out, size_t n);
/* Bytes to lowercase hex (out must hold 2*n + 1). */
void gdb_bytes_to_hex(const uint8_t *in, size_t n, char *out);
/* 1..16 hex digits to a number; VMT_E_FORMAT otherwise. */
vmt_status gdb_parse_u64(const char *s, size_t len, uint64_t *out);

/* An error reply ("Enn" or "E.text")? Returns 1 and the code (-1 for E.text). */
int gdb_is_error(const char *payload, size_t len, int *code);

typedef struct gdb_stop {
    char type;            /* 'T' or 'S' (stopped), 'W' (exited), 'X' (killed), 'O' (console output) */
    uint8_t signal;       /* T/S/X: the signal; W: the exit status */
    uint8_t has_watch;    /* T with watch/rwatch/awatch */
    char watch_kind;      /* 'w', 'r' or 'a' */
    uint64_t watch_addr;
    uint8_t swbreak, hwbreak;
    uint8_t has_thread;
} gdb_stop;

/* Parse a stop reply (or 'O' console output). VMT_E_FORMAT for anything
 * else or a malformed field. Unknown T keys are ignored (as the protocol
 * says); a key without ':' is not. */
vmt_status gdb_parse_stop(const char *p, size_t len, gdb_stop *st, char *why, size_t why_len);

typedef struct gdb_reg_desc {
    char name[GDB_REG_NAME_MAX];
    uint32_t bits;        /* bitsize */
    uint32_t regnum;
    uint32_t offset;      /* byte offset in the 'g' reply (after gdb_tdesc_layout) */
} gdb_reg_desc;

typedef struct gdb_tdesc {
    char arch[32];
    gdb_reg_desc regs[GDB_MAX_REGS];
    unsigned nregs;
    uint32_t next_regnum;            /* regnum of the next reg without an explicit one */
    char includes[GDB_MAX_INCLUDES][64];
    unsigned nincludes;
    uint32_t g_bytes;                /* size of the 'g' reply in bytes (after layout) */
} gdb_tdesc;

void gdb_tdesc_init(gdb_tdesc *td);
/* Parse one XML document (target.xml or an included feature file) and add
 * its registers and includes to td. VMT_E_FORMAT for bad XML, a reg without
 * name or bitsize, a bitsize that is not a multiple of 8 or above 512, too
 * many registers/includes, or an include name that is not a plain file name. */
vmt_status gdb_tdesc_parse(gdb_tdesc *td, const char *xml, size_t len, char *why, size_t why_len);
/* Sort by regnum, compute offsets; VMT_E_FORMAT for duplicate regnums or a
 * gap (the 'g' packet has no holes in QEMU's layout). */
vmt_status gdb_tdesc_layout(gdb_tdesc *td, char *why, size_t why_len);
/* The register named `name`, or NULL. */
const gdb_reg_desc *gdb_tdesc_find(const gdb_tdesc *td, const char *name);

#endif
