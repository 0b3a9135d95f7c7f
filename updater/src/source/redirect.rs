//! Redirects, followed by the HTTP source itself (not by ureq): where a
//! `Location` points, and which targets are refused.

use super::is_url;

/// `http://h/a/../b/./c` -> `http://h/b/c`: the dot segments of a URL's
/// path removed (RFC 3986 5.2.4), as a relative `Location` needs.
fn remove_dot_segments(url: &str) -> String {
    let end = url.find(['?', '#']).unwrap_or(url.len());
    let (base, rest) = url.split_at(end);
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let Some(slash) = base[after_scheme..].find('/').map(|i| after_scheme + i) else {
        return url.to_string();
    };
    let (origin, path) = base.split_at(slash);
    let segs: Vec<&str> = path[1..].split('/').collect();
    let mut out: Vec<&str> = Vec::new();
    for (i, seg) in segs.iter().enumerate() {
        let last = i + 1 == segs.len();
        match *seg {
            "." | ".." => {
                if *seg == ".." {
                    out.pop();
                }
                if last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    format!("{origin}/{}{rest}", out.join("/"))
}

/// Where a redirect's `Location` points, resolved against the URL that
/// answered with it; anything but http(s) is refused.
pub(super) fn redirect_target(from: &str, location: &str) -> Result<String, String> {
    let location = location.trim();
    // A scheme is `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) ":"` (RFC 3986).
    let scheme = location.split_once(':').map(|(s, _)| s).filter(|s| {
        let mut c = s.chars();
        c.next().is_some_and(|f| f.is_ascii_alphabetic())
            && c.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    });
    let target = match scheme {
        Some(_) => location.to_string(),
        None if location.starts_with("//") => {
            let scheme = from.split_once("://").map_or("http", |(s, _)| s);
            format!("{scheme}:{location}")
        }
        None => remove_dot_segments(&crate::feed::doc::resolve_url(from, location)),
    };
    if !is_url(&target.to_ascii_lowercase()) {
        return Err(format!(
            "{from}: redirect to a non-HTTP URL {location} refused"
        ));
    }
    Ok(target)
}
