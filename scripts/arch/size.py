#!/usr/bin/env python3
"""The size bounds of ARCHITECTURE.md's "Architecture invariant", measured.

Prints the longest function of probe-core and the largest file outside
tests (lines of the file before its `#[cfg(test)]` module), and the worst
offenders of each. Exits 1 when either is over its bound (functions: 120
lines, files: 900 lines), so CI fails on a new one.

    scripts/arch/size.py [--top N] [ROOT]

A function's length is counted from its `fn` line to the line of the brace
that closes its body (braces inside strings, chars and comments ignored).
"""
import os
import re
import sys

# One Rust lexer for both architecture scripts: layers.py's.
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from layers import strip_code  # noqa: E402

FN_LIMIT = 120
FILE_LIMIT = 900

FN_RE = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?(extern\s+\"[^\"]*\"\s+)?fn\s+([A-Za-z_][A-Za-z0-9_]*)")


def non_test_lines(lines):
    """Lines before the file's `#[cfg(test)]` module (its tests)."""
    for k, line in enumerate(lines):
        if line.strip() == "#[cfg(test)]":
            nxt = lines[k + 1].strip() if k + 1 < len(lines) else ""
            if nxt.startswith("mod ") or nxt.startswith("pub mod ") or nxt.startswith("pub(crate) mod "):
                return k
    return len(lines)


def functions(path):
    text = open(path, encoding="utf-8").read()
    code = strip_code(text).split("\n")
    end_of_code = non_test_lines(text.split("\n"))
    found = []
    for k in range(end_of_code):
        m = FN_RE.match(code[k])
        if not m:
            continue
        # Braces inside the parameter list (destructuring patterns) are not
        # the body's: the body opens at the first `{` outside parentheses.
        depth, parens, opened, j = 0, 0, False, k
        while j < len(code):
            line = code[j]
            for ch in line:
                if not opened and ch in "()":
                    parens += 1 if ch == "(" else -1
                elif ch == "{" and (opened or parens == 0):
                    depth += 1
                    opened = True
                elif ch == "}" and opened:
                    depth -= 1
                elif ch == ";" and not opened and parens == 0:
                    break  # a declaration without a body
            else:
                if opened and depth == 0:
                    found.append((j - k + 1, m.group(7), k + 1))
                    break
                j += 1
                continue
            break
    return found


def rust_files(root):
    for dirpath, dirnames, files in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in ("target", ".git", "tests", "fuzz")]
        for f in files:
            if f.endswith(".rs"):
                yield os.path.join(dirpath, f)


def main():
    args = sys.argv[1:]
    top = 5
    if args[:1] == ["--top"]:
        top, args = int(args[1]), args[2:]
    root = args[0] if args else os.path.join(os.path.dirname(__file__), "..", "..")
    root = os.path.normpath(root)
    fns, files = [], []
    for path in rust_files(os.path.join(root, "probe-core", "src")):
        rel = os.path.relpath(path, root)
        fns += [(n, f"{rel}:{line} {name}") for n, name, line in functions(path)]
    for member in ("probe-core", "agent", "integration"):
        for path in rust_files(os.path.join(root, member, "src")):
            lines = open(path, encoding="utf-8").read().split("\n")
            files.append((non_test_lines(lines), os.path.relpath(path, root)))
    fns.sort(reverse=True)
    files.sort(reverse=True)
    print(f"longest functions in probe-core (bound {FN_LIMIT} lines):")
    for n, where in fns[:top]:
        print(f"  {n:5}  {where}")
    print(f"largest files outside tests (bound {FILE_LIMIT} lines):")
    for n, where in files[:top]:
        print(f"  {n:5}  {where}")
    bad = [w for n, w in fns if n > FN_LIMIT] + [w for n, w in files if n > FILE_LIMIT]
    if bad:
        print(f"over the bounds: {len(bad)}", file=sys.stderr)
        for w in bad:
            print(f"  {w}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
