#!/bin/sh
# deploy.sh: what `make deploy PI=user@host` runs from the repository root.
# Copies the build for that Pi, the unit, the example config and the
# scripts over scp, then over ssh runs install.sh, which installs and
# restarts the service (see install.sh).
#
#   PI=pi@raspberrypi.local      the Pi, as ssh knows it
#   ARCH=armv6|armv7|arm64       the build; default: asks the Pi (uname -m)
#   BIN=bin                      where `make cross` put the builds
#   DRY_RUN=1                    print the commands instead of running them
set -eu

: "${PI:?set PI=user@host}"
ARCH=${ARCH:-}
BIN=${BIN:-bin}
DRY_RUN=${DRY_RUN:-}
RASPI=deploy/raspi
STAGE=.pibridge-deploy # in the remote user's home: no /tmp races

die() {
	printf 'deploy: %s\n' "$*" >&2
	exit 1
}

# quote writes its arguments as one shell command line, quoting where needed.
quote() {
	line=
	for a in "$@"; do
		case $a in
		'' | *[!A-Za-z0-9_./:@=+-]*) a="'$(printf '%s' "$a" | sed "s/'/'\\\\''/g")'" ;;
		esac
		line="$line${line:+ }$a"
	done
	printf '%s\n' "$line"
}

run() {
	if [ -n "$DRY_RUN" ]; then
		quote "$@"
	else
		"$@"
	fi
}

if [ -z "$ARCH" ]; then
	if [ -n "$DRY_RUN" ]; then
		quote ssh "$PI" uname -m
		ARCH='$ARCH' # shown as is: the Pi's answer decides
	else
		machine=$(ssh "$PI" uname -m)
		case $machine in
		armv6l) ARCH=armv6 ;;
		armv7l | armv8l) ARCH=armv7 ;;
		aarch64 | arm64) ARCH=arm64 ;; # a static arm64 build runs under 32-bit userland too
		*) die "$PI is $machine: not a Raspberry Pi this builds for (set ARCH= to override)" ;;
		esac
	fi
fi
case $ARCH in
armv6 | armv7 | arm64 | '$ARCH') ;;
*) die "ARCH=$ARCH: want armv6, armv7 or arm64" ;;
esac
bin=$BIN/bridge-$ARCH
[ -n "$DRY_RUN" ] || [ -f "$bin" ] || die "$bin is missing: make cross"

run ssh "$PI" "mkdir -p -m 0700 $STAGE"
run scp -q "$bin" "$RASPI/pibridge.service" "$RASPI/config.example.yaml" "$RASPI/install.sh" "$RASPI/uninstall.sh" "$PI:$STAGE/"
# -t: sudo may ask for a password.
run ssh -t "$PI" "sudo sh $STAGE/install.sh $STAGE/bridge-$ARCH && rm -rf $STAGE"
