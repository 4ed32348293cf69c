//! Several nodes behind ECMP routers.
//!
//! - [`sync`]: the connection-sync wire format, its parser and encoder,
//!   authentication and the replay guard (sans-IO).
//! - [`syncd`]: the sync thread, the I/O side of [`sync`].
//! - [`bird`]: telling the node's BIRD which VIPs to announce, over its
//!   control socket.

pub mod bird;
pub mod sync;
pub mod syncd;
