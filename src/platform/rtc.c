/*
 * platform/rtc.c — the MC146818 real-time clock and CMOS RAM: index port
 * 0x70 (bit 7 masks NMI), data 0x71, high bank 0x72/0x73; ISA IRQ 8.
 *
 * Time: the clock shows base_unix + (now - base_ns) / 1e9 seconds (UTC),
 * base_unix starting at the config's rtc_epoch_s, so it follows virtual
 * time exactly. Registers 0-9 (seconds .. year) and 0x32 (century) are
 * computed on read in BCD or binary (register B bit 2) and 12/24-hour
 * format (bit 1); with register B.SET the clock is frozen and the guest
 * writes the fields, which become the new base when SET clears (a write to
 * a time field with SET clear also re-bases at once).
 *
 * Status: register A bit 7 (update in progress) reads 1 during the last
 * 244 us of each second; rate select (bits 3:0) with divider 010b gives the
 * periodic flag (PF). Each second boundary sets UF and, when the time
 * matches the alarm (0xc0-0xff = don't care), AF. Register C reads and
 * clears the flags; IRQF (bit 7) = (PF & PIE) | (AF & AIE) | (UF & UIE)
 * drives IRQ 8 (high until C is read). Register D reads 0x80 (valid RAM).
 * Flags are computed from virtual time up to now whenever the RTC is
 * touched or advanced; deadlines exist only for enabled interrupts.
 *
 * Invariants: index within the bank, flag bits only in C, base times not
 * in the future.
 */
#include "platform/platform_internal.h"

#define NS_PER_S 1000000000ull
#define REG_A 0x0a
#define REG_B 0x0b
#define REG_C 0x0c
#define REG_D 0x0d
#define B_SET 0x80
#define B_PIE 0x40
#define B_AIE 0x20
#define B_UIE 0x10
#define B_BINARY 0x04
#define B_24H 0x02
#define C_IRQF 0x80
#define C_PF 0x40
#define C_AF 0x20
#define C_UF 0x10
#define UIP_NS 244000ull

/* Days since 1970-01-01 for a proleptic Gregorian date. */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static uint8_t enc(const vmt_rtc *r, unsigned v)
{
    return (r->cmos[REG_B] & B_BINARY) ? (uint8_t)v : (uint8_t)((v / 10) << 4 | (v % 10));
}

static unsigned dec(const vmt_rtc *r, uint8_t v)
{
    return (r->cmos[REG_B] & B_BINARY) ? v : (unsigned)((v >> 4) * 10 + (v & 0xf));
}

static int64_t unix_now(const vmt_platform *p)
{
    const vmt_rtc *r = &p->s.rtc;
    uint64_t now = p->s.now_ns;
    return r->base_unix + (int64_t)((now > r->base_ns ? now - r->base_ns : 0) / NS_PER_S);
}

static uint8_t enc_hour(const vmt_rtc *r, unsigned h)
{
    if (r->cmos[REG_B] & B_24H)
        return enc(r, h);
    unsigned h12 = h % 12 ? h % 12 : 12;
    return (uint8_t)(enc(r, h12) | (h >= 12 ? 0x80 : 0));
}

static unsigned dec_hour(const vmt_rtc *r, uint8_t v)
{
    if (r->cmos[REG_B] & B_24H)
        return dec(r, v) % 24;
    unsigned h = dec(r, v & 0x7f) % 12;
    return (v & 0x80) ? h + 12 : h;
}

