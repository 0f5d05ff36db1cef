//! What the hypervisor provides to a back end: grant access and event channels.
