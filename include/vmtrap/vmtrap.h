/*
 * vmtrap/vmtrap.h — everything in one include.
 */
#ifndef VMTRAP_VMTRAP_H
#define VMTRAP_VMTRAP_H

#include "vmtrap/access.h"
#include "vmtrap/addr.h"
#include "vmtrap/bpm.h"
#include "vmtrap/driver.h"
#include "vmtrap/event.h"
#include "vmtrap/image.h"
#include "vmtrap/machine.h"
#include "vmtrap/paging.h"
#include "vmtrap/ptm.h"
#include "vmtrap/regs.h"
#include "vmtrap/session.h"
#include "vmtrap/status.h"

#endif
