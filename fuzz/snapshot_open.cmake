vmt_add_fuzzer(snapshot_open SOURCES ${CMAKE_SOURCE_DIR}/fuzz/snapshot_open.c MODULES core snapshot)
