//! End-to-end tests against a tiny hub imitation (hub + CDN listeners on 127.0.0.1).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use super::*;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const TOKEN: &str = "good-token";

#[derive(Clone, Debug)]
struct Req {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    cdn: bool,
}

impl Req {
    fn header(&self, k: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

struct FileSpec {
    path: String,
    data: Vec<u8>,
    lfs: bool,
}

impl FileSpec {
    fn sha(&self) -> String {
        sha256_bytes(&self.data)
    }
    /// The git blob id, as the hub gives it for non-LFS files (`blobId`, `oid`, ETag).
    fn git_oid(&self) -> String {
        layout::git_blob_sha1(&self.data)
    }
}

struct RepoSpec {
    id: String,
    files: Vec<FileSpec>,
    gated: bool,
}

#[derive(Default)]
struct State {
    repos: Vec<RepoSpec>,
    requests: Vec<Req>,
    cdn: Option<String>,
    /// 0: full API; 1: sizes/lfs only in the tree API; 2: neither (HEAD needed).
    api_mode: u8,
    drops: u32,
    drop_at: usize,
    fail_503: u32,
    corrupt: bool,
    ignore_range: bool,
    slow: bool,
    /// Flip a byte of non-LFS files (same length).
    flip_small: bool,
    /// The CDN answers 403 (e.g. an expired signed link).
    cdn_403: bool,
    /// Close-delimited bodies: no Content-Length, so a cut body just ends.
    no_length: bool,
}

struct FakeHub {
    st: Arc<Mutex<State>>,
    url: String,
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    send_body: bool,
    drop_after: Option<usize>,
    slow: bool,
    no_length: bool,
}

fn reply(status: u16, headers: Vec<(&str, String)>, body: Vec<u8>) -> Reply {
    Reply {
        status,
        headers: headers
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        body,
        send_body: true,
        drop_after: None,
        slow: false,
        no_length: false,
    }
}

fn data(n: usize, seed: u64) -> Vec<u8> {
    let mut next = crate::gguf::testgen::seeded(seed);
    (0..n).map(|_| next() as u8).collect()
}

fn listen(st: Arc<Mutex<State>>, cdn: bool) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let st = st.clone();
            std::thread::spawn(move || serve(s, st, cdn));
        }
    });
    url
}

fn serve(s: TcpStream, st: Arc<Mutex<State>>, cdn: bool) {
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    if r.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut it = line.split_whitespace();
    let method = it.next().unwrap_or("").to_string();
    let target = it.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let req = Req {
        method,
        target,
        headers,
        cdn,
    };
    let rep = {
        let mut g = st.lock().unwrap();
        g.requests.push(req.clone());
        handle(&mut g, &req)
    };
    let mut w = s;
    let mut head = format!("HTTP/1.1 {} X\r\nConnection: close\r\n", rep.status);
    if !rep.no_length {
        head.push_str(&format!("Content-Length: {}\r\n", rep.body.len()));
    }
    for (k, v) in &rep.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = w.write_all(head.as_bytes());
    if rep.send_body {
        let body = &rep.body[..rep.drop_after.unwrap_or(usize::MAX).min(rep.body.len())];
        for chunk in body.chunks(16 * 1024) {
            if w.write_all(chunk).is_err() {
                return;
            }
            if rep.slow {
                std::thread::sleep(Duration::from_millis(3));
            }
        }
    }
    let _ = w.flush();
    let _ = w.shutdown(std::net::Shutdown::Both);
}

fn handle(g: &mut State, req: &Req) -> Reply {
    let path = req.target.split('?').next().unwrap_or("").to_string();
    if req.cdn {
        if g.cdn_403 {
            return reply(403, vec![], b"AccessDenied".to_vec());
        }
        let sha = path.trim_start_matches("/blob/");
        let found = g
            .repos
            .iter()
            .flat_map(|r| r.files.iter())
            .find(|f| f.sha() == sha)
            .map(|f| f.data.clone());
        return match found {
            Some(d) => serve_bytes(g, req, d, vec![]),
            None => reply(404, vec![], vec![]),
        };
    }
    let authed = req.header("authorization") == Some(&format!("Bearer {TOKEN}"));
    let (api, rest) = match path.strip_prefix("/api/models/") {
        Some(r) => (true, r.to_string()),
        None => (false, path.trim_start_matches('/').to_string()),
    };
    let Some(ri) = g
        .repos
        .iter()
        .position(|r| rest.starts_with(&format!("{}/", r.id)))
    else {
        return reply(404, vec![("X-Error-Code", "RepoNotFound".into())], vec![]);
    };
    let repo = &g.repos[ri];
    if repo.gated && !authed {
        return reply(401, vec![("X-Error-Code", "GatedRepo".into())], vec![]);
    }
    let rest = rest[repo.id.len() + 1..].to_string();
    let (kind, rest) = rest.split_once('/').unwrap_or((&rest, ""));
    let (rev, file) = rest.split_once('/').unwrap_or((rest, ""));
    if rev != "main" && rev != COMMIT {
        return reply(
            404,
            vec![("X-Error-Code", "RevisionNotFound".into())],
            vec![],
        );
    }
    let mode = g.api_mode;
    match (api, kind) {
        (true, "revision") => {
            let sib: Vec<_> = repo
                .files
                .iter()
                .map(|f| {
                    if mode > 0 {
                        json!({"rfilename": f.path})
                    } else if f.lfs {
                        json!({"rfilename": f.path, "size": f.data.len(),
                               "lfs": {"sha256": f.sha(), "size": f.data.len()}})
                    } else {
                        json!({"rfilename": f.path, "size": f.data.len(), "blobId": f.git_oid()})
                    }
                })
                .collect();
            let body = json!({"sha": COMMIT, "siblings": sib}).to_string();
            reply(200, vec![], body.into_bytes())
        }
        (true, "tree") => {
            let list: Vec<_> = repo
                .files
                .iter()
                .map(|f| {
                    if mode > 1 {
                        json!({"type": "file", "path": f.path})
                    } else if f.lfs {
                        json!({"type": "file", "path": f.path, "size": f.data.len(),
                               "oid": f.git_oid(), "lfs": {"oid": f.sha(), "size": f.data.len()}})
                    } else {
                        json!({"type": "file", "path": f.path, "size": f.data.len(), "oid": f.git_oid()})
                    }
                })
                .collect();
            reply(200, vec![], json!(list).to_string().into_bytes())
        }
        (false, "resolve") => {
            let Some(f) = repo.files.iter().find(|f| f.path == file) else {
                return reply(404, vec![("X-Error-Code", "EntryNotFound".into())], vec![]);
            };
            let etag = if f.lfs { f.sha() } else { f.git_oid() };
            let mut h = vec![
                ("X-Repo-Commit", COMMIT.to_string()),
                ("ETag", format!("\"{etag}\"")),
            ];
            if f.lfs {
                if let Some(cdn) = &g.cdn {
                    h.push(("X-Linked-Etag", format!("\"{}\"", f.sha())));
                    h.push(("X-Linked-Size", f.data.len().to_string()));
                    h.push(("Location", format!("{cdn}/blob/{}", f.sha())));
                    return reply(302, h, vec![]);
                }
            }
            let mut d = f.data.clone();
            if !f.lfs && g.flip_small {
                d[0] ^= 0x20;
            }
            serve_bytes(g, req, d, h)
        }
        _ => reply(404, vec![], vec![]),
    }
}

