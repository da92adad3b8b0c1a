/*
 * drivers/qemu/gdb_proto.c — GDB remote protocol framing and reply parsing
 * (see gdb_proto.h). Pure functions over untrusted bytes; every loop is
 * bounded by the input length.
 */
#include "drivers/qemu/gdb_proto.h"

#include <expat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/hex.h"
#include "core/errbuf.h"


/* Decode the raw bytes between '$' and '#': escapes and run lengths. */
static vmt_status decode_payload(const uint8_t *raw, size_t rlen, char *out, size_t cap, size_t *out_len, char *why,
                                 size_t why_len)
{
    size_t limit = cap - 1 < GDB_MAX_PAYLOAD ? cap - 1 : GDB_MAX_PAYLOAD;
    size_t n = 0;
    for (size_t i = 0; i < rlen; i++) {
        uint8_t c = raw[i];
        if (c == '}') {
            if (i + 1 >= rlen) {
                vmt_why(why, why_len, "gdb: packet ends inside an escape ('}' as last byte)");
                return VMT_E_FORMAT;
            }
            c = raw[++i] ^ 0x20;
        } else if (c == '*') {
            if (n == 0 || i + 1 >= rlen) {
                vmt_why(why, why_len, "gdb: run-length marker '*' without a preceding byte or a count");
                return VMT_E_FORMAT;
            }
            int count = (int)raw[++i] - 29;
            if (count < 3 || count > 97) {
                vmt_why(why, why_len, "gdb: bad run-length count byte 0x%02x", raw[i]);
                return VMT_E_FORMAT;
            }
            if (n + (size_t)count > limit) {
                vmt_why(why, why_len, "gdb: decoded packet longer than %zu bytes", limit);
                return VMT_E_FORMAT;
            }
            memset(out + n, out[n - 1], (size_t)count);
            n += (size_t)count;
            continue;
        }
        if (n + 1 > limit) {
            vmt_why(why, why_len, "gdb: decoded packet longer than %zu bytes", limit);
            return VMT_E_FORMAT;
        }
        out[n++] = (char)c;
    }
    out[n] = '\0';
    *out_len = n;
    return VMT_OK;
}

vmt_status gdb_scan(const uint8_t *in, size_t len, gdb_scan_kind *kind, size_t *consumed, char *out, size_t cap,
                    size_t *out_len, char *why, size_t why_len)
{
    *kind = GDB_SCAN_MORE;
    *consumed = 0;
    *out_len = 0;
    if (cap < 1) {
        vmt_why(why, why_len, "gdb: no room for a packet");
        return VMT_E_INVAL;
    }
    out[0] = '\0';
    if (len == 0)
        return VMT_OK;
    if (in[0] == '+') {
        *kind = GDB_SCAN_ACK;
        *consumed = 1;
        return VMT_OK;
    }
    if (in[0] == '-') {
        *kind = GDB_SCAN_NAK;
        *consumed = 1;
        return VMT_OK;
    }
    if (in[0] != '$' && in[0] != '%') {
        *consumed = 1;
        vmt_why(why, why_len, "gdb: unexpected byte 0x%02x where a packet, '+' or '-' must start", in[0]);
        return VMT_E_FORMAT;
    }
    size_t scan_end = len < (size_t)GDB_MAX_RAW + 1 ? len : (size_t)GDB_MAX_RAW + 1;
    const uint8_t *hash = memchr(in + 1, '#', scan_end - 1);
    if (!hash) {
        if (len > GDB_MAX_RAW) {
            *consumed = len;
            vmt_why(why, why_len, "gdb: no end of packet ('#') within %u bytes", GDB_MAX_RAW);
            return VMT_E_FORMAT;
        }
        return VMT_OK; /* MORE */
    }
    size_t hpos = (size_t)(hash - in);
    if (len < hpos + 3)
        return VMT_OK; /* MORE: the checksum digits are not here yet */
    *consumed = hpos + 3;
    int h1 = vmt_hex_digit(in[hpos + 1]), h2 = vmt_hex_digit(in[hpos + 2]);
    if (h1 < 0 || h2 < 0) {
        vmt_why(why, why_len, "gdb: checksum '%c%c' is not hex", in[hpos + 1] >= 32 && in[hpos + 1] < 127 ? in[hpos + 1] : '?',
                in[hpos + 2] >= 32 && in[hpos + 2] < 127 ? in[hpos + 2] : '?');
        return VMT_E_FORMAT;
    }
    unsigned sum = 0;
    for (size_t i = 1; i < hpos; i++)
        sum += in[i];
    if ((sum & 0xff) != (unsigned)(h1 * 16 + h2)) {
        vmt_why(why, why_len, "gdb: bad checksum (packet says %02x, bytes sum to %02x)", h1 * 16 + h2, sum & 0xff);
        return VMT_E_FORMAT;
    }
    vmt_status st = decode_payload(in + 1, hpos - 1, out, cap, out_len, why, why_len);
    if (st)
        return st;
    *kind = in[0] == '$' ? GDB_SCAN_PACKET : GDB_SCAN_NOTIFY;
    return VMT_OK;
}

