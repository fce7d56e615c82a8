//! The inbound queue between the swarm and the router: bounded in bytes, fair between peers.
//!
//! [`FairQueue`] is the policy, a plain value. When the queue is over its byte bound, the newest
//! message of the peer holding the most queued bytes is dropped, until it fits: a peer is only
//! ever dropped while it holds more than anyone else, so a flood costs the flooder, never the
//! others (max-min fairness). Messages leave round-robin, one per peer in turn, so a long queue
//! from one peer does not delay the next peer's message either.
//!
//! [`inbound`] wraps it for two tasks: the swarm pushes, the router pulls (and puts a message
//! back when the actor it is for is busy: back-pressure, which then drops fairly here).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use libp2p::PeerId;
use tokio::sync::Notify;

use crate::network::NetworkEvent;

#[derive(Debug)]
struct PeerQueue<T> {
    items: VecDeque<(T, usize)>,
    bytes: usize,
}

/// Messages of peers `K`, at most `bytes_max` bytes in all.
#[derive(Debug)]
pub struct FairQueue<K, T> {
    bytes_max: usize,
    bytes: usize,
    peers: BTreeMap<K, PeerQueue<T>>,
    /// Peers with queued messages, in the order they are served.
    turn: VecDeque<K>,
}

impl<K: Ord + Clone, T> FairQueue<K, T> {
    pub fn new(bytes_max: usize) -> Self {
        FairQueue {
            bytes_max,
            bytes: 0,
            peers: BTreeMap::new(),
            turn: VecDeque::new(),
        }
    }

    /// Queues `item` (of `len` bytes) from `peer`; returns whose messages were dropped to make
    /// room (one entry per message, the pusher's own included when it is the largest).
    pub fn push(&mut self, peer: K, item: T, len: usize) -> Vec<K> {
        let q = self.peers.entry(peer.clone()).or_insert_with(|| PeerQueue {
            items: VecDeque::new(),
            bytes: 0,
        });
        if q.items.is_empty() {
            self.turn.push_back(peer);
        }
        q.items.push_back((item, len));
        q.bytes += len;
        self.bytes += len;
        let mut dropped = Vec::new();
        while self.bytes > self.bytes_max {
            let Some(victim) = self.largest() else { break };
            self.drop_newest(&victim);
            dropped.push(victim);
        }
        dropped
    }

    /// The next message, round-robin between peers.
    pub fn pop(&mut self) -> Option<(K, T)> {
        let peer = self.turn.pop_front()?;
        let q = self.peers.get_mut(&peer)?;
        let (item, len) = q.items.pop_front()?;
        q.bytes -= len;
        self.bytes -= len;
        if q.items.is_empty() {
            self.peers.remove(&peer);
        } else {
            self.turn.push_back(peer.clone());
        }
        Some((peer, item))
    }

