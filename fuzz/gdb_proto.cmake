# The qemu driver's GDB remote protocol parser (framing, stop replies, target description).
if(TARGET vmt_drv_qemu)
  vmt_add_fuzzer(gdb_proto SOURCES ${CMAKE_SOURCE_DIR}/fuzz/gdb_proto.c MODULES core drv_qemu)
endif()