size_t gdb_frame(const char *payload, size_t len, char *out, size_t cap)
{
    size_t n = 0;
    unsigned sum = 0;
    if (cap < 5)
        return 0;
    out[n++] = '$';
    for (size_t i = 0; i < len; i++) {
        uint8_t c = (uint8_t)payload[i];
        if (c == '$' || c == '#' || c == '}' || c == '*') {
            if (n + 2 + 4 > cap)
                return 0;
            out[n++] = '}';
            sum += '}';
            c ^= 0x20;
        }
        if (n + 1 + 4 > cap)
            return 0;
        out[n++] = (char)c;
        sum += c;
    }
    snprintf(out + n, cap - n, "#%02x", sum & 0xff);
    return n + 3;
}

vmt_status gdb_hex_to_bytes(const char *hex, size_t hexlen, uint8_t *out, size_t n)
{
    if (hexlen != 2 * n)
        return VMT_E_FORMAT;
    for (size_t i = 0; i < n; i++) {
        int a = vmt_hex_digit((unsigned char)hex[2 * i]), b = vmt_hex_digit((unsigned char)hex[2 * i + 1]);
        if (a < 0 || b < 0)
            return VMT_E_FORMAT;
        out[i] = (uint8_t)(a * 16 + b);
    }
    return VMT_OK;
}

void gdb_bytes_to_hex(const uint8_t *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

vmt_status gdb_parse_u64(const char *s, size_t len, uint64_t *out)
{
    if (len == 0 || len > 16)
        return VMT_E_FORMAT;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        int d = vmt_hex_digit((unsigned char)s[i]);
        if (d < 0)
            return VMT_E_FORMAT;
        v = v << 4 | (uint64_t)d;
    }
    *out = v;
    return VMT_OK;
}

int gdb_is_error(const char *payload, size_t len, int *code)
{
    if (len >= 2 && payload[0] == 'E' && payload[1] == '.') {
        *code = -1;
        return 1;
    }
    if (len == 3 && payload[0] == 'E' && vmt_hex_digit((unsigned char)payload[1]) >= 0 &&
        vmt_hex_digit((unsigned char)payload[2]) >= 0) {
        *code = vmt_hex_digit((unsigned char)payload[1]) * 16 + vmt_hex_digit((unsigned char)payload[2]);
        return 1;
    }
    return 0;
}

static int key_is(const char *k, size_t klen, const char *want)
{
    return klen == strlen(want) && memcmp(k, want, klen) == 0;
}

