//! Grant checks of the simulated host, as Xen makes them on every access.

#![cfg(test)]

mod platform_sim_common;

use platform_sim_common::TempRun;
use tokenback::platform::sim::{EndAccessError, GuestDomain, SimGrants};
use tokenback::platform::{
    CopyOp, DomId, GrantAccess, GrantError, GrantMapping, GrantRef, GuestRange, PAGE_SIZE,
};

const DOM0: DomId = DomId(0);

fn at(guest: &GuestDomain, gref: u32, offset: u16) -> GuestRange {
    GuestRange {
        domid: guest.domid(),
        gref: GrantRef(gref),
        offset,
    }
}

/// A guest with: ref 8 writable (frame 3), ref 9 read-only (frame 4), ref 10 granted to
/// another domain, ref 11 granted then revoked, ref 12 naming a frame it does not have.
fn guest_with_grants(run: &TempRun) -> GuestDomain {
    let guest = GuestDomain::create(run.dir(), 16, 1).unwrap();
    guest.write(3, 0, b"page three").unwrap();
    guest.write(4, 100, b"page four").unwrap();
    guest.grant(GrantRef(8), DOM0, 3, false).unwrap();
    guest.grant(GrantRef(9), DOM0, 4, true).unwrap();
    guest.grant(GrantRef(10), DomId(7), 5, false).unwrap();
    guest.grant(GrantRef(11), DOM0, 6, false).unwrap();
    guest.end_access(GrantRef(11)).unwrap();
    guest.grant(GrantRef(12), DOM0, 999, false).unwrap();
    guest
}

#[test]
fn each_bad_segment_fails_alone_with_its_reason() {
    let run = TempRun::new();
    let guest = guest_with_grants(&run);
    let d = guest.domid();
    let mut grants = SimGrants::new(run.dir(), DOM0);

    let (mut a, mut b, mut c, mut e, mut f, mut g) =
        ([0u8; 10], [0u8; 9], [0u8; 4], [0u8; 4], [0u8; 4], [0u8; 4]);
    let mut ops = vec![
        CopyOp::from_guest(at(&guest, 8, 0), &mut a),
        CopyOp::to_guest(b"no", at(&guest, 9, 0)),
        CopyOp::from_guest(at(&guest, 10, 0), &mut c),
        CopyOp::from_guest(at(&guest, 11, 0), &mut e),
        CopyOp::from_guest(at(&guest, 4096, 0), &mut f),
        CopyOp::from_guest(at(&guest, 12, 0), &mut g),
        CopyOp::to_guest(b"written", at(&guest, 8, 2000)),
        CopyOp::from_guest(at(&guest, 9, 100), &mut b),
    ];
    let failed = grants.copy(&mut ops);

    let (gr, ro) = (GrantRef(8), GrantRef(9));
    let statuses: Vec<_> = ops.iter().map(|op| op.status()).collect();
    assert_eq!(statuses[0], Ok(()));
    assert_eq!(
        statuses[1],
        Err(GrantError::ReadOnly { domid: d, gref: ro })
    );
    assert_eq!(
        statuses[2],
        Err(GrantError::WrongDomain {
            domid: d,
            gref: GrantRef(10),
            granted_to: DomId(7),
            caller: DOM0
        })
    );
    assert_eq!(
        statuses[3],
        Err(GrantError::NotGranted {
            domid: d,
            gref: GrantRef(11)
        })
    );
    assert_eq!(
        statuses[4],
        Err(GrantError::BadRef {
            domid: d,
            gref: GrantRef(4096)
        })
    );
    assert_eq!(
        statuses[5],
        Err(GrantError::BadFrame {
            domid: d,
            gref: GrantRef(12),
            frame: 999
        })
    );
    assert_eq!(statuses[6], Ok(()));
    assert_eq!(statuses[7], Ok(()));
    assert_eq!(failed, 5);
    drop(ops);

    assert_eq!(&a, b"page three");
    assert_eq!(&b, b"page four");
    let mut seen = [0u8; 7];
    guest.read(3, 2000, &mut seen).unwrap();
    assert_eq!(&seen, b"written");
    let mut untouched = [0u8; 2];
    guest.read(4, 0, &mut untouched).unwrap();
    assert_eq!(untouched, [0, 0], "the read-only page was not written");
    // Copies leave no pin behind: the guest can end access to both good grants.
    assert_eq!(guest.end_access(gr), Ok(()));
    assert_eq!(guest.end_access(ro), Ok(()));
}

#[test]
fn a_segment_leaving_its_page_and_an_unknown_domain_are_refused() {
    let run = TempRun::new();
    let guest = guest_with_grants(&run);
    let mut grants = SimGrants::new(run.dir(), DOM0);
    let mut buf = [0u8; 16];
    let mut other = [0u8; 16];
    let missing = GuestRange {
        domid: DomId(4321),
        gref: GrantRef(8),
        offset: 0,
    };
    let mut ops = [
        CopyOp::from_guest(at(&guest, 8, 4090), &mut buf),
        CopyOp::from_guest(missing, &mut other),
    ];
    assert_eq!(grants.copy(&mut ops), 2);
    assert!(matches!(
        ops[0].status(),
        Err(GrantError::BadCopyArg { offset: 4090, .. })
    ));
    assert_eq!(
        ops[1].status(),
        Err(GrantError::BadDomain { domid: DomId(4321) })
    );
}