fn serve_bytes(g: &mut State, req: &Req, mut d: Vec<u8>, mut h: Vec<(&str, String)>) -> Reply {
    if req.method == "HEAD" {
        let mut r = reply(200, h, d);
        r.send_body = false;
        return r;
    }
    if g.fail_503 > 0 {
        g.fail_503 -= 1;
        return reply(503, vec![], b"busy".to_vec());
    }
    if g.corrupt {
        d[0] ^= 0xff;
    }
    let len = d.len();
    let range = req
        .header("range")
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.trim_end_matches('-').parse::<usize>().ok());
    let mut rep = match range {
        Some(n) if !g.ignore_range && n >= len => reply(416, vec![], vec![]),
        Some(n) if !g.ignore_range => {
            h.push(("Content-Range", format!("bytes {n}-{}/{len}", len - 1)));
            reply(206, h, d[n..].to_vec())
        }
        _ => reply(200, h, d),
    };
    if g.drops > 0 && rep.status != 416 {
        g.drops -= 1;
        rep.drop_after = Some(g.drop_at);
    }
    rep.slow = g.slow;
    rep.no_length = g.no_length;
    rep
}

impl FakeHub {
    fn start(repos: Vec<RepoSpec>, with_cdn: bool) -> FakeHub {
        let st = Arc::new(Mutex::new(State {
            repos,
            ..State::default()
        }));
        let url = listen(st.clone(), false);
        if with_cdn {
            let cdn = listen(st.clone(), true);
            st.lock().unwrap().cdn = Some(cdn);
        }
        FakeHub { st, url }
    }
    fn set(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.st.lock().unwrap())
    }
    fn requests(&self) -> Vec<Req> {
        self.st.lock().unwrap().requests.clone()
    }
    fn resolve_gets(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.method == "GET" && (r.cdn || r.target.contains("/resolve/")))
            .count()
    }
    fn saw_range(&self, n: u64) -> bool {
        let want = format!("bytes={n}-");
        self.requests()
            .iter()
            .any(|r| r.header("range") == Some(want.as_str()))
    }
}

fn lfs(path: &str, n: usize, seed: u64) -> FileSpec {
    FileSpec {
        path: path.into(),
        data: data(n, seed),
        lfs: true,
    }
}

fn small(path: &str, text: &str) -> FileSpec {
    FileSpec {
        path: path.into(),
        data: text.as_bytes().to_vec(),
        lfs: false,
    }
}

fn repo(id: &str, files: Vec<FileSpec>) -> RepoSpec {
    RepoSpec {
        id: id.into(),
        files,
        gated: false,
    }
}

fn std_hub(cdn: bool) -> FakeHub {
    FakeHub::start(
        vec![repo(
            "org/model",
            vec![
                lfs("model-Q4_K_M.gguf", 300_000, 1),
                lfs("model-Q8_0.gguf", 200_000, 2),
                lfs("model-Q6_K-00001-of-00002.gguf", 120_000, 3),
                lfs("model-Q6_K-00002-of-00002.gguf", 80_000, 4),
                lfs("mmproj-model-f16.gguf", 50_000, 5),
                small("config.json", "{\"a\":1}"),
                small("sub/dir/tok.json", "{}"),
            ],
        )],
        cdn,
    )
}

