/*
 * tests/platform/test_platform_uart.c — the 16550A on COM1: output lines,
 * the THRE interrupt as Linux's 8250 driver depends on it (a writer that
 * transmits only from its interrupt handler must drain its whole buffer),
 * receive FIFO and its interrupts, loopback, divisor latch, scratch.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "plat_fixture.h"

#define COM1 0x3f8
#define UART_VECTOR 37 /* as Linux routes IRQ 4 through IOAPIC pin 4 */

static void puts_thr(pfx *f, const char *s)
{
    for (; *s; s++)
        pfx_outb(f, COM1, (uint8_t)*s);
}

static void test_output_lines(void **state)
{
    (void)state;
    pfx f;
    pfx_init(&f, NULL);
    puts_thr(&f, "hello\r\nworld\n");
    assert_int_equal(f.lines, 2);
    assert_string_equal(f.last_line, "world");
    assert_non_null(strstr(f.log, "L:hello\n"));
    puts_thr(&f, "partial");
    assert_int_equal(f.lines, 2);
    vmt_platform_serial_flush(f.p);
    assert_string_equal(f.last_line, "partial");
    /* LSR: transmitter always empty. */
    assert_int_equal(pfx_inb(&f, COM1 + 5), 0x60);
    pfx_free(&f);
}

static void test_registers(void **state)
{
    (void)state;
    pfx f;
    pfx_init(&f, NULL);
    assert_int_equal(pfx_inb(&f, COM1 + 2), 0x01); /* no interrupt, no FIFO */
    pfx_outb(&f, COM1 + 3, 0x80);                  /* DLAB */
    pfx_outb(&f, COM1 + 0, 0x01);
    pfx_outb(&f, COM1 + 1, 0x00);
    assert_int_equal(pfx_inb(&f, COM1 + 0), 0x01);
    assert_int_equal(pfx_inb(&f, COM1 + 1), 0x00);
    pfx_outb(&f, COM1 + 3, 0x03);                  /* 8N1 */
    assert_int_equal(f.lines, 0);                  /* divisor writes are not output */
    pfx_outb(&f, COM1 + 7, 0x5a);
    assert_int_equal(pfx_inb(&f, COM1 + 7), 0x5a);
    pfx_outb(&f, COM1 + 2, 0xc7);                  /* FIFO on, 14-byte trigger */
    assert_int_equal(pfx_inb(&f, COM1 + 2) & 0xc0, 0xc0); /* 16550A */
    assert_int_equal(pfx_inb(&f, COM1 + 6), 0xb0);         /* DCD DSR CTS */
    /* Loopback as Linux's autoconfig checks it: MCR = LOOP|OUT2|RTS -> MSR 0x90. */
    pfx_outb(&f, COM1 + 4, 0x1a);
    assert_int_equal(pfx_inb(&f, COM1 + 6) & 0xf0, 0x90);
    pfx_outb(&f, COM1 + 0, 'x');
    assert_int_equal(f.lines, 0);
    vmt_platform_serial_flush(f.p);
    assert_int_equal(f.lines, 0); /* looped back, not transmitted */
    assert_int_equal(pfx_inb(&f, COM1 + 5) & 1, 1);
    assert_int_equal(pfx_inb(&f, COM1 + 0), 'x');
    assert_int_equal(pfx_inb(&f, COM1 + 5) & 1, 0);
    pfx_outb(&f, COM1 + 4, 0x0b);
    pfx_free(&f);
}

static void setup_irq(pfx *f)
{
    pfx_lapic_enable(f);
    pfx_ioapic_route(f, 4, UART_VECTOR, false);
}

static void test_thre_interrupt(void **state)
{
    (void)state;
    pfx f;
    pfx_init(&f, NULL);
    setup_irq(&f);
    pfx_outb(&f, COM1 + 2, 0x07);
    pfx_outb(&f, COM1 + 1, 0x02); /* ETBEI with THR empty: THRE interrupt */
    assert_int_equal(pfx_take(&f, 0), UART_VECTOR);
    assert_int_equal(pfx_inb(&f, COM1 + 2), 0xc2);
    assert_int_equal(pfx_inb(&f, COM1 + 2), 0xc1); /* reading IIR cleared it */
    pfx_eoi(&f);
    assert_int_equal(pfx_pending(&f, 0), -1);
    /* Each THR write re-raises THRE: a new edge reaches the IOAPIC. */
    pfx_outb(&f, COM1, 'a');
    assert_int_equal(pfx_take(&f, 0), UART_VECTOR);
    /* While in service, a second write makes a second edge (IRR again). */
    pfx_outb(&f, COM1, 'b');
    assert_int_equal(pfx_pending(&f, 0), -1);
    pfx_eoi(&f);
    assert_int_equal(pfx_take(&f, 0), UART_VECTOR);
    pfx_eoi(&f);
    /* Clearing and setting ETBEI again re-raises (Linux's UART_BUG_THRE test). */
    pfx_outb(&f, COM1 + 1, 0x00);
    assert_int_equal(pfx_inb(&f, COM1 + 2), 0xc1);
    pfx_outb(&f, COM1 + 1, 0x02);
    assert_int_equal(pfx_inb(&f, COM1 + 2), 0xc2);
    pfx_free(&f);
}

/* Linux's 8250 path: the tty layer queues text; the THRE interrupt handler
 * writes up to 16 bytes per interrupt and clears ETBEI when the buffer is
 * empty. Nothing is written outside the handler. */
