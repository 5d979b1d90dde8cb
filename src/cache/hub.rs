//! HTTP side: hub API calls, `resolve` downloads, manual redirects (so the first hop's
//! `X-Linked-Etag` is kept and the token never leaves the endpoint's origin), error
//! mapping and retry with exponential back-off.

use std::io::Read;
use std::time::Duration;

use serde_json::Value;

use super::layout::{normalize_etag, url_encode};
use crate::error::{Error, ErrorKind, Result};

const MAX_REDIRECTS: usize = 10;

/// What a request is about, for error messages.
pub(crate) struct Ctx<'a> {
    pub repo: &'a str,
    pub rev: &'a str,
    pub path: Option<&'a str>,
}

/// A failed attempt and whether trying again could help (5xx, 429, connection errors).
pub(crate) struct Failure {
    pub err: Error,
    pub retryable: bool,
}

/// A final (non-redirect) response plus the hub headers seen on any hop, first hop first.
pub(crate) struct HubResponse {
    pub status: u16,
    pub content_length: Option<u64>,
    pub content_range: Option<String>,
    pub linked_etag: Option<String>,
    pub linked_size: Option<u64>,
    pub etag: Option<String>,
    pub link: Option<String>,
    pub body: Box<dyn Read + Send + Sync>,
}

pub(crate) struct Hub {
    agent: ureq::Agent,
    pub endpoint: String,
    origin: String,
    token: Option<String>,
    pub retries: u32,
    pub retry_base: Duration,
    pub retry_max: Duration,
}

/// `scheme://host[:port]`, lowercased: the unit the token is scoped to.
fn origin_of(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    format!(
        "{}://{}",
        scheme.to_ascii_lowercase(),
        host.to_ascii_lowercase()
    )
}

fn join_location(current: &str, loc: &str) -> String {
    if loc.contains("://") {
        loc.to_string()
    } else if loc.starts_with("//") {
        let scheme = current.split("://").next().unwrap_or("https");
        format!("{scheme}:{loc}")
    } else if loc.starts_with('/') {
        format!("{}{loc}", origin_of(current))
    } else {
        let base = current.split(['?', '#']).next().unwrap_or(current);
        match base.rfind('/') {
            Some(i) if i > base.find("://").map_or(0, |j| j + 2) => {
                format!("{}{loc}", &base[..=i])
            }
            _ => format!("{base}/{loc}"),
        }
    }
}

impl Hub {
    pub fn new(
        endpoint: &str,
        token: Option<String>,
        user_agent: &str,
        connect_timeout: Duration,
        read_timeout: Duration,
    ) -> Hub {
        let agent = ureq::AgentBuilder::new()
            .redirects(0) // followed by hand, see module doc
            .timeout_connect(connect_timeout)
            .timeout_read(read_timeout)
            .user_agent(user_agent)
            .build();
        let endpoint = endpoint.trim_end_matches('/').to_string();
        Hub {
            agent,
            origin: origin_of(&endpoint),
            endpoint,
            token: token.filter(|t| !t.is_empty()),
            retries: 5,
            retry_base: Duration::from_millis(200),
            retry_max: Duration::from_secs(10),
        }
    }

    #[cfg(test)]
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    pub fn backoff(&self, attempt: u32) -> Duration {
        let d = self.retry_base.saturating_mul(1u32 << attempt.min(16));
        d.min(self.retry_max)
    }

    pub fn resolve_url(&self, repo: &str, rev: &str, path: &str) -> String {
        format!(
            "{}/{}/resolve/{}/{}",
            self.endpoint,
            repo,
            url_encode(rev, false),
            url_encode(path, true)
        )
    }

    /// One attempt: send, follow redirects, map the final status. `range` asks for
    /// `bytes=N-`.
    pub fn request_once(
        &self,
        method: &str,
        url: &str,
        range: Option<u64>,
        ctx: &Ctx,
    ) -> std::result::Result<HubResponse, Failure> {
        let mut url = url.to_string();
        let mut first: Vec<(String, String)> = Vec::new();
        for _ in 0..=MAX_REDIRECTS {
            let mut req = self
                .agent
                .request(method, &url)
                .set("Accept-Encoding", "identity");
            if let (Some(t), true) = (&self.token, origin_of(&url) == self.origin) {
                req = req.set("Authorization", &format!("Bearer {t}"));
            }
            if let Some(n) = range {
                req = req.set("Range", &format!("bytes={n}-"));
            }
            let resp = match req.call() {
                Ok(r) => r,
                Err(ureq::Error::Status(code, r)) => {
                    // Past a redirect to another host (the CDN) the token is not sent,
                    // so a refusal there says nothing about the token.
                    let elsewhere = (origin_of(&url) != self.origin).then(|| origin_of(&url));
                    return Err(map_status(code, &r, ctx, elsewhere.as_deref()));
                }
                Err(ureq::Error::Transport(t)) => {
                    return Err(Failure {
                        err: Error::new(
                            ErrorKind::Network,
                            format!("{method} {url}: {}", transport_text(&t)),
                        ),
                        retryable: true,
                    })
                }
            };
            for h in ["x-linked-etag", "x-linked-size", "x-repo-commit", "etag"] {
                if let Some(v) = resp.header(h) {
                    if !first.iter().any(|(k, _)| k == h) {
                        first.push((h.to_string(), v.to_string()));
                    }
                }
            }
            let status = resp.status();
            if (300..400).contains(&status) && status != 304 {
                let Some(loc) = resp.header("location") else {
                    return Err(Failure {
                        err: Error::new(
                            ErrorKind::Network,
                            format!("{url}: redirect {status} without Location"),
                        ),
                        retryable: false,
                    });
                };
                url = join_location(&url, loc);
                continue;
            }
            let get = |h: &str| first.iter().find(|(k, _)| k == h).map(|(_, v)| v.clone());
            return Ok(HubResponse {
                status,
                content_length: resp.header("content-length").and_then(|v| v.parse().ok()),
                content_range: resp.header("content-range").map(str::to_string),
                linked_etag: get("x-linked-etag").map(|v| normalize_etag(&v)),
                linked_size: get("x-linked-size").and_then(|v| v.parse().ok()),
                etag: get("etag").map(|v| normalize_etag(&v)),
                link: resp.header("link").map(str::to_string),
                body: resp.into_reader(),
            });
        }
        Err(Failure {
            err: Error::new(ErrorKind::Network, format!("too many redirects from {url}")),
            retryable: false,
        })
    }

