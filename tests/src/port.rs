//! Free TCP ports on 127.0.0.1.

use std::net::TcpListener;

/// A TCP port on 127.0.0.1 that was free a moment ago: the OS picks it (bind to port 0), and
/// the listener is closed again before returning.
///
/// There is a small race: between this call and the server binding it, another process may
/// take the port. The service helpers in this crate notice ("address already in use" in the
/// server's log before it became ready) and retry with a new port; a test starting its own
/// server should fail with that server's log rather than hang.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 to find a free port");
    listener
        .local_addr()
        .expect("local address of a bound listener")
        .port()
}
