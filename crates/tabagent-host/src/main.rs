//! `tabagent-host`: the native-messaging host. A browser starts it with the
//! calling extension's origin and speaks length-prefixed JSON on stdin/stdout;
//! requests go to the library's dispatcher (`tabagent::host`). Nothing but frames
//! is ever written to stdout; the log goes to a file or nowhere.
//!
//!   tabagent-host [ORIGIN]                      serve (what the browser runs)
//!   tabagent-host install --extension-id ID [--browser B]... [--config FILE]
//!   tabagent-host manifest --extension-id ID [--browser B]
//!
//! Configuration: `--config FILE`, else `$TABAGENT_HOST_CONFIG`, else
//! `~/.config/tabagent/host.json`; see `tabagent::host::HostConfig::from_json`, plus
//! `allowed_origins` (extension origins or Firefox extension ids allowed to start
//! this host) and `log_file`.

use serde_json::{json, Value};
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use tabagent::host::framing::{read_frame, write_frame, Frame};
use tabagent::host::{Host, HostConfig};

/// The host's name in manifests (browsers allow lowercase, digits, `.` and `_`).
const HOST_NAME: &str = "com.tabagent.host";
const BROWSERS: &[&str] = &["chrome", "chromium", "edge", "firefox"];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.first().map(String::as_str) {
        Some("install") => install(&args[1..], true),
        Some("manifest") => install(&args[1..], false),
        Some("--help") | Some("-h") => {
            println!(
                "tabagent-host [ORIGIN]   serve native messaging on stdio\n\
                 tabagent-host install --extension-id ID [--browser chrome|chromium|edge|firefox]... [--config FILE]\n\
                 tabagent-host manifest --extension-id ID [--browser B]"
            );
            Ok(())
        }
        Some("--version") => {
            println!("tabagent-host {}", tabagent::VERSION);
            Ok(())
        }
        _ => serve(&args),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // stderr only: browsers keep it in their log; stdout is the protocol.
            eprintln!("tabagent-host: {e}");
            ExitCode::FAILURE
        }
    }
}

fn flag<'a>(args: &'a [String], name: &str) -> Vec<&'a str> {
    args.windows(2)
        .filter(|w| w[0] == name)
        .map(|w| w[1].as_str())
        .collect()
}

fn config_path(args: &[String]) -> Option<PathBuf> {
    if let Some(p) = flag(args, "--config").first() {
        return Some(PathBuf::from(p));
    }
    if let Some(p) = std::env::var_os("TABAGENT_HOST_CONFIG") {
        return Some(PathBuf::from(p));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("tabagent/host.json"))
}

fn read_config(path: Option<&Path>) -> Result<Value, String> {
    match path {
        Some(p) if p.exists() => {
            let t = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
            serde_json::from_str(&t).map_err(|e| format!("{}: {e}", p.display()))
        }
        _ => Ok(json!({})),
    }
}

/// The caller the browser names: Chrome/Edge pass `chrome-extension://ID/` first;
/// Firefox passes the manifest's path, then the extension's id.
fn caller(args: &[String]) -> Option<String> {
    let first = args.first()?;
    if first.starts_with("chrome-extension://") {
        return Some(first.clone());
    }
    if first.ends_with(".json") {
        return args.get(1).cloned();
    }
    None
}

fn serve(args: &[String]) -> Result<(), String> {
    let cfg_path = config_path(args);
    let cfg_json = read_config(cfg_path.as_deref())?;
    if let Some(origin) = caller(args) {
        let allowed: Vec<&str> = cfg_json
            .get("allowed_origins")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if !allowed.contains(&origin.as_str()) {
            return Err(format!(
                "{origin} is not in allowed_origins of {}; run `tabagent-host install --extension-id ...`",
                cfg_path.as_deref().map_or("(no config)".into(), |p| p.display().to_string())
            ));
        }
    }
    if let Some(log) = cfg_json.get("log_file").and_then(Value::as_str) {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("{log}: {e}"))?;
        let f = Mutex::new(f);
        tabagent::log::set_sink(
            Some(Box::new(move |level, msg| {
                if let Ok(mut f) = f.lock() {
                    let _ = writeln!(f, "[{level:?}] {msg}");
                }
            })),
            tabagent::log::LogLevel::Info,
        );
    }
    let cfg = HostConfig::from_json(&cfg_json.to_string()).map_err(|e| e.to_string())?;
    let max_request = cfg.max_request_bytes;
    let out = std::io::stdout();
    let host = Host::new(
        cfg,
        Box::new(move |msg: &str| {
            // A closed stdout means the browser is gone; stdin's EOF ends us.
            let _ = write_frame(&mut out.lock(), msg.as_bytes());
        }),
    );
    let mut stdin = BufReader::new(std::io::stdin().lock());
    loop {
        match read_frame(&mut stdin, max_request) {
            Ok(Frame::Message(m)) => host.post(&m),
            Ok(Frame::TooLong(n)) => host.refuse_too_long(n),
            Ok(Frame::Eof) => break,
            Ok(Frame::Broken(why)) => {
                tabagent::log::log(
                    tabagent::log::LogLevel::Error,
                    &format!("tabagent-host: {why}"),
                );
                break;
            }
            Err(e) => {
                tabagent::log::log(
                    tabagent::log::LogLevel::Error,
                    &format!("tabagent-host: stdin: {e}"),
                );
                break;
            }
        }
    }
    // Cancels what runs and waits for it to answer (each call ends at its next step).
    host.shutdown();
    drop(host);
    Ok(())
}

