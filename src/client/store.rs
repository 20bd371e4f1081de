//! The durable outbox (`src/outbox/`) as a client uses it: one [`EventStore`] per client,
//! shared by the host's send path, which appends each event before `send()` returns (on the
//! host's thread, whichever driver runs the client's task), and by the driver, which removes an
//! event when the session says it has its answer ([`Output::Forget`]). An `Outbox` is not
//! thread-safe on its own, so it sits behind a mutex; the append and the removal are each one
//! short locked call. With [`SyncMode::Interval`], [`EventStore::syncer`] is a task of its own,
//! the outbox's driver: one sleep to the outbox's `poll_timeout`, then its `handle_timeout` on
//! tokio's blocking threads, so the group commit never stalls the client's driver.
//!
//! [`Output::Forget`]: crate::session::Output::Forget

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::Notify;

use crate::errors::ErrorCode;
use crate::outbox::{Damage, Outbox, OutboxError, OutboxOptions, SyncMode};
use crate::protocol::decode;
use crate::protocol::value::value_writer;
use crate::session::OutgoingEvent;

/// What opening the outbox found: the events an earlier client left, to be sent first.
#[derive(Debug, Default)]
pub struct Restored {
    /// In their original order, with their original ids and frames; `seq` 0 (no callback).
    pub events: Vec<OutgoingEvent>,
    /// Torn or corrupt places found (and cut off where they were the newest segment's tail).
    pub damage: Vec<Damage>,
    /// Bytes cut off torn tails.
    pub truncated: u64,
}

/// The counters `client.stats()` adds with an outbox.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    /// Events in the outbox now (written and not yet answered), 0 while it is closed.
    pub pending: u64,
    /// Their bytes, as counted against `max_bytes`.
    pub bytes: u64,
    /// Events found at each opening, total.
    pub restored: u64,
    /// Torn or corrupt places found at each opening, and times the open outbox found its
    /// newest file shortened or removed by another program, total.
    pub damage: u64,
    /// Bytes cut off torn tails at each opening, and bytes of pending events another program
    /// destroyed that way (those events are still sent from memory), total.
    pub truncated: u64,
    /// Syncs of a segment file by the open outbox.
    pub syncs: u64,
    /// Appends refused (`EQUEUEFULL`, `ENOSPC`, ...), total.
    pub refused: u64,
}

#[derive(Default)]
struct State {
    outbox: Option<Outbox>,
    restored: u64,
    damage: u64,
    truncated: u64,
    refused: u64,
}

/// A client's durable outbox; see the module documentation.
pub struct EventStore {
    dir: PathBuf,
    options: OutboxOptions,
    state: Mutex<State>,
    /// Woken when something was written to a synced outbox (Interval mode's syncer waits on it),
    /// and when the store goes, so the syncer ends.
    written: Arc<Notify>,
    /// The latest `append` failed: the host asks ([`EventStore::take_refused`]) to tell an
    /// outbox failure from an encoding one.
    refused: AtomicBool,
}

impl std::fmt::Debug for EventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStore")
            .field("dir", &self.dir)
            .finish()
    }
}

impl Drop for EventStore {
    fn drop(&mut self) {
        self.written.notify_one();
    }
}

