/*
 * tests/hmap/test_hmap.c — the hash map against a reference model: random
 * put/get/del sequences compared with a plain array, the invariant checker
 * after every operation, and growth/shrink keeping every entry reachable;
 * the compact layout: memory close to the entries' own bytes, and deletes
 * that move the last entry (swap-remove) keep every other entry's value.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/hmap.h"

static void check_ok(const vmt_hmap *m)
{
    char why[256] = "";
    vmt_status st = vmt_hmap_check(m, why, sizeof why);
    if (st != VMT_OK)
        fail_msg("invariant: %s", why);
}

typedef struct {
    uint64_t a, b;
} key2;

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void test_against_model(void **state)
{
    (void)state;
    enum { RANGE = 2000, OPS = 40000 };
    static uint64_t model[RANGE];
    static uint8_t present[RANGE];
    memset(present, 0, sizeof present);
    vmt_hmap m;
    vmt_hmap_init(&m, sizeof(key2), sizeof(uint64_t));
    uint64_t seed = 88172645463325252ULL;
    for (int op = 0; op < OPS; op++) {
        uint64_t r = rng_next(&seed);
        unsigned k = (unsigned)(r % RANGE);
        key2 key = { k * 0x1000ULL, k & 7 };
        switch ((r >> 32) % 3) {
        case 0: { /* put */
            uint64_t v = r;
            void *slot;
            bool existed;
            assert_int_equal(vmt_hmap_put(&m, &key, &v, &slot, &existed), VMT_OK);
            assert_int_equal(existed, present[k]);
            if (!existed) {
                model[k] = v;
                present[k] = 1;
            }
            assert_memory_equal(slot, &model[k], sizeof(uint64_t));
            break;
        }
        case 1: { /* del */
            uint64_t old = 0;
            int had = vmt_hmap_del(&m, &key, &old);
            assert_int_equal(had, present[k]);
            if (had)
                assert_true(old == model[k]);
            present[k] = 0;
            break;
        }
        default: { /* get */
            uint64_t *v = vmt_hmap_get(&m, &key);
            if (present[k]) {
                assert_non_null(v);
                assert_true(*v == model[k]);
            } else {
                assert_null(v);
            }
        }
        }
        if (op % 97 == 0)
            check_ok(&m);
    }
    size_t n = 0;
    for (unsigned k = 0; k < RANGE; k++)
        n += present[k];
    assert_int_equal(vmt_hmap_count(&m), n);
    /* Iteration visits each entry exactly once. */
    size_t it = 0, seen = 0;
    void *kp, *vp;
    while (vmt_hmap_next(&m, &it, &kp, &vp)) {
        key2 kk;
        memcpy(&kk, kp, sizeof kk);
        unsigned k = (unsigned)(kk.a / 0x1000);
        assert_true(present[k]);
        seen++;
    }
    assert_int_equal(seen, n);
    check_ok(&m);
    vmt_hmap_free(&m);
}

static void test_grow_and_shrink(void **state)
{
    (void)state;
    vmt_hmap m;
    vmt_hmap_init(&m, sizeof(uint64_t), 0); /* a set */
    for (uint64_t i = 0; i < 100000; i++) {
        bool existed = true;
        assert_int_equal(vmt_hmap_put(&m, &i, NULL, NULL, &existed), VMT_OK);
        assert_false(existed);
    }
    check_ok(&m);
    size_t big = vmt_hmap_memory(&m);
    for (uint64_t i = 0; i < 99990; i++)
        assert_int_equal(vmt_hmap_del(&m, &i, NULL), 1);
    check_ok(&m);
    assert_true(vmt_hmap_memory(&m) < big / 100);
    for (uint64_t i = 99990; i < 100000; i++)
        assert_non_null(vmt_hmap_get(&m, &i));
    for (uint64_t i = 99990; i < 100000; i++)
        assert_int_equal(vmt_hmap_del(&m, &i, NULL), 1);
    assert_int_equal(vmt_hmap_count(&m), 0);
    assert_int_equal(vmt_hmap_memory(&m), 0);
    check_ok(&m);
    vmt_hmap_free(&m);
}

typedef struct rec40 {
    uint64_t key, a, b, c, d;
} rec40;

/* Memory is entries (grown by a quarter) plus 4-byte index words, at every
 * size: no empty slot costs a whole entry. */
static void test_memory_is_compact(void **state)
{
    (void)state;
    vmt_hmap m;
    vmt_hmap_init(&m, sizeof(uint64_t), 32);
    for (uint64_t i = 1; i <= 200000; i++) {
        rec40 r = { i, i, i * 3, i * 5, i * 7 };
        assert_int_equal(vmt_hmap_put(&m, &r.key, &r.a, NULL, NULL), VMT_OK);
        if (i % 25000 == 0 || i == 10 || i == 1000) {
            size_t mem = vmt_hmap_memory(&m);
            /* entries <= 1.25 * i + 8, index words <= 8/3 * i + 16 */
            size_t bound = (size_t)(40 * (i + i / 4 + 8) + 4 * (i * 8 / 3 + 16));
            assert_true(mem <= bound);
            assert_true(mem >= 40 * i + 4 * (i * 4 / 3));
        }
    }
    check_ok(&m);
    vmt_hmap_free(&m);
}