vmt_status gdb_parse_stop(const char *p, size_t len, gdb_stop *st, char *why, size_t why_len)
{
    memset(st, 0, sizeof *st);
    if (len == 0) {
        vmt_why(why, why_len, "gdb: empty reply where a stop reply was expected");
        return VMT_E_FORMAT;
    }
    st->type = p[0];
    switch (p[0]) {
    case 'O':
        if ((len - 1) % 2) {
            vmt_why(why, why_len, "gdb: console output 'O' packet with odd hex length");
            return VMT_E_FORMAT;
        }
        for (size_t i = 1; i < len; i++)
            if (vmt_hex_digit((unsigned char)p[i]) < 0) {
                vmt_why(why, why_len, "gdb: console output 'O' packet is not hex");
                return VMT_E_FORMAT;
            }
        return VMT_OK;
    case 'S':
    case 'T':
    case 'W':
    case 'X':
        break;
    default:
        vmt_why(why, why_len, "gdb: '%c' (0x%02x) does not start a stop reply", p[0] >= 32 && p[0] < 127 ? p[0] : '?',
                (unsigned char)p[0]);
        return VMT_E_FORMAT;
    }
    if (len < 3 || vmt_hex_digit((unsigned char)p[1]) < 0 || vmt_hex_digit((unsigned char)p[2]) < 0) {
        vmt_why(why, why_len, "gdb: stop reply '%c' without a two-digit signal or status", p[0]);
        return VMT_E_FORMAT;
    }
    st->signal = (uint8_t)(vmt_hex_digit((unsigned char)p[1]) * 16 + vmt_hex_digit((unsigned char)p[2]));
    if (p[0] != 'T') {
        /* S/W/X may carry ";process:pid" (multiprocess); nothing else is used. */
        if (len > 3 && p[3] != ';') {
            vmt_why(why, why_len, "gdb: junk after the signal of a '%c' stop reply", p[0]);
            return VMT_E_FORMAT;
        }
        return VMT_OK;
    }
    size_t i = 3;
    while (i < len) {
        const char *semi = memchr(p + i, ';', len - i);
        size_t end = semi ? (size_t)(semi - p) : len;
        const char *colon = memchr(p + i, ':', end - i);
        if (!colon) {
            vmt_why(why, why_len, "gdb: stop reply field without ':' at offset %zu", i);
            return VMT_E_FORMAT;
        }
        const char *k = p + i;
        size_t klen = (size_t)(colon - k);
        const char *v = colon + 1;
        size_t vlen = end - (size_t)(v - p);
        if (key_is(k, klen, "watch") || key_is(k, klen, "rwatch") || key_is(k, klen, "awatch")) {
            if (gdb_parse_u64(v, vlen, &st->watch_addr)) {
                vmt_why(why, why_len, "gdb: stop reply watch address is not 1-16 hex digits");
                return VMT_E_FORMAT;
            }
            st->has_watch = 1;
            st->watch_kind = k[0] == 'w' ? 'w' : k[0];
        } else if (key_is(k, klen, "swbreak")) {
            st->swbreak = 1;
        } else if (key_is(k, klen, "hwbreak")) {
            st->hwbreak = 1;
        } else if (key_is(k, klen, "thread")) {
            st->has_thread = 1;
        } else if (klen == 0) {
            vmt_why(why, why_len, "gdb: stop reply field with an empty name");
            return VMT_E_FORMAT;
        }
        i = end + 1;
    }
    return VMT_OK;
}

/* ---- target description ---- */

void gdb_tdesc_init(gdb_tdesc *td)
{
    memset(td, 0, sizeof *td);
}

typedef struct tdesc_parse {
    gdb_tdesc *td;
    XML_Parser parser;
    int in_arch;
    size_t arch_len;
    char why[192];
    vmt_status st;
} tdesc_parse;

static void tdesc_fail(tdesc_parse *tp, const char *msg, const char *detail)
{
    if (tp->st)
        return;
    tp->st = VMT_E_FORMAT;
    snprintf(tp->why, sizeof tp->why, "gdb: target description: %s%s%.40s", msg, detail ? ": " : "",
             detail ? detail : "");
    XML_StopParser(tp->parser, XML_FALSE);
}

static const char *attr(const XML_Char **atts, const char *name)
{
    for (size_t i = 0; atts[i] && atts[i + 1]; i += 2)
        if (strcmp(atts[i], name) == 0)
            return atts[i + 1];
    return NULL;
}

static int parse_dec(const char *s, uint32_t max, uint32_t *out)
{
    if (!s || !*s)
        return -1;
    uint64_t v = 0;
    for (const char *c = s; *c; c++) {
        if (*c < '0' || *c > '9')
            return -1;
        v = v * 10 + (uint64_t)(*c - '0');
        if (v > max)
            return -1;
    }
    *out = (uint32_t)v;
    return 0;
}

static void XMLCALL tdesc_start(void *ud, const XML_Char *name, const XML_Char **atts)
{
    tdesc_parse *tp = ud;
    gdb_tdesc *td = tp->td;
    if (tp->st)
        return;
    if (strcmp(name, "architecture") == 0) {
        tp->in_arch = 1;
        tp->arch_len = 0;
        td->arch[0] = '\0';
    } else if (strcmp(name, "xi:include") == 0) {
        const char *href = attr(atts, "href");
        if (!href || !*href || strlen(href) >= sizeof td->includes[0] || strchr(href, '/') || strstr(href, "..") ||
            strchr(href, ':') || strchr(href, ',')) {
            tdesc_fail(tp, "include href is not a plain file name", href);
            return;
        }
        if (td->nincludes >= GDB_MAX_INCLUDES) {
            tdesc_fail(tp, "too many included files", href);
            return;
        }
        snprintf(td->includes[td->nincludes++], sizeof td->includes[0], "%s", href);
    } else if (strcmp(name, "reg") == 0) {
        const char *rn = attr(atts, "name");
        uint32_t bits, regnum = td->next_regnum;
        if (!rn || !*rn || strlen(rn) >= GDB_REG_NAME_MAX) {
            tdesc_fail(tp, "reg without a usable name", rn);
            return;
        }
        if (parse_dec(attr(atts, "bitsize"), 512, &bits) || bits == 0 || bits % 8) {
            tdesc_fail(tp, "reg with a bad bitsize", rn);
            return;
        }
        const char *rs = attr(atts, "regnum");
        if (rs && parse_dec(rs, 4095, &regnum)) {
            tdesc_fail(tp, "reg with a bad regnum", rn);
            return;
        }
        if (td->nregs >= GDB_MAX_REGS) {
            tdesc_fail(tp, "too many registers", rn);
            return;
        }
        gdb_reg_desc *r = &td->regs[td->nregs++];
        snprintf(r->name, sizeof r->name, "%s", rn);
        r->bits = bits;
        r->regnum = regnum;
        td->next_regnum = regnum + 1;
    }
}

