vmt_add_fuzzer(os_kallsyms SOURCES ${CMAKE_SOURCE_DIR}/fuzz/os_kallsyms.c MODULES core os)
