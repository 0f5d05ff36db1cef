//! blkif: the Xen PV block ring ABI, shared-ring back and front ends, and a mock ring.
#![deny(missing_docs)]
