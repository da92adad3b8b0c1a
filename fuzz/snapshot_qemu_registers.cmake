vmt_add_fuzzer(snapshot_qemu_registers SOURCES ${CMAKE_SOURCE_DIR}/fuzz/snapshot_qemu_registers.c MODULES core snapshot)
