/*
 * os/linux/kallsyms.h — the kernel's own symbol table, found and decoded
 * from raw bytes (internal).
 *
 * Design: a pure parser over a byte window (a copy of guest RAM). The
 * kernel's kallsyms tables (scripts/kallsyms.c) are located by structure,
 * not by a profile: the token table always holds the digits '0'..'9' as
 * single-character tokens at their own indices, so "0\0" "1\0" ... "9\0"
 * is the signature; kallsyms_token_index (256 u16 offsets) follows the
 * token table and must point at every token; kallsyms_markers (u32 or u64,
 * one per 256 symbols, increasing from 0) ends before the token table;
 * kallsyms_num_syms sits 8 bytes before kallsyms_names, whose entries
 * (1- or 2-byte length, then token indices) must land exactly on every
 * marker; the addresses are kallsyms_offsets + kallsyms_relative_base
 * (before num_syms up to 6.3, after token_index from 6.4) or absolute
 * kallsyms_addresses. Every candidate is validated end to end before use.
 *
 * Limits: at most KSYM_MAX_SYMS symbols, names at most KSYM_NAME_MAX
 * bytes after expansion, token expansion not recursive (tokens are plain
 * text in the kernel's table). A hostile or corrupt table gives
 * VMT_E_FORMAT with what failed; nothing is left allocated.
 *
 * Threading: a parsed table is read-only; lookups may run concurrently.
 */
#ifndef VMT_OS_LINUX_KALLSYMS_H
#define VMT_OS_LINUX_KALLSYMS_H

#include <stddef.h>
#include <stdint.h>

#include <stddef.h>

#include "core/errbuf.h"

#define KSYM_MAX_SYMS (4u << 20)
#define KSYM_NAME_MAX 512
/* How far the tables may lie before the token table (names + offsets). */
#define KSYM_MAX_SPAN (48u << 20)

typedef struct ksym_table {
    uint32_t count;
    uint64_t *addr;        /* per symbol, kernel order */
    char *type;            /* per symbol: 'T', 't', 'D', ... */
    uint32_t *name_off;    /* per symbol: offset in names */
    char *names;           /* NUL-terminated names */
    size_t names_len;
    uint32_t *by_name;     /* symbol indices sorted by name (then index) */
    uint32_t *by_addr;     /* symbol indices sorted by address (then index) */
    uint64_t relative_base;/* 0 when the kernel stores absolute addresses */
    unsigned marker_size;  /* 4 or 8 */
    /* Offsets of the tables in the parsed window. */
    size_t off_token_table, off_token_index, off_markers, off_names, off_num_syms, off_addrs;
} ksym_table;

/* Offset of the next digit signature at or after `from` in buf, or
 * (size_t)-1 when none. */
size_t ksym_find_signature(const uint8_t *buf, size_t len, size_t from);

/* Parse the tables around the digit signature at buf[sig]. buf must start
 * at an 8-byte aligned guest address. On failure out is zeroed. */
vmt_status ksym_parse(const uint8_t *buf, size_t len, size_t sig, ksym_table *out, vmt_errbuf *e);

/* Only the token table and token index at buf[sig] (a cheap first check
 * before a large window is read). */
vmt_status ksym_check_tokens(const uint8_t *buf, size_t len, size_t sig, vmt_errbuf *e);

void ksym_free(ksym_table *t);

static inline const char *ksym_name(const ksym_table *t, uint32_t i)
{
    return t->names + t->name_off[i];
}

/* First symbol (kernel order) called name: its index, or -1. */
int64_t ksym_by_name(const ksym_table *t, const char *name);
/* Position in by_name of the first symbol called name, or -1; the others
 * of that name follow it. */
int64_t ksym_name_pos(const ksym_table *t, const char *name);
/* The symbol at or below addr (the nearest one, ties: lowest index), -1
 * when addr is below every symbol. */
int64_t ksym_by_addr(const ksym_table *t, uint64_t addr);

/* Invariant checker: sorted indices are permutations and sorted, every
 * name offset inside names. VMT_OK or VMT_E_INTERNAL with why. */
vmt_status ksym_check(const ksym_table *t, char *why, size_t why_len);

#endif