    /// `request_once` with retries and back-off for transient failures.
    pub fn request(&self, method: &str, url: &str, ctx: &Ctx) -> Result<HubResponse> {
        let mut attempt = 0;
        loop {
            match self.request_once(method, url, None, ctx) {
                Ok(r) => return Ok(r),
                Err(f) if f.retryable && attempt < self.retries => {
                    std::thread::sleep(self.backoff(attempt));
                    attempt += 1;
                }
                Err(f) if f.retryable => {
                    return Err(f.err.context(format!("after {} retries", self.retries)))
                }
                Err(f) => return Err(f.err),
            }
        }
    }

    /// GET an API URL and parse JSON (the read is covered by the retry too).
    pub fn get_json(&self, url: &str, ctx: &Ctx) -> Result<(Value, Option<String>)> {
        let mut attempt = 0;
        loop {
            let resp = self.request("GET", url, ctx)?;
            let link = resp.link.clone();
            let mut body = Vec::new();
            let mut r = resp.body;
            match r.read_to_end(&mut body) {
                Ok(_) => {
                    let v = serde_json::from_slice(&body).map_err(|e| {
                        Error::new(ErrorKind::Network, format!("{url}: invalid JSON: {e}"))
                    })?;
                    return Ok((v, link));
                }
                Err(e) if attempt < self.retries => {
                    let _ = e;
                    std::thread::sleep(self.backoff(attempt));
                    attempt += 1;
                }
                Err(e) => return Err(Error::new(ErrorKind::Network, format!("{url}: {e}"))),
            }
        }
    }
}

/// `elsewhere`: the origin that answered, when it is not the hub's (a redirect target).
/// A transport error without its URL (ureq's Display starts with it, and the
/// message already names the request).
fn transport_text(t: &ureq::Transport) -> String {
    let mut s = t.kind().to_string();
    if let Some(m) = t.message() {
        s.push_str(": ");
        s.push_str(m);
    }
    if let Some(src) = std::error::Error::source(t) {
        s.push_str(": ");
        s.push_str(&src.to_string());
    }
    s
}

fn map_status(code: u16, r: &ureq::Response, ctx: &Ctx, elsewhere: Option<&str>) -> Failure {
    let xcode = r.header("x-error-code").unwrap_or("").to_string();
    let xmsg = r.header("x-error-message").unwrap_or("").to_string();
    let repo = ctx.repo;
    let what = match ctx.path {
        Some(p) => format!("{p} in {repo}@{}", ctx.rev),
        None => format!("{repo}@{}", ctx.rev),
    };
    let suffix = if xmsg.is_empty() {
        format!("HTTP {code}")
    } else {
        format!("HTTP {code}: {xmsg}")
    };
    let (kind, msg, retryable) = match (code, xcode.as_str()) {
        (_, "RepoNotFound") => (
            ErrorKind::NotFound,
            format!("repository {repo} not found (if it is private or gated, set HF_TOKEN) ({suffix})"),
            false,
        ),
        (_, "RevisionNotFound") => (
            ErrorKind::NotFound,
            format!("revision {} not found in {repo} ({suffix})", ctx.rev),
            false,
        ),
        (_, "EntryNotFound") => (
            ErrorKind::NotFound,
            format!("file {} not found ({suffix})", what),
            false,
        ),
        (401 | 403, _) if elsewhere.is_some() => (
            ErrorKind::Network,
            format!(
                "{what}: the download host {} refused the redirected request ({suffix}); the hub's token is never sent there, so this is not a token problem: the signed link may have expired or the host denies access — try again",
                elsewhere.unwrap_or_default()
            ),
            false,
        ),
        (401 | 403, _) => (
            ErrorKind::Unauthorized,
            format!("repo {repo} is gated or private: set HF_TOKEN (or accept its terms on the hub) ({suffix})"),
            false,
        ),
        (404, _) => (ErrorKind::NotFound, format!("{what} not found ({suffix})"), false),
        (429, _) => (ErrorKind::Network, format!("{what}: rate limited ({suffix})"), true),
        (500..=599, _) => (ErrorKind::Network, format!("{what}: server error ({suffix})"), true),
        _ => (ErrorKind::Network, format!("{what}: unexpected {suffix}"), false),
    };
    Failure {
        err: Error::new(kind, msg),
        retryable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_and_locations() {
        assert_eq!(origin_of("https://HF.co/a/b?x"), "https://hf.co");
        assert_eq!(origin_of("http://127.0.0.1:80/x"), "http://127.0.0.1:80");
        assert_ne!(
            origin_of("http://127.0.0.1:1/"),
            origin_of("http://127.0.0.1:2/")
        );
        assert_eq!(join_location("https://a.b/x/y", "/z"), "https://a.b/z");
        assert_eq!(join_location("https://a.b/x/y", "http://c/d"), "http://c/d");
        assert_eq!(join_location("https://a.b/x/y", "//c/d"), "https://c/d");
        assert_eq!(join_location("https://a.b/x/y", "z"), "https://a.b/x/z");
    }
}
