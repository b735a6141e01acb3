//! Query strings: the one reader of `?key=value` parameters and of the values the API takes
//! there (yes/no flags, `limit`, `timeout`). Pure, so the handlers and the `query` fuzz target
//! run the same code; a bad value is an error that names the parameter, never a panic.

/// A parameter, decoded (`%XX` and `+`); the first non-empty one wins, and an empty value
/// counts as absent.
pub fn param(query: Option<&str>, key: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, v)| k == key && !v.is_empty())
        .map(|(_, v)| v.into_owned())
}

/// A yes/no parameter: `true`/`1` or `false`/`0`, false when absent.
pub fn flag(query: Option<&str>, name: &str) -> Result<bool, String> {
    match param(query, name).as_deref() {
        None | Some("0" | "false") => Ok(false),
        Some("1" | "true") => Ok(true),
        Some(_) => Err(format!("{name} must be true, false, 1 or 0")),
    }
}

/// The `limit` parameter: a positive integer, `default` when absent, and `max` when larger (a
/// client asking for everything gets the most there is, not an error).
pub fn limit(query: Option<&str>, default: u32, max: u32) -> Result<u32, String> {
    let Some(text) = param(query, "limit") else {
        return Ok(default);
    };
    if !text.bytes().all(|b| b.is_ascii_digit()) || text.bytes().all(|b| b == b'0') {
        return Err("limit must be a positive integer".into());
    }
    // All digits: only an overflow fails to parse, and that is over `max` too.
    Ok(text.parse::<u32>().map_or(max, |n| n.min(max)))
}

/// The `timeout` parameter of a stream: a positive number of seconds, if given.
pub fn timeout_secs(query: Option<&str>) -> Result<Option<u32>, String> {
    match param(query, "timeout") {
        None => Ok(None),
        Some(t) => t
            .parse::<u32>()
            .ok()
            .filter(|n| *n > 0)
            .map(Some)
            .ok_or_else(|| "timeout must be a positive number of seconds".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_read_as_the_api_documents_them() {
        assert_eq!(param(Some("a=1&b=x%20y+z"), "b").as_deref(), Some("x y z"));
        assert_eq!(param(Some("a=&a=2"), "a").as_deref(), Some("2"));
        assert_eq!(param(None, "a"), None);
        assert_eq!(flag(Some("dead=true"), "dead"), Ok(true));
        assert_eq!(flag(Some("dead=0"), "dead"), Ok(false));
        assert!(flag(Some("dead=yes"), "dead").is_err());
        assert_eq!(limit(None, 100, 1000), Ok(100));
        assert_eq!(limit(Some("limit=5000"), 100, 1000), Ok(1000));
        assert_eq!(limit(Some("limit=99999999999999"), 100, 1000), Ok(1000));
        assert!(limit(Some("limit=0"), 100, 1000).is_err());
        assert!(limit(Some("limit=-1"), 100, 1000).is_err());
        assert_eq!(timeout_secs(Some("timeout=8")), Ok(Some(8)));
        assert!(timeout_secs(Some("timeout=0")).is_err());
    }
}
