//! The back end's grant access on the simulated host: copies and maps of guests' pages,
//! each access checked and pinned through the guest's grant table.

use super::grant_table::GrantTable;
use super::pin_records::PinRecords;
use super::run_dir::RunDir;
use super::shm::SharedFile;
use crate::platform::{
    gntst, CopyOp, DomId, GrantAccess, GrantError, GrantMapping, GrantRef, LocalBuf, PAGE_SIZE,
};
use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::Arc;

/// Most grants one map may name, as gntdev's default limit.
const MAX_MAP_COUNT: usize = 65536;

/// A granting domain as an accessor sees it: its memory, its grant table, and this
/// accessor's records of the pins it holds there.
#[derive(Debug)]
struct Granter {
    domid: DomId,
    memory: SharedFile,
    /// The memory file opened read-only: read-only grants are mapped from it, so that
    /// `mprotect` cannot make them writable (Xen maps them read-only in the page tables).
    memory_ro: File,
    table: GrantTable,
    records: PinRecords,
}

impl Granter {
    fn pages(&self) -> usize {
        self.memory.len() / PAGE_SIZE
    }

    /// Pins `gref` for `caller`, recorded in a slot of this accessor's pin records taken
    /// first (so that the pin is found should this process die with it); returns the frame
    /// and the slot.
    fn pin(&self, gref: GrantRef, caller: DomId, write: bool) -> Result<(u32, u32), GrantError> {
        let (slot, record) = self.records.take(gref.0).ok_or(GrantError::Refused {
            domid: self.domid,
            gref,
            status: gntst::NO_DEVICE_SPACE,
        })?;
        match self.table.pin(gref, caller, write, self.pages(), &record) {
            Ok(frame) => Ok((frame, slot)),
            Err(err) => {
                self.records.give_back(slot);
                Err(err)
            }
        }
    }

    /// Releases the pin recorded in `slot`. A pin whose lock stays stuck is left recorded,
    /// for the guest's reaping to release once this process is gone.
    fn unpin(&self, slot: u32) {
        let Some(record) = self.records.slot(slot) else {
            return;
        };
        if self.table.release(&record).is_ok() {
            self.records.give_back(slot);
        }
    }
}

/// Grant access for domain `caller` (normally dom0) on a simulated host.
#[derive(Debug)]
pub struct SimGrants {
    run: RunDir,
    caller: DomId,
    domains: HashMap<DomId, Arc<Granter>>,
}

impl SimGrants {
    /// Grant access acting as domain `caller`.
    pub fn new(run: &RunDir, caller: DomId) -> Self {
        SimGrants {
            run: run.clone(),
            caller,
            domains: HashMap::new(),
        }
    }

    /// The granting domain, mapped once and forgotten when the toolstack destroys it.
    fn domain(&mut self, domid: DomId) -> Result<Arc<Granter>, GrantError> {
        if let Some(granter) = self.domains.get(&domid) {
            if !granter.table.is_dying() {
                return Ok(Arc::clone(granter));
            }
        }
        // Each domain opened is a new one (a guest comes, or one came back): the time to let
        // go of the files of every destroyed one, which would otherwise stay open and mapped
        // for as long as this handle lives.
        self.evict_destroyed();
        let bad_domain = GrantError::BadDomain { domid };
        let granter = Arc::new(Granter {
            domid,
            memory: SharedFile::open(&self.run.memory(domid)).map_err(|_| bad_domain)?,
            memory_ro: File::open(self.run.memory(domid)).map_err(|_| bad_domain)?,
            table: GrantTable::open(&self.run, domid).map_err(|_| bad_domain)?,
            records: PinRecords::create(&self.run, domid).map_err(|_| bad_domain)?,
        });
        if granter.table.is_dying() {
            return Err(bad_domain);
        }
        self.domains.insert(domid, Arc::clone(&granter));
        Ok(granter)
    }

    /// Forgets destroyed domains; their pages stay mapped only as long as mappings of them.
    fn evict_destroyed(&mut self) {
        self.domains.retain(|_, granter| !granter.table.is_dying());
    }

