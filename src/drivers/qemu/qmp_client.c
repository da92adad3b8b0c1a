/*
 * drivers/qemu/qmp_client.c — QMP client over a unix socket with json-c
 * (see qmp_client.h).
 */
#include "drivers/qemu/qmp_client.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "drivers/qemu/gdb_client.h" /* gdb_connect_unix: a plain unix-socket connect with retries */

#define QMP_BUF 65536

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static vmt_status qdie(qmp_client *q, vmt_status st, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static vmt_status qdie(qmp_client *q, vmt_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmt_errbuf_vset(&q->err, st, fmt, ap);
    va_end(ap);
    q->dead = true;
    return st;
}

const char *qmp_error(const qmp_client *q)
{
    return q->err.msg;
}

/* The next complete JSON value from the socket, before deadline. */
static vmt_status next_value(qmp_client *q, int64_t deadline, struct json_object **out)
{
    for (;;) {
        while (q->buf_off < q->buf_len) {
            /* Skip whitespace between values (json-c would treat it as part of the next). */
            char c = q->buf[q->buf_off];
            if (q->reply_bytes == 0 && (c == ' ' || c == '\n' || c == '\r' || c == '\t')) {
                q->buf_off++;
                continue;
            }
            size_t n = q->buf_len - q->buf_off;
            struct json_object *v = json_tokener_parse_ex(q->tok, q->buf + q->buf_off, (int)n);
            enum json_tokener_error e = json_tokener_get_error(q->tok);
            if (e == json_tokener_continue) {
                q->reply_bytes += n;
                q->buf_off = q->buf_len;
                if (q->reply_bytes > QMP_MAX_REPLY)
                    return qdie(q, VMT_E_FORMAT, "qmp: reply larger than %u bytes", QMP_MAX_REPLY);
                break;
            }
            if (e != json_tokener_success || !v) {
                json_object_put(v);
                return qdie(q, VMT_E_FORMAT, "qmp: QEMU sent malformed JSON: %s", json_tokener_error_desc(e));
            }
            size_t used = json_tokener_get_parse_end(q->tok);
            q->buf_off += used;
            q->reply_bytes = 0;
            json_tokener_reset(q->tok);
            if (!json_object_is_type(v, json_type_object)) {
                json_object_put(v);
                return qdie(q, VMT_E_FORMAT, "qmp: QEMU sent a JSON value that is not an object");
            }
            *out = v;
            return VMT_OK;
        }
        q->buf_off = q->buf_len = 0;
        struct pollfd pfd = { .fd = q->fd, .events = POLLIN };
        int64_t left = deadline - now_ms();
        int r = poll(&pfd, 1, left < 0 ? 0 : (int)left);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return qdie(q, VMT_E_IO, "qmp: poll: %s", strerror(errno));
        if (r == 0)
            return VMT_E_TIMEOUT;
        ssize_t n = recv(q->fd, q->buf, QMP_BUF, 0);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n < 0)
            return qdie(q, VMT_E_IO, "qmp: recv: %s", strerror(errno));
        if (n == 0)
            return qdie(q, VMT_E_IO, "qmp: QEMU closed the QMP connection (QEMU exited?)");
        q->buf_len = (size_t)n;
    }
}

static vmt_status send_all(qmp_client *q, const char *s, int64_t deadline)
{
    size_t len = strlen(s);
    while (len) {
        struct pollfd pfd = { .fd = q->fd, .events = POLLOUT };
        int64_t left = deadline - now_ms();
        int r = poll(&pfd, 1, left < 0 ? 0 : (int)left);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return qdie(q, r == 0 ? VMT_E_TIMEOUT : VMT_E_IO, "qmp: cannot send to QEMU (%s)",
                        r == 0 ? "timed out" : strerror(errno));
        ssize_t n = send(q->fd, s, len, MSG_NOSIGNAL);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n < 0)
            return qdie(q, VMT_E_IO, "qmp: send: %s (QEMU gone?)", strerror(errno));
        s += n;
        len -= (size_t)n;
    }
    return VMT_OK;
}

