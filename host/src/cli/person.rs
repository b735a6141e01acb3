//! Who the person at the command line is, for what the inbox records as theirs (a decision, a
//! cancel).

/// Who decides (or cancels): `--by`, else the user's login name: `$USER` or `$LOGNAME`, else the OS's
/// account of this process's user (so it works where neither is set, as under a service
/// manager or in a container).
pub(super) fn by(given: Option<String>) -> anyhow::Result<String> {
    let set = |b: &String| !b.trim().is_empty();
    given
        .filter(set)
        .or_else(|| std::env::var("USER").ok().filter(set))
        .or_else(|| std::env::var("LOGNAME").ok().filter(set))
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|u| u.name)
        })
        .filter(set)
        .ok_or_else(|| anyhow::anyhow!("cannot tell who you are: say it with --by NAME"))
}
