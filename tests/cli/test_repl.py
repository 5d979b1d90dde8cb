"""`tabagent run`: one answer, and the interactive chat through a pseudo-terminal."""

import json
import os
import subprocess

import pexpect
import pytest
from conftest import BIN, MODEL

pytestmark = pytest.mark.skipif(not (os.path.exists(BIN) and os.path.exists(MODEL)), reason="binary or model missing")


def test_one_answer():
    r = subprocess.run([BIN, "run", MODEL, "What is the capital of France? One word.", "--temperature", "0",
                        "--max-tokens", "8", "--threads", "2"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout


def test_repl_save_load_history(tmp_path):
    p = pexpect.spawn(BIN, ["run", MODEL, "--temperature", "0", "--max-tokens", "8", "--threads", "2"],
                      encoding="utf-8", timeout=120, dimensions=(40, 200))
    p.expect(">>> ")
    p.sendline("/help")
    p.expect("/save FILE")
    p.expect(">>> ")
    p.sendline("What is the capital of France? One word.")
    p.expect("Paris")
    p.expect(">>> ")
    p.sendline("/set max_tokens 400")
    p.expect("max_tokens = 400")
    p.expect(">>> ")
    # Ctrl-C stops the answer, not the program.
    p.sendline("Write a very long story about a dragon and a knight.")
    p.expect(r"knight\.\r\n")  # the line's echo
    p.expect(r"\w+\W+\w+\W+\w+")  # the answer has begun
    p.sendintr()
    p.expect(r"\[stopped\]")
    p.expect(">>> ")
    p.sendline("/set max_tokens 8")
    p.expect(">>> ")
    f = tmp_path / "chat.json"
    p.sendline(f"/save {f}")
    p.expect(r"saved 4 messages and \d+ tokens of KV state")
    p.expect(">>> ")
    saved = json.loads(f.read_text())
    assert [m["role"] for m in saved["messages"]] == ["user", "assistant", "user", "assistant"]
    assert "Paris" in saved["messages"][1]["content"]
    p.sendline("/clear")
    p.expect("cleared")
    p.expect(">>> ")
    p.sendline("/history")
    p.expect(">>> ")
    assert "Paris" not in p.before
    p.sendline(f"/load {f}")
    p.expect(r"loaded 4 messages and \d+ tokens of KV state")
    p.expect(">>> ")
    p.sendline("/history")
    p.expect("Paris")
    p.expect(">>> ")
    p.sendline("/quit")
    p.expect(pexpect.EOF)
    p.close()
    assert p.exitstatus == 0
