vmt_add_fuzzer(platform_state_load SOURCES ${CMAKE_SOURCE_DIR}/fuzz/platform_state_load.c MODULES platform core)
