vmt_add_fuzzer(fuzz_ucall SOURCES ${CMAKE_SOURCE_DIR}/fuzz/fuzz_ucall.c MODULES core)
