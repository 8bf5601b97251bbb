# shellcheck shell=bash
# Runs in the booted container: MariaDB is running (systemd started it when the package was installed).
echo "received environment:"
env | grep '^BERTH_' | sort
domain=${BERTH_DOMAIN:?}
install -m 0600 "${BERTH_DEMO_PASSWORD_FILE:?}" /root/received-password
# A database and a user, made through the running server, and a page made from a query.
mysql <<SQL
CREATE DATABASE demo;
CREATE USER 'demo'@'localhost' IDENTIFIED BY 'demo';
GRANT ALL ON demo.* TO 'demo'@'localhost';
CREATE TABLE demo.greeting (text VARCHAR(40));
INSERT INTO demo.greeting VALUES ('hello from mariadb');
SQL
mysql --user=demo --password=demo --batch --skip-column-names -e 'SELECT text FROM demo.greeting' demo >/var/www/html/db.txt
# The offline-mirror path: a package from the apt repository the host names.
if [ -n "${BERTH_DEMO_HTTPS_APT_REPOSITORY:-}" ]; then
	printf '%s\n' "$BERTH_DEMO_HTTPS_APT_REPOSITORY" >/etc/apt/sources.list.d/mirror.list
	apt-get -q update
	apt-get -q -y install berth-test-payload
	rm /etc/apt/sources.list.d/mirror.list
	apt-get -q update
fi
# A login page like YunoHost's portal, for the demo hint.
mkdir -p /usr/share/yunohost/portal
printf '<!doctype html>\n<html>\n<head>\n<title>login</title>\n</head>\n<body><form></form></body>\n</html>\n' >/usr/share/yunohost/portal/index.html
cat >/etc/nginx/sites-available/default <<CONF
server {
	listen 80 default_server;
	return 301 https://\$host\$request_uri;
}
server {
	listen 443 ssl default_server;
	ssl_certificate /etc/ssl/certs/ssl-cert-snakeoil.pem;
	ssl_certificate_key /etc/ssl/private/ssl-cert-snakeoil.key;
	return 421;
}
server {
	listen 443 ssl;
	server_name $domain;
	ssl_certificate /etc/ssl/certs/ssl-cert-snakeoil.pem;
	ssl_certificate_key /etc/ssl/private/ssl-cert-snakeoil.key;
	root /var/www/html;
	location = / { default_type text/plain; return 200 "berth demo \$hostname\n"; }
	location = /health { default_type text/plain; return 200 "ok\n"; }
	location /portal/ { alias /usr/share/yunohost/portal/; }
}
CONF
rm -f /var/www/html/index.nginx-debian.html /etc/hostname
/usr/local/sbin/berth-demo-hint "${BERTH_DEMO_USER:?}" <"$BERTH_DEMO_PASSWORD_FILE"
# A third-party source that cannot be reached, as YunoHost's postinstall adds (sury, yarn): the nightly
# upgrade must report and skip it, not fail.
echo 'deb [trusted=yes] http://127.0.0.1:9/ ./' >/etc/apt/sources.list.d/unreachable-third-party.list
