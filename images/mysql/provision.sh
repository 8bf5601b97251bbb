# The datadir is created at first start, on the host's bind mount (berth-mysql-init), not in the image.
rm -rf /var/lib/mysql/*
