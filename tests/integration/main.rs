//! Integration tests: each starts the real `trellis` binary on a loopback port with a temporary
//! database and talks HTTP to it, as a client would.

mod harness;

mod account;
mod admin;
mod backup;
mod bench;
mod concurrency;
mod context;
mod dag;
mod data;
mod device_lists;
mod devices;
mod directory;
mod discovery;
mod durability;
mod guests;
mod http_errors;
mod key_errors;
mod keys;
mod launcher;
mod lifecycle;
mod login;
mod media;
mod migration;
mod pagination;
mod peer_nio;
mod presence;
mod push;
mod push_shared;
mod register;
mod relations;
mod room_helpers;
mod rooms;
mod state_keys;
mod sync;
mod sync_filters;
mod sync_knock;
mod tags;
mod threads;
mod to_device;
mod upgrade;
mod writer;
