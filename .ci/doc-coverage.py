#!/usr/bin/env python3
"""Fails, listing them, if a public symbol of the given modules has no doc comment.

Usage: doc-coverage.py SYMBOL_GRAPH_DIR MODULE...

Reads SYMBOL_GRAPH_DIR/<Module>/*.symbols.json, as `swift-symbolgraph-extract
-minimum-access-level public` writes them (.ci/docs): the module's own graph and
its extension graphs (<Module>@<Other>.symbols.json: what it adds to other
modules' types). The extractor leaves out `package`, internal and `@_spi`
symbols, so every symbol here is public API.

Not counted (nothing to write there):
  - synthesized symbols (an identifier with ::SYNTHESIZED::): default
    implementations a type gets from a protocol extension, such as Sequence's
    methods on Chan, or Hashable's hash(into:) on an enum with raw values;
  - extension blocks (kind swift.extension), which are not declarations;
  - implementations of another module's protocol requirements that carry no
    doc comment of their own: the symbol graph gives them the requirement's
    (`description` of CustomStringConvertible, `next()` of IteratorProtocol),
    and DocC shows it. They are counted as documented, and their number is
    printed.
Everything else counts, enum cases included: a case is API a caller matches
on, and a line saying what it means (`Received.closed`, a close code's number)
is what a reader looks for.
"""
import glob
import json
import os
import sys


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    root, modules = sys.argv[1], sys.argv[2:]
    cwd = os.getcwd()
    missing = []
    checked = inherited = 0
    for module in modules:
        files = sorted(glob.glob(os.path.join(root, module, "*.symbols.json")))
        if not files:
            print(f"doc-coverage: no symbol graph for {module} in {root}/{module}", file=sys.stderr)
            return 2
        seen = set()
        for path in files:
            with open(path) as f:
                graph = json.load(f)
            for sym in graph["symbols"]:
                precise = sym["identifier"]["precise"]
                if precise in seen:
                    continue
                seen.add(precise)
                kind = sym["kind"]["identifier"]
                if kind == "swift.extension" or "::SYNTHESIZED::" in precise:
                    continue
                if sym.get("accessLevel") not in ("public", "open"):
                    continue
                checked += 1
                doc = sym.get("docComment")
                text = "".join(line.get("text", "") for line in (doc or {}).get("lines", [])).strip()
                if text:
                    if doc.get("module") not in (None, module):
                        inherited += 1
                    continue
                loc = sym.get("location", {})
                uri = loc.get("uri", "")
                file = uri[len("file://"):] if uri.startswith("file://") else uri
                if file.startswith(cwd + os.sep):
                    file = file[len(cwd) + 1:]
                line = loc.get("position", {}).get("line")
                where = f"{file}:{line + 1}" if file and line is not None else "(no location)"
                name = ".".join(sym["pathComponents"])
                missing.append((where, module, kind.removeprefix("swift."), name))
    print(f"doc-coverage: {checked} public symbols in {', '.join(modules)}; "
          f"{inherited} implement another module's protocol requirement and show its documentation")
    if missing:
        def order(m):
            path, _, line = m[0].rpartition(":")
            return (path, int(line) if line.isdigit() else 0)
        print(f"doc-coverage: {len(missing)} public symbols have no doc comment:")
        for where, module, kind, name in sorted(missing, key=order):
            print(f"  {where}: {module}.{name} ({kind})")
        return 1
    print("doc-coverage: every public symbol has a doc comment")
    return 0


if __name__ == "__main__":
    sys.exit(main())
