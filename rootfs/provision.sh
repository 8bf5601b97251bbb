# Runs inside the freshly debootstrapped base with bash -euo pipefail. Any failing command fails the build.
export DEBIAN_FRONTEND=noninteractive
apt-get -q update
apt-get -q -y -o Dpkg::Options::=--force-confold full-upgrade
apt-get -q -y --no-install-recommends install less
apt-get clean
# A fresh machine-id is made at each machine's first boot.
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
