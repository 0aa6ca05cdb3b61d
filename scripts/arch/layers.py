#!/usr/bin/env python3
"""The import rules of ARCHITECTURE.md's "Architecture invariant", checked.

Builds the file-level import graph of probe-core/src and fails on

  * a file-level import cycle: a strongly connected component of more than
    one file, printed with one concrete cycle `a.rs -> b.rs -> a.rs` and the
    line of each of its imports;
  * a layering breach: a file of one top-level module importing a module of
    a higher layer (or of its own layer, unless LAYERS allows that pair),
    printed as `file:line: <module> imports <module> (layer X above Y)`.

    scripts/arch/layers.py [--quiet] [ROOT]      # ROOT: probe-core/src
    scripts/arch/layers.py --self-test

Exit status: 0 clean, 1 on any cycle or breach, 2 on a usage error. The
table LAYERS below is the source of truth for the layer order;
ARCHITECTURE.md quotes it.

What is an import (an edge from the importing file to the file of the
module that defines the item):

  * `use` declarations (also inside functions, also `pub use`), with their
    trees (`use crate::a::{b::C, d}`), starting at `crate::`, `super::`,
    `self::`, a child module or a module name brought into scope by an
    earlier `use`;
  * paths in code: `crate::a::b::f()`, `super::x::Y`, `self::m::Z`, and
    paths through a child module or an imported module name (`probe::udp::
    exchange` after `use crate::probe`);
  * `mod x;` declarations (the parent's edge to its child's file).

A path names an item; it resolves to the file of its longest existing
module prefix (a module `a::b` is `a/b.rs` or `a/b/mod.rs`, or an inline
`mod b { ... }` inside `a`'s file), and when the item there is itself
brought in by a `use` (a re-export such as `pub use outcome::Observed` in
`probe/mod.rs`), through that `use` to the file that defines it. Comments,
strings and `#[cfg(test)]` items (test modules may use anything) are
skipped; so is `lib.rs`, which declares every top-level module.

The cycle rule. A parent module declaring its children (`mod x;`) and
re-exporting their items (`pub use x::Item;`) is the usual shape of a Rust
module, and so is a child using an item its parent defines (`super::Item`):
these two together are not a cycle. So edges from a module's file to its
own descendants' files that come from `mod` declarations or re-exports
(`pub use`, `pub(crate) use`) are left out of the cycle search. Every other
edge counts, so a parent that *uses* a child's items in its own code while
that child uses the parent's items (or any longer loop of real uses) is a
cycle (PARENT_CHILD_USES_COUNT = False would ignore every edge between a
module and its descendants instead). Layer breaches are checked on every
edge.
"""
import os
import re
import sys
import tempfile

# The layer order of probe-core's top-level modules, lowest first. A module
# may import modules of lower layers only; modules of one layer do not
# import each other unless SAME_LAYER_ALLOWED lists the pair (importer,
# imported). The invariants this keeps: `probe` never imports `agent`,
# `agent` never imports `report`, nothing imports a layer above its own.
LAYERS = [
    ["port", "time", "errors"],
    # The plan model, with the catalog (built-in roles) under it.
    ["plan"],
    ["pki"],
    ["probe"],
    ["control"],
    ["agent"],
    # Aligned tables and `plan show` (plan only): the report's
    # renderers and the wso2 reader build on them.
    ["render"],
    ["report"],
    ["round"],
    # The top: each of these is a front end of the layers below and no
    # layer imports them (wso2 is a reader beside the plan, never below it).
    ["schedule", "wso2", "demo", "fuzzing", "twin"],
]
SAME_LAYER_ALLOWED: set = set()

# Whether a parent module's file and its own descendants' files that *use*
# each other's items (not only `mod x;` and re-exports, which never count)
# form a cycle. True is the rule of ARCHITECTURE.md: a mod.rs that calls
# into its children while they use its items is one unit split across
# files. False ignores every edge between a module and its descendants, and
# finds only cycles between siblings and across modules.
PARENT_CHILD_USES_COUNT = True

SRC_DEFAULT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "probe-core", "src")

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
KIND_RANK = {"use": 0, "reexport": 1, "mod": 2}


# ---------------------------------------------------------------- lexing