/* Deleting from the middle moves the last entry: every remaining key still
 * finds its own value, iteration visits each once, and values written
 * through a pointer before the delete survive the move. */
static void test_swap_remove_keeps_values(void **state)
{
    (void)state;
    enum { N = 5000 };
    vmt_hmap m;
    vmt_hmap_init(&m, sizeof(uint64_t), sizeof(uint64_t));
    for (uint64_t i = 0; i < N; i++) {
        uint64_t *v;
        bool existed;
        assert_int_equal(vmt_hmap_put(&m, &i, NULL, (void **)&v, &existed), VMT_OK);
        assert_false(existed);
        assert_true(*v == 0); /* NULL value: zero-filled */
        *v = i * 11 + 1;      /* written in place */
    }
    for (uint64_t i = 0; i < N; i += 3) {
        uint64_t old = 0;
        assert_int_equal(vmt_hmap_del(&m, &i, &old), 1);
        assert_true(old == i * 11 + 1);
        assert_int_equal(vmt_hmap_del(&m, &i, NULL), 0);
    }
    check_ok(&m);
    for (uint64_t i = 0; i < N; i++) {
        uint64_t *v = vmt_hmap_get(&m, &i);
        if (i % 3 == 0) {
            assert_null(v);
        } else {
            assert_non_null(v);
            assert_true(*v == i * 11 + 1);
        }
    }
    size_t it = 0, seen = 0;
    void *kp, *vp;
    static uint8_t visited[N];
    memset(visited, 0, sizeof visited);
    while (vmt_hmap_next(&m, &it, &kp, &vp)) {
        uint64_t k, v;
        memcpy(&k, kp, 8);
        memcpy(&v, vp, 8);
        assert_true(k < N && k % 3 != 0 && !visited[k]);
        assert_true(v == k * 11 + 1);
        visited[k] = 1;
        seen++;
    }
    assert_int_equal(seen, vmt_hmap_count(&m));
    vmt_hmap_free(&m);
}

/* A checker that cannot fail is worthless: corrupt a word and an entry. */
static void test_check_catches_corruption(void **state)
{
    (void)state;
    vmt_hmap m;
    vmt_hmap_init(&m, sizeof(uint64_t), sizeof(uint64_t));
    for (uint64_t i = 0; i < 100; i++)
        assert_int_equal(vmt_hmap_put(&m, &i, &i, NULL, NULL), VMT_OK);
    check_ok(&m);
    char why[256];
    uint64_t *k0 = (uint64_t *)m.entries;
    uint64_t saved = *k0;
    *k0 = 12345; /* the key no longer matches its index word */
    assert_int_equal(vmt_hmap_check(&m, why, sizeof why), VMT_E_INTERNAL);
    *k0 = saved;
    check_ok(&m);
    size_t i = 0;
    while (!m.index[i])
        i++;
    uint32_t w = m.index[i];
    m.index[i] = 0; /* a lost word */
    assert_int_equal(vmt_hmap_check(&m, why, sizeof why), VMT_E_INTERNAL);
    m.index[i] = w;
    check_ok(&m);
    vmt_hmap_free(&m);
}

/* A secondary key inside the value: both keys find the same record through
 * puts, swap-removing deletes and rehashes; a repeated key2 is refused with
 * the map unchanged; changing key2 in place is caught by the checker. */
typedef struct frame_rec {
    uint64_t shadow; /* key2 */
    uint64_t data;
} frame_rec;

