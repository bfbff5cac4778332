#!/usr/bin/env python3
"""The import graph between the modules of each crate in the workspace, from
their `use` lines and inline paths: `crate::`, `super::`, `self::` and a
child module's own name (`mod child;` then `use child::X`), groups and nested
groups included; `#[cfg(test)]` modules left out.

    python3 scripts/import-graph.py [--verbose]

Prints, per crate, its modules, imports and circles (modules that reach each
other through imports, directly or through others), and the imports that run
from a module to one that itself depends on it (every import inside a
circle). Exits 1 if any crate has a circle.
"""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def strip_comments_and_tests(text):
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{", text):
        if m.start() < i:
            continue
        out.append(text[i:m.start()])
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)


def modules(src):
    """Module path (tuple) -> file, for every .rs file under `src`."""
    mods = {}
    for f in sorted(src.rglob("*.rs")):
        parts = list(f.relative_to(src).with_suffix("").parts)
        if parts[-1] in ("mod", "lib", "main"):
            parts = parts[:-1]
        if f.parent == src and f.stem == "main" and (src / "lib.rs").exists():
            continue  # a binary beside a library is a crate of its own
        mods[tuple(parts)] = f
    return mods


def expand_use(tree):
    """`a::{b, c::{d, e}}` -> ["a::b", "a::c::d", "a::c::e"]."""
    tree = tree.strip()
    depth = 0
    for i, c in enumerate(tree):
        if c == "{":
            if depth == 0:
                prefix, inner = tree[:i], tree[i + 1:tree.rfind("}")]
                items, level, start = [], 0, 0
                for j, ch in enumerate(inner):
                    if ch == "{":
                        level += 1
                    elif ch == "}":
                        level -= 1
                    elif ch == "," and level == 0:
                        items.append(inner[start:j])
                        start = j + 1
                items.append(inner[start:])
                return [p for item in items if item.strip() for p in expand_use(prefix + item.strip())]
            depth += 1
    return [tree.split(" as ")[0].strip()]


def references(text, key, mods):
    """The modules of the crate that the module `key` refers to."""
    children = {m[-1] for m in mods if len(m) == len(key) + 1 and m[:len(key)] == key}
    is_mod_file = True  # a.rs and a/mod.rs resolve `super` the same way
    paths = []
    for use in re.findall(r"\buse\s+([^;]+);", text):
        paths.extend(expand_use(use.replace("\n", " ")))
    paths.extend(re.findall(rf"\b((?:crate|super|self)(?:::{IDENT})+)", text))
    found = set()
    for path in paths:
        parts = [p for p in path.split("::") if p]
        if not parts:
            continue
        if parts[0] == "crate":
            base, rest = (), parts[1:]
        elif parts[0] in ("super", "self"):
            base = key
            while parts and parts[0] in ("super", "self"):
                if parts[0] == "super":
                    base = base[:-1]
                parts = parts[1:]
            rest = parts
        elif parts[0] in children:
            base, rest = key, parts
        else:
            continue
        target = base
        for part in rest:
            if target + (part,) in mods:
                target = target + (part,)
            else:
                break
        if target != key and target in mods:
            found.add(target)
    del is_mod_file
    return found


def circles(graph):
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
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
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def name(module):
    return "/".join(module) or "(root)"


def main():
    verbose = "--verbose" in sys.argv
    bad = False
    for manifest in sorted(ROOT.glob("**/Cargo.toml")):
        if "target" in manifest.parts or "node_modules" in manifest.parts:
            continue
        src = manifest.parent / "src"
        if not src.is_dir():
            continue
        mods = modules(src)
        graph = {
            key: references(strip_comments_and_tests(f.read_text()), key, mods)
            for key, f in mods.items()
        }
        # A parent's `mod child;` is not an import; its `use child::X` is.
        found = circles(graph)
        back = [(a, b) for comp in found for a in comp for b in graph[a] if b in comp]
        edges = sum(len(v) for v in graph.values())
        crate = manifest.parent.relative_to(ROOT).as_posix()
        print(f"{crate}: {len(mods)} modules, {edges} imports, {len(found)} circles, "
              f"{len(back)} imports to a module that depends on the importer")
        for comp in found:
            bad = True
            print(f"  circle: {', '.join(name(m) for m in comp)}")
            for a, b in back:
                if a in comp:
                    print(f"    {name(a)} -> {name(b)}")
        if verbose:
            for key in sorted(graph):
                print(f"  {name(key)} -> {', '.join(sorted(name(m) for m in graph[key]))}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