vmt_status qmp_execute(qmp_client *q, const char *command, struct json_object *args, int timeout_ms,
                       struct json_object **ret)
{
    if (ret)
        *ret = NULL;
    if (q->dead)
        return q->err.status ? q->err.status : VMT_E_IO;
    int64_t deadline = now_ms() + (timeout_ms > 0 ? timeout_ms : q->timeout_ms);
    struct json_object *cmd = json_object_new_object();
    if (!cmd)
        return VMT_E_NOMEM;
    json_object_object_add(cmd, "execute", json_object_new_string(command));
    if (args)
        json_object_object_add(cmd, "arguments", json_object_get(args));
    const char *text = json_object_to_json_string_ext(cmd, JSON_C_TO_STRING_PLAIN);
    vmt_status st = text ? send_all(q, text, deadline) : VMT_E_NOMEM;
    if (!st)
        st = send_all(q, "\n", deadline);
    json_object_put(cmd);
    if (st)
        return st;
    for (;;) {
        struct json_object *msg = NULL;
        st = next_value(q, deadline, &msg);
        if (st == VMT_E_TIMEOUT)
            return qdie(q, VMT_E_TIMEOUT, "qmp: no answer to '%s' within %d ms (QEMU hung?)", command,
                        timeout_ms > 0 ? timeout_ms : q->timeout_ms);
        if (st)
            return st;
        struct json_object *v;
        if (json_object_object_get_ex(msg, "event", &v)) {
            snprintf(q->last_event, sizeof q->last_event, "%s", json_object_get_string(v) ? json_object_get_string(v) : "");
            json_object_put(msg);
            continue;
        }
        if (json_object_object_get_ex(msg, "return", &v)) {
            if (ret)
                *ret = json_object_get(v);
            json_object_put(msg);
            return VMT_OK;
        }
        if (json_object_object_get_ex(msg, "error", &v)) {
            struct json_object *desc = NULL;
            json_object_object_get_ex(v, "desc", &desc);
            const char *d = desc ? json_object_get_string(desc) : NULL;
            vmt_errbuf_set(&q->err, VMT_E_DRIVER, "qmp: '%s' failed: %.160s", command, d ? d : "(no description)");
            json_object_put(msg);
            return VMT_E_DRIVER;
        }
        json_object_put(msg);
        return qdie(q, VMT_E_FORMAT, "qmp: answer to '%s' has neither 'return' nor 'error'", command);
    }
}

vmt_status qmp_open_fd(qmp_client *q, int fd, int timeout_ms)
{
    memset(q, 0, sizeof *q);
    q->fd = fd;
    q->timeout_ms = timeout_ms > 0 ? timeout_ms : 5000;
    q->buf = malloc(QMP_BUF);
    q->tok = json_tokener_new_ex(64);
    if (!q->buf || !q->tok) {
        qmp_close(q);
        return VMT_E_NOMEM;
    }
    struct json_object *greeting = NULL;
    vmt_status st = next_value(q, now_ms() + q->timeout_ms, &greeting);
    if (st == VMT_E_TIMEOUT)
        return qdie(q, VMT_E_TIMEOUT, "qmp: no greeting within %d ms (is this a QMP socket?)", q->timeout_ms);
    if (st)
        return st;
    struct json_object *v;
    int ok = json_object_object_get_ex(greeting, "QMP", &v);
    json_object_put(greeting);
    if (!ok)
        return qdie(q, VMT_E_FORMAT, "qmp: the greeting has no 'QMP' member (not a QMP socket)");
    return qmp_execute(q, "qmp_capabilities", NULL, 0, NULL);
}

vmt_status qmp_open(qmp_client *q, const char *path, int timeout_ms)
{
    int fd;
    char why[200];
    vmt_status st = gdb_connect_unix(path, timeout_ms, &fd, why, sizeof why);
    if (st) {
        memset(q, 0, sizeof *q);
        q->fd = -1;
        return qdie(q, st, "qmp: %s", why);
    }
    return qmp_open_fd(q, fd, timeout_ms);
}

void qmp_close(qmp_client *q)
{
    if (q->fd >= 0)
        close(q->fd);
    q->fd = -1;
    if (q->tok)
        json_tokener_free(q->tok);
    q->tok = NULL;
    free(q->buf);
    q->buf = NULL;
}

vmt_status qmp_status(qmp_client *q, bool *running, char *status, size_t status_len)
{
    struct json_object *r = NULL, *v;
    vmt_status st = qmp_execute(q, "query-status", NULL, 0, &r);
    if (st)
        return st;
    if (!json_object_object_get_ex(r, "running", &v) || !json_object_is_type(v, json_type_boolean)) {
        json_object_put(r);
        return vmt_errbuf_set(&q->err, VMT_E_FORMAT, "qmp: query-status answer has no boolean 'running'");
    }
    *running = json_object_get_boolean(v);
    if (status && status_len) {
        status[0] = '\0';
        if (json_object_object_get_ex(r, "status", &v) && json_object_get_string(v))
            snprintf(status, status_len, "%s", json_object_get_string(v));
    }
    json_object_put(r);
    return VMT_OK;
}
