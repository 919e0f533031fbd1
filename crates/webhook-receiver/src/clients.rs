//! Each client's share of the front door's limits.
//!
//! `server.max_connections` and `server.max_inflight_body_bytes` bound the
//! whole process, but on their own they let one client take all of either:
//! a flood of idle connections from one host fills every connection permit,
//! stalled bodies from one host spend the whole body budget, and the
//! provider's real webhooks wait behind them. So each client may hold at most
//! `server.max_connections_per_client` connections and
//! `server.max_inflight_body_bytes_per_client` body bytes; the rest stays
//! free for everyone else.
//!
//! A client is one IP address; an IPv6 client is its /64, the block one
//! host is usually given (it can pick any address inside it). Shares live
//! only while the client has a connection open, so the table never holds
//! more than `max_connections` entries.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Semaphore;

/// The clients with a connection open, and what each may hold.
#[derive(Debug)]
pub(crate) struct Clients {
    shares: Mutex<HashMap<IpAddr, Share>>,
    connections_per_client: usize,
    body_bytes_per_client: usize,
}

#[derive(Debug)]
struct Share {
    connections: usize,
    body_budget: Arc<Semaphore>,
}

/// One open connection of a client: its address, and its client's body
/// budget. Dropping it gives the connection back to the client's share.
#[derive(Debug)]
pub(crate) struct Client {
    pub(crate) peer: SocketAddr,
    /// The client's `max_inflight_body_bytes_per_client`, shared by all its
    /// connections.
    pub(crate) body_budget: Arc<Semaphore>,
    key: IpAddr,
    clients: Arc<Clients>,
}

impl Clients {
    pub(crate) fn new(connections_per_client: usize, body_bytes_per_client: usize) -> Arc<Self> {
        Arc::new(Self {
            shares: Mutex::new(HashMap::new()),
            connections_per_client,
            body_bytes_per_client,
        })
    }

    /// Admits a new connection from `peer`, or `None` when its client
    /// already holds `max_connections_per_client` of them.
    pub(crate) fn admit(self: &Arc<Self>, peer: SocketAddr) -> Option<Client> {
        let key = client_key(peer.ip());
        let mut shares = self.shares.lock().unwrap_or_else(PoisonError::into_inner);
        let share = shares.entry(key).or_insert_with(|| Share {
            connections: 0,
            body_budget: Arc::new(Semaphore::new(self.body_bytes_per_client)),
        });
        if share.connections >= self.connections_per_client {
            return None;
        }
        share.connections += 1;
        Some(Client {
            peer,
            body_budget: share.body_budget.clone(),
            key,
            clients: self.clone(),
        })
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.shares
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let mut shares = self
            .clients
            .shares
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(share) = shares.get_mut(&self.key) {
            share.connections -= 1;
            if share.connections == 0 {
                // Its last connection is gone, and with it every body it
                // held (a body is read on its connection's task).
                shares.remove(&self.key);
            }
        }
    }
}

/// The address a client's share is kept under: IPv4 as it is (an IPv4
/// address mapped into IPv6 included), IPv6 by its /64.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !((1u128 << 64) - 1))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(address: &str) -> SocketAddr {
        SocketAddr::new(address.parse().unwrap(), 40000)
    }

    #[test]
    fn a_client_beyond_its_connection_share_is_refused_and_others_are_not() {
        let clients = Clients::new(2, 1024);
        let first = clients.admit(peer("203.0.113.7")).unwrap();
        let _second = clients.admit(peer("203.0.113.7")).unwrap();
        assert!(clients.admit(peer("203.0.113.7")).is_none());
        assert!(clients.admit(peer("203.0.113.8")).is_some());
        drop(first);
        assert!(
            clients.admit(peer("203.0.113.7")).is_some(),
            "a closed connection frees its place"
        );
    }

    #[test]
    fn connections_of_one_client_share_one_body_budget() {
        let clients = Clients::new(8, 1000);
        let a = clients.admit(peer("198.51.100.1")).unwrap();
        let b = clients.admit(peer("198.51.100.1")).unwrap();
        let other = clients.admit(peer("198.51.100.2")).unwrap();
        let _held = a.body_budget.try_acquire_many(1000).unwrap();
        assert!(b.body_budget.try_acquire().is_err());
        assert!(other.body_budget.try_acquire_many(1000).is_ok());
    }

    #[test]
    fn an_ipv6_host_is_its_64_and_a_mapped_ipv4_address_is_the_ipv4_one() {
        let clients = Clients::new(1, 1024);
        let _held = clients.admit(peer("2001:db8:1:2::1")).unwrap();
        assert!(clients.admit(peer("2001:db8:1:2:ffff::9")).is_none());
        assert!(clients.admit(peer("2001:db8:1:3::1")).is_some());
        let _v4 = clients.admit(peer("192.0.2.1")).unwrap();
        assert!(clients.admit(peer("::ffff:192.0.2.1")).is_none());
    }

    #[test]
    fn a_client_is_forgotten_with_its_last_connection() {
        let clients = Clients::new(4, 1024);
        let connections: Vec<_> = (0..3)
            .map(|i| clients.admit(peer(&format!("192.0.2.{i}"))).unwrap())
            .collect();
        assert_eq!(clients.tracked(), 3);
        drop(connections);
        assert_eq!(clients.tracked(), 0);
    }
}
