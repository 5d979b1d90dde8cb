//! `tabagent-probe MODEL.gguf`: loads a model and decodes one token in its own
//! process, for `ta_model_check`. Ships beside the library.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(tabagent::engine::check::probe_main(&args));
}
