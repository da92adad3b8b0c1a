vmt_add_fuzzer(os_btf SOURCES ${CMAKE_SOURCE_DIR}/fuzz/os_btf.c MODULES core os)
