//! The server's routing between connections as a sans-I/O core, the counterpart of one
//! connection's [`super::peer::Peer`]: the live-connection table, the actions held per device,
//! the numbering of connections, tickets and decisions, which held action a connection takes
//! next and where the actions a connection hands back go. It never touches a socket, a lock, a
//! channel or the clock, and owns no deadline ([`Hub::poll_timeout`] is always `None`).
//!
//! [`super::Server`] keeps one `Hub` behind its mutex, with a channel to each connection's task
//! as the connection's `L`; the both-ends test (`src/tests/pair.rs`) uses the very same type
//! with an index into its own table of peers. When the hub routes an action to a connection it
//! says so ([`Delivery`]) and the caller hands it over (`Peer::queue`); an action the caller
//! could not hand over (the connection's task is gone) comes back through [`Hub::hold`].

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use super::{OutboundAction, Queued};

/// Actions for one connection, in order: the caller gives them to its peer (`Peer::queue`).
#[derive(Debug)]
#[must_use]
pub(crate) struct Delivery {
    pub conn: u64,
    pub actions: Vec<Queued>,
}

/// One registered connection.
#[derive(Debug)]
pub(crate) struct Entry<L> {
    /// The caller's handle on the connection (its task's channel, a test's index).
    pub link: L,
    /// `metadata.device_name` from its HELLO: the held queue it takes from.
    device: Option<String>,
    /// Past DRAINED: new actions for its device go straight to it instead of being held.
    live: bool,
    /// Reported to the embedder as connected (listed by `Server::connections`).
    announced: bool,
}

impl<L> Entry<L> {
    pub fn announced(&self) -> bool {
        self.announced
    }
}

/// Where the embedder's verdict on a decision goes: the connection and the peer's number for
/// the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Awaited {
    pub conn: u64,
    pub number: u64,
}

/// The server-wide routing; see the module documentation.
#[derive(Debug)]
pub(crate) struct Hub<L> {
    /// One counter for connection ids, tickets and decisions, as the embedder sees them.
    next_id: u64,
    conns: HashMap<u64, Entry<L>>,
    held: HashMap<String, VecDeque<Queued>>,
    decisions: HashMap<u64, Awaited>,
}

impl<L> Default for Hub<L> {
    fn default() -> Self {
        Hub {
            next_id: 0,
            conns: HashMap::new(),
            held: HashMap::new(),
            decisions: HashMap::new(),
        }
    }
}

impl<L> Hub<L> {
    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// A new connection, not live, not announced, with the link `link` makes of its id: the id.
    pub fn register(&mut self, link: impl FnOnce(u64) -> L) -> u64 {
        let id = self.next_id();
        let link = link(id);
        self.conns.insert(
            id,
            Entry {
                link,
                device: None,
                live: false,
                announced: false,
            },
        );
        id
    }

    /// The connection ended: it leaves the table (its decisions still answer `false`).
    pub fn unregister(&mut self, conn: u64) -> Option<L> {
        self.conns.remove(&conn).map(|e| e.link)
    }

    pub fn entry(&self, conn: u64) -> Option<&Entry<L>> {
        self.conns.get(&conn)
    }

    pub fn entries(&self) -> impl Iterator<Item = (u64, &Entry<L>)> {
        self.conns.iter().map(|(id, e)| (*id, e))
    }

    pub fn link_mut(&mut self, conn: u64) -> Option<&mut L> {
        self.conns.get_mut(&conn).map(|e| &mut e.link)
    }

    /// The connection was reported to the embedder (`Notice::Connection`).
    pub fn announced(&mut self, conn: u64) {
        if let Some(entry) = self.conns.get_mut(&conn) {
            entry.announced = true;
        }
    }

    /// The connection said HELLO with this device name (`Notice::Hello`).
    pub fn hello(&mut self, conn: u64, device: Option<String>) {
        if let Some(entry) = self.conns.get_mut(&conn) {
            entry.device = device;
        }
    }

    /// The oldest live connection of `device` other than `except`: the one its actions go to.
    fn live_connection(&self, device: &str, except: Option<u64>) -> Option<u64> {
        self.conns
            .iter()
            .filter(|(id, e)| e.live && Some(**id) != except && e.device.as_deref() == Some(device))
            .map(|(id, _)| *id)
            .min()
    }

