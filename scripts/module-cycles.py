#!/usr/bin/env python3
"""Finds import cycles between the modules of a crate.

At every level of the module tree, each child module (with everything
below it) is one node; an edge A -> B means some file under A names an
item under B (through `crate::`, `super::` or `self::` paths, in `use`
lines or inline). A cycle among the children of one parent is reported.
A child naming its own ancestors is not an edge (the parent owns it).
Test-only files (`*tests.rs`, `tests/`) and `#[cfg(test)]` code are not
read past their first `#[cfg(test)]` line.

usage: scripts/module-cycles.py [--edges] CRATE_SRC_DIR...   (exit 1 on a cycle)

--edges: under each cycle, the edges that make it, each with the module
that names the other and the module it names (what to move or invert).

A cycle listed in scripts/module-cycles.allow (one per line, its modules
joined by " <-> " as printed, sorted; # starts a comment) is reported as
known and does not fail the check: each entry there says why it is still
there. Any other cycle fails.
"""
import os
import re
import sys

PATH = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+|::\{)")
USE_GROUP = re.compile(r"\buse\s+(crate|super|self)::\{([^;]*)\};", re.S)


def module_of(root, path):
    rel = os.path.relpath(path, root)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib", "main"):
        rel = rel[:-1]
    return tuple(rel)


def strip(text):
    text = re.sub(r"//[^\n]*", "", text)
    cut = text.find("#[cfg(test)]")
    return text if cut < 0 else text[:cut]


def resolve(mod, head, rest, known):
    if head == "crate":
        base = ()
    elif head == "self":
        base = mod
    else:
        base = mod
        while rest and rest[0] == "super":
            rest = rest[1:]
            base = base[:-1]
        base = base[:-1]
    full = base + tuple(rest)
    # The longest prefix that is a known module.
    for n in range(len(full), -1, -1):
        if full[:n] in known:
            return full[:n]
    return None


def refs(mod, text, known):
    out = set()
    for m in USE_GROUP.finditer(text):
        for part in re.split(r"[,{}\s]+", m.group(2)):
            segs = [s for s in part.split("::") if s]
            if segs:
                r = resolve(mod, m.group(1), segs, known)
                if r is not None:
                    out.add(r)
    for m in PATH.finditer(text):
        segs = [s for s in m.group(2).split("::") if s and s != "{"]
        r = resolve(mod, m.group(1), segs, known)
        if r is not None:
            out.add(r)
    return out


def check(root):
    files = {}
    for d, _, names in os.walk(root):
        for n in names:
            if n.endswith(".rs") and not n.endswith("tests.rs") and "/bin" not in d:
                p = os.path.join(d, n)
                files[module_of(root, p)] = p
    known = set(files)
    for m in list(known):
        for n in range(len(m)):
            known.add(m[:n])
    edges = set()
    why = {}  # edge -> {(module naming, module named)}
    for mod, p in files.items():
        for target in refs(mod, strip(open(p).read()), known):
            # Lowest common ancestor: the edge is between its children.
            n = 0
            while n < len(mod) and n < len(target) and mod[n] == target[n]:
                n += 1
            if n == len(target) or n == len(mod):
                continue  # to an ancestor, or to its own descendant
            edge = (mod[: n + 1], target[: n + 1])
            edges.add(edge)
            why.setdefault(edge, set()).add((mod, target))
    graph = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    cycles = []
    # Tarjan's strongly connected components.
    index, low, stack, on, counter = {}, {}, [], set(), [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                members = set(comp)
                inside = sorted(
                    (" -> ".join("::".join(m) for m in e), sorted(why[e]))
                    for e in edges
                    if e[0] in members and e[1] in members
                )
                cycles.append((sorted("::".join(c) or "crate" for c in comp), inside))

    sys.setrecursionlimit(10000)
    for v in list(graph):
        if v not in index:
            visit(v)
    return cycles, len(files), len(edges)


def allowed():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "module-cycles.allow")
    if not os.path.exists(path):
        return set()
    out = set()
    for line in open(path):
        line = line.split("#", 1)[0].strip()
        if line:
            out.add(line)
    return out


def main():
    bad = False
    known = allowed()
    args = sys.argv[1:]
    show_edges = "--edges" in args
    for root in [a for a in args if a != "--edges"]:
        cycles, nfiles, nedges = check(root)
        print(f"{root}: {nfiles} modules, {nedges} edges between sibling modules, {len(cycles)} cycle(s)")
        for c, inside in cycles:
            text = " <-> ".join(c)
            if text in known:
                print("  known cycle (scripts/module-cycles.allow): " + text)
            else:
                print("  cycle: " + text)
                bad = True
            if show_edges:
                for edge, pairs in inside:
                    named = ", ".join(f"{'::'.join(a)} names {'::'.join(b)}" for a, b in pairs)
                    print(f"    {edge}   ({named})")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
