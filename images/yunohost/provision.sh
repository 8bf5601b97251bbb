# shellcheck shell=bash
# YunoHost 12 for the public demo, run by berth in the booted container (systemd is PID 1, so the packages
# can restart their services and postinstall finds slapd and nginx running), with bash -euo pipefail.
#
# Settings (image.conf [Settings]): BERTH_DOMAIN, BERTH_DEMO_USER, BERTH_DEMO_PASSWORD_FILE from berth's
# configuration; from the host's environment:
#   BERTH_YUNOHOST_APT_REPOSITORY  an apt line for YunoHost's repository or a mirror of it, e.g.
#                                  "deb [signed-by=/usr/share/keyrings/yunohost.asc] http://mirror.lan/yunohost/debian bookworm stable";
#                                  when set, YunoHost is installed from it with the official installer's steps
#   BERTH_YUNOHOST_APT_KEY         URL of that repository's signing key (saved as /usr/share/keyrings/yunohost.asc)
#   BERTH_YUNOHOST_INSTALLER       URL of the official installer, used when no repository is set
#                                  (default https://install.yunohost.org/bookworm)
#   BERTH_YUNOHOST_APPS            "none" to install no app (a quick trial), else the list in ./apps
domain=${BERTH_DOMAIN:?}
user=${BERTH_DEMO_USER:?}
password=$(cat "${BERTH_DEMO_PASSWORD_FILE:?}")
here=$(dirname "${BASH_SOURCE[0]}")

sed -i 's/^# *en_US.UTF-8/en_US.UTF-8/' /etc/locale.gen
locale-gen

if [ -n "${BERTH_YUNOHOST_APT_REPOSITORY:-}" ]; then
	# The official installer's steps, from the configured repository: its key, the repository, the debconf
	# answers it gives, then the packages.
	if [ -n "${BERTH_YUNOHOST_APT_KEY:-}" ]; then
		curl --fail --silent --show-error --location --retry 3 --max-time 120 -o /usr/share/keyrings/yunohost.asc "$BERTH_YUNOHOST_APT_KEY"
	fi
	printf '%s\n' "$BERTH_YUNOHOST_APT_REPOSITORY" >/etc/apt/sources.list.d/yunohost.list
	debconf-set-selections <<-'SELECTIONS'
		slapd slapd/password1 password yunohost
		slapd slapd/password2 password yunohost
		slapd slapd/domain string yunohost.org
		slapd shared/organization string yunohost.org
		slapd slapd/allow_ldap_v2 boolean false
		slapd slapd/invalid_config boolean true
		slapd slapd/backend select MDB
		postfix postfix/main_mailer_type select Internet Site
		postfix postfix/mailname string /etc/mailname
		nslcd nslcd/ldap-bindpw password
		nslcd nslcd/ldap-starttls boolean false
		nslcd nslcd/ldap-reqcert select
		nslcd nslcd/ldap-uris string ldap://localhost/
		nslcd nslcd/ldap-binddn string
		nslcd nslcd/ldap-base string dc=yunohost,dc=org
		libnss-ldapd libnss-ldapd/nsswitch multiselect group, passwd, shadow
		postsrsd postsrsd/domain string yunohost.org
	SELECTIONS
	apt-get -q update
	apt-get -q -y -o Dpkg::Options::=--force-confold install yunohost yunohost-admin postfix
else
	installer_url=${BERTH_YUNOHOST_INSTALLER:-https://install.yunohost.org/bookworm}
	# Downloaded to a file, checked to be a complete script and logged by checksum, then run: never piped.
	curl --fail --silent --show-error --location --retry 3 --max-time 300 -o /root/yunohost-install "$installer_url"
	head -c 2 /root/yunohost-install | grep -q '#!' || { echo "the YunoHost installer at $installer_url is not a script" >&2; exit 1; }
	bash -n /root/yunohost-install
	echo "YunoHost installer sha256 $(sha256sum /root/yunohost-install | cut -d' ' -f1)"
	bash /root/yunohost-install -a -d stable
	rm -f /root/yunohost-install
fi

# The first user postinstall makes is an admin: a berth-only one with a random password nobody is given
# (no pipe into head, which would end tr with SIGPIPE under pipefail). The demo user is an ordinary user.
admin_password=$(openssl rand -hex 24)
yunohost tools postinstall --domain "$domain" --username berthadmin --fullname "Demo Admin" \
	--password "$admin_password" --ignore-dyndns --force-diskspace
unset admin_password
yunohost user create "$user" --fullname "Demo User" --domain "$domain" --password "$password"
yunohost settings set security.password.passwordless_sudo -v no
# Mail is not part of the demo (YunoHost's builder also turns it off).
for service in postfix dovecot rspamd; do
	systemctl disable --now "$service" 2>/dev/null || true
done

# Third-party apt sources that postinstall adds (sury, yarn, ...) must not break the nightly upgrade when they
# are unreachable: the upgrade reports and skips them. Here they are listed once for the build log.
grep -rhs '^deb ' /etc/apt/sources.list.d/ | sed 's/^/apt source: /' || true

if [ "${BERTH_YUNOHOST_APPS:-}" != none ]; then
	failed=0
	while read -r app path args; do
		case $app in '' | '#'*) continue ;; esac
		install_args="domain=$domain&path=$path&init_main_permission=visitors&admin=$user${args:+&$args}"
		if timeout 30m yunohost app install "$app" --force --args "$install_args" </dev/null; then
			echo "app $app: installed at $path"
		else
			echo "app $app: FAILED (exit $?), left out of the demo" >&2
			failed=$((failed + 1))
		fi
	done <"$here/apps"
	echo "apps: $failed failed"
fi

# The login hint, placed the same way the nightly hook places it again after each upgrade.
/usr/local/sbin/berth-demo-hint "$user" <"$BERTH_DEMO_PASSWORD_FILE"
rm -f /etc/hostname
