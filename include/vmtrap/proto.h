/*
 * vmtrap/proto.h — function prototypes from the guest's own type
 * information, and decoding a call's arguments and return value with them.
 *
 * Design: a vmt_proto is a plain description built once per hooked
 * function — from the kernel's BTF (vmt_os_proto, vmtrap/os.h) or from an
 * ELF guest's DWARF (vmt_dwarf_proto below) — so the per-hit decoder is the
 * same for both and does no type lookups: each parameter has a kind
 * (integer, enum with its enumerator names, string, buffer with the index
 * of its length parameter, pointer to a struct shown by a few chosen
 * fields, plain pointer). Which fields a struct shows comes from a small
 * table (struct filename -> name; struct open_how -> flags, mode, resolve;
 * struct kernel_clone_args -> flags, exit_signal; linux_binprm ->
 * filename); a `char *`/`const char __user *` is a string, a char/void
 * pointer followed by a length-like integer (count, len, size, nbytes) is a
 * buffer.
 *
 * Bounds: a string is read up to VMT_VALUE_TEXT_MAX-1 bytes, a buffer
 * preview up to VMT_VALUE_PREVIEW bytes; a guest length never sizes an
 * allocation. A read that fails is reported as what it is: read_status
 * VMT_E_NOT_PRESENT with fault_va (paged out), never a guess.
 *
 * Arguments: System V AMD64, the first six in registers; a seventh and
 * later are not decoded (nparams is capped at VMT_PROTO_MAX_PARAMS and
 * proto->note says so).
 *
 * Threading: a vmt_proto is read-only after it is built; decoding writes
 * only the caller's vmt_value array.
 */
#ifndef VMTRAP_PROTO_H
#define VMTRAP_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "vmtrap/regs.h"
#include "vmtrap/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define VMT_PROTO_MAX_PARAMS 6
#define VMT_PROTO_MAX_FIELDS 4
#define VMT_PROTO_MAX_ENUMS 48
#define VMT_PROTO_NAME_LEN 48
#define VMT_VALUE_TEXT_MAX 128
#define VMT_VALUE_PREVIEW 32

typedef enum vmt_param_kind {
    VMT_PARAM_OTHER = 0, /* not decodable here (struct by value, float): raw register */
    VMT_PARAM_INT,       /* signed integer of `size` bytes */
    VMT_PARAM_UINT,      /* unsigned integer (also bool) */
    VMT_PARAM_ENUM,      /* integer with enumerator names */
    VMT_PARAM_STRING,    /* pointer to a NUL-terminated string */
    VMT_PARAM_BUFFER,    /* pointer to len_param bytes (a preview is read) */
    VMT_PARAM_STRUCT,    /* pointer to a struct shown by chosen fields */
    VMT_PARAM_POINTER,   /* any other pointer */
    VMT_PARAM_CHARS,     /* (struct field only) inline char array of `size` bytes */
} vmt_param_kind;

typedef struct vmt_field_desc {
    char name[VMT_PROTO_NAME_LEN];
    vmt_param_kind kind;  /* INT, UINT, STRING, CHARS or POINTER */
    uint32_t offset;      /* bytes into the struct */
    uint32_t size;        /* bytes (INT/UINT 1..8; CHARS the array) */
} vmt_field_desc;

typedef struct vmt_enum_name {
    int64_t value;
    char name[VMT_PROTO_NAME_LEN];
} vmt_enum_name;

typedef struct vmt_param_desc {
    char name[VMT_PROTO_NAME_LEN];   /* "arg<N>" when the type info has none */
    char type[VMT_PROTO_NAME_LEN];   /* "const char *", "struct open_how *", "int" */
    vmt_param_kind kind;
    uint32_t size;                   /* of the value itself (register part) */
    int len_param;                   /* BUFFER: index of the length parameter */
    char struct_name[VMT_PROTO_NAME_LEN]; /* STRUCT */
    unsigned nfields;
    vmt_field_desc fields[VMT_PROTO_MAX_FIELDS];
    unsigned nenums;                 /* ENUM: the first VMT_PROTO_MAX_ENUMS names */
    vmt_enum_name enums[VMT_PROTO_MAX_ENUMS];
} vmt_param_desc;

typedef struct vmt_proto {
    char name[VMT_PROTO_NAME_LEN * 2];
    char text[320];              /* the declaration, for people */
    char source[8];              /* "btf" or "dwarf" */
    unsigned nparams;
    vmt_param_desc params[VMT_PROTO_MAX_PARAMS];
    int has_ret;                 /* 0 for void */
    vmt_param_desc ret;          /* name "ret" unless the caller renames it */
    char note[128];              /* something not decoded, "" if none */
} vmt_proto;

/* Reads guest-virtual memory for the decoder; *done = bytes read before a
 * failure (VMT_E_NOT_PRESENT for a paged-out page). */
typedef struct vmt_vreader {
    vmt_status (*read)(void *ctx, uint64_t va, void *buf, size_t len, size_t *done);
    void *ctx;
} vmt_vreader;

typedef struct vmt_field_value {
    const char *name;            /* into the proto */
    vmt_param_kind kind;
    uint64_t raw;
    vmt_status read_status;
    uint64_t fault_va;
    char text[64];               /* STRING/CHARS: bytes read (NUL-terminated, may hold any byte) */
    size_t nbytes;
    int truncated;
} vmt_field_value;

typedef struct vmt_value {
    const char *name;            /* into the proto */
    vmt_param_kind kind;
    uint64_t raw;                /* register value (sign-extended for INT) */
    const char *enum_name;       /* ENUM: the name of raw, NULL if none */
    vmt_status read_status;      /* STRING/BUFFER/STRUCT: VMT_OK when read */
    uint64_t fault_va;           /* first unreadable address on NOT_PRESENT */
    char text[VMT_VALUE_TEXT_MAX]; /* STRING/BUFFER bytes read (NUL-terminated) */
    size_t nbytes;
    int truncated;               /* longer than shown */
    unsigned nfields;            /* STRUCT */
    vmt_field_value fields[VMT_PROTO_MAX_FIELDS];
} vmt_value;

/* Decode the arguments at function entry (regs at the first instruction).
 * Fills out[0..p->nparams-1]; reads only through rd. */
void vmt_proto_decode_args(const vmt_proto *p, const vmt_regs *regs, const vmt_vreader *rd,
                           vmt_value out[VMT_PROTO_MAX_PARAMS]);
/* Decode the return value (rax at the return). */
void vmt_proto_decode_ret(const vmt_proto *p, const vmt_regs *regs, const vmt_vreader *rd, vmt_value *out);
/* Fill a struct parameter's field list from a type lookup (internal to the
 * builders; exposed for tests): 1 when `struct_name` is in the table. */
int vmt_proto_struct_fields(const char *struct_name, const char *const **fields, unsigned *n);
/* After params are known: pick BUFFER for char/void pointers followed by a
 * length-like integer (builders call this). */
void vmt_proto_finish(vmt_proto *p);

/* ---- ELF guests: prototypes from DWARF (libdw) ---- */
typedef struct vmt_dwarf vmt_dwarf;
vmt_status vmt_dwarf_open(const char *elf_path, vmt_dwarf **out, char *why, size_t why_len);
void vmt_dwarf_close(vmt_dwarf *dw);
const char *vmt_dwarf_error(const vmt_dwarf *dw);
/* The prototype of a function (a definition, or a declaration when the
 * function has no DWARF of its own, e.g. written in assembly). */
vmt_status vmt_dwarf_proto(vmt_dwarf *dw, const char *function, vmt_proto *out);

#ifdef __cplusplus
}
#endif
#endif
