#!/usr/bin/env bash
# System libraries the Qt wheels need on Debian/Ubuntu (PySide6 brings Qt itself;
# libpulse0 is for Qt Multimedia's camera list). Installs what is missing when it
# can (root or sudo with apt-get); otherwise says what to install.
set -euo pipefail
packages=(make libgl1 libegl1 libxkbcommon0 libxkbcommon-x11-0 libfontconfig1 libdbus-1-3 libglib2.0-0 libpulse0
          libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-shape0)
command -v dpkg >/dev/null 2>&1 || exit 0  # not Debian-like: nothing to check here
missing=()
for package in "${packages[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then
    sudo=()
elif command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
else
    echo "please install: ${missing[*]}" >&2
    exit 0
fi
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}"
