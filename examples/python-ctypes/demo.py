#!/usr/bin/env python3
"""Stream a chat reply through the tabagent package.

    python3 demo.py [MODEL.gguf] ["question"]

The model defaults to $TABAGENT_TEST_MODEL or where scripts/fetch-model.sh puts it.
"""
import os
import sys

import tabagent

DEFAULT = os.environ.get(
    "TABAGENT_TEST_MODEL",
    os.path.expanduser("~/.cache/tabagent/models/SmolLM2-135M-Instruct.Q4_1.gguf"),
)


def main() -> int:
    path = sys.argv[1] if len(sys.argv) > 1 else DEFAULT
    question = sys.argv[2] if len(sys.argv) > 2 else "What is the capital of France?"
    try:
        with tabagent.Model(path) as model, tabagent.Context(model, n_ctx=2048) as ctx:
            info = model.info
            print(f"[{info.name or info.architecture}, {info.quantization}, {info.n_params / 1e6:.0f}M params]",
                  file=sys.stderr)
            messages = [
                {"role": "system", "content": "You are a helpful assistant. Answer briefly."},
                {"role": "user", "content": question},
            ]
            for piece in ctx.chat_stream(messages, temperature=0.0, max_tokens=128):
                print(piece, end="", flush=True)
            print()
    except tabagent.TabagentError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
