/*
 * drivers/qemu/qmp_client.h — a QMP (QEMU Machine Protocol) client
 * (internal to the qemu driver).
 *
 * Design: one unix-socket connection; the greeting is read and
 * qmp_capabilities sent at open. qmp_execute() sends one command and waits
 * for its "return" or "error", skipping (but remembering the last of)
 * asynchronous events. Replies are parsed with json-c's incremental tokener
 * as untrusted input: a reply that is not a JSON object, an oversized one
 * (QMP_MAX_REPLY), a closed socket or a silent QEMU is an error with a
 * message; every exchange has a deadline. After a framing or I/O error the
 * client is dead (later calls fail with the first error).
 *
 * Threading: one thread at a time.
 */
#ifndef VMT_DRIVERS_QEMU_QMP_CLIENT_H
#define VMT_DRIVERS_QEMU_QMP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

#include <json-c/json.h>

#include "core/errbuf.h"
#include "vmtrap/status.h"

#define QMP_MAX_REPLY (4u << 20)

typedef struct qmp_client {
    int fd;
    int timeout_ms;
    struct json_tokener *tok;
    char *buf;               /* bytes received but not yet tokenised */
    size_t buf_len, buf_off;
    size_t reply_bytes;      /* bytes of the reply being parsed */
    bool dead;
    char last_event[64];     /* name of the last event seen, e.g. "STOP" */
    vmt_errbuf err;
} qmp_client;

/* Connect (retrying up to timeout_ms while the socket does not exist yet),
 * read the greeting and negotiate capabilities. */
vmt_status qmp_open(qmp_client *q, const char *path, int timeout_ms);
/* Take a connected fd instead (tests); same negotiation. */
vmt_status qmp_open_fd(qmp_client *q, int fd, int timeout_ms);
void qmp_close(qmp_client *q);

/* Execute `command` with `args` (may be NULL; not consumed) and wait up to
 * timeout_ms (<= 0: q->timeout_ms). On VMT_OK *ret (if non-NULL) receives
 * the "return" value (the caller puts it). A QMP error is VMT_E_DRIVER with
 * QEMU's description in the message. */
vmt_status qmp_execute(qmp_client *q, const char *command, struct json_object *args, int timeout_ms,
                       struct json_object **ret);
/* query-status: *running and the status string (e.g. "paused", "running"). */
vmt_status qmp_status(qmp_client *q, bool *running, char *status, size_t status_len);

const char *qmp_error(const qmp_client *q);

#endif
