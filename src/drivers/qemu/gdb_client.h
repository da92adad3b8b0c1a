/*
 * drivers/qemu/gdb_client.h — a GDB remote protocol client over a stream
 * socket (internal to the qemu driver).
 *
 * Design: one connection, all-stop mode, acks on (QEMU 7.2 does not offer
 * QStartNoAckMode). Every exchange has a deadline (gdb_client.timeout_ms,
 * or the caller's for waiting on a stop reply): a stub that does not answer,
 * answers garbage or closes the socket gives VMT_E_TIMEOUT / VMT_E_FORMAT /
 * VMT_E_IO with a message, never a hang. After a protocol error or a closed
 * socket the client is "dead": every later call fails at once with the first
 * error (the byte stream can no longer be trusted to be in sync).
 *
 * Invariants (gdb_client_check): rx_len <= rx_cap; a dead client has a
 * message; fd < 0 only when dead or closed.
 *
 * Threading: one thread at a time. SIGPIPE is never raised (MSG_NOSIGNAL).
 */
#ifndef VMT_DRIVERS_QEMU_GDB_CLIENT_H
#define VMT_DRIVERS_QEMU_GDB_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/errbuf.h"
#include "vmtrap/status.h"

typedef struct gdb_client {
    int fd;
    int timeout_ms;         /* per exchange */
    uint8_t *rx;            /* raw bytes received, not yet scanned */
    size_t rx_len, rx_cap;
    char *pkt;              /* the last decoded packet (NUL-terminated) */
    size_t pkt_len, pkt_cap;
    char *tx;               /* framing buffer */
    size_t tx_cap;
    size_t packet_size;     /* the stub's PacketSize (qSupported), 0 before */
    bool dead;
    vmt_errbuf err;
    uint64_t sent, received;
    unsigned unsolicited;   /* stop replies received while an ack was due (dropped) */
} gdb_client;

/* Take ownership of fd (a connected stream socket). */
vmt_status gdb_client_init(gdb_client *g, int fd, int timeout_ms);
void gdb_client_fini(gdb_client *g);
vmt_status gdb_client_check(const gdb_client *g, char *why, size_t why_len);

/* Connect to a unix socket, retrying for up to timeout_ms while it does not
 * exist yet or refuses (a QEMU that is still starting). */
vmt_status gdb_connect_unix(const char *path, int timeout_ms, int *fd_out, char *why, size_t why_len);

/* Send one packet and wait for its ack ('-' resends, at most 3 times). */
vmt_status gdb_send(gdb_client *g, const char *payload);
/* Wait up to timeout_ms (< 0: no limit, 0: only what is buffered or ready)
 * for the next packet; ack it; *reply points into the client (valid until
 * the next call). VMT_E_TIMEOUT leaves the client alive. */
vmt_status gdb_recv(gdb_client *g, int timeout_ms, const char **reply, size_t *len);
/* Are there bytes waiting (buffered or on the socket)? */
bool gdb_pending(gdb_client *g);
/* send + recv with g->timeout_ms. */
vmt_status gdb_exchange(gdb_client *g, const char *cmd, const char **reply, size_t *len);
/* Exchange that must answer "OK": an error reply is VMT_E_DRIVER, an empty
 * one (unsupported) VMT_E_NOTSUP, anything else VMT_E_FORMAT. */
vmt_status gdb_exchange_ok(gdb_client *g, const char *cmd);
/* Send the interrupt byte (0x03): the stub stops the target and sends a stop reply. */
vmt_status gdb_interrupt(gdb_client *g);

const char *gdb_client_error(const gdb_client *g);

#endif