def strip_code(text):
    """The text with comment, string and char contents blanked (newlines
    kept, so offsets keep their lines)."""
    out = []
    i, n = 0, len(text)
    blank = lambda s: "".join(ch if ch == "\n" else " " for ch in s)
    while i < n:
        c = text[i]
        prev = text[i - 1] if i else ""
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(blank(text[i:j]))
            i = j
        elif c in "rb" and not (prev.isalnum() or prev == "_") and re.match(r'(br|rb|r)#*"', text[i:i + 300]):
            m = re.match(r'(?:br|rb|r)(#*)"', text[i:])
            close = '"' + m.group(1)
            j = text.find(close, i + len(m.group(0)))
            j = n if j < 0 else j + len(close)
            out.append(blank(text[i:j]))
            i = j
        elif c == '"' or (c == "b" and text.startswith('b"', i) and not (prev.isalnum() or prev == "_")):
            j = i + (2 if c == "b" else 1)
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j += 1
            out.append(blank(text[i:j]))
            i = j
        elif c == "'" or (c == "b" and text.startswith("b'", i) and not (prev.isalnum() or prev == "_")):
            k = i + (1 if c == "b" else 0)
            m = re.match(r"'(\\.|\\u\{[0-9a-fA-F]+\}|\\x[0-9a-fA-F]{2}|[^\\'])'", text[k:])
            if m:
                out.append(" " * (k - i + len(m.group(0))))
                i = k + len(m.group(0))
            else:  # a lifetime or a label
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def matching(text, i, open_ch="{", close_ch="}"):
    """The index just past the bracket that closes the one at text[i]."""
    depth = 0
    for j in range(i, len(text)):
        if text[j] == open_ch:
            depth += 1
        elif text[j] == close_ch:
            depth -= 1
            if depth == 0:
                return j + 1
    return len(text)


TEST_ATTR = re.compile(r"#\[cfg\((?:test|all\(\s*test\b[^\]]*|any\(\s*test\b[^\]]*)\)\]")


def blank_test_items(code):
    """`code` with every `#[cfg(test)]` item (its attributes, and its body
    or `mod x;` declaration) blanked."""
    chars = list(code)
    for m in TEST_ATTR.finditer(code):
        j = m.end()
        # Further attributes of the same item.
        while True:
            k = j
            while k < len(code) and code[k].isspace():
                k += 1
            if code.startswith("#[", k):
                j = matching(code, k + 1, "[", "]")
            else:
                break
        # The item: up to its `;` or the end of its first `{ ... }` block.
        depth, k = 0, j
        while k < len(code):
            ch = code[k]
            if ch in "([":
                depth += 1
            elif ch in ")]":
                depth -= 1
            elif ch == ";" and depth == 0:
                k += 1
                break
            elif ch == "{" and depth == 0:
                k = matching(code, k)
                break
            k += 1
        for p in range(m.start(), min(k, len(code))):
            if chars[p] != "\n":
                chars[p] = " "
    return "".join(chars)


# ---------------------------------------------------------------- use trees

def parse_use_tree(tokens, pos, prefix, out):
    """Parses one use tree at tokens[pos]; appends (segments, alias) to out
    (alias "*" for a glob); returns the position after the tree."""
    segs = list(prefix)
    while pos < len(tokens):
        t = tokens[pos]
        if t == "{":
            pos += 1
            while pos < len(tokens) and tokens[pos] != "}":
                pos = parse_use_tree(tokens, pos, segs, out)
                if pos < len(tokens) and tokens[pos] == ",":
                    pos += 1
            return pos + 1
        if t == "*":
            out.append((segs, "*"))
            return pos + 1
        if t == "::":
            pos += 1
            continue
        if re.fullmatch(IDENT, t):
            segs = segs + [t]
            pos += 1
            if pos < len(tokens) and tokens[pos] == "as":
                out.append((segs, tokens[pos + 1]))
                return pos + 2
            if pos < len(tokens) and tokens[pos] == "::":
                continue
            if segs and segs[-1] == "self":
                segs = segs[:-1]
                out.append((segs, segs[-1] if segs else "self"))
            else:
                out.append((segs, segs[-1]))
            return pos
        return pos + 1
    return pos


