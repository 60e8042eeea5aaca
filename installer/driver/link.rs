//! Driver links: redaction, the portal link's expiry, the downloaded file's name.
//!
//! A licensing-portal link carries an Akamai EdgeAuth token in its query
//! (`?autho=st=<epoch>~exp=<epoch>~acl=<path>~hmac=<hex>`): anyone holding it can download the
//! licensed driver until `exp`. It is a credential, so nothing outside this module and the HTTP
//! request itself ever sees the query: messages, logs, progress and file names use
//! [`redact_url`], and [`SecretUrl`] only shows its redacted form through `Display`/`Debug`.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What replaces a query string or user info.
pub const REDACTED: &str = "<redacted>";

/// Where a fresh link comes from.
pub const PORTAL: &str = "https://ui.licensing.nvidia.com/software";

/// A URL whose query (and user info) is a credential. Shown only redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> SecretUrl {
        SecretUrl(url.into())
    }
    /// The full URL, for the HTTP request only.
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }
    /// Remove every trace of this URL's secret parts from a message (belt and braces for error
    /// texts produced by libraries that embed the URL).
    pub fn scrub(&self, text: &str) -> String {
        scrub_secrets(text, &self.0)
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretUrl({:?})", self.redacted())
    }
}

/// The URL with its query string and user info replaced by `<redacted>` and its fragment
/// dropped: `https://h/p/x.zip?autho=...` -> `https://h/p/x.zip?<redacted>`.
pub fn redact_url(url: &str) -> String {
    let (before_frag, _) = url.split_once('#').unwrap_or((url, ""));
    let (base, query) = match before_frag.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (before_frag, None),
    };
    let mut out = redact_userinfo(base);
    if query.is_some() {
        out.push('?');
        out.push_str(REDACTED);
    }
    out
}

fn redact_userinfo(base: &str) -> String {
    let Some(scheme_end) = base.find("://") else {
        return base.to_string();
    };
    let rest = &base[scheme_end + 3..];
    let auth_end = rest.find('/').unwrap_or(rest.len());
    match rest[..auth_end].rfind('@') {
        Some(at) => format!("{}{REDACTED}@{}", &base[..scheme_end + 3], &rest[at + 1..]),
        None => base.to_string(),
    }
}

/// Replace the query string, user info and every token value of `url` found in `text`.
pub fn scrub_secrets(text: &str, url: &str) -> String {
    let mut out = text.replace(url, &redact_url(url));
    let mut secrets: Vec<String> = Vec::new();
    if let Some((base, q)) = url.split_once('?') {
        let q = q.split('#').next().unwrap_or(q);
        secrets.push(q.to_string());
        // Individual values too: a library may print a decoded or partial query.
        for part in q.split(['&', '~', ';']) {
            if let Some((_, v)) = part.split_once('=') {
                let v = v.rsplit('=').next().unwrap_or(v);
                // The acl repeats the (public) path; only values that are not in it are secret.
                if v.len() >= 8 && !base.contains(v) {
                    secrets.push(v.to_string());
                }
            }
        }
    }
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..auth_end].rfind('@') {
            secrets.push(rest[..at].to_string());
        }
    }
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(s.as_str(), REDACTED);
    }
    out
}

/// The token fields of a portal link (`st`, `exp`, `acl`), if the link has one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortalToken {
    pub start: Option<u64>,
    pub expires: u64,
}

impl PortalToken {
    pub fn expires_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.expires)
    }
    pub fn is_expired(&self, now: SystemTime) -> bool {
        self.expires_at() <= now
    }
}

/// The latest time a token may name: 9999-12-31 23:59:59 UTC. Anything later is not a Unix
/// time a portal writes (and would overflow `SystemTime` on some platforms).
pub const MAX_TOKEN_TIME: u64 = 253_402_300_799;

