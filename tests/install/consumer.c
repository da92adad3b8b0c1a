/* A program outside the tree: only the installed headers and library. */
#include <stdio.h>
#include <string.h>

#include <vmtrap/vmtrap.h>

int main(void)
{
    if (strcmp(vmt_strerror(VMT_E_NOTSUP), "not supported by the driver") != 0) {
        fprintf(stderr, "unexpected strerror text\n");
        return 1;
    }
    char a[4];
    if (strcmp(vmt_access_str(VMT_ACCESS_RX, a), "r-x") != 0)
        return 1;
    vmt_paging_config cfg = { .levels = 4 };
    vmt_walk w;
    vmt_phys_reader none = { 0 };
    (void)none;
    (void)cfg;
    (void)w;
    printf("libvmtrap linked: %s\n", vmt_strerror(VMT_OK));
    return 0;
}