USE_RE = re.compile(r"(?<![A-Za-z0-9_])(pub(?:\s*\([^)]*\))?\s+)?use\s+([^;]*);")
ITEM_RE = re.compile(r"(?<![A-Za-z0-9_])(?:fn|struct|enum|trait|type|const|static|union)\s+(" + IDENT + ")|macro_rules!\s*(" + IDENT + ")")
MOD_RE = re.compile(r"(?<![A-Za-z0-9_])(?:pub(?:\s*\([^)]*\))?\s+)?mod\s+(" + IDENT + r")\s*([;{])")
PATH_RE = re.compile(r"(?<![A-Za-z0-9_:])((?:" + IDENT + r")(?:\s*::\s*" + IDENT + r")+)")


# ---------------------------------------------------------------- the graph

class Module:
    def __init__(self, path, file):
        self.path = path          # tuple of names, () for the crate root
        self.file = file          # the file it lives in (relative to ROOT)
        self.items = set()        # names defined in it
        self.imports = {}         # name -> (segments, module context, line, kind)
        self.globs = []           # (segments, context, line)


class Graph:
    def __init__(self, root):
        self.root = root
        self.modules = {}         # path tuple -> Module
        self.uses = []            # (file, module ctx, segments, line, kind)
        self.edges = {}           # (from file, to file) -> (line, kind)
        self.problems = []        # files declared but missing, etc.

    # Reading the tree -------------------------------------------------

    def load(self):
        self._read_file("lib.rs", ())
        for (src, ctx, segs, line, kind) in self.uses:
            target = self.resolve(ctx, segs)
            if target is None:
                continue
            to_file = self.modules[target[0]].file if target[1] is None else target[1]
            if to_file == src:
                continue
            key = (src, to_file)
            rank = (KIND_RANK[kind], line)
            if key not in self.edges or rank < (KIND_RANK[self.edges[key][1]], self.edges[key][0]):
                # Keep the strongest reason (a real use beats a re-export,
                # which beats a `mod` line), then the first line.
                self.edges[key] = (line, kind)

    def _read_file(self, rel, modpath):
        full = os.path.join(self.root, rel)
        with open(full, encoding="utf-8") as f:
            text = f.read()
        code = blank_test_items(strip_code(text))
        line_of = _line_index(code)
        # Inline modules: (start, end, name), outermost first.
        spans = []
        for m in MOD_RE.finditer(code):
            if m.group(2) == "{":
                brace = m.end() - 1
                spans.append((brace, matching(code, brace), m.group(1)))

        def ctx_at(pos):
            p = list(modpath)
            for (s, e, name) in spans:
                if s < pos < e:
                    p.append(name)
            return tuple(p)

        self.modules[modpath] = Module(modpath, rel)
        for (s, e, name) in spans:
            sub = ctx_at(s + 1)
            self.modules.setdefault(sub, Module(sub, rel))
        # Items defined here (anywhere in the file: locals only overcount).
        for m in ITEM_RE.finditer(code):
            self.modules[ctx_at(m.start())].items.add(m.group(1) or m.group(2))
        # `mod x;` declarations: the child's file, read recursively.
        children = []
        for m in MOD_RE.finditer(code):
            if m.group(2) != ";":
                continue
            ctx = ctx_at(m.start())
            name = m.group(1)
            base = os.path.dirname(rel) if os.path.basename(rel) in ("lib.rs", "mod.rs") else rel[:-3]
            base = os.path.join(base, *ctx[len(modpath):])
            cands = [os.path.join(base, name + ".rs"), os.path.join(base, name, "mod.rs")]
            child = next((c for c in cands if os.path.isfile(os.path.join(self.root, c))), None)
            if child is None:
                self.problems.append("%s:%d: mod %s: neither %s nor %s exists" % (rel, line_of(m.start()), name, cands[0], cands[1]))
                continue
            self.modules[ctx].items.add(name)
            children.append((child, ctx + (name,), line_of(m.start())))
        # `use` declarations, then blank them so paths in code skip them.
        chars = list(code)
        for m in USE_RE.finditer(code):
            ctx = ctx_at(m.start())
            kind = "reexport" if m.group(1) else "use"
            tokens = re.findall(IDENT + r"|::|[{},*]", m.group(2))
            trees = []
            if tokens and tokens[0] == "::":
                continue  # an extern crate path
            parse_use_tree(tokens, 0, [], trees)
            mod = self.modules[ctx]
            for (segs, alias) in trees:
                if not segs:
                    continue
                if alias == "*":
                    mod.globs.append((segs, ctx, line_of(m.start())))
                elif alias != "_":
                    mod.imports[alias] = (segs, ctx, line_of(m.start()), kind)
                self.uses.append((rel, ctx, segs, line_of(m.start()), kind))
            for p in range(m.start(), m.end()):
                if chars[p] != "\n":
                    chars[p] = " "
        code_no_use = "".join(chars)
        for (child, cpath, line) in children:
            self._read_file(child, cpath)
            self.uses.append((rel, modpath, ["self"] + list(cpath[len(modpath):]), line, "mod"))
        # Paths in code.
        for m in PATH_RE.finditer(code_no_use):
            segs = [s.strip() for s in m.group(1).split("::")]
            self.uses.append((rel, ctx_at(m.start()), segs, line_of(m.start()), "use"))

    # Resolving --------------------------------------------------------

    def _start(self, ctx, segs):
        """The module a path's first segment names, and the rest of the
        path; None for paths outside the crate (std, dependencies)."""
        first = segs[0]
        if first == "crate":
            return (), segs[1:]
        if first in ("self", "super"):
            cur = list(ctx)
            rest = list(segs)
            while rest and rest[0] in ("self", "super"):
                if rest[0] == "super":
                    if not cur:
                        return None
                    cur.pop()
                rest.pop(0)
            return tuple(cur), rest
        # A child module of the current module, or a name the module's own
        # `use` brought in (a module or an item path).
        if ctx + (first,) in self.modules:
            return ctx + (first,), segs[1:]
        mod = self.modules.get(ctx)
        if mod and first in mod.imports:
            isegs, ictx, _, _ = mod.imports[first]
            if isegs[0] == first and ictx == ctx:
                return None  # `use foo;` of an extern crate
            start = self._start(ictx, isegs)
            if start is None:
                return None
            base, rest = start
            return base, rest + segs[1:]
        return None

    def resolve(self, ctx, segs, depth=0):
        """(module path, defining file or None) of the item a path names."""
        if not segs or depth > 16:
            return None
        start = self._start(ctx, segs)
        if start is None:
            return None
        mod, rest = start
        if mod not in self.modules:
            return None
        # Longest module prefix.
        while rest and mod + (rest[0],) in self.modules:
            mod, rest = mod + (rest[0],), rest[1:]
        if rest:
            m = self.modules[mod]
            name = rest[0]
            if name not in m.items and name in m.imports:
                isegs, ictx, _, _ = m.imports[name]
                target = self.resolve(ictx, isegs + rest[1:], depth + 1)
                if target is not None:
                    return target
        return (mod, None)

    # Checking ---------------------------------------------------------

    def module_of(self, rel):
        for m in self.modules.values():
            if m.file == rel:
                return m.path
        return None

    def top(self, rel):
        path = self.module_of(rel)
        return path[0] if path else None

    def cycle_edges(self, parent_child_uses_count=True):
        """Edges that count for cycles (see the module doc)."""
        out = {}
        for (a, b), (line, kind) in self.edges.items():
            pa, pb = self.module_of(a), self.module_of(b)
            if pa is not None and pb is not None:
                down = pb[:len(pa)] == pa
                up = pa[:len(pb)] == pb
                if down and kind in ("mod", "reexport"):
                    continue
                if not parent_child_uses_count and (down or up):
                    continue
            out.setdefault(a, []).append(b)
        return out


