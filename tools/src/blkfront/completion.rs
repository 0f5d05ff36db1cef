//! Completing requests, as Linux's `blkif_interrupt` and `blkif_completion` do: responses
//! taken from every queue, data copied out of the pages, pages given back, the flush,
//! barrier and discard failures handled as Linux handles them, and the post-flush a FUA
//! write needs on a back end without FUA.

use blkif::abi::{BLKIF_OP_DISCARD, BLKIF_OP_FLUSH_DISKCACHE, BLKIF_OP_WRITE_BARRIER};
use blkif::abi::{BLKIF_RSP_EOPNOTSUPP, BLKIF_RSP_ERROR, BLKIF_RSP_OKAY};

use super::disk::FlushMode;
use super::error::{Error, ResponseError};
use super::queue::Shadow;
use super::{request, Blkfront};

/// Identifies a submitted operation in its [`Completion`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(pub u64);

/// A finished operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// What [`Blkfront::submit`] returned.
    pub tag: Tag,
    /// The operation of the response that completed it (for a FUA write with a post-flush,
    /// the flush's).
    pub operation: u8,
    /// `BLKIF_RSP_*` as the back end sent it, except that a flush or barrier refused with
    /// EOPNOTSUPP, or failed without data, is reported as success (as Linux does).
    pub status: i16,
    /// For a successful read, the bytes read.
    pub data: Option<Vec<u8>>,
}

impl Completion {
    /// The data read (empty for other operations), or the failure.
    pub fn into_result(self) -> Result<Vec<u8>, Error> {
        if self.status != BLKIF_RSP_OKAY {
            return Err(Error::Failed {
                operation: self.operation,
                status: self.status,
            });
        }
        Ok(self.data.unwrap_or_default())
    }
}

impl Blkfront {
    /// Takes the responses of every queue into `done`, and sends the flushes that FUA writes
    /// completed so far are waiting for; a bad response disables the device.
    pub(super) fn reap(&mut self) -> Result<(), Error> {
        if self.disabled.is_none() {
            if let Err(reason) = self.take_all_responses() {
                self.disabled = Some(reason);
            }
        }
        if let Some(reason) = &self.disabled {
            return Err(Error::Disabled(reason.clone()));
        }
        self.send_post_flushes()
    }

    /// The block layer's post-flush of a FUA write on a back end without FUA: a flush on
    /// the write's queue (its completion freed a slot there), completing under the write's
    /// tag. Flushes turned off meanwhile complete it at once.
    fn send_post_flushes(&mut self) -> Result<(), Error> {
        for (queue, tag) in std::mem::take(&mut self.post_flushes) {
            match request::flush_request(tag, self.handle, self.disk.flush) {
                Some(flush) => {
                    self.queues[queue].push(flush.shadow, flush.request)?;
                    self.queues[queue].publish(&mut self.evtchn)?;
                }
                None => self.done.push_back(Completion {
                    tag,
                    operation: BLKIF_OP_FLUSH_DISKCACHE,
                    status: BLKIF_RSP_OKAY,
                    data: None,
                }),
            }
        }
        Ok(())
    }

    fn take_all_responses(&mut self) -> Result<(), ResponseError> {
        for index in 0..self.queues.len() {
            for (shadow, status) in self.queues[index].take_responses()? {
                self.finish(index, shadow, status)?;
            }
        }
        Ok(())
    }

    /// `blkif_completion` and the per-operation handling of `blkif_interrupt`.
    fn finish(&mut self, queue: usize, shadow: Shadow, status: i16) -> Result<(), ResponseError> {
        let persistent = self.disk.persistent;
        let mut data = None;
        if shadow.read && status == BLKIF_RSP_OKAY {
            let mut bytes = vec![0; shadow.data.iter().map(|d| d.len).sum()];
            let mut at = 0;
            for d in &shadow.data {
                // The page is ours and in bounds; a failure leaves zeroes, never panics.
                let _ = self
                    .pages
                    .read(d.page.frame, d.offset, &mut bytes[at..at + d.len]);
                at += d.len;
            }
            data = Some(bytes);
        }
        let pages = shadow.data.iter().map(|d| d.page).chain(shadow.indirect);
        for page in pages {
            self.pages
                .give_back(page, persistent)
                .map_err(|source| ResponseError::GrantKept { queue, source })?;
        }
        let mut status = status;
        match shadow.operation {
            BLKIF_OP_FLUSH_DISKCACHE | BLKIF_OP_WRITE_BARRIER if status != BLKIF_RSP_OKAY => {
                // `blkif_interrupt`: any failure turns flushes and FUA off. A refusal, or an
                // error on one without data, completes as success; an error on one that
                // carried data (a FUA write as a barrier) stays an error.
                self.disk.flush = FlushMode::None;
                let carried_data = !shadow.data.is_empty();
                if status == BLKIF_RSP_EOPNOTSUPP || (status == BLKIF_RSP_ERROR && !carried_data) {
                    status = BLKIF_RSP_OKAY;
                }
            }
            BLKIF_OP_DISCARD if status == BLKIF_RSP_EOPNOTSUPP => self.disk.discard = None,
            _ => {}
        }
        if shadow.post_flush && status == BLKIF_RSP_OKAY {
            self.post_flushes.push((queue, shadow.tag));
            return Ok(());
        }
        self.done.push_back(Completion {
            tag: shadow.tag,
            operation: shadow.operation,
            status,
            data,
        });
        Ok(())
    }
}
