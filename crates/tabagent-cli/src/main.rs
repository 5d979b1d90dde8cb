//! `tabagent`: the command line of the tabagent library — pull, list, remove and
//! inspect models in the cache, chat in the terminal, embed text, and serve
//! OpenAI- and Ollama-compatible HTTP APIs. Everything goes through the library's
//! Rust API; this crate only parses, prints and serves.

mod commands;
mod common;
mod repl;
mod server;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

const CONFIG_TABLE: &str = "\
Configuration (flag, then environment variable, then default):
  --host           TABAGENT_HOST         127.0.0.1
  --port           TABAGENT_PORT         11435
  --api-key        TABAGENT_API_KEY      none (no authentication)
  --model          TABAGENT_MODEL        none; a .gguf path or org/name[:VARIANT][@REV]
  --embed-model    TABAGENT_EMBED_MODEL  none
  --parallel       TABAGENT_PARALLEL     4 (sequences decoded together)
  --ctx-size       TABAGENT_CTX_SIZE     0 = min(training context, 2048) x parallel
  --queue          TABAGENT_QUEUE        64 (requests waiting for a sequence; then 503)
  --threads        TABAGENT_THREADS      0 = physical cores
  --cors-origin    TABAGENT_CORS_ORIGIN  none (CORS off); comma-separated, or *
  --max-body       TABAGENT_MAX_BODY     4194304 bytes
The cache: HF_HUB_CACHE / HF_HOME, HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE (as huggingface_hub).";

#[derive(Parser)]
#[command(name = "tabagent", version = tabagent::VERSION, about = "Local LLM inference on GGUF models", after_help = CONFIG_TABLE)]
struct Cli {
    /// Log to stderr (the library's log and each request).
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve OpenAI (/v1/...) and Ollama (/api/...) compatible endpoints.
    #[command(after_help = CONFIG_TABLE)]
    Serve(ServeArgs),
    /// Download a model variant into the cache (resumes; verifies checksums).
    Pull {
        /// org/name[:VARIANT][@REVISION]; without a variant, Q4_K_M or the nearest.
        model: String,
    },
    /// List the repos in the cache.
    List {
        /// Also list each repo's variants and whether they are downloaded.
        #[arg(long)]
        variants: bool,
    },
    /// Remove a repo (or one revision with @REV) from the cache.
    Rm { model: String },
    /// Show a model's metadata, chat template, quantisation and fit on this machine.
    Show {
        model: String,
        /// Print only the chat template.
        #[arg(long)]
        template: bool,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Re-hash cached files (all repos, or one).
    Verify { repo: Option<String> },
    /// Search the hub for GGUF models.
    Search {
        query: String,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// This machine: CPU, memory, GPUs, the build's features.
    Hardware {
        #[arg(long)]
        json: bool,
    },
    /// Embed texts; prints one JSON array per text.
    Embed {
        model: String,
        #[arg(required = true)]
        texts: Vec<String>,
    },
    /// Answer one prompt, or chat interactively (/help for commands).
    Run(repl::RunArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    #[arg(long, env = "TABAGENT_HOST", default_value = "127.0.0.1")]
    host: String,
    #[arg(long, env = "TABAGENT_PORT", default_value_t = 11435)]
    port: u16,
    #[arg(long, env = "TABAGENT_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Chat model: a .gguf path or org/name[:VARIANT]; repeatable.
    #[arg(short, long, env = "TABAGENT_MODEL", value_delimiter = ',')]
    model: Vec<String>,
    /// Embedding model (in addition to the chat models); repeatable.
    #[arg(long, env = "TABAGENT_EMBED_MODEL", value_delimiter = ',')]
    embed_model: Vec<String>,
    #[arg(long, env = "TABAGENT_PARALLEL", default_value_t = 4)]
    parallel: u32,
    #[arg(long, env = "TABAGENT_CTX_SIZE", default_value_t = 0)]
    ctx_size: u32,
    #[arg(long, env = "TABAGENT_QUEUE", default_value_t = 64)]
    queue: usize,
    #[arg(long, env = "TABAGENT_THREADS", default_value_t = 0)]
    threads: i32,
    #[arg(long, env = "TABAGENT_CORS_ORIGIN", value_delimiter = ',')]
    cors_origin: Vec<String>,
    #[arg(long, env = "TABAGENT_MAX_BODY", default_value_t = 4 * 1024 * 1024)]
    max_body: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.verbose {
        tabagent::log::set_sink(
            Some(Box::new(|level, msg| {
                eprintln!("[{level:?}] {}", msg.trim_end());
            })),
            tabagent::log::LogLevel::Info,
        );
    }
    #[cfg(unix)]
    if !matches!(cli.cmd, Cmd::Serve(_)) {
        // `tabagent list | head` ends quietly, as other command-line tools do. Not for
        // serve: a client that hangs up must be an error on its socket, not a signal.
        // SAFETY: restoring the default disposition of one signal, before any thread.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let r = match cli.cmd {
        Cmd::Serve(a) => server::serve(server::ServeConfig {
            host: a.host,
            port: a.port,
            api_key: a.api_key,
            models: a.model,
            embed_models: a.embed_model,
            parallel: a.parallel,
            ctx_size: a.ctx_size,
            queue: a.queue,
            threads: a.threads,
            cors_origins: a.cors_origin,
            max_body: a.max_body,
            verbose: cli.verbose,
        }),
        Cmd::Pull { model } => commands::pull(&model),
        Cmd::List { variants } => commands::list(variants),
        Cmd::Rm { model } => commands::rm(&model),
        Cmd::Show {
            model,
            template,
            json,
        } => commands::show(&model, template, json),
        Cmd::Verify { repo } => commands::verify(repo.as_deref()),
        Cmd::Search { query, limit } => commands::search(&query, limit),
        Cmd::Hardware { json } => commands::hardware(json),
        Cmd::Embed { model, texts } => commands::embed(&model, &texts),
        Cmd::Run(a) => repl::run(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tabagent: {e}");
            ExitCode::FAILURE
        }
    }
}