    /// Puts a message back at the head of its peer's queue and its peer first in turn (its
    /// consumer could not take it yet). Never drops: the bytes were counted before.
    pub fn put_back(&mut self, peer: K, item: T, len: usize) {
        let q = self.peers.entry(peer.clone()).or_insert_with(|| PeerQueue {
            items: VecDeque::new(),
            bytes: 0,
        });
        q.items.push_front((item, len));
        q.bytes += len;
        self.bytes += len;
        self.turn.retain(|p| *p != peer);
        self.turn.push_front(peer);
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Bytes queued for `peer`.
    pub fn peer_bytes(&self, peer: &K) -> usize {
        self.peers.get(peer).map_or(0, |q| q.bytes)
    }

    pub fn is_empty(&self) -> bool {
        self.turn.is_empty()
    }

    fn largest(&self) -> Option<K> {
        self.peers
            .iter()
            .max_by_key(|(_, q)| q.bytes)
            .map(|(k, _)| k.clone())
    }

    fn drop_newest(&mut self, peer: &K) {
        let Some(q) = self.peers.get_mut(peer) else {
            return;
        };
        if let Some((_, len)) = q.items.pop_back() {
            q.bytes -= len;
            self.bytes -= len;
        }
        if q.items.is_empty() {
            self.peers.remove(peer);
            self.turn.retain(|p| p != peer);
        }
    }
}

/// Connection events waiting at most (beyond, the oldest goes: they only feed a peer count).
const CONTROL_EVENTS_MAX: usize = 1_024;

#[derive(Debug)]
struct Shared {
    messages: FairQueue<PeerId, Bytes>,
    control: VecDeque<NetworkEvent>,
    closed: bool,
}

#[derive(Debug)]
struct Channel {
    state: Mutex<Shared>,
    ready: Notify,
}

/// The swarm is gone and every event it queued was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the network stopped")]
pub struct Closed;

/// The swarm's end: pushes messages and connection events; closes the queue when dropped.
#[derive(Debug)]
pub struct InboundSender {
    channel: Arc<Channel>,
}

/// The router's end.
#[derive(Debug)]
pub struct InboundReceiver {
    channel: Arc<Channel>,
}

/// A queue of at most `bytes_max` bytes of messages.
pub fn inbound(bytes_max: usize) -> (InboundSender, InboundReceiver) {
    let channel = Arc::new(Channel {
        state: Mutex::new(Shared {
            messages: FairQueue::new(bytes_max),
            control: VecDeque::new(),
            closed: false,
        }),
        ready: Notify::new(),
    });
    (
        InboundSender {
            channel: channel.clone(),
        },
        InboundReceiver { channel },
    )
}

impl InboundSender {
    /// Queues a message; returns how many messages were dropped to make room, and the bytes
    /// now queued.
    pub fn message(&self, from: PeerId, bytes: Bytes) -> (usize, usize) {
        let mut s = self.channel.state.lock().expect("inbound lock");
        let len = bytes.len();
        let dropped = s.messages.push(from, bytes, len).len();
        let queued = s.messages.bytes();
        drop(s);
        self.channel.ready.notify_one();
        (dropped, queued)
    }

    pub fn control(&self, event: NetworkEvent) {
        let mut s = self.channel.state.lock().expect("inbound lock");
        if s.control.len() >= CONTROL_EVENTS_MAX {
            s.control.pop_front();
        }
        s.control.push_back(event);
        drop(s);
        self.channel.ready.notify_one();
    }
}

impl Drop for InboundSender {
    fn drop(&mut self) {
        if let Ok(mut s) = self.channel.state.lock() {
            s.closed = true;
        }
        self.channel.ready.notify_one();
    }
}

impl InboundReceiver {
    /// The next event if one is waiting (connection events first); [`Closed`] once the swarm
    /// is gone and the queue drained.
    pub fn try_recv(&self) -> Result<Option<NetworkEvent>, Closed> {
        let mut s = self.channel.state.lock().expect("inbound lock");
        if let Some(e) = s.control.pop_front() {
            return Ok(Some(e));
        }
        if let Some((from, bytes)) = s.messages.pop() {
            return Ok(Some(NetworkEvent::Message { from, bytes }));
        }
        if s.closed {
            Err(Closed)
        } else {
            Ok(None)
        }
    }

    /// Waits for the next event; `None` once the swarm is gone and the queue drained.
    pub async fn recv(&self) -> Option<NetworkEvent> {
        loop {
            match self.try_recv() {
                Ok(Some(e)) => return Some(e),
                Ok(None) => self.channel.ready.notified().await,
                Err(Closed) => return None,
            }
        }
    }

    /// A future that resolves when something may have been queued.
    pub fn ready(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let channel = self.channel.clone();
        async move { channel.ready.notified().await }
    }

    /// Gives back a message its consumer could not take yet.
    pub fn put_back(&self, from: PeerId, bytes: Bytes) {
        let mut s = self.channel.state.lock().expect("inbound lock");
        let len = bytes.len();
        s.messages.put_back(from, bytes, len);
    }

