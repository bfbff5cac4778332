#!/usr/bin/env python3
"""Writes services/echo-server/link-order.txt: the functions the release
echo-server runs from start until it has answered its first call, which its
build.rs hands to the linker to put first in the code (lld's
--symbol-ordering-file).

Why: the kernel maps 64 KiB or more of a binary around each page of code it
faults in, so code run from across the 11 MB text section kept 6 MB of it
resident in an idle server; packed together, 2 MB (BENCHMARKS.md, "Idle RSS:
what start-up keeps resident").

The server (bench/suite.py's release build) runs under callgrind with the
suite's arguments, once on tokio's single-threaded runtime (what it picks on
one CPU, as the suite pins it) and once on the multi-threaded one; once it has
answered the suite's readiness probe (one unary gRPC call over a new HTTP/2
connection) and idled a second, the counts are dumped, and every function of
the binary that ran in either is listed.

The symbols are a release build's own names: they change with the toolchain,
and those our crates instantiate change when echo-server's dependencies do.
Names not found are skipped, so a stale list costs memory, not a build; the
suite prints how many of the listed names the binary still has, and whether
its code starts with them. Run this again when that count falls.

    bench/link_order.py             # build, profile, write the list
    bench/link_order.py --check     # how many listed names the built binary has, linked first or not

Needs valgrind (Debian: valgrind) and nm (binutils).
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from suite import (LINK_ORDER, PROTOCOL_BODIES, ROOT, SHIPPED_BIN, Server, build_shipped, fail,  # noqa: E402
                   free_port, install_tools, link_order_coverage, unary_call)

HEADER = "# Written by bench/link_order.py; read by build.rs (lld --symbol-ordering-file).\n"


def functions_run(binary, worker_threads):
    """The binary's functions that ran up to and through the first call, in
    the order callgrind first lists them, with `worker_threads` (1: tokio's
    single-threaded runtime, which the server picks on one CPU, as pinned
    in the suite; more: the multi-threaded one)."""
    with tempfile.TemporaryDirectory() as work:
        out = Path(work) / "callgrind.out"
        port = free_port()
        server = Server(
            "echo-server under callgrind",
            ["valgrind", "--tool=callgrind", "--demangle=no", "--compress-strings=no", "--compress-pos=no",
             f"--callgrind-out-file={out}", str(binary), "--listen", f"127.0.0.1:{port}",
             "--tcp-echo-addr", f"127.0.0.1:{free_port()}", "--worker-threads", str(worker_threads)],
            port,
            lambda: unary_call(port, "/echo.v1.EchoService/Echo", PROTOCOL_BODIES["application/grpc"], timeout=5))
        try:
            time.sleep(1)
            # A dump now, so that what shutting down runs is not listed.
            subprocess.run(["callgrind_control", "--dump", str(server.process.pid)], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            dump = Path(f"{out}.1")
            deadline = time.monotonic() + 30
            while not dump.exists():
                if time.monotonic() > deadline:
                    fail("callgrind wrote no dump")
                time.sleep(0.1)
            time.sleep(0.5)  # written whole
            text = dump.read_text(errors="replace")
        finally:
            server.stop()
    names, ours = [], False
    for line in text.splitlines():
        if line.startswith("ob="):
            ours = Path(line[3:]).resolve() == binary.resolve()
        elif line.startswith("fn=") and ours:
            # callgrind marks recursion levels as name'2; "0x..." is code without a symbol.
            name = line[3:].split("'")[0]
            if not name.startswith(("0x", "(below main)")):
                names.append(name)
    return names


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="count the listed names in the built binary")
    parser.add_argument("--no-build", action="store_true", help="use the release binary already built")
    options = parser.parse_args()
    install_tools(["nm=binutils"] + ([] if options.check else ["valgrind=valgrind"]), "bench/link_order.py")
    binary = SHIPPED_BIN / "echo-server"
    if not options.no_build:
        build_shipped()
    if options.check:
        found, total, applied = link_order_coverage(binary)
        print(f"{found} of the {total} names in {LINK_ORDER.relative_to(ROOT)} are in {binary.relative_to(ROOT)}, "
              + ("whose code starts with them" if applied else "whose code does NOT start with them"))
        return
    # Both runtimes: the suite pins the server to one CPU, deployments give it more.
    names = list(dict.fromkeys(functions_run(binary, 2) + functions_run(binary, 1)))
    LINK_ORDER.write_text(HEADER + "".join(f"{name}\n" for name in names))
    print(f"{len(names)} functions written to {LINK_ORDER.relative_to(ROOT)}; "
          "build again (bench/suite.py does) to link in that order")


if __name__ == "__main__":
    main()
