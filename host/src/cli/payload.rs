//! `--payload` arguments: JSON as given, from a file, or from stdin.

use anyhow::Context as _;

/// `--payload`: JSON as given, `@FILE` read from a file, or `-` read from stdin; checked to be
/// JSON before anything is sent.
pub(super) fn read_payload(arg: &str) -> anyhow::Result<String> {
    let text = if arg == "-" {
        std::io::read_to_string(std::io::stdin()).context("read the payload from stdin")?
    } else if let Some(path) = arg.strip_prefix('@') {
        std::fs::read_to_string(path).with_context(|| format!("read the payload from {path}"))?
    } else {
        arg.to_owned()
    };
    serde_json::from_str::<serde::de::IgnoredAny>(&text)
        .context("the payload is not valid JSON")?;
    Ok(text)
}