    /// The embedder's `queueAction`: its ticket, and the connection to give it to now when the
    /// device has one past DRAINED; otherwise it is held and delivered before the device's
    /// next DRAINED.
    pub fn queue_action(
        &mut self,
        device: &str,
        action: OutboundAction,
    ) -> (u64, Option<Delivery>) {
        let ticket = self.next_id();
        let queued = Queued {
            action,
            ticket: Some(ticket),
        };
        match self.live_connection(device, None) {
            Some(conn) => (
                ticket,
                Some(Delivery {
                    conn,
                    actions: vec![queued],
                }),
            ),
            None => {
                self.held_queue(device).push_back(queued);
                (ticket, None)
            }
        }
    }

    /// An action the caller could not hand over to the connection `queue_action` chose (its
    /// task is gone): held behind the others.
    pub fn hold(&mut self, device: &str, queued: Queued) {
        self.held_queue(device).push_back(queued);
    }

    /// The answer to a connection's `Output::NeedHeld`: the next action held for its device;
    /// when none is left the connection goes live in the same step, so that an action queued
    /// from now on comes to it instead of being held.
    pub fn next_held(&mut self, conn: u64) -> Option<Queued> {
        let entry = self.conns.get_mut(&conn)?;
        let device = entry.device.as_deref().unwrap_or_default();
        let next = self.held.get_mut(device).and_then(VecDeque::pop_front);
        if next.is_none() {
            entry.live = true;
        }
        next
    }

    /// Actions connection `conn` (of `device`) did not get acknowledged, oldest first: to the
    /// device's oldest other connection past DRAINED, as [`Hub::queue_action`] would (that one
    /// never asks for held actions again), else to the front of the device's held queue, in
    /// order. Actions the caller then fails to hand over go to [`Hub::hold_front`].
    pub fn hand_back(
        &mut self,
        conn: u64,
        device: Option<&str>,
        actions: Vec<Queued>,
    ) -> Option<Delivery> {
        if actions.is_empty() {
            return None;
        }
        if let Some(other) = self.live_connection(device.unwrap_or_default(), Some(conn)) {
            return Some(Delivery {
                conn: other,
                actions,
            });
        }
        self.hold_front(device, actions);
        None
    }

    /// Actions back to the front of `device`'s held queue, in their order (what
    /// [`Hub::hand_back`] does when no connection takes them, and the caller with those a
    /// connection's task could no longer take).
    pub fn hold_front(&mut self, device: Option<&str>, actions: Vec<Queued>) {
        if actions.is_empty() {
            return;
        }
        let held = self.held_queue(device.unwrap_or_default());
        for queued in actions.into_iter().rev() {
            held.push_front(queued);
        }
    }

    /// Whether connection `conn` is past DRAINED (it takes its device's new actions).
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn is_live(&self, conn: u64) -> bool {
        self.conns.get(&conn).is_some_and(|e| e.live)
    }

    fn held_queue(&mut self, device: &str) -> &mut VecDeque<Queued> {
        // The name is copied only for a device's first held action.
        if !self.held.contains_key(device) {
            self.held.insert(device.to_owned(), VecDeque::new());
        }
        match self.held.get_mut(device) {
            Some(queue) => queue,
            None => unreachable!("inserted above"),
        }
    }

    /// The actions held for `device`, oldest first.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn held(&self, device: &str) -> impl Iterator<Item = &Queued> {
        self.held.get(device).into_iter().flatten()
    }

    /// Connection `conn`'s event numbered `number` awaits the embedder: the decision's number.
    pub fn decision(&mut self, conn: u64, number: u64) -> u64 {
        let decision = self.next_id();
        self.decisions.insert(decision, Awaited { conn, number });
        decision
    }

    /// The embedder answered `decision`: where the verdict goes, if the connection is still
    /// there (a decision is answered once).
    pub fn decide(&mut self, decision: u64) -> Option<(Awaited, &L)> {
        let awaited = self.decisions.remove(&decision)?;
        self.conns.get(&awaited.conn).map(|e| (awaited, &e.link))
    }

    /// The server closed: no decision waits any more, and the tickets of the actions held
    /// undelivered, which are discarded.
    pub fn discard(&mut self) -> Vec<u64> {
        self.decisions.clear();
        self.held
            .drain()
            .flat_map(|(_, q)| q.into_iter())
            .filter_map(|q| q.ticket)
            .collect()
    }

    /// The hub has no timer: routing waits for nothing. There for the one core interface
    /// (`Session`, `Peer` and `Hub` all answer it).
    #[allow(dead_code)]
    pub fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}
