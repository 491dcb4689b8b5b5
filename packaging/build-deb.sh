#!/usr/bin/env bash
# Builds the Debian package target/debian/sortd_<version>_amd64.deb with cargo-deb
# (installed here if missing). Run from anywhere; prints the package's path last.
#
# What goes in is listed in Cargo.toml, [package.metadata.deb]. This script makes the
# generated parts first, into target/deb-assets:
#   - man pages and bash/zsh/fish completions, from the binary being packaged
#     (`sortd generate`, so they always match it);
#   - the systemd unit: config/sortd.service with /usr/bin paths, the `sortd` system
#     user instead of a dynamic one, and StateDirectory=sortd.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo-deb >/dev/null || cargo install cargo-deb --locked

cargo build --release --locked --bin sortd
sortd=target/release/sortd
assets=target/deb-assets
rm -rf "$assets"
mkdir -p "$assets/man" "$assets/completions"

"$sortd" generate man "$assets/man" >/dev/null
gzip -9n "$assets"/man/*.1
for shell in bash zsh fish; do
    "$sortd" generate completions "$shell" "$assets/completions" >/dev/null
done
# bash-completion looks the command's name up, without an extension.
mv "$assets/completions/sortd.bash" "$assets/completions/sortd"

# The unit, adapted; each edit must apply, or the shipped unit would silently differ.
unit="$assets/sortd.service"
sed -e 's|^# sortd under systemd\. Install: see docs/operations\.md, "Install as a service"\.|# sortd under systemd, as installed by the sortd Debian package (docs/install-debian.md).|' \
    -e 's|/usr/local/bin/sortd|/usr/bin/sortd|g' \
    -e 's|^Documentation=man:systemd.exec(5)$|Documentation=man:sortd-run(1) man:systemd.exec(5)|' \
    -e 's|^# Who: a transient user with no capabilities and no way to gain any\.$|# Who: the sortd system user (the package creates it), with no capabilities and no way\n# to gain any; /var/lib/sortd is its state directory.|' \
    -e 's|^DynamicUser=yes$|User=sortd\nGroup=sortd|' \
    config/sortd.service >"$unit"
for expected in '^ExecStart=/usr/bin/sortd run --config /etc/sortd/sortd.toml$' '^User=sortd$' \
    '^StateDirectory=sortd$' '^Documentation=man:sortd-run'; do
    grep -q "$expected" "$unit" || { echo "build-deb.sh: unit edit failed: $expected" >&2; exit 1; }
done
if grep -q -e '/usr/local' -e '^DynamicUser' "$unit"; then
    echo "build-deb.sh: unit still names /usr/local or DynamicUser" >&2
    exit 1
fi

cargo deb --no-build --locked --output target/debian/ >/dev/null
version=$(cargo pkgid --locked | sed -e "s/.*[#@]//")
deb="target/debian/sortd_${version}_amd64.deb"
test -f "$deb" || { echo "build-deb.sh: $deb not built" >&2; ls target/debian >&2; exit 1; }
echo "$deb"