#[test]
fn the_guest_cannot_end_access_while_the_back_end_maps_the_page() {
    let run = TempRun::new();
    let guest = guest_with_grants(&run);
    let mut grants = SimGrants::new(run.dir(), DOM0);

    let mapping = grants.map(guest.domid(), &[GrantRef(8)], true).unwrap();
    assert_eq!((mapping.pages(), mapping.is_writable()), (1, true));
    assert_eq!(
        guest.end_access(GrantRef(8)),
        Err(EndAccessError::InUse { gref: 8 })
    );
    let page = mapping.as_ptr().as_ptr();
    // SAFETY: the mapping is one writable page; offsets 0..10 and 50 are inside it.
    let first = unsafe { std::slice::from_raw_parts(page, 10) }.to_vec();
    assert_eq!(first, b"page three");
    // SAFETY: as above.
    unsafe { page.add(50).write(0xAB) };
    let mut seen = [0u8; 1];
    guest.read(3, 50, &mut seen).unwrap();
    assert_eq!(seen, [0xAB], "the mapping is the guest's own page");

    // A copy while mapped pins and unpins without ending the map's pin.
    let mut buf = [0u8; 4];
    let mut ops = [CopyOp::from_guest(at(&guest, 8, 0), &mut buf)];
    assert_eq!(grants.copy(&mut ops), 0);
    assert_eq!(
        guest.end_access(GrantRef(8)),
        Err(EndAccessError::InUse { gref: 8 })
    );

    drop(mapping);
    assert_eq!(guest.end_access(GrantRef(8)), Ok(()));
    assert!(matches!(
        grants.map(guest.domid(), &[GrantRef(8)], false),
        Err(GrantError::NotGranted { .. })
    ));
}

#[test]
fn maps_check_read_only_and_are_all_or_nothing() {
    let run = TempRun::new();
    let guest = guest_with_grants(&run);
    let d = guest.domid();
    let mut grants = SimGrants::new(run.dir(), DOM0);

    assert_eq!(
        grants.map(d, &[GrantRef(9)], true).unwrap_err(),
        GrantError::ReadOnly {
            domid: d,
            gref: GrantRef(9)
        }
    );
    let readonly = grants.map(d, &[GrantRef(9), GrantRef(8)], false).unwrap();
    assert_eq!(readonly.pages(), 2);
    let base = readonly.as_ptr().as_ptr();
    // SAFETY: two mapped pages; byte 100 of the first and byte 0 of the second are inside.
    let (four, three) = unsafe { (*base.add(100), *base.add(PAGE_SIZE)) };
    assert_eq!((four, three), (b'p', b'p'));
    drop(readonly);

    // Ref 8 is fine but 10 is not: nothing stays pinned.
    assert!(matches!(
        grants.map(d, &[GrantRef(8), GrantRef(10)], true),
        Err(GrantError::WrongDomain { .. })
    ));
    assert_eq!(guest.end_access(GrantRef(8)), Ok(()));
    assert_eq!(
        grants.map(d, &[], true).unwrap_err(),
        GrantError::BadMapCount { count: 0 }
    );
}

#[test]
fn an_empty_segment_succeeds_without_touching_the_grant() {
    // Before: an empty segment was checked and pinned like any other, so it failed on a
    // revoked ref or an unknown domain, where gntdev answers it okay without asking Xen.
    let run = TempRun::new();
    let guest = guest_with_grants(&run);
    let mut grants = SimGrants::new(run.dir(), DOM0);
    let missing = GuestRange {
        domid: DomId(4321),
        gref: GrantRef(8),
        offset: 0,
    };
    let mut empty = [0u8; 0];
    let mut ops = [
        CopyOp::from_guest(at(&guest, 11, 0), &mut []),
        CopyOp::to_guest(&[], at(&guest, 9, 4096)),
        CopyOp::from_guest(missing, &mut empty),
        CopyOp::to_guest(&[], at(&guest, 8, 4097)),
    ];
    assert_eq!(grants.copy(&mut ops), 1);
    assert_eq!(ops[0].status(), Ok(()));
    assert_eq!(ops[1].status(), Ok(()));
    assert_eq!(ops[2].status(), Ok(()));
    assert!(
        matches!(ops[3].status(), Err(GrantError::BadCopyArg { .. })),
        "the page bound is still checked"
    );
}

#[test]
fn a_read_only_mapping_cannot_be_made_writable() {
    // Before: read-only grants were mapped from the read-write memory file, so mprotect could
    // add PROT_WRITE and write the guest's page; Xen keeps such a page read-only.
    let run = TempRun::new();
    let guest = guest_with_grants(&run);
    let mut grants = SimGrants::new(run.dir(), DOM0);
    for gref in [GrantRef(9), GrantRef(8)] {
        let mapping = grants.map(guest.domid(), &[gref], false).unwrap();
        // SAFETY: changes the protection of the one page this mapping owns; nothing is
        // written through it.
        let rc = unsafe {
            libc::mprotect(
                mapping.as_ptr().as_ptr().cast(),
                PAGE_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
            )
        };
        let err = std::io::Error::last_os_error();
        assert_eq!(rc, -1, "{gref} became writable");
        assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{gref}");
    }
}