def _line_index(text):
    starts = [0]
    for i, ch in enumerate(text):
        if ch == "\n":
            starts.append(i + 1)
    import bisect

    return lambda pos: bisect.bisect_right(starts, pos)


def sccs(adj):
    """Tarjan's strongly connected components, iteratively."""
    index, low, on, stack, out = {}, {}, set(), [], []
    counter = [0]
    nodes = sorted(set(adj) | {b for bs in adj.values() for b in bs})
    for root in nodes:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            v, i = work.pop()
            if i == 0:
                index[v] = low[v] = counter[0]
                counter[0] += 1
                stack.append(v)
                on.add(v)
            succ = sorted(adj.get(v, []))
            recurse = False
            for k in range(i, len(succ)):
                w = succ[k]
                if w not in index:
                    work.append((v, k + 1))
                    work.append((w, 0))
                    recurse = True
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            if recurse:
                continue
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                out.append(sorted(comp))
            if work:
                u = work[-1][0]
                low[u] = min(low[u], low[v])
    return out


def shortest_cycle(adj, comp):
    """One shortest cycle through the first file of a component."""
    members = set(comp)
    start = comp[0]
    prev = {start: None}
    queue = [start]
    while queue:
        nxt = []
        for v in queue:
            for w in sorted(adj.get(v, [])):
                if w not in members:
                    continue
                if w == start:
                    path = [v]
                    while prev[path[-1]] is not None:
                        path.append(prev[path[-1]])
                    return list(reversed(path)) + [start]
                if w not in prev:
                    prev[w] = v
                    nxt.append(w)
        queue = nxt
    return [start, start]


