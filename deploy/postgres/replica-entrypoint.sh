#!/bin/sh
# A hot standby of the primary: on first start, copy it with pg_basebackup (-R writes
# standby.signal and primary_conninfo), then run postgres; later starts just resume.
set -eu
: "${PRIMARY_HOST:?PRIMARY_HOST is required}"
: "${DB_REPLICATION_PASSWORD:?DB_REPLICATION_PASSWORD is required}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  until pg_isready --host "$PRIMARY_HOST" --quiet; do sleep 1; done
  PGPASSWORD="$DB_REPLICATION_PASSWORD" pg_basebackup --host "$PRIMARY_HOST" \
    --username replicator --pgdata "$PGDATA" --wal-method stream --write-recovery-conf
  chmod 0700 "$PGDATA"
fi
exec postgres -c hot_standby=on
