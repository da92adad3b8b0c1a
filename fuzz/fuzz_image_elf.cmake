vmt_add_fuzzer(fuzz_image_elf SOURCES ${CMAKE_SOURCE_DIR}/fuzz/fuzz_image_elf.c MODULES core)
