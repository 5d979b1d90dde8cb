"""Answer several questions at once on one model and one context.

    python3 examples/python-ctypes/parallel.py MODEL.gguf "question 1" "question 2" ...

Each question runs on its own sequence of the context, in its own thread; the
library batches their decodes. Answers print as they complete."""

import sys

import tabagent


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    questions = sys.argv[2:]
    with tabagent.Model(sys.argv[1]) as model, \
            tabagent.Context(model, n_ctx=2048 * len(questions), n_seq_max=len(questions)) as ctx:
        chats = [[{"role": "user", "content": q}] for q in questions]
        for i, r in ctx.generate_many(chats, max_tokens=128, temperature=0):
            print(f"Q{i + 1}: {questions[i]}\nA{i + 1}: {r.text}\n   ({r.n_generated_tokens} tokens)\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
