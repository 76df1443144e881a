#!/usr/bin/env python3
"""doc_check.py - the docs name only what exists: every relative link of README.md and docs/*.md
resolves (file, and heading anchor where one is given); every `make TARGET` is a Makefile
target; every `distill COMMAND --option` is a command of the binary with that option in its help
text; every repository path (configs/..., tests/..., src/...) exists; every data file a JSON example
names ("path", "labels", resolved as distill does: against the folder of the file holding it)
exists; and no dated history (the
words "session" or "issue N") is left in README.md, docs/ or configs/README.md.

usage: doc_check.py [--root DIR] [--distill BIN] [FILE.md ...]
Prints one line per problem ("FILE:LINE: ...") and exits 1 if there is any; stdlib only."""
import glob
import os
import re
import subprocess
import sys

PATH_RE = re.compile(r"(?<![\w./-])((?:configs|tests|src|include|data|docs|share|\.ci)/[A-Za-z0-9_.*/+-]*[A-Za-z0-9_*/])")
LINK_RE = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
MAKE_RE = re.compile(r"(?<![\w-])make((?:\s+[^\s`|;&#)\"']+)*)")
CMD_RE = re.compile(r"(?<![\w-])(?:\./|build-mpi/|[\w/.-]*/bin/)?distill\s+([a-z][a-z-]*|--?[a-z-]+)((?:[ \t]+(?:\\\n)?[^\s`|;&#)]+)*)")
HISTORY_RE = re.compile(r"\b(session|issue [0-9]+)\b", re.I)


def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def anchors(path):
    out, seen, fence = set(), {}, False
    for line in open(path, encoding="utf-8"):
        if line.startswith("```"):
            fence = not fence
        if fence or not line.startswith("#"):
            continue
        a = slug(line.lstrip("#"))
        n = seen.get(a, 0)
        seen[a] = n + 1
        out.add(a if n == 0 else f"{a}-{n}")
    return out


def make_targets(root):
    targets = set()
    for line in open(os.path.join(root, "Makefile"), encoding="utf-8"):
        m = re.match(r"^([A-Za-z0-9_. -]+?)\s*:(?!=)", line)
        if m and "$" not in m.group(1):
            targets.update(m.group(1).split())
        if line.startswith(".PHONY:"):
            targets.update(line.split()[1:])
    return targets


def run(cmd):
    return subprocess.run(cmd, capture_output=True, text=True).stdout


def distill_commands(binary):
    """{command: set of its options} from `distill --help` and `distill help CMD`."""
    top = run([binary, "--help"])
    cmds = {"help": set(), "--help": set(), "-h": set(), "--version": set(), "version": set()}
    names = re.findall(r"^  ([a-z]+)\s", top.split("Commands:", 1)[1].split("\n\n", 1)[0], re.M)
    for name in names:
        if name == "help":
            continue
        text = run([binary, "help", name])
        cmds[name] = set(re.findall(r"^ {2,6}(?:-[A-Za-z], )?(--[a-z][a-z0-9-]*)", text, re.M))
        cmds[name] |= set(re.findall(r"^ {2,6}(-[A-Za-z]),", text, re.M))
    return cmds


def code_spans(text):
    """The code of a markdown file, line-numbered: fenced blocks and `inline` spans."""
    out, fence = [], False
    for i, line in enumerate(text.split("\n"), 1):
        if line.startswith("```"):
            fence = not fence
            continue
        if fence:
            out.append((i, re.sub(r"(^|\s)#.*", "", line)))  # a shell comment is prose
        else:
            out += [(i, s) for s in re.findall(r"`([^`]+)`", line)]
    return out


def check_file(path, root, targets, cmds, problems):
    rel = os.path.relpath(path, root)
    text = open(path, encoding="utf-8").read()
    lines = text.split("\n")
    here = os.path.dirname(path)
    for i, line in enumerate(lines, 1):
        for target in LINK_RE.findall(line):
            if re.match(r"^[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            dest = os.path.normpath(os.path.join(here, file)) if file else path
            if not os.path.exists(dest):
                problems.append(f"{rel}:{i}: link to {target}: no such file")
            elif anchor and dest.endswith(".md") and anchor not in anchors(dest):
                problems.append(f"{rel}:{i}: link to {target}: no heading #{anchor} there")
        for p in PATH_RE.findall(line):
            p = p.split("<")[0].rstrip("/.")
            if p and not glob.glob(os.path.join(root, p)):
                problems.append(f"{rel}:{i}: {p}: no such file or folder")
        if "InferenceSession" in line:
            line = line.replace("InferenceSession", "")
        line = re.sub(r"\bsession\.[a-z0-9_.]+", "", line)  # ONNX Runtime's configuration keys
        m = HISTORY_RE.search(line)
        if m:
            problems.append(f"{rel}:{i}: \"{m.group(0)}\": dated history belongs in git, not in the docs")
    fence = None
    for i, line in enumerate(lines, 1):
        if line.startswith("```"):
            fence = line[3:].strip() if fence is None else None
            continue
        if fence == "json":
            for key, value in re.findall(r'"(path|labels)"\s*:\s*"([^"]+)"', line):
                if not os.path.exists(os.path.join(here, value)):
                    problems.append(f"{rel}:{i}: {key} {value}: no such file (from {os.path.dirname(rel) or '.'}/)")
    for i, code in code_spans(text):
        for m in MAKE_RE.finditer(code):
            for word in m.group(1).split():
                if word.startswith("-") or "=" in word:
                    continue
                if word not in targets:
                    problems.append(f"{rel}:{i}: make {word}: no such Makefile target")
                break
        if cmds is None:
            continue
        for m in CMD_RE.finditer(code):
            name = m.group(1)
            if name not in cmds:
                problems.append(f"{rel}:{i}: distill {name}: no such command")
                continue
            for opt in re.findall(r"(?<![\w=-])(--?[a-z][a-z0-9-]*)", m.group(2)):
                if name in ("help", "--help", "-h", "--version", "version"):
                    break
                if opt not in cmds[name] and opt not in ("--help", "-h"):
                    problems.append(f"{rel}:{i}: distill {name} {opt}: no such option")


def main(argv):
    root, binary, files = os.getcwd(), None, []
    args = iter(argv)
    for a in args:
        if a == "--root":
            root = os.path.abspath(next(args))
        elif a == "--distill":
            binary = next(args)
        else:
            files.append(a)
    if not files:
        files = [os.path.join(root, "README.md"), os.path.join(root, "configs", "README.md")]
        files += sorted(glob.glob(os.path.join(root, "docs", "*.md")))
    problems = []
    targets = make_targets(root)
    cmds = distill_commands(binary) if binary else None
    for f in files:
        check_file(os.path.abspath(f), root, targets, cmds, problems)
    for p in problems:
        print(p)
    print(f"doc_check: {len(files)} files, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
