vmt_add_fuzzer(platform_access SOURCES ${CMAKE_SOURCE_DIR}/fuzz/platform_access.c MODULES platform core)