fn tmpdir(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!(
        "hcache-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&d);
    d
}

fn opts(root: &Path, hub: &FakeHub) -> CacheOptions {
    CacheOptions {
        root: Some(root.to_path_buf()),
        endpoint: Some(hub.url.clone()),
        offline: Some(false),
        retries: 3,
        retry_base: Duration::from_millis(1),
        retry_max: Duration::from_millis(5),
        read_timeout: Duration::from_secs(10),
        ..CacheOptions::default()
    }
}

fn open(o: CacheOptions) -> Cache {
    Cache::open_env(o, &|_| None).unwrap()
}

fn file_data(hub: &FakeHub, path: &str) -> Vec<u8> {
    let g = hub.st.lock().unwrap();
    g.repos[0]
        .files
        .iter()
        .find(|f| f.path == path)
        .unwrap()
        .data
        .clone()
}

fn go() -> impl FnMut(&str, u64, u64) -> bool {
    |_, _, _| true
}

const Q4: &str = "model-Q4_K_M.gguf";

#[test]
fn layout_blob_symlink_refs() {
    let hub = std_hub(false);
    let root = tmpdir("layout");
    let c = open(opts(&root, &hub));
    let p = c.download_file("org/model", "main", Q4, &mut go()).unwrap();
    let sha = sha256_bytes(&file_data(&hub, Q4));
    let dir = root.join("models--org--model");
    assert_eq!(p, dir.join("snapshots").join(COMMIT).join(Q4));
    assert_eq!(
        fs::read_link(&p).unwrap(),
        PathBuf::from(format!("../../blobs/{sha}"))
    );
    assert_eq!(fs::read(&p).unwrap(), file_data(&hub, Q4));
    assert!(dir.join("blobs").join(&sha).is_file());
    assert_eq!(fs::read_to_string(dir.join("refs/main")).unwrap(), COMMIT);
    // Nested non-LFS file: blob named by the git etag, link depth-adjusted.
    let p = c
        .download_file("org/model", "main", "sub/dir/tok.json", &mut go())
        .unwrap();
    let oid = layout::git_blob_sha1(b"{}");
    assert_eq!(
        fs::read_link(&p).unwrap(),
        PathBuf::from(format!("../../../../blobs/{oid}"))
    );
    assert_eq!(fs::read(&p).unwrap(), b"{}");
    assert!(c.has_file("org/model", "main", "sub/dir/tok.json"));
    assert!(c.has_file("org/model", COMMIT, Q4));
    assert!(!c.has_file("org/model", "main", "model-Q8_0.gguf"));
    // No leftovers.
    let names: Vec<String> = fs::read_dir(dir.join("blobs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    // Cached → no new network request.
    let before = hub.requests().len();
    c.download_file("org/model", "main", Q4, &mut go()).unwrap();
    assert_eq!(hub.requests().len(), before);
}

#[test]
fn resume_after_dropped_connection() {
    let hub = std_hub(false);
    hub.set(|s| {
        s.drops = 1;
        s.drop_at = 100_000;
    });
    let root = tmpdir("drop");
    let c = open(opts(&root, &hub));
    let p = c.download_file("org/model", "main", Q4, &mut go()).unwrap();
    assert_eq!(fs::read(p).unwrap(), file_data(&hub, Q4));
    assert!(hub.saw_range(100_000));
    assert_eq!(hub.resolve_gets(), 2);
}

#[test]
fn preexisting_incomplete_is_resumed_with_range() {
    let hub = std_hub(false);
    let root = tmpdir("inc");
    let d = file_data(&hub, Q4);
    let blobs = root.join("models--org--model/blobs");
    fs::create_dir_all(&blobs).unwrap();
    fs::write(
        blobs.join(format!("{}.incomplete", sha256_bytes(&d))),
        &d[..1000],
    )
    .unwrap();
    let c = open(opts(&root, &hub));
    let mut seen_start = None;
    let p = c
        .download_file("org/model", "main", Q4, &mut |_, done, _| {
            seen_start.get_or_insert(done);
            true
        })
        .unwrap();
    assert_eq!(seen_start, Some(1000));
    assert!(hub.saw_range(1000));
    assert_eq!(fs::read(p).unwrap(), d);
    assert!(!blobs
        .join(format!("{}.incomplete", sha256_bytes(&d)))
        .exists());
}

#[test]
fn range_ignored_restarts_and_verifies() {
    let hub = std_hub(false);
    hub.set(|s| s.ignore_range = true);
    let root = tmpdir("norange");
    let d = file_data(&hub, Q4);
    let blobs = root.join("models--org--model/blobs");
    fs::create_dir_all(&blobs).unwrap();
    // A wrong prefix: only a restart from zero can produce the right hash.
    fs::write(
        blobs.join(format!("{}.incomplete", sha256_bytes(&d))),
        [7u8; 5000],
    )
    .unwrap();
    let c = open(opts(&root, &hub));
    let p = c.download_file("org/model", "main", Q4, &mut go()).unwrap();
    assert!(hub.saw_range(5000));
    assert_eq!(fs::read(p).unwrap(), d);
}

fn assert_clean(root: &Path) {
    let dir = root.join("models--org--model");
    let blobs: Vec<_> = fs::read_dir(dir.join("blobs"))
        .map(|r| r.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(blobs.is_empty(), "{blobs:?}");
    assert!(!dir.join("snapshots").join(COMMIT).join(Q4).exists());
    assert!(fs::symlink_metadata(dir.join("snapshots").join(COMMIT).join(Q4)).is_err());
}

#[test]
fn checksum_mismatch_leaves_nothing() {
    let hub = std_hub(false);
    hub.set(|s| s.corrupt = true);
    let root = tmpdir("sum");
    let c = open(opts(&root, &hub));
    let e = c
        .download_file("org/model", "main", Q4, &mut go())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Checksum, "{e}");
    assert!(e.message().contains("sha256"), "{e}");
    assert_clean(&root);
    // A corrupted resume prefix is caught too, since the prefix is re-hashed.
    hub.set(|s| s.corrupt = false);
    let d = file_data(&hub, Q4);
    let blobs = root.join("models--org--model/blobs");
    let mut bad = d[..2000].to_vec();
    bad[10] ^= 1;
    fs::write(blobs.join(format!("{}.incomplete", sha256_bytes(&d))), bad).unwrap();
    let e = c
        .download_file("org/model", "main", Q4, &mut go())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Checksum);
    assert_clean(&root);
    // And then a clean download works.
    c.download_file("org/model", "main", Q4, &mut go()).unwrap();
}

#[test]
fn server_errors_are_retried_then_ok() {
    let hub = std_hub(false);
    hub.set(|s| s.fail_503 = 2);
    let root = tmpdir("503");
    let c = open(opts(&root, &hub));
    c.download_file("org/model", "main", Q4, &mut go()).unwrap();
    assert_eq!(hub.resolve_gets(), 3);
    // Persistent failure gives Network after the retry budget (3 retries = 4 tries).
    hub.set(|s| s.fail_503 = 100);
    let e = c
        .download_file("org/model", "main", "model-Q8_0.gguf", &mut go())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Network, "{e}");
    assert_eq!(hub.resolve_gets(), 3 + 4);
}

#[test]
fn client_errors_not_retried_and_mapped() {
    let mut gated = repo("org/gated", vec![lfs("g-Q4_0.gguf", 1000, 9)]);
    gated.gated = true;
    let hub = FakeHub::start(vec![gated, repo("org/open", vec![])], false);
    let root = tmpdir("4xx");
    let c = open(opts(&root, &hub));
    let e = c.scan("org/gated", "main").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthorized);
    assert!(
        e.message().contains("org/gated") && e.message().contains("HF_TOKEN"),
        "{e}"
    );
    assert_eq!(hub.requests().len(), 1);
    let e = c.scan("org/missing", "main").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(
        e.message().contains("repository org/missing not found"),
        "{e}"
    );
    let e = c.scan("org/open", "v9").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.message().contains("revision v9 not found"), "{e}");
    assert_eq!(hub.requests().len(), 3);
    let e = c
        .download_file("org/open", "main", "nope.gguf", &mut go())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.message().contains("nope.gguf"), "{e}");
    // EntryNotFound from the resolve endpoint itself.
    let ctx = hub::Ctx {
        repo: "org/open",
        rev: "main",
        path: Some("x.bin"),
    };
    let url = c.hub.resolve_url("org/open", "main", "x.bin");
    let e = c.hub.request("GET", &url, &ctx).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(
        e.message()
            .contains("file x.bin in org/open@main not found"),
        "{e}"
    );
    // With the token the gated repo works.
    let c = open(CacheOptions {
        token: Some(TOKEN.into()),
        ..opts(&root, &hub)
    });
    c.download_file("org/gated", "main", "g-Q4_0.gguf", &mut go())
        .unwrap();
}

#[test]
fn redirect_followed_and_token_kept_from_cdn() {
    let hub = std_hub(true);
    hub.set(|s| s.repos[0].gated = true);
    let root = tmpdir("cdn");
    let c = open(CacheOptions {
        token: Some(TOKEN.into()),
        ..opts(&root, &hub)
    });
    let p = c.download_file("org/model", "main", Q4, &mut go()).unwrap();
    assert_eq!(fs::read(p).unwrap(), file_data(&hub, Q4));
    let reqs = hub.requests();
    let cdn: Vec<_> = reqs.iter().filter(|r| r.cdn).collect();
    assert_eq!(cdn.len(), 1);
    assert!(cdn[0].header("authorization").is_none());
    assert!(reqs
        .iter()
        .filter(|r| !r.cdn)
        .all(|r| r.header("authorization") == Some("Bearer good-token")));
}

#[test]
fn linked_etag_is_the_checksum_when_api_has_no_hashes() {
    let hub = std_hub(true);
    hub.set(|s| {
        s.api_mode = 2;
        s.corrupt = true;
    });
    let root = tmpdir("etag");
    let c = open(opts(&root, &hub));
    let e = c
        .download_file("org/model", "main", Q4, &mut go())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Checksum, "{e}");
    assert!(hub.requests().iter().any(|r| r.method == "HEAD"));
    assert_clean(&root);
    hub.set(|s| s.corrupt = false);
    let p = c.download_file("org/model", "main", Q4, &mut go()).unwrap();
    let sha = sha256_bytes(&file_data(&hub, Q4));
    assert!(fs::read_link(p).unwrap().ends_with(sha));
}

