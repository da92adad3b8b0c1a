/*
 * vmtrap/status.h — how every fallible call reports failure.
 *
 * Design: a call returns a vmt_status code (VMT_OK on success). The code says
 * the kind of failure; the handle the call was made on (driver, session,
 * breakpoint manager, ...) keeps a message that says what failed and where,
 * e.g. "paging: PML4 entry at pa 0x3000 has reserved bits 0x000f000000000000".
 * Each handle type has a `*_error()` accessor for that message.
 *
 * There is no global mutable state: messages live in the handles; the table
 * behind vmt_strerror() is constant.
 */
#ifndef VMTRAP_STATUS_H
#define VMTRAP_STATUS_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum vmt_status {
    VMT_OK = 0,
    VMT_E_INVAL,        /* bad argument from the caller */
    VMT_E_NOMEM,        /* host allocation failed */
    VMT_E_NOTSUP,       /* the driver does not declare the capability */
    VMT_E_NOTFOUND,     /* no such object (view, breakpoint, symbol, ...) */
    VMT_E_EXISTS,       /* already there (informational for idempotent calls) */
    VMT_E_CONFLICT,     /* contradicts existing state (e.g. global vs non-global) */
    VMT_E_NOT_PRESENT,  /* a guest translation is not present (page fault) */
    VMT_E_BAD_PT,       /* a guest page table is malformed or hostile */
    VMT_E_RANGE,        /* address outside guest memory or a limit */
    VMT_E_DRIVER,       /* the hypervisor/emulator call failed */
    VMT_E_IO,           /* host file or device I/O failed */
    VMT_E_FORMAT,       /* malformed input file (ELF, snapshot, CPU state) */
    VMT_E_TIMEOUT,      /* no event within the timeout */
    VMT_E_STOPPED,      /* the guest or the session has stopped */
    VMT_E_BUSY,         /* operation not allowed in the current state */
    VMT_E_INJECTED,     /* failure injected by the test driver */
    VMT_E_INTERNAL,     /* an internal invariant failed: a bug in vmtrap */
    VMT_STATUS_COUNT
} vmt_status;

/* Short constant description of a status code ("not supported by driver"). */
const char *vmt_strerror(vmt_status status);

#ifdef __cplusplus
}
#endif
#endif
