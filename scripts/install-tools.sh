#!/usr/bin/env bash
# Installs the tools a script needs, or says how: each argument is
# TOOL=PACKAGE (a Debian package that provides TOOL: a command, or a path
# that the package installs) or TOOL=manual:HINT (a tool this script cannot
# install; HINT says how to get it). Every missing
# tool is listed at once. Debian packages are installed with apt-get as root,
# or with `sudo -n` when that works without a password; otherwise nothing is
# installed and the exact command to run is printed (exit 1).
#
#   scripts/install-tools.sh [--for NAME] [--dry-run [--as root|sudo|user]] TOOL=PACKAGE...
#
# --for names the caller in what is printed; --dry-run prints what would be
# done and changes nothing (--as pretends to run as root, with sudo, or as a
# user with neither: for the tests). Uses only shell builtins to look, so it
# runs with any PATH.
set -uo pipefail

caller="install-tools"
dry_run=false
as=""
while [ $# -gt 0 ]; do
    case "$1" in
        --for) caller="$2"; shift 2 ;;
        --dry-run) dry_run=true; shift ;;
        --as) as="$2"; shift 2 ;;
        --) shift; break ;;
        -*) echo "install-tools: unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
done

packages=()
tools=()
manual=()
for requirement in "$@"; do
    tool="${requirement%%=*}"
    package="${requirement#*=}"
    case "$tool" in
        /*) [ -e "$tool" ] && continue ;;
        *) command -v "$tool" >/dev/null 2>&1 && continue ;;
    esac
    case "$package" in
        manual:*) manual+=("$tool (${package#manual:})") ;;
        *)
            tools+=("$tool")
            case " ${packages[*]-} " in
                *" $package "*) ;;
                *) packages+=("$package") ;;
            esac
            ;;
    esac
done

if [ ${#manual[@]} -gt 0 ]; then
    echo "$caller: missing, and not installable by this script:" >&2
    for line in "${manual[@]}"; do echo "  $line" >&2; done
fi
[ ${#packages[@]} -eq 0 ] && { [ ${#manual[@]} -eq 0 ]; exit $?; }

# Who may install: root, password-less sudo, or neither.
if [ -z "$as" ]; then
    if [ "${EUID:-$(id -u)}" -eq 0 ]; then
        as=root
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        as=sudo
    else
        as=user
    fi
fi
install="apt-get install -y -qq --no-install-recommends ${packages[*]}"
case "$as" in
    root) prefix="" ;;
    sudo) prefix="sudo -n " ;;
    *)
        echo "$caller: missing ${tools[*]}; install them first (as root):" >&2
        echo "  sudo apt-get update && sudo $install" >&2
        exit 1
        ;;
esac
echo "$caller: installing ${packages[*]} (for ${tools[*]}) with ${prefix}apt-get" >&2
if $dry_run; then
    echo "would run: ${prefix}apt-get update -qq && ${prefix}env DEBIAN_FRONTEND=noninteractive $install" >&2
    [ ${#manual[@]} -eq 0 ]
    exit $?
fi
${prefix}apt-get update -qq >/dev/null || { echo "$caller: apt-get update failed" >&2; exit 1; }
${prefix}env DEBIAN_FRONTEND=noninteractive $install >/dev/null || {
    echo "$caller: apt-get install ${packages[*]} failed" >&2
    exit 1
}
[ ${#manual[@]} -eq 0 ]