#[test]
fn tree_api_fills_missing_sizes() {
    let hub = std_hub(false);
    hub.set(|s| s.api_mode = 1);
    let root = tmpdir("tree");
    let c = open(opts(&root, &hub));
    let m = c.scan("org/model", "main").unwrap();
    let f = m.file(Q4).unwrap();
    assert_eq!(f.size, Some(300_000));
    assert_eq!(
        f.sha256.as_deref(),
        Some(sha256_bytes(&file_data(&hub, Q4)).as_str())
    );
    assert!(hub.requests().iter().any(|r| r.target.contains("/tree/")));
}

#[test]
fn hostile_names_refused() {
    for p in [
        "../x",
        "/etc/passwd",
        "a/../../b",
        "a//b",
        "a\\b",
        "x\u{1}y",
        "./a",
        "",
    ] {
        assert_eq!(
            validate_rel_path(p, "file").unwrap_err().kind(),
            ErrorKind::InvalidArg,
            "{p:?}"
        );
    }
    validate_rel_path("sub/dir/model.gguf", "file").unwrap();
    let hub = FakeHub::start(
        vec![repo("org/evil", vec![small("../../evil", "x")])],
        false,
    );
    let root = tmpdir("evil");
    let c = open(opts(&root, &hub));
    let e = c
        .download_file("org/evil", "main", "../x", &mut go())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArg);
    let m = c.scan("org/evil", "main").unwrap();
    assert!(m.files.is_empty() && m.refused.len() == 1, "{m:?}");
    // A snapshot link pointing outside the cache is not followed.
    let outside = tmpdir("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("secret"), "s").unwrap();
    let snap = root.join("models--org--evil/snapshots").join(COMMIT);
    fs::create_dir_all(&snap).unwrap();
    std::os::unix::fs::symlink(outside.join("secret"), snap.join("a.gguf")).unwrap();
    assert!(!c.has_file("org/evil", COMMIT, "a.gguf"));
    assert_eq!(
        c.snapshot_path("org/evil", COMMIT, "a.gguf")
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    // A planted symlinked directory cannot redirect where a download links: the link
    // is replaced by a real folder (see also `planted_symlinks_are_not_followed`).
    let hub2 = FakeHub::start(vec![repo("org/evil", vec![small("d/f.json", "1")])], false);
    let c2 = open(opts(&root, &hub2));
    std::os::unix::fs::symlink(&outside, snap.join("d")).unwrap();
    let p = c2
        .download_file("org/evil", "main", "d/f.json", &mut go())
        .unwrap();
    assert_eq!(fs::read(p).unwrap(), b"1");
    assert!(fs::symlink_metadata(snap.join("d")).unwrap().is_dir());
    assert!(!outside.join("f.json").exists());
}

#[test]
fn repo_id_validation() {
    for ok in [
        "org/name",
        "name",
        "TheBloke/Llama-2-7B-GGUF",
        "a.b_c/d-e.f",
    ] {
        validate_repo_id(ok).unwrap();
    }
    let long = "a".repeat(97);
    for bad in [
        "", "/", "a/b/c", "a/", "../x", "a/..b", "-a/b", "a/b-", ".a", "a.", "a b", "a/b?",
        "a--b/c", &long,
    ] {
        assert!(validate_repo_id(bad).is_err(), "{bad:?}");
    }
    assert_eq!(layout::repo_folder("org/name"), "models--org--name");
    assert_eq!(
        layout::repo_id_from_folder("models--org--name").as_deref(),
        Some("org/name")
    );
}

#[test]
fn manifest_grouping_and_offline_status() {
    let hub = std_hub(false);
    let root = tmpdir("manifest");
    let c = open(opts(&root, &hub));
    let m = c.scan("org/model", "main").unwrap();
    assert_eq!(m.commit, COMMIT);
    let q: Vec<&str> = m.variants.iter().map(|v| v.quant.as_str()).collect();
    assert_eq!(q, ["Q4_K_M", "Q6_K", "Q8_0"]);
    let q6 = m.variant("q6_k").unwrap();
    assert_eq!(q6.size, 200_000);
    assert_eq!(
        q6.files,
        [
            "model-Q6_K-00001-of-00002.gguf",
            "model-Q6_K-00002-of-00002.gguf"
        ]
    );
    assert_eq!(q6.name, "model-Q6_K.gguf");
    assert_eq!(m.projectors.len(), 1);
    assert_eq!(m.projectors[0].quant, "F16");
    assert!(m
        .variants
        .iter()
        .all(|v| v.status == VariantStatus::Available));
    let j: serde_json::Value = serde_json::from_str(&m.to_json()).unwrap();
    assert_eq!(j["variants"].as_array().unwrap().len(), 3);
    assert_eq!(j["commit"], COMMIT);
    assert!(root
        .join(".locks/.tabagent/models--org--model/manifest-main.json")
        .is_file());

    let paths = c
        .download_variant("org/model", "main", "Q4_K_M", &mut go())
        .unwrap();
    assert_eq!(paths.len(), 1);
    c.download_file(
        "org/model",
        "main",
        "model-Q6_K-00001-of-00002.gguf",
        &mut go(),
    )
    .unwrap();
    // Offline: status comes from the saved manifest and the blobs on disk.
    let off = open(CacheOptions {
        offline: Some(true),
        ..opts(&root, &hub)
    });
    let n = hub.requests().len();
    for m in [
        off.scan("org/model", "main").unwrap(),
        off.manifest("org/model", COMMIT).unwrap(),
    ] {
        let st = |q: &str| m.variant(q).unwrap().status;
        assert_eq!(st("Q4_K_M"), VariantStatus::Downloaded);
        assert_eq!(st("Q6_K"), VariantStatus::Partial);
        assert_eq!(st("Q8_0"), VariantStatus::Available);
    }
    assert_eq!(hub.requests().len(), n);
    assert_eq!(
        off.scan("org/other", "main").unwrap_err().kind(),
        ErrorKind::Offline
    );
}

#[test]
fn split_variant_downloads_all_shards_in_order() {
    let hub = std_hub(false);
    let root = tmpdir("split");
    let c = open(opts(&root, &hub));
    let mut files = Vec::new();
    let paths = c
        .download_variant("org/model", "main", "Q6_K", &mut |f, _, _| {
            if files.last().map(String::as_str) != Some(f) {
                files.push(f.to_string());
            }
            true
        })
        .unwrap();
    assert_eq!(paths.len(), 2);
    assert!(paths[0].ends_with("model-Q6_K-00001-of-00002.gguf"));
    assert_eq!(files.len(), 2);
    for p in &paths {
        let name = p.file_name().unwrap().to_str().unwrap();
        assert_eq!(fs::read(p).unwrap(), file_data(&hub, name));
    }
    let m = c.manifest("org/model", "main").unwrap();
    assert_eq!(m.variant("Q6_K").unwrap().status, VariantStatus::Downloaded);
    // Second call is served from the cache with no request.
    let n = hub.requests().len();
    let again = c
        .download_variant("org/model", "main", "Q6_K", &mut go())
        .unwrap();
    assert_eq!(again, paths);
    assert_eq!(hub.requests().len(), n);
}

#[test]
fn offline_downloads() {
    let hub = std_hub(false);
    let root = tmpdir("offline");
    let c = open(opts(&root, &hub));
    c.download_file("org/model", "main", Q4, &mut go()).unwrap();
    let off = open(CacheOptions {
        offline: Some(true),
        ..opts(&root, &hub)
    });
    let n = hub.requests().len();
    let p = off
        .download_file("org/model", "main", Q4, &mut go())
        .unwrap();
    assert_eq!(fs::read(p).unwrap(), file_data(&hub, Q4));
    off.download_variant("org/model", "main", "Q4_K_M", &mut go())
        .unwrap();
    let e = off
        .download_file("org/model", "main", "model-Q8_0.gguf", &mut go())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Offline, "{e}");
    let e = off
        .download_variant("org/model", "main", "Q8_0", &mut go())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Offline, "{e}");
    assert_eq!(hub.requests().len(), n);
}

