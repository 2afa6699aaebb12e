#!/bin/sh
# uninstall.sh [--purge]: remove pibridge. install.sh leaves a copy in
# /usr/local/share/pibridge/uninstall.sh.
#
# Stops the service first, so that its ExecStopPost drives the outputs to
# their safe states with the binary still there. Keeps /etc/pibridge (your
# config), /var/lib/pibridge (seq counter, queued readings, the generated
# token) and the pibridge user; --purge removes them too. Running it again
# does no harm. DESTDIR works as for install.sh.
set -eu

D=${DESTDIR:-}
purge=no
case "${1:-}" in
--purge) purge=yes ;;
"") ;;
*)
	echo "usage: uninstall.sh [--purge]" >&2
	exit 2
	;;
esac

say() { printf 'pibridge: %s\n' "$*"; }

if [ -z "$D" ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "pibridge: run it as root: sudo $0 $*" >&2
		exit 1
	fi
	if [ -e /etc/systemd/system/pibridge.service ]; then
		systemctl disable --now --quiet pibridge.service || true
		say "stopped and disabled the service"
	fi
fi

rm -f "$D/usr/local/bin/bridge" "$D/usr/local/bin/.bridge.new" "$D/etc/systemd/system/pibridge.service"
rm -rf "$D/usr/local/share/pibridge"

if [ -z "$D" ]; then
	systemctl daemon-reload
	systemctl reset-failed pibridge.service 2>/dev/null || true
fi

if [ "$purge" = yes ]; then
	rm -rf "$D/etc/pibridge" "$D/var/lib/pibridge"
	if [ -z "$D" ] && getent passwd pibridge >/dev/null; then
		userdel pibridge
	fi
	say "removed, with the config, the state and the user"
else
	say "removed; kept /etc/pibridge and /var/lib/pibridge (uninstall.sh --purge removes them and the user)"
fi