/// The token's `st` and `exp` fields as written (key, value), from the query (`autho=`,
/// `__token__=`, `hdnea=` or bare `st=...~exp=...`). Separators may be percent-encoded (`%7E`
/// for `~`, `%3D` for `=`).
fn token_fields(url: &str) -> Vec<(&'static str, String)> {
    let Some((_, q)) = url.split_once('?') else {
        return Vec::new();
    };
    let q = q.split('#').next().unwrap_or(q);
    let q = q
        .replace("%7E", "~")
        .replace("%7e", "~")
        .replace("%3D", "=")
        .replace("%3d", "=");
    let mut out = Vec::new();
    for param in q.split('&') {
        for field in param.split('~') {
            // `autho=st=1750064794`: the field is the last `key=value` of the part.
            let mut kv = field.rsplitn(3, '=');
            let (Some(value), Some(key)) = (kv.next(), kv.next()) else {
                continue;
            };
            match key {
                "st" => out.push(("st", value.to_string())),
                "exp" => out.push(("exp", value.to_string())),
                _ => {}
            }
        }
    }
    out
}

/// A token time: decimal seconds since 1970, no sign, not past [`MAX_TOKEN_TIME`].
fn token_time(value: &str) -> Option<u64> {
    if value.is_empty() || value.len() > 20 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok().filter(|t| *t <= MAX_TOKEN_TIME)
}

/// Why the link's token is malformed (`exp=-1`, `exp=abc`, `exp=1e10`, a time past year 9999),
/// or None when it is well formed or there is none. A link whose expiry cannot be read is bad
/// input, not a link without a token: it would fail only at the download, after the changes
/// before it. The reason never quotes the link or its values.
pub fn token_problem(url: &str) -> Option<String> {
    token_fields(url).into_iter().find_map(|(key, value)| {
        token_time(&value).is_none().then(|| {
            format!(
                "the link's token has a malformed `{key}` (not a Unix time in whole seconds \
                 up to year 9999): paste the link exactly as the licensing portal gives it"
            )
        })
    })
}

/// Parse the token of a portal link; None when the link has none or it is malformed (see
/// [`token_problem`]).
pub fn portal_token(url: &str) -> Option<PortalToken> {
    let mut start = None;
    let mut expires = None;
    for (key, value) in token_fields(url) {
        let t = Some(token_time(&value)?);
        match key {
            "st" => start = t,
            _ => expires = t,
        }
    }
    Some(PortalToken {
        start,
        expires: expires?,
    })
}

