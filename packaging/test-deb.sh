#!/usr/bin/env bash
# The Debian package end to end, as root (CI is root): build it, install it with dpkg,
# check its files, user and unit (systemd-analyze verify and security, exposure <= 2.0),
# run `sortd --version` and the configuration check as the sortd user, upgrade over
# itself keeping a changed conffile, and purge it leaving nothing behind.
#
# It changes the machine (a package, a user): run it on CI or a throwaway box. A sortd
# package already installed is purged first.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "test-deb.sh: run as root (it installs a package)" >&2; exit 1; }
command -v systemd-analyze >/dev/null || {
    apt-get update -qq && apt-get install -y -qq systemd >/dev/null
}
export DEBIAN_FRONTEND=noninteractive

fail() { echo "test-deb.sh: FAIL: $*" >&2; exit 1; }
step() { echo "-- $*"; }

# dpkg refuses to run while another dpkg/apt holds its lock: wait for it (bounded).
dpkg_retry() {
    local attempt
    for attempt in $(seq 1 60); do
        if dpkg "$@" 2>/tmp/sortd-dpkg.err; then return 0; fi
        grep -q "lock" /tmp/sortd-dpkg.err || { cat /tmp/sortd-dpkg.err >&2; return 1; }
        sleep 5
    done
    cat /tmp/sortd-dpkg.err >&2
    return 1
}

step "build"
deb=$(packaging/build-deb.sh | tail -n 1)
[[ "$(basename "$deb")" =~ ^sortd_[0-9][^_]*_amd64\.deb$ ]] || fail "package name $deb"
version=$(dpkg-deb -f "$deb" Version)

if dpkg -s sortd >/dev/null 2>&1; then
    step "purging an earlier sortd"
    dpkg_retry --purge sortd
fi

step "install $deb"
dpkg_retry -i "$deb"
[ "$(dpkg-query -W -f '${Status} ${Version}' sortd)" = "install ok installed $version" ] ||
    fail "dpkg status: $(dpkg-query -W -f '${Status} ${Version}' sortd)"

step "files"
for path in /usr/bin/sortd /etc/sortd/sortd.toml /etc/sortd/example-plan.csv \
    /lib/systemd/system/sortd.service /usr/share/man/man1/sortd.1.gz \
    /usr/share/man/man1/sortd-run.1.gz /usr/share/bash-completion/completions/sortd \
    /usr/share/zsh/vendor-completions/_sortd /usr/share/fish/vendor_completions.d/sortd.fish \
    /usr/share/sortd/prometheus/alerts.yml /usr/share/sortd/prometheus/prometheus.yml \
    /usr/share/sortd/grafana/sortd.json /usr/share/sortd/example-plan.csv \
    /usr/share/doc/sortd/install-debian.md /usr/share/doc/sortd/operations-monitoring.md; do
    [ -f "$path" ] || fail "$path missing"
done
[ -x /usr/bin/sortd ] || fail "/usr/bin/sortd not executable"
conffiles=$(dpkg-query -W -f '${Conffiles}' sortd)
for conffile in /etc/sortd/sortd.toml /etc/sortd/example-plan.csv; do
    grep -q " $conffile " <<<"$conffiles" || fail "$conffile is not a conffile: $conffiles"
done
zcat /usr/share/man/man1/sortd-run.1.gz | grep -q '^\.TH sortd-run 1' || fail "sortd-run(1)"
grep -q 'complete -F' /usr/share/bash-completion/completions/sortd || fail "bash completion"
if command -v promtool >/dev/null; then
    promtool check rules /usr/share/sortd/prometheus/alerts.yml >/dev/null || fail "promtool check rules"
    promtool check config /usr/share/sortd/prometheus/prometheus.yml >/dev/null ||
        fail "the example prometheus.yml does not check against the installed rules"
fi

step "user"
entry=$(getent passwd sortd) || fail "no sortd user"
IFS=: read -r _ _ uid gid _ home shell <<<"$entry"
[ "$uid" -lt 1000 ] || fail "sortd is not a system user (uid $uid)"
[ "$(getent group sortd | cut -d: -f3)" = "$gid" ] || fail "sortd's group"
[ "$home" = /var/lib/sortd ] || fail "home $home"
case "$shell" in */nologin|*/false) ;; *) fail "sortd has a login shell $shell" ;; esac

step "unit: systemd-analyze verify"
unit=/lib/systemd/system/sortd.service
grep -q '^ExecStart=/usr/bin/sortd run --config /etc/sortd/sortd.toml$' "$unit" || fail "ExecStart"
grep -q '^StateDirectory=sortd$' "$unit" || fail "StateDirectory"
grep -q '^User=sortd$' "$unit" || fail "User"
verify=$(systemd-analyze verify --man=no "$unit" 2>&1) || fail "verify: $verify"
! grep -q 'sortd' <<<"$verify" || fail "systemd-analyze verify complains: $verify"

step "unit: systemd-analyze security"
security=$(systemd-analyze security --offline=true --no-pager "$unit" 2>&1) || true
exposure=$(sed -n 's/.*Overall exposure level for sortd.service: \([0-9.]*\).*/\1/p' <<<"$security")
[ -n "$exposure" ] || fail "no exposure level in: $security"
awk -v level="$exposure" 'BEGIN { exit !(level <= 2.0) }' || fail "exposure $exposure > 2.0: $security"
echo "   exposure level $exposure"

step "as the sortd user: --version and the configuration check"
as_sortd() { runuser -u sortd -- "$@"; }
[ "$(as_sortd sortd --version)" = "sortd $version" ] || fail "sortd --version: $(as_sortd sortd --version)"
as_sortd sortd run --config /etc/sortd/sortd.toml --check || fail "the shipped configuration does not check"

step "upgrade over itself keeping a changed conffile"
marker="# changed by packaging/test-deb.sh"
echo "$marker" >>/etc/sortd/sortd.toml
dpkg_retry -i --force-confold "$deb"
grep -qx "$marker" /etc/sortd/sortd.toml || fail "the upgrade replaced the changed conffile"
[ ! -e /etc/sortd/sortd.toml.dpkg-new ] && [ ! -e /etc/sortd/sortd.toml.dpkg-dist ] ||
    fail "the upgrade left a .dpkg-new/.dpkg-dist"
as_sortd sortd run --config /etc/sortd/sortd.toml --check >/dev/null || fail "check after upgrade"
getent passwd sortd >/dev/null || fail "the upgrade lost the user"

step "purge"
mkdir -p /var/lib/sortd && chown sortd:sortd /var/lib/sortd # as StateDirectory= would
dpkg_retry --purge sortd
! dpkg -s sortd >/dev/null 2>&1 || fail "still installed"
for path in /usr/bin/sortd /etc/sortd /lib/systemd/system/sortd.service /usr/share/sortd \
    /var/lib/sortd /usr/share/man/man1/sortd.1.gz; do
    [ ! -e "$path" ] || fail "$path left after purge"
done
! getent passwd sortd >/dev/null || fail "user sortd left after purge"
! getent group sortd >/dev/null || fail "group sortd left after purge"

echo "test-deb.sh: OK ($(basename "$deb"), exposure $exposure)"