def check(root, layers=None, allowed=None, parent_child_uses_count=None):
    """(cycles, breaches, problems) of the tree at root: cycles as lists of
    lines to print, breaches as lines."""
    layers = LAYERS if layers is None else layers
    allowed = SAME_LAYER_ALLOWED if allowed is None else allowed
    if parent_child_uses_count is None:
        parent_child_uses_count = PARENT_CHILD_USES_COUNT
    level = {name: i for i, names in enumerate(layers) for name in names}
    g = Graph(root)
    g.load()
    problems = list(g.problems)

    adj = g.cycle_edges(parent_child_uses_count)
    cycles = []
    for comp in sccs(adj):
        if len(comp) < 2:
            continue
        cyc = shortest_cycle(adj, comp)
        lines = ["cycle of %d files (%s): %s" % (len(comp), ", ".join(comp), " -> ".join(cyc))]
        for a, b in zip(cyc, cyc[1:]):
            line, kind = g.edges[(a, b)]
            lines.append("  %s:%d: %s %s" % (a, line, "imports" if kind == "use" else kind, b))
        cycles.append(lines)

    breaches = []
    seen_unknown = set()
    for (a, b), (line, kind) in sorted(g.edges.items(), key=lambda e: (e[0][0], e[1][0], e[0][1])):
        ta, tb = g.top(a), g.top(b)
        if ta is None or tb is None or ta == tb:
            continue  # lib.rs, or inside one module
        for t in (ta, tb):
            if t not in level and t not in seen_unknown:
                seen_unknown.add(t)
                problems.append("%s: top-level module `%s` is in no layer of LAYERS" % (a if t == ta else b, t))
        if ta not in level or tb not in level:
            continue
        la, lb = level[ta], level[tb]
        if lb > la:
            breaches.append("%s:%d: %s imports %s (layer %d above %d)" % (a, line, ta, tb, lb, la))
        elif lb == la and (ta, tb) not in allowed:
            breaches.append("%s:%d: %s imports %s (layer %d, its own layer: not in SAME_LAYER_ALLOWED)" % (a, line, ta, tb, lb))
    return cycles, breaches, problems