static void XMLCALL tdesc_end(void *ud, const XML_Char *name)
{
    tdesc_parse *tp = ud;
    if (strcmp(name, "architecture") == 0)
        tp->in_arch = 0;
}

static void XMLCALL tdesc_text(void *ud, const XML_Char *s, int len)
{
    tdesc_parse *tp = ud;
    if (!tp->in_arch || len <= 0)
        return;
    gdb_tdesc *td = tp->td;
    size_t room = sizeof td->arch - 1 - tp->arch_len;
    size_t n = (size_t)len < room ? (size_t)len : room;
    memcpy(td->arch + tp->arch_len, s, n);
    tp->arch_len += n;
    td->arch[tp->arch_len] = '\0';
}

vmt_status gdb_tdesc_parse(gdb_tdesc *td, const char *xml, size_t len, char *why, size_t why_len)
{
    if (len > (size_t)GDB_MAX_PAYLOAD * 4) {
        vmt_why(why, why_len, "gdb: target description larger than %u bytes", GDB_MAX_PAYLOAD * 4);
        return VMT_E_FORMAT;
    }
    tdesc_parse tp = { .td = td };
    tp.parser = XML_ParserCreate(NULL);
    if (!tp.parser) {
        vmt_why(why, why_len, "gdb: cannot create an XML parser");
        return VMT_E_NOMEM;
    }
    XML_SetUserData(tp.parser, &tp);
    XML_SetElementHandler(tp.parser, tdesc_start, tdesc_end);
    XML_SetCharacterDataHandler(tp.parser, tdesc_text);
    /* The DOCTYPE names gdb-target.dtd: never fetched (no external entity handler). */
    enum XML_Status xs = XML_Parse(tp.parser, xml, (int)len, XML_TRUE);
    if (xs != XML_STATUS_OK && !tp.st) {
        tp.st = VMT_E_FORMAT;
        snprintf(tp.why, sizeof tp.why, "gdb: target description is not well-formed XML: %s (line %lu)",
                 XML_ErrorString(XML_GetErrorCode(tp.parser)), (unsigned long)XML_GetCurrentLineNumber(tp.parser));
    }
    XML_ParserFree(tp.parser);
    if (tp.st)
        vmt_why(why, why_len, "%s", tp.why);
    return tp.st;
}

static int reg_cmp(const void *a, const void *b)
{
    const gdb_reg_desc *x = a, *y = b;
    return x->regnum < y->regnum ? -1 : x->regnum > y->regnum;
}

vmt_status gdb_tdesc_layout(gdb_tdesc *td, char *why, size_t why_len)
{
    qsort(td->regs, td->nregs, sizeof td->regs[0], reg_cmp);
    uint32_t off = 0;
    for (unsigned i = 0; i < td->nregs; i++) {
        if (td->regs[i].regnum != i) {
            vmt_why(why, why_len, "gdb: target description register numbers are not 0..%u without gaps "
                    "(register '%s' has %u)", td->nregs - 1, td->regs[i].name, td->regs[i].regnum);
            return VMT_E_FORMAT;
        }
        td->regs[i].offset = off;
        off += td->regs[i].bits / 8;
    }
    td->g_bytes = off;
    return VMT_OK;
}

const gdb_reg_desc *gdb_tdesc_find(const gdb_tdesc *td, const char *name)
{
    for (unsigned i = 0; i < td->nregs; i++)
        if (strcmp(td->regs[i].name, name) == 0)
            return &td->regs[i];
    return NULL;
}
