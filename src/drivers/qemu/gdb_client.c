/*
 * drivers/qemu/gdb_client.c — GDB remote protocol client I/O with deadlines
 * (see gdb_client.h).
 */
#include "drivers/qemu/gdb_client.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "drivers/qemu/gdb_proto.h"

#define RX_CHUNK 65536

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Remaining ms until deadline (deadline < 0: infinite -> -1). */
static int remaining(int64_t deadline)
{
    if (deadline < 0)
        return -1;
    int64_t r = deadline - now_ms();
    return r < 0 ? 0 : (r > 1 << 30 ? 1 << 30 : (int)r);
}

static int64_t deadline_in(int timeout_ms)
{
    return timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
}

static vmt_status die(gdb_client *g, vmt_status st, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static vmt_status die(gdb_client *g, vmt_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmt_errbuf_vset(&g->err, st, fmt, ap);
    va_end(ap);
    g->dead = true;
    return st;
}

static vmt_status dead_status(gdb_client *g)
{
    return g->err.status ? g->err.status : VMT_E_IO;
}

vmt_status gdb_client_init(gdb_client *g, int fd, int timeout_ms)
{
    memset(g, 0, sizeof *g);
    g->fd = fd;
    g->timeout_ms = timeout_ms > 0 ? timeout_ms : 5000;
    g->rx_cap = GDB_MAX_RAW + 16;
    g->pkt_cap = GDB_MAX_PAYLOAD + 1;
    g->tx_cap = 2 * GDB_MAX_PAYLOAD + 8;
    g->rx = malloc(g->rx_cap);
    g->pkt = malloc(g->pkt_cap);
    g->tx = malloc(g->tx_cap);
    if (!g->rx || !g->pkt || !g->tx) {
        gdb_client_fini(g);
        return VMT_E_NOMEM;
    }
    g->pkt[0] = '\0';
    return VMT_OK;
}

void gdb_client_fini(gdb_client *g)
{
    if (g->fd >= 0)
        close(g->fd);
    g->fd = -1;
    free(g->rx);
    free(g->pkt);
    free(g->tx);
    g->rx = NULL;
    g->pkt = NULL;
    g->tx = NULL;
    g->rx_len = 0;
}

vmt_status gdb_client_check(const gdb_client *g, char *why, size_t why_len)
{
    if (g->rx_len > g->rx_cap) {
        vmt_why(why, why_len, "gdb client: rx_len %zu > rx_cap %zu", g->rx_len, g->rx_cap);
        return VMT_E_INTERNAL;
    }
    if (g->dead && !g->err.msg[0]) {
        vmt_why(why, why_len, "gdb client: dead without a message");
        return VMT_E_INTERNAL;
    }
    if (g->fd < 0 && !g->dead) {
        vmt_why(why, why_len, "gdb client: no socket but not marked dead");
        return VMT_E_INTERNAL;
    }
    return VMT_OK;
}

const char *gdb_client_error(const gdb_client *g)
{
    return g->err.msg;
}

vmt_status gdb_connect_unix(const char *path, int timeout_ms, int *fd_out, char *why, size_t why_len)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (!path || strlen(path) >= sizeof sa.sun_path) {
        vmt_why(why, why_len, "socket path '%s' is empty or too long", path ? path : "");
        return VMT_E_INVAL;
    }
    strcpy(sa.sun_path, path);
    int64_t deadline = deadline_in(timeout_ms);
    for (;;) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            vmt_why(why, why_len, "socket(): %s", strerror(errno));
            return VMT_E_IO;
        }
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
            *fd_out = fd;
            return VMT_OK;
        }
        int e = errno;
        close(fd);
        if ((e != ENOENT && e != ECONNREFUSED && e != EAGAIN) || remaining(deadline) == 0) {
            vmt_why(why, why_len, "cannot connect to %s: %s", path, strerror(e));
            return e == ENOENT || e == ECONNREFUSED ? VMT_E_TIMEOUT : VMT_E_IO;
        }
        struct timespec ts = { 0, 20 * 1000 * 1000 };
        nanosleep(&ts, NULL);
    }
}

