# Runs inside the freshly debootstrapped base with bash -euo pipefail. Any failing command fails the build.
export DEBIAN_FRONTEND=noninteractive
# berth sets BERTH_UP_TO_DATE=1 when mmdebstrap has just installed the tree from every suite of the sources:
# its lists are seconds old and its packages the newest, so update and full-upgrade would change nothing.
if [ "${BERTH_UP_TO_DATE:-}" != 1 ]; then
	apt-get -q update
	apt-get -q -y -o Dpkg::Options::=--force-confold full-upgrade
fi
apt-get clean
# The host's own CAs (copied to /usr/local/share/ca-certificates by berth) join the trusted set.
# (ca-certificates' own postinst made the bundle; without local CAs there is nothing to add to it.)
if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
	update-ca-certificates >/dev/null
fi
echo berth-base > /etc/hostname
# debootstrap leaves no /etc/hosts here; services (mariadb-install-db among them) need localhost to resolve.
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' > /etc/hosts
# A fresh machine-id is made at each machine's first boot.
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
