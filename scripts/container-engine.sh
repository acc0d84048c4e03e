#!/usr/bin/env bash
# A container engine for the image test (tests/test_image.py) on a Debian bookworm machine, as root,
# where Docker Hub cannot be reached: Debian's docker.io, started in the background on a socket of its
# own, and the base image the Dockerfile names (python:3.11-slim-bookworm) made with debootstrap from
# Debian's Python 3.11. The Dockerfile stays written for the official image; this one stands in for it.
#
#   scripts/container-engine.sh start   install what is missing, start the engine, make the base image
#                                       (each step only if not done yet); prints `export DOCKER_HOST=...`
#   scripts/container-engine.sh stop    stop the engine (its containerd and containers stop with it)
#   scripts/container-engine.sh env     print `export DOCKER_HOST=...`
#
#   eval "$(scripts/container-engine.sh start)" && .venv/bin/python -m pytest tests/test_image.py
#
# ENGINE_DIR (default /var/lib/container-engine) holds the engine's images and build cache, kept between
# runs, its socket, process id and log (dockerd.log). DEBIAN_MIRROR is the mirror debootstrap reads.
set -euo pipefail

ENGINE_DIR=${ENGINE_DIR:-/var/lib/container-engine}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SOCKET=$ENGINE_DIR/docker.sock
PIDFILE=$ENGINE_DIR/dockerd.pid
BASE_IMAGE=python:3.11-slim-bookworm
# Debian's client, made for Debian's engine (another docker on the PATH may be of another version).
DOCKER=(/usr/bin/docker --host "unix://$SOCKET")

say() { echo "container-engine: $*" >&2; }

answers() { [[ -S $SOCKET ]] && "${DOCKER[@]}" version >/dev/null 2>&1; }

install_packages() {
  if [[ -x /usr/sbin/dockerd && -x /usr/bin/docker && -x /usr/sbin/debootstrap ]]; then
    return
  fi
  [[ $(id -u) == 0 ]] || { say "installing docker.io and debootstrap needs root"; exit 1; }
  say "installing docker.io and debootstrap"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    docker.io debootstrap ca-certificates >/dev/null
}

start_engine() {
  if answers; then
    say "the engine answers at unix://$SOCKET"
    return
  fi
  mkdir -p "$ENGINE_DIR"
  say "starting dockerd (log: $ENGINE_DIR/dockerd.log)"
  # No bridge and no iptables rules: containers run with --network host (builds too), so the engine
  # leaves the machine's network alone. setsid: the engine outlives this script, until `stop`.
  setsid /usr/sbin/dockerd \
    --host "unix://$SOCKET" \
    --data-root "$ENGINE_DIR/data" \
    --exec-root "$ENGINE_DIR/exec" \
    --pidfile "$PIDFILE" \
    --storage-driver overlay2 \
    --iptables=false \
    --bridge=none \
    </dev/null >>"$ENGINE_DIR/dockerd.log" 2>&1 &
  for _ in $(seq 600); do
    answers && return
    sleep 0.1
  done
  say "dockerd did not answer within 60 s; the end of its log:"
  tail -n 30 "$ENGINE_DIR/dockerd.log" >&2
  exit 1
}

make_base_image() {
  if "${DOCKER[@]}" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    return
  fi
  local root="$ENGINE_DIR/rootfs"
  rm -rf "$root"
  say "making $BASE_IMAGE with debootstrap (a minute or two)"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$root" "$DEBIAN_MIRROR" >"$ENGINE_DIR/debootstrap.log" 2>&1 \
    || { tail -n 30 "$ENGINE_DIR/debootstrap.log" >&2; exit 1; }
  # pip in the build trusts the authorities this machine trusts (a proxy's own, say).
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  # The official image keeps its interpreter in /usr/local/bin; the Dockerfile's venv relies on it.
  ln -sf /usr/bin/python3 "$root/usr/local/bin/python"
  ln -sf /usr/bin/python3 "$root/usr/local/bin/python3"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | "${DOCKER[@]}" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    - "$BASE_IMAGE" >/dev/null
  rm -rf "$root"
}

stop_engine() {
  [[ -f $PIDFILE ]] || { say "no engine is running from $ENGINE_DIR"; return; }
  local pid
  pid=$(cat "$PIDFILE")
  if kill -0 "$pid" 2>/dev/null; then
    say "stopping dockerd ($pid)"
    kill -TERM "$pid"
    for _ in $(seq 600); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
  fi
  rm -f "$PIDFILE"
}

case "${1:-}" in
  start)
    install_packages
    start_engine
    make_base_image
    # Images a later build replaced, once a day old: the cache of recent builds stays.
    "${DOCKER[@]}" image prune --force --filter until=24h >/dev/null
    echo "export DOCKER_HOST=unix://$SOCKET"
    ;;
  stop) stop_engine ;;
  env) echo "export DOCKER_HOST=unix://$SOCKET" ;;
  *)
    echo "usage: $0 start|stop|env" >&2
    exit 2
    ;;
esac