/* Fill registers 0,2,4,6,7,8,9 and 0x32 from Unix time t. */
static void fields_from_unix(vmt_rtc *r, int64_t t)
{
    int64_t days = t >= 0 ? t / 86400 : (t - 86399) / 86400;
    int64_t sod = t - days * 86400;
    int64_t y;
    unsigned m, d;
    civil_from_days(days, &y, &m, &d);
    r->cmos[0] = enc(r, (unsigned)(sod % 60));
    r->cmos[2] = enc(r, (unsigned)(sod / 60 % 60));
    r->cmos[4] = enc_hour(r, (unsigned)(sod / 3600));
    r->cmos[6] = enc(r, (unsigned)(((days % 7) + 11) % 7 + 1)); /* 1970-01-01 was a Thursday (5) */
    r->cmos[7] = enc(r, d);
    r->cmos[8] = enc(r, m);
    uint64_t yy = (uint64_t)(y < 0 ? 0 : y);
    r->cmos[9] = enc(r, (unsigned)(yy % 100));
    r->cmos[0x32] = enc(r, (unsigned)(yy / 100 % 100));
}

static int64_t unix_from_fields(const vmt_rtc *r)
{
    int64_t y = (int64_t)(dec(r, r->cmos[0x32]) % 100) * 100 + dec(r, r->cmos[9]) % 100;
    unsigned m = dec(r, r->cmos[8]), d = dec(r, r->cmos[7]);
    if (m < 1 || m > 12)
        m = 1;
    if (d < 1 || d > 31)
        d = 1;
    return days_from_civil(y, m, d) * 86400 + dec_hour(r, r->cmos[4]) * 3600ll +
           (int64_t)(dec(r, r->cmos[2]) % 60) * 60 + dec(r, r->cmos[0]) % 60;
}

static void rebase(vmt_platform *p)
{
    vmt_rtc *r = &p->s.rtc;
    r->base_unix = unix_from_fields(r);
    r->base_ns = p->s.now_ns;
    r->flags_ns = p->s.now_ns;
}

static bool divider_on(const vmt_rtc *r) { return ((r->cmos[REG_A] >> 4) & 7) == 2; }

/* Periodic interrupt period in 32.768 kHz ticks (0: off). */
static uint64_t period_ticks(const vmt_rtc *r)
{
    unsigned rate = r->cmos[REG_A] & 0xf;
    if (!rate || !divider_on(r))
        return 0;
    return rate <= 2 ? 1ull << (rate + 6) : 1ull << (rate - 1);
}

static uint64_t pf_index(uint64_t ns, uint64_t period) { return plat_muldiv(ns, 32768, NS_PER_S) / period; }

static bool alarm_match(const vmt_rtc *r, int64_t t)
{
    int64_t sod = ((t % 86400) + 86400) % 86400;
    unsigned now[3] = {(unsigned)(sod % 60), (unsigned)(sod / 60 % 60), (unsigned)(sod / 3600)};
    uint8_t alarm[3] = {r->cmos[1], r->cmos[3], r->cmos[5]};
    for (unsigned i = 0; i < 3; i++) {
        if ((alarm[i] & 0xc0) == 0xc0)
            continue;
        unsigned a = i == 2 ? dec_hour(r, alarm[i]) : dec(r, alarm[i]);
        if (a != now[i])
            return false;
    }
    return true;
}

static void update_irq(vmt_platform *p)
{
    vmt_rtc *r = &p->s.rtc;
    uint8_t b = r->cmos[REG_B], c = r->cmos[REG_C] & 0x70;
    bool irqf = ((c & C_PF) && (b & B_PIE)) || ((c & C_AF) && (b & B_AIE)) || ((c & C_UF) && (b & B_UIE));
    r->cmos[REG_C] = (uint8_t)(c | (irqf ? C_IRQF : 0));
    vmt_plat_irq(p, PLAT_SRC_RTC, 8, irqf);
}

/* Bring PF/UF/AF up to now. */
static void update_flags(vmt_platform *p)
{
    vmt_rtc *r = &p->s.rtc;
    uint64_t now = p->s.now_ns, from = r->flags_ns;
    if (now <= from)
        return;
    uint64_t per = period_ticks(r);
    if (per && pf_index(now, per) > pf_index(from, per))
        r->cmos[REG_C] |= C_PF;
    if (!(r->cmos[REG_B] & B_SET) && divider_on(r) && from >= r->base_ns) {
        uint64_t s0 = (from - r->base_ns) / NS_PER_S, s1 = (now - r->base_ns) / NS_PER_S;
        if (s1 > s0) {
            r->cmos[REG_C] |= C_UF;
            uint64_t n = s1 - s0 > 86400 ? 86400 : s1 - s0;
            for (uint64_t k = 0; k < n; k++)
                if (alarm_match(r, r->base_unix + (int64_t)(s1 - k))) {
                    r->cmos[REG_C] |= C_AF;
                    break;
                }
        }
    }
    r->flags_ns = now;
}

