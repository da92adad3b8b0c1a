/* placeholder replaced below */
#include "snapshot/snapshot_internal.h"
vmt_status snap_load_vmts(vmt_snapshot *s, char *why, size_t why_len)
{
    (void)s;
    vmt_why(why, why_len, "vmts: not yet");
    return VMT_E_FORMAT;
}
vmt_status snap_vmts_fill(vmt_snapshot *s, const snap_block *b, vmt_pa gpa, uint64_t len)
{
    (void)s; (void)b; (void)gpa; (void)len;
    return VMT_E_INTERNAL;
}
