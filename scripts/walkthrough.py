#!/usr/bin/env python3
"""Runs the ```sh blocks of a Markdown walk-through, in order, in one bash session, and
checks that each ends well. With --write, the plain ``` block that follows a ```sh
block is replaced by what that block printed. ```bash blocks are shown, never run.

    scripts/walkthrough.py docs/walkthrough.md [--write] [--env FILE]

A block fails when bash stops inside it (the session runs with `set -e -o pipefail`),
or when its output shows a failure no walk-through means to show (an internal error, a
command not found). --env FILE is read instead of the `target/run.env` the blocks name.
Used by scripts/check-walkthrough.sh, which starts a system of its own first.
"""

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile

FENCE = re.compile(r"^```(\S*)\s*$")
# What no block of a walk-through is meant to print.
FAILURES = [
    (re.compile(r"command not found"), "a command was not found"),
    (re.compile(r'"code":"internal"'), "the api answered 500 internal"),
    (re.compile(r"\[5\d\d\]"), "the api answered 5xx"),
    (re.compile(r"^curl: \(\d+\)", re.M), "curl failed"),
    (re.compile(r"^jq: error", re.M), "jq could not read an answer"),
]
# Frames of the background watchers may arrive after their block ended: each block
# waits this long before it is closed.
SETTLE_SECONDS = 0.7
TIMEOUT_SECONDS = 600


def blocks(lines):
    """(start, end, info) of every fenced block: lines[start] is the opening fence."""
    found, opened = [], None
    for number, line in enumerate(lines):
        match = FENCE.match(line)
        if not match:
            continue
        if opened is None:
            opened = (number, match.group(1))
        else:
            found.append((opened[0], number, opened[1]))
            opened = None
    if opened is not None:
        sys.exit(f"walkthrough: the block opened on line {opened[0] + 1} is never closed")
    return found


def commands_and_outputs(lines):
    """[(command block, its output block or None)]: an output block is a plain ``` block
    right after a ```sh block."""
    fenced = blocks(lines)
    pairs = []
    for index, (start, end, info) in enumerate(fenced):
        if info != "sh":
            continue
        output = None
        if index + 1 < len(fenced):
            next_start, next_end, next_info = fenced[index + 1]
            between = lines[end + 1 : next_start]
            if next_info == "" and all(not line.strip() for line in between):
                output = (next_start, next_end)
        pairs.append(((start, end), output))
    return pairs


def run(lines, pairs, env_file):
    script = ["set -e -o pipefail"]
    for number, ((start, end), _) in enumerate(pairs):
        body = "\n".join(lines[start + 1 : end])
        if env_file:
            body = body.replace("target/run.env", env_file)
        script += [
            f"printf '\\n@@walkthrough-begin {number}@@\\n'",
            body,
            f"sleep {SETTLE_SECONDS}",
            f"printf '\\n@@walkthrough-end {number}@@\\n'",
        ]
    # Output into a file, not a pipe: background commands a failed block leaves running
    # would hold a pipe open. The session is its own process group, ended as a whole.
    with tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace") as out:
        session = subprocess.Popen(
            ["bash", "-c", "\n".join(script)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            session.wait(timeout=TIMEOUT_SECONDS)
            stopped = ""
        except subprocess.TimeoutExpired:
            stopped = f"\n(walkthrough: stopped after {TIMEOUT_SECONDS} s)\n"
        finally:
            try:
                os.killpg(session.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            session.wait()
        out.seek(0)
        text = out.read() + stopped
    outputs, ended = {}, set()
    for match in re.finditer(r"@@walkthrough-begin (\d+)@@\n(.*?)(?=\n@@walkthrough-(?:begin|end) \d+@@|\Z)", text, re.S):
        outputs[int(match.group(1))] = match.group(2)
    for match in re.finditer(r"@@walkthrough-end (\d+)@@", text):
        ended.add(int(match.group(1)))
    return outputs, ended, text


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("markdown")
    parser.add_argument("--write", action="store_true", help="write each block's output under it")
    parser.add_argument("--env", help="the settings file to read instead of target/run.env")
    args = parser.parse_args()

    with open(args.markdown, encoding="utf-8") as file:
        lines = file.read().split("\n")
    pairs = commands_and_outputs(lines)
    outputs, ended, _ = run(lines, pairs, args.env)

    problems = []
    for number, ((start, end), _) in enumerate(pairs):
        where = f"{args.markdown}:{start + 1}"
        output = outputs.get(number)
        if output is None:
            problems.append(f"{where}: the block did not run (an earlier one stopped the session)")
            break
        if number not in ended:
            problems.append(f"{where}: the block failed; it printed:\n{output}")
            break
        for pattern, meaning in FAILURES:
            if pattern.search(output):
                problems.append(f"{where}: {meaning}; the block printed:\n{output}")

    if args.write and not problems:
        # From the bottom up, so that earlier line numbers stay right.
        for number, (_, output) in reversed(list(enumerate(pairs))):
            if output is None:
                continue
            printed = outputs[number].strip("\n").split("\n")
            printed = [line.rstrip() for line in printed]
            lines[output[0] + 1 : output[1]] = printed if printed != [""] else []
        with open(args.markdown, "w", encoding="utf-8") as file:
            file.write("\n".join(lines))
        print(f"walkthrough: wrote the outputs of {len(pairs)} blocks into {args.markdown}")

    if problems:
        for problem in problems:
            print(f"walkthrough: FAILED: {problem}", file=sys.stderr)
        sys.exit(1)
    print(f"walkthrough: {len(pairs)} blocks of {args.markdown} ran")


if __name__ == "__main__":
    main()
