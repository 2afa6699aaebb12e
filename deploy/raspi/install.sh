#!/bin/sh
# install.sh [BINARY]: install pibridge as a systemd service, or upgrade it.
#
#   sudo ./install.sh                  # from an unpacked release: ./bridge
#   sudo ./install.sh bin/bridge-armv7 # or name the build
#
# Run it again to upgrade: it replaces the binary and the unit, keeps your
# /etc/pibridge/config.yaml (a newer example lands beside it as
# config.yaml.new), checks the config with the new binary and restarts the
# service. While config.yaml is still the untouched example it enables the
# service but does not start it: the example's pins are not your wiring.
#
# DESTDIR=/some/dir installs into that tree only, for packaging and tests:
# no user, no groups, no ownership, no systemctl.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-$here/bridge}
D=${DESTDIR:-}

BINDIR=/usr/local/bin
SHAREDIR=/usr/local/share/pibridge
UNITDIR=/etc/systemd/system
CONFDIR=/etc/pibridge
CONF=$CONFDIR/config.yaml

say() { printf 'pibridge: %s\n' "$*"; }
die() {
	printf 'pibridge: %s\n' "$*" >&2
	exit 1
}

[ "$#" -le 1 ] || die "usage: install.sh [BINARY]"
[ -f "$bin" ] || die "no binary at $bin (usage: install.sh [BINARY])"
for f in pibridge.service config.example.yaml uninstall.sh; do
	[ -f "$here/$f" ] || die "$here/$f is missing"
done
if [ -z "$D" ] && [ "$(id -u)" != 0 ]; then
	die "run it as root: sudo $0 $*"
fi

# A build for another Pi fails here, not at boot.
runs=yes
if ! version=$("$bin" -version 2>&1); then
	[ -n "$D" ] || die "$bin does not run on this machine ($(uname -m)): $version
  Pi Zero and 1: bridge-armv6; 2, 3, 4 with a 32-bit OS: bridge-armv7; 64-bit OS: bridge-arm64"
	say "$bin does not run on this machine; not checking it"
	runs=no
else
	say "installing $version"
fi

if [ -z "$D" ]; then
	# Raspberry Pi OS has these groups and gives them the devices; the unit
	# names them in SupplementaryGroups, which fails on a missing group.
	for g in gpio i2c spi; do
		if ! getent group "$g" >/dev/null; then
			groupadd --system "$g"
			say "created group $g (no device belongs to it until a udev rule says so)"
		fi
	done
	if ! getent passwd pibridge >/dev/null; then
		useradd --system --user-group --no-create-home --home-dir /var/lib/pibridge \
			--shell /usr/sbin/nologin --comment "pibridge service" pibridge
		say "created system user pibridge"
	fi
else
	say "DESTDIR=$D: skipping the user, groups, ownership and systemctl"
fi

install -d -m 0755 "$D$BINDIR" "$D$SHAREDIR" "$D$UNITDIR" "$D$CONFDIR"
# A new name then a rename: the running bridge keeps its old file, and a
# reader never sees half a binary.
install -m 0755 "$bin" "$D$BINDIR/.bridge.new"
mv -f "$D$BINDIR/.bridge.new" "$D$BINDIR/bridge"
install -m 0644 "$here/pibridge.service" "$D$UNITDIR/pibridge.service"
install -m 0755 "$here/uninstall.sh" "$D$SHAREDIR/uninstall.sh"

# The config: installed once, then yours. The example as last installed
# is kept in SHAREDIR to tell an untouched config (which follows the new
# example) from an edited one (which stays as it is).
example=$here/config.example.yaml
shipped=$D$SHAREDIR/config.example.yaml
conf=$D$CONF
if [ ! -e "$conf" ]; then
	install -m 0640 "$example" "$conf"
	say "installed the example config as $CONF: edit it for your wiring"
elif cmp -s "$example" "$conf"; then
	:
elif [ -f "$shipped" ] && cmp -s "$shipped" "$conf"; then
	install -m 0640 "$example" "$conf"
	say "$CONF was the untouched example: updated to the new one"
else
	install -m 0640 "$example" "$conf.new"
	say "kept your $CONF; the new example is $CONF.new (compare: diff $CONF $CONF.new)"
fi
install -m 0644 "$example" "$shipped"
[ -n "$D" ] || chown root:pibridge "$conf"

# The new binary checks the config before the service is restarted on it.
# PIBRIDGE_STATE_DIR keeps -check from probing for a state directory.
valid=yes
if [ "$runs" = yes ] && ! out=$(PIBRIDGE_STATE_DIR=/var/lib/pibridge "$bin" -check -config "$conf" 2>&1); then
	valid=no
	printf '%s\n' "$out" >&2
fi

if [ -n "$D" ]; then
	[ "$valid" = yes ] || die "the config does not pass -check"
	say "installed into $D"
	exit 0
fi

systemctl daemon-reload
systemctl enable --quiet pibridge.service
if [ "$valid" = no ]; then
	die "$CONF does not pass -check (above); fix it, then: sudo systemctl restart pibridge"
elif cmp -s "$example" "$conf"; then
	say "enabled, not started: edit $CONF, check it with"
	say "  bridge -check -config $CONF"
	say "then: sudo systemctl restart pibridge"
else
	systemctl restart pibridge.service
	say "restarted; logs: journalctl -u pibridge -f"
fi
