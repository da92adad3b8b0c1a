vmt_add_fuzzer(snapshot_vmts SOURCES ${CMAKE_SOURCE_DIR}/fuzz/snapshot_vmts.c MODULES core snapshot LIBS PkgConfig::ZLIB)
