#!/bin/sh
# Run once by the official postgres image when it creates the primary's cluster:
# a replication user, and the pg_hba line that lets the replica stream with it.
set -eu
: "${DB_REPLICATION_PASSWORD:?DB_REPLICATION_PASSWORD is required}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v password="$DB_REPLICATION_PASSWORD" <<'SQL'
CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD :'password';
SQL
echo "host replication replicator all scram-sha-256" >> "$PGDATA/pg_hba.conf"