#[test]
fn cancel_then_resume() {
    let hub = std_hub(false);
    let root = tmpdir("cancel");
    let c = open(opts(&root, &hub));
    let e = c
        .download_file("org/model", "main", Q4, &mut |_, done, total| {
            assert_eq!(total, 300_000);
            done < 50_000
        })
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Cancelled);
    let sha = sha256_bytes(&file_data(&hub, Q4));
    let inc = root.join(format!("models--org--model/blobs/{sha}.incomplete"));
    let kept = fs::metadata(&inc).unwrap().len();
    assert!(kept >= 50_000);
    assert!(!c.has_file("org/model", "main", Q4));
    let p = c.download_file("org/model", "main", Q4, &mut go()).unwrap();
    assert!(hub.saw_range(kept));
    assert_eq!(fs::read(p).unwrap(), file_data(&hub, Q4));
    assert!(!inc.exists());
}

#[test]
fn concurrent_downloads_share_one_blob() {
    let hub = std_hub(false);
    hub.set(|s| s.slow = true);
    let root = tmpdir("conc");
    let c = open(opts(&root, &hub));
    let paths: Vec<PathBuf> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..2)
            .map(|_| s.spawn(|| c.download_file("org/model", "main", Q4, &mut go())))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap().unwrap()).collect()
    });
    assert_eq!(paths[0], paths[1]);
    assert_eq!(fs::read(&paths[0]).unwrap(), file_data(&hub, Q4));
    assert_eq!(hub.resolve_gets(), 1);
    let blobs: Vec<_> = fs::read_dir(root.join("models--org--model/blobs"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(blobs.len(), 1, "{blobs:?}");
}

#[test]
fn delete_stats_verify() {
    let hub = FakeHub::start(
        vec![
            repo(
                "org/model",
                vec![lfs("a-Q4_0.gguf", 10_000, 1), lfs("b-Q8_0.gguf", 20_000, 2)],
            ),
            repo("org/two", vec![lfs("c-F16.gguf", 5_000, 3)]),
        ],
        false,
    );
    let root = tmpdir("stats");
    let c = open(opts(&root, &hub));
    for (r, f) in [
        ("org/model", "a-Q4_0.gguf"),
        ("org/model", "b-Q8_0.gguf"),
        ("org/two", "c-F16.gguf"),
    ] {
        c.download_file(r, "main", f, &mut go()).unwrap();
    }
    assert_eq!(
        c.stats().unwrap(),
        CacheStats {
            repos: 2,
            files: 3,
            bytes: 35_000
        }
    );
    let repos = c.list_repos().unwrap();
    assert_eq!(repos[0].repo_id, "org/model");
    assert_eq!(repos[0].revisions, [COMMIT]);
    assert_eq!(repos[0].refs.get("main").map(String::as_str), Some(COMMIT));
    assert!(c.verify(None).unwrap().is_empty());
    // Corrupt one blob: verify names it.
    let sha = sha256_bytes(&data(5_000, 3));
    let blob = root.join("models--org--two/blobs").join(&sha);
    fs::write(&blob, b"garbage").unwrap();
    let bad = c.verify(None).unwrap();
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].path, blob);
    assert_eq!(bad[0].expected, sha);
    assert_eq!(bad[0].actual, sha256_bytes(b"garbage"));
    assert!(c.verify(Some("org/model")).unwrap().is_empty());

    c.delete_revision("org/model", "main").unwrap();
    assert!(!c.has_file("org/model", COMMIT, "a-Q4_0.gguf"));
    let info = &c.list_repos().unwrap()[0];
    assert_eq!((info.n_files, info.size_on_disk), (0, 0));
    assert!(info.revisions.is_empty() && info.refs.is_empty());
    c.delete_repo("org/two").unwrap();
    assert_eq!(c.stats().unwrap().files, 0);
    assert_eq!(
        c.delete_repo("org/two").unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn options_from_environment() {
    let base = tmpdir("env");
    let home = base.join("hfhome");
    let env = |k: &str| match k {
        "HF_HOME" => Some(home.to_string_lossy().into_owned()),
        "HF_ENDPOINT" => Some("http://mirror.local".to_string()),
        "HUGGING_FACE_HUB_TOKEN" => Some("t".to_string()),
        "HF_HUB_OFFLINE" => Some("1".to_string()),
        _ => None,
    };
    let c = Cache::open_env(CacheOptions::default(), &env).unwrap();
    assert_eq!(c.root(), home.join("hub"));
    assert_eq!(c.endpoint(), "http://mirror.local");
    assert!(c.is_offline());
    assert_eq!(c.hub.token(), Some("t"));
    let cache = base.join("explicit");
    let env2 = |k: &str| match k {
        "HF_HUB_CACHE" => Some(cache.to_string_lossy().into_owned()),
        "HF_HUB_OFFLINE" => Some("false".to_string()),
        "HOME" => Some(base.to_string_lossy().into_owned()),
        _ => None,
    };
    let c = Cache::open_env(CacheOptions::default(), &env2).unwrap();
    assert_eq!(c.root(), cache);
    assert_eq!(c.endpoint(), "https://huggingface.co");
    assert!(!c.is_offline());
    let env3 = |k: &str| (k == "HOME").then(|| base.to_string_lossy().into_owned());
    let c = Cache::open_env(CacheOptions::default(), &env3).unwrap();
    assert_eq!(c.root(), base.join(".cache/huggingface/hub"));
}

#[test]
fn sha256_helpers() {
    assert_eq!(
        sha256_bytes(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let d = tmpdir("sha");
    fs::create_dir_all(&d).unwrap();
    let big = data(3 << 20, 42);
    fs::write(d.join("f"), &big).unwrap();
    assert_eq!(sha256_file(d.join("f")).unwrap(), sha256_bytes(&big));
    let e = sha256_file(d.join("missing")).unwrap_err();
    assert!(e.message().contains("missing"));
}

#[test]
fn durable_mode_downloads_and_resumes() {
    let hub = std_hub(true);
    hub.set(|s| {
        s.drops = 1;
        s.drop_at = 100_000;
    });
    let root = tmpdir("durable");
    let c = open(CacheOptions {
        durable: true,
        ..opts(&root, &hub)
    });
    let p = c.download_file("org/model", "main", Q4, &mut go()).unwrap();
    assert_eq!(fs::read(&p).unwrap(), file_data(&hub, Q4));
    assert!(hub.saw_range(100_000));
    assert!(c.verify(None).unwrap().is_empty());
}

/// What a power failure can leave when downloads are not durable: a blob under its
/// verified name but cut short. Online it is fetched again; offline it is reported.
#[test]
fn cut_short_blob_is_fetched_again() {
    let hub = std_hub(false);
    let root = tmpdir("cutshort");
    let c = open(opts(&root, &hub));
    let want = file_data(&hub, Q4);
    let p = c.download_file("org/model", "main", Q4, &mut go()).unwrap();
    let blob = fs::canonicalize(&p).unwrap();
    for cut in [0usize, 4096, want.len() - 1] {
        fs::OpenOptions::new()
            .write(true)
            .open(&blob)
            .unwrap()
            .set_len(cut as u64)
            .unwrap();
        let off = open(CacheOptions {
            offline: Some(true),
            ..opts(&root, &hub)
        });
        let e = off
            .download_file("org/model", "main", Q4, &mut go())
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Checksum, "{e}");
        assert!(e.to_string().contains("damaged"), "{e}");
        let gets = hub.resolve_gets();
        let p2 = c.download_file("org/model", "main", Q4, &mut go()).unwrap();
        assert_eq!(p2, p);
        assert_eq!(fs::read(&p2).unwrap(), want, "cut at {cut}");
        assert_eq!(hub.resolve_gets(), gets + 1);
    }
    // A whole variant is checked the same way.
    fs::OpenOptions::new()
        .write(true)
        .open(&blob)
        .unwrap()
        .set_len(10)
        .unwrap();
    let off = open(CacheOptions {
        offline: Some(true),
        ..opts(&root, &hub)
    });
    let e = off
        .download_variant("org/model", "main", "Q4_K_M", &mut go())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Checksum, "{e}");
    let ps = c
        .download_variant("org/model", "main", "Q4_K_M", &mut go())
        .unwrap();
    assert_eq!(fs::read(&ps[0]).unwrap(), want);
}

#[test]
fn git_blob_ids() {
    // `git hash-object` of an empty file and of "hello\n".
    assert_eq!(
        layout::git_blob_sha1(b""),
        "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
    );
    assert_eq!(
        layout::git_blob_sha1(b"hello\n"),
        "ce013625030ba8dba906f756967f9e9ca394464a"
    );
}

/// Issue 10, item 1: bytes of non-LFS files are checked against their git blob id,
/// while downloading and in `verify`.
#[test]
fn flipped_plain_file_refused_and_verified() {
    let hub = std_hub(false);
    hub.set(|s| s.flip_small = true);
    let root = tmpdir("flip");
    let c = open(opts(&root, &hub));
    let e = c
        .download_file("org/model", "main", "config.json", &mut go())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Checksum, "{e}");
    assert!(e.message().contains("git blob id"), "{e}");
    assert_clean(&root);
    assert!(!c.has_file("org/model", "main", "config.json"));
    // A wrong resume prefix is caught as well: the prefix is hashed before resuming.
    hub.set(|s| s.flip_small = false);
    let oid = layout::git_blob_sha1(b"{\"a\":1}");
    let blobs = root.join("models--org--model/blobs");
    fs::write(blobs.join(format!("{oid}.incomplete")), b"{\"b").unwrap();
    let e = c
        .download_file("org/model", "main", "config.json", &mut go())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Checksum, "{e}");
    assert!(hub.saw_range(3));
    assert_clean(&root);
    // Served right, it is cached; a byte flipped on disk later is reported by verify.
    hub.set(|s| s.flip_small = false);
    let p = c
        .download_file("org/model", "main", "config.json", &mut go())
        .unwrap();
    assert!(c.verify(None).unwrap().is_empty());
    let blob = fs::canonicalize(&p).unwrap();
    let mut d = fs::read(&blob).unwrap();
    d[1] ^= 0x01;
    fs::write(&blob, &d).unwrap();
    let bad = c.verify(Some("org/model")).unwrap();
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert_eq!(bad[0].path, blob);
    assert_eq!(bad[0].expected, layout::git_blob_sha1(b"{\"a\":1}"));
    assert_eq!(bad[0].actual, layout::git_blob_sha1(&d));
}

