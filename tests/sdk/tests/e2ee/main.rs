//! End-to-end encryption through Trellis with real client crypto: matrix-sdk (Rust, Olm and
//! Megolm by vodozemac) and matrix-nio (Python) clients against the real server binary.

mod backup;
mod cross_signing;
mod federation;
mod federation_synapse;
mod federation_verify;
mod harness;
mod messages;
mod nio;
mod room_list;
mod synapse;