static vmt_status write_all(gdb_client *g, const void *buf, size_t len, int64_t deadline)
{
    const uint8_t *p = buf;
    while (len) {
        struct pollfd pfd = { .fd = g->fd, .events = POLLOUT };
        int r = poll(&pfd, 1, remaining(deadline));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return die(g, VMT_E_IO, "gdb: poll: %s", strerror(errno));
        if (r == 0)
            return die(g, VMT_E_TIMEOUT, "gdb: the stub does not take our bytes (send timed out)");
        ssize_t n = send(g->fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n < 0)
            return die(g, VMT_E_IO, "gdb: send: %s (QEMU gone?)", strerror(errno));
        p += n;
        len -= (size_t)n;
    }
    return VMT_OK;
}

/* Read what is available into rx, waiting until deadline for at least one byte. */
static vmt_status fill(gdb_client *g, int64_t deadline, bool *timed_out)
{
    *timed_out = false;
    if (g->rx_len >= g->rx_cap)
        return die(g, VMT_E_FORMAT, "gdb: receive buffer full without a complete packet");
    for (;;) {
        struct pollfd pfd = { .fd = g->fd, .events = POLLIN };
        int r = poll(&pfd, 1, remaining(deadline));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return die(g, VMT_E_IO, "gdb: poll: %s", strerror(errno));
        if (r == 0) {
            *timed_out = true;
            return VMT_OK;
        }
        ssize_t n = recv(g->fd, g->rx + g->rx_len, g->rx_cap - g->rx_len, 0);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n < 0)
            return die(g, VMT_E_IO, "gdb: recv: %s (QEMU gone?)", strerror(errno));
        if (n == 0)
            return die(g, VMT_E_IO, "gdb: the stub closed the connection (QEMU exited or detached us)");
        g->rx_len += (size_t)n;
        return VMT_OK;
    }
}

static void drop(gdb_client *g, size_t n)
{
    memmove(g->rx, g->rx + n, g->rx_len - n);
    g->rx_len -= n;
}

/* Next protocol item from the stream (ack, nak or packet) before deadline. */
static vmt_status next_item(gdb_client *g, int64_t deadline, gdb_scan_kind *kind)
{
    for (;;) {
        size_t used, plen;
        char why[200];
        vmt_status st = gdb_scan(g->rx, g->rx_len, kind, &used, g->pkt, g->pkt_cap, &plen, why, sizeof why);
        if (st)
            return die(g, st, "%s", why);
        if (*kind != GDB_SCAN_MORE) {
            drop(g, used);
            g->pkt_len = plen;
            return VMT_OK;
        }
        bool to;
        st = fill(g, deadline, &to);
        if (st)
            return st;
        if (to)
            return VMT_E_TIMEOUT;
    }
}