fn manifest(browser: &str, exe: &Path, id: &str) -> Value {
    let mut m = json!({
        "name": HOST_NAME,
        "description": "tabagent: local LLM inference for this extension",
        "path": exe.display().to_string(),
        "type": "stdio",
    });
    if browser == "firefox" {
        m["allowed_extensions"] = json!([id]);
    } else {
        m["allowed_origins"] = json!([origin(browser, id)]);
    }
    m
}

fn origin(browser: &str, id: &str) -> String {
    if browser == "firefox" {
        id.to_owned()
    } else {
        format!("chrome-extension://{id}/")
    }
}

/// Where each browser looks for a user-level manifest.
fn locations(browser: &str) -> (String, String, String) {
    let (linux, mac, win) = match browser {
        "chrome" => ("google-chrome", "Google/Chrome", "Google\\Chrome"),
        "chromium" => ("chromium", "Chromium", "Chromium"),
        "edge" => ("microsoft-edge", "Microsoft Edge", "Microsoft\\Edge"),
        _ => ("", "Mozilla", "Mozilla"),
    };
    let file = format!("{HOST_NAME}.json");
    let linux = if browser == "firefox" {
        format!("~/.mozilla/native-messaging-hosts/{file}")
    } else {
        format!("~/.config/{linux}/NativeMessagingHosts/{file}")
    };
    (
        linux,
        format!("~/Library/Application Support/{mac}/NativeMessagingHosts/{file}"),
        format!("HKEY_CURRENT_USER\\Software\\{win}\\NativeMessagingHosts\\{HOST_NAME} (default value: the manifest's path)"),
    )
}

fn install(args: &[String], write: bool) -> Result<(), String> {
    let ids = flag(args, "--extension-id");
    if ids.is_empty() {
        return Err("--extension-id ID is required".into());
    }
    let mut browsers = flag(args, "--browser");
    if browsers.is_empty() {
        browsers = BROWSERS.to_vec();
    }
    if let Some(b) = browsers.iter().find(|b| !BROWSERS.contains(b)) {
        return Err(format!(
            "unknown browser {b}; one of {}",
            BROWSERS.join(", ")
        ));
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let mut origins = Vec::new();
    for b in &browsers {
        // One manifest per browser; several ids share it.
        let mut m = manifest(b, &exe, ids[0]);
        let key = if *b == "firefox" {
            "allowed_extensions"
        } else {
            "allowed_origins"
        };
        m[key] = json!(ids.iter().map(|i| origin(b, i)).collect::<Vec<_>>());
        origins.extend(ids.iter().map(|i| origin(b, i)));
        let text = serde_json::to_string_pretty(&m).expect("plain JSON");
        let (linux, mac, win) = locations(b);
        if !write {
            println!("// {b}: Linux {linux}\n// macOS {mac}\n// Windows {win}\n{text}");
            continue;
        }
        let home = home.as_ref().ok_or("HOME is not set")?;
        let path = home.join(linux.trim_start_matches("~/"));
        std::fs::create_dir_all(path.parent().expect("has a folder"))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        std::fs::write(&path, text.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))?;
        println!("{b}: wrote {}", path.display());
        println!("  on macOS it goes to {mac}");
        println!("  on Windows: write it anywhere and set {win}");
    }
    if write {
        // The host checks the caller against its own list too.
        let cfg_path = config_path(args).ok_or("no config path (HOME unset)")?;
        let mut cfg = read_config(Some(&cfg_path))?;
        let list = cfg
            .as_object_mut()
            .ok_or("the config is not a JSON object")?
            .entry("allowed_origins")
            .or_insert_with(|| json!([]));
        if let Some(a) = list.as_array_mut() {
            for o in origins {
                if !a.iter().any(|x| x == &json!(o)) {
                    a.push(json!(o));
                }
            }
        }
        if let Some(d) = cfg_path.parent() {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        std::fs::write(
            &cfg_path,
            serde_json::to_string_pretty(&cfg).expect("plain JSON"),
        )
        .map_err(|e| format!("{}: {e}", cfg_path.display()))?;
        println!("allowed origins recorded in {}", cfg_path.display());
    }
    Ok(())
}
