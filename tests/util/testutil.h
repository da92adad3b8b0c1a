/*
 * tests/util/testutil.h — helpers shared by tests. No test logic here.
 */
#ifndef VMT_TESTUTIL_H
#define VMT_TESTUTIL_H

#include <stddef.h>

/* Exit code that ctest reads as "skipped". */
#define VMT_TEST_SKIP 77

/* 1 when /dev/kvm can be opened read-write; else 0 and the reason. */
int vmt_test_kvm_available(char *why, size_t why_len);

/* Unless KVM is available: print "SKIP: <reason>" and exit the test
 * program with VMT_TEST_SKIP (for the start of a KVM test's main). */
void vmt_test_require_kvm(void);

#endif