impl EventStore {
    /// Opens (creating it if needed) the outbox in `dir`: `EOUTBOXLOCKED` when another client,
    /// in this process or another, has it open; `EOUTBOXPERM` when it is another user's, or
    /// others may write it.
    pub fn open(
        dir: impl AsRef<Path>,
        options: OutboxOptions,
    ) -> Result<(Arc<EventStore>, Restored), OutboxError> {
        let store = Arc::new(EventStore {
            dir: dir.as_ref().to_path_buf(),
            options,
            state: Mutex::new(State::default()),
            written: Arc::new(Notify::new()),
            refused: AtomicBool::new(false),
        });
        let restored = store.reopen()?.unwrap_or_default();
        Ok((store, restored))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn options(&self) -> &OutboxOptions {
        &self.options
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the outbox is open (from `open` or `reopen` until `close`).
    pub fn is_open(&self) -> bool {
        self.lock().outbox.is_some()
    }

    /// Opens the outbox again after [`EventStore::close`]; `None` if it is open.
    pub fn reopen(&self) -> Result<Option<Restored>, OutboxError> {
        let mut state = self.lock();
        if state.outbox.is_some() {
            return Ok(None);
        }
        let (mut outbox, recovery) = Outbox::open(&self.dir, self.options.clone())?;
        let mut restored = Restored {
            events: Vec::with_capacity(recovery.pending.len()),
            truncated: recovery.truncated_bytes(),
            damage: recovery.damage,
        };
        for record in recovery.pending {
            match decode(&Bytes::from(record.id)) {
                Ok(id) => restored.events.push(OutgoingEvent {
                    seq: 0,
                    id,
                    frame: Bytes::from(record.frame),
                    stored: Some(record.seq),
                }),
                // Not an id this client wrote (the checksum held, so not damage either): it
                // could never be matched to its acknowledgement.
                Err(_) => {
                    outbox.ack(record.seq);
                }
            }
        }
        state.restored += restored.events.len() as u64;
        state.damage += restored.damage.len() as u64;
        state.truncated += restored.truncated;
        state.outbox = Some(outbox);
        Ok(Some(restored))
    }

    /// Stores `event` and sets its [`OutgoingEvent::stored`]. `EQUEUEFULL` at the bounds, the
    /// OS's code (`ENOSPC`, ...) when the disk fails, `ECLOSED` while the outbox is closed;
    /// nothing stored before is lost either way.
    pub fn append(&self, event: &mut OutgoingEvent) -> Result<(), OutboxError> {
        let mut id = Vec::with_capacity(16);
        let Ok(()) = value_writer::<_, std::convert::Infallible>(&event.id)(&mut id);
        let mut state = self.lock();
        let appended = match state.outbox.as_mut() {
            Some(outbox) => outbox.append(&id, &event.frame),
            None => Err(OutboxError::other(
                ErrorCode::Closed,
                "The client's outbox is closed.",
            )),
        };
        let seq = appended.inspect_err(|_| {
            state.refused += 1;
            self.refused.store(true, Ordering::Relaxed);
        })?;
        event.stored = Some(seq);
        if matches!(self.options.sync, SyncMode::Interval(_)) {
            self.written.notify_one();
        }
        Ok(())
    }

    /// Whether an `append` failed since the last call.
    pub fn take_refused(&self) -> bool {
        self.refused.swap(false, Ordering::Relaxed)
    }

    /// The session is done with the event stored as `stored`: it has its answer. Its tombstone is
    /// written at the next append or [`EventStore::flush`], whichever comes first.
    pub fn forget(&self, stored: u64) {
        if let Some(outbox) = self.lock().outbox.as_mut() {
            outbox.ack(stored);
        }
    }

    /// Writes the tombstones of the events forgotten since the last call (the driver calls this
    /// once per turn, so a burst of acknowledgements costs one write). An error (a full disk)
    /// only means a later process may send those events again.
    pub fn flush(&self) -> Result<(), OutboxError> {
        match self.lock().outbox.as_mut() {
            Some(outbox) => outbox.flush(),
            None => Ok(()),
        }
    }

    /// Syncs (unless the mode is `None`) and releases the directory; what is pending stays
    /// for the next opener.
    pub fn close(&self) -> Result<(), OutboxError> {
        let mut state = self.lock();
        let Some(mut outbox) = state.outbox.take() else {
            return Ok(());
        };
        // A last look at the file, so that its counters below are final.
        let verified = outbox.verify();
        let stats = outbox.stats();
        state.damage += stats.shortened;
        state.truncated += stats.lost_bytes;
        drop(state);
        verified.and(outbox.close())
    }

    pub fn stats(&self) -> StoreStats {
        let state = self.lock();
        let (pending, bytes, syncs, shortened, lost_bytes) =
            state.outbox.as_ref().map_or((0, 0, 0, 0, 0), |o| {
                let s = o.stats();
                (
                    o.len() as u64,
                    o.bytes(),
                    s.syncs,
                    s.shortened,
                    s.lost_bytes,
                )
            });
        StoreStats {
            pending,
            bytes,
            restored: state.restored,
            damage: state.damage + shortened,
            truncated: state.truncated + lost_bytes,
            syncs,
            refused: state.refused,
        }
    }

    /// When [`EventStore::handle_timeout`] wants to be called ([`Outbox::poll_timeout`]);
    /// `None` while the outbox is closed or nothing waits for a sync.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.lock().outbox.as_ref().and_then(Outbox::poll_timeout)
    }

    /// [`Outbox::handle_timeout`], with the lock held to decide and not while the device syncs
    /// ([`Outbox::sync_job`]): appends on the host's thread go on meanwhile. A failed sync is
    /// tried again an interval later (the outbox's `poll_timeout`); the records stay written to
    /// the OS either way.
    pub fn handle_timeout(&self, now: Instant) {
        let job = match self.lock().outbox.as_mut() {
            Some(outbox) => outbox.sync_job(now),
            None => return,
        };
        if let Ok(Some(job)) = job {
            let synced = job.run();
            if let Some(outbox) = self.lock().outbox.as_mut() {
                outbox.sync_done(synced.is_ok());
            }
        }
    }

    /// Interval mode's group commit, to spawn on a tokio runtime: the outbox's driver. It
    /// calls [`EventStore::handle_timeout`] (on a blocking thread: an fsync may take
    /// milliseconds), then sleeps until [`EventStore::poll_timeout`], or, when that is `None`,
    /// until something is written; ends when the store is dropped. Nothing to do for the other
    /// modes.
    pub fn syncer(store: &Arc<EventStore>) -> impl std::future::Future<Output = ()> + Send {
        let weak: Weak<EventStore> = Arc::downgrade(store);
        let written = store.written.clone();
        let interval = matches!(store.options.sync, SyncMode::Interval(_));
        async move {
            if !interval {
                return;
            }
            written.notified().await;
            loop {
                let Some(store) = weak.upgrade() else {
                    return;
                };
                let due = tokio::task::spawn_blocking(move || {
                    store.handle_timeout(Instant::now());
                    store.poll_timeout()
                })
                .await;
                match due {
                    Ok(Some(due)) => {
                        tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await
                    }
                    // Nothing waits for a sync (or the blocking task failed): until the next
                    // write, or until the store goes.
                    _ => written.notified().await,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Value;

    fn event(n: u64) -> OutgoingEvent {
        OutgoingEvent::new(
            n,
            Value::String(format!("id-{n}").into()),
            "t",
            Value::Number(n as f64),
        )
    }

    fn options(sync: SyncMode) -> OutboxOptions {
        OutboxOptions {
            sync,
            max_records: 3,
            ..OutboxOptions::default()
        }
    }

    #[test]
    fn appended_events_come_back_in_order_with_their_ids_until_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let (store, restored) = EventStore::open(dir.path(), options(SyncMode::None)).unwrap();
        assert!(restored.events.is_empty());
        let mut events: Vec<_> = (1..=3).map(event).collect();
        for e in &mut events {
            store.append(e).unwrap();
        }
        assert_eq!(store.stats().pending, 3);
        let err = store.append(&mut event(4)).unwrap_err();
        assert_eq!(err.code(), &ErrorCode::QueueFull);
        assert!(store.take_refused() && !store.take_refused());
        store.forget(events[1].stored.unwrap());
        store.close().unwrap();
        assert_eq!(store.stats().pending, 0, "closed");
        let err = store.append(&mut event(5)).unwrap_err();
        assert_eq!(err.code(), &ErrorCode::Closed);

        let found = store.reopen().unwrap().expect("opened again");
        assert!(store.reopen().unwrap().is_none(), "already open");
        let got: Vec<_> = found
            .events
            .iter()
            .map(|e| (e.seq, e.id.clone(), e.frame.clone(), e.stored))
            .collect();
        let want: Vec<_> = [&events[0], &events[2]]
            .iter()
            .map(|e| (0, e.id.clone(), e.frame.clone(), e.stored))
            .collect();
        assert_eq!(got, want, "original ids and frames, no callback");
        let stats = store.stats();
        assert_eq!((stats.pending, stats.restored, stats.refused), (2, 2, 2));
        // A second opener is refused while this one holds it.
        let err = EventStore::open(dir.path(), options(SyncMode::None)).unwrap_err();
        assert_eq!(err.code(), &ErrorCode::OutboxLocked);
    }

    #[tokio::test]
    async fn the_syncer_commits_interval_writes_in_groups_and_ends_with_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let interval = std::time::Duration::from_millis(20);
        let (store, _) =
            EventStore::open(dir.path(), options(SyncMode::Interval(interval))).unwrap();
        let syncer = tokio::spawn(EventStore::syncer(&store));
        for n in 1..=3 {
            store.append(&mut event(n)).unwrap();
        }
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while store.stats().syncs == 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let syncs = store.stats().syncs;
        assert!((1..=2).contains(&syncs), "{syncs} syncs for 3 appends");
        drop(store);
        tokio::time::timeout(std::time::Duration::from_secs(5), syncer)
            .await
            .expect("the syncer ends")
            .unwrap();
    }
}
