#!/usr/bin/env bash
# Install the Debian packages the toolbox needs to build, test and run, if missing.
set -euo pipefail

PKGS=(build-essential cmake pkg-config clang libclang-rt-14-dev
      librabbitmq-dev libpq-dev libyaml-dev libjansson-dev check
      rabbitmq-server postgresql postgresql-client
      python3-celery python3-sqlalchemy python3-psycopg2 socat procps)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: all packages present"
  exit 0
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Debian's rabbitmq-server/postgresql postinst try to start system services;
# on machines without an init system that fails harmlessly, and our own
# instances run on their own ports either way.
apt-get install -y -qq --no-install-recommends "${missing[@]}"
