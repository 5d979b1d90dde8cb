#!/usr/bin/env python3
"""Reference renderer: renders every (template, case) pair the way Hugging Face
transformers' `tokenizer.apply_chat_template(..., tokenize=False)` does.

It copies, without importing transformers (only jinja2 >= 3.1.6), what
transformers 5.24.0 does in `transformers/utils/chat_template_utils.py`
(`_cached_compile_jinja_template`, `render_jinja_template`) and in
`PreTrainedTokenizerBase.apply_chat_template` (`_normalize_chat_messages`,
`template_kwargs = {**special_tokens_map, **kwargs}`).

Usage: reference.py [--out FILE] [--now ISO-DATETIME] [--timeout SECONDS]
Reads manifest.json, cases.json and corpus/ next to this file and writes JSON:
  [{"template": "X.jinja", "case": "name", "ok": true, "output": "..."},
   {"template": ..., "case": ..., "ok": false, "error": "...", "error_type": "..."}, ...]
"""
import argparse
import json
import os
import signal
import sys
from datetime import datetime

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))
# strftime_now() reads this clock. transformers uses datetime.now(); a fixed default
# keeps the outputs reproducible (pass --now wall for the real clock).
NOW = datetime(2025, 3, 14, 9, 26, 53)


class GenerationTag(jinja2.ext.Extension):
    """{% generation %}...{% endgeneration %}: transformers' AssistantTracker.
    Without return_assistant_tokens_mask it just renders its body."""
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


class TemplateDict:
    # transformers replaces the `dict` global by this, so templates cannot reach dict's class.
    def __call__(self, *args, **kwargs):
        return dict(*args, **kwargs)

    def fromkeys(self, *args, **kwargs):
        return dict.fromkeys(*args, **kwargs)


class TemplateNamespace(jinja2.utils.Namespace):
    # transformers' namespace(): rejects underscore-prefixed attribute names.
    def __init__(*args, **kwargs):
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name, value):
        TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check_name(name):
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(
                f"Chat templates cannot store underscore-prefixed attributes on a namespace, but got {name!r}. "
                "Please rename the attribute.")


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # Not jinja's own tojson: no HTML escaping, non-ASCII kept, Python's json.dumps spacing.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(format):
    return NOW.strftime(format)


def make_env():
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    env.globals["dict"] = TemplateDict()
    env.globals["namespace"] = TemplateNamespace
    return env


REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


def prepare_messages(messages):
    """What apply_chat_template does to the chat before rendering."""
    out = []
    for m in messages:
        m = {k: v for k, v in m.items() if v is not None}  # _normalize_chat_messages
        # _alias_reasoning_fields: reasoning also under `thinking` (first) and `reasoning_content` (last)
        reasoning = next((m[k] for k in REASONING_FIELDS if m.get(k) is not None), None)
        if reasoning is not None:
            m = {"thinking": reasoning, **m, "reasoning_content": reasoning}
        out.append(m)
    return out


def template_kwargs(entry, case):
    # tokenizer.special_tokens_map: named special tokens only, None ones left out
    kw = {k: v for k, v in (("bos_token", entry.get("bos_token")), ("eos_token", entry.get("eos_token"))) if v is not None}
    kw.update({k: v for k, v in (entry.get("special") or {}).items() if v is not None})
    kw.update(case.get("extra") or {})  # caller kwargs override special tokens
    return kw


class RenderTimeout(Exception):
    pass


def _on_alarm(signum, frame):
    raise RenderTimeout("render exceeded the time limit")


def bounded(timeout, fn):
    """Run fn() under a wall-clock limit (SIGALRM interrupts a runaway template loop)."""
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        return fn()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def render(template, entry, case, timeout):
    # the variables apply_chat_template passes: special tokens, then the caller's kwargs
    return bounded(timeout, lambda: template.render(
        messages=prepare_messages(case["messages"]),
        tools=case.get("tools"),
        documents=None,
        add_generation_prompt=case.get("add_generation_prompt", False),
        **template_kwargs(entry, case)))


def main():
    global NOW
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", help="output file (default: stdout)")
    ap.add_argument("--now", default=None, help="clock for strftime_now: ISO datetime, or 'wall'")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds per render")
    args = ap.parse_args()
    if args.now == "wall":
        NOW = datetime.now()
    elif args.now:
        NOW = datetime.fromisoformat(args.now)

    with open(os.path.join(HERE, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    with open(os.path.join(HERE, "cases.json"), encoding="utf-8") as f:
        cases = json.load(f)

    env = make_env()
    results = []
    for entry in manifest:
        # newline="" keeps the template's bytes (e.g. CRLF) as transformers gets them from tokenizer_config.json
        with open(os.path.join(HERE, "corpus", entry["file"]), encoding="utf-8", newline="") as f:
            source = f.read()
        try:
            template, compile_error = bounded(args.timeout, lambda: env.from_string(source)), None
        except Exception as e:  # a syntax error fails every case of the template
            template, compile_error = None, e
        for case in cases:
            r = {"template": entry["file"], "case": case["name"]}
            try:
                if compile_error:
                    raise compile_error
                r.update(ok=True, output=render(template, entry, case, args.timeout))
            except Exception as e:  # templates raise on purpose (raise_exception) or hit unsupported input
                r.update(ok=False, error=str(e), error_type=type(e).__name__)
            results.append(r)

    text = json.dumps(results, ensure_ascii=False, indent=1) + "\n"
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    ok = sum(r["ok"] for r in results)
    print(f"{len(results)} pairs: {ok} ok, {len(results) - ok} raising; "
          f"{len(manifest)} templates, {len({e['family'] for e in manifest})} families", file=sys.stderr)


if __name__ == "__main__":
    main()
