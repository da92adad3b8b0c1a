vmt_add_fuzzer(fuzz_ptm SOURCES ${CMAKE_SOURCE_DIR}/fuzz/fuzz_ptm.c MODULES core drv_mem ptm)
