# YunoHost's installer is downloaded to a file, checked (a complete bash script, with its checksum logged),
# then run; never piped into bash. The demo password is generated here, kept 0600 at
# /etc/berth/demo-password in the pristine state, and shown on the portal's login page, as a demo must.
# Overrides: BERTH_YUNOHOST_INSTALLER (URL), BERTH_YUNOHOST_DOMAIN (the demo's domain).
installer_url=${BERTH_YUNOHOST_INSTALLER:-https://install.yunohost.org/bookworm}
domain=${BERTH_YUNOHOST_DOMAIN:-demo.yunohost.org}
sed -i 's/^# *en_US.UTF-8/en_US.UTF-8/' /etc/locale.gen && locale-gen
curl --fail --silent --show-error --location --retry 3 --max-time 300 -o /root/yunohost-install "$installer_url"
head -c 2 /root/yunohost-install | grep -q '#!' || { echo "the YunoHost installer is not a script" >&2; exit 1; }
bash -n /root/yunohost-install
echo "YunoHost installer sha256 $(sha256sum /root/yunohost-install | cut -d' ' -f1)"
bash /root/yunohost-install -a -d stable
install -d -m 0700 /etc/berth
( umask 077; tr -dc 'a-zA-Z0-9' </dev/urandom | head -c 16 >/etc/berth/demo-password )
password=$(cat /etc/berth/demo-password)
systemctl start dbus.service || true
# postinstall takes the password as an argument: only inside the build container, and a demo password is
# public by design (it is on the login page); it is never written to a log.
yunohost tools postinstall --domain "$domain" --username demo --fullname "Demo User" --password "$password" --ignore-dyndns --force-diskspace
yunohost settings set security.password.passwordless_sudo -v no 2>/dev/null || true
for app in \
  "hextris /hextris init_main_permission=visitors" \
  "dokuwiki /dokuwiki admin=demo&init_main_permission=visitors&language=en" \
  "wordpress /blog admin=demo&language=en_US&multisite=0&init_main_permission=visitors" \
  "nextcloud /nextcloud admin=demo&user_home=0&init_main_permission=visitors" \
  "roundcube /webmail with_carddav=0&with_enigma=0&language=en_GB&init_main_permission=visitors" \
  "kanboard /kanboard admin=demo&init_main_permission=visitors" \
  "searx /searx init_main_permission=visitors" \
  "zerobin /zerobin init_main_permission=visitors"; do
  set -- $app
  yunohost app install "$1" --force --args "domain=$domain&path=$2&$3"
done
login=/usr/share/ssowat/portal/login.html
if [ -f "$login" ]; then
  sed -i "3i <center class=\"berth-demo-hint\">Login: demo / Password: $password</center>" "$login"
fi
rm -f /root/yunohost-install /etc/hostname
