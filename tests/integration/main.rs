//! Integration tests: one binary, real sockets, real agents, real peers.

mod cli;
mod core_loop;
mod durability;
mod errors;
mod examples;
mod loops;
mod plugins;
mod reads;
mod relay;
mod reload;
mod send;
mod turns;
