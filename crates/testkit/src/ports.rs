//! Free loopback ports, for servers that cannot be told to bind port 0 and report it.

use std::net::{SocketAddr, TcpListener};

/// `N` free loopback addresses: bound to port 0 together (so they differ), read, released.
/// Another process may take one before the caller binds it; a server that can bind port 0
/// and report its address (as `herald serve` does) avoids that race.
pub fn free_addrs<const N: usize>() -> std::io::Result<[SocketAddr; N]> {
    let listeners = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    let mut addrs = [SocketAddr::from(([127, 0, 0, 1], 0)); N];
    for (addr, listener) in addrs.iter_mut().zip(&listeners) {
        *addr = listener.local_addr()?;
    }
    Ok(addrs)
}