/// Issue 10, item 3: symlinks planted in a repo folder never make a download write
/// (or create folders) outside the cache.
#[test]
fn planted_symlinks_are_not_followed() {
    use std::os::unix::fs::symlink;
    let hub = std_hub(false);
    let sha = sha256_bytes(&file_data(&hub, Q4));
    let outside = tmpdir("outside");
    fs::create_dir_all(&outside).unwrap();
    let victim = outside.join("victim");
    fs::write(&victim, b"do not touch").unwrap();
    let check_outside = || {
        assert_eq!(fs::read(&victim).unwrap(), b"do not touch");
        let names: Vec<_> = fs::read_dir(&outside).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "{names:?}");
    };
    let fresh = |tag: &str| {
        let root = tmpdir(tag);
        let dir = root.join("models--org--model");
        fs::create_dir_all(dir.join("blobs")).unwrap();
        (root, dir)
    };
    // The downloaded file must be whole and a real blob inside the cache.
    let intact = |c: &Cache, dir: &Path, p: &Path| {
        assert_eq!(fs::read(p).unwrap(), file_data(&hub, Q4));
        let blob = dir.join("blobs").join(&sha);
        assert!(fs::symlink_metadata(&blob).unwrap().is_file());
        assert!(c.verify(None).unwrap().is_empty());
    };

    // blobs/<sha>.incomplete → an outside file.
    let (root, dir) = fresh("plant-inc");
    symlink(&victim, dir.join(format!("blobs/{sha}.incomplete"))).unwrap();
    let c = open(opts(&root, &hub));
    let p = c.download_file("org/model", "main", Q4, &mut go()).unwrap();
    intact(&c, &dir, &p);
    check_outside();

    // blobs/<sha>.incomplete as a hard link to an outside file (same file system).
    let (root, dir) = fresh("plant-hard");
    if fs::hard_link(&victim, dir.join(format!("blobs/{sha}.incomplete"))).is_ok() {
        let c = open(opts(&root, &hub));
        let p = c.download_file("org/model", "main", Q4, &mut go()).unwrap();
        intact(&c, &dir, &p);
        check_outside();
    }

    // blobs/<sha>.lock → an outside path that does not exist yet (and one that does).
    for target in [outside.join("new-lock"), victim.clone()] {
        let (root, dir) = fresh("plant-lock");
        symlink(&target, dir.join(format!("blobs/{sha}.lock"))).unwrap();
        let c = open(opts(&root, &hub));
        let p = c.download_file("org/model", "main", Q4, &mut go()).unwrap();
        intact(&c, &dir, &p);
        check_outside();
    }

    // blobs/ itself → an outside folder.
    let (root, dir) = fresh("plant-blobs");
    fs::remove_dir(dir.join("blobs")).unwrap();
    symlink(&outside, dir.join("blobs")).unwrap();
    let c = open(opts(&root, &hub));
    let p = c.download_file("org/model", "main", Q4, &mut go()).unwrap();
    intact(&c, &dir, &p);
    check_outside();

    // A folder inside the snapshot → an outside folder.
    let (root, dir) = fresh("plant-snap");
    let snap = dir.join("snapshots").join(COMMIT);
    fs::create_dir_all(&snap).unwrap();
    symlink(&outside, snap.join("sub")).unwrap();
    let c = open(opts(&root, &hub));
    let p = c
        .download_file("org/model", "main", "sub/dir/tok.json", &mut go())
        .unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"{}");
    assert!(fs::symlink_metadata(snap.join("sub")).unwrap().is_dir());
    check_outside();
}