    /// Bytes of messages waiting.
    pub fn queued_bytes(&self) -> usize {
        self.channel
            .state
            .lock()
            .expect("inbound lock")
            .messages
            .bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_costs_the_flooder_not_the_honest_peer() {
        let mut q: FairQueue<&str, u32> = FairQueue::new(10_000);
        let mut dropped = BTreeMap::<&str, usize>::new();
        // The flooder sends 1,000 messages of 100 bytes for every honest one of 100 bytes.
        for i in 0..20_000u32 {
            let peer = if i % 1_000 == 999 { "honest" } else { "flood" };
            for d in q.push(peer, i, 100) {
                *dropped.entry(d).or_default() += 1;
            }
            assert!(q.bytes() <= 10_000);
        }
        assert_eq!(dropped.get("honest"), None, "an honest message was dropped");
        assert_eq!(q.peer_bytes(&"honest"), 2_000);
        assert_eq!(q.peer_bytes(&"flood"), 8_000);
        assert_eq!(dropped["flood"], 19_980 - 80);
        // Round-robin: the honest messages come out among the first 40, in order.
        let first: Vec<_> = (0..40).filter_map(|_| q.pop()).collect();
        let honest: Vec<u32> = first
            .iter()
            .filter(|(p, _)| *p == "honest")
            .map(|(_, i)| *i)
            .collect();
        assert_eq!(honest, (0..20).map(|k| k * 1_000 + 999).collect::<Vec<_>>());
    }

    #[test]
    fn peers_within_their_share_all_get_through() {
        let mut q: FairQueue<u8, (u8, u32)> = FairQueue::new(3_000);
        let mut honest_dropped = 0;
        let mut honest = |q: &mut FairQueue<u8, (u8, u32)>, i: u32| {
            for p in 0..3u8 {
                honest_dropped += q.push(p, (p, i), 100).iter().filter(|v| **v != 9).count();
            }
        };
        for i in 0..5 {
            honest(&mut q, i);
        }
        // A fourth peer floods with large messages; the honest three keep sending within their
        // share (a quarter of the queue each).
        let mut flood_dropped = 0;
        for i in 0..50u32 {
            let d = q.push(9, (9, i), 500);
            assert!(d.iter().all(|p| *p == 9), "dropped {d:?}");
            flood_dropped += d.len();
        }
        assert_eq!(q.peer_bytes(&9), 1_500);
        for i in 5..7 {
            honest(&mut q, i);
        }
        assert_eq!(honest_dropped, 0);
        assert!(
            q.peer_bytes(&9) <= 900,
            "the flooder holds {}",
            q.peer_bytes(&9)
        );
        assert_eq!(flood_dropped, 47);
        // Served in turn: 0, 1, 2, 9, 0, 1, 2...; every honest message comes out.
        let out: Vec<(u8, (u8, u32))> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(
            out[..4].iter().map(|(p, _)| *p).collect::<Vec<_>>(),
            [0, 1, 2, 9]
        );
        for p in 0..3u8 {
            let got: Vec<u32> = out
                .iter()
                .filter(|(k, _)| *k == p)
                .map(|(_, m)| m.1)
                .collect();
            assert_eq!(got, (0..7).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_message_put_back_is_next() {
        let mut q: FairQueue<u8, u32> = FairQueue::new(1_000);
        q.push(1, 10, 10);
        q.push(1, 11, 10);
        q.push(2, 20, 10);
        let (p, m) = q.pop().unwrap();
        assert_eq!((p, m), (1, 10));
        q.put_back(p, m, 10);
        assert_eq!(q.bytes(), 30);
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(order, vec![(1, 10), (2, 20), (1, 11)]);
        assert!(q.is_empty());
        assert_eq!(q.bytes(), 0);
    }

    #[tokio::test]
    async fn the_receiver_ends_when_the_swarm_is_gone() {
        let (tx, rx) = inbound(1_000);
        let peer = PeerId::random();
        tx.message(peer, Bytes::from_static(b"one"));
        tx.control(NetworkEvent::Connected(peer));
        drop(tx);
        assert!(matches!(rx.recv().await, Some(NetworkEvent::Connected(_))));
        assert!(matches!(
            rx.recv().await,
            Some(NetworkEvent::Message { .. })
        ));
        assert!(rx.recv().await.is_none());
    }
}
