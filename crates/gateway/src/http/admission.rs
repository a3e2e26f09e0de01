//! The budget of connections that have not authenticated yet ("pending"): node-wide and per
//! client address. A TCP connection to the HTTP port takes a [`PendingPermit`] when it is
//! accepted; a WebSocket upgrade or SSE stream hands it to its session, which drops it when
//! the handshake ends (`connect` succeeded, or the connection closed). Plain requests keep
//! it until their connection closes. Over either cap the TCP connection is closed at once,
//! before a byte is read, so sockets that never authenticate cannot take the slots of
//! authenticated users (those live in `max_connections`, taken by a successful `connect`).

use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use dashmap::DashMap;

use crate::metrics;

/// Why a new connection was closed at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PendingRefusal {
    #[error("too many unauthenticated connections on this node")]
    Node,
    #[error("too many unauthenticated connections from this address")]
    Address,
}

impl PendingRefusal {
    fn label(self) -> &'static str {
        match self {
            PendingRefusal::Node => "node",
            PendingRefusal::Address => "address",
        }
    }
}

/// Counts pending connections, node-wide and per address.
pub struct PendingBudget {
    /// The port it counts for (the metrics' `port` label): `http` or `metrics`.
    port: &'static str,
    /// 0 = no cap.
    max: usize,
    /// 0 = no cap.
    max_per_address: usize,
    total: AtomicUsize,
    per_address: DashMap<IpAddr, usize>,
}

impl PendingBudget {
    pub fn new(port: &'static str, max: usize, max_per_address: usize) -> Arc<Self> {
        Arc::new(Self {
            port,
            max,
            max_per_address,
            total: AtomicUsize::new(0),
            per_address: DashMap::new(),
        })
    }

    /// Takes a slot for a connection from `peer`, or says which cap is full.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<PendingPermit, PendingRefusal> {
        let address = address_key(peer);
        let taken = self.total.fetch_add(1, Ordering::AcqRel);
        if self.max > 0 && taken >= self.max {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(self.refused(PendingRefusal::Node));
        }
        if self.max_per_address > 0 {
            let mut count = self.per_address.entry(address).or_insert(0);
            if *count >= self.max_per_address {
                drop(count);
                self.total.fetch_sub(1, Ordering::AcqRel);
                return Err(self.refused(PendingRefusal::Address));
            }
            *count += 1;
        }
        metrics::gauge!(metrics::PENDING_CONNECTIONS, "port" => self.port).increment(1.0);
        Ok(PendingPermit {
            budget: self.clone(),
            address,
        })
    }

    fn refused(&self, refusal: PendingRefusal) -> PendingRefusal {
        metrics::counter!(metrics::PENDING_REFUSED, "cap" => refusal.label(), "port" => self.port)
            .increment(1);
        refusal
    }

    fn release(&self, address: IpAddr) {
        if self.max_per_address > 0 {
            self.per_address.remove_if_mut(&address, |_, count| {
                *count -= 1;
                *count == 0
            });
        }
        self.total.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!(metrics::PENDING_CONNECTIONS, "port" => self.port).decrement(1.0);
    }

    /// Pending connections on the node.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One pending connection's slot, released on drop.
pub struct PendingPermit {
    budget: Arc<PendingBudget>,
    address: IpAddr,
}

impl Drop for PendingPermit {
    fn drop(&mut self) {
        self.budget.release(self.address);
    }
}

/// The pending slot of one HTTP connection, shared by its requests: the request that
/// upgrades (or starts an SSE stream) takes it for its session.
#[derive(Clone, Default)]
pub struct PendingSlot(Arc<Mutex<Option<PendingPermit>>>);

impl PendingSlot {
    pub fn new(permit: Option<PendingPermit>) -> Self {
        Self(Arc::new(Mutex::new(permit)))
    }

    /// The permit, if no earlier request on this connection took it.
    pub fn take(&self) -> Option<PendingPermit> {
        // Nothing panics while holding this lock; a poisoned slot still holds its permit.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }
}

/// The key a peer is counted under: its IPv4 address, or the /64 of its IPv6 address (one
/// host usually holds a whole /64, so counting single IPv6 addresses would cap nothing).
fn address_key(peer: IpAddr) -> IpAddr {
    match peer.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_address_and_node_and_releases_on_drop() {
        let budget = PendingBudget::new("http", 3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = budget.admit(a).unwrap();
        let _a2 = budget.admit(a).unwrap();
        assert_eq!(budget.admit(a).err(), Some(PendingRefusal::Address));
        let _b1 = budget.admit(b).unwrap();
        assert_eq!(budget.admit(b).err(), Some(PendingRefusal::Node));
        assert_eq!(budget.len(), 3);
        drop(a1);
        assert_eq!(budget.len(), 2);
        let _a3 = budget.admit(a).expect("a slot was released");
    }

    #[test]
    fn zero_means_no_cap() {
        let budget = PendingBudget::new("http", 0, 0);
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let permits: Vec<_> = (0..100).map(|_| budget.admit(peer).unwrap()).collect();
        assert_eq!(budget.len(), 100);
        drop(permits);
        assert!(budget.is_empty());
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let budget = PendingBudget::new("http", 0, 1);
        let _first = budget.admit("2001:db8:1:2::1".parse().unwrap()).unwrap();
        assert_eq!(
            budget.admit("2001:db8:1:2::ffff".parse().unwrap()).err(),
            Some(PendingRefusal::Address),
            "same /64"
        );
        let _other = budget.admit("2001:db8:1:3::1".parse().unwrap()).unwrap();
        let _v4 = budget.admit("192.0.2.1".parse().unwrap()).unwrap();
        assert_eq!(
            budget.admit("::ffff:192.0.2.1".parse().unwrap()).err(),
            Some(PendingRefusal::Address),
            "IPv4-mapped counts as the IPv4 address"
        );
    }
}