    fn copy_one(&mut self, op: &mut CopyOp<'_>) -> Result<(), GrantError> {
        op.check_bounds()?;
        if op.is_empty() {
            // gntdev answers an empty segment itself, without asking Xen: nothing is checked
            // nor pinned.
            return Ok(());
        }
        let guest = op.guest();
        let granter = self.domain(guest.domid)?;
        let write = op.writes_guest();
        let (frame, slot) = granter.pin(guest.gref, self.caller, write)?;
        // In range: frame < pages (checked by pin) and offset + len <= PAGE_SIZE.
        let at = frame as usize * PAGE_SIZE + usize::from(guest.offset);
        let copied = match op.local() {
            LocalBuf::FromGuest(buf) => granter.memory.read(at, buf),
            LocalBuf::ToGuest(buf) => granter.memory.write(at, buf),
        };
        granter.unpin(slot);
        copied.ok_or(GrantError::BadFrame {
            domid: guest.domid,
            gref: guest.gref,
            frame,
        })
    }
}

impl GrantAccess for SimGrants {
    type Mapping = SimMapping;

    fn copy(&mut self, ops: &mut [CopyOp<'_>]) -> usize {
        let mut failed = 0;
        for op in ops.iter_mut() {
            let result = self.copy_one(op);
            failed += usize::from(result.is_err());
            op.set_status(result);
        }
        failed
    }

    fn forget(&mut self, domid: DomId) {
        // Mappings still alive hold their own reference to the domain's files.
        self.domains.remove(&domid);
    }

    fn map(
        &mut self,
        domid: DomId,
        refs: &[GrantRef],
        writable: bool,
    ) -> Result<SimMapping, GrantError> {
        if refs.is_empty() || refs.len() > MAX_MAP_COUNT {
            return Err(GrantError::BadMapCount { count: refs.len() });
        }
        // Maps are rarer than copies (rings at connect, a persistent grant once per page):
        // also the time to forget domains destroyed since this handle last opened one.
        self.evict_destroyed();
        let granter = self.domain(domid)?;
        let mut frames = Vec::with_capacity(refs.len());
        let mut slots = Vec::with_capacity(refs.len());
        for &gref in refs {
            match granter.pin(gref, self.caller, writable) {
                Ok((frame, slot)) => {
                    frames.push(frame);
                    slots.push(slot);
                }
                Err(err) => {
                    for slot in slots {
                        granter.unpin(slot);
                    }
                    return Err(err);
                }
            }
        }
        let len = refs.len() * PAGE_SIZE;
        // SAFETY: reserves a new anonymous range at an address the kernel picks; no existing
        // memory is affected.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        let reserved = NonNull::new(base.cast::<u8>()).filter(|_| base != libc::MAP_FAILED);
        let Some(ptr) = reserved else {
            let err = GrantError::last_os("mmap (reserve for granted pages)");
            for slot in slots {
                granter.unpin(slot);
            }
            return Err(err);
        };
        // From here the mapping owns the pins and the range: dropping it undoes both.
        let mapping = SimMapping {
            granter,
            slots,
            ptr,
            writable,
        };
        let (prot, fd) = if writable {
            (
                libc::PROT_READ | libc::PROT_WRITE,
                mapping.granter.memory.file().as_raw_fd(),
            )
        } else {
            (libc::PROT_READ, mapping.granter.memory_ro.as_raw_fd())
        };
        for (i, &frame) in frames.iter().enumerate() {
            // SAFETY: replaces page `i` of the range reserved above, which `mapping` owns and
            // nothing references yet, with the granted frame of the guest's memory file.
            let page = unsafe {
                libc::mmap(
                    mapping.ptr.as_ptr().add(i * PAGE_SIZE).cast(),
                    PAGE_SIZE,
                    prot,
                    libc::MAP_SHARED | libc::MAP_FIXED,
                    fd,
                    (frame as usize * PAGE_SIZE) as libc::off_t,
                )
            };
            if page == libc::MAP_FAILED {
                return Err(GrantError::last_os("mmap of a granted page"));
            }
        }
        Ok(mapping)
    }
}

/// Guest pages mapped by [`SimGrants::map`]; unmapped and unpinned on drop.
#[derive(Debug)]
pub struct SimMapping {
    granter: Arc<Granter>,
    /// The pin record of each page, in order (see pin_records).
    slots: Vec<u32>,
    ptr: NonNull<u8>,
    writable: bool,
}

// SAFETY: the range is shared memory owned by this value, not tied to a thread; the granter
// is shared through an Arc and only used through atomics.
unsafe impl Send for SimMapping {}

impl GrantMapping for SimMapping {
    fn as_ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    fn pages(&self) -> usize {
        self.slots.len()
    }

    fn is_writable(&self) -> bool {
        self.writable
    }
}

impl Drop for SimMapping {
    fn drop(&mut self) {
        // SAFETY: exactly the range reserved in `map`; no borrow of it outlives `self`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.slots.len() * PAGE_SIZE) };
        for &slot in &self.slots {
            self.granter.unpin(slot);
        }
    }
}
