#!/bin/sh
# Stand-in for the official mariadb image's docker-entrypoint.sh: the same interface
# (MARIADB_ROOT_PASSWORD, MARIADB_DATABASE, MARIADB_USER, MARIADB_PASSWORD; the database
# initialised on the first start; mariadbd runs as the mysql user), not its code.
set -eu
if [ "${1#-}" != "$1" ]; then
    set -- mariadbd "$@"
fi
datadir=/var/lib/mysql
if [ "$1" = mariadbd ] && [ "$(id -u)" = 0 ]; then
    mkdir -p "$datadir" /run/mysqld
    find "$datadir" /run/mysqld \! -user mysql -exec chown mysql:mysql '{}' +
    exec setpriv --reuid=mysql --regid=mysql --init-groups "$0" "$@"
fi
if [ "$1" = mariadbd ] && [ ! -d "$datadir/mysql" ]; then
    : "${MARIADB_ROOT_PASSWORD:?MARIADB_ROOT_PASSWORD must be set}"
    mariadb-install-db --datadir="$datadir" --skip-test-db --auth-root-authentication-method=normal \
        >/dev/null
    mariadbd --skip-networking --socket=/run/mysqld/init.sock &
    pid=$!
    for _ in $(seq 60); do
        mariadb-admin --socket=/run/mysqld/init.sock -uroot ping >/dev/null 2>&1 && break
        sleep 0.5
    done
    {
        echo "SET PASSWORD FOR 'root'@'localhost' = PASSWORD('$MARIADB_ROOT_PASSWORD');"
        echo "CREATE USER 'root'@'%' IDENTIFIED BY '$MARIADB_ROOT_PASSWORD';"
        echo "GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;"
        if [ -n "${MARIADB_DATABASE:-}" ]; then
            echo "CREATE DATABASE IF NOT EXISTS \`$MARIADB_DATABASE\`;"
        fi
        if [ -n "${MARIADB_USER:-}" ]; then
            echo "CREATE USER '$MARIADB_USER'@'%' IDENTIFIED BY '${MARIADB_PASSWORD:-}';"
            if [ -n "${MARIADB_DATABASE:-}" ]; then
                echo "GRANT ALL ON \`$MARIADB_DATABASE\`.* TO '$MARIADB_USER'@'%';"
            fi
        fi
        echo "FLUSH PRIVILEGES;"
    } | mariadb --socket=/run/mysqld/init.sock -uroot
    kill "$pid"
    wait "$pid" || true
    echo "MariaDB init process done. Ready for start up."
fi
exec "$@"
