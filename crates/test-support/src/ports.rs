//! Ports for test servers that must come back on the same address after a
//! restart (Garage after an outage, the daemon after kill -9).
//!
//! Why not `bind("127.0.0.1:0")`: that port comes from the kernel's ephemeral
//! range, which every other listener and every outgoing connection on the
//! machine draws from too. While a stopped server is down, its port is free
//! again, and another test's server (or a client socket) may be handed it;
//! the restart then fails to bind, or its readiness check talks to the
//! impostor (the store-outage test once failed that way). Ports here come
//! from a range below the ephemeral one that only this allocator hands out,
//! never the same port twice in one process, starting at an offset taken
//! from the process id so that test binaries running side by side spread
//! out; a port some other process already holds is skipped.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};

/// Below Linux's default ephemeral range (32768-60999), above the
/// well-known and most registered service ports.
const FIRST: u32 = 20_000;
const LAST: u32 = 32_000;
const SPAN: u32 = LAST - FIRST;

/// `N` distinct 127.0.0.1 addresses, free when chosen, that no other caller
/// in this process will be given; each was bound (and released) to check
/// it is free, and all are held until every one is chosen.
pub fn reserved_addrs<const N: usize>() -> [SocketAddr; N] {
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % SPAN,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    reserve_from(&NEXT)
}

/// [`reserved_addrs`] from the allocator state `next` (an offset into the
/// range).
fn reserve_from<const N: usize>(next: &AtomicU32) -> [SocketAddr; N] {
    let held: [TcpListener; N] = std::array::from_fn(|_| {
        for _ in 0..SPAN {
            let port = FIRST + next.fetch_add(1, Ordering::Relaxed) % SPAN;
            if let Ok(listener) = TcpListener::bind(("127.0.0.1", port as u16)) {
                return listener;
            }
        }
        panic!("no free 127.0.0.1 port in {FIRST}..{LAST}")
    });
    held.map(|listener| listener.local_addr().expect("a bound listener's address"))
}

/// One address of [`reserved_addrs`].
pub fn reserved_addr() -> SocketAddr {
    let [addr] = reserved_addrs();
    addr
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_distinct_outside_the_ephemeral_range_and_never_reused() {
        let first: [SocketAddr; 8] = reserved_addrs();
        let second: [SocketAddr; 8] = reserved_addrs();
        let mut ports: Vec<u16> = first.iter().chain(&second).map(|a| a.port()).collect();
        assert!(ports.iter().all(|&p| (FIRST..LAST).contains(&u32::from(p))));
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 16, "a port was handed out twice");
    }

    #[test]
    fn a_port_held_elsewhere_is_skipped() {
        let taken = reserved_addr();
        let _held = TcpListener::bind(taken).expect("rebind the released port");
        // An allocator whose next port is the held one must move past it.
        let next = AtomicU32::new(u32::from(taken.port()) - FIRST);
        let [addr] = reserve_from(&next);
        assert_ne!(addr, taken);
        TcpListener::bind(addr).expect("the port handed out is free");
    }
}
