/*
 * core/hex.h — hexadecimal digits (internal). One definition for every
 * parser of untrusted text that reads hex (GDB remote packets, sidecars).
 */
#ifndef VMT_CORE_HEX_H
#define VMT_CORE_HEX_H

/* The value of hex digit c (either case), or -1 when c is not one. */
static inline int vmt_hex_digit(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

#endif