vmt_status gdb_send(gdb_client *g, const char *payload)
{
    if (g->dead)
        return dead_status(g);
    size_t len = strlen(payload);
    size_t flen = gdb_frame(payload, len, g->tx, g->tx_cap);
    if (!flen)
        return vmt_errbuf_set(&g->err, VMT_E_INVAL, "gdb: packet of %zu bytes is too long to frame", len);
    int64_t deadline = deadline_in(g->timeout_ms);
    for (int attempt = 0; attempt < 4; attempt++) {
        vmt_status st = write_all(g, g->tx, flen, deadline);
        if (st)
            return st;
        for (;;) {
            gdb_scan_kind kind;
            st = next_item(g, deadline, &kind);
            if (st == VMT_E_TIMEOUT)
                return die(g, VMT_E_TIMEOUT, "gdb: no ack for '%.24s' within %d ms (QEMU hung?)", payload,
                           g->timeout_ms);
            if (st)
                return st;
            if (kind == GDB_SCAN_ACK) {
                g->sent++;
                return VMT_OK;
            }
            if (kind == GDB_SCAN_NAK)
                break; /* send again */
            if (kind == GDB_SCAN_PACKET && (g->pkt[0] == 'T' || g->pkt[0] == 'S') && g->unsolicited < 16) {
                /* QEMU stops a running VM when a debugger connects and says
                 * so with a stop reply nobody asked for, possibly before the
                 * ack of our first packet: acknowledge it, drop it, and go
                 * on waiting for our ack. */
                g->unsolicited++;
                if ((st = write_all(g, "+", 1, deadline)))
                    return st;
                continue;
            }
            return die(g, VMT_E_FORMAT, "gdb: a packet ('%.24s') came where the ack for '%.24s' was due", g->pkt,
                       payload);
        }
    }
    return die(g, VMT_E_IO, "gdb: the stub rejected '%.24s' four times (nak)", payload);
}

vmt_status gdb_recv(gdb_client *g, int timeout_ms, const char **reply, size_t *len)
{
    if (g->dead)
        return dead_status(g);
    int64_t deadline = deadline_in(timeout_ms);
    for (;;) {
        gdb_scan_kind kind;
        vmt_status st = next_item(g, deadline, &kind);
        if (st == VMT_E_TIMEOUT)
            return vmt_errbuf_set(&g->err, VMT_E_TIMEOUT, "gdb: no reply within %d ms", timeout_ms);
        if (st)
            return st;
        if (kind == GDB_SCAN_ACK || kind == GDB_SCAN_NAK)
            continue; /* a stray ack carries nothing; a nak for something we already got acked is harmless */
        /* A failing ack (the stub closed right after sending, e.g. W00 as
         * QEMU quits) leaves the client dead, but the packet arrived whole. */
        (void)write_all(g, "+", 1, deadline_in(g->timeout_ms));
        if (kind == GDB_SCAN_NOTIFY)
            continue;
        g->received++;
        *reply = g->pkt;
        *len = g->pkt_len;
        return VMT_OK;
    }
}

bool gdb_pending(gdb_client *g)
{
    if (g->dead)
        return false;
    if (g->rx_len)
        return true;
    struct pollfd pfd = { .fd = g->fd, .events = POLLIN };
    return poll(&pfd, 1, 0) > 0;
}

vmt_status gdb_exchange(gdb_client *g, const char *cmd, const char **reply, size_t *len)
{
    vmt_status st = gdb_send(g, cmd);
    if (st)
        return st;
    st = gdb_recv(g, g->timeout_ms, reply, len);
    if (st == VMT_E_TIMEOUT)
        return die(g, VMT_E_TIMEOUT, "gdb: no reply to '%.24s' within %d ms (QEMU hung?)", cmd, g->timeout_ms);
    return st;
}

vmt_status gdb_exchange_ok(gdb_client *g, const char *cmd)
{
    const char *r;
    size_t n;
    vmt_status st = gdb_exchange(g, cmd, &r, &n);
    if (st)
        return st;
    int code;
    if (n == 2 && memcmp(r, "OK", 2) == 0)
        return VMT_OK;
    if (n == 0)
        return vmt_errbuf_set(&g->err, VMT_E_NOTSUP, "gdb: the stub does not support '%.32s'", cmd);
    if (gdb_is_error(r, n, &code))
        return vmt_errbuf_set(&g->err, VMT_E_DRIVER, "gdb: the stub refused '%.32s': %.32s", cmd, r);
    return die(g, VMT_E_FORMAT, "gdb: unexpected reply '%.32s' to '%.32s'", r, cmd);
}

vmt_status gdb_interrupt(gdb_client *g)
{
    if (g->dead)
        return dead_status(g);
    return write_all(g, "\x03", 1, deadline_in(g->timeout_ms));
}
