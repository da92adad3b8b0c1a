/*
 * guests/lib/serial.c — console output on VMT_PORT_SERIAL, one `out` per
 * byte (no UART setup: the drivers collect bytes into lines).
 */
#include "guest/guest.h"
#include "guest/x86.h"
#include "vmtrap/machine.h"

void serial_write(const char *s)
{
    while (*s)
        outb(VMT_PORT_SERIAL, (uint8_t)*s++);
}

void serial_printf(const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    serial_write(buf);
}