static void test_interrupt_driven_writer_drains(void **state)
{
    (void)state;
    pfx f;
    pfx_init(&f, NULL);
    setup_irq(&f);
    pfx_outb(&f, COM1 + 2, 0x07);
    static char text[8192];
    size_t len = 0;
    for (unsigned i = 0; len + 32 < sizeof text; i++)
        len += (size_t)snprintf(text + len, sizeof text - len, "tick %u\n", i);
    size_t sent = 0;
    pfx_outb(&f, COM1 + 1, 0x05); /* RX and line status, as at the pause */
    pfx_outb(&f, COM1 + 1, 0x07); /* start_tx: ETBEI */
    uint64_t now = 0;
    unsigned interrupts = 0;
    while (pfx_pending(&f, 0) >= 0) {
        assert_int_equal(pfx_take(&f, 0), UART_VECTOR);
        interrupts++;
        for (;;) {
            uint8_t iir = pfx_inb(&f, COM1 + 2);
            if (iir & 1)
                break;
            assert_int_equal(iir & 0x0e, 0x02);
            for (unsigned n = 0; n < 16 && sent < len; n++)
                pfx_outb(&f, COM1, (uint8_t)text[sent++]);
            if (sent == len)
                pfx_outb(&f, COM1 + 1, 0x05); /* stop_tx */
        }
        pfx_eoi(&f);
        now += 1000;
        pfx_advance(&f, now);
        assert_true(interrupts < 10000);
    }
    assert_int_equal(sent, len);
    unsigned want_lines = 0;
    for (size_t i = 0; i < len; i++)
        want_lines += text[i] == '\n';
    assert_int_equal(f.lines, want_lines);
    char last[32];
    snprintf(last, sizeof last, "tick %u", want_lines - 1);
    assert_string_equal(f.last_line, last);
    pfx_free(&f);
}

static void test_receive(void **state)
{
    (void)state;
    pfx f;
    pfx_init(&f, NULL);
    setup_irq(&f);
    pfx_outb(&f, COM1 + 2, 0x47); /* FIFO, trigger 4 */
    pfx_outb(&f, COM1 + 1, 0x01);
    assert_int_equal(vmt_platform_serial_input(f.p, "ab", 2), VMT_OK);
    pfx_check(&f);
    assert_int_equal(pfx_take(&f, 0), UART_VECTOR);
    assert_int_equal(pfx_inb(&f, COM1 + 2), 0xcc); /* below trigger: character timeout */
    assert_int_equal(pfx_inb(&f, COM1 + 5) & 1, 1);
    assert_int_equal(pfx_inb(&f, COM1), 'a');
    assert_int_equal(pfx_inb(&f, COM1), 'b');
    assert_int_equal(pfx_inb(&f, COM1 + 2), 0xc1);
    pfx_eoi(&f);
    /* More than the FIFO holds: the rest waits in the host queue, nothing lost. */
    char big[40];
    for (unsigned i = 0; i < sizeof big; i++)
        big[i] = (char)('A' + i % 26);
    assert_int_equal(vmt_platform_serial_input(f.p, big, sizeof big), VMT_OK);
    assert_int_equal(pfx_take(&f, 0), UART_VECTOR);
    assert_int_equal(pfx_inb(&f, COM1 + 2), 0xc4); /* at trigger level: RX data */
    for (unsigned i = 0; i < sizeof big; i++) {
        assert_int_equal(pfx_inb(&f, COM1 + 5) & 0x03, 0x01); /* data, no overrun */
        assert_int_equal(pfx_inb(&f, COM1), (uint8_t)big[i]);
    }
    assert_int_equal(pfx_inb(&f, COM1 + 5) & 1, 0);
    pfx_eoi(&f);
    pfx_free(&f);
}

typedef struct terminal {
    vmt_platform *p;
    unsigned lines;
} terminal;

static void answer_prompt(void *ctx, const char *line)
{
    terminal *t = ctx;
    t->lines++;
    if (strcmp(line, "login:") == 0)
        assert_int_equal(vmt_platform_serial_input(t->p, "root\n", 5), VMT_OK);
}

/* The serial callback may type into the guest (a terminal answering a
 * prompt) while the guest's THR write is still in progress. */
static void test_callback_answers_prompt(void **state)
{
    (void)state;
    terminal t = {0};
    vmt_platform_config c;
    memset(&c, 0, sizeof c);
    c.serial = answer_prompt;
    c.serial_ctx = &t;
    assert_int_equal(vmt_platform_create(&c, &t.p, NULL, 0), VMT_OK);
    vmt_bus b = vmt_platform_bus(t.p);
    assert_int_equal(b.ops->pio_write(b.ctx, 0, COM1 + 2, 1, 0x07), VMT_OK);
    assert_int_equal(b.ops->pio_write(b.ctx, 0, COM1 + 1, 1, 0x01), VMT_OK);
    for (const char *s = "login:\n"; *s; s++)
        assert_int_equal(b.ops->pio_write(b.ctx, 0, COM1, 1, (uint8_t)*s), VMT_OK);
    assert_int_equal(vmt_platform_check(t.p), VMT_OK);
    char got[8] = {0};
    for (unsigned i = 0; i < 5; i++) {
        uint32_t v;
        assert_int_equal(b.ops->pio_read(b.ctx, 0, COM1 + 5, 1, &v), VMT_OK);
        assert_int_equal(v & 1, 1);
        assert_int_equal(b.ops->pio_read(b.ctx, 0, COM1, 1, &v), VMT_OK);
        got[i] = (char)v;
    }
    assert_string_equal(got, "root\n");
    assert_int_equal(vmt_platform_check(t.p), VMT_OK);
    vmt_platform_destroy(t.p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_output_lines),
        cmocka_unit_test(test_registers),
        cmocka_unit_test(test_thre_interrupt),
        cmocka_unit_test(test_interrupt_driven_writer_drains),
        cmocka_unit_test(test_receive),
        cmocka_unit_test(test_callback_answers_prompt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