def main(argv):
    quiet = "--quiet" in argv
    args = [a for a in argv if a != "--quiet"]
    if args and args[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    if args and args[0] == "--self-test":
        return self_test()
    if len(args) > 1 or (args and args[0].startswith("-")):
        print("usage: layers.py [--quiet] [ROOT] | --self-test", file=sys.stderr)
        return 2
    root = os.path.normpath(args[0] if args else SRC_DEFAULT)
    if not os.path.isfile(os.path.join(root, "lib.rs")):
        print("layers.py: %s has no lib.rs" % root, file=sys.stderr)
        return 2
    cycles, breaches, problems = check(root)
    shown = os.path.relpath(root)
    for p in problems:
        print("%s/%s" % (shown, p))
    for c in cycles:
        print(c[0])
        for line in c[1:]:
            print("  %s/%s" % (shown, line.strip()))
    for b in breaches:
        print("%s/%s" % (shown, b))
    bad = len(cycles) + len(breaches) + len(problems)
    if bad or not quiet:
        print("layers.py: %d file-level cycle(s), %d layer breach(es)%s in %s" % (
            len(cycles), len(breaches), ", %d problem(s)" % len(problems) if problems else "", shown))
    return 1 if bad else 0


# ---------------------------------------------------------------- self-test

def _tree(files):
    d = tempfile.mkdtemp(prefix="layers-selftest-")
    for rel, text in files.items():
        p = os.path.join(d, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as f:
            f.write(text)
    return d


def self_test():
    import shutil

    layers = [["low"], ["mid"], ["high"]]
    failures = []

    def expect(name, cond, detail):
        if not cond:
            failures.append("%s: %s" % (name, detail))

    clean = {
        "lib.rs": "pub mod low;\npub mod mid;\npub mod high;\n",
        # A parent re-exporting its children, a child using its parent's
        # item: the usual shape, no cycle.
        "low/mod.rs": "mod a;\nmod b;\npub use a::A;\npub use b::B;\npub struct Root;\n",
        "low/a.rs": "use super::Root;\npub struct A(Root);\n",
        "low/b.rs": "use super::A; // through the re-export: an edge to a.rs\npub struct B(A);\n",
        "mid.rs": (
            "use crate::low::{A, b::B};\n"
            "// crate::high::H in a comment is no import\n"
            "pub fn f() -> &'static str { \"crate::high::H\" }\n"
            "pub fn g(c: char) -> bool { c == '{' }\n"
            "#[cfg(test)]\nmod tests { use crate::high::H; }\n"
        ),
        "high.rs": "pub struct H;\npub fn h() { crate::mid::f(); let _ = crate::low::Root; }\n",
    }
    cycle = dict(clean)
    cycle["low/a.rs"] = "use super::b::B;\npub struct A;\npub fn f(_: B) {}\n"
    cycle["low/b.rs"] = "pub struct B;\npub fn g() { super::a::f(B) }\n"
    parent_cycle = dict(clean)
    # The parent uses its child for real and the child its parent: counts.
    parent_cycle["low/mod.rs"] = "mod a;\nmod b;\npub use b::B;\npub struct Root;\npub fn r() { a::make() }\n"
    parent_cycle["low/a.rs"] = "use super::Root;\npub fn make() -> Root { Root }\n"
    breach = dict(clean)
    breach["low/b.rs"] = "pub struct B;\npub fn g() { let _ = crate::high::H; }\n"
    breach["high.rs"] = "pub struct H;\n"
    same = dict(clean)
    same["lib.rs"] = "pub mod low;\npub mod mid;\npub mod high;\npub mod side;\n"
    same["side.rs"] = "pub fn s() { crate::mid::f(); }\n"

    cases = [
        ("clean", clean, [["low"], ["mid"], ["high"]], 0, 0),
        ("cycle", cycle, layers, 1, 0),
        ("parent-cycle", parent_cycle, layers, 1, 0),
        ("breach", breach, layers, 0, 1),
        ("same-layer", same, [["low"], ["mid", "side"], ["high"]], 0, 1),
    ]
    cases.append(("parent-cycle, lenient", parent_cycle, layers, 0, 0))
    for name, files, lay, want_cycles, want_breaches in cases:
        d = _tree(files)
        try:
            cycles, breaches, problems = check(d, lay, set(), not name.endswith("lenient"))
        finally:
            shutil.rmtree(d)
        expect(name, not problems, "problems %r" % problems)
        expect(name, len(cycles) == want_cycles, "want %d cycle(s), got %r" % (want_cycles, cycles))
        expect(name, len(breaches) == want_breaches, "want %d breach(es), got %r" % (want_breaches, breaches))
        if name == "cycle" and cycles:
            expect(name, "low/a.rs -> low/b.rs -> low/a.rs" in cycles[0][0], "cycle printed as %r" % cycles[0][0])
        if name == "breach" and breaches:
            expect(name, breaches[0] == "low/b.rs:2: low imports high (layer 2 above 0)", "breach printed as %r" % breaches[0])
    for f in failures:
        print("layers.py self-test: FAIL %s" % f)
    print("layers.py self-test: %s (%d cases)" % ("FAILED" if failures else "ok", len(cases)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
