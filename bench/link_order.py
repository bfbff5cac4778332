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
suite's arguments; once it has answered the suite's readiness probe (one
unary gRPC call over a new HTTP/2 connection) and idled a second, the counts
are dumped and every function of the binary that ran is listed.

The symbols are a release build's own names: they change with the toolchain,
and those our crates instantiate change when echo-server's dependencies do.
Names not found are skipped, so a stale list costs memory, not a build; the
suite prints how many of the listed names the binary still has. Run this
again when that count falls.

    bench/link_order.py             # build, profile, write the list
    bench/link_order.py --check     # how many listed names the built binary has

Needs valgrind (Debian: valgrind) and nm (binutils).
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from suite import (LINK_ORDER, PROTOCOL_BODIES, ROOT, SHIPPED_BIN, build_shipped, fail, free_port,  # noqa: E402
                   install_tools, link_order_coverage, unary_call)

HEADER = "# Written by bench/link_order.py; read by build.rs (lld --symbol-ordering-file).\n"


def functions_run(binary):
    """The binary's functions that ran up to and through the first call, in
    the order callgrind first lists them."""
    with tempfile.TemporaryDirectory() as work:
        out = Path(work) / "callgrind.out"
        port = free_port()
        server = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--demangle=no", "--compress-strings=no", "--compress-pos=no",
             f"--callgrind-out-file={out}", str(binary), "--listen", f"127.0.0.1:{port}",
             "--tcp-echo-addr", f"127.0.0.1:{free_port()}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while not unary_call(port, "/echo.v1.EchoService/Echo", PROTOCOL_BODIES["application/grpc"], timeout=5):
                if server.poll() is not None or time.monotonic() > deadline:
                    fail("the server under callgrind did not answer")
                time.sleep(0.2)
            time.sleep(1)
            # A dump now, so that what shutting down runs is not listed.
            subprocess.run(["callgrind_control", "--dump", str(server.pid)], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            dump = Path(f"{out}.1")
            while not dump.exists():
                if time.monotonic() > deadline:
                    fail("callgrind wrote no dump")
                time.sleep(0.1)
            time.sleep(0.5)  # written whole
            text = dump.read_text(errors="replace")
        finally:
            server.kill()
            server.wait()
    names, seen, ours = [], set(), False
    for line in text.splitlines():
        if line.startswith("ob="):
            ours = Path(line[3:]).resolve() == binary.resolve()
        elif line.startswith("fn=") and ours:
            # callgrind marks recursion levels as name'2; "0x..." is code without a symbol.
            name = line[3:].split("'")[0]
            if name not in seen and not name.startswith(("0x", "(below main)")):
                seen.add(name)
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
        found, total = link_order_coverage(binary)
        print(f"{found} of the {total} names in {LINK_ORDER.relative_to(ROOT)} are in {binary.relative_to(ROOT)}")
        return
    names = functions_run(binary)
    LINK_ORDER.write_text(HEADER + "".join(f"{name}\n" for name in names))
    print(f"{len(names)} functions written to {LINK_ORDER.relative_to(ROOT)}; "
          "build again (bench/suite.py does) to link in that order")


if __name__ == "__main__":
    main()