uint64_t vmt_rtc_deadline(const vmt_platform *p)
{
    const vmt_rtc *r = &p->s.rtc;
    uint64_t next = UINT64_MAX, now = r->flags_ns;
    uint8_t b = r->cmos[REG_B];
    uint64_t per = period_ticks(r);
    if ((b & B_PIE) && per && !(r->cmos[REG_C] & C_PF)) {
        uint64_t k = pf_index(now, per) + 1;
        next = plat_muldiv_up(k * per, NS_PER_S, 32768);
    }
    if ((b & (B_UIE | B_AIE)) && !(b & B_SET) && divider_on(r) && now >= r->base_ns &&
        !((r->cmos[REG_C] & C_UF) && !(b & B_AIE))) {
        uint64_t s = (now - r->base_ns) / NS_PER_S + 1;
        next = plat_min(next, plat_sat_add(r->base_ns, s * NS_PER_S));
    }
    return next;
}

void vmt_rtc_advance(vmt_platform *p)
{
    update_flags(p);
    update_irq(p);
}

static uint8_t read_reg(vmt_platform *p, unsigned idx)
{
    vmt_rtc *r = &p->s.rtc;
    switch (idx) {
    case 0: case 2: case 4: case 6: case 7: case 8: case 9: case 0x32:
        if (!(r->cmos[REG_B] & B_SET))
            fields_from_unix(r, unix_now(p));
        return r->cmos[idx];
    case REG_A: {
        uint64_t in_second = (p->s.now_ns - (p->s.now_ns > r->base_ns ? r->base_ns : p->s.now_ns)) % NS_PER_S;
        bool uip = divider_on(r) && !(r->cmos[REG_B] & B_SET) && in_second >= NS_PER_S - UIP_NS;
        return (uint8_t)((r->cmos[REG_A] & 0x7f) | (uip ? 0x80 : 0));
    }
    case REG_C: {
        uint8_t v = r->cmos[REG_C];
        r->cmos[REG_C] = 0;
        update_irq(p);
        return v;
    }
    case REG_D: return 0x80;
    default: return r->cmos[idx];
    }
}

static void write_reg(vmt_platform *p, unsigned idx, uint8_t v)
{
    vmt_rtc *r = &p->s.rtc;
    switch (idx) {
    case 0: case 2: case 4: case 6: case 7: case 8: case 9: case 0x32:
        if (!(r->cmos[REG_B] & B_SET))
            fields_from_unix(r, unix_now(p));
        r->cmos[idx] = v;
        if (!(r->cmos[REG_B] & B_SET))
            rebase(p);
        break;
    case REG_A: r->cmos[REG_A] = v & 0x7f; break;
    case REG_B: {
        uint8_t old = r->cmos[REG_B];
        if ((v & B_SET) && !(old & B_SET))
            fields_from_unix(r, unix_now(p)); /* freeze the current time */
        r->cmos[REG_B] = v;
        if (!(v & B_SET) && (old & B_SET))
            rebase(p);
        break;
    }
    case REG_C: case REG_D: break; /* read-only */
    default: r->cmos[idx] = v; break;
    }
    update_irq(p);
}

