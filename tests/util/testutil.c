/*
 * tests/util/testutil.c — helpers shared by tests (see testutil.h).
 */
#include "util/testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int vmt_test_kvm_available(char *why, size_t why_len)
{
    if (access("/dev/kvm", R_OK | W_OK) != 0) {
        snprintf(why, why_len, "/dev/kvm is missing or not accessible");
        return 0;
    }
    return 1;
}

void vmt_test_require_kvm(void)
{
    char why[128];
    if (!vmt_test_kvm_available(why, sizeof why)) {
        printf("SKIP: %s\n", why);
        exit(VMT_TEST_SKIP);
    }
}
