//! The listening socket of `serve`: the one a service manager passes (systemd socket activation,
//! `LISTEN_FDS`), else one bound from `[server] listen`. A passed socket keeps the port held
//! across restarts, so no other process can take it between an exit and the next start, and
//! connections that arrive meanwhile wait in its backlog instead of being refused.

use std::net::SocketAddr;
use std::sync::Mutex;

use anyhow::Context as _;
use tokio::net::TcpListener;

/// Backlog for a passed socket that is bound but not yet listening (as tokio's own bind uses).
const BACKLOG: i32 = 1024;

/// The socket taken from the environment at start, until `serve` takes it.
static PASSED: Mutex<Option<std::io::Result<std::net::TcpListener>>> = Mutex::new(None);

/// Takes a passed socket out of the environment (and the `LISTEN_*` variables with it, so no
/// agent inherits them). Called first thing in `main`, before any other thread runs: removing
/// variables is only sound then.
pub fn take_passed() {
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() == 0 {
        return;
    }
    let taken = fds
        .take_tcp_listener(0)
        .and_then(|l| l.ok_or_else(|| std::io::Error::other("LISTEN_FDS names no socket")));
    *PASSED.lock().unwrap_or_else(|e| e.into_inner()) = Some(taken);
}

/// The passed socket if there is one (made to listen if it is only bound), else `listen` bound.
pub(crate) async fn open(listen: SocketAddr) -> anyhow::Result<TcpListener> {
    let passed = PASSED.lock().unwrap_or_else(|e| e.into_inner()).take();
    let Some(passed) = passed else {
        return TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"));
    };
    let socket = socket2::Socket::from(passed.context("the socket passed in LISTEN_FDS")?);
    // listen() again on a listening socket only sets its backlog.
    socket
        .listen(BACKLOG)
        .context("cannot listen on the socket passed in LISTEN_FDS")?;
    socket.set_nonblocking(true)?;
    let listener = TcpListener::from_std(socket.into())?;
    let addr = listener.local_addr()?;
    if addr != listen {
        tracing::warn!(
            passed = %addr,
            listen = %listen,
            "serving on the socket the service manager passed; [server] listen is not used"
        );
    }
    Ok(listener)
}
