//! The `agent-inbox` command, built inside the tests package so tests can find it.

fn main() -> std::process::ExitCode {
    agent_inbox::cli::main()
}