/// The last segment of the URL's path (no query), made safe for a file name. `None` when the
/// path has no usable last segment.
pub fn file_name(url: &str) -> Option<String> {
    let no_query = url.split(['?', '#']).next().unwrap_or(url);
    let path = match no_query.find("://") {
        Some(i) => {
            let rest = &no_query[i + 3..];
            &rest[rest.find('/')?..]
        }
        None => no_query,
    };
    let last = path.rsplit('/').next()?;
    let decoded = percent_decode(last);
    let safe: String = decoded
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._+-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let safe = safe.trim_start_matches('.').to_string();
    (!safe.is_empty()).then_some(safe)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A UTC date-time like `2025-06-16 10:06:34 UTC` (civil-from-days, no time zone database).
pub fn utc_string(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed's link (long expired).
    const SEED: &str = "https://griddownloads.nvidia.com/ems/sec/vGPU17.6/NVIDIA-GRID-Linux-KVM-550.163.02-550.163.01-553.74.zip?autho=st=1750064794~exp=1750068394~acl=/ems/sec/vGPU17.6/NVIDIA-GRID-Linux-KVM-550.163.02-550.163.01-553.74.zip~hmac=a5d806ec403b7ddbfe74cd163432eb9a17b0b0eab0eca6ee6c8192ef1a7352b7";
    const HMAC: &str = "a5d806ec403b7ddbfe74cd163432eb9a17b0b0eab0eca6ee6c8192ef1a7352b7";

    #[test]
    fn redacts_the_query() {
        assert_eq!(
            redact_url(SEED),
            "https://griddownloads.nvidia.com/ems/sec/vGPU17.6/NVIDIA-GRID-Linux-KVM-550.163.02-550.163.01-553.74.zip?<redacted>"
        );
        assert_eq!(redact_url("https://h/p/x.zip"), "https://h/p/x.zip");
        assert_eq!(
            redact_url("https://user:pw@mirror.lan:8443/x.run?t=1#frag"),
            "https://<redacted>@mirror.lan:8443/x.run?<redacted>"
        );
        let s = SecretUrl::new(SEED);
        assert!(!format!("{s} {s:?}").contains(HMAC));
    }

    #[test]
    fn scrub_removes_the_url_and_its_values_from_library_errors() {
        let msg = format!("error sending request for url ({SEED}): connection refused");
        let out = scrub_secrets(&msg, SEED);
        assert!(!out.contains(HMAC), "{out}");
        assert!(out.contains("553.74.zip?<redacted>"), "{out}");
        let partial = format!("bad token hmac={HMAC}");
        assert!(!scrub_secrets(&partial, SEED).contains(HMAC));
    }

    #[test]
    fn parses_the_seed_token() {
        let t = portal_token(SEED).unwrap();
        assert_eq!(t.start, Some(1_750_064_794));
        assert_eq!(t.expires, 1_750_068_394);
        assert_eq!(t.expires - t.start.unwrap(), 3600);
        assert_eq!(utc_string(t.expires_at()), "2025-06-16 10:06:34 UTC");
        assert!(t.is_expired(UNIX_EPOCH + Duration::from_secs(1_750_068_394)));
        assert!(!t.is_expired(UNIX_EPOCH + Duration::from_secs(1_750_068_393)));
        // Percent-encoded separators and other token parameter names.
        let enc = "https://h/x.zip?__token__=st%3D1%7Eexp%3D1700000000%7Ehmac%3Dab";
        assert_eq!(portal_token(enc).unwrap().expires, 1_700_000_000);
        assert_eq!(portal_token("https://h/x.zip?v=2"), None);
        assert_eq!(portal_token("https://h/x.zip"), None);
        assert_eq!(token_problem(SEED), None);
        assert_eq!(token_problem("https://h/x.zip?v=2"), None);
    }

    /// Issue 12, item 5: a malformed expiry is a bad link, not a link without a token.
    #[test]
    fn malformed_token_times_are_named_without_the_link() {
        for bad in [
            "-1",
            "abc",
            "1e10",
            "",
            "253402300800",
            "99999999999999999999999",
            "+5",
        ] {
            let url = SEED.replace("exp=1750068394", &format!("exp={bad}"));
            let p = token_problem(&url).unwrap_or_else(|| panic!("{bad:?} accepted"));
            assert!(p.contains("`exp`") && !p.contains(HMAC), "{p}");
            assert_eq!(portal_token(&url), None, "{bad:?}");
        }
        let url = SEED.replace("st=1750064794", "st=x");
        assert!(token_problem(&url).unwrap().contains("`st`"));
        let url = SEED.replace("exp=1750068394", "exp=253402300799");
        assert_eq!(token_problem(&url), None);
    }

    #[test]
    fn file_name_is_the_last_path_segment_only() {
        assert_eq!(
            file_name(SEED).unwrap(),
            "NVIDIA-GRID-Linux-KVM-550.163.02-550.163.01-553.74.zip"
        );
        assert_eq!(file_name("https://h/a/b%20c.run").unwrap(), "b_c.run");
        assert_eq!(file_name("https://h/").as_deref(), None);
        assert_eq!(file_name("https://h").as_deref(), None);
        assert_eq!(file_name("https://h/..").as_deref(), None);
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc_string(UNIX_EPOCH), "1970-01-01 00:00:00 UTC");
        assert_eq!(
            utc_string(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29 00:00:00 UTC"
        );
    }
}