vmt_status vmt_rtc_pio(vmt_platform *p, uint16_t port, bool write, uint32_t *val)
{
    vmt_rtc *r = &p->s.rtc;
    update_flags(p);
    switch (port) {
    case 0x70:
        if (write) {
            r->index = (uint8_t)*val & 0x7f;
            r->nmi_masked = ((uint8_t)*val >> 7) & 1;
        } else {
            *val = 0xff; /* write-only on PCs */
        }
        return VMT_OK;
    case 0x72:
        if (write)
            r->index_hi = (uint8_t)*val & 0x7f;
        else
            *val = r->index_hi;
        return VMT_OK;
    case 0x71:
        if (write)
            write_reg(p, r->index, (uint8_t)*val);
        else
            *val = read_reg(p, r->index);
        return VMT_OK;
    default: /* 0x73: high bank NVRAM */
        if (write)
            r->cmos[0x80 + r->index_hi] = (uint8_t)*val;
        else
            *val = r->cmos[0x80 + r->index_hi];
        return VMT_OK;
    }
}

void vmt_rtc_reset(vmt_platform *p)
{
    vmt_rtc *r = &p->s.rtc;
    *r = (vmt_rtc){0};
    r->cmos[REG_A] = 0x26; /* 32.768 kHz divider, 1024 Hz rate */
    r->cmos[REG_B] = B_24H;
    r->base_unix = p->cfg.rtc_epoch_s;
    r->base_ns = r->flags_ns = p->s.now_ns;
    fields_from_unix(r, r->base_unix);
}

void vmt_rtc_save(const vmt_rtc *d, plat_w *w)
{
    plat_w_u8(w, d->index);
    plat_w_u8(w, d->index_hi);
    plat_w_u8(w, d->nmi_masked);
    plat_w_bytes(w, d->cmos, sizeof d->cmos);
    plat_w_u64(w, (uint64_t)d->base_unix);
    plat_w_u64(w, d->base_ns);
    plat_w_u64(w, d->flags_ns);
}

vmt_status vmt_rtc_load(vmt_rtc *d, plat_r *r, vmt_errbuf *e)
{
    (void)e;
    d->index = plat_r_u8(r);
    d->index_hi = plat_r_u8(r);
    d->nmi_masked = plat_r_u8(r);
    plat_r_bytes(r, d->cmos, sizeof d->cmos);
    d->base_unix = (int64_t)plat_r_u64(r);
    d->base_ns = plat_r_u64(r);
    d->flags_ns = plat_r_u64(r);
    return VMT_OK;
}

vmt_status vmt_rtc_check(const vmt_rtc *d, uint64_t now_ns, vmt_errbuf *e)
{
    if (d->index > 0x7f || d->index_hi > 0x7f || d->nmi_masked > 1)
        return vmt_errbuf_set(e, VMT_E_INTERNAL, "rtc: index 0x%x / 0x%x or NMI mask %u out of range", d->index,
                              d->index_hi, d->nmi_masked);
    if ((d->cmos[REG_C] & 0x0f) || (d->cmos[REG_A] & 0x80))
        return vmt_errbuf_set(e, VMT_E_INTERNAL, "rtc: register A 0x%x or C 0x%x holds bits the clock computes",
                              d->cmos[REG_A], d->cmos[REG_C]);
    bool irqf = (d->cmos[REG_C] & C_IRQF) != 0;
    uint8_t b = d->cmos[REG_B], c = d->cmos[REG_C];
    bool want = ((c & C_PF) && (b & B_PIE)) || ((c & C_AF) && (b & B_AIE)) || ((c & C_UF) && (b & B_UIE));
    if (irqf != want)
        return vmt_errbuf_set(e, VMT_E_INTERNAL, "rtc: IRQF %d disagrees with flags 0x%x and enables 0x%x", irqf, c, b);
    if (d->base_ns > now_ns || d->flags_ns > now_ns)
        return vmt_errbuf_set(e, VMT_E_INTERNAL, "rtc: base %llu or flags %llu ns after now %llu",
                              (unsigned long long)d->base_ns, (unsigned long long)d->flags_ns,
                              (unsigned long long)now_ns);
    if (d->base_unix < -62167219200ll || d->base_unix > 253402300799ll)
        return vmt_errbuf_set(e, VMT_E_INTERNAL, "rtc: base time %lld outside years 0-9999", (long long)d->base_unix);
    return VMT_OK;
}