/// Issue 10, item 6: a refusal by the CDN is not blamed on the token (which is never
/// sent there), and a failed first attempt leaves no empty `.incomplete` behind.
#[test]
fn cdn_403_explained_and_leaves_nothing() {
    let hub = std_hub(true);
    hub.set(|s| s.cdn_403 = true);
    let root = tmpdir("cdn403");
    let mut o = opts(&root, &hub);
    o.token = Some(TOKEN.into());
    let c = open(o);
    let e = c
        .download_file("org/model", "main", Q4, &mut go())
        .unwrap_err();
    assert_ne!(e.kind(), ErrorKind::Unauthorized, "{e}");
    assert!(!e.message().contains("set HF_TOKEN"), "{e}");
    assert!(e.message().contains("403"), "{e}");
    assert!(e.message().contains("not a token problem"), "{e}");
    assert_clean(&root);
    let m = c.scan("org/model", "main").unwrap();
    assert_eq!(
        m.variant("Q4_K_M").unwrap().status,
        VariantStatus::Available
    );
}

/// Issue 10, item 6: a process waiting for another's download of the same blob sees
/// that download's bytes grow, not (0, total) for the whole wait.
#[test]
fn waiting_for_another_download_reports_its_progress() {
    let hub = std_hub(false);
    let root = tmpdir("waitprog");
    let c = open(opts(&root, &hub));
    c.scan("org/model", "main").unwrap();
    let d = file_data(&hub, Q4);
    let sha = sha256_bytes(&d);
    let blobs = root.join("models--org--model/blobs");
    fs::create_dir_all(&blobs).unwrap();
    let lock = layout::BlobLock::acquire(
        &blobs.join(format!("{sha}.lock")),
        Duration::from_secs(5),
        &mut || true,
    )
    .unwrap();
    let inc = blobs.join(format!("{sha}.incomplete"));
    fs::write(&inc, &d[..5000]).unwrap();
    let seen: Mutex<Vec<(u64, u64)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        let h = s.spawn(|| {
            let mut cb = |_: &str, done: u64, total: u64| {
                seen.lock().unwrap().push((done, total));
                true
            };
            c.download_file("org/model", "main", Q4, &mut cb)
        });
        let t0 = std::time::Instant::now();
        while !seen.lock().unwrap().iter().any(|&(d, _)| d == 5000) {
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "no progress from the other download: {:?}",
                seen.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // The other "process" finishes: whole blob in place, then unlock.
        fs::write(&inc, &d).unwrap();
        fs::rename(&inc, blobs.join(&sha)).unwrap();
        drop(lock);
        let p = h.join().unwrap().unwrap();
        assert_eq!(fs::read(p).unwrap(), d);
    });
    assert_eq!(hub.resolve_gets(), 0);
    assert!(seen
        .lock()
        .unwrap()
        .iter()
        .all(|&(d, t)| t == 300_000 && d <= t));
}

/// Issue 10, item 6: a body that ends before the file's known length (here a
/// close-delimited body cut short) is resumed with Range, not discarded as a checksum
/// error.
#[test]
fn short_body_is_resumed() {
    let hub = std_hub(false);
    hub.set(|s| {
        s.no_length = true;
        s.drops = 2;
        s.drop_at = 70_000;
    });
    let root = tmpdir("short");
    let c = open(opts(&root, &hub));
    let p = c.download_file("org/model", "main", Q4, &mut go()).unwrap();
    assert_eq!(fs::read(p).unwrap(), file_data(&hub, Q4));
    assert!(hub.saw_range(70_000), "{:?}", hub.requests());
    assert!(hub.saw_range(140_000), "{:?}", hub.requests());
}

/// Issue 10, item 3: `refs/` and the manifest folder (`.locks/.tabagent`) planted as
/// symlinks do not make a scan or a download write outside the cache either.
#[test]
fn planted_symlinks_for_refs_and_manifest_folder() {
    use std::os::unix::fs::symlink;
    let hub = std_hub(false);
    let outside = tmpdir("outside-refs");
    fs::create_dir_all(&outside).unwrap();
    let root = tmpdir("plant-refs");
    let dir = root.join("models--org--model");
    fs::create_dir_all(&dir).unwrap();
    symlink(&outside, dir.join("refs")).unwrap();
    symlink(&outside, root.join(".locks")).unwrap();
    let c = open(opts(&root, &hub));
    c.scan("org/model", "main").unwrap();
    c.download_file("org/model", "main", Q4, &mut go()).unwrap();
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    assert!(fs::symlink_metadata(dir.join("refs")).unwrap().is_dir());
    assert!(fs::symlink_metadata(root.join(".locks")).unwrap().is_dir());
    assert_eq!(fs::read_to_string(dir.join("refs/main")).unwrap(), COMMIT);
}