static void test_secondary_key(void **state)
{
    (void)state;
    enum { N = 3000 };
    vmt_hmap m;
    vmt_hmap_init2(&m, sizeof(uint64_t), sizeof(frame_rec), offsetof(frame_rec, shadow), sizeof(uint64_t));
    for (uint64_t k = 1; k <= N; k++) {
        frame_rec r = { 0x100000 + k * 7, k * 13 };
        assert_int_equal(vmt_hmap_put(&m, &k, &r, NULL, NULL), VMT_OK);
    }
    check_ok(&m);
    /* a new key with a key2 that is taken: refused, nothing changes */
    size_t mem = vmt_hmap_memory(&m);
    uint64_t nk = N + 1;
    frame_rec dup = { 0x100000 + 5 * 7, 1 };
    assert_int_equal(vmt_hmap_put(&m, &nk, &dup, NULL, NULL), VMT_E_CONFLICT);
    assert_int_equal(vmt_hmap_count(&m), N);
    assert_null(vmt_hmap_get(&m, &nk));
    assert_int_equal(vmt_hmap_memory(&m), mem);
    check_ok(&m);
    for (uint64_t k = 1; k <= N; k += 2)
        assert_int_equal(vmt_hmap_del(&m, &k, NULL), 1);
    check_ok(&m);
    for (uint64_t k = 1; k <= N; k++) {
        uint64_t sh = 0x100000 + k * 7;
        void *kp = NULL;
        frame_rec *by2 = vmt_hmap_get2(&m, &sh, &kp);
        frame_rec *by1 = vmt_hmap_get(&m, &k);
        if (k % 2) {
            assert_null(by2);
            assert_null(by1);
        } else {
            assert_non_null(by2);
            assert_ptr_equal(by1, by2);
            assert_memory_equal(kp, &k, sizeof k);
            assert_true(by2->data == k * 13);
        }
    }
    /* a freed key2 can be used again */
    uint64_t k1 = 1;
    frame_rec again = { 0x100000 + 1 * 7, 99 };
    assert_int_equal(vmt_hmap_put(&m, &k1, &again, NULL, NULL), VMT_OK);
    check_ok(&m);
    /* key2 changed in place: the checker says so */
    frame_rec *p = vmt_hmap_get(&m, &k1);
    p->shadow = 0x42;
    char why[256];
    assert_int_equal(vmt_hmap_check(&m, why, sizeof why), VMT_E_INTERNAL);
    p->shadow = 0x100000 + 1 * 7;
    check_ok(&m);
    /* a plain map has no secondary key */
    vmt_hmap plain;
    vmt_hmap_init(&plain, sizeof(uint64_t), sizeof(uint64_t));
    assert_int_equal(vmt_hmap_put(&plain, &k1, &k1, NULL, NULL), VMT_OK);
    assert_null(vmt_hmap_get2(&plain, &k1, NULL));
    vmt_hmap_free(&plain);
    vmt_hmap_free(&m);
}

/* Random puts and deletes on a map with a secondary key, against a model,
 * in waves that fill it and empty it to a few entries: tombstones, reused
 * holes, compaction and index rebuilds all happen, and both keys keep
 * finding the same record (checker after every wave and often between). */
static void test_secondary_key_model(void **state)
{
    (void)state;
    enum { RANGE = 3000 };
    static uint64_t val[RANGE];
    static uint8_t present[RANGE];
    memset(present, 0, sizeof present);
    vmt_hmap m;
    vmt_hmap_init2(&m, sizeof(uint64_t), sizeof(frame_rec), offsetof(frame_rec, shadow), sizeof(uint64_t));
    uint64_t seed = 0x2545F4914F6CDD1DULL;
    size_t n = 0;
    for (int wave = 0; wave < 6; wave++) {
        bool filling = wave % 2 == 0;
        for (int op = 0; op < 20000; op++) {
            uint64_t r = rng_next(&seed);
            uint64_t k = r % RANGE;
            bool put = filling ? (r >> 40) % 4 != 0 : (r >> 40) % 8 == 0;
            if (put) {
                frame_rec rec = { 0x900000 + k, r };
                bool existed;
                frame_rec *slot;
                assert_int_equal(vmt_hmap_put(&m, &k, &rec, (void **)&slot, &existed), VMT_OK);
                assert_int_equal(existed, present[k]);
                if (!existed) {
                    present[k] = 1;
                    val[k] = r;
                    n++;
                }
                assert_true(slot->data == val[k]);
            } else {
                frame_rec old;
                int had = vmt_hmap_del(&m, &k, &old);
                assert_int_equal(had, present[k]);
                if (had) {
                    assert_true(old.data == val[k] && old.shadow == 0x900000 + k);
                    present[k] = 0;
                    n--;
                }
            }
            if (op % 1999 == 0)
                check_ok(&m);
        }
        check_ok(&m);
        assert_int_equal(vmt_hmap_count(&m), n);
        for (uint64_t k = 0; k < RANGE; k++) {
            uint64_t sh = 0x900000 + k;
            void *kp = NULL;
            frame_rec *by2 = vmt_hmap_get2(&m, &sh, &kp);
            frame_rec *by1 = vmt_hmap_get(&m, &k);
            assert_ptr_equal(by1, by2);
            if (present[k]) {
                assert_non_null(by1);
                assert_true(by1->data == val[k]);
                assert_memory_equal(kp, &k, sizeof k);
            } else {
                assert_null(by1);
            }
        }
        if (!filling)
            assert_true(n < RANGE / 4); /* emptied far enough to compact */
    }
    vmt_hmap_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_against_model),
        cmocka_unit_test(test_grow_and_shrink),
        cmocka_unit_test(test_memory_is_compact),
        cmocka_unit_test(test_swap_remove_keeps_values),
        cmocka_unit_test(test_check_catches_corruption),
        cmocka_unit_test(test_secondary_key),
        cmocka_unit_test(test_secondary_key_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
