//! The signals that ask a process to stop gracefully: SIGTERM (service managers, and Lambda's
//! SHUTDOWN phase once an extension is registered) and SIGINT (Ctrl-C). The standalone server
//! and the Lambda functions wait on the same ones.

use std::future::Future;

/// Starts listening now and returns a future that ends at the first SIGTERM or SIGINT.
///
/// The listeners are installed before this returns, not when the future is first polled: a
/// signal that arrives while the caller is still starting up is then caught, not fatal.
/// Where a listener cannot be installed, only the other one is waited for (and Ctrl-C only,
/// off Unix).
pub fn requested() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate()).ok();
        let mut interrupt = signal(SignalKind::interrupt()).ok();
        async move {
            let term = async {
                match terminate.as_mut() {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            };
            let int = async {
                match interrupt.as_mut() {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = term => {}
                _ = int => {}
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