/// huggingface_hub's `scan_cache_dir` calls a `models--*` folder without `snapshots/`
/// corrupt, and a ref to a commit without a snapshot too: a scan writes nothing there,
/// and a failed download leaves what huggingface_hub's own would (snapshot folder and ref).
#[test]
fn scan_leaves_the_repo_folder_alone() {
    let hub = std_hub(false);
    let root = tmpdir("scanonly");
    let c = open(opts(&root, &hub));
    c.scan("org/model", "main").unwrap();
    let dir = root.join("models--org--model");
    assert!(!dir.exists(), "a scan created {}", dir.display());
    let off = open(CacheOptions {
        offline: Some(true),
        ..opts(&root, &hub)
    });
    assert_eq!(off.manifest("org/model", "main").unwrap().commit, COMMIT);
    hub.set(|s| s.corrupt = true);
    c.download_file("org/model", "main", Q4, &mut go())
        .unwrap_err();
    assert!(dir.join("snapshots").join(COMMIT).is_dir());
    assert_eq!(fs::read_to_string(dir.join("refs/main")).unwrap(), COMMIT);
    c.delete_repo("org/model").unwrap();
    assert!(!dir.exists() && !root.join(".locks/.tabagent/models--org--model").exists());
    // The snapshot folder made before the download never goes through a planted link.
    hub.set(|s| s.corrupt = false);
    let outside = tmpdir("snaplink");
    fs::create_dir_all(&outside).unwrap();
    fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("snapshots")).unwrap();
    // The link is replaced by a real folder, never followed.
    c.download_file("org/model", "main", Q4, &mut go()).unwrap();
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    assert!(fs::symlink_metadata(dir.join("snapshots"))
        .unwrap()
        .is_dir());
}

#[test]
fn one_hostile_name_refuses_only_itself() {
    let long = format!("{}-Q4_0.gguf", "a".repeat(300));
    let hub = FakeHub::start(
        vec![repo(
            "org/mixed",
            vec![
                lfs("../../evil.gguf", 1000, 1),
                lfs(&long, 1 << 20, 2),
                lfs("ok-Q8_0.gguf", 2000, 3),
            ],
        )],
        false,
    );
    let root = tmpdir("mixed");
    let c = open(opts(&root, &hub));
    let m = c.scan("org/mixed", "main").unwrap();
    let refused: Vec<&str> = m.refused.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(refused, ["../../evil.gguf", long.as_str()]);
    assert!(m.refused[1].1.contains("255 bytes"), "{:?}", m.refused);
    assert_eq!(m.variants.len(), 1);
    let j: serde_json::Value = serde_json::from_str(&m.to_json()).unwrap();
    assert_eq!(j["refused"][0]["path"], "../../evil.gguf");
    let p = c
        .download_variant("org/mixed", "main", "Q8_0", &mut go())
        .unwrap();
    assert_eq!(fs::read(&p[0]).unwrap(), data(2000, 3));
    // The long name is refused before any byte is fetched: no orphan blob in stats.
    let gets = hub.resolve_gets();
    let e = c
        .download_file("org/mixed", "main", &long, &mut go())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArg, "{e}");
    assert_eq!(hub.resolve_gets(), gets);
    assert_eq!(c.stats().unwrap().files, 1);
    // The refusal survives the round trip through the saved manifest.
    assert_eq!(c.manifest("org/mixed", "main").unwrap().refused.len(), 2);
}

/// Files another tool downloaded (no saved manifest) are usable offline, and a partly
/// cached variant names what is missing, never what is there.
#[test]
fn offline_variant_without_a_saved_manifest() {
    let hub = std_hub(false);
    let root = tmpdir("derived");
    let c = open(opts(&root, &hub));
    let s1 = "model-Q6_K-00001-of-00002.gguf";
    let s2 = "model-Q6_K-00002-of-00002.gguf";
    for f in [s1, s2] {
        c.download_file("org/model", "main", f, &mut go()).unwrap();
    }
    fs::remove_dir_all(root.join(".locks/.tabagent")).unwrap();
    let off = open(CacheOptions {
        offline: Some(true),
        ..opts(&root, &hub)
    });
    let n = hub.requests().len();
    let m = off.manifest("org/model", "main").unwrap();
    assert!(m.from_snapshot);
    assert_eq!(m.variant("Q6_K").unwrap().status, VariantStatus::Downloaded);
    let ps = off
        .download_variant("org/model", "main", "Q6_K", &mut go())
        .unwrap();
    assert!(ps[0].ends_with(s1) && ps[1].ends_with(s2));
    fs::remove_file(&ps[1]).unwrap();
    let m = off.manifest("org/model", "main").unwrap();
    assert_eq!(m.variant("Q6_K").unwrap().status, VariantStatus::Partial);
    let e = off
        .download_variant("org/model", "main", "Q6_K", &mut go())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Offline, "{e}");
    assert!(e.message().contains(s2) && !e.message().contains(s1), "{e}");
    assert_eq!(hub.requests().len(), n);
    // Never scanned, nothing cached: NotFound in both modes, as the header says.
    for cache in [&c, &off] {
        let e = cache.manifest("org/other", "main").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    }
}

#[test]
fn long_revision_names_fit_the_manifest_file() {
    let hub = std_hub(false);
    let root = tmpdir("longrev");
    let c = open(opts(&root, &hub));
    let rev = format!("{}/{}", "b".repeat(200), "c".repeat(200));
    let m = Manifest::new("org/model", &rev, COMMIT, vec![]);
    c.save_manifest(&m).unwrap();
    assert_eq!(c.manifest("org/model", &rev).unwrap().commit, COMMIT);
}

/// Issue 10, item 10: a connection failure names the URL once, not twice.
#[test]
fn network_errors_name_the_url_once() {
    let root = tmpdir("url-once");
    // A port nothing listens on: bind one, then close it.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let c = Cache::open_env(
        CacheOptions {
            root: Some(root.clone()),
            endpoint: Some(format!("http://127.0.0.1:{port}")),
            offline: Some(false),
            retries: 0,
            ..CacheOptions::default()
        },
        &|_| None,
    )
    .unwrap();
    let e = c.scan("org/model", "main").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Network, "{e}");
    let url = format!("127.0.0.1:{port}");
    assert_eq!(e.message().matches(&url).count(), 1, "{}", e.message());
}

/// Issue 10, item 6: an empty `.incomplete` (a process killed before its first
/// byte) does not make a variant look "partial".
#[test]
fn an_empty_incomplete_is_not_partial() {
    let hub = std_hub(false);
    let root = tmpdir("empty-inc");
    let c = open(opts(&root, &hub));
    let m = c.scan("org/model", "main").unwrap();
    let f = m.files.iter().find(|f| f.path == Q4).unwrap();
    let blob = f.blob_name().unwrap().to_string();
    let blobs = root.join("models--org--model/blobs");
    fs::create_dir_all(&blobs).unwrap();
    fs::write(blobs.join(format!("{blob}.incomplete")), b"").unwrap();
    let v = |m: &Manifest| {
        m.variants
            .iter()
            .find(|v| v.files.iter().any(|p| p == Q4))
            .unwrap()
            .status
    };
    assert_eq!(
        v(&c.manifest("org/model", "main").unwrap()),
        VariantStatus::Available
    );
    fs::write(blobs.join(format!("{blob}.incomplete")), b"abc").unwrap();
    assert_eq!(
        v(&c.manifest("org/model", "main").unwrap()),
        VariantStatus::Partial
    );
}
