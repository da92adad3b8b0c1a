vmt_add_fuzzer(fuzz_paging SOURCES ${CMAKE_SOURCE_DIR}/fuzz/fuzz_paging.c MODULES core)
