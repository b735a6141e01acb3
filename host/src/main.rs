//! The `agent-inbox` binary; the command line itself lives in [`agent_inbox::cli`].

fn main() -> std::process::ExitCode {
    agent_inbox::cli::main()
}
