//! warpdrive's control plane: [`server`] answers the REST API of [`api`] on the local socket
//! and, authenticated by [`auth`], on a TCP address; [`jobs`] keeps warm jobs running in the
//! daemon and on disk across restarts; [`client`] is what `warpdrive-mount ctl` speaks.

pub mod api;
pub mod auth;
pub mod client;
pub mod jobs;
pub mod server;
