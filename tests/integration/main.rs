//! Integration tests: one binary, real sockets, real agents, real peers.

mod core_loop;
