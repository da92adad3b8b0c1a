vmt_add_fuzzer(fuzz_image_raw SOURCES ${CMAKE_SOURCE_DIR}/fuzz/fuzz_image_raw.c MODULES core)
