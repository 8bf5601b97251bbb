# Runs inside the freshly debootstrapped base with bash -euo pipefail. Any failing command fails the build.
export DEBIAN_FRONTEND=noninteractive
apt-get -q update
apt-get -q -y -o Dpkg::Options::=--force-confold full-upgrade
apt-get -q -y --no-install-recommends install less
apt-get clean
# The host's own CAs (copied to /usr/local/share/ca-certificates by berth) join the trusted set.
update-ca-certificates >/dev/null
echo berth-base > /etc/hostname
# debootstrap leaves no /etc/hosts here; services (mariadb-install-db among them) need localhost to resolve.
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' > /etc/hosts
# A fresh machine-id is made at each machine's first boot.
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
