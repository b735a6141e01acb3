//! Integration tests: one binary, real sockets, real agents, real peers.

mod a2a;
mod agent_config;
mod agents;
mod approvals;
mod auth_limits;
mod cli;
mod compat;
mod console;
mod contract;
mod core_loop;
mod durability;
mod errors;
mod examples;
mod gateway;
mod limits;
mod loops;
mod observability;
mod plugins;
mod reads;
mod relay;
mod reload;
mod secrets;
mod send;
mod signed;
mod tls;
mod turns;
